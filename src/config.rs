//! Configuration: where to log in ([`Environment`]), as whom ([`Credentials`]),
//! and how to cache ([`TokenCacheBuilder`]).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::budget::{RateLimit, DEFAULT_LOGIN_RATE_LIMIT};
use crate::cache::TokenCache;
use crate::error::Error;
use crate::failure::{
    Backoff, FailurePolicy, DEFAULT_LOGIN_ERROR_BACKOFF, DEFAULT_TRANSIENT_ERROR_BACKOFF,
};
use crate::redact;
use crate::rejection::DEFAULT_REJECTION_MEMORY;
use crate::store::{MemoryTokenStore, TokenStore};

/// Default for [`TokenCacheBuilder::refresh_before`]: 5 minutes.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Default for [`TokenCacheBuilder::login_timeout`]: 20 seconds.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default for [`TokenCacheBuilder::refresh_retry_after`]: 10 seconds.
pub const DEFAULT_REFRESH_RETRY: Duration = Duration::from_secs(10);
/// Default for [`TokenCacheBuilder::max_login_wait`]: 10 seconds.
pub const DEFAULT_MAX_LOGIN_WAIT: Duration = Duration::from_secs(10);
/// Default for [`TokenCacheBuilder::idle_after`]: 15 minutes.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Default for [`TokenCacheBuilder::max_entries`]: 10 000 taxpayers.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// The largest `expires_in` accepted from the identity service: 7 days.
/// MyInvois issues 1-hour tokens; anything far beyond that is a broken answer.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

const SANDBOX_BASE: &str = "https://preprod-api.myinvois.hasil.gov.my";
const PRODUCTION_BASE: &str = "https://api.myinvois.hasil.gov.my";

/// A MyInvois deployment: the identity service to log in to and the API that
/// accepts its tokens.
///
/// ```
/// use myinvois_auth::Environment;
/// assert_eq!(Environment::Sandbox.identity_url().as_str(), "https://preprod-api.myinvois.hasil.gov.my/");
/// assert_eq!(Environment::Production.api_url().as_str(), "https://api.myinvois.hasil.gov.my/");
///
/// let local = Environment::custom("http://127.0.0.1:8080", "http://127.0.0.1:8081")?;
/// assert_eq!(local.api_url().port(), Some(8081));
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Environment {
    /// LHDN's pre-production (sandbox): `https://preprod-api.myinvois.hasil.gov.my`.
    Sandbox,
    /// LHDN's production: `https://api.myinvois.hasil.gov.my`.
    Production,
    /// Any other deployment (a local stand-in, a proxy). Build it with
    /// [`Environment::custom`], which checks both URLs.
    Custom {
        /// Base URL of the identity service (`/connect/token` is appended).
        identity_url: Url,
        /// Base URL of the MyInvois API; its origin receives the token.
        api_url: Url,
    },
}

impl Environment {
    /// A custom deployment. Both URLs must be `https`, or `http` to a loopback
    /// host (`localhost`, `127.0.0.0/8`, `[::1]`).
    pub fn custom(identity_url: &str, api_url: &str) -> Result<Self, Error> {
        Ok(Environment::Custom {
            identity_url: parse_secure_url("identity URL", identity_url)?,
            api_url: parse_secure_url("API URL", api_url)?,
        })
    }

    /// Base URL of the identity service.
    pub fn identity_url(&self) -> Url {
        match self {
            Environment::Sandbox => Url::parse(SANDBOX_BASE).expect("constant URL"),
            Environment::Production => Url::parse(PRODUCTION_BASE).expect("constant URL"),
            Environment::Custom { identity_url, .. } => identity_url.clone(),
        }
    }

    /// Base URL of the MyInvois API.
    pub fn api_url(&self) -> Url {
        match self {
            Environment::Sandbox => Url::parse(SANDBOX_BASE).expect("constant URL"),
            Environment::Production => Url::parse(PRODUCTION_BASE).expect("constant URL"),
            Environment::Custom { api_url, .. } => api_url.clone(),
        }
    }

