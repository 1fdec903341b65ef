//! Waiting for another process's login of the entry (it holds the entry's
//! lock in the token store): with back-off, looking only at the lock (one
//! cheap store call) while it is held, and waking when the lock expires
//! (its holder may have died). A lock still held after a whole lock TTL
//! since this process first saw it (by any of the entry's logins) is no
//! live login's: the wait ends, and the login takes it over.

use std::time::Duration;

use tokio::time::Instant;

use super::state::Entry;
use crate::clock::after;

/// While another process logs in for the entry, look for its token after
/// this long, doubling up to [`FLEET_POLL_MAX`].
const FLEET_POLL_FIRST: Duration = Duration::from_millis(250);
const FLEET_POLL_MAX: Duration = Duration::from_secs(2);
/// Looking again when a held lock expires, a little after.
const LOCK_EXPIRY_SLACK: Duration = Duration::from_millis(50);

/// How a wait for another process's login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Awaited {
    /// The lock is gone (or the store failed): look at the entry again.
    Gone,
    /// The lock was held for a whole lock TTL since it was first seen.
    Outlived,
}

/// Where a login stands in its waits for other processes' logins: since
/// when a lock has been seen, and the next back-off.
pub(super) struct Awaiting {
    since: Instant,
    poll: Duration,
}

impl Entry {
    /// A wait for another process's login starting now: since when the
    /// entry's lock has been seen held (now, unless an earlier login of the
    /// entry saw it first).
    pub(super) fn awaiting(&self) -> Awaiting {
        Awaiting {
            since: *self.lock_seen.lock().get_or_insert_with(Instant::now),
            poll: FLEET_POLL_FIRST,
        }
    }

    /// The entry's lock was seen free, or held by a new login: a wait
    /// starts the clock again.
    pub(super) fn forget_lock_seen(&self) {
        self.lock_seen.lock().take();
    }

    /// Waits while another process holds the entry's lock (`lock_left`
    /// left, as last seen), until it is gone or has been held for `ttl`
    /// (this process's own lock TTL) since `awaiting` first saw a lock.
    pub(super) async fn await_fleet(
        &self,
        mut lock_left: Duration,
        awaiting: &mut Awaiting,
        ttl: Duration,
    ) -> Awaited {
        let store = &self.ctx.settings.token_store;
        let give_up = after(awaiting.since, ttl);
        loop {
            let now = Instant::now();
            if now >= give_up {
                return Awaited::Outlived;
            }
            // Look again after the back-off, or as soon as the lock
            // expires (its holder may have died), whichever is first.
            let wake = after(
                now,
                awaiting
                    .poll
                    .min(lock_left.saturating_add(LOCK_EXPIRY_SLACK)),
            );
            tokio::time::sleep_until(wake.min(give_up)).await;
            awaiting.poll = (awaiting.poll * 2).min(FLEET_POLL_MAX);
            if Instant::now() >= give_up {
                return Awaited::Outlived;
            }
            // While the lock is held, only it is looked at (one cheap
            // call); once it is gone (or the store fails), the whole entry.
            match self
                .ctx
                .store("poll", store.lock_left(&self.store_key))
                .await
            {
                Some(Some(left)) => lock_left = left,
                _ => return Awaited::Gone,
            }
        }
    }
}
