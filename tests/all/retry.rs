//! reqwest-retry stacked with the auth middleware (cargo feature `retry`):
//! transient login failures are retried, no sooner than their
//! `retry_after`; OAuth errors never; and `Error::find_in` finds the login's
//! error whatever wraps it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use myinvois_auth::{retry, AuthMiddleware, Error, OAuthErrorCode, TokenCache};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{RetryError, RetryTransientMiddleware};
use reqwest_tracing::TracingMiddleware;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{Api, Identity};

/// Quick retries, so that only the auth middleware's own wait can make a
/// retry respect a failure's `retry_after`.
fn quick_policy(retries: u32) -> ExponentialBackoff {
    ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(10), Duration::from_millis(20))
        .build_with_max_retries(retries)
}

fn auth(cache: &TokenCache, api: &MockServer) -> AuthMiddleware {
    AuthMiddleware::with_api_url(cache.clone(), api.uri()).expect("loopback API URL")
}

/// The documented order: tracing outermost, then retry, then auth.
fn documented_stack(cache: &TokenCache, api: &MockServer, retries: u32) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(TracingMiddleware::default())
        .with(retry::middleware(quick_policy(retries)))
        .with(auth(cache, api))
        .build()
}

/// The other order: auth outside retry (retry then only sees API calls).
fn auth_outside_retry(cache: &TokenCache, api: &MockServer, retries: u32) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(TracingMiddleware::default())
        .with(auth(cache, api))
        .with(RetryTransientMiddleware::new_with_policy(quick_policy(
            retries,
        )))
        .build()
}

/// Answers the first login with `first`, then issues tokens; records when
/// each login arrived.
#[derive(Clone)]
struct FirstThenTokens {
    first: ResponseTemplate,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Respond for FirstThenTokens {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        if arrivals.len() == 1 {
            return self.first.clone();
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": format!("TOKENVALUE-{}", arrivals.len()),
            "token_type": "Bearer",
            "expires_in": 3600,
        }))
    }
}

async fn identity_answering_first(first: ResponseTemplate) -> (Identity, Arc<Mutex<Vec<Instant>>>) {
    let identity = Identity::empty().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .respond_with(FirstThenTokens {
            first,
            arrivals: Arc::clone(&arrivals),
        })
        .mount(&identity.server)
        .await;
    (identity, arrivals)
}

fn oauth_refusal(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({ "error": code }))
}

#[tokio::test]
async fn a_503_at_a_cold_start_is_retried_after_the_back_off_and_the_call_succeeds() {
    let (identity, arrivals) = identity_answering_first(ResponseTemplate::new(503)).await;
    let (api, _) = Api::start().await;
    let cache = identity
        .builder()
        .transient_error_backoff(Duration::from_millis(300), Duration::from_secs(1))
        .build()
        .unwrap();
    let client = documented_stack(&cache, &api, 3);

    let response = client
        .get(format!("{}/api/v1.0/documenttypes", api.uri()))
        .send()
        .await
        .expect("the retry cures the 503");
    assert_eq!(response.status(), 200);

    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2, "the 503 and one successful login");
    // The failure memory's back-off is 150..300 ms for a first failure; the
    // policy retried after 10..20 ms, and the retry waited out the rest
    // instead of being answered from memory.
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(150));
    let stats = cache.stats();
    assert_eq!(stats.logins, 2);
    assert_eq!(stats.answered_from_memory, 0);
    assert_eq!(api.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_login_that_hangs_past_login_timeout_is_retried_and_the_call_succeeds() {
    let hangs = ResponseTemplate::new(200)
        .set_body_json(json!({
            "access_token": "TOKENVALUE-LATE",
            "token_type": "Bearer",
            "expires_in": 3600,
        }))
        .set_delay(Duration::from_secs(30));
    let (identity, arrivals) = identity_answering_first(hangs).await;
    let (api, _) = Api::start().await;
    let cache = identity
        .builder()
        .login_timeout(Duration::from_millis(300))
        .transient_error_backoff(Duration::from_millis(50), Duration::from_millis(100))
        .build()
        .unwrap();
    let client = documented_stack(&cache, &api, 3);

    let started = Instant::now();
    let response = client
        .get(format!("{}/api/v1.0/documenttypes", api.uri()))
        .send()
        .await
        .expect("the retry cures the timeout");
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2, "the hung login and one that answered");
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_millis(300),
        "the second login went out {:?} after the first, before its timeout",
        arrivals[1] - arrivals[0]
    );
    assert_eq!(cache.stats().logins, 2);
    // The API saw the second login's token, never the late one.
    let seen = crate::support::bearers(&api).await;
    assert_eq!(seen, [Some("Bearer TOKENVALUE-2".to_owned())]);
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let first = ResponseTemplate::new(429).insert_header("Retry-After", "1");
    let (identity, arrivals) = identity_answering_first(first).await;
    let (api, _) = Api::start().await;
    let cache = identity.cache();
    let client = documented_stack(&cache, &api, 3);

    let response = client
        .get(format!("{}/api/v1.0/documenttypes", api.uri()))
        .send()
        .await
        .expect("the retry after Retry-After succeeds");
    assert_eq!(response.status(), 200);
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(1),
        "second login {:?} after the 429",
        arrivals[1] - arrivals[0]
    );
    assert_eq!(cache.stats().logins_rate_limited, 1);
    assert_eq!(cache.stats().logins_refused_by_budget, 0);
}

