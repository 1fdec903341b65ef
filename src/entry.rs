//! One cache entry: the token for one (identity URL, client ID, scope,
//! taxpayer), with at most one login in flight.
//!
//! The hot path ([`Entry::cached`]) is lock-free: one `ArcSwap` load, a
//! comparison with the clock reading the caller already took, and a
//! reference-count increment (plus, at most once a second, a store of the
//! last-use time). Locks are only taken to start or join a login, and never
//! held across an `.await`: the login runs in its own task and hands its
//! result to every waiter through a `watch` channel.
//!
//! Refreshes ahead of expiry are started by the cache's sweep
//! ([`Entry::refresh_if_due`]), never by a caller waiting; every login first
//! takes a slot from the client ID's [`LoginBudget`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::budget::{LoginBudget, DEFAULT_RATE_LIMIT_BACKOFF};
use crate::clock::{Clock, Now};
use crate::config::Settings;
use crate::error::Error;
use crate::freshness::should_refresh;
use crate::login::login;
use crate::stats::Counters;
use crate::store::{budget_key, entry_key, lock_owner, LoginSlot, StoreError};
use crate::taxpayer::OnBehalfOf;
use crate::token::{AccessToken, TokenInner};

type LoginResult = Option<Result<AccessToken, Error>>;

/// A refresh must get its login slot this long before its token expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(5);
/// The last-use time is recorded at this granularity (one store a second at most).
const TOUCH_GRANULARITY: Duration = Duration::from_secs(1);
/// How long a login may take, for the lock, when no login timeout is set.
const LOCK_LOGIN_ALLOWANCE: Duration = Duration::from_secs(60);
/// While another process holds an entry's login lock, look for its token this often.
const FLEET_POLL: Duration = Duration::from_millis(100);
/// Budget for one token-store call (stores have their own, shorter, limits).
const STORE_CALL_LIMIT: Duration = Duration::from_secs(2);

/// What every entry of one cache shares.
pub(crate) struct Context {
    pub(crate) settings: Settings,
    pub(crate) budget: Arc<LoginBudget>,
    /// The client ID's budget key in the token store.
    budget_key: String,
    pub(crate) counters: Counters,
    pub(crate) clock: Clock,
}

impl Context {
    pub(crate) fn new(settings: Settings) -> Self {
        let budget = LoginBudget::shared(
            settings.token_url.as_str(),
            settings.credentials.client_id(),
            settings.login_rate_limit,
        );
        let budget_key = budget_key(
            settings.token_url.as_str(),
            settings.credentials.client_id(),
        );
        Context {
            budget_key,
            settings,
            budget,
            counters: Counters::default(),
            clock: Clock::new(),
        }
    }
}

pub(crate) struct Entry {
    ctx: Arc<Context>,
    on_behalf_of: Option<OnBehalfOf>,
    /// Names the entry in logs: client ID, scope and taxpayer, never a secret.
    label: String,
    /// The entry's key in the token store.
    store_key: String,
    current: ArcSwapOption<TokenInner>,
    /// No background refresh before this (nanos since the epoch): set when one
    /// starts, so a failed refresh is retried only later; cleared on success.
    refresh_not_before: AtomicU64,
    /// When the entry was last asked for a token (nanos since the epoch).
    last_used: AtomicU64,
    /// Expiry (nanos since the epoch) of the last invalidated token: a token
    /// from the store is taken only if it expires later, so a token the API
    /// rejected is never taken back.
    rejected_until: AtomicU64,
    /// The login in flight, if any.
    inflight: Mutex<Option<watch::Receiver<LoginResult>>>,
}