    /// The checks of [`Environment::custom`], for a `Custom` written out by
    /// hand (which `#[non_exhaustive]` does not prevent): the cache sends its
    /// secret and tokens to these URLs.
    pub(crate) fn checked(self) -> Result<Self, Error> {
        parse_secure_url("identity URL", self.identity_url().as_str())?;
        parse_secure_url("API URL", self.api_url().as_str())?;
        Ok(self)
    }
}

/// Names a custom deployment's URLs without user-info, query or fragment.
impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Environment::Sandbox => f.write_str("Sandbox"),
            Environment::Production => f.write_str("Production"),
            Environment::Custom {
                identity_url,
                api_url,
            } => f
                .debug_struct("Custom")
                .field("identity_url", &redact::without_secrets(identity_url))
                .field("api_url", &redact::without_secrets(api_url))
                .finish(),
        }
    }
}

/// The ERP system's client ID and secret, as registered in MyInvois.
///
/// The secret is held in a [`SecretString`]: zeroed when dropped, never
/// printed (`Debug` shows the client ID only), and read only to write the
/// login form. MyInvois secrets expire; give a running cache a new one with
/// [`TokenCache::rotate_secret`](crate::TokenCache::rotate_secret).
///
/// ```
/// use myinvois_auth::Credentials;
/// let creds = Credentials::new("my-client-id", "s3cr3t");
/// assert_eq!(creds.client_id(), "my-client-id");
/// assert!(!format!("{creds:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct Credentials {
    client_id: String,
    client_secret: SecretString,
}

impl Credentials {
    /// Client ID and client secret (a `&str`, `String` or [`SecretString`]).
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<SecretString>) -> Self {
        Credentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    /// The client ID (not a secret).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// The credentials a running cache logs in with: the client ID, and a
/// secret that [`rotate`](Self::rotate) replaces for every clone at once.
pub(crate) struct ClientCredentials {
    client_id: String,
    secret: ArcSwap<Secret>,
}

/// One client secret, numbered: a login's failure is told apart from the
/// failures of the secret in use now.
pub(crate) struct Secret {
    pub(crate) value: SecretString,
    /// 0 for the secret the cache was built with, then one more per rotation.
    pub(crate) generation: u64,
}

impl ClientCredentials {
    pub(crate) fn new(client_id: String, secret: SecretString) -> Self {
        ClientCredentials {
            client_id,
            secret: ArcSwap::from_pointee(Secret {
                value: secret,
                generation: 0,
            }),
        }
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The current secret. Held by a login for as long as it runs, so a
    /// rotation never changes the secret of a login half-way.
    pub(crate) fn secret(&self) -> Arc<Secret> {
        self.secret.load_full()
    }

    /// The generation of the current secret.
    pub(crate) fn generation(&self) -> u64 {
        self.secret.load().generation
    }

    /// Replaces the secret; refuses an empty one.
    pub(crate) fn rotate(&self, secret: SecretString) -> Result<(), Error> {
        check_secret(&secret)?;
        self.secret.rcu(|current| Secret {
            value: secret.clone(),
            generation: current.generation.wrapping_add(1),
        });
        Ok(())
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

fn check_secret(secret: &SecretString) -> Result<(), Error> {
    if secret.expose_secret().is_empty() {
        return Err(Error::InvalidConfig("the client secret is empty".into()));
    }
    Ok(())
}

/// Builds a [`TokenCache`]. Made by [`TokenCache::builder`].
///
/// ```
/// use std::time::Duration;
/// use myinvois_auth::{Credentials, Environment, TokenCache};
///
/// let cache = TokenCache::builder(Credentials::new("id", "secret"))
///     .environment(Environment::Sandbox)
///     .scope("InvoicingAPI")
///     .refresh_before(Duration::from_secs(600))
///     .build()?;
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "call .build() to get a TokenCache"]
pub struct TokenCacheBuilder {
    credentials: Credentials,
    environment: Option<Environment>,
    identity_url: Option<UncheckedUrl>,
    scope: Option<String>,
    refresh_before: Option<Duration>,
    refresh_retry_after: Option<Duration>,
    login_timeout: Option<Option<Duration>>,
    http_client: Option<HttpClient>,
    login_rate_limit: Option<Option<(u32, Duration)>>,
    max_login_wait: Option<Duration>,
    idle_after: Option<Duration>,
    max_entries: Option<usize>,
    token_store: Option<Arc<dyn TokenStore>>,
    login_error_backoff: Option<(Duration, Duration)>,
    transient_error_backoff: Option<(Duration, Duration)>,
    rejection_memory: Option<Duration>,
    fleet_size: Option<u32>,
}

/// A URL as given to the builder, not yet checked: `Debug` shows it
/// without user-info, query and fragment (or not at all, if it does not parse).
struct UncheckedUrl(String);

impl fmt::Debug for UncheckedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Url::parse(&self.0) {
            Ok(url) => f.write_str(&redact::without_secrets(&url)),
            Err(_) => f.write_str("<not a URL>"),
        }
    }
}

/// The caller's `reqwest::ClientBuilder`: `Debug` says only that there is
/// one (its proxies may carry credentials).
struct HttpClient(reqwest::ClientBuilder);

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reqwest::ClientBuilder { .. }")
    }
}

