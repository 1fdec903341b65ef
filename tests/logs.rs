//! No secret or token in any log line, `Debug` or `Display` output.
//!
//! A test binary of its own: it installs the process-wide trace subscriber,
//! which must see every callsite from the start.

#[path = "all/support.rs"]
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use myinvois_auth::{
    AuthMiddleware, Credentials, Error, Loaded, OnBehalfOf, StoreError, StoreErrorKind,
    StoredToken, TokenCacheBuilder, TokenStore,
};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use wiremock::ResponseTemplate;

use support::{client, Api, Identity, CLIENT_ID, SECRET, TOKEN_MARK};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Neither the secret nor a token, nor the first four characters of either
/// (all that a cut at 300 characters through them may leave in the tests
/// below, which put them 4 characters before the cut).
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(&SECRET[..4]),
        "{what} shows the client secret: {text}"
    );
    assert!(
        !text.contains(&TOKEN_MARK[..4]),
        "{what} shows a token: {text}"
    );
}

/// A token store that hands out a token no check lets through (with the
/// secret in its scope), and fails every write: its warnings are logged.
#[derive(Debug)]
struct HostileStore;

#[async_trait::async_trait]
impl TokenStore for HostileStore {
    async fn load(&self, _key: &str) -> Result<Loaded, StoreError> {
        let now = Utc::now();
        let token = StoredToken::new(
            format!("{TOKEN_MARK}-stored\r\nInjected: 1"),
            now,
            now + chrono::Duration::days(365 * 100),
            Duration::from_secs(3600),
        )
        .with_scope(Some(format!("InvoicingAPI {SECRET}")));
        Ok(Loaded::new(Some(token), None))
    }
    async fn save(&self, _key: &str, _token: &StoredToken) -> Result<(), StoreError> {
        Err(StoreError::new(
            StoreErrorKind::Unreachable,
            "the store is down",
        ))
    }
    async fn try_lock(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::new(
            StoreErrorKind::Timeout,
            "the store is slow",
        ))
    }
    async fn unlock(&self, _key: &str, _owner: &str) -> Result<(), StoreError> {
        Err(StoreError::new(
            StoreErrorKind::ReadOnly,
            "the store is a replica",
        ))
    }
}

