//! The locks that logins cut off (their task dropped with its runtime, or a
//! panic) left in the token store, by owner: kept on the entry until an
//! unlock of each is answered or it expires (see `lock`).

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Owners of locks cut-off logins left, each with when it stops mattering
/// (its lock has expired, or it was given up on).
#[derive(Clone, Default)]
pub(super) struct AbandonedLocks(Arc<Mutex<Vec<(String, Instant)>>>);

impl AbandonedLocks {
    pub(super) fn push(&self, owner: String, until: Instant) {
        self.0.lock().push((owner, until));
    }

    /// The owners still to release at `now`.
    pub(super) fn owners(&self, now: Instant) -> Vec<String> {
        let mut queue = self.0.lock();
        queue.retain(|(_, until)| *until > now);
        queue.iter().map(|(owner, _)| owner.clone()).collect()
    }

    /// `owner`'s lock was released.
    pub(super) fn forget(&self, owner: &str) {
        self.0.lock().retain(|(queued, _)| queued != owner);
    }

    pub(super) fn is_empty(&self, now: Instant) -> bool {
        self.owners(now).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn owners_are_kept_until_released_or_expired() {
        let locks = AbandonedLocks::default();
        let now = Instant::now();
        locks.push("a".into(), now + Duration::from_secs(5));
        locks.push("b".into(), now + Duration::from_secs(1));
        assert_eq!(locks.owners(now), ["a", "b"]);
        assert_eq!(locks.owners(now + Duration::from_secs(2)), ["a"]);
        locks.forget("a");
        assert!(locks.is_empty(now));
    }
}
