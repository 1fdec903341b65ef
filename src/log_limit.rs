//! [`LogLimit`]: at most one log line a second for one kind of event that
//! can happen on every call (a wait, an answer from memory), so that a storm
//! of calls writes one line a second, saying how many it stands for, not
//! one line per call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Lines of one kind are written at most this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(1);

/// When the next line of one kind may be written, and how many events were
/// left unlogged since the last one.
#[derive(Debug)]
pub(crate) struct LogLimit {
    epoch: Instant,
    /// No line before this (nanoseconds since `epoch`).
    next: AtomicU64,
    left_out: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit {
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }
}

impl LogLimit {
    /// An event of this kind happened: `Some(n)` when its line is to be
    /// written now (`n` events of the kind were left unlogged since the
    /// last line), `None` when it is left out. No lock; an atomic add when
    /// left out.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(
            Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX);
        let next = self.next.load(Ordering::Relaxed);
        let step = u64::try_from(LOG_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(step),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// `d` in whole milliseconds, for a log field.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_a_second_counting_the_ones_left_out() {
        let limit = LogLimit::default();
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..99 {
            assert_eq!(limit.allow(), None);
        }
        tokio::time::advance(LOG_EVERY).await;
        assert_eq!(limit.allow(), Some(99));
        assert_eq!(limit.allow(), None);
    }
}