/// The checked settings a cache runs with.
pub(crate) struct Settings {
    pub(crate) credentials: ClientCredentials,
    pub(crate) environment: Option<Environment>,
    pub(crate) token_url: Url,
    pub(crate) scope: Option<String>,
    pub(crate) refresh_before: Duration,
    pub(crate) refresh_retry_after: Duration,
    pub(crate) login_timeout: Option<Duration>,
    pub(crate) http_client: reqwest::Client,
    pub(crate) login_rate_limit: Option<RateLimit>,
    pub(crate) max_login_wait: Duration,
    pub(crate) idle_after: Duration,
    pub(crate) max_entries: usize,
    pub(crate) token_store: Arc<dyn TokenStore>,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) rejection_memory: Duration,
    /// `None`: not set (a single process, or a fleet that forgot it).
    pub(crate) fleet_size: Option<u32>,
}

/// What names the settings; nothing that could hold a credential (the
/// HTTP client's proxies may).
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("client_id", &self.credentials.client_id())
            .field("token_url", &self.token_url.as_str())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TokenCacheBuilder {
    pub(crate) fn new(credentials: Credentials) -> Self {
        TokenCacheBuilder {
            credentials,
            environment: None,
            identity_url: None,
            scope: None,
            refresh_before: None,
            refresh_retry_after: None,
            login_timeout: None,
            http_client: None,
            login_rate_limit: None,
            max_login_wait: None,
            idle_after: None,
            max_entries: None,
            token_store: None,
            login_error_backoff: None,
            transient_error_backoff: None,
            rejection_memory: None,
            fleet_size: None,
        }
    }

    /// The MyInvois deployment to log in to; its API origin is where
    /// [`AuthMiddleware`](crate::AuthMiddleware) sends the token.
    ///
    /// Required unless [`identity_url`](Self::identity_url) is set: there is no
    /// default, so a sandbox credential never hits production by accident.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Log in at this identity service base URL instead of the environment's
    /// (`/connect/token` is appended). Checked by [`build`](Self::build): it must be
    /// `https`, or `http` to a loopback host.
    ///
    /// Defaults to the environment's identity URL.
    pub fn identity_url(mut self, url: impl Into<String>) -> Self {
        self.identity_url = Some(UncheckedUrl(url.into()));
        self
    }

    /// The `scope` form parameter (e.g. `InvoicingAPI`).
    ///
    /// Defaults to none: the parameter is left out of the login form.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Start a background refresh this long before a token expires; callers
    /// keep using the still-valid token meanwhile. Capped at half the token's
    /// lifetime, so a short-lived token is not refreshed continuously.
    ///
    /// Defaults to [`DEFAULT_REFRESH_BEFORE`] (5 minutes).
    pub fn refresh_before(mut self, before: Duration) -> Self {
        self.refresh_before = Some(before);
        self
    }

    /// After a failed background refresh, wait this long before the next
    /// attempt (the still-valid token keeps being served meanwhile).
    ///
    /// Defaults to [`DEFAULT_REFRESH_RETRY`] (10 seconds).
    pub fn refresh_retry_after(mut self, after: Duration) -> Self {
        self.refresh_retry_after = Some(after);
        self
    }

    /// Give up on a login that has not answered within this time
    /// ([`Error::Timeout`]). `None` waits forever (only sensible in tests).
    ///
    /// Defaults to [`DEFAULT_LOGIN_TIMEOUT`] (20 seconds).
    pub fn login_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.login_timeout = Some(timeout);
        self
    }

    /// How to build the `reqwest::Client` used for logins (proxies, custom
    /// TLS roots, client certificates, …). A builder, not a client, so the
    /// cache can switch off what must never happen to a login: it always
    /// sets `redirect(Policy::none())`, and `https_only(true)` when the
    /// identity URL is `https`, whatever the builder said. The client secret
    /// is never sent to a redirect's target and no token from one is served
    /// ([`Error::LoginRedirected`]).
    ///
    /// ```
    /// # use myinvois_auth::{Credentials, Environment, TokenCache};
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .environment(Environment::Sandbox)
    ///     .http_client(reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5)))
    ///     .build()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    ///
    /// Defaults to a client that keeps no idle connections (a login happens
    /// about once an hour per taxpayer).
    pub fn http_client(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.http_client = Some(HttpClient(builder));
        self
    }

    /// At most `count` logins per `period` for this client ID, shared by every
    /// taxpayer and every cache in the process that logs in with it. Waiting
    /// logins go earliest deadline first (see [`max_login_wait`](Self::max_login_wait)).
    /// If several caches of one process use the same identity URL and client
    /// ID, the first one built sets the limit.
    ///
    /// Defaults to MyInvois' limit, 12 logins per 60 seconds.
    pub fn login_rate_limit(mut self, count: u32, period: Duration) -> Self {
        self.login_rate_limit = Some(Some((count, period)));
        self
    }

    /// Switch the login budget off: logins go out as soon as they are needed.
    /// A 429's `Retry-After` is still honoured.
    ///
    /// Defaults to on (see [`login_rate_limit`](Self::login_rate_limit)).
    pub fn without_login_rate_limit(mut self) -> Self {
        self.login_rate_limit = Some(None);
        self
    }

    /// How long a caller without a valid token may wait for a login slot.
    /// A caller whose slot would come later is refused at once with
    /// [`Error::RateLimited`] carrying when to try again. Callers holding a
    /// valid token never wait.
    ///
    /// Defaults to [`DEFAULT_MAX_LOGIN_WAIT`] (10 seconds).
    pub fn max_login_wait(mut self, wait: Duration) -> Self {
        self.max_login_wait = Some(wait);
        self
    }

    /// An entry not used for this long is idle: it is not refreshed ahead of
    /// time, and logs in again on its next use, so the login budget goes to
    /// taxpayers that are active.
    ///
    /// Defaults to [`DEFAULT_IDLE_AFTER`] (15 minutes).
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = Some(idle);
        self
    }

    /// The most taxpayer entries kept; past it, one of the least recently
    /// used is dropped (the oldest of 32 sampled: O(1) however large the
    /// cache; exact for 32 entries or fewer). If used again, it takes its
    /// token back from the token store while that is valid, and logs in
    /// otherwise.
    ///
    /// Defaults to [`DEFAULT_MAX_ENTRIES`] (10 000).
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = Some(max);
        self
    }

    /// Where tokens, logins and the login budget are shared beyond this cache:
    /// `RedisTokenStore` (cargo feature `redis`) for a
    /// fleet of processes. The cache's own entries stay in memory in front of
    /// it; the store is only used by logins. If the store fails, the cache
    /// carries on as a single process, with a warning in the log.
    ///
    /// Defaults to a fresh [`MemoryTokenStore`].
    pub fn token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.token_store = Some(store);
        self
    }

    /// How long a login failure that a new login cannot cure (an OAuth error
    /// such as `invalid_grant` or `invalid_client`, or a redirect) is
    /// answered from memory for that taxpayer: `initial` after the first,
    /// doubling while it keeps failing, at most `max`. Callers get the same
    /// error at once, with [`Error::retry_after`] saying how long is left;
    /// no login is spent on it meanwhile. A success, a
    /// [rotated secret](crate::TokenCache::rotate_secret) or
    /// [`forget_failures`](crate::TokenCache::forget_failures) forgets it.
    ///
    /// Defaults to [`DEFAULT_LOGIN_ERROR_BACKOFF`] (2 minutes, up to 15).
    pub fn login_error_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.login_error_backoff = Some((initial, max));
        self
    }

    /// How long a transient login failure (a 5xx, a timeout, an unreachable
    /// or unusable identity service) is answered from memory for that
    /// taxpayer: `initial` after the first, doubling while it keeps failing,
    /// at most `max`, each time a random share between half and all of it.
    /// A 5xx's own `Retry-After` is kept if it is longer.
    ///
    /// Defaults to [`DEFAULT_TRANSIENT_ERROR_BACKOFF`] (1 second, up to 30).
    pub fn transient_error_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.transient_error_backoff = Some((initial, max));
        self
    }

    /// How long an API endpoint that rejected two different tokens with 401
    /// is taken to reject every token, after its last 401: its 401s are
    /// then handed to the caller without invalidating the token or logging
    /// in again (a new token would not cure them). An answer that shows a
    /// token got through (not 401, 407, 408, 429 or 5xx) ends this at once.
    /// Other taxpayers of the cache follow what one learned for this long
    /// after it was learned. See [`TokenCache::rejected`](crate::TokenCache::rejected).
    ///
    /// Defaults to [`DEFAULT_REJECTION_MEMORY`](crate::DEFAULT_REJECTION_MEMORY) (10 minutes).
    pub fn rejection_memory(mut self, memory: Duration) -> Self {
        self.rejection_memory = Some(memory);
        self
    }

    /// How many processes share this client ID through the
    /// [token store](Self::token_store). While the store is out of reach,
    /// each process cannot know what the others spend, so it keeps to its
    /// share of the login budget, so that the fleet as a whole keeps to
    /// `count` a period: `count / fleet_size` per period while that is at
    /// least one; with more processes than logins, one login per
    /// `period × fleet_size / count` (rounded up to the millisecond). With
    /// 12 a minute: 20 pods, one login per 100 s each; 50 pods, one per
    /// 250 s. Without it, 50 processes would each allow themselves the
    /// whole 12 a minute during a Redis outage, and the identity service
    /// would answer the rest with 429s.
    ///
    /// The shares keep the fleet's *rate* within the budget; processes
    /// cannot agree on when to spend theirs, so if all of them need a
    /// login at the same moment, up to `fleet_size` logins (never more
    /// than `count` from one process) may land in one window.
    ///
    /// ```
    /// # use myinvois_auth::{Credentials, Environment, TokenCache};
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .environment(Environment::Production)
    ///     .fleet_size(20) // 20 pods: during an outage, 1 login per 100 s each at most
    ///     .build()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    ///
    /// Defaults to 1 (a single process: the whole budget). A cache with a
    /// token store and no `fleet_size` logs a warning, once, when the store
    /// is first out of reach.
    pub fn fleet_size(mut self, processes: u32) -> Self {
        self.fleet_size = Some(processes);
        self
    }

    /// Checks the settings and builds the cache.
    ///
    /// Fails with [`Error::InvalidConfig`] when no environment or identity URL is
    /// given, a URL is not `https` (or loopback `http`), the client ID or
    /// secret is empty, or (feature `rustls-no-provider` without `rustls` or
    /// `native-tls`) no rustls crypto provider is installed yet. Does not
    /// contact the identity service.
    pub fn build(self) -> Result<TokenCache, Error> {
        Ok(TokenCache::from_settings(self.into_settings()?))
    }

    pub(crate) fn into_settings(self) -> Result<Settings, Error> {
        if self.credentials.client_id.trim().is_empty() {
            return Err(Error::InvalidConfig("the client ID is empty".into()));
        }
        check_secret(&self.credentials.client_secret)?;
        if let Some(scope) = &self.scope {
            if scope.trim().is_empty() {
                return Err(Error::InvalidConfig(
                    "the scope is empty (leave it unset instead)".into(),
                ));
            }
        }
        // A `Custom` environment written out by hand is checked here.
        let environment = self.environment.map(Environment::checked).transpose()?;
        let identity_base = match (&self.identity_url, &environment) {
            (Some(url), _) => parse_secure_url("identity URL", &url.0)?,
            (None, Some(env)) => env.identity_url(),
            (None, None) => {
                return Err(Error::InvalidConfig(
                    "no environment: call .environment(Environment::Sandbox or ::Production) or .identity_url(..)"
                        .into(),
                ))
            }
        };
        let refresh_before = self.refresh_before.unwrap_or(DEFAULT_REFRESH_BEFORE);
        let login_rate_limit = match self
            .login_rate_limit
            .unwrap_or(Some(DEFAULT_LOGIN_RATE_LIMIT))
        {
            None => None,
            Some((0, _)) => {
                return Err(Error::InvalidConfig(
                    "login_rate_limit count is 0: no login could ever be made".into(),
                ))
            }
            Some((_, period)) if period.is_zero() => {
                return Err(Error::InvalidConfig(
                    "login_rate_limit period is zero; use without_login_rate_limit() instead"
                        .into(),
                ))
            }
            Some((count, period)) => Some(RateLimit { count, period }),
        };
        let max_entries = self.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        if max_entries == 0 {
            return Err(Error::InvalidConfig("max_entries is 0".into()));
        }
        let token_url = token_endpoint(&identity_base)?;
        check_crypto_provider()?;
        let http_client = self
            .http_client
            .map_or_else(
                || reqwest::Client::builder().pool_max_idle_per_host(0),
                |c| c.0,
            )
            // A login never follows a redirect, and never leaves https.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(token_url.scheme() == "https")
            // Verbose connections log what they carry: the form with the
            // secret, the answer with the token.
            .connection_verbose(false)
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot build the HTTP client: {e}")))?;
        let Credentials {
            client_id,
            client_secret,
        } = self.credentials;
        Ok(Settings {
            token_url,
            credentials: ClientCredentials::new(client_id, client_secret),
            environment,
            scope: self.scope,
            refresh_before,
            refresh_retry_after: self.refresh_retry_after.unwrap_or(DEFAULT_REFRESH_RETRY),
            login_timeout: self.login_timeout.unwrap_or(Some(DEFAULT_LOGIN_TIMEOUT)),
            http_client,
            login_rate_limit,
            max_login_wait: self.max_login_wait.unwrap_or(DEFAULT_MAX_LOGIN_WAIT),
            idle_after: self.idle_after.unwrap_or(DEFAULT_IDLE_AFTER),
            max_entries,
            token_store: self
                .token_store
                .unwrap_or_else(|| Arc::new(MemoryTokenStore::new())),
            failure_policy: FailurePolicy {
                lasting: backoff(self.login_error_backoff, DEFAULT_LOGIN_ERROR_BACKOFF),
                transient: backoff(
                    self.transient_error_backoff,
                    DEFAULT_TRANSIENT_ERROR_BACKOFF,
                ),
            },
            rejection_memory: self.rejection_memory.unwrap_or(DEFAULT_REJECTION_MEMORY),
            fleet_size: self.fleet_size.map(|n| n.max(1)),
        })
    }
}

