//! One cache entry ([`Entry`]): the token for one (identity URL, client ID,
//! scope, taxpayer), with at most one login in flight. Its fields are
//! private to this folder; each file adds one part of its life:
//!
//! - `state`: the entry itself: serving the cached token (the hot path),
//!   invalidating it, starting a refresh ahead of expiry;
//! - `flight`: the login in flight as its callers see it (where it stands);
//! - `join`: callers sharing that login (`wait_for_login`) and the task
//!   that runs it (`spawn_login`), publishing its token or remembering its
//!   failure;
//! - `obtain`: how the login gets a token: shared by another process
//!   through the token store, or logged in within the budget; `wait`: how
//!   it waits while another process logs in;
//! - `lock`: the entry's lock in the token store, held for the login only
//!   and released on every path; `abandoned`: the locks of logins cut
//!   off, until they are released;
//! - `reason`: why a login is made, as its span names it.

mod abandoned;
mod flight;
mod join;
mod lock;
mod obtain;
mod reason;
mod state;
mod wait;

pub(crate) use self::reason::Reason;
pub(crate) use self::state::Entry;
