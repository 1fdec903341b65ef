//! Tests of `retry`.

use std::time::Duration;

use reqwest_retry::{Retryable, RetryableStrategy};

use super::LoginRetryStrategy;
use crate::error::{EnvProblem, Error, OAuthErrorCode};

/// Every variant has a number here: a new variant does not compile
/// until it has one, and the table below must then cover it.
fn variant(error: &Error) -> usize {
    match error {
        Error::InvalidConfig(_) => 0,
        Error::InvalidTaxpayer { .. } => 1,
        Error::OAuth { .. } => 2,
        Error::RateLimited { .. } => 3,
        Error::IdentityService { .. } => 4,
        Error::LoginRedirected { .. } => 5,
        Error::InvalidResponse { .. } => 6,
        Error::Timeout { .. } => 7,
        Error::Transport { .. } => 8,
        Error::InvalidToken(_) => 9,
        Error::LoginAborted => 10,
        Error::Environment { .. } => 11,
        Error::WrongTaxpayer { .. } => 12,
        Error::LoginMiddleware { .. } => 13,
    }
}
const VARIANTS: usize = 14;

fn oauth(code: OAuthErrorCode, status: u16) -> Error {
    Error::OAuth {
        status,
        code,
        description: None,
        uri: None,
        retry_after: Some(Duration::from_secs(120)),
    }
}

fn transport() -> Error {
    // A real reqwest error, made without any I/O.
    let error = reqwest::Client::new().get("http://").build().unwrap_err();
    Error::transport(error, &[])
}

fn name(decision: Option<Retryable>) -> &'static str {
    match decision {
        Some(Retryable::Transient) => "retried",
        Some(Retryable::Fatal) => "fatal",
        None => "left to the inner strategy",
    }
}

#[test]
fn every_error_variant_is_retried_exactly_when_a_new_login_may_cure_it() {
    let secs = |s| Some(Duration::from_secs(s));
    let retried = [
        Error::RateLimited {
            retry_after: secs(5),
        },
        Error::RateLimited { retry_after: None },
        Error::IdentityService {
            status: 500,
            retry_after: None,
        },
        Error::IdentityService {
            status: 503,
            retry_after: secs(3),
        },
        Error::IdentityService {
            status: 504,
            retry_after: None,
        },
        Error::IdentityService {
            status: 408,
            retry_after: None,
        },
        Error::garbled_response("the answer is not JSON"),
        Error::timeout(Duration::from_secs(20)),
        transport(),
        Error::login_middleware(
            reqwest_middleware::Error::middleware(std::io::Error::other("a layer failed")),
            &[],
        ),
        Error::LoginAborted,
    ];
    let fatal = [
        Error::InvalidConfig("no environment".into()),
        Error::InvalidTaxpayer {
            value: "x".into(),
            reason: "not a TIN",
        },
        oauth(OAuthErrorCode::InvalidClient, 401),
        oauth(OAuthErrorCode::InvalidGrant, 400),
        oauth(OAuthErrorCode::InvalidRequest, 400),
        oauth(OAuthErrorCode::UnauthorizedClient, 400),
        oauth(OAuthErrorCode::UnsupportedGrantType, 400),
        oauth(OAuthErrorCode::InvalidScope, 400),
        oauth(OAuthErrorCode::Other("slow_down".into()), 400),
        Error::IdentityService {
            status: 404,
            retry_after: None,
        },
        Error::IdentityService {
            status: 418,
            retry_after: None,
        },
        Error::LoginRedirected {
            status: 302,
            location: None,
            retry_after: None,
        },
        Error::LoginRedirected {
            status: 308,
            location: Some("https://elsewhere.example".into()),
            retry_after: secs(120),
        },
        Error::invalid_response("token_type is not Bearer"),
        Error::InvalidToken("not a JWT".into()),
        Error::WrongTaxpayer {
            expected: "C1".into(),
            issued_for: "C2".into(),
            retry_after: secs(120),
        },
        Error::Environment {
            name: "MYINVOIS_CLIENT_ID",
            problem: EnvProblem::Missing,
        },
    ];

    let strategy = LoginRetryStrategy::new();
    let mut covered = [false; VARIANTS];
    for (errors, expected) in [(&retried[..], "retried"), (&fatal[..], "fatal")] {
        for error in errors {
            covered[variant(error)] = true;
            let failed = Err(reqwest_middleware::Error::middleware(error.clone()));
            let decision = name(strategy.handle(&failed));
            assert_eq!(decision, expected, "{error:?}");
            // Wrapped by another layer on the way out: the same decision.
            let wrapped = Err(reqwest_middleware::Error::middleware(
                reqwest_middleware::Error::middleware(error.clone()),
            ));
            assert_eq!(name(strategy.handle(&wrapped)), expected, "{error:?}");
        }
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|&v| !covered[v]).collect();
    assert!(missing.is_empty(), "variants without a row: {missing:?}");
}

#[test]
fn what_is_not_a_login_failure_is_left_to_the_inner_strategy() {
    let strategy = LoginRetryStrategy::new();
    let api = |status: u16| {
        Ok(reqwest::Response::from(
            http::Response::builder().status(status).body("").unwrap(),
        ))
    };
    // reqwest-retry's default: an API 503 is transient, a 400 fatal, a 200 nothing.
    assert_eq!(name(strategy.handle(&api(503))), "retried");
    assert_eq!(name(strategy.handle(&api(400))), "fatal");
    assert_eq!(
        name(strategy.handle(&api(200))),
        "left to the inner strategy"
    );
    let other = Err(reqwest_middleware::Error::middleware(
        std::io::Error::other("not a login"),
    ));
    assert_eq!(name(strategy.handle(&other)), "fatal");

    // With another inner strategy, that one decides them.
    struct NeverRetry;
    impl RetryableStrategy for NeverRetry {
        fn handle(
            &self,
            _: &Result<reqwest::Response, reqwest_middleware::Error>,
        ) -> Option<Retryable> {
            None
        }
    }
    let strategy = LoginRetryStrategy::with_inner(NeverRetry);
    assert_eq!(
        name(strategy.handle(&api(503))),
        "left to the inner strategy"
    );
    // ... but never a login failure.
    let busy = Error::IdentityService {
        status: 503,
        retry_after: None,
    };
    let failed = Err(reqwest_middleware::Error::middleware(busy));
    assert_eq!(name(strategy.handle(&failed)), "retried");
}
