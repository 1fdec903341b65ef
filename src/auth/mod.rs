//! Authenticating requests, written once for every client stack: the
//! reqwest middleware ([`AuthMiddleware`](crate::AuthMiddleware)) and the
//! tower layer both go through [`Auth`].
//!
//! - `origins`: which requests get a token (API origins only, and never a
//!   request that carries its own `Authorization`);
//! - `exchange`: what the shared way of a request needs of a client stack;
//! - `flow`: that way: the token (and the wait before a retried login),
//!   the headers, and what a 401 leads to.

mod exchange;
mod flow;
mod origins;

pub(crate) use self::exchange::Exchange;
pub(crate) use self::flow::Auth;
pub(crate) use self::origins::Origin;
