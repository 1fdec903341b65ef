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

/// When to start refreshing a token issued at `issued` for `lifetime`:
/// `refresh_before` ahead of expiry, but never earlier than half-way through
/// its life (a short-lived token must not be refreshed on every call).
pub(crate) fn refresh_at(issued: Instant, lifetime: Duration, refresh_before: Duration) -> Instant {
    issued + lifetime - refresh_before.min(lifetime / 2)
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
    fn refresh_starts_refresh_before_ahead_of_expiry() {
        let t0 = Instant::now();
        assert_eq!(refresh_at(t0, S(3600), S(300)), t0 + S(3300));
        assert_eq!(refresh_at(t0, S(3600), Duration::ZERO), t0 + S(3600));
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
    fn refresh_never_starts_before_half_the_lifetime() {
        let t0 = Instant::now();
        assert_eq!(refresh_at(t0, S(60), S(300)), t0 + S(30));
        assert_eq!(
            refresh_at(t0, S(1), S(3600)),
            t0 + Duration::from_millis(500)
        );
    }
}
