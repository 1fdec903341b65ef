//! Every login names its real reason in its span (`reason`), which every
//! log line of the login carries: a cold or expired entry, a token the API
//! rejected with 401, a token the caller invalidated, a rotated secret
//! that may cure a remembered failure, a refresh ahead of expiry.

use std::time::Duration;

use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, ResponseTemplate};

use crate::support::{client, settle_until, Api, Identity, LogCapture};

/// The `reason` of every login span in `logs`, in order, one per login
/// (the line saying it was sent).
fn reasons(logs: &LogCapture) -> Vec<String> {
    logs.text()
        .lines()
        .filter(|line| line.contains("login started"))
        .map(|line| {
            let (_, rest) = line
                .split_once("reason=")
                .unwrap_or_else(|| panic!("no reason: {line}"));
            rest.trim_start_matches('"')
                .split(['"', '}'])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_login_after_a_401_names_the_rejection_as_its_reason() {
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let cache = identity.cache();
    let http = client(&cache, &api_server);
    let logs = LogCapture::start();

    let first = cache.token().await.unwrap();
    api.revoke(first.secret());
    let answer = http.get(api_server.uri()).send().await.unwrap();
    assert_eq!(answer.status(), 200, "retried with a new token");
    // A token the application itself invalidates.
    let second = cache.token().await.unwrap();
    assert!(cache.invalidate(&second));
    cache.token().await.unwrap();

    assert_eq!(
        reasons(&logs),
        [
            "no valid token",
            "rejected by the API (401)",
            "token invalidated"
        ]
    );
    assert_eq!(identity.login_count().await, 3);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_and_a_login_after_a_rotation_name_their_reasons() {
    let identity = Identity::empty().await;
    // The old secret is refused; the new one gets one-minute tokens.
    identity
        .server
        .register(
            Mock::given(method("POST"))
                .and(body_string_contains("client_secret=OLD"))
                .respond_with(
                    ResponseTemplate::new(400)
                        .set_body_json(serde_json::json!({ "error": "invalid_client" })),
                )
                .with_priority(1),
        )
        .await;
    identity.issue(60, Duration::ZERO).await;
    let cache = myinvois_auth::TokenCache::builder(myinvois_auth::Credentials::new(
        crate::support::CLIENT_ID,
        "OLD",
    ))
    .identity_url(identity.uri())
    .without_login_timeout()
    .refresh_before(Duration::from_secs(20))
    .build()
    .unwrap();
    let logs = LogCapture::start();

    cache.token().await.unwrap_err();
    // Answered from memory: no login.
    cache.token().await.unwrap_err();
    cache.rotate_secret("NEW").unwrap();
    let token = cache.token().await.unwrap();
    // Into the refresh window: the sweep refreshes in the background.
    tokio::time::advance(Duration::from_secs(41)).await;
    cache.token().await.unwrap();
    settle_until(|| async { !cache.token().await.unwrap().same_token(&token) }).await;

    assert_eq!(
        reasons(&logs),
        [
            "no valid token",
            "client secret rotated",
            "refresh ahead of expiry"
        ]
    );
}
