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
                | Error::LoginMiddleware { .. }
                | Error::WrongTaxpayer { .. }
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
    /// configuration changed (a rotated secret). Returns whether one was.
    pub(crate) fn forget_lasting(&self) -> bool {
        let mut last = self.last.lock();
        let lasting = last.as_ref().is_some_and(|l| l.class == Class::Lasting);
        if lasting {
            *last = None;
        }
        lasting
    }
}

#[cfg(test)]
mod tests;