#[tokio::test]
async fn invalid_client_fails_at_once_after_one_attempt() {
    let identity = Identity::empty().await;
    identity.answer(oauth_refusal("invalid_client")).await;
    let (api, _) = Api::start().await;
    let cache = identity.cache();
    let client = documented_stack(&cache, &api, 3);

    let started = Instant::now();
    let err = client
        .get(format!("{}/api/v1.0/documenttypes", api.uri()))
        .send()
        .await
        .expect_err("invalid_client cannot be cured");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        Error::find_in(&err),
        Some(Error::OAuth {
            code: OAuthErrorCode::InvalidClient,
            ..
        })
    ));
    // reqwest-retry says how many retries it made: none.
    let reqwest_middleware::Error::Middleware(wrapped) = &err else {
        panic!("a middleware error, got {err:?}");
    };
    assert!(matches!(
        wrapped.downcast_ref::<RetryError>(),
        Some(RetryError::Error(_))
    ));
    assert_eq!(identity.login_count().await, 1);
    assert!(api.received_requests().await.unwrap().is_empty());
}

/// An identity service that answers 503 to every login, a cache on it with
/// a short transient back-off, an API, and a URL on it.
async fn unavailable() -> (Identity, wiremock::MockServer, TokenCache, String) {
    let identity = Identity::empty().await;
    identity.answer(ResponseTemplate::new(503)).await;
    let (api, _) = Api::start().await;
    let url = format!("{}/api/v1.0/documenttypes", api.uri());
    let cache = identity
        .builder()
        .transient_error_backoff(Duration::from_millis(20), Duration::from_millis(40))
        .build()
        .unwrap();
    (identity, api, cache, url)
}

#[tokio::test]
async fn the_helper_finds_the_login_error_in_either_stack_order() {
    let (identity, api, cache, url) = unavailable().await;

    // Retry outside auth: the error comes wrapped in RetryError::WithRetries.
    let err = documented_stack(&cache, &api, 2)
        .get(&url)
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(wrapped) = &err else {
        panic!("a middleware error, got {err:?}");
    };
    assert!(matches!(
        wrapped.downcast_ref::<RetryError>(),
        Some(RetryError::WithRetries { retries: 2, .. })
    ));
    assert!(
        wrapped.downcast_ref::<Error>().is_none(),
        "a bare downcast misses it"
    );
    assert!(matches!(
        Error::find_in(&err),
        Some(Error::IdentityService { status: 503, .. })
    ));
    assert_eq!(cache.stats().logins, 3, "the first login and two retries");

    // Auth outside retry: the login error comes straight from auth.
    let cache = identity.cache();
    let err = auth_outside_retry(&cache, &api, 2)
        .get(&url)
        .send()
        .await
        .unwrap_err();
    assert!(matches!(
        Error::find_in(&err),
        Some(Error::IdentityService { status: 503, .. })
    ));
    assert_eq!(
        cache.stats().logins,
        1,
        "retry inside auth never sees the login"
    );

    // An API failure is not a login's: the helper finds nothing.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plain = ClientBuilder::new(reqwest::Client::new())
        .with(retry::middleware(quick_policy(1)))
        .build();
    let err = plain
        .get(format!("http://127.0.0.1:{port}/api"))
        .send()
        .await
        .unwrap_err();
    assert!(Error::find_in(&err).is_none());
}

/// An application's own error type that keeps the call's error as its source.
#[derive(Debug)]
struct AppError(reqwest_middleware::Error);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("listing document types failed")
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[tokio::test]
async fn the_helper_finds_the_login_error_after_the_app_converted_it() {
    let (_identity, api, cache, url) = unavailable().await;
    let client = documented_stack(&cache, &api, 1);
    let failed = || async { client.get(&url).send().await.unwrap_err() };
    let is_503 =
        |found: Option<&Error>| matches!(found, Some(Error::IdentityService { status: 503, .. }));

    // Into anyhow (as `?` does), with context: walking the chain misses it.
    let app = anyhow::Error::new(failed().await).context("listing document types");
    assert!(app.chain().all(|e| e.downcast_ref::<Error>().is_none()));
    assert!(is_503(Error::find_in_error(app.as_ref())));

    // Boxed.
    let boxed: Box<dyn std::error::Error + Send + Sync> = failed().await.into();
    assert!(is_503(Error::find_in_error(&*boxed)));

    // The application's own error, with the call's error as its source.
    let own = AppError(failed().await);
    assert!(is_503(Error::find_in_error(&own)));

    // Not a login failure: nothing.
    let other = anyhow::anyhow!("the disk is full").context("saving the invoice");
    assert!(Error::find_in_error(other.as_ref()).is_none());
}

