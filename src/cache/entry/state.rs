//! [`Entry`]'s state, and what the rest of the cache may ask of it: the
//! token for one (identity URL, client ID, scope, taxpayer), served while
//! valid, invalidated when the API rejects it, refreshed ahead of expiry.
//! Its fields are private to the `entry` folder; the folder's other files
//! add the login (see the folder's doc for which file holds what).
//!
//! The hot path ([`Entry::cached`]) is lock-free: one `ArcSwap` load, a
//! comparison with the clock reading the caller already took, and a
//! reference-count increment (plus, at most once a second, a store of the
//! last-use time). Locks are only taken to start or join a login, and never
//! held across an `.await`: the login runs in its own task and hands its
//! result to every waiter through a `watch` channel.
//!
//! Refreshes ahead of expiry are started by the cache's sweep
//! ([`Entry::refresh_if_due`]), never by a caller waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::abandoned::AbandonedLocks;
use super::flight::Flight;
use super::reason::{NextReason, Reason};
use crate::budget::Urgency;
use crate::cache::context::Context;
use crate::clock::{after, Now};
use crate::error::Error;
use crate::failure::FailureMemory;
use crate::freshness::should_refresh;
use crate::log_limit::{millis, LogLimit};
use crate::redact;
use crate::rejection::Rejections;
use crate::store::entry_key;
use crate::taxpayer::OnBehalfOf;
use crate::token::{AccessToken, Owner, TokenInner};

/// A refresh must get its login slot this long before its token's lifetime
/// ends (`sent_at + expires_in`).
pub(super) const REFRESH_MARGIN: Duration = Duration::from_secs(5);
/// The last-use time is recorded at this granularity (one store a second at most).
const TOUCH_GRANULARITY: Duration = Duration::from_secs(1);

pub(crate) struct Entry {
    pub(super) ctx: Arc<Context>,
    pub(super) on_behalf_of: Option<OnBehalfOf>,
    /// Names the entry in logs: client ID, scope and taxpayer, never a secret.
    pub(super) label: String,
    /// The entry's key in the token store.
    pub(super) store_key: String,
    pub(super) current: ArcSwapOption<TokenInner>,
    /// No background refresh before this (nanos since the epoch): set when one
    /// starts, so a failed refresh is retried only later; cleared on success.
    pub(super) refresh_not_before: AtomicU64,
    /// When the entry was last asked for a token (nanos since the epoch).
    last_used: AtomicU64,
    /// Expiry (nanos since the epoch) of the last invalidated token: a token
    /// from the store is taken only if it expires later, so a token the API
    /// rejected is never taken back.
    pub(super) rejected_until: AtomicU64,
    /// The login in flight, if any.
    pub(super) inflight: Mutex<Option<Flight>>,
    /// The last failed login, answered from memory for a while.
    pub(super) failures: FailureMemory,
    /// The generation of the client secret the entry's last login was sent
    /// with: a failure of a secret rotated since is not remembered.
    pub(super) login_secret: AtomicU64,
    /// What the API's 401s taught about its endpoints.
    pub(super) rejections: Arc<Rejections>,
    /// Owners of store locks that cut-off logins left behind (see `lock`).
    pub(super) abandoned_locks: AbandonedLocks,
    /// Why the next login is made, when an event left a reason.
    pub(super) next_reason: NextReason,
    /// Since when another's lock on the entry has been seen held, across
    /// logins (see `wait`): one held for a whole lock TTL is taken over.
    pub(super) lock_seen: Mutex<Option<Instant>>,
    /// The DEBUG line of calls answered from failure memory, at most one a second.
    memory_log: LogLimit,
}

impl Entry {
    pub(crate) fn new(ctx: Arc<Context>, on_behalf_of: Option<OnBehalfOf>, now: Instant) -> Self {
        let settings = &ctx.settings;
        // Escaped, though build() refuses control characters in them: a
        // line break in a label would forge a log line.
        let mut label = format!(
            "client_id={} identity={}",
            redact::escaped(settings.credentials.client_id()),
            settings.token_url.host_str().unwrap_or("?")
        );
        if let Some(scope) = &settings.scope {
            label.push_str(&format!(" scope={}", redact::escaped(scope)));
        }
        if let Some(taxpayer) = &on_behalf_of {
            label.push_str(&format!(
                " on_behalf_of={}",
                redact::escaped(taxpayer.as_str())
            ));
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
            failures: FailureMemory::default(),
            login_secret: AtomicU64::new(0),
            rejections: Arc::default(),
            abandoned_locks: AbandonedLocks::default(),
            next_reason: NextReason::default(),
            lock_seen: Mutex::new(None),
            memory_log: LogLimit::default(),
        }
    }

