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

    // 20 sequential calls over 3 s. Timed on tokio's (paused) clock, which
    // a wait inside the cache would move: a real-time clock would not see it.
    for i in 0..20 {
        let called = Instant::now();
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
            let called = Instant::now();
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

/// Logins made as `who` (the plain login for `None`).
async fn logins_as(identity: &Identity, who: Option<&str>) -> usize {
    identity
        .logins()
        .await
        .iter()
        .filter(|l| l.headers.get("onbehalfof").map(|v| v.to_str().unwrap()) == who)
        .count()
}

/// Whom a test calls as, and how.
fn as_taxpayer(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: String,
    taxpayer: Option<&str>,
) -> reqwest_middleware::RequestBuilder {
    let request = client.get(url);
    match taxpayer {
        Some(tin) => request.with_extension(myinvois_auth::OnBehalfOf::new(tin)),
        None => request,
    }
}

/// An API with an endpoint that answers 401 to every token (a permission
/// the client lacks) and one that accepts them, and a cache's client for it.
struct Forbidden {
    identity: Identity,
    api: crate::support::Api,
    cache: myinvois_auth::TokenCache,
    client: reqwest_middleware::ClientWithMiddleware,
    rejecting: String,
    accepting: String,
    /// Keeps the API running.
    _server: wiremock::MockServer,
}

impl Forbidden {
    async fn start(
        configure: impl FnOnce(myinvois_auth::TokenCacheBuilder) -> myinvois_auth::TokenCacheBuilder,
    ) -> Self {
        let identity = Identity::start().await;
        let (api_server, api) = crate::support::Api::start().await;
        api.reject_path("/api/v1.0/forbidden");
        let cache = configure(identity.builder()).build().unwrap();
        let client = crate::support::client(&cache, &api_server);
        Forbidden {
            rejecting: api_server.uri() + "/api/v1.0/forbidden",
            accepting: api_server.uri() + "/api/v1.0/documenttypes",
            identity,
            api,
            cache,
            client,
            _server: api_server,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_rejects_every_token_costs_at_most_one_login() {
    use reqwest::StatusCode;
    let Forbidden {
        identity,
        api,
        cache,
        client,
        rejecting,
        accepting,
        _server: _running,
        ..
    } = Forbidden::start(|builder| builder).await;
    // Three entries meet the rejecting endpoint; 20 other taxpayers log in
    // meanwhile, one every 10 s, from the budget all of them share.
    let entries = [None, Some("C8000000001"), Some("C8000000002")];
    for i in 0..30 {
        for who in entries {
            let rejected = as_taxpayer(&client, rejecting.clone(), who)
                .send()
                .await
                .unwrap();
            assert_eq!(
                rejected.status(),
                StatusCode::UNAUTHORIZED,
                "call {i} as {who:?}"
            );
            let accepted = as_taxpayer(&client, accepting.clone(), who)
                .send()
                .await
                .unwrap();
            assert_eq!(accepted.status(), StatusCode::OK, "call {i} as {who:?}");
        }
        if i < 20 {
            let other = format!("C70000000{i:02}");
            let served = as_taxpayer(&client, accepting.clone(), Some(&other))
                .send()
                .await;
            assert_eq!(
                served.unwrap().status(),
                StatusCode::OK,
                "{other} was refused"
            );
        }
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    for who in entries {
        let logins = logins_as(&identity, who).await;
        assert!(logins <= 2, "{logins} logins as {who:?}");
    }
    assert_eq!(cache.stats().logins_refused_by_budget, 0);

    // Right after, a real revocation: exactly one login, and the call succeeds.
    let before = logins_as(&identity, None).await;
    let current = cache.token().await.unwrap();
    api.revoke(current.secret());
    let response = client.get(accepting.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(logins_as(&identity, None).await, before + 1);
    // And the rejecting endpoint still costs nothing.
    let rejected = client.get(rejecting).send().await.unwrap();
    assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(logins_as(&identity, None).await, before + 1);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_keeps_rejecting_costs_one_login_however_long_it_lasts() {
    use reqwest::StatusCode;
    let Forbidden {
        identity,
        client,
        rejecting,
        accepting,
        _server: _running,
        ..
    } = Forbidden::start(|builder| builder.refresh_before(Duration::ZERO)).await;
    // Once a minute for 50 minutes, well past the 10 minutes of
    // rejection_memory: what was learned lasts while the rejections do.
    for i in 0..50 {
        let r = client.get(&rejecting).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "call {i}");
        let r = client.get(&accepting).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "call {i}");
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    // One cold login, one to learn.
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_rejecting_every_token_of_the_client_costs_one_login_not_one_per_taxpayer() {
    use reqwest::StatusCode;
    let Forbidden {
        identity,
        api,
        cache,
        client,
        rejecting,
        accepting,
        _server: _running,
        ..
    } = Forbidden::start(|builder| builder).await;
    // 12 taxpayers warm (a full window of the budget) ...
    let taxpayers: Vec<String> = (0..12).map(|i| format!("C80000000{i:02}")).collect();
    for tin in &taxpayers {
        let r = as_taxpayer(&client, accepting.clone(), Some(tin))
            .send()
            .await;
        assert_eq!(r.unwrap().status(), StatusCode::OK);
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    // ... all meet the endpoint the client lacks a permission for.
    for tin in &taxpayers {
        let r = as_taxpayer(&client, rejecting.clone(), Some(tin))
            .send()
            .await;
        assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED, "{tin}");
    }
    // The first learned it with one login; the others spent none.
    assert_eq!(identity.login_count().await, 13);
    // A healthy taxpayer is served at once; every warm one still is.
    let before = Instant::now();
    cache.token_on_behalf_of("C7000000001").await.unwrap();
    assert_eq!(Instant::now(), before);
    for tin in &taxpayers {
        let r = as_taxpayer(&client, accepting.clone(), Some(tin))
            .send()
            .await;
        assert_eq!(r.unwrap().status(), StatusCode::OK, "{tin}");
    }
    // Once the endpoint accepts a token, a 401 there is about the token
    // again: a revocation is recovered with one login.
    api.allow_path("/api/v1.0/forbidden");
    let r = as_taxpayer(&client, rejecting.clone(), Some(&taxpayers[0]))
        .send()
        .await;
    assert_eq!(r.unwrap().status(), StatusCode::OK);
    let revoked = cache.token_on_behalf_of(&taxpayers[1]).await.unwrap();
    api.revoke(revoked.secret());
    let r = as_taxpayer(&client, rejecting.clone(), Some(&taxpayers[1]))
        .send()
        .await;
    assert_eq!(r.unwrap().status(), StatusCode::OK);
    assert_eq!(identity.login_count().await, 15);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_is_replaced_within_the_memory_while_another_taxpayer_lacks_a_permission() {
    use reqwest::StatusCode;
    let Forbidden {
        identity,
        api,
        cache,
        client,
        accepting,
        _server: _running,
        ..
    } = Forbidden::start(|builder| builder).await;
    let signing = accepting.replace("documenttypes", "signing");
    let path = "/api/v1.0/signing";
    // X has not granted the permission /signing needs; A has.
    let (x, a) = ("C8000000001", "C8000000002");
    api.reject_path_for(path, x);
    for tin in [x, a] {
        let r = as_taxpayer(&client, accepting.clone(), Some(tin))
            .send()
            .await;
        assert_eq!(r.unwrap().status(), StatusCode::OK);
    }
    // X learns /signing rejects it; then A's token is really revoked.
    for _ in 0..2 {
        let r = as_taxpayer(&client, signing.clone(), Some(x)).send().await;
        assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    api.revoke(cache.token_on_behalf_of(a).await.unwrap().secret());
    // Both call /signing once a minute; A is served again within the
    // rejection memory (10 minutes), X's 401s cost nothing.
    let mut served_at = None;
    for minute in 1..=30 {
        let r = as_taxpayer(&client, signing.clone(), Some(x)).send().await;
        assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
        let r = as_taxpayer(&client, signing.clone(), Some(a)).send().await;
        if r.unwrap().status() == StatusCode::OK {
            served_at = Some(minute);
            break;
        }
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    assert!(
        served_at.is_some_and(|m| m <= 11),
        "A served at minute {served_at:?}"
    );
    // 2 cold, 1 for X to learn, 1 for A's revoked token.
    assert_eq!(identity.login_count().await, 4);
}

/// An endpoint that answers 401 to every token, except that a rate limiter
/// in front of it answers every third request with 429 first.
struct RejectingBehindALimiter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl wiremock::Respond for RejectingBehindALimiter {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n % 3 == 2 {
            ResponseTemplate::new(429)
        } else {
            ResponseTemplate::new(401)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn answers_a_gateway_gives_before_the_token_check_do_not_unlearn_a_rejection() {
    let identity = Identity::start().await;
    let api = wiremock::MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(RejectingBehindALimiter(Default::default()))
        .mount(&api)
        .await;
    let cache = identity.cache();
    let client = crate::support::client(&cache, &api);
    for i in 0..20 {
        let status = client.get(api.uri()).send().await.unwrap().status();
        assert!(status == 401 || status == 429, "call {i}: {status}");
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    // One cold login, one to learn: a 429 (or a 5xx) says nothing about the
    // token, so it does not make the next 401 look like a revocation.
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test]
async fn a_401_on_a_streaming_request_retires_its_token_so_the_next_call_logs_in() {
    use crate::support::{bearers, client, Api};
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let cache = identity.cache();
    let client = client(&cache, &api_server);
    let first = cache.token().await.unwrap();
    api.revoke(first.secret());
    let body = reqwest::Body::wrap(http_body_util::Full::new(&b"streamed"[..]));
    let response = client
        .post(api_server.uri())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    // Not retried (the body is gone), but the token is retired.
    let next = client.get(api_server.uri()).send().await.unwrap();
    assert_eq!(next.status(), reqwest::StatusCode::OK);
    let seen = bearers(&api_server).await;
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1], "the next call carried the rejected token");
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test(start_paused = true)]
async fn a_caller_joining_a_queued_refresh_returns_within_max_login_wait() {
    let identity = Identity::start().await;
    let cache = identity
        .builder()
        .login_rate_limit(1, Duration::from_secs(60))
        .refresh_before(Duration::from_secs(300))
        .build()
        .unwrap();
    let first = cache.token().await.unwrap();
    // In use (not idle) ...
    tokio::time::advance(Duration::from_secs(3000)).await;
    cache.token().await.unwrap();
    // ... another taxpayer takes the slot just before the refresh window
    // opens (300 s before the token stops being served, at 3598 s), so the
    // refresh queues for the next slot, a minute away.
    tokio::time::advance(Duration::from_secs(297)).await;
    let other = cache.token_on_behalf_of("C1111111111").await;
    assert!(
        other.is_ok(),
        "{other:?} {:?} logins {}",
        cache.stats(),
        identity.login_count().await
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(cache.token().await.unwrap().same_token(&first)); // starts the refresh
    crate::support::settle_until(|| async { cache.stats().refreshes_ahead == 1 }).await;
    for _ in 0..10 {
        tokio::task::yield_now().await; // on to its wait for a slot
    }
    // The API rejects the token: the caller now has none, and joins the
    // queued refresh. It must not wait for that refresh's slot.
    cache.invalidate(&first);
    let called = Instant::now();
    let err = cache.token().await.unwrap_err();
    let waited = Instant::now() - called;
    assert!(waited <= Duration::from_secs(10), "waited {waited:?}");
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    // The refresh goes on and brings a token when its slot comes.
    tokio::time::advance(Duration::from_secs(60)).await;
    crate::support::settle_until(|| async { cache.token().await.is_ok() }).await;
    assert_eq!(identity.login_count().await, 3);
}

/// A store in which the entry's lock looks held by another process of the
/// fleet until the instant `until` holds (that process then gives up
/// without a token).
fn locked_until() -> (
    std::sync::Arc<crate::support::Hooked>,
    std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
) {
    let until = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let held = std::sync::Arc::clone(&until);
    let store = crate::support::Hooked::on_load(move |mut loaded| {
        if let Some(until) = *held.lock().unwrap() {
            let now = Instant::now();
            if now < until {
                loaded.locked = Some(until - now);
            }
        }
        loaded
    });
    (std::sync::Arc::new(store), until)
}

#[tokio::test(start_paused = true)]
async fn max_login_wait_bounds_a_caller_while_another_process_holds_the_login() {
    let identity = Identity::start().await;
    let (store, until) = locked_until();
    let cache = identity
        .builder()
        .token_store(store)
        .max_login_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    // Another process logs in for 24 s (a slow identity service).
    *until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(24));
    let called = Instant::now();
    let err = cache.token().await.unwrap_err();
    let waited = called.elapsed();
    assert!(waited <= Duration::from_secs(10), "waited {waited:?}");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // The login goes on, and its token is taken when it comes.
    tokio::time::advance(Duration::from_secs(20)).await;
    crate::support::settle_until(|| async { cache.token().await.is_ok() }).await;
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test(start_paused = true)]
async fn giving_up_on_another_processs_login_is_not_remembered_as_a_failure() {
    let identity = Identity::start().await;
    let (store, until) = locked_until();
    let cache = identity.builder().token_store(store).build().unwrap();
    // Another process holds the entry's login for 66 s, past this
    // process's lock allowance (no login timeout: 60 s, plus 5).
    let t0 = Instant::now();
    *until.lock().unwrap() = Some(t0 + Duration::from_secs(66));
    assert!(cache.token().await.is_err(), "the caller's bound");
    tokio::time::sleep_until(t0 + Duration::from_millis(65_200)).await;
    // Its login gave up at 65 s; no login failed. The next caller starts
    // another at once (not a remembered Timeout) and gets a token.
    cache.token().await.unwrap();
    assert_eq!(cache.stats().answered_from_memory, 0);
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test(start_paused = true)]
async fn max_login_wait_bounds_a_caller_whose_login_waits_for_the_fleet_then_for_a_slot() {
    let identity = Identity::start().await;
    let (store, until) = locked_until();
    let cache = identity
        .builder()
        .token_store(store)
        .login_rate_limit(1, Duration::from_secs(20))
        .max_login_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let t0 = Instant::now();
    // Another taxpayer takes the only slot of the next 20 s.
    cache.token_on_behalf_of("C1111111111").await.unwrap();
    // Another process holds this entry's login for 12 s, then gives up.
    *until.lock().unwrap() = Some(t0 + Duration::from_secs(12));
    tokio::time::advance(Duration::from_secs(1)).await;
    let first = tokio::spawn({
        let cache = cache.clone();
        async move {
            let called = Instant::now();
            let result = cache.token().await;
            (result, called.elapsed())
        }
    });
    // A second caller joins 10.5 s in: the login's deadline becomes its own.
    tokio::time::sleep_until(t0 + Duration::from_millis(10_500)).await;
    let second = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    let (result, waited) = first.await.unwrap();
    assert!(waited <= Duration::from_secs(10), "waited {waited:?}");
    assert!(result.is_err(), "{result:?}");
    let _ = second.await.unwrap();
}

#[tokio::test]
async fn a_login_task_that_panics_strands_nothing() {
    let identity = Identity::start().await;
    let cache = identity
        .builder()
        // A store that panics in `save` the first time: the login task
        // dies holding the entry's lock.
        .token_store(std::sync::Arc::new({
            let panicked = std::sync::atomic::AtomicBool::new(false);
            crate::support::Hooked::before_save(move || {
                if !panicked.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    panic!("a store that panics, for the test");
                }
            })
        }))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert!(matches!(err, Error::LoginAborted), "{err:?}");
    // The next caller logs in at once: no lock left behind, nothing in flight.
    let started = std::time::Instant::now();
    cache.token().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(identity.login_count().await, 2);
}

#[test]
fn a_runtime_dropped_mid_login_strands_nothing() {
    // The identity service lives on its own runtime, which outlives both
    // of the cache's; it answers the first login after 30 s.
    let services = tokio::runtime::Runtime::new().unwrap();
    let identity = services.block_on(async {
        let identity = Identity::empty().await;
        Mock::given(method("POST"))
            .and(path("/connect/token"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
            .up_to_n_times(1)
            .mount(&identity.server)
            .await;
        identity.issue(3600, Duration::ZERO).await;
        identity
    });
    let cache = identity.cache();

    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        let login = tokio::spawn({
            let cache = cache.clone();
            async move { cache.token().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!login.is_finished());
    });
    drop(first); // mid-login: the task is dropped holding the entry's lock

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let token = second.block_on(cache.token());
    assert!(token.is_ok(), "{token:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the next login waited {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn absurd_retry_afters_refuse_every_caller_and_panic_nothing() {
    for value in ["18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let identity = Identity::empty().await;
        identity
            .answer(ResponseTemplate::new(429).insert_header("retry-after", value))
            .await;
        let cache = identity.cache();
        let mut set = JoinSet::new();
        for i in 0..10 {
            let cache = cache.clone();
            set.spawn(async move { cache.token_on_behalf_of(format!("C{i:010}")).await });
        }
        for result in set.join_all().await {
            let err = result.unwrap_err();
            assert!(
                matches!(err, Error::RateLimited { retry_after: Some(d) } if d <= myinvois_auth::MAX_RETRY_AFTER),
                "{value}: {err:?}"
            );
        }
        // Later callers too, at once, and nothing more is sent.
        let sent = identity.login_count().await;
        let err = cache.token().await.unwrap_err();
        assert!(matches!(err, Error::RateLimited { .. }), "{value}: {err:?}");
        assert_eq!(identity.login_count().await, sent);
    }
}

#[tokio::test(start_paused = true)]
async fn extreme_configured_durations_saturate_instead_of_panicking() {
    let identity = Identity::start().await;
    let cache = identity
        .builder()
        .max_login_wait(Duration::MAX)
        .login_rate_limit(1, Duration::MAX)
        .refresh_before(Duration::MAX)
        .refresh_retry_after(Duration::MAX)
        .idle_after(Duration::MAX)
        .login_error_backoff(Duration::MAX, Duration::MAX)
        .transient_error_backoff(Duration::MAX, Duration::MAX)
        .rejection_memory(Duration::MAX)
        .login_timeout(Duration::MAX)
        .build()
        .unwrap();
    let token = cache.token().await.unwrap();
    tokio::time::advance(Duration::from_secs(1900)).await;
    assert!(cache.token().await.unwrap().same_token(&token));
    // The budget (1 per "forever") refuses the next login at once.
    let err = cache.token_on_behalf_of("C1111111111").await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn no_token_is_sent_in_its_last_second_when_the_server_truncates_issue_times() {
    use crate::sim::{Issuing, SimIdentity};
    // 20 s tokens whose expiry the server counts from the issue time cut to
    // the second (seconds starting 0.37 s before now), and a budget too
    // small to refresh them ahead: tokens are used to their very end.
    let issuing = Issuing {
        lifetime: Duration::from_secs(20),
        truncate_from: Some(Instant::now() - Duration::from_millis(370)),
        delay: Duration::ZERO,
    };
    let period = Duration::from_secs(10);
    let sim = SimIdentity::start_issuing(2, period, issuing).await;
    let cache = myinvois_auth::TokenCache::builder(myinvois_auth::Credentials::new(
        crate::support::CLIENT_ID,
        crate::support::SECRET,
    ))
    .identity_url(&sim.uri)
    .without_login_timeout()
    .login_rate_limit(2, period)
    .build()
    .unwrap();
    let mut set = JoinSet::new();
    for i in 0..6 {
        let (cache, sim) = (cache.clone(), sim.clone());
        set.spawn(async move {
            let tin = format!("C{i:010}");
            let (mut sent, mut expired) = (0, 0);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(300) {
                if let Ok(token) = cache.token_on_behalf_of(&tin).await {
                    sent += 1;
                    if !sim.accepts(token.secret(), Some(&tin)) {
                        expired += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(97)).await;
            }
            (sent, expired)
        });
    }
    let (mut sent, mut expired) = (0, 0);
    for (s, e) in set.join_all().await {
        sent += s;
        expired += e;
    }
    assert_eq!(sim.refused(), 0, "the identity service answered 429");
    assert!(sent > 5000, "only {sent} calls were made with a token");
    assert_eq!(
        expired, 0,
        "{expired} of {sent} calls carried a token the server held expired"
    );
}
