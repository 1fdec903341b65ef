//! [`Table`]: the cache's taxpayer entries, looked up on every intermediary call,
//! grown when a new taxpayer appears, and kept to `max_entries` by evicting
//! one of the least recently used.
//!
//! Lookups take no lock: the entries live in a concurrent map whose reads
//! are lock-free (papaya), keyed with foldhash (SipHash cost as much as the
//! rest of the lookup). Insertions and evictions are serialized by a small
//! mutex over a list of the entries, which gives O(1) random sampling:
//! eviction looks at [`EVICTION_SAMPLE`] entries and drops the one used
//! longest ago (as Redis' approximated LRU does), so a new taxpayer on a
//! full table costs the same with 10 000 entries as with 100; a table no
//! larger than the sample is evicted exactly. An evicted entry's token
//! stays in the token store, so using it again costs no login while that
//! token is valid.

use std::sync::Arc;

use parking_lot::Mutex;

use super::entry::Entry;

/// How many entries an eviction looks at.
pub(crate) const EVICTION_SAMPLE: usize = 32;

type Map = papaya::HashMap<Arc<str>, Arc<Entry>, foldhash::fast::RandomState>;

pub(crate) struct Table {
    map: Map,
    /// Every entry, for sampling; only insertions and evictions take this
    /// lock.
    list: Mutex<Vec<Arc<Entry>>>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            map: Map::with_hasher(foldhash::fast::RandomState::default()),
            list: Mutex::new(Vec::new()),
        }
    }
}

impl Table {
    /// The entry of `taxpayer`, if there is one.
    #[inline]
    pub(crate) fn get(&self, taxpayer: &str) -> Option<Arc<Entry>> {
        self.with(taxpayer, Arc::clone)
    }

    /// Runs `f` on the entry of `taxpayer` without cloning it (the hot path).
    #[inline]
    pub(crate) fn with<T>(&self, taxpayer: &str, f: impl FnOnce(&Arc<Entry>) -> T) -> Option<T> {
        self.map.pin().get(taxpayer).map(f)
    }

    /// The entry of `taxpayer`, made by `make` if there is none; past `max`
    /// entries, one of the least recently used is dropped first.
    pub(crate) fn get_or_insert(
        &self,
        taxpayer: &str,
        max: usize,
        make: impl FnOnce() -> Arc<Entry>,
    ) -> Arc<Entry> {
        if let Some(entry) = self.get(taxpayer) {
            return entry;
        }
        let mut list = self.list.lock();
        if let Some(entry) = self.get(taxpayer) {
            return entry;
        }
        while list.len() >= max.max(1) {
            self.evict_one(&mut list);
        }
        let entry = make();
        list.push(Arc::clone(&entry));
        self.map
            .pin()
            .insert(Arc::from(taxpayer), Arc::clone(&entry));
        entry
    }

    pub(crate) fn len(&self) -> usize {
        self.list.lock().len()
    }

    /// Runs `f` on every entry, without blocking lookups or insertions.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Entry>)) {
        for (_, entry) in self.map.pin().iter() {
            f(entry);
        }
    }

    /// Drops the entry used longest ago among a sample (all of them, for a
    /// table no larger than the sample). A login it has in flight still
    /// completes for its waiters; the token is just not kept here.
    fn evict_one(&self, list: &mut Vec<Arc<Entry>>) {
        let len = list.len();
        let oldest = if len <= EVICTION_SAMPLE {
            (0..len).min_by_key(|&i| list[i].last_used())
        } else {
            (0..EVICTION_SAMPLE)
                .map(|_| fastrand::usize(..len))
                .min_by_key(|&i| list[i].last_used())
        };
        let Some(i) = oldest else { return };
        let evicted = list.swap_remove(i);
        if let Some(taxpayer) = evicted.on_behalf_of() {
            self.map.pin().remove(taxpayer.as_str());
            tracing::debug!(on_behalf_of = %taxpayer, "least recently used entry evicted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::context::Context;
    use crate::config::Credentials;
    use crate::config::TokenCacheBuilder;
    use crate::taxpayer::OnBehalfOf;
    use std::time::Duration;
    use tokio::time::Instant;

    fn context() -> Arc<Context> {
        let settings = TokenCacheBuilder::new(Credentials::new("id", "secret"))
            .identity_url("http://127.0.0.1:9")
            .into_settings()
            .unwrap();
        Arc::new(Context::new(settings))
    }

    #[test]
    fn a_full_table_evicts_one_of_the_least_recently_used_and_stays_full() {
        let (ctx, table, t0) = (context(), Table::default(), Instant::now());
        let max = 1000;
        let entry = |i: u64| {
            let tin = OnBehalfOf::new(format!("C{i:010}"));
            let used = t0 + Duration::from_millis(i);
            Arc::new(Entry::new(Arc::clone(&ctx), Some(tin), used))
        };
        for i in 0..max as u64 {
            table.get_or_insert(&format!("C{i:010}"), max, || entry(i));
        }
        for i in max as u64..max as u64 + 100 {
            table.get_or_insert(&format!("C{i:010}"), max, || entry(i));
            assert_eq!(table.len(), max);
        }
        // Every entry evicted was in the older half (a sample of 32 misses
        // it with probability 2^-32 per eviction); the newest are all kept.
        let kept = |i: u64| table.get(&format!("C{i:010}")).is_some();
        assert!((500..1100).all(kept), "a recent entry was evicted");
        assert_eq!((0..500).filter(|&i| !kept(i)).count(), 100);
    }
}
