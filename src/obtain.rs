//! How an entry obtains a new token: one another process already shared
//! through the token store, or a login of this process within the client
//! ID's login budget (this process's and the fleet's), under the entry's
//! lock in the store so that one process in a fleet logs in per key.
//!
//! The lock covers the login call only: the budget slot is taken first, the
//! lock for about the login timeout after, and it is released on every path
//! (a login cut off leaves it to the entry's next login). A process that
//! finds another one logging in waits for its token with back-off, one
//! store call a poll, for at most the lock's TTL (that login is being sent;
//! a dead holder's lock expires); a background refresh does not wait at all
//! (its token is still valid): the next sweep takes the new one from the
//! store.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::{Grant, Urgency, DEFAULT_RATE_LIMIT_BACKOFF};
use crate::clock::after;
use crate::entry::{Entry, REFRESH_MARGIN};
use crate::error::Error;
use crate::flight::{Phase, Progress};
use crate::login::login;
use crate::store::{lock_owner, Loaded, LoginSlot, SlotRequest, StoreError, StoreErrorKind};
use crate::token::AccessToken;

/// How long a login may take, for the lock, when no login timeout is set.
const LOCK_LOGIN_ALLOWANCE: Duration = Duration::from_secs(60);
/// The lock outlives the login call by this much.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// While another process logs in for the entry, look for its token after
/// this long, doubling up to [`FLEET_POLL_MAX`].
const FLEET_POLL_FIRST: Duration = Duration::from_millis(250);
const FLEET_POLL_MAX: Duration = Duration::from_secs(2);
/// Looking again when a held lock expires, a little after.
const LOCK_EXPIRY_SLACK: Duration = Duration::from_millis(50);
/// Budget for one token-store call (stores have their own, shorter, limits).
const STORE_CALL_LIMIT: Duration = Duration::from_secs(2);

impl Entry {
    /// Gets a new token for the entry (see the module docs). Runs inside
    /// the login's span, which names the entry and the reason.
    pub(crate) async fn obtain(
        &self,
        urgency: &Urgency,
        progress: &Progress,
    ) -> Result<AccessToken, Error> {
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        self.release_abandoned_locks().await;
        // The token to improve on: the one held (a refresh), or one rejected.
        let rejected = self.rejected_until.load(Ordering::Relaxed);
        let have = match self.current.load().as_ref() {
            Some(current) => Some(current.expires),
            None => (rejected > 0).then(|| ctx.clock.at(rejected)),
        };
        let login_time = ctx.settings.login_timeout.unwrap_or(LOCK_LOGIN_ALLOWANCE);
        let ttl = login_time.saturating_add(LOCK_MARGIN);
        let mut awaiting: Option<(Instant, Duration)> = None;
        loop {
            // Someone may have shared a token, or be logging in for it.
            let loaded = self.store("load", store.load(&self.store_key)).await;
            let locked = loaded.as_ref().and_then(|l| l.locked);
            if let Some(token) = loaded.and_then(|l| self.accept_shared(l, have)) {
                return Ok(token);
            }
            if let Some(lock_left) = locked {
                if urgency.get().refresh {
                    // Our token is still valid: no polling; the next sweep
                    // takes the new one from the store.
                    tracing::debug!("another process is refreshing this entry");
                    return Err(Error::LoginAborted);
                }
                // The lock is held only while a login is sent: like our own
                // login once sent, that login's time bounds the wait (the
                // lock's TTL, which a dead holder cannot outlast).
                progress.set(Phase::AwaitingFleet);
                let now = Instant::now();
                let (since, poll) = awaiting.get_or_insert((now, FLEET_POLL_FIRST));
                let give_up = after(*since, ttl);
                if now >= give_up {
                    return Err(Error::timeout(since.elapsed()));
                }
                // Look again after the back-off, or as soon as the lock
                // expires (its holder may have died), whichever is first.
                let wake = after(now, (*poll).min(lock_left + LOCK_EXPIRY_SLACK));
                tokio::time::sleep_until(wake.min(give_up)).await;
                *poll = (*poll * 2).min(FLEET_POLL_MAX);
                continue;
            }
            awaiting = None;
            let slot = self.login_slot(urgency, progress).await?;
            let mut lock = HeldLock::new(self);
            match self
                .store("lock", store.try_lock(&self.store_key, &lock.owner, ttl))
                .await
            {
                // Ours, or no store to ask: log in ourselves.
                Some(true) | None => {}
                Some(false) => {
                    // Another process took it since we looked: wait for its token.
                    lock.released = true;
                    slot.give_back(self).await;
                    continue;
                }
            }
            // Another process may have finished just before we took the lock.
            let loaded = self.store("load", store.load(&self.store_key)).await;
            if let Some(token) = loaded.and_then(|l| self.accept_shared(l, have)) {
                lock.release().await;
                slot.give_back(self).await;
                return Ok(token);
            }
            slot.keep();
            let result = self.login_now(progress).await;
            if let Ok(token) = &result {
                let stored = token.to_stored(Instant::now());
                self.store("save", store.save(&self.store_key, &stored))
                    .await;
            }
            lock.release().await;
            return result;
        }
    }

