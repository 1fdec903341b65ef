//! The cache: keys, single flight, refresh ahead of expiry, invalidation.

use std::sync::Arc;
use std::time::Duration;

use myinvois_auth::{Error, TokenCache};
use tokio::task::JoinSet;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::{settle_until, Identity};

async fn burst(
    cache: &TokenCache,
    callers: usize,
) -> Vec<Result<myinvois_auth::AccessToken, Error>> {
    let mut set = JoinSet::new();
    for _ in 0..callers {
        let cache = cache.clone();
        set.spawn(async move { cache.token().await });
    }
    set.join_all().await
}

#[tokio::test]
async fn entries_are_per_taxpayer_and_never_cross() {
    let identity = Identity::start().await;
    let cache = identity.cache();
    let plain = cache.token().await.unwrap();
    let a = cache.token_on_behalf_of("C1111111111").await.unwrap();
    let b = cache.token_on_behalf_of("C2222222222").await.unwrap();
    assert!(plain.secret().ends_with("-1"));
    assert!(a.secret().ends_with("-C1111111111"), "{}", a.secret());
    assert!(b.secret().ends_with("-C2222222222"), "{}", b.secret());
    // Served again from the cache, each from its own entry.
    assert!(cache.token().await.unwrap().same_token(&plain));
    assert!(cache
        .token_on_behalf_of("C1111111111")
        .await
        .unwrap()
        .same_token(&a));
    assert!(cache
        .token_on_behalf_of("C2222222222")
        .await
        .unwrap()
        .same_token(&b));
    assert_eq!(identity.login_count().await, 3);
}

