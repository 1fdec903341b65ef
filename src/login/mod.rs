//! The login: one `POST {identity}/connect/token` (OAuth 2.0 client
//! credentials, with `onbehalfof` for an intermediary) and the reading of
//! its answer.
//!
//! - `request`: the call, its form (the secret in a zeroed buffer) and its
//!   bounds (timeout, body size, no redirect);
//! - `response`: the answer read into a checked token or a typed error that
//!   quotes nothing secret, and `Retry-After`.

mod request;
mod response;

pub(crate) use self::request::{login, ON_BEHALF_OF};
pub use self::response::MAX_RETRY_AFTER;