impl Entry {
    pub(crate) fn new(ctx: Arc<Context>, on_behalf_of: Option<OnBehalfOf>, now: Instant) -> Self {
        let settings = &ctx.settings;
        let mut label = format!(
            "client_id={} identity={}",
            settings.credentials.client_id(),
            settings.token_url.host_str().unwrap_or("?")
        );
        if let Some(scope) = &settings.scope {
            label.push_str(&format!(" scope={scope}"));
        }
        if let Some(taxpayer) = &on_behalf_of {
            label.push_str(&format!(" on_behalf_of={taxpayer}"));
        }
        let last_used = AtomicU64::new(ctx.clock.nanos(now));
        let store_key = entry_key(
            settings.token_url.as_str(),
            settings.credentials.client_id(),
            settings.scope.as_deref(),
            on_behalf_of.as_ref().map(OnBehalfOf::as_str),
        );
        Entry {
            ctx,
            on_behalf_of,
            label,
            store_key,
            rejected_until: AtomicU64::new(0),
            current: ArcSwapOption::empty(),
            refresh_not_before: AtomicU64::new(0),
            last_used,
            inflight: Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or the result of the login in flight
    /// (starting one if none is).
    pub(crate) async fn token(self: &Arc<Self>, now: Now) -> Result<AccessToken, Error> {
        match self.cached(now) {
            Some(token) => Ok(token),
            None => {
                self.touch(now);
                self.wait_for_login().await
            }
        }
    }

    /// The hot path: the cached token, unless it has expired at `now`.
    #[inline]
    pub(crate) fn cached(&self, now: Now) -> Option<AccessToken> {
        let guard = self.current.load();
        let token = guard.as_ref()?;
        if now.instant >= token.expires {
            return None;
        }
        self.touch(now);
        Some(AccessToken(Arc::clone(token)))
    }

    #[inline]
    fn touch(&self, now: Now) {
        let granularity = TOUCH_GRANULARITY.as_nanos() as u64;
        if now.nanos >= self.last_used.load(Ordering::Relaxed) + granularity {
            self.last_used.store(now.nanos, Ordering::Relaxed);
        }
    }

    /// Nanoseconds since the epoch of the last use, for least-recently-used eviction.
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    pub(crate) fn has_token(&self) -> bool {
        self.current.load().is_some()
    }

    /// Drops `token` if it is still the current one. Returns whether it was.
    pub(crate) fn invalidate(&self, token: &AccessToken) -> bool {
        let current = self.current.load();
        match current.as_ref() {
            Some(c) if c.id == token.0.id => {
                let previous = self.current.compare_and_swap(&current, None);
                let removed = previous.as_ref().is_some_and(|p| p.id == token.0.id);
                if removed {
                    self.rejected_until
                        .fetch_max(self.ctx.clock.nanos(token.0.expires), Ordering::Relaxed);
                    tracing::info!(entry = %self.label, "token invalidated");
                }
                removed
            }
            _ => {
                tracing::debug!(entry = %self.label, "invalidation of an older token ignored");
                false
            }
        }
    }

    /// Starts a background refresh if the token is in its refresh window,
    /// the entry is not idle, and no login or retry pause is running.
    pub(crate) fn refresh_if_due(self: &Arc<Self>, now: Instant) {
        let Some((refresh_at, expires)) = self
            .current
            .load()
            .as_ref()
            .map(|t| (t.refresh_at, t.expires))
        else {
            return;
        };
        let ctx = &self.ctx;
        let not_before = ctx
            .clock
            .at(self.refresh_not_before.load(Ordering::Relaxed));
        let last_used = ctx.clock.at(self.last_used.load(Ordering::Relaxed));
        if !should_refresh(
            now,
            refresh_at,
            expires,
            not_before,
            last_used,
            ctx.settings.idle_after,
        ) {
            return;
        }
        let mut inflight = self.inflight.lock();
        if is_running(inflight.as_ref()) {
            return;
        }
        let retry = now + ctx.settings.refresh_retry_after;
        self.refresh_not_before
            .store(ctx.clock.nanos(retry), Ordering::Relaxed);
        let deadline = expires
            .checked_sub(REFRESH_MARGIN)
            .map_or(now, |d| d.max(now));
        if let Ok(rx) = self.spawn_login("refresh ahead of expiry", deadline) {
            Counters::bump(&ctx.counters.refreshes_ahead);
            *inflight = Some(rx);
        }
    }

    /// Waits for a login's token. A login that started long ago can deliver a
    /// token that has expired by now: it is never served; one fresh login is
    /// tried instead, and if that token too arrives expired, it is an error.
    async fn wait_for_login(self: &Arc<Self>) -> Result<AccessToken, Error> {
        let token = self.join_login().await?;
        if Instant::now() < token.0.expires {
            return Ok(token);
        }
        let token = self.join_login().await?;
        if Instant::now() < token.0.expires {
            return Ok(token);
        }
        Err(Error::invalid_response(
            "the token had expired by the time the login answered",
        ))
    }

    async fn join_login(self: &Arc<Self>) -> Result<AccessToken, Error> {
        let mut rx = {
            let mut inflight = self.inflight.lock();
            // A login may have finished since the lock-free check.
            if let Some(token) = self.cached(self.ctx.clock.now()) {
                return Ok(token);
            }
            match inflight.as_ref() {
                Some(rx) if is_running(Some(rx)) => rx.clone(),
                _ => {
                    let deadline = Instant::now() + self.ctx.settings.max_login_wait;
                    let rx = self.spawn_login("no valid token", deadline)?;
                    *inflight = Some(rx.clone());
                    rx
                }
            }
        };
        let result = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::LoginAborted)?;
        result.clone().unwrap_or(Err(Error::LoginAborted))
    }

    /// Starts the login task. Called with `inflight` locked, so at most one
    /// runs. The login waits for a budget slot until `deadline`.
    fn spawn_login(
        self: &Arc<Self>,
        reason: &'static str,
        deadline: Instant,
    ) -> Result<watch::Receiver<LoginResult>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfig("the token cache must be used inside a tokio runtime".into())
        })?;
        let (tx, rx) = watch::channel(None);
        let entry = Arc::clone(self);
        runtime.spawn(async move {
            let result = entry.obtain(reason, deadline).await;
            if let Ok(token) = &result {
                entry.current.store(Some(Arc::clone(&token.0)));
                // The retry pause is for failed refreshes only: the new
                // token's own refresh point decides the next one.
                entry.refresh_not_before.store(0, Ordering::Relaxed);
            }
            // The token is stored before the login stops being "in flight", so
            // a caller that finds no login in flight finds the token.
            *entry.inflight.lock() = None;
            let _ = tx.send(Some(result));
        });
        Ok(rx)
    }

    /// Gets a new token for the entry: one another process already obtained,
    /// or a login of this process under the entry's lock in the token store,
    /// so that one process in a fleet logs in per key.
    async fn obtain(&self, reason: &'static str, deadline: Instant) -> Result<AccessToken, Error> {
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        // The token to improve on: the one held (a refresh), or one rejected.
        let rejected = self.rejected_until.load(Ordering::Relaxed);
        let have = match self.current.load().as_ref() {
            Some(current) => Some(current.expires),
            None => (rejected > 0).then(|| ctx.clock.at(rejected)),
        };
        if let Some(token) = self.shared_token(have).await {
            return Ok(token);
        }
        let owner = lock_owner();
        // The lock covers the wait for a budget slot and the login itself;
        // others give up waiting for our token when it could no longer come.
        let login_time = ctx.settings.login_timeout.unwrap_or(LOCK_LOGIN_ALLOWANCE);
        let hold_for = deadline.saturating_duration_since(Instant::now())
            + login_time
            + Duration::from_secs(5);
        let give_up = deadline + login_time;
        let started = Instant::now();
        loop {
            match self
                .store("lock", store.try_lock(&self.store_key, &owner, hold_for))
                .await
            {
                // Ours, or no store to ask: log in ourselves.
                Some(true) | None => break,
                Some(false) => {
                    if Instant::now() >= give_up {
                        return Err(Error::timeout(started.elapsed()));
                    }
                    tokio::time::sleep(FLEET_POLL).await;
                    if let Some(token) = self.shared_token(have).await {
                        return Ok(token);
                    }
                }
            }
        }
        // Another process may have finished just before we took the lock.
        let result = match self.shared_token(have).await {
            Some(token) => Ok(token),
            None => {
                let result = self.login_within_budget(reason, deadline).await;
                if let Ok(token) = &result {
                    let stored = token.to_stored(Instant::now());
                    self.store("save", store.save(&self.store_key, &stored))
                        .await;
                }
                result
            }
        };
        self.store("unlock", store.unlock(&self.store_key, &owner))
            .await;
        result
    }

    /// A token in the store that is valid for a while and, for a refresh,
    /// newer than the one held (`have` is its expiry).
    async fn shared_token(&self, have: Option<Instant>) -> Option<AccessToken> {
        let stored = self
            .store("load", self.ctx.settings.token_store.load(&self.store_key))
            .await??;
        let token = match AccessToken::from_stored(
            stored,
            &self.ctx.clock,
            Instant::now(),
            self.on_behalf_of.clone(),
            self.ctx.settings.refresh_before,
        ) {
            Ok(token) => token,
            Err(reason) => {
                tracing::warn!(entry = %self.label, %reason, "token in the token store refused; logging in instead");
                return None;
            }
        };
        let valid_until = token.0.expires;
        let newer = have.is_none_or(|have| valid_until > have + Duration::from_secs(1));
        if newer && valid_until > Instant::now() + REFRESH_MARGIN {
            tracing::info!(entry = %self.label, expires_at = %token.expires_at(), "token taken from the token store");
            Some(token)
        } else {
            None
        }
    }

    /// Runs a token-store call; on failure or slowness, logs a warning and
    /// returns `None`, so the caller goes on as a single process would.
    async fn store<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        match tokio::time::timeout(STORE_CALL_LIMIT, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::warn!(entry = %self.label, what, %error, "token store unavailable; going on without it");
                None
            }
            Err(_) => {
                tracing::warn!(entry = %self.label, what, "token store too slow; going on without it");
                None
            }
        }
    }

    /// Takes a slot from this process's budget and then from the fleet's (the
    /// token store's), and logs in.
    async fn login_within_budget(
        &self,
        reason: &'static str,
        deadline: Instant,
    ) -> Result<AccessToken, Error> {
        let ctx = &self.ctx;
        if let Err(error) = ctx.budget.acquire(deadline).await {
            return Err(self.refused(reason, error));
        }
        let interval = ctx
            .settings
            .login_rate_limit
            .map_or(Duration::ZERO, |limit| limit.interval());
        let max_wait = deadline.saturating_duration_since(Instant::now());
        let store = &ctx.settings.token_store;
        match self
            .store(
                "reserve",
                store.reserve_login(&ctx.budget_key, interval, max_wait),
            )
            .await
        {
            // No timer for a zero wait: a pending timer lets a paused clock jump.
            Some(LoginSlot::After(wait)) if !wait.is_zero() => tokio::time::sleep(wait).await,
            Some(LoginSlot::After(_)) => {}
            Some(LoginSlot::Refused(next)) => {
                let error = Error::RateLimited {
                    retry_after: Some(next),
                };
                return Err(self.refused(reason, error));
            }
            None => {}
        }
        Counters::bump(&ctx.counters.logins);
        let started = Instant::now();
        tracing::debug!(entry = %self.label, reason, "login started");
        let result = login(&ctx.settings, self.on_behalf_of.as_ref())
            .await
            .map(|issued| {
                let sent_at_utc = ctx.clock.utc(issued.sent_at);
                AccessToken::new(
                    issued,
                    sent_at_utc,
                    self.on_behalf_of.clone(),
                    ctx.settings.refresh_before,
                )
            });
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(token) => tracing::info!(
                entry = %self.label,
                reason,
                elapsed_ms,
                expires_at = %token.expires_at(),
                "login succeeded"
            ),
            Err(error) => {
                if let Error::RateLimited { retry_after } = error {
                    Counters::bump(&ctx.counters.logins_rate_limited);
                    let retry = retry_after.unwrap_or(DEFAULT_RATE_LIMIT_BACKOFF);
                    ctx.budget.block_for(retry);
                    self.store("block", store.block_logins(&ctx.budget_key, retry))
                        .await;
                }
                tracing::warn!(entry = %self.label, reason, elapsed_ms, %error, "login failed");
            }
        }
        result
    }

    fn refused(&self, reason: &'static str, error: Error) -> Error {
        Counters::bump(&self.ctx.counters.logins_refused_by_budget);
        tracing::warn!(entry = %self.label, reason, %error, "no login slot in time");
        error
    }
}

/// A login is running while its task still holds the sender.
fn is_running(rx: Option<&watch::Receiver<LoginResult>>) -> bool {
    rx.is_some_and(|rx| rx.has_changed().is_ok())
}
