//! Why a login is made ([`Reason`]), named in its span: the next login of
//! an entry takes the reason the event that made it needed left behind
//! ([`NextReason`]): a token the API rejected, one the caller invalidated,
//! a rotated secret that may cure a remembered failure.

use std::sync::atomic::{AtomicU8, Ordering};

/// Why a login is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reason {
    /// The entry has no token, or it expired.
    NoValidToken = 0,
    /// The API answered 401 to the entry's token, and it was retired.
    Rejected = 1,
    /// The caller retired the token (`TokenCache::invalidate`).
    Invalidated = 2,
    /// The client secret was rotated, forgetting a failure a new login
    /// could not cure.
    Rotated = 3,
    /// The token is in its refresh window.
    RefreshAhead = 4,
}

impl Reason {
    /// As the login span names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::NoValidToken => "no valid token",
            Reason::Rejected => "rejected by the API (401)",
            Reason::Invalidated => "token invalidated",
            Reason::Rotated => "client secret rotated",
            Reason::RefreshAhead => "refresh ahead of expiry",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        [
            Reason::NoValidToken,
            Reason::Rejected,
            Reason::Invalidated,
            Reason::Rotated,
        ]
        .into_iter()
        .find(|reason| *reason as u8 == value)
    }
}

/// The reason an entry's next login will give, when an event left one.
#[derive(Debug, Default)]
pub(super) struct NextReason(AtomicU8);

impl NextReason {
    /// The next login is made for `reason`.
    pub(super) fn set(&self, reason: Reason) {
        self.0.store(reason as u8, Ordering::Relaxed);
    }

    /// The reason left for this login, or `otherwise`; none is left after.
    pub(super) fn take(&self, otherwise: Reason) -> Reason {
        let left = self.0.swap(Reason::NoValidToken as u8, Ordering::Relaxed);
        match Reason::from_u8(left) {
            Some(Reason::NoValidToken) | None => otherwise,
            Some(reason) => reason,
        }
    }

    /// A token arrived: what was left is moot.
    pub(super) fn clear(&self) {
        self.0.store(Reason::NoValidToken as u8, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_left_is_taken_once() {
        let next = NextReason::default();
        assert_eq!(next.take(Reason::NoValidToken), Reason::NoValidToken);
        next.set(Reason::Rejected);
        assert_eq!(next.take(Reason::RefreshAhead), Reason::Rejected);
        assert_eq!(next.take(Reason::RefreshAhead), Reason::RefreshAhead);
        next.set(Reason::Rotated);
        next.clear();
        assert_eq!(next.take(Reason::NoValidToken), Reason::NoValidToken);
    }
}
