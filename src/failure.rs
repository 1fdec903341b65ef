//! Failure memory: a failed login is remembered per entry, so that every
//! caller of that entry gets the same error at once, with the time left,
//! instead of spending another login from the budget every taxpayer of the
//! client ID shares (as MSAL throttles identical token requests).
//!
//! - A failure a new login cannot cure (an OAuth error such as
//!   `invalid_grant`, a redirect, or a well-formed answer with unusable
//!   content) is answered from memory for a long back-off, doubling while
//!   it keeps failing.
//! - A transient failure (5xx, timeout, transport, a garbled answer) gets
//!   a short exponential back-off with jitter.
//! - Rate limits are not remembered here: the login budget answers them.
//!
//! A success forgets the failure; so does a rotated secret (it may cure
//! `invalid_client`) and [`TokenCache::forget_failures`](crate::TokenCache::forget_failures).

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::clock::after;
use crate::error::Error;

/// Default back-off for a login failure a new login cannot cure: 2 minutes,
/// doubling while it keeps failing, up to 15 minutes.
pub const DEFAULT_LOGIN_ERROR_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(120), Duration::from_secs(15 * 60));
/// Default back-off for a transient login failure: 1 second, doubling while
/// it keeps failing, up to 30 seconds, each with jitter (between half and
/// all of it).
pub const DEFAULT_TRANSIENT_ERROR_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(30));

/// How a failed login is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A new login cannot cure it.
    Lasting,
    /// Asking again later may succeed.
    Transient,
}

impl Class {
    /// How `error` is remembered, if at all: the failures a login makes,
    /// each as [`Error::is_transient`] says (one rule for the cache and
    /// for a retry layer, so a bare 404 from a wrong identity URL is not
    /// retried every few seconds by one and given up by the other).
    pub(crate) fn of(error: &Error) -> Option<Class> {
        let made_by_a_login = matches!(
            error,
            Error::OAuth { .. }
                | Error::LoginRedirected { .. }
                | Error::InvalidResponse { .. }
                | Error::IdentityService { .. }
                | Error::Timeout { .. }
                | Error::Transport { .. }
        );
        made_by_a_login.then(|| {
            if error.is_transient() {
                Class::Transient
            } else {
                Class::Lasting
            }
        })
    }
}

/// An exponential back-off: `initial`, doubled per further failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (from 1), scaled by
    /// `jitter` (in `0.0..=1.0`: the share of the second half of the wait).
    pub(crate) fn delay(self, failures: u32, jitter: f64) -> Duration {
        let doubled = self
            .initial
            .checked_mul(1u32 << failures.saturating_sub(1).min(31))
            .unwrap_or(Duration::MAX);
        let full = doubled.min(self.max);
        full / 2 + (full / 2).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// The back-offs a cache uses, per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FailurePolicy {
    pub(crate) lasting: Backoff,
    pub(crate) transient: Backoff,
}

impl FailurePolicy {
    fn backoff(&self, class: Class) -> Backoff {
        match class {
            Class::Lasting => self.lasting,
            Class::Transient => self.transient,
        }
    }
}

/// One entry's memory of its last failed login.
#[derive(Debug, Default)]
pub(crate) struct FailureMemory {
    last: Mutex<Option<Remembered>>,
}

#[derive(Debug)]
struct Remembered {
    error: Error,
    class: Class,
    /// Failures of this class in a row.
    failures: u32,
    until: Instant,
}

impl FailureMemory {
    /// The remembered error, with the time left, while it is to be answered.
    pub(crate) fn recall(&self, now: Instant) -> Option<Error> {
        let last = self.last.lock();
        let last = last.as_ref().filter(|last| now < last.until)?;
        Some(last.error.clone().with_retry_after(last.until - now))
    }

    /// Remembers `error` if it is to be, and returns it saying how long it
    /// will be answered from memory.
    pub(crate) fn remember(&self, error: Error, now: Instant, policy: &FailurePolicy) -> Error {
        let Some(class) = Class::of(&error) else {
            return error;
        };
        let mut last = self.last.lock();
        let failures = match last.as_ref() {
            Some(previous) if previous.class == class => previous.failures.saturating_add(1),
            _ => 1,
        };
        // Jitter spreads transient retries; a lasting failure is answered
        // from memory for exactly its back-off.
        let jitter = match class {
            Class::Lasting => 1.0,
            Class::Transient => fastrand::f64(),
        };
        let wait = policy.backoff(class).delay(failures, jitter);
        // The identity service's own Retry-After (a 503's) is a floor.
        let wait = error.retry_after().map_or(wait, |theirs| wait.max(theirs));
        let error = error.with_retry_after(wait);
        *last = Some(Remembered {
            error: error.clone(),
            class,
            failures,
            until: after(now, wait),
        });
        error
    }

