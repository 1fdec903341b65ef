//! Faults must not spend the login budget: failed logins are remembered,
//! 401s no new token cures are contained, and nothing strands a caller.

use std::time::Duration;

use myinvois_auth::{Error, OAuthErrorCode};
use tokio::task::JoinSet;
use tokio::time::Instant;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::Identity;

const BAD: &str = "C9999999999";

/// An identity service that refuses `BAD` with `invalid_grant` (it has not
/// authorised this intermediary) and issues tokens to everyone else.
async fn refusing_one_taxpayer() -> Identity {
    let identity = Identity::empty().await;
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .and(header("onbehalfof", BAD))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": "the taxpayer has not authorised this intermediary",
        })))
        .mount(&identity.server)
        .await;
    identity.issue(3600, Duration::ZERO).await;
    identity
}

async fn logins_for(identity: &Identity, taxpayer: &str) -> usize {
    identity
        .logins()
        .await
        .iter()
        .filter(|l| l.headers.get("onbehalfof").is_some_and(|v| v == taxpayer))
        .count()
}

fn assert_invalid_grant(err: &Error) {
    assert_eq!(
        err.oauth_code(),
        Some(&OAuthErrorCode::InvalidGrant),
        "{err:?}"
    );
    assert!(
        err.retry_after().is_some_and(|d| d > Duration::ZERO),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_taxpayer_whose_login_fails_is_answered_from_memory_without_spending_the_budget() {
    let identity = refusing_one_taxpayer().await;
    let cache = identity.cache();
    let started = Instant::now();

    // 20 sequential calls over 3 s.
    for i in 0..20 {
        let called = std::time::Instant::now();
        let err = cache.token_on_behalf_of(BAD).await.unwrap_err();
        assert_invalid_grant(&err);
        if i > 0 {
            assert!(called.elapsed() < Duration::from_millis(100), "call {i}");
        }
        tokio::time::advance(Duration::from_millis(150)).await;
    }
    // 20 concurrent calls, then on to 6 s.
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let cache = cache.clone();
        set.spawn(async move {
            let called = std::time::Instant::now();
            (cache.token_on_behalf_of(BAD).await, called.elapsed())
        });
    }
    for (result, took) in set.join_all().await {
        assert_invalid_grant(&result.unwrap_err());
        assert!(took < Duration::from_millis(100), "{took:?}");
    }
    tokio::time::sleep_until(started + Duration::from_secs(6)).await;
    let requests = logins_for(&identity, BAD).await;
    assert!(
        requests <= 3,
        "{requests} identity requests for the failing taxpayer"
    );
    assert_eq!(cache.stats().answered_from_memory, 39);

    // A healthy taxpayer's cold login right after is not delayed.
    let before = Instant::now();
    cache.token_on_behalf_of("C1111111111").await.unwrap();
    assert_eq!(Instant::now(), before, "the healthy login waited");
}

#[tokio::test(start_paused = true)]
async fn a_remembered_failure_ends_after_its_backoff_grows_while_it_lasts_and_can_be_forgotten() {
    let identity = refusing_one_taxpayer().await;
    let cache = identity
        .builder()
        .login_error_backoff(Duration::from_secs(60), Duration::from_secs(300))
        .build()
        .unwrap();
    let first = cache.token_on_behalf_of(BAD).await.unwrap_err();
    let wait = first.retry_after().unwrap();
    assert!(
        wait >= Duration::from_secs(30) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    tokio::time::advance(wait).await;
    // Asked again once it ran out: one more login, and a longer back-off.
    let second = cache.token_on_behalf_of(BAD).await.unwrap_err();
    assert_eq!(logins_for(&identity, BAD).await, 2);
    assert!(
        second.retry_after().unwrap() >= Duration::from_secs(60),
        "{second:?}"
    );
    // The taxpayer authorises us; the operator says so.
    cache.forget_failures();
    cache.token_on_behalf_of(BAD).await.unwrap_err();
    assert_eq!(logins_for(&identity, BAD).await, 3);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_gets_a_short_jittered_backoff_and_a_success_clears_it() {
    let identity = Identity::empty().await;
    identity.answer(ResponseTemplate::new(503)).await;
    let cache = identity.cache();
    let err = cache.token().await.unwrap_err();
    assert!(
        matches!(err, Error::IdentityService { status: 503, .. }),
        "{err:?}"
    );
    let wait = err.retry_after().unwrap();
    assert!(
        wait >= Duration::from_millis(500) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    // Within it: the same error at once, nothing sent.
    let again = cache.token().await.unwrap_err();
    assert!(matches!(again, Error::IdentityService { status: 503, .. }));
    assert_eq!(identity.login_count().await, 1);
    // After it: asked again, and the service has recovered.
    tokio::time::advance(wait).await;
    identity.server.reset().await;
    identity.issue(3600, Duration::ZERO).await;
    cache.token().await.unwrap();
    // A later failure starts from the short back-off again (no memory left).
    assert!(cache.stats().answered_from_memory >= 1);
}
