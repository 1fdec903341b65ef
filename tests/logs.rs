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

use myinvois_auth::{AuthMiddleware, Credentials, Error, OnBehalfOf};
use tracing_subscriber::fmt::MakeWriter;
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

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "{what} shows the client secret: {text}"
    );
    assert!(!text.contains(TOKEN_MARK), "{what} shows a token: {text}");
}

/// Runs a scenario that logs in, refreshes, retries, invalidates and fails,
/// capturing every trace event at TRACE level (ours and our dependencies').
#[tokio::test(start_paused = true)]
async fn secrets_and_tokens_never_appear_in_logs_debug_display_or_errors() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    // Global, not scoped: tracing caches callsite interest process-wide.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let identity = Identity::issuing(3600, Duration::ZERO).await;
    let (api_server, api) = Api::start().await;
    let cache = identity.builder().scope("InvoicingAPI").build().unwrap();
    let client = client(&cache, &api_server);

    let token = cache.token().await.unwrap();
    let theirs = cache.token_on_behalf_of("C25845632020").await.unwrap();
    api.revoke(token.secret());
    client.get(api_server.uri()).send().await.unwrap();
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

    let output = logs.text();
    assert!(output.contains("login succeeded"), "{output}");
    assert!(output.contains("login failed"), "{output}");
    assert!(output.contains("token invalidated"), "{output}");
    assert!(output.contains("retrying once"), "{output}");
    assert!(output.contains("refresh ahead of expiry"), "{output}");
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
    assert!(matches!(oauth_error, Error::OAuth { .. }));
}
