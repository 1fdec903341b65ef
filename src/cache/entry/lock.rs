//! The entry's lock in the token store, as one login of this process holds
//! it: taken for the login call only, for about the login timeout
//! ([`lock_ttl`]), and released on every path, owner-checked (never
//! another process's lock). A lock never outlives its holder by more than
//! that TTL:
//!
//! - when the login ends, [`HeldLock::release`] unlocks; if the store fails
//!   then (a failover: the lock reached the replica, the token did not),
//!   the token is saved and the lock released in the background until the
//!   store answers or the lock expires ([`Entry::mend`]);
//! - a lock command that got no answer may still have run (a hung server
//!   runs it when it resumes): it is released the same way, until an
//!   unlock is answered;
//! - a login cut off (its task dropped with its runtime, or a panic)
//!   leaves its owner queued on the entry: released from a task of its own
//!   if a runtime is there, else by the entry's next login, which retries a
//!   failed unlock on a fresh connection at once and, should the store
//!   show the entry locked while an owner of its own is queued, releases
//!   that one first instead of waiting ([`Entry::release_abandoned_locks`]);
//! - a lock held for a whole lock TTL since this process first saw it (no
//!   TTL, or one longer than any the crate sets: a restored dump, a
//!   `PERSIST`) is no live login's: it is taken over
//!   ([`TokenStore::take_over_lock`](crate::TokenStore::take_over_lock)).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::state::{Entry, REFRESH_MARGIN};
use crate::cache::context::Context;
use crate::clock::after;
use crate::config::Settings;
use crate::store::{lock_owner, StoreError, StoreErrorKind};
use crate::token::AccessToken;

/// How long a login may take, for the lock, when no login timeout is set.
const LOCK_LOGIN_ALLOWANCE: Duration = Duration::from_secs(60);
/// The lock outlives the login call by this much.
const LOCK_MARGIN: Duration = Duration::from_secs(5);
/// After a failed unlock, try again after this long, doubling up to
/// [`MEND_MAX`], until the lock expires.
const MEND_FIRST: Duration = Duration::from_millis(250);
const MEND_MAX: Duration = Duration::from_secs(2);
/// While the store skips Redis after failures, look this often for the
/// end of the skip: the unlock is the first call then.
const MEND_SKIPPED_POLL: Duration = Duration::from_millis(100);
/// A lock command that got no answer may run whenever the server comes
/// back: its unlock is retried until one is answered, for this long at most.
const UNANSWERED_MEND_LIMIT: Duration = Duration::from_secs(600);

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

/// What the store said when the lock was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// The lock is ours.
    Yes,
    /// No answer: the command may still run (a hung server runs it when it
    /// resumes), so it is released as if it were ours.
    Unanswered,
    /// The store failed before sending it (out of reach, skipped).
    No,
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
    /// When the lock expires by itself (if the command ran at once).
    expires: Instant,
    taken: Taken,
    released: bool,
}