    /// Releases the store locks that logins of this entry held when they
    /// were dropped (their runtime shut down) or panicked: a `drop` cannot
    /// wait for the store, so the next login does it, before it asks for
    /// the lock itself. Owner-checked: never another process's lock.
    async fn release_abandoned_locks(&self) {
        let owners = std::mem::take(&mut *self.abandoned_locks.lock());
        for owner in owners {
            let store = &self.ctx.settings.token_store;
            self.store("unlock", store.unlock(&self.store_key, &owner))
                .await;
            tracing::info!("released the lock of a login that was cut off");
        }
    }

    /// The token in `loaded`, if it passes the checks, is valid for a while
    /// and, for a refresh, is newer than the one held (`have` is its expiry).
    fn accept_shared(&self, loaded: Loaded, have: Option<Instant>) -> Option<AccessToken> {
        let stored = loaded.token?;
        let token = match AccessToken::from_stored(
            stored,
            &self.ctx.clock,
            Instant::now(),
            &self.owner(),
        ) {
            Ok(token) => token,
            Err(reason) => {
                tracing::warn!(%reason, "token in the token store refused; logging in instead");
                return None;
            }
        };
        let valid_until = token.0.expires;
        let newer = have.is_none_or(|have| valid_until > have + Duration::from_secs(1));
        if newer && valid_until > Instant::now() + REFRESH_MARGIN {
            tracing::info!(expires_at = %token.expires_at(), "token taken from the token store");
            Some(token)
        } else {
            None
        }
    }