/// Issues tokens, except to logins carrying `onbehalfof`: 503 with
/// `Retry-After: 3`.
#[derive(Clone)]
struct TaxpayersFail {
    issued: Arc<Mutex<usize>>,
}

impl Respond for TaxpayersFail {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if request.headers.get("onbehalfof").is_some() {
            return ResponseTemplate::new(503).insert_header("Retry-After", "3");
        }
        let mut issued = self.issued.lock().unwrap();
        *issued += 1;
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": format!("TOKENVALUE-{issued}"),
            "token_type": "Bearer",
            "expires_in": 3600,
        }))
    }
}

#[tokio::test]
async fn a_failed_logins_mark_never_delays_a_call_that_has_a_token() {
    let identity = Identity::empty().await;
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .respond_with(TaxpayersFail {
            issued: Arc::default(),
        })
        .mount(&identity.server)
        .await;
    let (api, _) = Api::start().await;
    let cache = identity.cache();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(auth(&cache, &api))
        .build();
    let url = format!("{}/api/v1.0/documenttypes", api.uri());
    client.get(&url).send().await.unwrap();

    // One set of extensions reused for several requests, as
    // `execute_with_extensions` allows: a taxpayer's login fails ...
    let mut extensions = http::Extensions::new();
    extensions.insert(myinvois_auth::OnBehalfOf::new("C25845632020"));
    let request = client.get(&url).build().unwrap();
    assert!(client
        .execute_with_extensions(request, &mut extensions)
        .await
        .is_err());
    // ... and a plain call with a cached token is not held up by its mark.
    extensions.remove::<myinvois_auth::OnBehalfOf>();
    let started = Instant::now();
    let request = client.get(&url).build().unwrap();
    let response = client
        .execute_with_extensions(request, &mut extensions)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retried_call_waits_no_longer_than_max_login_wait_in_all() {
    let busy = ResponseTemplate::new(503).insert_header("Retry-After", "2");
    let (identity, _) = identity_answering_first(busy).await;
    let (api, _) = Api::start().await;
    let cache = identity
        .builder()
        .max_login_wait(Duration::from_secs(2))
        .login_rate_limit(2, Duration::from_millis(3500))
        .build()
        .unwrap();
    let client = documented_stack(&cache, &api, 1);
    let url = format!("{}/api/v1.0/documenttypes", api.uri());
    let started = Instant::now();
    let call = client.get(&url).send();
    // Another taxpayer takes the window's second slot meanwhile: the retry,
    // after waiting out the 503's 2 s, would wait for a slot again.
    let other = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cache.token_on_behalf_of("C25845632020").await
    };
    let (call, other) = tokio::join!(call, other);
    other.unwrap();
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(2500),
        "the retry waited {took:?} with max_login_wait 2 s"
    );
    assert!(matches!(
        call.map_err(|e| Error::find_in(&e).cloned()),
        Err(Some(Error::RateLimited { .. }))
    ));
}

#[tokio::test]
async fn an_answer_a_new_login_cannot_cure_is_not_retried() {
    let identity = Identity::empty().await;
    identity
        .answer(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "TOKENVALUE-1",
            "token_type": "mac",
            "expires_in": 3600,
        })))
        .await;
    let (api, _) = Api::start().await;
    let cache = identity
        .builder()
        .transient_error_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .unwrap();
    let err = documented_stack(&cache, &api, 3)
        .get(format!("{}/api/v1.0/documenttypes", api.uri()))
        .send()
        .await
        .unwrap_err();
    let ours = Error::find_in(&err).expect("a login error");
    assert!(matches!(ours, Error::InvalidResponse { .. }), "{ours:?}");
    assert!(!ours.is_transient());
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_wait_for_a_failures_retry_after_writes_a_line() {
    let log = crate::support::LogCapture::start();
    let first = ResponseTemplate::new(429).insert_header("Retry-After", "1");
    let (identity, _) = identity_answering_first(first).await;
    let (api, _) = Api::start().await;
    let client = documented_stack(&identity.cache(), &api, 3);
    let response = client.get(api.uri()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = log.text();
    let waits: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("waits out its failed login's retry_after"))
        .collect();
    assert_eq!(waits.len(), 1, "{text}");
    let wait_ms: u64 = waits[0]
        .split("wait_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("wait_ms");
    assert!((900..=1000).contains(&wait_ms), "{}", waits[0]);
    assert!(waits[0].contains("DEBUG"), "{}", waits[0]);
}