/// Runs a scenario that logs in, refreshes, retries, invalidates and fails,
/// capturing every trace event at TRACE level (ours and our dependencies').
#[tokio::test(start_paused = true)]
async fn secrets_and_tokens_never_appear_in_logs_debug_display_or_errors() {
    let logs = Captured::default();
    // Global, not scoped: tracing caches callsite interest process-wide.
    // `init` also routes the `log` crate's records (reqwest's) here.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish()
        .try_init()
        .unwrap();

    let identity = Identity::issuing(3600, Duration::ZERO).await;
    let (api_server, api) = Api::start().await;
    let cache = identity.builder().scope("InvoicingAPI").build().unwrap();
    let client = client(&cache, &api_server);

    let token = cache.token().await.unwrap();
    let theirs = cache.token_on_behalf_of("C25845632020").await.unwrap();
    api.revoke(token.secret());
    // A 401 retried: the log line names the URL, never its query.
    let signed = format!("{}/api/v1.0/documents?sig={SECRET}", api_server.uri());
    client.get(&signed).send().await.unwrap();
    client
        .get(api_server.uri())
        .with_extension(OnBehalfOf::new("C25845632020"))
        .send()
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(3400)).await;
    let old = cache.token().await.unwrap();
    support::settle_until(|| async { !cache.token().await.unwrap().same_token(&old) }).await;

    // Failures, with the secret echoed back by a hostile identity service.
    identity.server.reset().await;
    identity
        .answer(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_client",
            "error_description": format!("bad secret {SECRET}"),
        })))
        .await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    let oauth_error = cache.token().await.unwrap_err();

    // Every other kind of failure, each from a hostile or broken identity
    // service that echoes secrets where a cut or a field could leak them.
    let mut errors = vec![oauth_error.clone()];
    // Text is cut at 300 characters: these put the secret and a token
    // across the cut, leaving 4 of their characters before it.
    let straddling = format!("{}{SECRET}", "x".repeat(296));
    let long_token = format!("{TOKEN_MARK}-{}", "y".repeat(400));
    let token_straddling = format!("{}{long_token}", "z".repeat(296));
    let answers = [
        ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": straddling, "error_description": straddling, "error_uri": format!("https://u:{SECRET}@x.example/?s={SECRET}"),
        })),
        ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": token_straddling, "error_description": token_straddling,
            "error_uri": format!("https://x.example/{long_token}"), "access_token": long_token,
        })),

        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": long_token, "token_type": long_token, "expires_in": 3600,
        })),
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": long_token, "token_type": "Bearer", "expires_in": long_token,
        })),
        // A token for another taxpayer, whose claim echoes the secret.
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": jwt(serde_json::json!({ "TaxpayerTIN": straddling })),
            "token_type": "Bearer", "expires_in": 3600,
        })),
        ResponseTemplate::new(302).insert_header("location", format!("https://evil.example/steal?s={SECRET}")),
        ResponseTemplate::new(307).insert_header("location", format!("https://{}.evil.example/", SECRET.to_lowercase())),
        ResponseTemplate::new(503).insert_header("retry-after", "18446744073709551615"),
        ResponseTemplate::new(429).insert_header("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ResponseTemplate::new(200).set_delay(Duration::from_secs(30)),
    ];
    let last = answers.len() - 1;
    for (i, answer) in answers.into_iter().enumerate() {
        let identity = Identity::empty().await;
        identity.answer(answer).await;
        // Under the paused clock a login timeout fires while real sockets
        // are read: only the hung service gets one.
        let mut builder = identity.builder().without_login_rate_limit();
        if i == last {
            builder = builder.login_timeout(Duration::from_secs(5));
        }
        let cache = builder.build().unwrap();
        errors.push(cache.token_on_behalf_of("C25845632020").await.unwrap_err());
    }
    // A login middleware that fails quoting the request's form, behind a
    // tracing layer that traces the login call.
    let quoting = Identity::start().await;
    let cache_quoting = quoting
        .builder()
        .login_middleware(reqwest_tracing::TracingMiddleware::default())
        .login_middleware(QuotingTheForm)
        .build()
        .unwrap();
    errors.push(cache_quoting.token().await.unwrap_err());
    let traced = Identity::start().await;
    let cache_traced = traced
        .builder()
        .login_middleware(reqwest_tracing::TracingMiddleware::default())
        .build()
        .unwrap();
    cache_traced.token().await.unwrap();
    let unreachable = myinvois_auth::TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url("http://127.0.0.1:9")
        .build()
        .unwrap();
    errors.push(unreachable.token().await.unwrap_err());

    // A granted scope echoing the secret across the cut: the token's Debug
    // shows the scope.
    let scoped = Identity::empty().await;
    scoped
        .answer(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": format!("{TOKEN_MARK}-scoped"), "token_type": "Bearer",
            "expires_in": 3600, "scope": straddling,
        })))
        .await;
    let scoped_token = scoped.cache().token().await.unwrap();
    assert_clean("a token's Debug", &format!("{scoped_token:?}"));

    // A token store handing out a token that fails every check, failing
    // every write: its warnings are logged, and the login goes ahead.
    let hostile = Identity::issuing(3600, Duration::ZERO).await;
    let with_store = hostile
        .builder()
        .token_store(Arc::new(HostileStore))
        .build()
        .unwrap();
    let fresh = with_store.token().await.unwrap();
    assert!(fresh.secret().starts_with(TOKEN_MARK));
    assert_eq!(hostile.login_count().await, 1);

    // Configuration from variables holding the secret where it must not be.
    let from_vars = TokenCacheBuilder::from_vars(|name| match name {
        "MYINVOIS_CLIENT_ID" => Some(CLIENT_ID.into()),
        "MYINVOIS_CLIENT_SECRET" => Some(SECRET.into()),
        "MYINVOIS_ENVIRONMENT" => Some(SECRET.into()),
        _ => None,
    });
    errors.push(from_vars.unwrap_err());
    for url in [
        format!("https://id.example.com/?secret={SECRET}"),
        format!("https://id.example.com/#{SECRET}"),
        format!("https://user:{SECRET}@id.example.com"),
        format!("http://id.example.com/{SECRET}"),
    ] {
        let built = myinvois_auth::TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
            .identity_url(url)
            .build();
        errors.push(built.unwrap_err());
        let env = myinvois_auth::Environment::custom(
            &format!("https://id.example.com/?s={SECRET}"),
            "https://api.example.com",
        );
        errors.push(env.unwrap_err());
    }
    errors.push(cache.token_on_behalf_of("C1 not a TIN").await.unwrap_err());
    errors.push(myinvois_auth::TokenClaims::decode(&long_token).unwrap_err());
    errors.push(Error::LoginAborted);
    let kinds: std::collections::BTreeSet<String> = errors
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    for kind in [
        "OAuth",
        "RateLimited",
        "IdentityService",
        "LoginRedirected",
        "InvalidResponse",
        "Timeout",
        "Transport",
        "LoginMiddleware",
        "InvalidConfig",
        "InvalidToken",
        "InvalidTaxpayer",
        "WrongTaxpayer",
        "Environment",
        "LoginAborted",
    ] {
        assert!(kinds.contains(kind), "no {kind} error was made: {kinds:?}");
    }

    let output = logs.text();
    assert!(output.contains("login succeeded"), "{output}");
    assert!(output.contains("login failed"), "{output}");
    assert!(output.contains("token invalidated"), "{output}");
    assert!(output.contains("retrying once"), "{output}");
    assert!(output.contains("refresh ahead of expiry"), "{output}");
    assert!(output.contains("token store refused"), "{output}");
    assert!(output.contains("token store unavailable"), "{output}");
    // reqwest-tracing's span of the login call, and the failing layer.
    assert!(output.contains("HTTP request{"), "{output}");
    assert!(
        output.contains("a login middleware failed the login"),
        "{output}"
    );
    assert!(output.contains("/api/v1.0/documents"), "{output}");
    // reqwest's own `log` records reach the subscriber too.
    assert!(output.contains("reqwest"), "{output}");
    assert!(
        output.contains(CLIENT_ID),
        "entries are named in logs: {output}"
    );
    assert_clean("the log", &output);

    let rendered = [
        format!("{token:?}"),
        format!("{theirs:?}"),
        format!("{cache:?}"),
        format!("{:?}", Credentials::new(CLIENT_ID, SECRET)),
        format!("{:?}", AuthMiddleware::new(cache.clone())),
        format!("{:?}", token.authorization_header()),
        format!("{oauth_error} {oauth_error:?}"),
        format!("{client:?}"),
    ];
    for text in rendered {
        assert_clean("Debug/Display output", &text);
    }
    for error in &errors {
        assert_clean("an error", &format!("{error} {error:?}"));
    }
    assert!(matches!(oauth_error, Error::OAuth { .. }));
}

/// A login middleware that fails every request, quoting its form.
struct QuotingTheForm;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for QuotingTheForm {
    async fn handle(
        &self,
        request: reqwest::Request,
        _: &mut http::Extensions,
        _: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let form = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        Err(reqwest_middleware::Error::middleware(
            std::io::Error::other(format!("refused {form}")),
        ))
    }
}

/// A compact JWT with these claims (the signature is not checked).
fn jwt(claims: serde_json::Value) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("e30.{payload}.c2ln")
}
