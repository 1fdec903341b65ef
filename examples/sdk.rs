//! Another SDK built on this crate: it takes its tokens from any
//! `Arc<dyn TokenSource>`, so its users hand it their `TokenCache` (shared
//! with the rest of their application), and its own tests hand it a fake.
//!
//! ```text
//! cargo run --example sdk
//! ```
//!
//! Runs with no credentials against loopback stand-ins. It shows:
//!
//! 1. the SDK over the application's `TokenCache`: its calls and the
//!    application's own share one login;
//! 2. the same SDK over a fake source, as its tests would run it: no
//!    identity service at all, the fake's token on every call, and the
//!    API's answers reported back to the source (`accepted`, `rejected`).
//!
//! The example checks each claim and exits with an error if one is false.

#[path = "standins/mod.rs"]
mod standins;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use myinvois_auth::{AccessToken, Credentials, Error, OnBehalfOf, TokenCache, TokenSource};
use standins::{ensure, DemoResult, StandIns, CLIENT_ID, CLIENT_SECRET};
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The SDK: a client of one MyInvois API call, taking any token source.
mod document_types {
    use std::sync::Arc;

    use myinvois_auth::{AuthMiddleware, OnBehalfOf, TokenSource};
    use reqwest_middleware::ClientWithMiddleware;

    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

    /// Lists MyInvois document types, authenticated by `tokens`.
    pub struct DocumentTypes {
        http: ClientWithMiddleware,
        url: String,
    }

    impl DocumentTypes {
        /// `tokens` is whatever gives the application's MyInvois tokens;
        /// `api_url` is the MyInvois API (it alone receives them).
        pub fn new(tokens: Arc<dyn TokenSource>, api_url: &str) -> Result<Self> {
            let auth = AuthMiddleware::from_source(tokens, api_url)?;
            Ok(DocumentTypes {
                http: reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                    .with(auth)
                    .build(),
                url: format!("{}/api/v1.0/documenttypes", api_url.trim_end_matches('/')),
            })
        }

        /// The HTTP status of the list, as the taxpayer itself or, for an
        /// intermediary, on behalf of `taxpayer`.
        pub async fn status(&self, taxpayer: Option<&str>) -> Result<u16> {
            let mut call = self.http.get(&self.url);
            if let Some(taxpayer) = taxpayer {
                call = call.with_extension(OnBehalfOf::new(taxpayer));
            }
            Ok(call.send().await?.status().as_u16())
        }
    }
}

use document_types::DocumentTypes;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdk example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> DemoResult {
    over_the_applications_cache().await?;
    over_a_fake().await
}

async fn over_the_applications_cache() -> DemoResult {
    let stand_ins = StandIns::start().await;
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .identity_url(stand_ins.identity_url())
        .build()?;
    let sdk = DocumentTypes::new(Arc::new(cache.clone()), &stand_ins.api_url())?;
    for _ in 0..3 {
        let status = sdk.status(None).await?;
        ensure(status == 200, || {
            format!("the SDK's call answered {status}")
        })?;
    }
    // The application's own use of the cache costs no second login.
    let _ = cache.token().await?;
    println!(
        "1. the SDK over the application's TokenCache: 3 calls and the application's own, {} login",
        stand_ins.logins()
    );
    ensure(stand_ins.logins() == 1, || {
        format!("expected 1 login, saw {}", stand_ins.logins())
    })?;
    Ok(())
}

/// What an SDK's tests pass instead of a cache: one fixed token, and a
/// count of what the API made of it.
struct Fake {
    token: AccessToken,
    accepted: AtomicUsize,
    rejected: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenSource for Fake {
    async fn token_for(&self, _: Option<&OnBehalfOf>, _: Duration) -> Result<AccessToken, Error> {
        Ok(self.token.clone())
    }
    fn cached_token(&self, _: Option<&OnBehalfOf>) -> Option<AccessToken> {
        Some(self.token.clone())
    }
    fn rejected(&self, _: &AccessToken, _: &http::Method, _: &str) -> bool {
        self.rejected.fetch_add(1, Ordering::SeqCst);
        false // a new token would be the same one: hand the 401 back
    }
    fn accepted(&self, _: &AccessToken, _: &http::Method, _: &str) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
    }
}

async fn over_a_fake() -> DemoResult {
    // The SDK's test API: 200 to the fake token, 401 to anything else.
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer sdk-test-token"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&api)
        .await;
    let fake = Arc::new(Fake {
        token: AccessToken::from_secret("sdk-test-token", Duration::from_secs(3600), None)?,
        accepted: AtomicUsize::new(0),
        rejected: AtomicUsize::new(0),
    });
    let sdk = DocumentTypes::new(fake.clone(), &api.uri())?;
    let status = sdk.status(Some("C25845632020")).await?;
    ensure(status == 200, || {
        format!("the SDK's call answered {status}")
    })?;
    let seen = api.received_requests().await.unwrap_or_default();
    ensure(
        seen.len() == 1
            && seen[0]
                .headers
                .get("onbehalfof")
                .is_some_and(|v| v == "C25845632020"),
        || "the call did not act for the taxpayer".into(),
    )?;
    ensure(fake.accepted.load(Ordering::SeqCst) == 1, || {
        "the answer was not reported to the source".into()
    })?;
    // An API that refuses the token: the 401 is reported, and handed back
    // without a retry since the fake says a new token would not help.
    let refusing = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&refusing)
        .await;
    let sdk = DocumentTypes::new(fake.clone(), &refusing.uri())?;
    let status = sdk.status(None).await?;
    let calls = refusing.received_requests().await.unwrap_or_default().len();
    ensure(status == 401 && calls == 1, || {
        format!("expected one call answered 401, saw {calls} ending in {status}")
    })?;
    ensure(fake.rejected.load(Ordering::SeqCst) == 1, || {
        "the 401 was not reported to the source".into()
    })?;
    println!(
        "2. the SDK over a fake source: no login, the fake's token, each answer reported to it"
    );
    Ok(())
}
