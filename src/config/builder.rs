//! [`TokenCacheBuilder`]: every setting a cache can take, each filled with
//! its default when the builder is made (as reqwest's `ClientBuilder`
//! does), and checked in one place, [`into_settings`](TokenCacheBuilder::into_settings),
//! which [`build`](TokenCacheBuilder::build) calls.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::credentials::{check_secret, ClientCredentials, Credentials};
use super::crypto_provider::check_crypto_provider;
use super::environment::{parse_secure_url, token_endpoint, Environment};
use super::login_client::LoginClient;
use super::settings::Settings;
use crate::budget::{RateLimit, DEFAULT_LOGIN_RATE_LIMIT};
use crate::error::Error;
use crate::failure::{
    Backoff, FailurePolicy, DEFAULT_LOGIN_ERROR_BACKOFF, DEFAULT_TRANSIENT_ERROR_BACKOFF,
};
use crate::redact;
use crate::rejection::DEFAULT_REJECTION_MEMORY;
use crate::store::{MemoryTokenStore, TokenStore};
use crate::taxpayer::OnBehalfOf;

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

/// Builds a [`TokenCache`](crate::TokenCache). Made by
/// [`TokenCache::builder`](crate::TokenCache::builder).
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
    /// No default: a sandbox credential never hits production by accident.
    environment: Option<Environment>,
    /// Overrides the environment's identity URL.
    identity_url: Option<UncheckedUrl>,
    /// `None`: no `scope` parameter in the login form.
    scope: Option<String>,
    refresh_before: Duration,
    refresh_retry_after: Duration,
    /// `None`: no timeout.
    login_timeout: Option<Duration>,
    http_client: HttpClient,
    login_middlewares: LoginMiddlewares,
    /// `None`: no login budget.
    login_rate_limit: Option<(u32, Duration)>,
    max_login_wait: Duration,
    idle_after: Duration,
    max_entries: usize,
    token_store: Arc<dyn TokenStore>,
    login_error_backoff: (Duration, Duration),
    transient_error_backoff: (Duration, Duration),
    rejection_memory: Duration,
    /// `None`: not set (a single process, or a fleet that forgot it).
    fleet_size: Option<u32>,
    check_token_taxpayer: bool,
    /// `None`: the plain login's taxpayer is not known.
    taxpayer_tin: Option<String>,
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
/// The caller's builder (or the default one), and whether it is built by
/// the first login instead of by `build()`.
struct HttpClient(reqwest::ClientBuilder, bool);

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reqwest::ClientBuilder { .. }")
    }
}

/// The caller's login middlewares, outermost first: `Debug` counts them.
#[derive(Default)]
struct LoginMiddlewares(Vec<Arc<dyn reqwest_middleware::Middleware>>);

impl fmt::Debug for LoginMiddlewares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} login middleware(s)", self.0.len())
    }
}