impl<'a> HeldLock<'a> {
    /// Takes the entry's lock for `ttl` (`take_over`: also from a holder
    /// watched for a whole lock TTL, if its lock has no TTL or one longer
    /// than `ttl`): `Some` when it is ours, or when the store did not
    /// answer (the login goes ahead as a single process's would); `None`
    /// when another process holds it.
    pub(super) async fn take(
        entry: &'a Entry,
        ttl: Duration,
        take_over: bool,
    ) -> Option<HeldLock<'a>> {
        // Made before asking: a login cut off while it asks releases it too.
        let mut lock = HeldLock {
            entry,
            owner: lock_owner(),
            expires: after(Instant::now(), ttl),
            taken: Taken::Unanswered,
            released: false,
        };
        let store = &entry.ctx.settings.token_store;
        let (key, owner) = (&entry.store_key, &lock.owner);
        let asked = if take_over {
            tracing::warn!(
                "the entry's lock was held for a whole lock TTL ({ttl:?}) since this process \
                 first saw it: no live login holds it; taking it over"
            );
            entry
                .ctx
                .try_store(store.take_over_lock(key, owner, ttl))
                .await
        } else {
            entry.ctx.try_store(store.try_lock(key, owner, ttl)).await
        };
        match asked {
            Ok(true) => lock.taken = Taken::Yes,
            Ok(false) => {
                lock.released = true;
                return None;
            }
            Err(error) => {
                lock.taken = if unanswered(&error) {
                    Taken::Unanswered
                } else {
                    Taken::No
                };
                warn_store(&error, "lock");
            }
        }
        Some(lock)
    }

    /// Releases the lock; `unsaved` is the login's token when the store
    /// failed to take it. If the unlock fails too (a failover: the lock
    /// reached the replica, the token did not; or a lock command that got
    /// no answer), the other processes would wait for a token that never
    /// comes until the lock expires: the token is shared and the lock
    /// released in the background once the store answers again.
    pub(super) async fn release(mut self, unsaved: Option<AccessToken>) {
        let (entry, store) = (self.entry, &self.entry.ctx.settings.token_store);
        let unlocked = entry
            .ctx
            .store("unlock", store.unlock(&entry.store_key, &self.owner))
            .await;
        self.released = true;
        let until = match self.taken {
            Taken::Yes => self.expires,
            Taken::Unanswered => after(Instant::now(), UNANSWERED_MEND_LIMIT),
            Taken::No => return,
        };
        if unlocked.is_none() {
            if self.taken == Taken::Unanswered {
                tracing::info!(
                    "the lock command got no answer and may still run: releasing the lock \
                     once the token store answers"
                );
            }
            entry.mend(std::mem::take(&mut self.owner), unsaved, until);
        }
    }
}

/// Whether a failed call may still have reached the store (no answer in
/// time), rather than never being sent.
fn unanswered(error: &StoreError) -> bool {
    error.kind() == StoreErrorKind::Timeout && !error.is_repeat()
}

/// Logs a failed store call as `Context::store` does.
fn warn_store(error: &StoreError, what: &'static str) {
    if error.is_repeat() {
        tracing::debug!(what, %error, "token store skipped");
    } else {
        tracing::warn!(what, kind = %error.kind(), %error, "token store unavailable; going on without it");
    }
}

impl Drop for HeldLock<'_> {
    /// A login cut off (its task dropped, or a panic): the lock is released
    /// from a task of its own on the current runtime if there is one (not
    /// when the runtime itself is shutting down: it never runs), and, should
    /// that not happen, by the entry's next login.
    fn drop(&mut self) {
        if self.released || self.taken == Taken::No {
            return;
        }
        let owner = std::mem::take(&mut self.owner);
        let until = match self.taken {
            Taken::Unanswered => after(Instant::now(), UNANSWERED_MEND_LIMIT),
            _ => self.expires,
        };
        let queue = self.entry.abandoned_locks.clone();
        queue.push(owner.clone(), until);
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
    /// In the background, until the lock of `owner` is released or `until`,
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
        runtime.spawn(mend(ctx, key, owner, unsaved, until).instrument(span));
    }
}

async fn mend(
    ctx: Arc<Context>,
    key: String,
    owner: String,
    unsaved: Option<AccessToken>,
    until: Instant,
) {
    let store = &ctx.settings.token_store;
    let failed = |what: &'static str, error: StoreError| {
        tracing::debug!(what, %error, "token store still failing");
    };
    let (mut unsaved, mut locked) = (unsaved, true);
    let mut pause = MEND_FIRST;
    loop {
        tokio::time::sleep(pause).await;
        let now = Instant::now();
        if now >= until {
            tracing::info!("the token store stayed out of reach until the lock expired");
            return;
        }
        if !store.is_available() {
            // Skipped after failures: try the moment the skip ends.
            pause = MEND_SKIPPED_POLL;
            continue;
        }
        pause = (pause * 2).min(MEND_MAX);
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
}
