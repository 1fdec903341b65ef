//! The entry's lock in the token store, as one login of this process holds
//! it: taken for the login call only, for about the login timeout
//! ([`lock_ttl`]), and released on every path. When the login ends, by
//! [`HeldLock::release`]; if the store fails then (a failover: the lock
//! reached the replica, the token did not), the token is saved and the
//! lock released in the background until the store answers or the lock
//! expires ([`Entry::mend`]); if the login is cut off (its task dropped, or
//! a panic), from a task of its own on the current runtime, and failing
//! that by the entry's next login ([`Entry::release_abandoned_locks`]),
//! which retries a failed unlock at once on the fresh connection the
//! failure made (one made on a runtime that is gone fails), and releases
//! a lock of its own it finds instead of waiting it out. Owner-checked
//! everywhere: never another process's lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::state::{Entry, REFRESH_MARGIN};
use crate::clock::after;
use crate::config::Settings;
use crate::store::{lock_owner, StoreError};
use crate::token::AccessToken;

/// How long a login may take, for the lock, when no login timeout is set.
const LOCK_LOGIN_ALLOWANCE: Duration = Duration::from_secs(60);
/// The lock outlives the login call by this much.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// After a failed unlock, try again after this long, doubling up to
/// [`MEND_MAX`], until the lock expires.
const MEND_FIRST: Duration = Duration::from_millis(250);
const MEND_MAX: Duration = Duration::from_secs(2);

/// How long the entry's lock is taken for: the login timeout (or, without
/// one, a minute) and a margin.
pub(super) fn lock_ttl(settings: &Settings) -> Duration {
    settings
        .login_timeout
        .unwrap_or(LOCK_LOGIN_ALLOWANCE)
        .saturating_add(LOCK_MARGIN)
}

impl Entry {
    /// Releases the store locks that logins of this entry held when they
    /// were cut off (their runtime shut down, or a panic): a `drop` cannot
    /// wait for the store, so the next login does it, before it asks for
    /// the lock itself. A failed unlock (a connection made on the runtime
    /// that is gone) is tried once more at once, on the fresh connection
    /// the failure made; if that fails too, the owner stays queued for the
    /// next try. Returns whether a lock was released.
    pub(super) async fn release_abandoned_locks(&self) -> bool {
        let mut released = false;
        for owner in self.abandoned_locks.owners(Instant::now()) {
            let store = &self.ctx.settings.token_store;
            let mut outcome = self
                .ctx
                .try_store(store.unlock(&self.store_key, &owner))
                .await;
            if outcome.as_ref().is_err_and(|e| !e.is_repeat()) {
                outcome = self
                    .ctx
                    .try_store(store.unlock(&self.store_key, &owner))
                    .await;
            }
            match outcome {
                Ok(()) => {
                    self.abandoned_locks.forget(&owner);
                    released = true;
                    tracing::info!("released the lock of a login that was cut off");
                }
                Err(error) => {
                    tracing::warn!(
                        kind = %error.kind(),
                        %error,
                        "could not release the lock of a login that was cut off; trying again at the next login"
                    );
                }
            }
        }
        released
    }

    /// Whether logins of this entry that were cut off left locks not yet
    /// released.
    pub(super) fn has_abandoned_locks(&self) -> bool {
        !self.abandoned_locks.is_empty(Instant::now())
    }
}

/// The entry's lock in the token store, as one login of this process holds
/// it (or tries to). Released on every path: by [`release`](Self::release)
/// when the login ends (and, if the store fails then, again in the
/// background until it answers), and, if the login is cut off first (its
/// task dropped, or a panic), from a task of its own on the current
/// runtime, and failing that by the entry's next login.
pub(super) struct HeldLock<'a> {
    entry: &'a Entry,
    owner: String,
    /// When the lock expires by itself.
    expires: Instant,
    /// The store said the lock is ours (not merely that it failed to answer).
    taken: bool,
    released: bool,
}

