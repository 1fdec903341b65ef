//! The cache's decisions as pure functions of (token times, now, settings):
//! when a token is fresh, due for a background refresh, or expired.
//! No I/O and no clock here, so every boundary is unit-tested.

use std::time::Duration;

use tokio::time::Instant;

/// What the cache does with a cached token at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it, and start one background refresh.
    RefreshDue,
    /// Never serve it: log in (or join the login in flight) first.
    Expired,
}

/// Classifies a token that expires at `expires` and should be refreshed from `refresh_at`.
pub(crate) fn freshness(now: Instant, refresh_at: Instant, expires: Instant) -> Freshness {
    if now >= expires {
        Freshness::Expired
    } else if now >= refresh_at {
        Freshness::RefreshDue
    } else {
        Freshness::Fresh
    }
}

/// The shortest refresh window, whatever `refresh_before` says (unless the
/// token is served for less than twice this): the sweep looks once a second,
/// and the login takes its time.
pub(crate) const MIN_REFRESH_WINDOW: Duration = Duration::from_secs(5);

/// How long before a token stops being served its refresh starts, for a
/// token served for `served`: `refresh_before`, but at least a twentieth of
/// `served` and [`MIN_REFRESH_WINDOW`] (a window too short to refresh in
/// would make every refresh block callers), and at most half of `served` (a
/// short-lived token must not be refreshed on every call).
pub(crate) fn refresh_window(served: Duration, refresh_before: Duration) -> Duration {
    let half = served / 2;
    let floor = (served / 20).max(MIN_REFRESH_WINDOW).min(half);
    refresh_before.clamp(floor, half)
}

/// When to start refreshing a token that stops being served at `expires`
/// after being served for `served`: the refresh window counted back from
/// that instant (not from the end of its lifetime, which lies the expiry
/// margin later).
pub(crate) fn refresh_at(expires: Instant, served: Duration, refresh_before: Duration) -> Instant {
    expires
        .checked_sub(refresh_window(served, refresh_before))
        .unwrap_or(expires)
}

/// Whether a background refresh should start now: the token is in its
/// refresh window, no retry pause is running, and the entry is not idle (it
/// was used within `idle_after`).
pub(crate) fn should_refresh(
    now: Instant,
    refresh_at: Instant,
    expires: Instant,
    not_before: Instant,
    last_used: Instant,
    idle_after: Duration,
) -> bool {
    freshness(now, refresh_at, expires) == Freshness::RefreshDue
        && now >= not_before
        && now.saturating_duration_since(last_used) <= idle_after
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_token_is_fresh_until_the_refresh_point_then_due_then_expired() {
        let t0 = Instant::now();
        let refresh = t0 + S(3300);
        let expires = t0 + S(3600);
        assert_eq!(freshness(t0, refresh, expires), Freshness::Fresh);
        assert_eq!(
            freshness(refresh - Duration::from_nanos(1), refresh, expires),
            Freshness::Fresh
        );
        assert_eq!(freshness(refresh, refresh, expires), Freshness::RefreshDue);
        assert_eq!(
            freshness(expires - Duration::from_nanos(1), refresh, expires),
            Freshness::RefreshDue
        );
        assert_eq!(freshness(expires, refresh, expires), Freshness::Expired);
        assert_eq!(
            freshness(expires + S(1), refresh, expires),
            Freshness::Expired
        );
    }

    #[test]
    fn refresh_starts_refresh_before_ahead_of_the_end_of_service() {
        let expires = Instant::now() + S(3598);
        assert_eq!(refresh_at(expires, S(3598), S(300)), expires - S(300));
        assert_eq!(refresh_at(expires, S(3598), S(1000)), expires - S(1000));
    }

    #[test]
    fn every_token_has_a_refresh_window_whatever_refresh_before_is() {
        // A twentieth of the time served, and 5 s at least.
        assert_eq!(refresh_window(S(3598), Duration::ZERO), S(3598) / 20);
        assert_eq!(refresh_window(S(3598), S(1)), S(3598) / 20);
        assert_eq!(refresh_window(S(18), S(1)), MIN_REFRESH_WINDOW);
        assert_eq!(refresh_window(S(18), Duration::ZERO), MIN_REFRESH_WINDOW);
        // A token served for less than 10 s: half of it.
        assert_eq!(refresh_window(S(6), S(1)), S(3));
        assert_eq!(refresh_window(Duration::ZERO, S(1)), Duration::ZERO);
    }

    #[test]
    fn only_used_entries_in_their_window_and_out_of_a_retry_pause_are_refreshed() {
        let t0 = Instant::now();
        let (refresh, expires, idle) = (t0 + S(3300), t0 + S(3600), S(900));
        let now = t0 + S(3400);
        assert!(should_refresh(now, refresh, expires, t0, now - S(60), idle));
        // Not yet in the window, or already expired.
        assert!(!should_refresh(
            t0 + S(3000),
            refresh,
            expires,
            t0,
            t0 + S(3000),
            idle
        ));
        assert!(!should_refresh(
            expires, refresh, expires, t0, expires, idle
        ));
        // In a retry pause after a failed refresh.
        assert!(!should_refresh(
            now,
            refresh,
            expires,
            now + S(1),
            now,
            idle
        ));
        // Idle: last used more than idle_after ago.
        assert!(should_refresh(now, refresh, expires, t0, now - idle, idle));
        assert!(!should_refresh(
            now,
            refresh,
            expires,
            t0,
            now - idle - S(1),
            idle
        ));
    }

    #[test]
    fn refresh_never_starts_before_half_the_time_served() {
        let expires = Instant::now() + S(58);
        assert_eq!(refresh_at(expires, S(58), S(300)), expires - S(29));
        assert_eq!(
            refresh_at(expires, S(1), S(3600)),
            expires - Duration::from_millis(500)
        );
    }
}
