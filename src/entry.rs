//! One cache entry: the token for one (identity URL, client ID, scope,
//! taxpayer), with at most one login in flight and refresh ahead of expiry.
//!
//! The hot path ([`Entry::cached`]) is lock-free: one `ArcSwap` load, one clock
//! read, and a reference-count increment. Locks are only taken to start or join
//! a login, and never held across an `.await`: the login runs in its own task
//! and hands its result to every waiter through a `watch` channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Settings;
use crate::error::Error;
use crate::freshness::{freshness, Freshness};
use crate::login::login;
use crate::taxpayer::OnBehalfOf;
use crate::token::{AccessToken, TokenInner};

type LoginResult = Option<Result<AccessToken, Error>>;

pub(crate) struct Entry {
    settings: Arc<Settings>,
    on_behalf_of: Option<OnBehalfOf>,
    /// Names the entry in logs: client ID, scope and taxpayer, never a secret.
    label: String,
    current: ArcSwapOption<TokenInner>,
    /// Nanoseconds after `epoch` before which no background refresh starts:
    /// set when one starts, so a failed refresh is retried only later, and
    /// cleared when a login succeeds.
    refresh_not_before: AtomicU64,
    epoch: Instant,
    /// The login in flight, if any.
    inflight: Mutex<Option<watch::Receiver<LoginResult>>>,
}

impl Entry {
    pub(crate) fn new(settings: Arc<Settings>, on_behalf_of: Option<OnBehalfOf>) -> Self {
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
        Entry {
            settings,
            on_behalf_of,
            label,
            current: ArcSwapOption::empty(),
            refresh_not_before: AtomicU64::new(0),
            epoch: Instant::now(),
            inflight: Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or the result of the login in flight
    /// (starting one if none is).
    pub(crate) async fn token(self: &Arc<Self>) -> Result<AccessToken, Error> {
        match self.cached() {
            Some(token) => Ok(token),
            None => self.wait_for_login().await,
        }
    }

    /// The hot path: the cached token if it has not expired, starting a
    /// background refresh when it is due.
    #[inline]
    pub(crate) fn cached(self: &Arc<Self>) -> Option<AccessToken> {
        let guard = self.current.load();
        let token = guard.as_ref()?;
        let now = Instant::now();
        match freshness(now, token.refresh_at, token.expires) {
            Freshness::Fresh => Some(AccessToken(Arc::clone(token))),
            Freshness::RefreshDue => {
                let token = AccessToken(Arc::clone(token));
                drop(guard);
                self.refresh_in_background(now);
                Some(token)
            }
            Freshness::Expired => None,
        }
    }

    /// Drops `token` if it is still the current one. Returns whether it was.
    pub(crate) fn invalidate(&self, token: &AccessToken) -> bool {
        let current = self.current.load();
        match current.as_ref() {
            Some(c) if c.id == token.0.id => {
                let previous = self.current.compare_and_swap(&current, None);
                let removed = previous.as_ref().is_some_and(|p| p.id == token.0.id);
                if removed {
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

    fn refresh_in_background(self: &Arc<Self>, now: Instant) {
        let now_nanos = self.nanos_since_epoch(now);
        if now_nanos < self.refresh_not_before.load(Ordering::Relaxed) {
            return;
        }
        let mut inflight = self.inflight.lock();
        if is_running(inflight.as_ref()) {
            return;
        }
        let retry = u64::try_from(self.settings.refresh_retry_after.as_nanos()).unwrap_or(u64::MAX);
        self.refresh_not_before
            .store(now_nanos.saturating_add(retry), Ordering::Relaxed);
        if let Ok(rx) = self.spawn_login("refresh ahead of expiry") {
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
        Err(Error::InvalidResponse(
            "the token had expired by the time the login answered".into(),
        ))
    }

    async fn join_login(self: &Arc<Self>) -> Result<AccessToken, Error> {
        let mut rx = {
            let mut inflight = self.inflight.lock();
            // A login may have finished since the lock-free check.
            if let Some(token) = self.unexpired() {
                return Ok(token);
            }
            match inflight.as_ref() {
                Some(rx) if is_running(Some(rx)) => rx.clone(),
                _ => {
                    let rx = self.spawn_login("no valid token")?;
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

    fn unexpired(&self) -> Option<AccessToken> {
        let guard = self.current.load();
        let token = guard.as_ref()?;
        (Instant::now() < token.expires).then(|| AccessToken(Arc::clone(token)))
    }

    /// Starts the login task. Called with `inflight` locked, so at most one runs.
    fn spawn_login(
        self: &Arc<Self>,
        reason: &'static str,
    ) -> Result<watch::Receiver<LoginResult>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfig("the token cache must be used inside a tokio runtime".into())
        })?;
        let (tx, rx) = watch::channel(None);
        let entry = Arc::clone(self);
        runtime.spawn(async move {
            let started = Instant::now();
            tracing::debug!(entry = %entry.label, reason, "login started");
            let result = login(&entry.settings, entry.on_behalf_of.as_ref())
                .await
                .map(|issued| {
                    AccessToken::new(
                        issued,
                        entry.on_behalf_of.clone(),
                        entry.settings.refresh_before,
                    )
                });
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match &result {
                Ok(token) => {
                    entry.current.store(Some(Arc::clone(&token.0)));
                    // The retry pause is for failed refreshes only: the new
                    // token's own refresh point decides the next one.
                    entry.refresh_not_before.store(0, Ordering::Relaxed);
                    tracing::info!(
                        entry = %entry.label,
                        reason,
                        elapsed_ms,
                        expires_at = %token.expires_at(),
                        "login succeeded"
                    );
                }
                Err(error) => tracing::warn!(
                    entry = %entry.label,
                    reason,
                    elapsed_ms,
                    %error,
                    "login failed"
                ),
            }
            // The token is stored before the login stops being "in flight", so
            // a caller that finds no login in flight finds the token.
            *entry.inflight.lock() = None;
            let _ = tx.send(Some(result));
        });
        Ok(rx)
    }

    fn nanos_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A login is running while its task still holds the sender.
fn is_running(rx: Option<&watch::Receiver<LoginResult>>) -> bool {
    rx.is_some_and(|rx| rx.has_changed().is_ok())
}
