//! The cache's clock. Decisions use tokio's monotonic `Instant`, which tests
//! pause and advance; wall-clock times (`expires_at`, times in a token store)
//! are derived from it, so the two never disagree, paused or not.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// One reading of the clock, in both forms the cache uses, so the hot path
/// reads the clock and converts it once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub(crate) instant: Instant,
    pub(crate) nanos: u64,
}

#[derive(Debug)]
pub(crate) struct Clock {
    base: Instant,
    base_utc: DateTime<Utc>,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base: Instant::now(),
            base_utc: Utc::now(),
        }
    }

    /// Reads the clock.
    #[inline]
    pub(crate) fn now(&self) -> Now {
        let instant = Instant::now();
        Now {
            instant,
            nanos: self.nanos(instant),
        }
    }

    /// The wall-clock time of `at`.
    pub(crate) fn utc(&self, at: Instant) -> DateTime<Utc> {
        let since = chrono::Duration::from_std(at.saturating_duration_since(self.base))
            .unwrap_or(chrono::Duration::MAX);
        let before = chrono::Duration::from_std(self.base.saturating_duration_since(at))
            .unwrap_or(chrono::Duration::MAX);
        self.base_utc + since - before
    }

    /// The instant of a wall-clock time, if it is representable.
    pub(crate) fn instant(&self, at: DateTime<Utc>) -> Option<Instant> {
        let offset = at - self.base_utc;
        match offset.to_std() {
            Ok(after) => self.base.checked_add(after),
            Err(_) => self.base.checked_sub((-offset).to_std().ok()?),
        }
    }

    /// `at` as nanoseconds since the clock's base, for atomics.
    #[inline]
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `nanos` after the clock's base.
    pub(crate) fn at(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_clock_times_follow_the_paused_clock() {
        let clock = Clock::new();
        let t0 = Instant::now();
        let utc0 = clock.utc(t0);
        tokio::time::advance(Duration::from_secs(3600)).await;
        let t1 = Instant::now();
        assert_eq!(clock.utc(t1) - utc0, chrono::Duration::seconds(3600));
        assert_eq!(clock.instant(clock.utc(t1)), Some(t1));
        assert_eq!(clock.instant(utc0), Some(t0));
        let earlier = utc0 - chrono::Duration::seconds(10);
        assert_eq!(
            clock.instant(earlier),
            t0.checked_sub(Duration::from_secs(10))
        );
        assert_eq!(clock.at(clock.nanos(t1)), t1);
    }
}