    /// A valid token: the cached one, or the result of the login in flight
    /// (starting one if none is), waiting at most `wait` for it to be sent.
    pub(crate) async fn token(
        self: &Arc<Self>,
        now: Now,
        wait: Duration,
    ) -> Result<AccessToken, Error> {
        if let Some(token) = self.cached(now) {
            return Ok(token);
        }
        self.touch(now);
        // A login that failed lately is answered from memory, sparing the budget.
        if let Some(error) = self.failures.recall(now.instant) {
            self.ctx.counters.answered_from_memory();
            if let Some(left_out) = self.memory_log.allow() {
                tracing::debug!(
                    entry = %self.label,
                    error = error.kind(),
                    retry_after_ms = error.retry_after().map_or(0, millis),
                    left_out,
                    "login failure answered from memory: no login before its back-off ends"
                );
            }
            return Err(error);
        }
        self.wait_for_login(wait).await
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
        if now.nanos
            >= self
                .last_used
                .load(Ordering::Relaxed)
                .saturating_add(granularity)
        {
            self.last_used.store(now.nanos, Ordering::Relaxed);
        }
    }

    /// What a token issued for this entry takes from it.
    pub(super) fn owner(&self) -> Owner<'_> {
        Owner {
            on_behalf_of: self.on_behalf_of.as_ref(),
            refresh_before: self.ctx.settings.refresh_before,
            rejections: &self.rejections,
            taxpayer: self.taxpayer(),
        }
    }

    /// The TIN a token of this entry must name in its claims, when they
    /// name one: the taxpayer acted for, or for the plain login the one the
    /// builder was told; `None` when the check is off.
    fn taxpayer(&self) -> Option<&str> {
        let settings = &self.ctx.settings;
        if !settings.check_token_taxpayer {
            return None;
        }
        match &self.on_behalf_of {
            Some(taxpayer) => Some(taxpayer.tin()),
            None => settings.taxpayer_tin.as_deref(),
        }
    }

    /// Nanoseconds since the epoch of the last use, for least-recently-used eviction.
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// How long the token has left to be served, if it was served at or
    /// after `since` (nanoseconds since the cache's epoch; the last-use
    /// clock's grain is [`TOUCH_GRANULARITY`], so a use up to that long
    /// before counts too).
    #[cfg(feature = "metrics")]
    pub(crate) fn left_if_served_since(&self, since: u64, now: Instant) -> Option<Duration> {
        let granularity = TOUCH_GRANULARITY.as_nanos() as u64;
        if self.last_used().saturating_add(granularity) < since {
            return None;
        }
        let expires = self.current.load().as_ref()?.expires;
        Some(expires.saturating_duration_since(now))
    }

    /// The taxpayer the entry logs in for; `None` for the plain login.
    pub(crate) fn on_behalf_of(&self) -> Option<&OnBehalfOf> {
        self.on_behalf_of.as_ref()
    }

    /// Forgets the remembered login failure: the next caller logs in.
    pub(crate) fn forget_failures(&self) {
        self.failures.forget();
    }

    /// Forgets a remembered failure a new login could not cure (a new
    /// client secret may): the next login is made for the rotation.
    pub(crate) fn forget_lasting_failures(&self) {
        if self.failures.forget_lasting() {
            self.next_reason.set(Reason::Rotated);
        }
    }

    pub(crate) fn has_token(&self) -> bool {
        self.current.load().is_some()
    }

    /// Drops `token` if it is still the current one, for `reason` (which
    /// the next login names). Returns whether it was.
    pub(crate) fn invalidate(&self, token: &AccessToken, reason: Reason) -> bool {
        let current = self.current.load();
        match current.as_ref() {
            Some(c) if c.id == token.0.id => {
                let previous = self.current.compare_and_swap(&current, None);
                let removed = previous.as_ref().is_some_and(|p| p.id == token.0.id);
                if removed {
                    self.next_reason.set(reason);
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
        let Some((refresh_at, expires, valid_until)) = self
            .current
            .load()
            .as_ref()
            .map(|t| (t.refresh_at, t.expires, t.valid_until))
        else {
            return;
        };
        let ctx = &self.ctx;
        let paused_until = ctx
            .clock
            .at(self.refresh_not_before.load(Ordering::Relaxed));
        // Nor while a failed login is remembered.
        let not_before = self
            .failures
            .until()
            .map_or(paused_until, |until| until.max(paused_until));
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
        if inflight.as_ref().is_some_and(Flight::is_running) {
            return;
        }
        let retry = after(now, ctx.settings.refresh_retry_after);
        self.refresh_not_before
            .store(ctx.clock.nanos(retry), Ordering::Relaxed);
        // The new token must arrive before the old one's lifetime ends (the
        // expiry margin is inside this one).
        let deadline = valid_until
            .checked_sub(REFRESH_MARGIN)
            .map_or(now, |d| d.min(expires).max(now));
        let reason = self.next_reason.take(Reason::RefreshAhead);
        if let Ok(flight) = self.spawn_login(reason, Urgency::refresh(deadline)) {
            ctx.counters.refresh_ahead();
            *inflight = Some(flight);
        }
    }
}
