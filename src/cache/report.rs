//! What a cache's sweep reports through the `metrics` facade (feature
//! `metrics`): the entries it holds, as its share of one gauge summed over
//! the caches of the process, and the time left on each token served since
//! the sweep before. Once a second at most, from the sweep's own task: the
//! hot path pays nothing for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::entry::Entry;
use super::table::Table;

/// A cache's share of the entries gauge: what it last added.
#[derive(Debug, Default)]
pub(super) struct Report {
    entries: AtomicU64,
}

impl Report {
    /// Reports the entries of `plain` and `taxpayers`, and the time left on
    /// the tokens served at or after `since` (nanoseconds since the cache's
    /// epoch).
    pub(super) fn sweep(&self, plain: &Arc<Entry>, taxpayers: &Table, now: Instant, since: u64) {
        let entries = taxpayers.len() + usize::from(plain.has_token());
        let entries = u64::try_from(entries).unwrap_or(u64::MAX);
        let before = self.entries.swap(entries, Ordering::Relaxed);
        crate::metrics::entries_changed(before, entries);
        let seconds_left = crate::metrics::seconds_left();
        let sample = |entry: &Arc<Entry>| {
            if let Some(left) = entry.left_if_served_since(since, now) {
                seconds_left.record(left.as_secs_f64());
            }
        };
        sample(plain);
        taxpayers.for_each(sample);
    }
}

impl Drop for Report {
    /// A cache dropped takes its part off the gauge.
    fn drop(&mut self) {
        crate::metrics::entries_changed(*self.entries.get_mut(), 0);
    }
}