#[tokio::test]
async fn caches_with_another_scope_or_client_do_not_share_tokens() {
    let identity = Identity::start().await;
    let one = identity.cache();
    let scoped = identity.builder().scope("InvoicingAPI").build().unwrap();
    let t1 = one.token().await.unwrap();
    let t2 = scoped.token().await.unwrap();
    assert!(!t1.same_token(&t2));
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test]
async fn clones_share_entries() {
    let identity = Identity::start().await;
    let cache = identity.cache();
    let token = cache.token().await.unwrap();
    let clone = cache.clone();
    assert!(clone.token().await.unwrap().same_token(&token));
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_of_1000_callers_makes_exactly_one_login() {
    let identity = Identity::issuing(3600, Duration::from_millis(100)).await;
    let cache = identity.cache();
    let results = burst(&cache, 1000).await;
    let first = results[0].as_ref().unwrap().clone();
    for r in &results {
        assert!(r.as_ref().unwrap().same_token(&first));
    }
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_failing_identity_service_sends_one_request_and_all_get_the_error() {
    let identity = Identity::empty().await;
    identity
        .answer(ResponseTemplate::new(503).set_delay(Duration::from_millis(100)))
        .await;
    let cache = identity.cache();
    let results = burst(&cache, 200).await;
    for r in results {
        assert!(
            matches!(r, Err(Error::IdentityService { status: 503, .. })),
            "{r:?}"
        );
    }
    assert_eq!(identity.login_count().await, 1);
    // The failure is remembered for a short, jittered back-off: the next
    // caller gets it at once, with the time left, and nothing is sent ...
    let err = cache.token().await.unwrap_err();
    let left = err.retry_after().unwrap();
    assert!(left <= Duration::from_secs(1), "{left:?}");
    assert_eq!(identity.login_count().await, 1);
    // ... then the next caller tries again.
    tokio::time::sleep(left).await;
    assert!(cache.token().await.is_err());
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_taxpayers_slow_login_does_not_delay_another_taxpayer() {
    let identity = Identity::empty().await;
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .and(header("onbehalfof", "C1111111111"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&identity.server)
        .await;
    identity.issue(3600, Duration::ZERO).await;
    // About entries, not the login budget (which would pace the logins).
    let cache = identity
        .builder()
        .without_login_rate_limit()
        .build()
        .unwrap();
    let fast = cache.token_on_behalf_of("C2222222222").await.unwrap();
    cache.token().await.unwrap();

    let slow = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token_on_behalf_of("C1111111111").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    for _ in 0..100 {
        assert!(cache
            .token_on_behalf_of("C2222222222")
            .await
            .unwrap()
            .same_token(&fast));
        assert!(cache.token().await.is_ok());
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!slow.is_finished());
    slow.abort();
}

#[tokio::test(start_paused = true)]
async fn a_token_is_refreshed_ahead_of_expiry_while_callers_keep_using_it() {
    let identity = Identity::issuing(3600, Duration::from_millis(300)).await;
    let cache = identity
        .builder()
        .refresh_before(Duration::from_secs(300))
        .build()
        .unwrap();
    let first = cache.token().await.unwrap();

    // Just before the refresh window: served from cache, no login.
    tokio::time::advance(Duration::from_secs(3299)).await;
    assert!(cache.token().await.unwrap().same_token(&first));
    assert_eq!(identity.login_count().await, 1);

    // Inside the window: the old token comes back at once (the identity
    // service takes 300 ms of real time to answer), and one refresh starts.
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..50 {
        assert!(cache.token().await.unwrap().same_token(&first));
    }
    settle_until(|| async { !cache.token().await.unwrap().same_token(&first) }).await;
    assert_eq!(identity.login_count().await, 2);
    let second = cache.token().await.unwrap();
    assert!(second.expires_at() > first.expires_at());
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_valid_token_retries_later_and_never_serves_it_expired() {
    let identity = Identity::issuing(3600, Duration::ZERO).await;
    let cache = identity
        .builder()
        .refresh_before(Duration::from_secs(300))
        .refresh_retry_after(Duration::from_secs(10))
        .build()
        .unwrap();
    let first = cache.token().await.unwrap();

    // The identity service goes down.
    identity.server.reset().await;
    identity.answer(ResponseTemplate::new(503)).await;

    tokio::time::advance(Duration::from_secs(3301)).await;
    assert!(cache.token().await.unwrap().same_token(&first));
    settle_until(|| async { identity.login_count().await == 1 }).await;
    // Within the retry interval: no new attempt, the token is still served.
    tokio::time::advance(Duration::from_secs(5)).await;
    for _ in 0..20 {
        assert!(cache.token().await.unwrap().same_token(&first));
    }
    tokio::task::yield_now().await;
    assert_eq!(identity.login_count().await, 1);
    // After it: one more attempt.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(cache.token().await.unwrap().same_token(&first));
    settle_until(|| async { identity.login_count().await == 2 }).await;

    // At expiry the token is no longer served: the caller gets the login's error.
    tokio::time::advance(Duration::from_secs(300)).await;
    let err = cache.token().await.unwrap_err();
    assert!(
        matches!(err, Error::IdentityService { status: 503, .. }),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_replaced_by_one_login_for_all_waiting_callers() {
    let identity = Identity::issuing(3600, Duration::from_millis(50)).await;
    let cache = identity
        .builder()
        .refresh_before(Duration::ZERO)
        .build()
        .unwrap();
    let first = cache.token().await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    let results = burst(&cache, 100).await;
    let second = results[0].as_ref().unwrap().clone();
    assert!(!second.same_token(&first));
    for r in results {
        assert!(r.unwrap().same_token(&second));
    }
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test(start_paused = true)]
async fn a_short_lived_token_is_refreshed_at_half_its_life_not_continuously() {
    let identity = Identity::issuing(60, Duration::ZERO).await;
    let cache = identity
        .builder()
        .refresh_before(Duration::from_secs(300))
        .build()
        .unwrap();
    let first = cache.token().await.unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(cache.token().await.unwrap().same_token(&first));
    tokio::task::yield_now().await;
    assert_eq!(identity.login_count().await, 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    cache.token().await.unwrap();
    settle_until(|| async { identity.login_count().await == 2 }).await;
}

#[tokio::test]
async fn invalidate_forgets_the_current_token_but_ignores_an_older_one() {
    let identity = Identity::start().await;
    let cache = identity.cache();
    let first = cache.token().await.unwrap();
    assert!(cache.invalidate(&first));
    let second = cache.token().await.unwrap();
    assert!(!second.same_token(&first));
    assert_eq!(identity.login_count().await, 2);

    // Naming the older token again changes nothing.
    assert!(!cache.invalidate(&first));
    assert!(cache.token().await.unwrap().same_token(&second));
    assert_eq!(identity.login_count().await, 2);

    // A token of another cache is never "current" here.
    let other = identity.cache().token().await.unwrap();
    assert!(!cache.invalidate(&other));
    assert!(cache.token().await.unwrap().same_token(&second));

    // Per taxpayer too.
    let theirs = cache.token_on_behalf_of("C1111111111").await.unwrap();
    assert!(cache.invalidate(&theirs));
    assert!(cache.token().await.unwrap().same_token(&second));
    let theirs2 = cache.token_on_behalf_of("C1111111111").await.unwrap();
    assert!(!theirs2.same_token(&theirs));
}

#[tokio::test]
async fn an_invalid_taxpayer_is_a_typed_error_and_sends_nothing() {
    let identity = Identity::start().await;
    let cache = identity.cache();
    for bad in ["", "C1\r\nx: y", "C 1", "a:b:c"] {
        let err = cache.token_on_behalf_of(bad).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidTaxpayer { .. }),
            "{bad:?}: {err:?}"
        );
    }
    assert_eq!(identity.login_count().await, 0);
}

#[test]
fn using_the_cache_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let identity_uri = "http://127.0.0.1:9";
    let cache = TokenCache::builder(myinvois_auth::Credentials::new("id", "secret"))
        .identity_url(identity_uri)
        .build()
        .unwrap();
    let cache = Arc::new(cache);
    let result = futures_lite_block_on(async move { cache.token().await });
    assert!(matches!(result, Err(Error::InvalidConfig(_))), "{result:?}");
}

/// A minimal executor that is not tokio.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    for _ in 0..1000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("future did not finish");
}

#[tokio::test(start_paused = true)]
async fn a_token_that_expired_while_its_login_was_in_flight_is_not_served() {
    let identity = Identity::issuing(60, Duration::from_millis(200)).await;
    let cache = identity.cache();
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    settle_until(|| async { identity.login_count().await == 1 }).await;
    // The first login's 60 s token is dead by the time its answer arrives.
    tokio::time::advance(Duration::from_secs(61)).await;
    let token = waiter.await.unwrap().unwrap();
    assert!(token.secret().ends_with("-2"), "{}", token.secret());
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test(start_paused = true)]
async fn a_successful_refresh_does_not_delay_the_next_one() {
    // 20 s tokens refreshed 10 s ahead, with a retry pause longer than that.
    let identity = Identity::issuing(20, Duration::ZERO).await;
    let cache = identity
        .builder()
        .refresh_before(Duration::from_secs(10))
        .refresh_retry_after(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut token = cache.token().await.unwrap();
    for logins in 2..=4 {
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(cache.token().await.unwrap().same_token(&token));
        settle_until(|| async { identity.login_count().await == logins }).await;
        settle_until(|| async { !cache.token().await.unwrap().same_token(&token) }).await;
        token = cache.token().await.unwrap();
    }
}

/// A reqwest builder that cannot be built: a "preconfigured TLS" that is
/// no TLS configuration.
fn unbuildable() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(42u8)
}

#[tokio::test(start_paused = true)]
async fn a_lazy_login_client_is_built_by_the_first_login_that_needs_it() {
    use crate::support::{Hooked, Identity};
    use myinvois_auth::{Loaded, StoredToken};
    let identity = Identity::start().await;
    // Built by build(): its error is build()'s.
    let eager = identity.builder().http_client(unbuildable()).build();
    assert!(matches!(eager, Err(Error::InvalidConfig(_))), "{eager:?}");
    // Built by the first login: a stored token is served without it ...
    let store = Hooked::on_load(|_| {
        let now = chrono::Utc::now();
        Loaded::new(
            Some(StoredToken::new(
                "STOREDTOKEN",
                now,
                now + chrono::Duration::hours(1),
                Duration::from_secs(3600),
            )),
            None,
        )
    });
    let lazy = identity
        .builder()
        .http_client(unbuildable())
        .lazy_login_client()
        .token_store(std::sync::Arc::new(store))
        .build()
        .expect("the client is not built yet");
    assert_eq!(lazy.token().await.unwrap().secret(), "STOREDTOKEN");
    // ... and a login that needs it fails with build()'s error, sending
    // nothing.
    let lazy = identity
        .builder()
        .http_client(unbuildable())
        .lazy_login_client()
        .build()
        .unwrap();
    let err = lazy.token().await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    assert_eq!(identity.login_count().await, 0);
}
