//! The `reqwest-middleware` layer: [`AuthMiddleware`] (the way of a
//! request is `auth`'s, shared with the tower layer), and the copy of a
//! request it keeps to send again after a 401.

mod auth_middleware;
mod retry_copy;

pub use auth_middleware::AuthMiddleware;