    /// Until when the remembered failure is answered, if one is.
    pub(crate) fn until(&self) -> Option<Instant> {
        self.last.lock().as_ref().map(|last| last.until)
    }

    /// Forgets the failure (a login succeeded, or the caller asked).
    pub(crate) fn forget(&self) {
        *self.last.lock() = None;
    }

    /// Forgets a failure that a new login could not have cured: the
    /// configuration changed (a rotated secret).
    pub(crate) fn forget_lasting(&self) {
        let mut last = self.last.lock();
        if last.as_ref().is_some_and(|l| l.class == Class::Lasting) {
            *last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OAuthErrorCode;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn oauth() -> Error {
        Error::OAuth {
            status: 400,
            code: OAuthErrorCode::InvalidGrant,
            description: None,
            uri: None,
            retry_after: None,
        }
    }

    fn policy() -> FailurePolicy {
        FailurePolicy {
            lasting: Backoff {
                initial: S(120),
                max: S(900),
            },
            transient: Backoff {
                initial: S(1),
                max: S(30),
            },
        }
    }

    #[test]
    fn backoffs_double_are_capped_and_jitter_within_the_second_half() {
        let b = Backoff {
            initial: S(1),
            max: S(30),
        };
        assert_eq!(b.delay(1, 1.0), S(1));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(2, 1.0), S(2));
        assert_eq!(b.delay(5, 1.0), S(16));
        assert_eq!(b.delay(6, 1.0), S(30));
        assert_eq!(b.delay(u32::MAX, 1.0), S(30));
        let huge = Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(huge.delay(40, 1.0), Duration::MAX);
    }

    #[test]
    fn only_failures_a_login_makes_are_remembered() {
        assert_eq!(Class::of(&oauth()), Some(Class::Lasting));
        let redirect = Error::LoginRedirected {
            status: 302,
            location: None,
            retry_after: None,
        };
        assert_eq!(Class::of(&redirect), Some(Class::Lasting));
        assert_eq!(Class::of(&Error::timeout(S(1))), Some(Class::Transient));
        // A status without an OAuth body: as `is_transient` says.
        for (status, class) in [
            (503, Class::Transient),
            (500, Class::Transient),
            (408, Class::Transient),
            (404, Class::Lasting),
            (403, Class::Lasting),
            (400, Class::Lasting),
        ] {
            let error = Error::IdentityService {
                status,
                retry_after: None,
            };
            assert_eq!(Class::of(&error), Some(class), "{status}");
        }
        for not in [
            Error::RateLimited { retry_after: None },
            Error::LoginAborted,
            Error::InvalidConfig("x".into()),
        ] {
            assert_eq!(Class::of(&not), None, "{not:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_answered_with_the_time_left_until_it_runs_out() {
        let memory = FailureMemory::default();
        let t0 = Instant::now();
        let first = memory.remember(oauth(), t0, &policy());
        let wait = first.retry_after().unwrap();
        assert_eq!(wait, S(120), "a lasting failure's back-off has no jitter");
        tokio::time::advance(S(10)).await;
        let again = memory.recall(Instant::now()).unwrap();
        assert_eq!(again.oauth_code(), Some(&OAuthErrorCode::InvalidGrant));
        assert_eq!(again.retry_after(), Some(wait - S(10)));
        tokio::time::advance(wait).await;
        assert!(memory.recall(Instant::now()).is_none());
        // Failing again doubles it.
        let second = memory.remember(oauth(), Instant::now(), &policy());
        assert_eq!(second.retry_after(), Some(S(240)));
        memory.forget();
        assert!(memory.recall(Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_services_own_retry_after_is_a_floor_and_not_remembered_errors_pass() {
        let memory = FailureMemory::default();
        let busy = Error::IdentityService {
            status: 503,
            retry_after: Some(S(20)),
        };
        let err = memory.remember(busy, Instant::now(), &policy());
        assert_eq!(err.retry_after(), Some(S(20)));
        memory.forget_lasting();
        assert!(memory.recall(Instant::now()).is_some(), "transient kept");
        let limited = Error::RateLimited {
            retry_after: Some(S(5)),
        };
        memory.forget();
        memory.remember(limited, Instant::now(), &policy());
        assert!(memory.recall(Instant::now()).is_none());
        memory.remember(oauth(), Instant::now(), &policy());
        memory.forget_lasting();
        assert!(memory.recall(Instant::now()).is_none(), "lasting forgotten");
    }
}
