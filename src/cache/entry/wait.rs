//! Waiting for another process's login of the entry (it holds the entry's
//! lock in the token store): with back-off (looks 250 ms, 750 ms, 1.75 s,
//! 3.75 s … after the wait starts, then every 2 s), and waking when the
//! lock expires (its holder may have died). The first look, when a login
//! has most likely ended, and the look when the lock is due to expire take
//! in the whole entry (one call for the lock and the token, not a look at
//! the lock and then one for the token); the others only the lock (one
//! cheap call). Each look takes the process's turn (see `pacer`: however
//! many entries wait, the process asks at most twice a second); the
//! back-off keeps to its schedule when a turn comes late.
//! A lock still held after a whole lock TTL since this process first saw
//! it (by any of the entry's logins) is no live login's: the wait ends,
//! and the login takes it over.

use std::time::Duration;

use tokio::time::Instant;

use super::state::Entry;
use crate::clock::after;
use crate::store::Loaded;

/// While another process logs in for the entry, look again after this
/// long, doubling up to [`FLEET_POLL_MAX`].
pub(super) const FLEET_POLL_FIRST: Duration = Duration::from_millis(250);
const FLEET_POLL_MAX: Duration = Duration::from_secs(2);
/// Looking again when a held lock expires, a little after.
const LOCK_EXPIRY_SLACK: Duration = Duration::from_millis(50);

/// How a wait for another process's login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Awaited {
    /// The lock is gone (or the store failed): look at the entry again,
    /// unless the wait already did (`Some`: what it saw).
    Gone(Option<Loaded>),
    /// The lock was held for a whole lock TTL since it was first seen.
    Outlived,
}

/// Where a login stands in its waits for other processes' logins: since
/// when a lock has been seen, and the back-off's next look.
pub(super) struct Awaiting {
    since: Instant,
    next: Instant,
    poll: Duration,
    /// No look taken yet.
    first: bool,
}

impl Awaiting {
    pub(super) fn since(&self) -> Instant {
        self.since
    }
}

impl Entry {
    /// A wait for another process's login starting now: since when the
    /// entry's lock has been seen held (now, unless an earlier login of the
    /// entry saw it first).
    pub(super) fn awaiting(&self) -> Awaiting {
        let now = Instant::now();
        Awaiting {
            since: *self.lock_seen.lock().get_or_insert(now),
            next: after(now, FLEET_POLL_FIRST),
            poll: FLEET_POLL_FIRST,
            first: true,
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
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        let _waiting = ctx.pacer.wait();
        let give_up = after(awaiting.since, ttl);
        loop {
            let now = Instant::now();
            if now >= give_up {
                return Awaited::Outlived;
            }
            // Look again at the back-off's next look, or as soon as the
            // lock expires (its holder may have died), whichever is first.
            let expires = after(now, lock_left.saturating_add(LOCK_EXPIRY_SLACK));
            let wake = awaiting.next.min(expires).min(give_up);
            tokio::time::sleep_until(wake).await;
            if wake >= awaiting.next {
                awaiting.poll = (awaiting.poll * 2).min(FLEET_POLL_MAX);
                awaiting.next = after(awaiting.next, awaiting.poll);
            }
            if !ctx.pacer.turn(give_up).await {
                return Awaited::Outlived;
            }
            if wake >= expires || std::mem::take(&mut awaiting.first) {
                // Gone by now, most likely: the whole entry at once.
                match ctx.store("load", store.load(&self.store_key)).await {
                    Some(Loaded {
                        token: None,
                        locked: Some(left),
                    }) => lock_left = left,
                    loaded => return Awaited::Gone(loaded),
                }
                continue;
            }
            // While the lock is held, only it is looked at; once it is gone
            // (or the store fails), the whole entry.
            match ctx.store("poll", store.lock_left(&self.store_key)).await {
                Some(Some(left)) => lock_left = left,
                _ => return Awaited::Gone(None),
            }
        }
    }
}
