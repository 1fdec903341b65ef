//! The tower layer: a hyper-util client behind `AuthLayer`, against the
//! in-process identity service and API of `support`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use myinvois_auth::tower::{AuthLayer, AuthService, BoxError, ReplayBody};
use myinvois_auth::{Error, OnBehalfOf, TokenCache, TokenSource};
use tokio::task::JoinSet;
use tower::{Layer, ServiceExt};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::middleware::no_origin_warnings;
use crate::support::{bearers, Api, Identity};

type Body = Full<Bytes>;

/// A hyper-util client for `B` bodies behind the layer, authenticating `api`.
fn service<B>(cache: &TokenCache, api: &MockServer) -> AuthService<Client<HttpConnector, B>>
where
    B: hyper::body::Body + ReplayBody + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<B>();
    AuthLayer::with_api_url(cache.clone(), api.uri())
        .expect("loopback API URL")
        .layer(client)
}

fn get(url: impl AsRef<str>) -> Request<Body> {
    Request::get(url.as_ref()).body(Body::default()).unwrap()
}

async fn status<S>(service: &S, request: Request<Body>) -> StatusCode
where
    S: tower::Service<
            Request<Body>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        > + Clone,
{
    service
        .clone()
        .oneshot(request)
        .await
        .expect("an answer")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_of_100_calls_makes_one_login() {
    let identity = Identity::issuing(3600, Duration::from_millis(50)).await;
    let (api, _) = Api::start().await;
    let cache = identity.cache();
    let service = service::<Body>(&cache, &api);
    let mut calls = JoinSet::new();
    for _ in 0..100 {
        let (service, url) = (service.clone(), api.uri());
        calls.spawn(async move { status(&service, get(url)).await });
    }
    for status in calls.join_all().await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(identity.login_count().await, 1);
    let token = cache.token().await.unwrap();
    let expected = Some(format!("Bearer {}", token.secret()));
    assert_eq!(bearers(&api).await, vec![expected; 100]);
}

#[tokio::test]
async fn a_401_is_retried_once_with_a_new_token() {
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let cache = identity.cache();
    let first = cache.token().await.unwrap();
    api.revoke(first.secret());
    let service = service::<Body>(&cache, &api_server);
    let request = Request::post(api_server.uri())
        .body(Body::from("invoice payload"))
        .unwrap();
    assert_eq!(status(&service, request).await, StatusCode::OK);
    let second = cache.token().await.unwrap();
    assert!(!second.same_token(&first));
    assert_eq!(
        bearers(&api_server).await,
        [&first, &second].map(|t| Some(format!("Bearer {}", t.secret())))
    );
    let seen = api_server.received_requests().await.unwrap();
    assert_eq!(seen[1].body, b"invoice payload");
    assert_eq!(identity.login_count().await, 2);
    assert_eq!(cache.stats().retries_after_401, 1);
}

#[tokio::test]
async fn an_endpoint_that_always_answers_401_costs_at_most_one_login() {
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let cache = identity.cache();
    cache.token().await.unwrap();
    api.reject_path("/api/v1.0/documents/ABC/raw");
    let service = service::<Body>(&cache, &api_server);
    let url = format!("{}/api/v1.0/documents/ABC/raw", api_server.uri());
    for _ in 0..20 {
        assert_eq!(status(&service, get(&url)).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        identity.login_count().await,
        2,
        "one login beyond the first"
    );
    // The first call and its one retry, then one call each.
    assert_eq!(bearers(&api_server).await.len(), 21);
}

#[tokio::test]
async fn a_streaming_body_gets_the_401_back_and_its_token_is_retired() {
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let cache = identity.cache();
    let first = cache.token().await.unwrap();
    api.revoke(first.secret());
    let service = service::<BoxBody<Bytes, Infallible>>(&cache, &api_server);
    // A boxed body is never copied: as a stream, it is sent once.
    let request = Request::post(api_server.uri())
        .body(Full::new(Bytes::from("streamed")).boxed())
        .unwrap();
    assert!(request.body().try_clone_body().is_none());
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearers(&api_server).await.len(), 1, "not retried");
    // Retired: the next caller gets a new token.
    assert!(cache.cached_token(None).is_none());
    assert!(!cache.token().await.unwrap().same_token(&first));
}

#[tokio::test]
async fn other_origins_never_see_the_token_and_an_own_authorization_is_kept() {
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    let service = service::<Body>(&identity.cache(), &api);
    assert_eq!(status(&service, get(elsewhere.uri())).await, StatusCode::OK);
    // A path alone (no origin) gets no token either.
    let relative = Request::get("/api/v1.0/documenttypes")
        .body(Body::default())
        .unwrap();
    assert!(service.clone().oneshot(relative).await.is_err());
    let mine = Request::get(api.uri())
        .header("authorization", "Bearer mine")
        .body(Body::default())
        .unwrap();
    assert_eq!(status(&service, mine).await, StatusCode::OK);
    assert_eq!(bearers(&elsewhere).await, vec![None]);
    assert_eq!(bearers(&api).await, vec![Some("Bearer mine".into())]);
    assert_eq!(identity.login_count().await, 0);
}

#[tokio::test]
async fn on_behalf_of_uses_the_taxpayers_token_and_sets_the_header() {
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let service = service::<Body>(&identity.cache(), &api);
    let mut request = get(api.uri());
    request
        .extensions_mut()
        .insert(OnBehalfOf::new("C25845632020"));
    assert_eq!(status(&service, request).await, StatusCode::OK);
    let seen = api.received_requests().await.unwrap();
    assert_eq!(seen[0].headers["onbehalfof"], "C25845632020");
    let auth = seen[0].headers["authorization"].to_str().unwrap();
    assert!(auth.ends_with("-C25845632020"), "{auth}");
    assert_eq!(
        identity.logins().await[0].headers["onbehalfof"],
        "C25845632020"
    );
}

#[tokio::test]
async fn a_login_failure_is_the_services_error_and_names_its_cause() {
    let identity = Identity::empty().await;
    identity
        .answer(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"error": "invalid_client"})),
        )
        .await;
    let (api, _) = Api::start().await;
    let service = service::<Body>(&identity.cache(), &api);
    let err = service.oneshot(get(api.uri())).await.unwrap_err();
    assert!(matches!(
        Error::find_in_error(&*err),
        Some(Error::OAuth { .. })
    ));
    assert!(bearers(&api).await.is_empty());
}

