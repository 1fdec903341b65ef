//! How an entry obtains a new token: one another process already shared
//! through the token store, or a login of this process, made under the
//! entry's lock in the store (one login per key across a fleet) and within
//! the client ID's login budget (this process's and the fleet's).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::{Urgency, DEFAULT_RATE_LIMIT_BACKOFF};
use crate::clock::after;
use crate::entry::{Entry, REFRESH_MARGIN};
use crate::error::Error;
use crate::flight::{Phase, Progress};
use crate::login::login;
use crate::stats::Counters;
use crate::store::{lock_owner, LoginSlot, SlotRequest, StoreError};
use crate::token::AccessToken;

/// How long a login may take, for the lock, when no login timeout is set.
const LOCK_LOGIN_ALLOWANCE: Duration = Duration::from_secs(60);
/// While another process holds an entry's login lock, look for its token this often.
const FLEET_POLL: Duration = Duration::from_millis(100);
/// Budget for one token-store call (stores have their own, shorter, limits).
const STORE_CALL_LIMIT: Duration = Duration::from_secs(2);

impl Entry {
    /// Gets a new token for the entry: one another process already obtained,
    /// or a login of this process under the entry's lock in the token store,
    /// so that one process in a fleet logs in per key.
    pub(crate) async fn obtain(
        &self,
        reason: &'static str,
        urgency: &Urgency,
        progress: &Progress,
    ) -> Result<AccessToken, Error> {
        let ctx = &self.ctx;
        let deadline = urgency.get().deadline;
        let store = &ctx.settings.token_store;
        // The token to improve on: the one held (a refresh), or one rejected.
        let rejected = self.rejected_until.load(Ordering::Relaxed);
        let have = match self.current.load().as_ref() {
            Some(current) => Some(current.expires),
            None => (rejected > 0).then(|| ctx.clock.at(rejected)),
        };
        self.release_abandoned_locks().await;
        if let Some(token) = self.shared_token(have).await {
            return Ok(token);
        }
        let lock = HeldLock::new(self);
        // The lock covers the wait for a budget slot and the login itself;
        // others give up waiting for our token when it could no longer come.
        let login_time = ctx.settings.login_timeout.unwrap_or(LOCK_LOGIN_ALLOWANCE);
        let hold_for = deadline
            .saturating_duration_since(Instant::now())
            .saturating_add(login_time)
            .saturating_add(Duration::from_secs(5));
        let give_up = after(deadline, login_time);
        let started = Instant::now();
        loop {
            match self
                .store(
                    "lock",
                    store.try_lock(&self.store_key, &lock.owner, hold_for),
                )
                .await
            {
                // Ours, or no store to ask: log in ourselves.
                Some(true) | None => break,
                Some(false) => {
                    progress.set(Phase::AwaitingFleet);
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
                let result = self.login_within_budget(reason, urgency, progress).await;
                if let Ok(token) = &result {
                    let stored = token.to_stored(Instant::now());
                    self.store("save", store.save(&self.store_key, &stored))
                        .await;
                }
                result
            }
        };
        lock.release().await;
        result
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
            tracing::info!(entry = %self.label, "released the lock of a login that was cut off");
        }
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
            &self.owner(),
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
        urgency: &Urgency,
        progress: &Progress,
    ) -> Result<AccessToken, Error> {
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        progress.set(Phase::Queued);
        loop {
            let grant = match ctx.budget.acquire(urgency, None).await {
                Ok(grant) => grant,
                Err(error) => return Err(self.refused(reason, error)),
            };
            let Some(limit) = ctx.budget.limit() else {
                grant.keep();
                break;
            };
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
                // Ours fleet-wide, or no store to ask: log in.
                Some(LoginSlot::Granted) | None => {
                    grant.keep();
                    break;
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
                        return Err(self.refused(reason, error));
                    }
                    tokio::time::sleep_until(at).await;
                }
            }
        }
        Counters::bump(&ctx.counters.logins);
        progress.set(Phase::Sending);
        let started = Instant::now();
        tracing::debug!(entry = %self.label, reason, "login started");
        let result = login(&ctx.settings, self.on_behalf_of.as_ref())
            .await
            .map(|issued| {
                let sent_at_utc = ctx.clock.utc(issued.sent_at);
                AccessToken::new(issued, sent_at_utc, &self.owner())
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