    /// Runs a token-store call; on failure or slowness, counts it by kind,
    /// logs a warning naming the kind and returns `None`, so the caller goes
    /// on as a single process would.
    pub(crate) async fn store<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        let error = match tokio::time::timeout(STORE_CALL_LIMIT, call).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(error)) => error,
            Err(_) => StoreError::new(
                StoreErrorKind::Timeout,
                "the token store did not answer in time",
            ),
        };
        self.ctx.counters.store_error(error.kind());
        tracing::warn!(what, kind = %error.kind(), %error, "token store unavailable; going on without it");
        None
    }

    /// Takes a slot from this process's budget and then from the fleet's
    /// (the token store's). While the store is out of reach, this process
    /// keeps to its share of the budget (see `fleet_size`).
    async fn login_slot(&self, urgency: &Urgency, progress: &Progress) -> Result<Slot<'_>, Error> {
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        progress.set(Phase::Queued);
        let mut share = (!store.is_available()).then_some(ctx.fallback_share());
        loop {
            let grant = match ctx.budget.acquire(urgency, share).await {
                Ok(grant) => grant,
                Err(error) => return Err(self.refused(error)),
            };
            let Some(limit) = ctx.budget.limit() else {
                return Ok(Slot { grant, fleet: None });
            };
            if share.is_some() {
                // The store is out of reach: our share is all there is.
                return Ok(Slot { grant, fleet: None });
            }
            let request = SlotRequest {
                count: limit.count,
                window: limit.window(),
                pace: grant.paced().then(|| limit.interval()),
                id: lock_owner(),
            };
            match self
                .store("reserve", store.reserve_login(&ctx.budget_key, &request))
                .await
            {
                Some(LoginSlot::Granted) => {
                    return Ok(Slot {
                        grant,
                        fleet: Some(request.id),
                    })
                }
                None => {
                    // The store failed now: ask again within our share.
                    drop(grant);
                    share = Some(ctx.fallback_share());
                }
                Some(LoginSlot::Wait(wait)) => {
                    // Not ours after all: give the local slot back, and wait
                    // for the fleet's window if the deadline allows.
                    drop(grant);
                    let at = after(Instant::now(), wait);
                    if at > urgency.get().deadline {
                        let error = Error::RateLimited {
                            retry_after: Some(wait),
                        };
                        return Err(self.refused(error));
                    }
                    tokio::time::sleep_until(at).await;
                }
            }
        }
    }

    /// Sends the login.
    async fn login_now(&self, progress: &Progress) -> Result<AccessToken, Error> {
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        ctx.counters.login_sent();
        progress.set(Phase::Sending);
        let started = Instant::now();
        tracing::debug!("login started");
        let result = login(&ctx.settings, self.on_behalf_of.as_ref())
            .await
            .map(|issued| {
                let sent_at_utc = ctx.clock.utc(issued.sent_at);
                AccessToken::new(issued, sent_at_utc, &self.owner())
            });
        let took = started.elapsed();
        ctx.counters.login_ended(took, result.as_ref().err());
        let elapsed_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(token) => tracing::info!(
                elapsed_ms,
                expires_at = %token.expires_at(),
                "login succeeded"
            ),
            Err(error) => {
                if let Error::RateLimited { retry_after } = error {
                    let retry = retry_after.unwrap_or(DEFAULT_RATE_LIMIT_BACKOFF);
                    ctx.budget.block_for(retry);
                    self.store("block", store.block_logins(&ctx.budget_key, retry))
                        .await;
                }
                tracing::warn!(elapsed_ms, %error, "login failed");
            }
        }
        result
    }

    fn refused(&self, error: Error) -> Error {
        self.ctx.counters.refused_by_budget();
        tracing::warn!(%error, "no login slot in time");
        error
    }
}

/// A login slot: this process's, and the fleet's reservation when there is
/// one. Given back if the login is never sent.
struct Slot<'a> {
    grant: Grant<'a>,
    fleet: Option<String>,
}

impl Slot<'_> {
    fn keep(self) {
        self.grant.keep();
    }

    /// The login will not be sent: both slots are given back.
    async fn give_back(self, entry: &Entry) {
        drop(self.grant);
        if let Some(id) = self.fleet {
            let (ctx, store) = (&entry.ctx, &entry.ctx.settings.token_store);
            entry
                .store("release", store.release_login(&ctx.budget_key, &id))
                .await;
        }
    }
}

/// The entry's lock in the token store, as one login of this process holds
/// it (or tries to). Released on every path: by [`release`](Self::release)
/// when the login ends, and, if the login is cut off first (its task
/// dropped, or a panic), by the entry's next login.
struct HeldLock<'a> {
    entry: &'a Entry,
    owner: String,
    released: bool,
}

impl<'a> HeldLock<'a> {
    fn new(entry: &'a Entry) -> Self {
        HeldLock {
            entry,
            owner: lock_owner(),
            released: false,
        }
    }

    async fn release(mut self) {
        let (entry, store) = (self.entry, &self.entry.ctx.settings.token_store);
        entry
            .store("unlock", store.unlock(&entry.store_key, &self.owner))
            .await;
        self.released = true;
    }
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.entry
                .abandoned_locks
                .lock()
                .push(std::mem::take(&mut self.owner));
        }
    }
}
