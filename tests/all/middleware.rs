//! The middleware: where the token goes, and recovery from a rejected token.

use std::time::Duration;

use myinvois_auth::{AuthMiddleware, Error, OnBehalfOf, TokenCache};
use reqwest::StatusCode;
use tokio::task::JoinSet;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{bearers, client, Api, Identity, LogCapture};

#[tokio::test]
async fn calls_to_the_api_carry_the_cached_bearer_token() {
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let cache = identity.cache();
    let client = client(&cache, &api);
    for _ in 0..5 {
        let response = client
            .get(format!("{}/api/v1.0/documenttypes", api.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let token = cache.token().await.unwrap();
    let expected = format!("Bearer {}", token.secret());
    assert_eq!(bearers(&api).await, vec![Some(expected); 5]);
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test]
async fn other_origins_never_see_the_token() {
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    let client = client(&identity.cache(), &api);
    client
        .get(format!("{}/x", elsewhere.uri()))
        .send()
        .await
        .unwrap();
    // Same host, other port: another origin.
    assert_ne!(api.address().port(), elsewhere.address().port());
    assert_eq!(bearers(&elsewhere).await, vec![None]);
    assert_eq!(identity.login_count().await, 0);
}

#[tokio::test]
async fn a_request_that_carries_authorization_is_left_alone() {
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let client = client(&identity.cache(), &api);
    let response = client
        .get(api.uri())
        .header("authorization", "Bearer mine")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(bearers(&api).await, vec![Some("Bearer mine".into())]);
    assert_eq!(identity.login_count().await, 0);
}

#[tokio::test]
async fn the_environment_api_origin_is_authenticated_by_default() {
    // The sandbox origin is https on the internet; only check the decision,
    // through a request whose Authorization is inspected before sending.
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let env = myinvois_auth::Environment::custom(&identity.uri(), &api.uri()).unwrap();
    let cache = TokenCache::builder(myinvois_auth::Credentials::new("id", "secret"))
        .environment(env)
        .without_login_timeout()
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(cache))
        .build();
    client.get(api.uri()).send().await.unwrap();
    assert!(bearers(&api).await[0]
        .as_deref()
        .unwrap()
        .starts_with("Bearer "));
}

#[tokio::test]
async fn a_401_invalidates_logs_in_again_and_retries_once() {
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let cache = identity.cache();
    let client = client(&cache, &api_server);
    let first = cache.token().await.unwrap();
    api.revoke(first.secret());

    let response = client
        .post(api_server.uri())
        .body("invoice payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let second = cache.token().await.unwrap();
    assert!(!second.same_token(&first));
    assert_eq!(identity.login_count().await, 2);
    assert_eq!(
        bearers(&api_server).await,
        vec![
            Some(format!("Bearer {}", first.secret())),
            Some(format!("Bearer {}", second.secret()))
        ]
    );
    // The retried request carried the same body.
    let seen = api_server.received_requests().await.unwrap();
    assert_eq!(seen[1].body, b"invoice payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_401s_from_one_revoked_token_yields_exactly_one_login() {
    let identity = Identity::issuing(3600, Duration::from_millis(50)).await;
    let (api_server, api) = Api::start().await;
    let cache = identity.cache();
    let client = client(&cache, &api_server);
    let first = cache.token().await.unwrap();
    api.revoke(first.secret());

    let mut set = JoinSet::new();
    for _ in 0..100 {
        let client = client.clone();
        let url = api_server.uri();
        set.spawn(async move { client.get(url).send().await.unwrap().status() });
    }
    for status in set.join_all().await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test]
async fn a_second_401_is_returned_to_the_caller_as_is() {
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    api.reject_all();
    let client = client(&identity.cache(), &api_server);
    let response = client.get(api_server.uri()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearers(&api_server).await.len(), 2);
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test]
async fn a_streaming_body_is_not_retried_and_the_caller_gets_the_401() {
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    api.reject_all();
    let client = client(&identity.cache(), &api_server);
    let body = reqwest::Body::wrap(http_body_util::Full::new(&b"streamed"[..]));
    let response = client
        .post(api_server.uri())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearers(&api_server).await.len(), 1);
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test]
async fn login_failures_surface_as_a_downcastable_middleware_error() {
    let identity = Identity::empty().await;
    identity
        .answer(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"error": "invalid_client"})),
        )
        .await;
    let (api_server, _) = Api::start().await;
    let client = client(&identity.cache(), &api_server);
    let err = client.get(api_server.uri()).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &err else {
        panic!("expected a middleware error, got {err:?}");
    };
    let ours = inner.downcast_ref::<Error>().expect("our error type");
    assert!(matches!(
        ours,
        Error::OAuth {
            code: myinvois_auth::OAuthErrorCode::InvalidClient,
            ..
        }
    ));
    assert!(bearers(&api_server).await.is_empty());
}