impl<'a> HeldLock<'a> {
    /// Takes the entry's lock for `ttl`: `Some` when it is ours, or when
    /// the store did not answer (the login goes ahead as a single process's
    /// would); `None` when another process holds it.
    pub(super) async fn take(entry: &'a Entry, ttl: Duration) -> Option<HeldLock<'a>> {
        // Made before asking: a login cut off while it asks releases it too.
        let mut lock = HeldLock {
            entry,
            owner: lock_owner(),
            expires: after(Instant::now(), ttl),
            taken: false,
            released: false,
        };
        let store = &entry.ctx.settings.token_store;
        let taken = entry
            .ctx
            .store("lock", store.try_lock(&entry.store_key, &lock.owner, ttl))
            .await;
        match taken {
            Some(true) => lock.taken = true,
            None => {}
            Some(false) => {
                lock.released = true;
                return None;
            }
        }
        Some(lock)
    }

    /// Releases the lock; `unsaved` is the login's token when the store
    /// failed to take it. If the unlock fails too (a failover: the lock
    /// reached the replica, the token did not), the other processes would
    /// wait for a token that never comes until the lock expires: the token
    /// is shared and the lock released in the background once the store
    /// answers again.
    pub(super) async fn release(mut self, unsaved: Option<AccessToken>) {
        let (entry, store) = (self.entry, &self.entry.ctx.settings.token_store);
        let unlocked = entry
            .ctx
            .store("unlock", store.unlock(&entry.store_key, &self.owner))
            .await;
        self.released = true;
        if unlocked.is_none() && self.taken {
            entry.mend(std::mem::take(&mut self.owner), unsaved, self.expires);
        }
    }
}

impl Drop for HeldLock<'_> {
    /// A login cut off (its task dropped, or a panic): the lock is released
    /// from a task of its own on the current runtime if there is one (not
    /// when the runtime itself is shutting down: it never runs), and, should
    /// that not happen, by the entry's next login.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let owner = std::mem::take(&mut self.owner);
        let queue = self.entry.abandoned_locks.clone();
        queue.push(owner.clone(), self.expires);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ctx = Arc::clone(&self.entry.ctx);
        let key = self.entry.store_key.clone();
        let span =
            tracing::info_span!(parent: None, "myinvois_auth.unlock", entry = %self.entry.label);
        let unlock = async move {
            let store = &ctx.settings.token_store;
            match ctx.try_store(store.unlock(&key, &owner)).await {
                Ok(()) => {
                    queue.forget(&owner);
                    tracing::info!("released the lock of a login that was cut off");
                }
                // The entry's next login tries again.
                Err(error) => {
                    tracing::debug!(%error, "could not release the lock of a login cut off");
                }
            }
        };
        runtime.spawn(unlock.instrument(span));
    }
}

impl Entry {
    /// In the background, until the lock of `owner` expires by itself,
    /// with back-off: saves `unsaved` (while it is still valid and the
    /// store holds no token for the entry: never over a newer one), and
    /// releases the lock. Both are tried in every round, so that a lock is
    /// released even while saves fail.
    fn mend(&self, owner: String, unsaved: Option<AccessToken>, until: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime: the lock expires by itself.
            return;
        };
        let ctx = Arc::clone(&self.ctx);
        let key = self.store_key.clone();
        let span = tracing::info_span!(parent: None, "myinvois_auth.mend", entry = %self.label);
        span.follows_from(tracing::Span::current().id());
        let mend = async move {
            let store = &ctx.settings.token_store;
            let failed = |what: &'static str, error: StoreError| {
                tracing::debug!(what, %error, "token store still failing");
            };
            let (mut unsaved, mut locked) = (unsaved, true);
            let mut pause = MEND_FIRST;
            loop {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MEND_MAX);
                let now = Instant::now();
                if now >= until {
                    tracing::info!("the token store stayed out of reach until the lock expired");
                    return;
                }
                if let Some(token) = unsaved.take() {
                    let still_valid = token.0.expires > after(now, REFRESH_MARGIN);
                    match ctx.try_store(store.load(&key)).await {
                        Ok(loaded) if loaded.token.is_none() && still_valid => {
                            let stored = token.to_stored(now);
                            if let Err(error) = ctx.try_store(store.save(&key, &stored)).await {
                                failed("save", error);
                                unsaved = Some(token);
                            }
                        }
                        // Another token is there, or ours is too old to share.
                        Ok(_) => {}
                        Err(error) => {
                            failed("load", error);
                            unsaved = Some(token);
                        }
                    }
                }
                if locked {
                    match ctx.try_store(store.unlock(&key, &owner)).await {
                        Ok(()) => {
                            locked = false;
                            tracing::info!("the token store answers again: lock released");
                        }
                        Err(error) => failed("unlock", error),
                    }
                }
                if !locked && unsaved.is_none() {
                    return;
                }
            }
        };
        runtime.spawn(mend.instrument(span));
    }
}