#[tokio::test]
async fn the_layer_works_over_any_source() {
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let source: Arc<dyn TokenSource> = Arc::new(identity.cache());
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let service = AuthLayer::from_source(source, api.uri())
        .unwrap()
        .layer(client);
    assert_eq!(status(&service, get(api.uri())).await, StatusCode::OK);
    assert!(bearers(&api).await[0].is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn a_layer_that_can_authenticate_nothing_warns_at_construction_and_at_its_first_request() {
    let log = crate::support::LogCapture::start();
    let identity = Identity::start().await;
    let (api, _) = Api::start().await;
    let layer = AuthLayer::new(identity.cache());
    assert_eq!(no_origin_warnings(&log.text()).len(), 1, "at construction");
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let service = layer.layer(client);
    for _ in 0..3 {
        // The API refuses a call without a token.
        let answer = status(&service, get(api.uri())).await;
        assert_eq!(answer, StatusCode::UNAUTHORIZED);
    }
    let warned = no_origin_warnings(&log.text());
    assert_eq!(
        warned.len(),
        2,
        "once more, at the first request: {warned:?}"
    );
    assert!(
        warned[1].contains("AuthLayer has no API origin"),
        "{warned:?}"
    );
    assert_eq!(bearers(&api).await, vec![None; 3]);
}
