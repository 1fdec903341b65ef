//! The store's clock: the host's wall clock in milliseconds. Every process
//! of the host reads the same one, and it survives a restart (a monotonic
//! clock starts again at boot). A step of that clock must not strand
//! anyone: times read back from the file that lie ahead of now by more
//! than [`SLACK_MS`] were written before the clock went back, and are
//! bounded by what they were when written (see the callers).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far ahead of now a stored time may be before it is taken to have
/// been written before the clock went back.
pub(super) const SLACK_MS: i64 = 2_000;

/// Milliseconds since the Unix epoch, by the host's wall clock.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in milliseconds, saturating.
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds as a duration; a negative count is zero.
pub(super) fn duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
