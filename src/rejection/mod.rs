//! 401s a new token does not cure: what the cache has learned about the
//! API endpoints that rejected its tokens.
//!
//! A 401 usually means the token was revoked or expired: invalidate it, log
//! in again, retry once. But an endpoint can answer 401 whatever the token
//! (the client lacks a permission there, or may not see one document);
//! then each call would cost a login from the budget every taxpayer
//! shares. So:
//!
//! - **Endpoints are named so that IDs cannot multiply them**
//!   ([`endpoint`]): MyInvois's documented path words are kept and every
//!   other segment is made alike (`GET /api/v1.0/documents/*/raw`).
//! - **The first 401 at an endpoint is about the token**: it is
//!   invalidated and the call retried with a new one. While that renewal
//!   decides, other taxpayers' 401s there wait for its verdict (within
//!   their `max_login_wait`) instead of spending a login each.
//! - **A new token rejected there too teaches that its 401s are not about
//!   the token**, for every taxpayer of the cache, for `rejection_memory`
//!   after it was learned; they are handed to the caller and nothing is
//!   invalidated. The exact path where the new token was rejected stays
//!   known to the entry while its 401s go on.
//! - **A token that gets through** (anything but 401, 407, 408, 429 and
//!   5xx, which a gateway may answer before looking at it) at the path
//!   that taught the record ends it: the endpoint accepts tokens again.
//!   Elsewhere at the endpoint it ends nothing (the 401s depend on the
//!   path), but it allows one renewal per memory there, so a revocation is
//!   told from the endpoint's refusals.
//!
//! So an endpoint whose 401s a new token does not cure costs at most one
//! login per `rejection_memory` to learn, and one more if tokens get
//! through there meanwhile; a revoked token is replaced with one login at
//! once at any other endpoint, and within `rejection_memory` at worst at
//! one that rejects whatever the token.
//!
//! Records are read without a lock (a snapshot), written under one, and
//! dropped when they end, so that once nothing is remembered an answer
//! costs two atomic loads again.

mod cache;
mod endpoint;
mod entry;
mod records;
#[cfg(test)]
mod tests;

pub(crate) use self::cache::Learned;
pub(crate) use self::endpoint::{endpoint, Endpoint};
pub use self::entry::DEFAULT_REJECTION_MEMORY;
pub(crate) use self::entry::{shows_token_got_through, Rejections, Verdict};
