//! Configuration: where to log in ([`Environment`]), as whom
//! ([`Credentials`]), and how to cache ([`TokenCacheBuilder`], also from
//! environment variables), checked into the [`Settings`] a cache runs with.
//!
//! - `environment`: the MyInvois deployments, and the rule for every URL
//!   that may receive the secret or a token;
//! - `credentials`: the client ID and the (rotatable) secret;
//! - `builder`: every setting with its default, and the checks of `build()`;
//! - `login_client`: the HTTP client logins are sent with: the caller's
//!   login middlewares around a guard that lets each login out once, to
//!   the token URL only;
//! - `env`: the builder from `MYINVOIS_*` environment variables;
//! - `settings`: what the checks pass on to the cache;
//! - `crypto_provider`: the TLS check of `build()`.

mod builder;
mod credentials;
mod crypto_provider;
mod env;
mod environment;
mod login_client;
mod settings;
#[cfg(test)]
mod tests;

pub use self::builder::{
    TokenCacheBuilder, DEFAULT_IDLE_AFTER, DEFAULT_LOGIN_TIMEOUT, DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_LOGIN_WAIT, DEFAULT_REFRESH_BEFORE, DEFAULT_REFRESH_RETRY,
};
pub use self::credentials::Credentials;
pub(crate) use self::credentials::Secret;
pub use self::env::{
    ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_ENVIRONMENT, ENV_SCOPE, ENV_TOKEN_STORE,
};
pub(crate) use self::environment::parse_secure_url;
pub use self::environment::Environment;
pub(crate) use self::settings::Settings;
