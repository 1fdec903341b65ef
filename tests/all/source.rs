//! The token source trait: the middleware over a fake source (as an SDK's
//! tests would use it), and the cache behind `Arc<dyn TokenSource>`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use myinvois_auth::{AccessToken, AuthMiddleware, Error, OnBehalfOf, TokenSource};
use reqwest::StatusCode;

use crate::support::{bearers, Api, Identity};

/// Hands out `fake-1`, `fake-2`, … : a new one after each rejection it
/// takes to be about the token; records what it was told.
#[derive(Default)]
struct Fake {
    issued: AtomicUsize,
    current: Mutex<Option<AccessToken>>,
    rejected: Mutex<Vec<String>>,
    accepted: Mutex<Vec<String>>,
    retries: AtomicUsize,
    /// What `rejected` answers.
    renew: bool,
}

impl Fake {
    fn renewing() -> Self {
        Fake {
            renew: true,
            ..Fake::default()
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for Fake {
    async fn token_for(
        &self,
        on_behalf_of: Option<&OnBehalfOf>,
        _wait: Duration,
    ) -> Result<AccessToken, Error> {
        let mut current = self.current.lock().unwrap();
        if let Some(token) = &*current {
            return Ok(token.clone());
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = AccessToken::from_secret(
            format!("fake-{n}"),
            Duration::from_secs(60),
            on_behalf_of.cloned(),
        )?;
        *current = Some(token.clone());
        Ok(token)
    }

    fn rejected(&self, token: &AccessToken, method: &http::Method, path: &str) -> bool {
        self.rejected
            .lock()
            .unwrap()
            .push(format!("{} {method} {path}", token.secret()));
        if self.renew {
            self.current.lock().unwrap().take();
        }
        self.renew
    }

    fn retrying(&self, _: &AccessToken, _: &http::Method, _: &str) {
        self.retries.fetch_add(1, Ordering::SeqCst);
    }

    fn accepted(&self, token: &AccessToken, method: &http::Method, path: &str) {
        self.accepted
            .lock()
            .unwrap()
            .push(format!("{} {method} {path}", token.secret()));
    }
}

fn client_over(
    source: Arc<Fake>,
    api: &wiremock::MockServer,
) -> reqwest_middleware::ClientWithMiddleware {
    let auth = AuthMiddleware::from_source(source, api.uri()).unwrap();
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(auth)
        .build()
}

#[tokio::test]
async fn the_middleware_works_over_a_fake_source_and_reports_every_answer() {
    let (api_server, api) = Api::start().await;
    let fake = Arc::new(Fake::renewing());
    let client = client_over(Arc::clone(&fake), &api_server);
    let url = format!("{}/api/v1.0/documents/ABC/raw", api_server.uri());

    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    api.revoke("fake-1");
    // A 401: reported, a new token asked for, the call sent once more.
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        bearers(&api_server).await,
        ["fake-1", "fake-1", "fake-2"].map(|t| Some(format!("Bearer {t}")))
    );
    assert_eq!(
        *fake.rejected.lock().unwrap(),
        ["fake-1 GET /api/v1.0/documents/ABC/raw"]
    );
    assert_eq!(
        *fake.accepted.lock().unwrap(),
        [
            "fake-1 GET /api/v1.0/documents/ABC/raw",
            "fake-2 GET /api/v1.0/documents/ABC/raw"
        ]
    );
    assert_eq!(fake.retries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_fake_source_that_says_a_new_token_would_not_help_gets_the_401_back() {
    let (api_server, api) = Api::start().await;
    api.reject_all();
    let fake = Arc::new(Fake::default());
    let client = client_over(Arc::clone(&fake), &api_server);
    let response = client.get(api_server.uri()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearers(&api_server).await.len(), 1);
    assert_eq!(fake.issued.load(Ordering::SeqCst), 1);
    assert_eq!(fake.retries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_fake_sources_taxpayer_goes_out_as_onbehalfof() {
    let (api_server, _) = Api::start().await;
    let fake = Arc::new(Fake::renewing());
    let client = client_over(Arc::clone(&fake), &api_server);
    client
        .get(api_server.uri())
        .with_extension(OnBehalfOf::new("C25845632020"))
        .send()
        .await
        .unwrap();
    let seen = api_server.received_requests().await.unwrap();
    assert_eq!(seen[0].headers["onbehalfof"], "C25845632020");
    let token = fake.current.lock().unwrap().clone().unwrap();
    assert_eq!(token.on_behalf_of().unwrap().as_str(), "C25845632020");
}

#[tokio::test]
async fn the_cache_behind_the_trait_object_serves_its_cached_token_and_one_login() {
    let identity = Identity::start().await;
    let source: Arc<dyn TokenSource> = Arc::new(identity.cache());
    assert!(source.cached_token(None).is_none());
    let first = source
        .token_for(None, source.max_login_wait())
        .await
        .unwrap();
    let cached = source.cached_token(None).expect("cached after a login");
    assert!(cached.same_token(&first));
    let theirs = OnBehalfOf::new("C25845632020");
    assert!(source.cached_token(Some(&theirs)).is_none());
    let taxpayers = source
        .token_for(Some(&theirs), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(source
        .cached_token(Some(&theirs))
        .unwrap()
        .same_token(&taxpayers));
    // A 401 retires the token: the next asks log in again.
    assert!(source.rejected(&first, &http::Method::GET, "/api/v1.0/documenttypes"));
    assert!(source.cached_token(None).is_none());
    assert_eq!(identity.login_count().await, 2);
    assert_eq!(
        source.max_login_wait(),
        myinvois_auth::DEFAULT_MAX_LOGIN_WAIT
    );
}

#[test]
fn tokens_made_for_a_fake_obey_every_tokens_rules_and_never_quote_it() {
    let hour = Duration::from_secs(3600);
    for (secret, lifetime) in [
        ("", hour),
        ("has space", hour),
        ("TOKENVALUE\n", hour),
        ("ok", Duration::ZERO),
        ("ok", myinvois_auth::MAX_TOKEN_LIFETIME + hour),
    ] {
        let err = AccessToken::from_secret(secret, lifetime, None).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        assert!(
            secret.len() < 3 || !err.to_string().contains(secret),
            "{err}"
        );
    }
    let token = AccessToken::from_secret("abc", hour, None).unwrap();
    assert!(!format!("{token:?}").contains("abc"));
}
