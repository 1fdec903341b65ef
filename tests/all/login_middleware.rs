//! Middlewares around the login's own HTTP call
//! (`TokenCacheBuilder::login_middleware`): a tracing layer traces it
//! inside the login span, and whatever a layer does, a login goes out
//! once, to the token URL only, and a layer's failure is a typed error
//! that shows no secret.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use myinvois_auth::Error;
use reqwest_middleware::{Middleware, Next};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Identity, LogCapture, SECRET, TOKEN_MARK};

/// Logs one line from inside the stack, and counts the requests it saw.
#[derive(Clone, Default)]
struct Probe(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for Probe {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tracing::info!("inside the login middleware");
        next.run(request, extensions).await
    }
}

#[tokio::test]
async fn a_tracing_middleware_traces_the_login_call_inside_the_login_span() {
    let identity = Identity::start().await;
    let probe = Probe::default();
    let cache = identity
        .builder()
        .login_middleware(reqwest_tracing::TracingMiddleware::default())
        .login_middleware(probe.clone())
        .build()
        .unwrap();
    let logs = LogCapture::start();
    let token = cache.token().await.unwrap();
    assert!(token.secret().starts_with(TOKEN_MARK));
    assert_eq!(probe.0.load(Ordering::SeqCst), 1);
    assert_eq!(identity.login_count().await, 1);

    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("inside the login middleware"))
        .unwrap_or_else(|| panic!("the probe did not log: {text}"));
    // reqwest-tracing's client span, inside the login's.
    let login = line.find("myinvois_auth.login{").expect(line);
    let http = line.find("HTTP request{").expect(line);
    assert!(
        login < http,
        "the HTTP span is inside the login span: {line}"
    );
    assert!(line.contains("http.request.method=POST"), "{line}");
    assert!(!text.contains(SECRET), "the form is never logged: {text}");
    assert!(!text.contains(TOKEN_MARK), "nor the token: {text}");
}

#[tokio::test]
async fn a_retrying_middleware_cannot_send_a_login_twice() {
    let identity = Identity::empty().await;
    identity.answer(ResponseTemplate::new(503)).await;
    let policy = reqwest_retry::policies::ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
        .build_with_max_retries(3);
    let cache = identity
        .builder()
        .login_middleware(reqwest_retry::RetryTransientMiddleware::new_with_policy(
            policy,
        ))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert_eq!(identity.login_count().await, 1, "one login, not four");
    assert!(matches!(err, Error::LoginMiddleware { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("a second time"), "{err}");
}

/// Sends the request to another server.
struct Divert(String);

#[async_trait::async_trait]
impl Middleware for Divert {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        *request.url_mut() = self.0.parse().unwrap();
        next.run(request, extensions).await
    }
}

#[tokio::test]
async fn a_middleware_cannot_send_the_login_elsewhere() {
    let identity = Identity::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    let cache = identity
        .builder()
        .login_middleware(Divert(format!("{}/connect/token", elsewhere.uri())))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert!(matches!(err, Error::LoginMiddleware { .. }), "{err:?}");
    assert!(err.to_string().contains("another URL"), "{err}");
    let reached = elsewhere.received_requests().await.unwrap_or_default();
    assert!(reached.is_empty(), "the secret went elsewhere");
    assert_eq!(identity.login_count().await, 0);
}

/// Fails every request with a message quoting the request body.
struct Failing;

#[async_trait::async_trait]
impl Middleware for Failing {
    async fn handle(
        &self,
        request: reqwest::Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        Err(reqwest_middleware::Error::middleware(
            std::io::Error::other(format!("refused: {body}")),
        ))
    }
}

#[tokio::test]
async fn a_failing_middleware_is_a_typed_error_that_shows_no_secret() {
    let identity = Identity::start().await;
    let cache = identity
        .builder()
        .login_middleware(Failing)
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert!(matches!(err, Error::LoginMiddleware { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("refused: grant_type=client_credentials"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the middleware's error"
    );
    assert_eq!(identity.login_count().await, 0);
}
