//! [`TokenCache`]: the shared token cache, one entry per taxpayer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use super::context::Context;
use super::entry::{Entry, Reason};
use super::table::Table;
use crate::clock::{after, Now};
use crate::config::{Credentials, Environment, Settings, TokenCacheBuilder};
use crate::error::Error;
use crate::log_limit::{millis, LogLimit};
use crate::rejection::{endpoint, Endpoint, Verdict};
use crate::stats::{CacheStats, Counters};
use crate::taxpayer::OnBehalfOf;
use crate::token::AccessToken;

/// How long a renewal after a 401 may take to be sent, without a login
/// timeout, for others to wait for its verdict.
const LOGIN_ALLOWANCE: Duration = Duration::from_secs(60);
/// How long the retry of a 401's call may take, for the same.
const RETRY_ALLOWANCE: Duration = Duration::from_secs(30);
/// How often, at most, the cache looks for entries to refresh ahead of expiry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A shared cache of MyInvois access tokens.
///
/// Cloning is cheap and every clone shares the same entries: one for the
/// plain (taxpayer) login, and one per taxpayer an intermediary acts for.
/// Each entry has at most one login in flight; callers on a cold or expired
/// entry wait for it together, and a token close to expiry is refreshed in the
/// background while callers keep using it.
///
/// Use it through [`AuthMiddleware`](crate::AuthMiddleware), or directly:
///
/// ```no_run
/// use myinvois_auth::{Credentials, Environment, TokenCache};
///
/// # async fn run() -> Result<(), myinvois_auth::Error> {
/// let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
///     .environment(Environment::Sandbox)
///     .build()?;
/// let token = cache.token().await?;                               // as the taxpayer
/// let theirs = cache.token_on_behalf_of("C25845632020").await?;   // as an intermediary
/// assert!(!token.same_token(&theirs));
/// # Ok(()) }
/// ```
///
/// Tokens are never served after their expiry. Logins run as tokio tasks, so
/// the cache must be used inside a tokio runtime.
///
/// # Refresh ahead of expiry
///
/// While the cache is in use, it looks at most once a second (from a call,
/// in a task of its own: the cache runs no timers) for entries inside their
/// refresh window that were used within [`idle_after`](TokenCacheBuilder::idle_after),
/// and refreshes them in the background. Idle entries log in on their next use.
///
/// # Login budget
///
/// Every login takes a slot from the client ID's budget (12 a minute by
/// default, shared by every cache of the process with the same identity URL
/// and client ID). See [`login_rate_limit`](TokenCacheBuilder::login_rate_limit)
/// and [`max_login_wait`](TokenCacheBuilder::max_login_wait).
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Context>,
    plain: Arc<Entry>,
    taxpayers: Table,
    /// No sweep before this (nanos since the context's epoch).
    next_sweep: AtomicU64,
    /// What the sweep reported through the `metrics` facade.
    #[cfg(feature = "metrics")]
    report: super::report::Report,
    /// The DEBUG lines of a wait for another taxpayer's verdict, and of a
    /// 401 answered from what was learned: at most one a second each.
    verdict_log: LogLimit,
    learned_log: LogLimit,
}

impl TokenCache {
    /// Starts configuring a cache for these credentials.
    pub fn builder(credentials: Credentials) -> TokenCacheBuilder {
        TokenCacheBuilder::new(credentials)
    }

    pub(crate) fn from_settings(settings: Settings) -> Self {
        let ctx = Arc::new(Context::new(settings));
        TokenCache {
            inner: Arc::new(Inner {
                plain: Arc::new(Entry::new(Arc::clone(&ctx), None, Instant::now())),
                ctx,
                taxpayers: Table::default(),
                next_sweep: AtomicU64::new(0),
                #[cfg(feature = "metrics")]
                report: super::report::Report::default(),
                verdict_log: LogLimit::default(),
                learned_log: LogLimit::default(),
            }),
        }
    }

