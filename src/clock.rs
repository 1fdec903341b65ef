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

    /// The wall-clock time of `at` (saturating at chrono's range).
    pub(crate) fn utc(&self, at: Instant) -> DateTime<Utc> {
        let since = chrono::Duration::from_std(at.saturating_duration_since(self.base))
            .unwrap_or(chrono::Duration::MAX);
        let before = chrono::Duration::from_std(self.base.saturating_duration_since(at))
            .unwrap_or(chrono::Duration::MAX);
        self.base_utc
            .checked_add_signed(since)
            .and_then(|t| t.checked_sub_signed(before))
            .unwrap_or(if since > before {
                DateTime::<Utc>::MAX_UTC
            } else {
                DateTime::<Utc>::MIN_UTC
            })
    }

    /// `at` as nanoseconds since the clock's base, for atomics.
    #[inline]
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `nanos` after the clock's base.
    pub(crate) fn at(&self, nanos: u64) -> Instant {
        after(self.base, Duration::from_nanos(nanos))
    }
}

/// How far ahead "never" is: a saturated instant lies this far in the future.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `at + d`, saturating instead of panicking: durations from outside (a
/// `Retry-After`, a configured wait of `Duration::MAX`) cannot overflow an
/// `Instant`; a sum beyond the representable becomes "a century from `at`".
pub(crate) fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(FAR_FUTURE))
        .or_else(|| at.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(at)
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
        assert_eq!(clock.at(clock.nanos(t1)), t1);
    }

    #[test]
    fn adding_any_duration_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        for huge in [Duration::MAX, Duration::from_secs(u64::MAX), FAR_FUTURE * 2] {
            let later = after(now, huge);
            assert!(later > now + Duration::from_secs(365 * 24 * 3600));
            // Its wall-clock time is representable too.
            let clock = Clock::new();
            assert!(clock.utc(later) > Utc::now());
        }
    }
}