/// A back-off from the builder's `(initial, max)`; a `max` below `initial`
/// is raised to it.
fn backoff(set: Option<(Duration, Duration)>, default: (Duration, Duration)) -> Backoff {
    let (initial, max) = set.unwrap_or(default);
    Backoff {
        initial,
        max: max.max(initial),
    }
}

/// With `rustls-no-provider` alone, reqwest panics when it builds a client
/// and no rustls crypto provider is installed (it has none of its own to
/// fall back on): refuse instead, naming the fix.
#[cfg(all(
    feature = "rustls-no-provider",
    not(feature = "rustls"),
    not(feature = "native-tls")
))]
fn check_crypto_provider() -> Result<(), Error> {
    match rustls::crypto::CryptoProvider::get_default() {
        Some(_) => Ok(()),
        None => Err(Error::InvalidConfig(
            "no rustls crypto provider is installed (feature `rustls-no-provider`): install one \
             before build(), e.g. `rustls::crypto::ring::default_provider().install_default()`"
                .into(),
        )),
    }
}

/// `rustls` brings aws-lc-rs; `native-tls` is reqwest's default when on.
#[cfg(not(all(
    feature = "rustls-no-provider",
    not(feature = "rustls"),
    not(feature = "native-tls")
)))]
fn check_crypto_provider() -> Result<(), Error> {
    Ok(())
}