    /// A valid token for the plain login (the ERP system as the taxpayer).
    ///
    /// Returns at once while a valid token is cached; otherwise waits for the
    /// one login in flight (starting it if needed) and shares its result,
    /// error included.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        let now = self.inner.ctx.clock.now();
        self.maybe_sweep(now);
        self.inner.plain.token(now, self.login_wait()).await
    }

    /// A valid token for an intermediary acting for `taxpayer` (a TIN, or
    /// `TIN:ROB`): the login carries the `onbehalfof` header. Each taxpayer has
    /// its own entry; one taxpayer's login never delays another's calls.
    ///
    /// Fails with [`Error::InvalidTaxpayer`] for a value that is not an identifier.
    pub async fn token_on_behalf_of(
        &self,
        taxpayer: impl AsRef<str>,
    ) -> Result<AccessToken, Error> {
        self.taxpayer_token(taxpayer.as_ref(), self.login_wait())
            .await
    }

    async fn taxpayer_token(&self, taxpayer: &str, wait: Duration) -> Result<AccessToken, Error> {
        let now = self.inner.ctx.clock.now();
        self.maybe_sweep(now);
        if let Some(Some(token)) = self.inner.taxpayers.with(taxpayer, |e| e.cached(now)) {
            return Ok(token);
        }
        self.taxpayer_entry(taxpayer, now)?.token(now, wait).await
    }

    /// The cache's counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.ctx.counters
    }

    /// How long a caller may wait for a login (the builder's `max_login_wait`).
    pub(super) fn login_wait(&self) -> Duration {
        self.inner.ctx.settings.max_login_wait
    }

    /// The token for `on_behalf_of`, or the plain login's for `None`,
    /// waiting at most `wait` for a login to be sent.
    pub(super) async fn token_within(
        &self,
        on_behalf_of: Option<&OnBehalfOf>,
        wait: Duration,
    ) -> Result<AccessToken, Error> {
        match on_behalf_of {
            None => {
                let now = self.inner.ctx.clock.now();
                self.maybe_sweep(now);
                self.inner.plain.token(now, wait).await
            }
            Some(taxpayer) => self.taxpayer_token(taxpayer.as_str(), wait).await,
        }
    }

    /// The valid token cached for `on_behalf_of`, if any (no login, no
    /// wait): the hot path.
    #[inline]
    pub(super) fn cached(&self, on_behalf_of: Option<&OnBehalfOf>) -> Option<AccessToken> {
        let now = self.inner.ctx.clock.now();
        self.maybe_sweep(now);
        match on_behalf_of {
            None => self.inner.plain.cached(now),
            Some(taxpayer) => self
                .inner
                .taxpayers
                .with(taxpayer.as_str(), |e| e.cached(now))
                .flatten(),
        }
    }

    /// Forgets `token` if it is still the one cached for its taxpayer, so that
    /// the next caller logs in again. Use it when the API rejected the token
    /// (HTTP 401). Returns whether anything was forgotten: an invalidation that
    /// names an older token than the current one (or a token of another cache)
    /// changes nothing.
    ///
    /// ```no_run
    /// # async fn run(cache: myinvois_auth::TokenCache) -> Result<(), myinvois_auth::Error> {
    /// let token = cache.token().await?;
    /// // ... the API answered 401 with this token:
    /// cache.invalidate(&token);
    /// let fresh = cache.token().await?; // logs in again
    /// # let _ = fresh; Ok(()) }
    /// ```
    pub fn invalidate(&self, token: &AccessToken) -> bool {
        self.retire(token, Reason::Invalidated)
    }

    /// Retires `token` if still cached; the next login names `reason`.
    fn retire(&self, token: &AccessToken, reason: Reason) -> bool {
        match token.on_behalf_of() {
            None => self.inner.plain.invalidate(token, reason),
            Some(taxpayer) => self
                .inner
                .taxpayers
                .with(taxpayer.as_str(), |entry| entry.invalidate(token, reason))
                .unwrap_or(false),
        }
    }

    /// Tells the cache that the API answered `401 Unauthorized` to `token`
    /// for `method` `path`, and returns whether a retry with a new token may
    /// help. [`AuthMiddleware`](crate::AuthMiddleware) does this for you;
    /// call it when you send tokens yourself, instead of
    /// [`invalidate`](Self::invalidate).
    ///
    /// The first 401 at an endpoint is taken to be about the token: it is
    /// invalidated (if still cached) and the answer is `true`. Once a new
    /// token of the same taxpayer was rejected there too, the endpoint's
    /// 401s are taken not to be about the token: nothing is invalidated,
    /// the answer is `false`, for every taxpayer of the cache, for
    /// [`rejection_memory`](TokenCacheBuilder::rejection_memory) after it
    /// was learned (at the exact path that taught it, for as long as its
    /// 401s go on), or until a token gets through at that path
    /// ([`accepted`](Self::accepted)). IDs in paths cannot make one endpoint
    /// many: only MyInvois's documented path words are kept. While another
    /// taxpayer's renewal at the endpoint is deciding, the answer is
    /// `false` (the middleware waits for that verdict instead). See the
    /// [guide](crate::guide::rejections) for the bounds.
    ///
    /// ```no_run
    /// # async fn run(cache: myinvois_auth::TokenCache, http: reqwest::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let url = "https://preprod-api.myinvois.hasil.gov.my/api/v1.0/documenttypes";
    /// let token = cache.token().await?;
    /// let response = http.get(url).header("authorization", token.authorization_header()).send().await?;
    /// if response.status() == 401 {
    ///     if cache.rejected(&token, &http::Method::GET, "/api/v1.0/documenttypes") {
    ///         let fresh = cache.token().await?; // one new login, shared by everyone
    ///         # let _ = fresh;
    ///     }
    /// } else if response.status().is_success() {
    ///     cache.accepted(&token, &http::Method::GET, "/api/v1.0/documenttypes");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn rejected(&self, token: &AccessToken, method: &http::Method, path: &str) -> bool {
        let endpoint = endpoint(method, path);
        match self.verdict(token, &endpoint) {
            Verdict::Renew => self.renew(token),
            // Another taxpayer's renewal there is deciding: this one is
            // not renewed now (the middleware waits for the verdict).
            Verdict::Await(..) | Verdict::NotTheToken => self.not_the_token(method, &endpoint),
        }
    }

    /// [`rejected`](Self::rejected), waiting (at most `max_login_wait`)
    /// for the verdict of another taxpayer's renewal deciding at the same
    /// endpoint, so that taxpayers meeting an endpoint at once do not each
    /// spend a login on it.
    pub(super) async fn rejected_after_verdict(
        &self,
        token: &AccessToken,
        method: &http::Method,
        path: &str,
    ) -> bool {
        let endpoint = endpoint(method, path);
        let deadline = after(Instant::now(), self.login_wait());
        loop {
            match self.verdict(token, &endpoint) {
                Verdict::Renew => return self.renew(token),
                Verdict::NotTheToken => return self.not_the_token(method, &endpoint),
                Verdict::Await(mut decided, until) => {
                    let wait = deadline.min(until);
                    if let Some(left_out) = self.inner.verdict_log.allow() {
                        tracing::debug!(
                            client_id = self.client_id(),
                            endpoint = %endpoint.template,
                            max_wait_ms = millis(wait.saturating_duration_since(Instant::now())),
                            left_out,
                            "401 where another taxpayer's renewal is deciding: waiting for its verdict"
                        );
                    }
                    let verdict = decided.wait_for(|done| *done);
                    if tokio::time::timeout_at(wait, verdict).await.is_err() {
                        // No verdict in time: the 401 is handed back, and
                        // no login is spent on a guess.
                        return self.not_the_token(method, &endpoint);
                    }
                }
            }
        }
    }

    fn verdict(&self, token: &AccessToken, endpoint: &Endpoint) -> Verdict {
        let ctx = &self.inner.ctx;
        let settings = &ctx.settings;
        token.0.rejections.rejected(
            endpoint,
            token.0.id,
            Instant::now(),
            settings.rejection_memory,
            settings
                .max_login_wait
                .saturating_add(settings.login_timeout.unwrap_or(LOGIN_ALLOWANCE))
                .saturating_add(RETRY_ALLOWANCE),
            &ctx.learned,
        )
    }

    fn renew(&self, token: &AccessToken) -> bool {
        self.retire(token, Reason::Rejected);
        true
    }

    fn not_the_token(&self, method: &http::Method, endpoint: &Endpoint) -> bool {
        self.inner.ctx.counters.handed_back_401();
        if let Some(left_out) = self.inner.learned_log.allow() {
            tracing::debug!(
                client_id = self.client_id(),
                %method,
                endpoint = %endpoint.template,
                left_out,
                "401 from an endpoint whose 401s a new token does not cure: the token is kept"
            );
        }
        false
    }

    /// Tells the cache that the API answered `token`'s call to `method`
    /// `path` in a way that shows the token got through (any status but
    /// 401, 407, 408, 429 and 5xx, which a gateway may answer before
    /// looking at the token), ending a renewal's verdict there and what a
    /// 401 at that path had taught (see [`rejected`](Self::rejected)). Three
    /// relaxed loads when nothing was taught.
    #[inline]
    pub fn accepted(&self, token: &AccessToken, method: &http::Method, path: &str) {
        let learned = &self.inner.ctx.learned;
        if token.0.rejections.any() || learned.any() {
            token
                .0
                .rejections
                .accepted(&endpoint(method, path), Instant::now(), learned);
        }
    }

    /// Gives the cache a new client secret, for every clone and middleware at
    /// once. Every cached token stays valid and keeps being served; the next
    /// login (a refresh, or a taxpayer without a token) uses the new secret,
    /// while a login already under way finishes with the one it started with.
    /// MyInvois client secrets expire: rotate before the old one does.
    ///
    /// Fails with [`Error::InvalidConfig`] for an empty secret (the old one
    /// stays in use).
    ///
    /// ```no_run
    /// # async fn run(cache: myinvois_auth::TokenCache) -> Result<(), myinvois_auth::Error> {
    /// let new_secret = std::env::var("MYINVOIS_CLIENT_SECRET").unwrap_or_default();
    /// cache.rotate_secret(new_secret)?;
    /// # Ok(()) }
    /// ```
    pub fn rotate_secret(&self, secret: impl Into<SecretString>) -> Result<(), Error> {
        self.inner.ctx.settings.credentials.rotate(secret.into())?;
        // A new secret may cure what a new login could not (invalid_client).
        self.for_each_entry(|entry| entry.forget_lasting_failures());
        tracing::info!(client_id = self.client_id(), "client secret rotated");
        Ok(())
    }

    /// Forgets every remembered login failure, so the next caller of each
    /// taxpayer logs in again at once: for example after a taxpayer has
    /// authorised this intermediary in the MyInvois portal, while its
    /// `invalid_grant` is still answered from memory
    /// (see [`login_error_backoff`](TokenCacheBuilder::login_error_backoff)).
    ///
    /// ```no_run
    /// # async fn run(cache: myinvois_auth::TokenCache) -> Result<(), myinvois_auth::Error> {
    /// cache.forget_failures();
    /// let token = cache.token_on_behalf_of("C25845632020").await?;
    /// # let _ = token; Ok(()) }
    /// ```
    pub fn forget_failures(&self) {
        self.for_each_entry(|entry| entry.forget_failures());
    }

    fn for_each_entry(&self, f: impl Fn(&Entry)) {
        f(&self.inner.plain);
        self.inner.taxpayers.for_each(|entry| f(entry));
    }

    /// The environment the cache was built with, if any.
    pub fn environment(&self) -> Option<&Environment> {
        self.inner.ctx.settings.environment.as_ref()
    }

    /// The client ID the cache logs in with.
    pub fn client_id(&self) -> &str {
        self.inner.ctx.settings.credentials.client_id()
    }

    /// The cache's counters: logins made, refused with 429, refused by the
    /// budget, refreshes ahead of expiry, and entries held.
    pub fn stats(&self) -> CacheStats {
        let entries = self.inner.taxpayers.len() + usize::from(self.inner.plain.has_token());
        self.inner.ctx.counters.snapshot(entries)
    }

    /// Starts a sweep for due refreshes if none ran in the last second.
    /// On the hot path: one atomic load when no sweep is due.
    #[inline]
    fn maybe_sweep(&self, now: Now) {
        let now_nanos = now.nanos;
        let due = self.inner.next_sweep.load(Ordering::Relaxed);
        if now_nanos < due {
            return;
        }
        let next = now_nanos.saturating_add(SWEEP_INTERVAL.as_nanos() as u64);
        if self
            .inner
            .next_sweep
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            // The sweep before this one started a sweep interval before
            // `due` (none did when `due` is 0).
            let since = due.saturating_sub(SWEEP_INTERVAL.as_nanos() as u64);
            runtime.spawn(async move { inner.sweep(since) });
        }
    }

    fn taxpayer_entry(&self, taxpayer: &str, now: Now) -> Result<Arc<Entry>, Error> {
        if let Some(entry) = self.inner.taxpayers.get(taxpayer) {
            return Ok(entry);
        }
        let on_behalf_of = OnBehalfOf::new(taxpayer);
        on_behalf_of.validate()?;
        let ctx = &self.inner.ctx;
        Ok(self
            .inner
            .taxpayers
            .get_or_insert(taxpayer, ctx.settings.max_entries, || {
                Arc::new(Entry::new(Arc::clone(ctx), Some(on_behalf_of), now.instant))
            }))
    }
}

impl Inner {
    /// Starts the background refreshes that are due, and (feature
    /// `metrics`) reports the entries and the tokens served since `since`
    /// (nanos since the context's epoch: when the sweep before started).
    fn sweep(&self, since: u64) {
        let now = Instant::now();
        self.plain.refresh_if_due(now);
        self.taxpayers.for_each(|entry| entry.refresh_if_due(now));
        #[cfg(feature = "metrics")]
        self.report.sweep(&self.plain, &self.taxpayers, now, since);
        #[cfg(not(feature = "metrics"))]
        let _ = since;
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.inner.ctx.settings;
        f.debug_struct("TokenCache")
            .field("client_id", &s.credentials.client_id())
            .field("token_url", &s.token_url.as_str())
            .field("scope", &s.scope)
            .field("taxpayers", &self.inner.taxpayers.len())
            .finish_non_exhaustive()
    }
}