#[tokio::test]
async fn on_behalf_of_uses_the_taxpayers_token_and_sets_the_header() {
    let identity = Identity::start().await;
    let (api_server, _) = Api::start().await;
    let cache = identity.cache();
    let client = client(&cache, &api_server);
    client
        .get(api_server.uri())
        .with_extension(OnBehalfOf::new("C25845632020"))
        .send()
        .await
        .unwrap();
    // A caller-set header wins.
    client
        .get(api_server.uri())
        .header("onbehalfof", "C25845632020")
        .with_extension(OnBehalfOf::new("C25845632020"))
        .send()
        .await
        .unwrap();

    let login = &identity.logins().await[0];
    assert_eq!(login.headers["onbehalfof"], "C25845632020");
    let seen = api_server.received_requests().await.unwrap();
    for request in &seen {
        assert_eq!(request.headers.get_all("onbehalfof").iter().count(), 1);
        assert_eq!(request.headers["onbehalfof"], "C25845632020");
        let auth = request.headers["authorization"].to_str().unwrap();
        assert!(auth.ends_with("-C25845632020"), "{auth}");
    }
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test]
async fn an_invalid_on_behalf_of_fails_the_request_with_a_typed_error() {
    let identity = Identity::start().await;
    let (api_server, _) = Api::start().await;
    let client = client(&identity.cache(), &api_server);
    let err = client
        .get(api_server.uri())
        .with_extension(OnBehalfOf::new("C1\nX"))
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &err else {
        panic!("{err:?}");
    };
    assert!(matches!(
        inner.downcast_ref::<Error>(),
        Some(Error::InvalidTaxpayer { .. })
    ));
    assert!(bearers(&api_server).await.is_empty());
    assert_eq!(identity.login_count().await, 0);
}

#[test]
fn an_api_url_that_would_leak_the_token_is_refused() {
    let cache = TokenCache::builder(myinvois_auth::Credentials::new("id", "secret"))
        .identity_url("http://127.0.0.1:9")
        .build()
        .unwrap();
    let err = AuthMiddleware::with_api_url(cache, "http://api.example.com").unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)));
}

#[tokio::test(flavor = "current_thread")]
async fn the_401_lines_name_the_endpoint_with_ids_made_alike() {
    let log = LogCapture::start();
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let cache = identity.cache();
    let client = client(&cache, &api_server);
    api.revoke(cache.token().await.unwrap().secret());
    let url = format!("{}/api/v1.0/documents/SECRETID42/raw", api_server.uri());
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    api.reject_all();
    let streaming = reqwest::Body::wrap(http_body_util::Full::new(&b"x"[..]));
    client
        .post(format!(
            "{}/api/v1.0/documentsubmissions/SUB77",
            api_server.uri()
        ))
        .body(streaming)
        .send()
        .await
        .unwrap();
    let text = log.text();
    let line = |what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line {what:?} in {text}"))
    };
    let retry = line("retrying once with a new token");
    assert!(
        retry.contains("endpoint=GET /api/v1.0/documents/*/raw"),
        "{retry}"
    );
    let streamed = line("401 on a streaming request");
    assert!(
        streamed.contains("endpoint=POST /api/v1.0/documentsubmissions/*"),
        "{streamed}"
    );
    assert!(
        !text.contains("SECRETID42") && !text.contains("SUB77"),
        "{text}"
    );
}

/// The WARN lines about a middleware or layer with no API origin.
pub fn no_origin_warnings(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains("no API origin"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_middleware_that_can_authenticate_nothing_warns_at_construction_and_at_its_first_request()
{
    let log = LogCapture::start();
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    // Built from an identity URL alone: the cache names no API origin.
    let auth = AuthMiddleware::new(identity.cache());
    let built = no_origin_warnings(&log.text());
    assert_eq!(built.len(), 1, "at construction: {built:?}");
    assert!(
        built[0].contains("with_api_url"),
        "names the fix: {built:?}"
    );
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(auth)
        .build();
    for _ in 0..3 {
        client.get(api.uri()).send().await.unwrap();
    }
    let warned = no_origin_warnings(&log.text());
    assert_eq!(
        warned.len(),
        2,
        "once more, at the first request: {warned:?}"
    );
    let origin = api.uri();
    assert!(warned[1].contains(&origin), "{warned:?}");
    assert_eq!(bearers(&api).await, vec![None; 3]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_middleware_with_an_api_origin_gives_no_such_warning() {
    let log = LogCapture::start();
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let env = myinvois_auth::Environment::custom(&identity.uri(), &api.uri()).unwrap();
    let with_env = TokenCache::builder(myinvois_auth::Credentials::new("id", "secret"))
        .environment(env)
        .build()
        .unwrap();
    let clients = [
        AuthMiddleware::new(with_env),
        AuthMiddleware::with_api_url(identity.cache(), api.uri()).unwrap(),
    ];
    for auth in clients {
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(auth)
            .build();
        client.get(api.uri()).send().await.unwrap();
    }
    // An origin added before the first request: only the construction's.
    let added = AuthMiddleware::new(identity.cache())
        .api_url(api.uri())
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(added)
        .build();
    client.get(api.uri()).send().await.unwrap();
    assert_eq!(no_origin_warnings(&log.text()).len(), 1, "{}", log.text());
    assert!(bearers(&api).await.iter().all(Option::is_some));
}