/// `{base}/connect/token`, keeping any path prefix of the base.
fn token_endpoint(base: &Url) -> Result<Url, Error> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join("connect/token")
        .map_err(|e| Error::InvalidConfig(format!("cannot build the token URL: {e}")))
}

/// Parses a URL that may receive a secret: `https`, or `http` to loopback only.
/// An error names the URL by its origin only, never by its user-info, path,
/// query or fragment, where a secret may have been put.
pub(crate) fn parse_secure_url(what: &str, raw: &str) -> Result<Url, Error> {
    // url's ParseError names the kind of fault, never the input.
    let url = Url::parse(raw)
        .map_err(|e| Error::InvalidConfig(format!("the {what} is not a valid URL: {e}")))?;
    let origin = redact::origin(&url);
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidConfig(format!(
            "the {what} ({origin}) must not carry user-info (credentials go in Credentials)"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidConfig(format!(
            "the {what} ({origin}) must not have a query or fragment"
        )));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(Error::InvalidConfig(format!(
            "the {what} {origin} is plain http: secrets are sent only over https (or http to a loopback host)"
        ))),
        other => Err(Error::InvalidConfig(format!(
            "the {what} has scheme {other:?}; expected https"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_endpoint_keeps_path_prefix() {
        let u = Url::parse("https://example.com/identity").unwrap();
        assert_eq!(
            token_endpoint(&u).unwrap().as_str(),
            "https://example.com/identity/connect/token"
        );
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            token_endpoint(&u).unwrap().as_str(),
            "http://127.0.0.1:8080/connect/token"
        );
    }

    #[test]
    fn plain_http_is_accepted_only_for_loopback() {
        for ok in [
            "https://id.example.com",
            "http://127.0.0.1:1",
            "http://127.8.9.10",
            "http://localhost:8080",
            "http://[::1]:80",
        ] {
            assert!(parse_secure_url("u", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://id.example.com",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "not a url",
            "https://user:pw@id.example.com",
            "https://id.example.com/?a=b",
        ] {
            let err = parse_secure_url("u", bad).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{bad}");
        }
    }

    #[test]
    fn a_custom_environment_written_by_hand_is_checked_like_one_from_custom() {
        let url = |s: &str| Url::parse(s).unwrap();
        let good = url("https://id.example.com");
        for (identity, api) in [
            (url("http://id.example.com/?k=SECRETPW"), good.clone()),
            (url("https://id.example.com/?k=SECRETPW"), good.clone()),
            (good.clone(), url("http://api.example.com")),
            (good.clone(), url("https://u:SECRETPW@api.example.com")),
        ] {
            let env = Environment::Custom {
                identity_url: identity,
                api_url: api,
            };
            assert!(!format!("{env:?}").contains("SECRETPW"), "{env:?}");
            let err = TokenCacheBuilder::new(Credentials::new("id", "s"))
                .environment(env)
                .into_settings()
                .unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
            assert!(!format!("{err} {err:?}").contains("SECRETPW"), "{err:?}");
        }
    }

    #[test]
    fn the_builders_debug_shows_no_query_nor_user_info() {
        let builder = TokenCacheBuilder::new(Credentials::new("id", "CLIENTSECRET"))
            .identity_url("https://u:SECRETPW@id.example.com/x?k=SECRETPW#SECRETPW")
            .http_client(
                reqwest::Client::builder()
                    .proxy(reqwest::Proxy::all("http://u:SECRETPW@proxy.example.com").unwrap()),
            );
        let shown = format!("{builder:?}");
        assert!(shown.contains("https://id.example.com/x"), "{shown}");
        assert!(
            !shown.contains("SECRETPW") && !shown.contains("CLIENTSECRET"),
            "{shown}"
        );
    }

    #[test]
    fn url_errors_name_the_origin_only() {
        for bad in [
            "https://user:SECRETPW@id.example.com",
            "https://id.example.com/?key=SECRETPW",
            "https://id.example.com/#SECRETPW",
            "http://id.example.com/SECRETPW?x=SECRETPW",
            "ftp://id.example.com/SECRETPW",
            "http://id.example.com:SECRETPW",
            "SECRETPW",
        ] {
            let err = parse_secure_url("identity URL", bad).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("SECRETPW"), "{bad}: {text}");
        }
    }

    #[test]
    fn build_requires_an_environment_and_non_empty_credentials() {
        let err = TokenCacheBuilder::new(Credentials::new("id", "s"))
            .into_settings()
            .unwrap_err();
        assert!(err.to_string().contains("no environment"), "{err}");
        let err = TokenCacheBuilder::new(Credentials::new("", "s"))
            .environment(Environment::Sandbox)
            .into_settings()
            .unwrap_err();
        assert!(err.to_string().contains("client ID"), "{err}");
        let err = TokenCacheBuilder::new(Credentials::new("id", ""))
            .environment(Environment::Sandbox)
            .into_settings()
            .unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn identity_url_overrides_the_environment() {
        let s = TokenCacheBuilder::new(Credentials::new("id", "s"))
            .environment(Environment::Production)
            .identity_url("http://127.0.0.1:9/base/")
            .into_settings()
            .unwrap();
        assert_eq!(
            s.token_url.as_str(),
            "http://127.0.0.1:9/base/connect/token"
        );
        assert_eq!(s.refresh_before, DEFAULT_REFRESH_BEFORE);
        assert_eq!(s.login_timeout, Some(DEFAULT_LOGIN_TIMEOUT));
        assert_eq!(
            s.login_rate_limit,
            Some(RateLimit {
                count: 12,
                period: Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn a_budget_that_allows_no_login_is_refused() {
        let base = || {
            TokenCacheBuilder::new(Credentials::new("id", "s")).environment(Environment::Sandbox)
        };
        assert!(base()
            .login_rate_limit(0, Duration::from_secs(60))
            .into_settings()
            .is_err());
        assert!(base()
            .login_rate_limit(12, Duration::ZERO)
            .into_settings()
            .is_err());
        assert!(base().max_entries(0).into_settings().is_err());
        let off = base().without_login_rate_limit().into_settings().unwrap();
        assert_eq!(off.login_rate_limit, None);
    }
}
