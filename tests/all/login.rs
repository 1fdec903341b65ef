//! The login call: what is sent, and how every kind of answer is read.

use std::time::Duration;

use chrono::Utc;
use myinvois_auth::{Credentials, Environment, Error, OAuthErrorCode, TokenCache};
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::{form, Identity, CLIENT_ID, SECRET, TOKEN_MARK};

#[tokio::test]
async fn login_posts_the_client_credentials_form_without_scope_when_unset() {
    let identity = Identity::start().await;
    let token = identity.cache().token().await.unwrap();
    assert!(token.secret().starts_with(TOKEN_MARK));

    let logins = identity.logins().await;
    assert_eq!(logins.len(), 1);
    let login = &logins[0];
    assert_eq!(login.method.as_str(), "POST");
    assert_eq!(login.url.path(), "/connect/token");
    assert_eq!(
        login.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert!(login.headers.get("onbehalfof").is_none());
    let mut fields = form(login);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            ("client_id".into(), CLIENT_ID.into()),
            ("client_secret".into(), SECRET.into()),
            ("grant_type".into(), "client_credentials".into()),
        ]
    );
}

#[tokio::test]
async fn login_sends_the_scope_when_configured_and_reports_the_granted_scope() {
    let identity = Identity::start().await;
    let cache = identity.builder().scope("InvoicingAPI").build().unwrap();
    let token = cache.token().await.unwrap();
    assert_eq!(token.scope(), Some("InvoicingAPI"));
    let fields = form(&identity.logins().await[0]);
    assert!(fields.contains(&("scope".into(), "InvoicingAPI".into())));
}

#[tokio::test]
async fn intermediary_login_sends_the_onbehalfof_header() {
    let identity = Identity::start().await;
    let cache = identity.cache();
    let token = cache
        .token_on_behalf_of("IG12345678912:201901234567")
        .await
        .unwrap();
    assert_eq!(
        token.on_behalf_of().map(|t| t.as_str()),
        Some("IG12345678912:201901234567")
    );
    let login = &identity.logins().await[0];
    assert_eq!(login.headers["onbehalfof"], "IG12345678912:201901234567");
    assert!(form(login).contains(&("grant_type".into(), "client_credentials".into())));
}

#[tokio::test]
async fn an_identity_url_with_a_path_prefix_keeps_it() {
    let identity = Identity::start().await;
    // The mock only answers /connect/token, so a prefix must reach a 404.
    let cache = identity
        .builder()
        .identity_url(format!("{}/prefix/", identity.uri()))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert!(
        matches!(err, Error::IdentityService { status: 404, .. }),
        "{err:?}"
    );
    let seen = identity.server.received_requests().await.unwrap();
    assert_eq!(seen[0].url.path(), "/prefix/connect/token");
}

#[tokio::test]
async fn expiry_counts_from_the_local_send_time_not_the_server_clock() {
    let identity = Identity::empty().await;
    identity
        .answer(
            ResponseTemplate::new(200)
                // A server clock a day behind must not matter.
                .insert_header("date", "Mon, 01 Jan 2001 00:00:00 GMT")
                .set_body_json(
                    json!({"access_token": "t", "token_type": "Bearer", "expires_in": 3600}),
                ),
        )
        .await;
    let before = Utc::now();
    let token = identity.cache().token().await.unwrap();
    let after = Utc::now();
    // Served until the expiry margin before its lifetime ends.
    let lifetime = chrono::Duration::seconds(3600)
        - chrono::Duration::from_std(myinvois_auth::EXPIRY_MARGIN).unwrap();
    assert!(token.expires_at() >= before + lifetime, "{token:?}");
    assert!(token.expires_at() <= after + lifetime, "{token:?}");
    assert!(token.issued_at() >= before && token.issued_at() <= after);
}

