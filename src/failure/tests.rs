//! Tests of `failure`.

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
    assert!(!memory.forget_lasting());
    assert!(memory.recall(Instant::now()).is_some(), "transient kept");
    let limited = Error::RateLimited {
        retry_after: Some(S(5)),
    };
    memory.forget();
    memory.remember(limited, Instant::now(), &policy());
    assert!(memory.recall(Instant::now()).is_none());
    memory.remember(oauth(), Instant::now(), &policy());
    assert!(memory.forget_lasting());
    assert!(memory.recall(Instant::now()).is_none(), "lasting forgotten");
}
