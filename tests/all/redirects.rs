//! The login never follows a redirect: the client secret goes to the
//! configured identity service and nowhere else, and no token from another
//! origin is ever served.

use std::time::Duration;

use myinvois_auth::Error;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Identity, SECRET, TOKEN_MARK};
use crate::tls::TlsIdentity;

/// Another origin that would happily issue a token to anyone who asks.
async fn elsewhere() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": format!("{TOKEN_MARK}-FROM-ELSEWHERE"),
            "token_type": "Bearer",
            "expires_in": 3600,
        })))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_a_typed_error_and_nothing_reaches_it() {
    let other = elsewhere().await;
    for status in [301, 302, 303, 307, 308] {
        let identity = Identity::empty().await;
        identity
            .answer(
                ResponseTemplate::new(status)
                    .insert_header("location", format!("{}/connect/token?k=v", other.uri())),
            )
            .await;
        // The default client, and one the user configured.
        for builder in [
            identity.builder(),
            identity.builder().http_client(
                reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(10)),
            ),
        ] {
            // About redirects, not the login budget.
            let cache = builder.without_login_rate_limit().build().unwrap();
            let err = cache.token().await.unwrap_err();
            match &err {
                Error::LoginRedirected {
                    status: s,
                    location,
                    ..
                } => {
                    assert_eq!(*s, status);
                    assert_eq!(location.as_deref(), Some(other.uri().as_str()));
                }
                other => panic!("HTTP {status}: expected LoginRedirected, got {other:?}"),
            }
            assert!(!err.is_transient());
            let text = format!("{err} {err:?}");
            assert!(!text.contains("k=v"), "the target's query is shown: {text}");
        }
        assert_eq!(identity.login_count().await, 2, "HTTP {status}");
    }
    let reached = other.received_requests().await.unwrap();
    assert!(
        reached.is_empty(),
        "the other origin received {} requests",
        reached.len()
    );
}

#[tokio::test]
async fn an_https_identity_service_redirecting_to_http_sends_nothing_there() {
    let other = elsewhere().await;
    for status in [302, 307, 308] {
        let identity =
            TlsIdentity::redirecting(status, &format!("{}/connect/token", other.uri())).await;
        let cache = myinvois_auth::TokenCache::builder(myinvois_auth::Credentials::new(
            crate::support::CLIENT_ID,
            SECRET,
        ))
        .identity_url(identity.uri())
        .http_client(identity.trusting_client())
        .login_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
        let err = cache.token().await.unwrap_err();
        assert!(
            matches!(err, Error::LoginRedirected { status: s, .. } if s == status),
            "HTTP {status}: {err:?}"
        );
        assert_eq!(identity.requests(), 1, "the https stand-in was asked once");
    }
    assert!(other.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_redirect_target_echoing_the_secret_is_named_without_it() {
    // The target's host carries the secret (as a reflecting service might
    // echo the form): parsing lowercases a host, so it is scrubbed before.
    for location in [
        format!("https://{SECRET}.evil.example/connect/token"),
        format!("https://{}.evil.example/", SECRET.to_lowercase()),
        format!("https://evil.example/{SECRET}?s={SECRET}"),
    ] {
        let identity = Identity::empty().await;
        identity
            .answer(ResponseTemplate::new(307).insert_header("location", location.as_str()))
            .await;
        let cache = identity
            .builder()
            .without_login_rate_limit()
            .build()
            .unwrap();
        let err = cache.token().await.unwrap_err();
        assert!(matches!(err, Error::LoginRedirected { .. }), "{err:?}");
        let text = format!("{err} {err:?}").to_lowercase();
        assert!(
            !text.contains(&SECRET.to_lowercase()),
            "{location}: the secret shows: {text}"
        );
    }
}
