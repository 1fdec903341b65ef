//! [`ByKey`]: records by endpoint, each with the instant it ends, read
//! from a snapshot without a lock (on every answer from the API) and
//! written under one; ended records are dropped, and past
//! [`MAX_ENDPOINTS`] the ones that end first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Records kept per map; past it, the records that end first are dropped.
pub(super) const MAX_ENDPOINTS: usize = 64;

/// Records by endpoint key (see the module docs).
#[derive(Debug)]
pub(super) struct ByKey<V> {
    snapshot: ArcSwap<HashMap<String, (V, Instant)>>,
    /// How many records the snapshot holds: asked on every answer from the
    /// API, so one relaxed load instead of a snapshot's.
    len: AtomicUsize,
    write: Mutex<()>,
}

impl<V> Default for ByKey<V> {
    fn default() -> Self {
        ByKey {
            snapshot: ArcSwap::from_pointee(HashMap::new()),
            len: AtomicUsize::new(0),
            write: Mutex::new(()),
        }
    }
}

impl<V: Clone> ByKey<V> {
    /// Whether anything is recorded (one relaxed load: a record written
    /// on another thread a moment ago may not show yet, which costs that
    /// answer nothing but the bookkeeping it would have done).
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.len.load(Ordering::Relaxed) != 0
    }

    /// `key`'s record, unless it has ended at `now`.
    pub(super) fn get(&self, key: &str, now: Instant) -> Option<V> {
        let snapshot = self.snapshot.load();
        let (value, ends) = snapshot.get(key)?;
        (now < *ends).then(|| value.clone())
    }

    /// Changes the records with `change` (given a copy of them, ended ones
    /// left out), then drops, past the limit, those that end first.
    pub(super) fn update<R>(
        &self,
        now: Instant,
        change: impl FnOnce(&mut HashMap<String, (V, Instant)>) -> R,
    ) -> R {
        let _writing = self.write.lock();
        let mut records = HashMap::clone(&self.snapshot.load());
        records.retain(|_, (_, ends)| now < *ends);
        let result = change(&mut records);
        records.retain(|_, (_, ends)| now < *ends);
        while records.len() > MAX_ENDPOINTS {
            let Some(first) = records
                .iter()
                .min_by_key(|(_, (_, ends))| *ends)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            records.remove(&first);
        }
        self.len.store(records.len(), Ordering::Relaxed);
        self.snapshot.store(Arc::new(records));
        result
    }

    /// Sets `key`'s record, ending at `until`.
    pub(super) fn insert(&self, key: &str, value: V, now: Instant, until: Instant) {
        self.update(now, |records| {
            records.insert(key.to_owned(), (value, until));
        });
    }

    /// Drops `key`'s record (and those that ended), writing only when
    /// there is something to drop.
    pub(super) fn remove(&self, key: &str, now: Instant) {
        let snapshot = self.snapshot.load();
        let stale = snapshot.contains_key(key) || snapshot.values().any(|(_, ends)| now >= *ends);
        if stale {
            self.update(now, |records| {
                records.remove(key);
            });
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.snapshot.load().len()
    }
}
