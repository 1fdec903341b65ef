//! Token-caching OAuth 2.0 authentication for LHDN's MyInvois e-invoicing API.
//!
//! Every protected MyInvois call needs an access token from the MyInvois
//! identity service (`POST /connect/token`, client credentials, tokens live one
//! hour). This crate holds those tokens in a shared [`TokenCache`], refreshes
//! them before they expire, and adds them to your requests with
//! [`AuthMiddleware`], a [`reqwest_middleware`] layer that also recovers from a
//! rejected token (HTTP 401) by logging in again and retrying once.
//!
//! # Add auth to a reqwest client
//!
//! ```no_run
//! use myinvois_auth::{AuthMiddleware, Credentials, Environment, TokenCache};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
//!     .environment(Environment::Sandbox)
//!     .build()?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(AuthMiddleware::new(cache))
//!     .build();
//! let types = client
//!     .get("https://preprod-api.myinvois.hasil.gov.my/api/v1.0/documenttypes")
//!     .send()
//!     .await?;
//! # let _ = types; Ok(()) }
//! ```
//!
//! # Act for many taxpayers (intermediaries)
//!
//! An intermediary logs in once per taxpayer, with the `onbehalfof` header.
//! Mark a request with [`OnBehalfOf`] and the middleware uses (and, if needed,
//! obtains) that taxpayer's token and sets the header on the API call too:
//!
//! ```no_run
//! # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), reqwest_middleware::Error> {
//! use myinvois_auth::OnBehalfOf;
//! client
//!     .get("https://preprod-api.myinvois.hasil.gov.my/api/v1.0/documenttypes")
//!     .with_extension(OnBehalfOf::new("C25845632020"))
//!     .send()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Use the cache from another SDK
//!
//! ```no_run
//! # async fn run(cache: myinvois_auth::TokenCache) -> Result<(), myinvois_auth::Error> {
//! let token = cache.token().await?;
//! let header = token.authorization_header(); // "Bearer …", marked sensitive
//! let theirs = cache.token_on_behalf_of("C25845632020").await?;
//! # let _ = (header, theirs); Ok(()) }
//! ```
//!
//! An SDK that takes any [`TokenSource`] (`Arc<dyn TokenSource>`) gets the
//! application's cache from its user and a fake in its own tests; see the
//! [middleware guide](guide::middleware).
//!
//! # What the cache guarantees
//!
//! - One login in flight per entry (identity URL + client ID + scope + taxpayer);
//!   every caller waiting on it gets its result, error included.
//! - A token within `refresh_before` of expiry is refreshed in the background;
//!   callers holding a valid token never wait for a login, and a token is never
//!   served after it expires.
//! - The client secret and tokens never appear in `Debug`, `Display`, errors
//!   or logs; the secret is only sent over `https` (or to loopback hosts), to
//!   the identity service and nowhere else: a login never follows a redirect.
//!
//! # Where things live
//!
//! - `config`: where to log in ([`Environment`]), as whom ([`Credentials`]),
//!   how to cache ([`TokenCacheBuilder`], also from environment variables);
//! - `cache`: the [`TokenCache`], its table of taxpayer entries, and each
//!   entry's one login in flight and lock in the token store;
//! - `login`: the login call and the reading of its answer;
//! - `token`: [`AccessToken`] and the rules every token obeys; `claims`:
//!   its JWT claims ([`TokenClaims`]);
//! - `freshness`: when a token is fresh, due for a refresh, or expired;
//! - `budget`: the client ID's login budget; `failure`: failed logins
//!   answered from memory; `rejection`: 401s a new token does not cure;
//! - `store`: sharing tokens, logins and the budget beyond one process
//!   ([`TokenStore`], [`MemoryTokenStore`], `SqliteTokenStore` for one
//!   host, `RedisTokenStore` for a fleet);
//! - `source`: [`TokenSource`], what any giver of tokens offers (the
//!   cache's side of it is `cache::source`);
//! - `auth`: the way of one request through the auth layer (origins, token,
//!   headers, 401 and retry), shared by every client stack;
//! - `middleware`: [`AuthMiddleware`]; `tower`: the tower layer
//!   (`AuthLayer`); `retry`: reqwest-retry support;
//! - `stats`: [`CacheStats`]; `metrics`: the `metrics` facade;
//! - [`guide`]: the guide (intermediaries, hosts, fleets, 401s, security,
//!   configuration, observability, errors, benchmarks), docs only;
//! - `taxpayer`: [`OnBehalfOf`]; `error`: [`Error`]; `redact`: making
//!   text safe to show; `clock`: the cache's clock.

#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod budget;
mod cache;
mod claims;
mod clock;
mod config;
mod error;
mod failure;
mod freshness;
pub mod guide;
mod log_limit;
mod login;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod middleware;
mod redact;
mod rejection;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;
mod source;
mod stats;
mod store;
mod taxpayer;
mod token;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use budget::{DEFAULT_LOGIN_RATE_LIMIT, DEFAULT_RATE_LIMIT_BACKOFF, PACING_MARGIN};
pub use cache::TokenCache;
pub use claims::TokenClaims;
pub use config::{
    Credentials, Environment, TokenCacheBuilder, DEFAULT_IDLE_AFTER, DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_MAX_ENTRIES, DEFAULT_MAX_LOGIN_WAIT, DEFAULT_REFRESH_BEFORE, DEFAULT_REFRESH_RETRY,
    ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_ENVIRONMENT, ENV_SCOPE, ENV_TOKEN_STORE,
};
pub use error::{EnvProblem, Error, OAuthErrorCode};
pub use failure::{DEFAULT_LOGIN_ERROR_BACKOFF, DEFAULT_TRANSIENT_ERROR_BACKOFF};
pub use login::MAX_RETRY_AFTER;
pub use middleware::AuthMiddleware;
pub use rejection::DEFAULT_REJECTION_MEMORY;
pub use source::TokenSource;
pub use stats::{CacheStats, StoreErrors};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::SqliteTokenStore;
pub use store::{
    Loaded, LoginSlot, MemoryTokenStore, SlotRequest, StoreError, StoreErrorKind, StoredToken,
    TokenStore,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::{RedisTokenStore, DEFAULT_REDIS_PREFIX};
pub use taxpayer::OnBehalfOf;
pub use token::{AccessToken, EXPIRY_MARGIN, MAX_TOKEN_LIFETIME};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