#[tokio::test]
async fn oauth_errors_on_400_and_401_are_typed_with_code_and_description() {
    let cases = [
        (400, "invalid_request", OAuthErrorCode::InvalidRequest),
        (400, "invalid_client", OAuthErrorCode::InvalidClient),
        (401, "invalid_client", OAuthErrorCode::InvalidClient),
        (400, "invalid_grant", OAuthErrorCode::InvalidGrant),
        (
            400,
            "unauthorized_client",
            OAuthErrorCode::UnauthorizedClient,
        ),
        (
            400,
            "unauthorised_client",
            OAuthErrorCode::UnauthorizedClient,
        ),
        (
            400,
            "unsupported_grant_type",
            OAuthErrorCode::UnsupportedGrantType,
        ),
        (400, "invalid_scope", OAuthErrorCode::InvalidScope),
        (
            400,
            "something_new",
            OAuthErrorCode::Other("something_new".into()),
        ),
    ];
    for (status, code, expected) in cases {
        let identity = Identity::empty().await;
        identity
            .answer(
                ResponseTemplate::new(status)
                    .set_body_json(json!({"error": code, "error_description": "User blocked"})),
            )
            .await;
        match identity.cache().token().await.unwrap_err() {
            Error::OAuth {
                status: s,
                code,
                description,
                ..
            } => {
                assert_eq!(s, status);
                assert_eq!(code, expected);
                assert_eq!(description.as_deref(), Some("User blocked"));
            }
            other => panic!("{status} {code}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn every_unusable_answer_is_a_clear_typed_error() {
    let token = |extra: serde_json::Value| {
        let mut body = json!({"access_token": "abc", "token_type": "Bearer", "expires_in": 3600});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        ResponseTemplate::new(200).set_body_json(body)
    };
    let cases: Vec<(ResponseTemplate, &str)> = vec![
        (ResponseTemplate::new(500), "HTTP 500"),
        (
            ResponseTemplate::new(503).set_body_string("down"),
            "HTTP 503",
        ),
        (
            ResponseTemplate::new(200).set_body_raw("<html>maintenance</html>", "text/html"),
            "not JSON",
        ),
        (ResponseTemplate::new(200), "empty"),
        (
            ResponseTemplate::new(200).set_body_raw("{\"access_token\":", "application/json"),
            "not JSON",
        ),
        (
            token(json!({"access_token": null})),
            "access_token is missing",
        ),
        (token(json!({"expires_in": null})), "expires_in is missing"),
        (token(json!({"expires_in": 0})), "zero"),
        (token(json!({"expires_in": -60})), "negative"),
        (token(json!({"expires_in": "soon"})), "not a number"),
        (
            token(json!({"expires_in": 10_000_000_000u64})),
            "larger than",
        ),
        (token(json!({"token_type": "MAC"})), "not Bearer"),
        (token(json!({"access_token": "a\u{7f}b"})), "HTTP header"),
        (token(json!({"access_token": "a b"})), "HTTP header"),
    ];
    for (answer, expected) in cases {
        let identity = Identity::empty().await;
        identity.answer(answer).await;
        let err = identity.cache().token().await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::IdentityService { .. } | Error::InvalidResponse { .. }
            ),
            "{expected}: {err:?}"
        );
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
}

#[tokio::test]
async fn a_429_is_rate_limited_with_its_retry_after() {
    let identity = Identity::empty().await;
    identity
        .answer(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .await;
    let err = identity.cache().token().await.unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(30)),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_hung_identity_service_times_out() {
    let identity = Identity::issuing(3600, Duration::from_secs(30)).await;
    let cache = identity
        .builder()
        .login_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = cache.token().await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after: d, .. } if d == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_unreachable_identity_service_is_a_transport_error() {
    // Bind and drop a listener to get a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[test]
fn plain_http_to_a_remote_host_is_refused_at_build() {
    for url in ["http://identity.example.com", "http://192.168.1.10:8080"] {
        let err = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
            .identity_url(url)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{url}: {err:?}");
        assert!(err.to_string().contains("https"), "{err}");
    }
    assert!(Environment::custom("https://id.example.com", "http://api.example.com").is_err());
}

#[test]
fn environments_carry_the_myinvois_bases_as_two_settings() {
    assert_eq!(
        Environment::Sandbox.identity_url().as_str(),
        "https://preprod-api.myinvois.hasil.gov.my/"
    );
    assert_eq!(
        Environment::Sandbox.api_url().as_str(),
        "https://preprod-api.myinvois.hasil.gov.my/"
    );
    assert_eq!(
        Environment::Production.identity_url().as_str(),
        "https://api.myinvois.hasil.gov.my/"
    );
    let custom =
        Environment::custom("https://id.example.com/base", "https://api.example.com").unwrap();
    assert_eq!(
        custom.identity_url().as_str(),
        "https://id.example.com/base"
    );
    assert_eq!(custom.api_url().host_str(), Some("api.example.com"));
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .environment(Environment::Sandbox)
        .build()
        .unwrap();
    assert_eq!(cache.environment(), Some(&Environment::Sandbox));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_secret_keeps_every_token_and_the_next_login_uses_the_new_one() {
    let identity = Identity::start().await;
    let (api_server, _) = crate::support::Api::start().await;
    let cache = identity
        .builder()
        .without_login_rate_limit()
        .build()
        .unwrap();
    let clone_made_before = cache.clone();
    let client = crate::support::client(&cache, &api_server);
    let token = cache.token().await.unwrap();
    let theirs = cache.token_on_behalf_of("C1111111111").await.unwrap();

    let mut callers = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (caller, client, url) = (cache.clone(), client.clone(), api_server.uri());
        callers.spawn(async move {
            tokio::task::yield_now().await;
            if i % 2 == 0 {
                caller.token().await.map(|_| ()).map_err(|e| e.to_string())
            } else {
                match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        });
        if i == 50 {
            cache.rotate_secret("NEW-SECRET-2").unwrap();
        }
    }
    let failed: Vec<_> = callers
        .join_all()
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(identity.login_count().await, 2, "a rotation caused a login");
    assert!(cache.token().await.unwrap().same_token(&token));
    assert!(cache
        .token_on_behalf_of("C1111111111")
        .await
        .unwrap()
        .same_token(&theirs));

    // The next login, through a clone made before the rotation, carries the new secret.
    clone_made_before
        .token_on_behalf_of("C2222222222")
        .await
        .unwrap();
    let logins = identity.logins().await;
    let secret_of = |i: usize| {
        form(&logins[i])
            .into_iter()
            .find(|(k, _)| k == "client_secret")
            .map(|(_, v)| v)
    };
    assert_eq!(secret_of(0).as_deref(), Some(SECRET));
    assert_eq!(secret_of(2).as_deref(), Some("NEW-SECRET-2"));

    // An empty secret is refused and the current one stays.
    let err = cache.rotate_secret("").unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    cache.token_on_behalf_of("C3333333333").await.unwrap();
    let logins = identity.logins().await;
    let last = form(&logins[3]);
    assert!(last.contains(&("client_secret".into(), "NEW-SECRET-2".into())));
}

/// Answers `invalid_client` to the old secret (after `delay`) and a token
/// to any other: a secret being revoked while it is rotated.
struct RevokedSecret {
    delay: Duration,
}

impl wiremock::Respond for RevokedSecret {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let old = form(request).contains(&("client_secret".into(), SECRET.into()));
        if old {
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"error": "invalid_client"}))
                .set_delay(self.delay)
        } else {
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "TOKENVALUE-new-secret", "token_type": "Bearer", "expires_in": 3600,
            }))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_rotation_during_a_login_is_not_undone_by_the_old_secrets_failure() {
    let identity = Identity::empty().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(RevokedSecret {
            delay: Duration::from_millis(300),
        })
        .mount(&identity.server)
        .await;
    let cache = identity.cache();
    // A login with the old secret is under way when the secret is rotated.
    let under_way = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    crate::support::settle_until(|| async { identity.login_count().await == 1 }).await;
    cache.rotate_secret("NEW-SECRET-2").unwrap();
    let old = under_way.await.unwrap().unwrap_err();
    assert_eq!(old.oauth_code(), Some(&OAuthErrorCode::InvalidClient));
    // The old secret's failure is not answered from memory: the next call
    // logs in at once, with the new secret.
    let token = cache.token().await.unwrap();
    assert_eq!(token.secret(), "TOKENVALUE-new-secret");
    let logins = identity.logins().await;
    assert_eq!(logins.len(), 2);
    assert!(form(&logins[1]).contains(&("client_secret".into(), "NEW-SECRET-2".into())));
    assert_eq!(cache.stats().answered_from_memory, 0);
}