impl TokenCacheBuilder {
    /// A builder for `credentials` with every default filled in.
    pub(crate) fn new(credentials: Credentials) -> Self {
        let (count, period) = DEFAULT_LOGIN_RATE_LIMIT;
        TokenCacheBuilder {
            credentials,
            environment: None,
            identity_url: None,
            scope: None,
            refresh_before: DEFAULT_REFRESH_BEFORE,
            refresh_retry_after: DEFAULT_REFRESH_RETRY,
            login_timeout: Some(DEFAULT_LOGIN_TIMEOUT),
            // A login happens about once an hour per taxpayer: no idle
            // connections kept.
            http_client: HttpClient(reqwest::Client::builder().pool_max_idle_per_host(0), false),
            login_middlewares: LoginMiddlewares::default(),
            login_rate_limit: Some((count, period)),
            max_login_wait: DEFAULT_MAX_LOGIN_WAIT,
            idle_after: DEFAULT_IDLE_AFTER,
            max_entries: DEFAULT_MAX_ENTRIES,
            token_store: Arc::new(MemoryTokenStore::new()),
            login_error_backoff: DEFAULT_LOGIN_ERROR_BACKOFF,
            transient_error_backoff: DEFAULT_TRANSIENT_ERROR_BACKOFF,
            rejection_memory: DEFAULT_REJECTION_MEMORY,
            fleet_size: None,
            check_token_taxpayer: true,
            taxpayer_tin: None,
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

    /// Start a background refresh this long before a token stops being
    /// served ([`EXPIRY_MARGIN`](crate::EXPIRY_MARGIN) before its lifetime
    /// ends); callers keep using the still-valid token meanwhile. Whatever
    /// it is set to, every token has a refresh window: at least a twentieth
    /// of the time it is served and 5 seconds (a window too short to log in
    /// within would make every refresh block callers), at most half of it
    /// (a short-lived token is not refreshed continuously).
    ///
    /// Defaults to [`DEFAULT_REFRESH_BEFORE`] (5 minutes).
    pub fn refresh_before(mut self, before: Duration) -> Self {
        self.refresh_before = before;
        self
    }

    /// After a failed background refresh, wait this long before the next
    /// attempt (the still-valid token keeps being served meanwhile).
    ///
    /// Defaults to [`DEFAULT_REFRESH_RETRY`] (10 seconds).
    pub fn refresh_retry_after(mut self, after: Duration) -> Self {
        self.refresh_retry_after = after;
        self
    }

    /// Give up on a login that has not answered within this time
    /// ([`Error::Timeout`]). It must not be zero (every login would time
    /// out): [`build`](Self::build) refuses it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use myinvois_auth::{Credentials, Environment, TokenCache};
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .environment(Environment::Sandbox)
    ///     .login_timeout(Duration::from_secs(10))
    ///     .build()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    ///
    /// Defaults to [`DEFAULT_LOGIN_TIMEOUT`] (20 seconds).
    pub fn login_timeout(mut self, timeout: Duration) -> Self {
        self.login_timeout = Some(timeout);
        self
    }

    /// Wait for a login's answer however long it takes: only sensible in
    /// tests (under tokio's paused clock, a timeout would fire while real
    /// sockets are read).
    ///
    /// Defaults to a timeout (see [`login_timeout`](Self::login_timeout)).
    pub fn without_login_timeout(mut self) -> Self {
        self.login_timeout = None;
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
        self.http_client.0 = builder;
        self
    }

    /// Build the login's HTTP client when the first login needs it, not in
    /// [`build`](Self::build). Building it loads the system's root
    /// certificates (a few milliseconds of CPU): a short-lived process that
    /// usually finds a valid token in a shared [token store](Self::token_store)
    /// (a command, a serverless function) never spends them. The price:
    /// an error building the client shows at the first login (as
    /// [`Error::InvalidConfig`], before a budget slot is taken), and that
    /// first login spends the build inside its callers'
    /// [`max_login_wait`](Self::max_login_wait), on the runtime's thread.
    /// `myinvois-auth token` does this.
    ///
    /// ```
    /// # use myinvois_auth::{Credentials, Environment, TokenCache};
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .environment(Environment::Sandbox)
    ///     .lazy_login_client()
    ///     .build()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    ///
    /// Defaults to off: `build()` builds the client.
    pub fn lazy_login_client(mut self) -> Self {
        self.http_client.1 = true;
        self
    }

    /// Puts a reqwest-middleware layer around the login's own HTTP call
    /// (`POST {identity}/connect/token`), for example reqwest-tracing's
    /// `TracingMiddleware`, so that the call has its span inside the
    /// `myinvois_auth.login` span and carries the trace context to the
    /// identity service. Called more than once, the first is outermost.
    ///
    /// ```
    /// # use myinvois_auth::{Credentials, Environment, TokenCache};
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .environment(Environment::Sandbox)
    ///     .login_middleware(reqwest_tracing::TracingMiddleware::default())
    ///     .build()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    ///
    /// The layer sees the request, whose form holds the client secret: use
    /// one that does not log bodies (reqwest-tracing logs none). Whatever
    /// the layer does, a login still goes out once, to the token URL only,
    /// and never follows a redirect: a layer that sends it a second time
    /// (a retry layer: each login takes a slot of the login budget, and
    /// the cache retries when it may) or to another URL is stopped there,
    /// and the login fails with [`Error::LoginMiddleware`], as it does when
    /// the layer itself fails.
    ///
    /// Defaults to none.
    pub fn login_middleware(mut self, middleware: impl reqwest_middleware::Middleware) -> Self {
        self.login_middlewares.0.push(Arc::new(middleware));
        self
    }

    /// At most `count` logins per `period` for this client ID, shared by every
    /// taxpayer and every cache in the process that logs in with it. Waiting
    /// logins go earliest deadline first (see [`max_login_wait`](Self::max_login_wait)).
    /// If several caches of one process use the same identity URL and client
    /// ID, the first one built sets the limit. The budget outlives its
    /// caches while it matters (a login in its window, a 429's hold): a
    /// cache built per job, or on a configuration reload, keeps to what
    /// its predecessor spent, and takes its own limit when no other cache
    /// holds the budget.
    ///
    /// Defaults to MyInvois' limit, 12 logins per 60 seconds.
    pub fn login_rate_limit(mut self, count: u32, period: Duration) -> Self {
        self.login_rate_limit = Some((count, period));
        self
    }

    /// Switch the login budget off: logins go out as soon as they are needed.
    /// A 429's `Retry-After` is still honoured.
    ///
    /// Defaults to on (see [`login_rate_limit`](Self::login_rate_limit)).
    pub fn without_login_rate_limit(mut self) -> Self {
        self.login_rate_limit = None;
        self
    }

    /// How long a caller without a valid token may wait for a login slot.
    /// A caller whose slot would come later is refused at once with
    /// [`Error::RateLimited`] carrying when to try again. Callers holding a
    /// valid token never wait.
    ///
    /// Defaults to [`DEFAULT_MAX_LOGIN_WAIT`] (10 seconds).
    pub fn max_login_wait(mut self, wait: Duration) -> Self {
        self.max_login_wait = wait;
        self
    }

    /// An entry not used for this long is idle: it is not refreshed ahead of
    /// time, and logs in again on its next use, so the login budget goes to
    /// taxpayers that are active.
    ///
    /// Defaults to [`DEFAULT_IDLE_AFTER`] (15 minutes).
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = idle;
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
        self.max_entries = max;
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
        self.token_store = store;
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
        self.login_error_backoff = (initial, max);
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
        self.transient_error_backoff = (initial, max);
        self
    }

    /// How long an API endpoint where a new token was rejected with 401 too
    /// is taken to answer 401 whatever the token, after it was learned (at
    /// the exact path that taught it, after its last 401): its 401s are
    /// then handed to the caller without invalidating the token or logging
    /// in again, for every taxpayer of the cache. A token that gets through
    /// at that path (not 401, 407, 408, 429 or 5xx) ends this at once. See
    /// [`TokenCache::rejected`](crate::TokenCache::rejected) and the
    /// [guide](crate::guide::rejections) for the bounds.
    ///
    /// Defaults to [`DEFAULT_REJECTION_MEMORY`](crate::DEFAULT_REJECTION_MEMORY) (10 minutes).
    pub fn rejection_memory(mut self, memory: Duration) -> Self {
        self.rejection_memory = memory;
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

    /// Whether a token whose JWT claims name a taxpayer (`TaxpayerTIN`, or
    /// the older `TaxTin`) must name the one its login asked for: the
    /// `onbehalfof` TIN (the part before `:` of `TIN:ROB`), or for the plain
    /// login the [`taxpayer_tin`](Self::taxpayer_tin) given. A token naming
    /// another is never served: the caller gets
    /// [`Error::WrongTaxpayer`], remembered like an OAuth error, and a
    /// warning is logged. A token that is not a JWT, or names no taxpayer,
    /// is served. Switch it off only for an identity service that puts
    /// something else in that claim.
    ///
    /// ```
    /// # use myinvois_auth::{Credentials, Environment, TokenCache};
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .environment(Environment::custom("https://id.example.com", "https://api.example.com")?)
    ///     .check_token_taxpayer(false) // this stand-in names no MyInvois taxpayer
    ///     .build()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    ///
    /// Defaults to on.
    pub fn check_token_taxpayer(mut self, check: bool) -> Self {
        self.check_token_taxpayer = check;
        self
    }

    /// The TIN the plain (non-intermediary) login acts as: its tokens must
    /// name it when they name a taxpayer (see
    /// [`check_token_taxpayer`](Self::check_token_taxpayer)).
    ///
    /// ```
    /// # use myinvois_auth::{Credentials, Environment, TokenCache};
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .environment(Environment::Sandbox)
    ///     .taxpayer_tin("C25845632020")
    ///     .build()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    ///
    /// Defaults to none: the plain login's tokens are not checked.
    pub fn taxpayer_tin(mut self, tin: impl Into<String>) -> Self {
        self.taxpayer_tin = Some(tin.into());
        self
    }

    /// The checks of [`build`](Self::build), and the settings they pass.
    pub(crate) fn into_settings(self) -> Result<Settings, Error> {
        if self.credentials.client_id.trim().is_empty() {
            return Err(Error::InvalidConfig("the client ID is empty".into()));
        }
        // Both are named in log lines: a line break would forge one.
        if has_control(&self.credentials.client_id) {
            return Err(Error::InvalidConfig(
                "the client ID has a control character (CR, LF, …)".into(),
            ));
        }
        if self.scope.as_deref().is_some_and(has_control) {
            return Err(Error::InvalidConfig(
                "the scope has a control character (CR, LF, …)".into(),
            ));
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
        let login_rate_limit = match self.login_rate_limit {
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
        if let Some(tin) = &self.taxpayer_tin {
            OnBehalfOf::new(tin).validate()?;
        }
        if self.login_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidConfig(
                "login_timeout is zero: every login would time out; use without_login_timeout() \
                 to wait without one"
                    .into(),
            ));
        }
        if self.max_entries == 0 {
            return Err(Error::InvalidConfig("max_entries is 0".into()));
        }
        let token_url = token_endpoint(&identity_base)?;
        check_crypto_provider()?;
        let http_client = if self.http_client.1 {
            LoginClient::later(self.http_client.0, self.login_middlewares.0, &token_url)
        } else {
            LoginClient::now(self.http_client.0, self.login_middlewares.0, &token_url)?
        };
        let Credentials {
            client_id,
            client_secret,
        } = self.credentials;
        Ok(Settings {
            token_url,
            credentials: ClientCredentials::new(client_id, client_secret),
            environment,
            scope: self.scope,
            refresh_before: self.refresh_before,
            refresh_retry_after: self.refresh_retry_after,
            login_timeout: self.login_timeout,
            http_client,
            login_rate_limit,
            max_login_wait: self.max_login_wait,
            idle_after: self.idle_after,
            max_entries: self.max_entries,
            token_store: self.token_store,
            failure_policy: FailurePolicy {
                lasting: backoff(self.login_error_backoff),
                transient: backoff(self.transient_error_backoff),
            },
            rejection_memory: self.rejection_memory,
            fleet_size: self.fleet_size.map(|n| n.max(1)),
            check_token_taxpayer: self.check_token_taxpayer,
            taxpayer_tin: self
                .taxpayer_tin
                .map(|tin| OnBehalfOf::new(tin).tin().to_owned()),
        })
    }
}

/// Whether `text` holds a control character (a line break, an escape, …).
pub(super) fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// A back-off from the builder's `(initial, max)`; a `max` below `initial`
/// is raised to it.
fn backoff((initial, max): (Duration, Duration)) -> Backoff {
    Backoff {
        initial,
        max: max.max(initial),
    }
}
