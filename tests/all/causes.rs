//! A login that cannot reach the identity service says why: connection
//! refused, a failed name lookup, an unknown certificate authority, a
//! timeout each show their cause in `Display` (what a log line prints),
//! and `source()` hands reqwest's error to reporters that walk the chain.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use myinvois_auth::{Credentials, Error, TokenCache};

use crate::support::{Identity, CLIENT_ID, SECRET, TOKEN_MARK};
use crate::tls::TlsIdentity;

/// The login's error for a cache of `url` whose HTTP client is `http`.
async fn login_error(url: &str, http: reqwest::ClientBuilder) -> Error {
    TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(url)
        .http_client(http)
        .without_login_rate_limit()
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err()
}

/// A transport error whose `Display` names `cause` (any of them, in any
/// case), whose `source()` is reqwest's error, and which shows no secret.
fn assert_names_its_cause(err: &Error, causes: &[&str]) {
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    let shown = err.to_string();
    let lower = shown.to_lowercase();
    assert!(
        causes.iter().any(|cause| lower.contains(cause)),
        "{shown:?} does not name its cause ({causes:?})"
    );
    assert!(
        shown.starts_with("could not reach the identity service: "),
        "{shown}"
    );
    // source() is reqwest's error (the variant's `Arc`), and its own
    // causes follow it.
    let source = err.source().expect("source() is reqwest's error");
    let reqwest = source
        .downcast_ref::<Arc<reqwest::Error>>()
        .unwrap_or_else(|| panic!("not reqwest's error: {source:?}"));
    assert!(matches!(err, Error::Transport { error, .. } if Arc::ptr_eq(error, reqwest)));
    assert!(
        source.source().is_some(),
        "reqwest's causes are on the chain"
    );
    for text in [shown, format!("{err:?}")] {
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains(TOKEN_MARK), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_named_in_the_error() {
    // Bind and drop a listener to get a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = login_error(
        &format!("http://127.0.0.1:{port}"),
        reqwest::Client::builder(),
    )
    .await;
    assert_names_its_cause(&err, &["connection refused"]);
}

#[tokio::test]
async fn a_failed_name_lookup_is_named_in_the_error() {
    // `.invalid` never resolves (RFC 6761).
    let err = login_error(
        "https://identity.myinvois-auth.invalid",
        reqwest::Client::builder(),
    )
    .await;
    assert_names_its_cause(&err, &["dns error", "lookup"]);
}

#[tokio::test]
async fn an_unknown_certificate_authority_is_named_in_the_error() {
    // A TLS service whose certificate no trusted root signed.
    let identity = TlsIdentity::redirecting(302, "https://127.0.0.1:9/").await;
    let err = login_error(identity.uri(), reqwest::Client::builder()).await;
    // rustls: "invalid peer certificate: UnknownIssuer"; OpenSSL:
    // "certificate verify failed".
    assert_names_its_cause(&err, &["unknownissuer", "certificate verify failed"]);
    assert_eq!(identity.requests(), 0, "no request got through");
}

#[tokio::test]
async fn a_timeout_of_the_http_client_is_named_in_the_error() {
    let identity = Identity::issuing(3600, Duration::from_secs(30)).await;
    let err = login_error(
        &identity.uri(),
        reqwest::Client::builder().timeout(Duration::from_millis(100)),
    )
    .await;
    assert_names_its_cause(&err, &["timed out"]);
}

#[tokio::test]
async fn a_login_timeout_is_named_in_the_error() {
    let identity = Identity::issuing(3600, Duration::from_secs(30)).await;
    let err = identity
        .builder()
        .login_timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out after 100ms"), "{err}");
}

/// A certificate's names are in rustls' text: one that holds the client
/// secret (a hostile or misconfigured service) is scrubbed of it.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn a_cause_holding_the_secret_is_scrubbed() {
    use crate::tls::TestCa;
    let ca = TestCa::for_names(vec![format!("{SECRET}.example")]);
    let identity = TlsIdentity::redirecting_with(ca, 302, "https://127.0.0.1:9/").await;
    let http = identity.trusting_client().tls_backend_rustls();
    let err = login_error(identity.uri(), http).await;
    assert_names_its_cause(&err, &["not valid for name"]);
    assert!(err.to_string().contains("<redacted>.example"), "{err}");
    assert_eq!(identity.requests(), 0, "no request got through");
}
