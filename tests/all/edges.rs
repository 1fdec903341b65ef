//! The guarantees at the edges of a cache's life: a cache rebuilt, many
//! taxpayers meeting one endpoint at once, IDs of any shape, a token that
//! names another taxpayer, text from configuration, a short refresh window.

use std::time::Duration;

use myinvois_auth::Error;
use tokio::time::Instant;
use wiremock::ResponseTemplate;

use crate::support::Identity;

#[tokio::test(start_paused = true)]
async fn the_login_budget_outlives_the_cache_that_spent_it() {
    let identity = Identity::start().await;
    let build = || {
        identity
            .builder()
            .login_rate_limit(1, Duration::from_secs(60))
            .max_login_wait(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let cache = build();
    cache.token().await.unwrap();
    drop(cache);
    // A cache built per job: its own memory store holds no token, and the
    // client ID's window still holds the login the first one made.
    let rebuilt = build();
    let err = rebuilt.token().await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(identity.login_count().await, 1);
    // Once the window has passed, the rebuilt cache logs in.
    tokio::time::advance(Duration::from_secs(60)).await;
    rebuilt.token().await.unwrap();
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test(start_paused = true)]
async fn a_429s_hold_outlives_the_cache_that_met_it() {
    let identity = Identity::empty().await;
    identity
        .answer(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .await;
    let build = || {
        identity
            .builder()
            .max_login_wait(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let cache = build();
    let err = cache.token().await.unwrap_err();
    let held_at = Instant::now();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    drop(cache);
    identity.server.reset().await;
    identity.issue(3600, Duration::ZERO).await;
    // Refused at once while the hold ends beyond the caller's wait (1 s).
    for second in 0..29 {
        let rebuilt = build();
        let err = rebuilt.token().await.unwrap_err();
        assert!(
            matches!(err, Error::RateLimited { retry_after: Some(d) } if d <= Duration::from_secs(30 - second)),
            "{second} s after the 429: {err:?}"
        );
        drop(rebuilt);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(identity.login_count().await, 0, "a login inside the 30 s");
    // 29 s in, the hold ends within the wait: the login goes out at 30 s.
    build().token().await.unwrap();
    assert_eq!(held_at.elapsed(), Duration::from_secs(30));
    assert_eq!(identity.login_count().await, 1);
}

/// An API whose `forbidden` paths answer 401 to every token, the rest 200,
/// and a cache's client for it.
struct Rejecting {
    identity: Identity,
    api: crate::support::Api,
    cache: myinvois_auth::TokenCache,
    client: reqwest_middleware::ClientWithMiddleware,
    server: wiremock::MockServer,
}

impl Rejecting {
    async fn start() -> Self {
        let identity = Identity::start().await;
        let (server, api) = crate::support::Api::start().await;
        let cache = identity.builder().build().unwrap();
        let client = crate::support::client(&cache, &server);
        Rejecting {
            identity,
            api,
            cache,
            client,
            server,
        }
    }

    async fn get(&self, path: &str, taxpayer: Option<&str>) -> reqwest::StatusCode {
        let request = self.client.get(format!("{}{path}", self.server.uri()));
        let request = match taxpayer {
            Some(tin) => request.with_extension(myinvois_auth::OnBehalfOf::new(tin)),
            None => request,
        };
        request.send().await.unwrap().status()
    }
}

#[tokio::test(start_paused = true)]
async fn twelve_taxpayers_meeting_an_always_401_endpoint_at_once_cost_at_most_one_login() {
    let fixture = std::sync::Arc::new(Rejecting::start().await);
    fixture.api.reject_paths_containing("/forbidden");
    fixture.api.delay_rejections(Duration::from_millis(50));
    let taxpayers: Vec<String> = (0..12).map(|i| format!("C81000000{i:02}")).collect();
    for tin in &taxpayers {
        let status = fixture.get("/api/v1.0/documenttypes", Some(tin)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(fixture.identity.login_count().await, 12);
    // A window later, so that the budget does not decide the count.
    tokio::time::advance(Duration::from_secs(61)).await;
    let mut calls = tokio::task::JoinSet::new();
    for tin in taxpayers.clone() {
        let fixture = std::sync::Arc::clone(&fixture);
        calls.spawn(async move { fixture.get("/api/v1.0/forbidden", Some(&tin)).await });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), 401);
    }
    let extra = fixture.identity.login_count().await - 12;
    assert!(extra <= 1, "{extra} logins for one always-401 endpoint");
}

/// 20 IDs of one shape at an endpoint that answers 401 to every token for
/// them: the budget pays for one renewal, not one per ID.
async fn ids_at_an_always_401_endpoint(ids: &[String]) {
    let fixture = Rejecting::start().await;
    fixture.api.reject_paths_containing("/raw");
    assert_eq!(fixture.get("/api/v1.0/documenttypes", None).await, 200);
    for id in ids {
        let status = fixture
            .get(&format!("/api/v1.0/documents/{id}/raw"), None)
            .await;
        assert_eq!(status, 401, "{id}");
    }
    let logins = fixture.identity.login_count().await;
    assert!(
        logins <= 2,
        "{logins} logins for {} IDs like {}",
        ids.len(),
        ids[0]
    );
    // A real revocation is still recovered with one login.
    let token = fixture.cache.token().await.unwrap();
    fixture.api.revoke(token.secret());
    assert_eq!(fixture.get("/api/v1.0/documenttypes", None).await, 200);
    assert_eq!(fixture.identity.login_count().await, logins + 1);
}

#[tokio::test(start_paused = true)]
async fn letter_only_ids_are_one_endpoint() {
    let ids: Vec<String> = (0..20u8)
        .map(|i| format!("DOC{}XYZ", (b'A' + i) as char).repeat(2))
        .collect();
    ids_at_an_always_401_endpoint(&ids).await;
}

#[tokio::test(start_paused = true)]
async fn uuids_are_one_endpoint() {
    let ids: Vec<String> = (0..20)
        .map(|i| format!("{i:08x}-aaaa-4bbb-8ccc-{:012x}", i * 7919))
        .collect();
    ids_at_an_always_401_endpoint(&ids).await;
}

#[tokio::test(start_paused = true)]
async fn numeric_ids_are_one_endpoint() {
    let ids: Vec<String> = (0..20).map(|i| format!("{}", 1000 + i)).collect();
    ids_at_an_always_401_endpoint(&ids).await;
}

#[tokio::test(start_paused = true)]
async fn successes_between_rejections_at_one_endpoint_do_not_cost_a_login_each() {
    let fixture = Rejecting::start().await;
    fixture.api.reject_paths_containing("/BADDOC1/");
    let ok = |n: u32| format!("/api/v1.0/documents/OKDOC{n}/details");
    let bad = "/api/v1.0/documents/BADDOC1/details";
    assert_eq!(fixture.get(&ok(1), None).await, 200);
    assert_eq!(fixture.get(bad, None).await, 401);
    for n in 2..12 {
        assert_eq!(fixture.get(&ok(n), None).await, 200);
        assert_eq!(fixture.get(bad, None).await, 401);
    }
    let logins = fixture.identity.login_count().await;
    assert!(logins <= 2, "{logins} logins");
    // Then a real revocation: exactly one login, and the call succeeds.
    let token = fixture.cache.token().await.unwrap();
    fixture.api.revoke(token.secret());
    assert_eq!(fixture.get(&ok(1), None).await, 200);
    assert_eq!(fixture.identity.login_count().await, logins + 1);
}

/// A compact JWT with these claims (the signature is not checked).
fn jwt(claims: serde_json::Value) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("e30.{payload}.c2ln")
}

/// An identity service that answers every login with `token`.
async fn issuing_only(token: &str) -> Identity {
    let identity = Identity::empty().await;
    identity
        .answer(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 3600,
        })))
        .await;
    identity
}

#[tokio::test(start_paused = true)]
async fn a_token_naming_another_taxpayer_is_never_served() {
    let (c1, c2) = ("C1000000001", "C2000000002");
    let identity = issuing_only(&jwt(serde_json::json!({ "TaxpayerTIN": c2 }))).await;
    let (api_server, _api) = crate::support::Api::start().await;
    let cache = identity.cache();
    let client = crate::support::client(&cache, &api_server);
    for call in 0..20 {
        let err = client
            .get(format!("{}/api/v1.0/documenttypes", api_server.uri()))
            .with_extension(myinvois_auth::OnBehalfOf::new(c1))
            .send()
            .await
            .unwrap_err();
        match Error::find_in(&err) {
            Some(Error::WrongTaxpayer {
                expected,
                issued_for,
                ..
            }) => assert_eq!((expected.as_str(), issued_for.as_str()), (c1, c2)),
            other => panic!("call {call}: {other:?}"),
        }
        let shown = err.to_string();
        assert!(shown.contains(c1) && shown.contains(c2), "{shown}");
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(
        identity.login_count().await,
        1,
        "remembered like a lasting failure"
    );
    assert!(
        api_server.received_requests().await.unwrap().is_empty(),
        "the token reached the API"
    );
    // The TIN of `TIN:ROB` is what the claim names.
    let rob = format!("{c2}:201901234567");
    assert!(cache.token_on_behalf_of(&rob).await.is_ok());
    // The plain login is checked when the builder names its TIN.
    let plain = identity.builder().taxpayer_tin(c1).build().unwrap();
    let err = plain.token().await.unwrap_err();
    assert!(matches!(err, Error::WrongTaxpayer { .. }), "{err:?}");
    assert!(
        identity.cache().token().await.is_ok(),
        "unchecked without it"
    );
    // For an identity service that puts something else there: switched off.
    let unchecked = identity
        .builder()
        .check_token_taxpayer(false)
        .build()
        .unwrap();
    assert!(unchecked.token_on_behalf_of(c1).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_stored_token_naming_another_taxpayer_is_refused_and_a_login_happens() {
    use myinvois_auth::{Loaded, StoredToken};
    let (c1, c2) = ("C1000000001", "C2000000002");
    let identity = issuing_only(&jwt(serde_json::json!({ "TaxpayerTIN": c1 }))).await;
    let theirs = jwt(serde_json::json!({ "TaxpayerTIN": c2, "n": 1 }));
    let store = crate::support::Hooked::on_load(move |_| {
        let now = chrono::Utc::now();
        let token = StoredToken::new(
            theirs.clone(),
            now,
            now + chrono::Duration::hours(1),
            Duration::from_secs(3600),
        );
        Loaded::new(Some(token), None)
    });
    let cache = identity
        .builder()
        .token_store(std::sync::Arc::new(store))
        .build()
        .unwrap();
    let token = cache.token_on_behalf_of(c1).await.unwrap();
    assert_eq!(token.claims().unwrap().taxpayer_tin(), Some(c1));
    assert_eq!(identity.login_count().await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stored_scope_is_scrubbed_of_the_client_secret() {
    use crate::support::{LogCapture, SECRET};
    use myinvois_auth::{Loaded, StoredToken};
    let identity = Identity::start().await;
    let store = crate::support::Hooked::on_load(|_| {
        let now = chrono::Utc::now();
        let token = StoredToken::new(
            "STOREDTOKEN",
            now,
            now + chrono::Duration::hours(1),
            Duration::from_secs(3600),
        )
        .with_scope(Some(format!("InvoicingAPI {SECRET}")));
        Loaded::new(Some(token), None)
    });
    let logs = LogCapture::start();
    let cache = identity
        .builder()
        .token_store(std::sync::Arc::new(store))
        .build()
        .unwrap();
    let token = cache.token().await.unwrap();
    assert_eq!(
        identity.login_count().await,
        0,
        "the stored token was not taken"
    );
    let scope = token.scope().unwrap();
    assert!(scope.starts_with("InvoicingAPI"), "{scope}");
    for shown in [scope.to_owned(), format!("{token:?}"), logs.text()] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
    assert!(logs.text().contains("token taken from the token store"));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_before_below_the_expiry_margin_still_refreshes_ahead() {
    use crate::sim::{Issuing, SimIdentity};
    let issuing = Issuing {
        lifetime: Duration::from_secs(20),
        truncate_from: None,
        delay: Duration::from_millis(400),
    };
    let sim = SimIdentity::start_issuing(1000, Duration::from_secs(60), issuing).await;
    let cache = myinvois_auth::TokenCache::builder(myinvois_auth::Credentials::new(
        crate::support::CLIENT_ID,
        crate::support::SECRET,
    ))
    .identity_url(&sim.uri)
    .without_login_timeout()
    .refresh_before(Duration::from_secs(1))
    .without_login_rate_limit()
    .build()
    .unwrap();
    cache.token().await.unwrap();
    // 60 s of steady calls, one every 100 ms: none waits for a login (the
    // server's 400 ms run on the test's clock, so a wait shows).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::advance(Duration::from_millis(100)).await;
        let called = Instant::now();
        let token = cache.token().await.unwrap();
        assert_eq!(
            called.elapsed(),
            Duration::ZERO,
            "waited for a login {:?} in",
            started.elapsed()
        );
        assert!(
            sim.accepts(token.secret(), None),
            "an expired token was served"
        );
    }
    assert!(sim.login_times().len() >= 4, "no refresh ahead happened");
}

#[tokio::test]
async fn control_characters_in_the_client_id_or_scope_are_refused_and_forge_no_log_line() {
    use crate::support::{LogCapture, SECRET};
    use myinvois_auth::{Credentials, EnvProblem, TokenCache, TokenCacheBuilder};
    let logs = LogCapture::start();
    let forged = "FORGED level=ERROR the identity service is down";
    let cases = [
        (format!("erp\n{forged}"), None, "client ID"),
        (format!("erp\r\n{forged}"), None, "client ID"),
        (
            "erp".to_owned(),
            Some(format!("InvoicingAPI\r\n{forged}")),
            "scope",
        ),
        (
            "erp".to_owned(),
            Some(format!("InvoicingAPI\n{forged}")),
            "scope",
        ),
    ];
    for (client_id, scope, field) in cases {
        let mut builder = TokenCache::builder(Credentials::new(client_id, SECRET))
            .identity_url("http://127.0.0.1:9");
        if let Some(scope) = scope {
            builder = builder.scope(scope);
        }
        match builder.build() {
            Err(Error::InvalidConfig(why)) => {
                assert!(why.contains(field), "{why}");
                assert!(!why.contains("FORGED"), "{why}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    for name in ["MYINVOIS_CLIENT_ID", "MYINVOIS_SCOPE"] {
        let vars = |wanted: &str| -> Option<std::ffi::OsString> {
            match wanted {
                "MYINVOIS_CLIENT_ID" if name == wanted => Some(format!("erp\n{forged}").into()),
                "MYINVOIS_SCOPE" if name == wanted => Some(format!("A\r\n{forged}").into()),
                "MYINVOIS_CLIENT_ID" => Some("erp".into()),
                "MYINVOIS_CLIENT_SECRET" => Some(SECRET.into()),
                "MYINVOIS_ENVIRONMENT" => Some("sandbox".into()),
                _ => None,
            }
        };
        match TokenCacheBuilder::from_vars(vars) {
            Err(
                err @ Error::Environment {
                    name: named,
                    problem: EnvProblem::Expected(_),
                },
            ) => {
                assert_eq!(named, name);
                assert!(!err.to_string().contains("FORGED"), "{err}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let text = logs.text();
    assert!(
        !text.lines().any(|line| line.starts_with("FORGED")),
        "{text}"
    );
}
