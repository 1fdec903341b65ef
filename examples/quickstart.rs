//! Quickstart: a [`TokenCache`] and an [`AuthMiddleware`] in front of MyInvois.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With no credentials (the default) it needs no network: it starts a fake
//! MyInvois identity service and a fake MyInvois API on loopback, with
//! 4-second tokens, and walks through what the cache does for you:
//!
//! 1. the first call logs in;
//! 2. further calls reuse the cached token (no login);
//! 3. close to expiry, a call is served at once with the old token while a
//!    background refresh fetches the next one;
//! 4. a token the API rejects (401) is replaced by one login and one retry;
//! 5. an intermediary call (`OnBehalfOf`) gets its own login with the
//!    `onbehalfof` header, and the API call carries that header too;
//! 6. the cache can be used directly (`cache.token()`), e.g. from another SDK.
//!
//! Every step checks what it claims against the fake services' records (how
//! many logins, which token the API saw) and the example exits with an error
//! if anything differs. Tokens are named by number ("token #2"), never printed.
//!
//! With real credentials it is configured by `TokenCacheBuilder::from_env()`
//! instead, as an application would be: it logs in to the environment
//! named (`sandbox` is LHDN's pre-production), prints the token's expiry
//! and scope, and makes one authenticated call:
//!
//! ```text
//! MYINVOIS_CLIENT_ID=… MYINVOIS_CLIENT_SECRET=… MYINVOIS_ENVIRONMENT=sandbox \
//!     cargo run --example quickstart
//! # optionally: MYINVOIS_SCOPE=InvoicingAPI
//! # and, as an intermediary: MYINVOIS_ON_BEHALF_OF=C25845632020
//! ```
//!
//! With neither `MYINVOIS_CLIENT_ID` nor `MYINVOIS_CLIENT_SECRET` set it
//! runs the offline demo; with either set, `from_env` names any variable
//! that is missing or unusable.
//!
//! Set `RUST_LOG=myinvois_auth=debug` to see the cache's own log lines.

use std::collections::HashMap;
use std::env;
use std::error::Error as StdError;
use std::fmt;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use myinvois_auth::{
    AccessToken, AuthMiddleware, Credentials, OnBehalfOf, TokenCache, TokenCacheBuilder,
    ENV_CLIENT_ID, ENV_CLIENT_SECRET,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

type DemoResult<T = ()> = Result<T, Box<dyn StdError + Send + Sync>>;

const DOCUMENT_TYPES_PATH: &str = "/api/v1.0/documenttypes";
const SCOPE: &str = "InvoicingAPI";
const TAXPAYER: &str = "C25845632020";

/// The fake system user the demo logs in as.
const DEMO_CLIENT_ID: &str = "demo-erp-system";
const DEMO_CLIENT_SECRET: &str = "demo-client-secret";
/// The fake identity service's token lifetime, and how long it takes to answer.
const TOKEN_LIFETIME: Duration = Duration::from_secs(4);
const LOGIN_DELAY: Duration = Duration::from_millis(150);
/// Refresh in the background once a token has this little time left.
const REFRESH_BEFORE: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let outcome = if credentials_in_environment() {
        run_real().await
    } else {
        run_offline_demo().await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Logs only when asked to, e.g. `RUST_LOG=myinvois_auth=debug`.
fn init_tracing() {
    if env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
}

/// `error: cause: cause …`
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors repeat their source in their own message; say it once.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

fn ensure(ok: bool, failure: impl FnOnce() -> String) -> DemoResult {
    if ok {
        Ok(())
    } else {
        Err(failure().into())
    }
}

fn expiry_and_scope(token: &AccessToken) -> String {
    let left = token.expires_at() - chrono::Utc::now();
    format!(
        "expires {} UTC (in {:.1} s), scope {:?}",
        token.expires_at().format("%H:%M:%S%.3f"),
        left.num_milliseconds() as f64 / 1000.0,
        token.scope().unwrap_or("(none)"),
    )
}

// ---------------------------------------------------------------------------
// With real credentials: configured from the environment.
// ---------------------------------------------------------------------------

/// Either credential variable set: a real run, configured by `from_env`
/// (which names whatever else is missing). Neither: the offline demo.
fn credentials_in_environment() -> bool {
    [ENV_CLIENT_ID, ENV_CLIENT_SECRET]
        .iter()
        .any(|name| env::var_os(name).is_some_and(|v| !v.is_empty()))
}

async fn run_real() -> DemoResult {
    let cache = TokenCacheBuilder::from_env()?.build()?;
    let environment = cache
        .environment()
        .ok_or("from_env always names an environment")?;
    let document_types = environment.api_url().join(DOCUMENT_TYPES_PATH)?;
    println!(
        "Logging in to MyInvois ({environment:?}) as client {}",
        cache.client_id()
    );
    let on_behalf_of = env::var("MYINVOIS_ON_BEHALF_OF")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let token = match &on_behalf_of {
        Some(tin) => cache.token_on_behalf_of(tin).await?,
        None => cache.token().await?,
    };
    match &on_behalf_of {
        Some(tin) => println!(
            "Logged in on behalf of {tin}: token {}",
            expiry_and_scope(&token)
        ),
        None => println!("Logged in: token {}", expiry_and_scope(&token)),
    }

    let client = ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(cache))
        .build();
    let mut request = client.get(document_types.clone());
    if let Some(tin) = &on_behalf_of {
        request = request.with_extension(OnBehalfOf::new(tin));
    }
    let status = request.send().await?.status();
    println!("GET {document_types} -> {status}");
    ensure(status.is_success(), || {
        format!("MyInvois answered {status}")
    })
}

// ---------------------------------------------------------------------------
// Without credentials: a fake MyInvois on loopback.
// ---------------------------------------------------------------------------

/// What the fake identity service issued and what the fake API saw.
#[derive(Default)]
struct FakeMyInvois {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    /// Login `n` issued token #`n + 1`.
    logins: Vec<IssuedToken>,
    /// API calls not yet inspected by the demo.
    api_calls: Vec<ApiCall>,
}

struct IssuedToken {
    secret: String,
    on_behalf_of: Option<String>,
    expires: Instant,
    revoked: bool,
}

/// One request as the fake API saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiCall {
    status: u16,
    /// The number of the token it carried, if it carried a known one.
    token: Option<usize>,
    on_behalf_of: Option<String>,
}

impl ApiCall {
    fn ok(token: usize) -> Self {
        ApiCall {
            status: 200,
            token: Some(token),
            on_behalf_of: None,
        }
    }

    fn unauthorized(token: usize) -> Self {
        ApiCall {
            status: 401,
            ..ApiCall::ok(token)
        }
    }

    fn on_behalf_of(self, taxpayer: &str) -> Self {
        ApiCall {
            on_behalf_of: Some(taxpayer.to_owned()),
            ..self
        }
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} with ", self.status)?;
        match self.token {
            Some(n) => write!(f, "token #{n}")?,
            None => f.write_str("no known token")?,
        }
        if let Some(taxpayer) = &self.on_behalf_of {
            write!(f, ", onbehalfof: {taxpayer}")?;
        }
        Ok(())
    }
}

impl FakeMyInvois {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Issues the next token and returns its secret.
    fn issue(&self, on_behalf_of: Option<String>) -> String {
        let mut state = self.state();
        let number = state.logins.len() + 1;
        let secret = format!("fake-token-{number}");
        state.logins.push(IssuedToken {
            secret: secret.clone(),
            on_behalf_of,
            expires: Instant::now() + TOKEN_LIFETIME,
            revoked: false,
        });
        secret
    }

    /// Checks a call's bearer token and `onbehalfof` header, and records it.
    fn authorize(&self, bearer: Option<&str>, on_behalf_of: Option<String>) -> u16 {
        let mut state = self.state();
        let found = bearer.and_then(|b| state.logins.iter().position(|t| t.secret == b));
        let valid = found.is_some_and(|i| {
            let token = &state.logins[i];
            !token.revoked && Instant::now() < token.expires && token.on_behalf_of == on_behalf_of
        });
        let status = if valid { 200 } else { 401 };
        state.api_calls.push(ApiCall {
            status,
            token: found.map(|i| i + 1),
            on_behalf_of,
        });
        status
    }

    fn login_count(&self) -> usize {
        self.state().logins.len()
    }

    /// The `onbehalfof` header login #`number` carried.
    fn login_on_behalf_of(&self, number: usize) -> Option<String> {
        self.state().logins.get(number - 1)?.on_behalf_of.clone()
    }

    /// The number of a token the cache holds (0 if this service never issued it).
    fn number_of(&self, token: &AccessToken) -> usize {
        self.state()
            .logins
            .iter()
            .position(|t| t.secret == token.secret())
            .map_or(0, |i| i + 1)
    }

    /// From now on the API rejects token #`number`.
    fn revoke(&self, number: usize) {
        if let Some(token) = self.state().logins.get_mut(number - 1) {
            token.revoked = true;
        }
    }

    fn take_api_calls(&self) -> Vec<ApiCall> {
        std::mem::take(&mut self.state().api_calls)
    }
}

fn header(request: &Request, name: &str) -> Option<String> {
    let value = request.headers.get(name)?.to_str().ok()?;
    Some(value.to_owned())
}

/// `POST /connect/token`: OAuth 2.0 client credentials, optional `onbehalfof`.
struct IdentityService(Arc<FakeMyInvois>);

impl Respond for IdentityService {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let field = |name: &str| form.get(name).map(String::as_str);
        if field("grant_type") != Some("client_credentials") {
            return oauth_error("unsupported_grant_type");
        }
        if field("client_id") != Some(DEMO_CLIENT_ID)
            || field("client_secret") != Some(DEMO_CLIENT_SECRET)
        {
            return oauth_error("invalid_client");
        }
        if field("scope").is_some_and(|s| s != SCOPE) {
            return oauth_error("invalid_scope");
        }
        let access_token = self.0.issue(header(request, "onbehalfof"));
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME.as_secs(),
                "scope": SCOPE,
            }))
            .set_delay(LOGIN_DELAY)
    }
}

fn oauth_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({ "error": code }))
}

/// `GET /api/v1.0/documenttypes`: 200 for a valid token used as issued, else 401.
struct DocumentTypesApi(Arc<FakeMyInvois>);

impl Respond for DocumentTypesApi {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let authorization = header(request, "authorization");
        let bearer = authorization
            .as_deref()
            .and_then(|v| v.strip_prefix("Bearer "));
        match self.0.authorize(bearer, header(request, "onbehalfof")) {
            200 => ResponseTemplate::new(200).set_body_json(json!({
                "result": [{ "id": 1, "invoiceTypeCode": 1, "description": "Invoice" }]
            })),
            status => ResponseTemplate::new(status)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#),
        }
    }
}

/// The demo's fixtures: the fake services, the cache and the client.
struct Demo {
    fake: Arc<FakeMyInvois>,
    cache: TokenCache,
    client: ClientWithMiddleware,
    url: String,
    /// Kept alive for the whole demo: dropping a server stops it.
    _servers: [MockServer; 2],
}

impl Demo {
    async fn start() -> DemoResult<Self> {
        let fake = Arc::new(FakeMyInvois::default());
        let identity = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/connect/token"))
            .respond_with(IdentityService(Arc::clone(&fake)))
            .mount(&identity)
            .await;
        let api = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(DOCUMENT_TYPES_PATH))
            .respond_with(DocumentTypesApi(Arc::clone(&fake)))
            .mount(&api)
            .await;

        let cache = TokenCache::builder(Credentials::new(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET))
            .identity_url(identity.uri())
            .scope(SCOPE)
            .refresh_before(REFRESH_BEFORE)
            // 4-second tokens need more logins than MyInvois' 12 a minute
            // (the default budget); real one-hour tokens need one an hour.
            .login_rate_limit(60, Duration::from_secs(1))
            .build()?;
        let client = ClientBuilder::new(reqwest::Client::new())
            .with(AuthMiddleware::with_api_url(cache.clone(), api.uri())?)
            .build();
        println!("Fake identity service at {}", identity.uri());
        println!("Fake MyInvois API at      {}", api.uri());
        println!(
            "Tokens live {} s; the cache refreshes them {} s before expiry.\n",
            TOKEN_LIFETIME.as_secs(),
            REFRESH_BEFORE.as_secs()
        );
        Ok(Demo {
            fake,
            cache,
            client,
            url: format!("{}{DOCUMENT_TYPES_PATH}", api.uri()),
            _servers: [identity, api],
        })
    }

    /// `GET documenttypes` through the middleware; returns what the API saw
    /// and how long the call took.
    async fn get(&self, on_behalf_of: Option<&str>) -> DemoResult<(Vec<ApiCall>, Duration)> {
        let mut request = self.client.get(&self.url);
        if let Some(taxpayer) = on_behalf_of {
            request = request.with_extension(OnBehalfOf::new(taxpayer));
        }
        let started = Instant::now();
        let status = request.send().await?.status();
        let elapsed = started.elapsed();
        let calls = self.fake.take_api_calls();
        let last = calls.last().map(|c| c.status);
        ensure(last == Some(status.as_u16()), || {
            format!("the client got {status} but the API last answered {last:?}")
        })?;
        Ok((calls, elapsed))
    }

    /// A call that must reach the API exactly as `expected` says.
    async fn expect_get(
        &self,
        on_behalf_of: Option<&str>,
        expected: &[ApiCall],
    ) -> DemoResult<Duration> {
        let (calls, elapsed) = self.get(on_behalf_of).await?;
        ensure(calls == expected, || {
            format!("expected the API to see {expected:?}, it saw {calls:?}")
        })?;
        let seen: Vec<String> = calls.iter().map(ApiCall::to_string).collect();
        println!("   GET documenttypes -> API saw: {}", seen.join(", then "));
        Ok(elapsed)
    }

    fn expect_logins(&self, expected: usize) -> DemoResult {
        let logins = self.fake.login_count();
        println!("   logins so far: {logins}");
        ensure(logins == expected, || {
            format!("expected {expected} logins by now, the identity service saw {logins}")
        })
    }

    async fn first_login(&self) -> DemoResult {
        println!("1. First call: no token yet, so the cache logs in");
        self.expect_get(None, &[ApiCall::ok(1)]).await?;
        self.expect_logins(1)
    }

    async fn cached_calls(&self) -> DemoResult {
        println!("2. Three more calls: the cached token is reused");
        for _ in 0..3 {
            self.expect_get(None, &[ApiCall::ok(1)]).await?;
        }
        self.expect_logins(1)
    }

    async fn refresh_ahead_of_expiry(&self) -> DemoResult {
        let old = self.cache.token().await?;
        let old_number = self.fake.number_of(&old);
        println!(
            "3. Refresh ahead of expiry: token #{old_number} {}",
            expiry_and_scope(&old)
        );
        // expires_at() is when the cache stops serving it, a quarter of this
        // short lifetime (EXPIRY_MARGIN for real tokens) before it ends.
        let wake = old.expires_at() - chrono::Duration::milliseconds(750);
        let nap = (wake - chrono::Utc::now()).to_std().unwrap_or_default();
        println!(
            "   sleeping {:.1} s, into the last {} s of its life",
            nap.as_secs_f64(),
            REFRESH_BEFORE.as_secs()
        );
        tokio::time::sleep(nap).await;

        let elapsed = self.expect_get(None, &[ApiCall::ok(old_number)]).await?;
        println!(
            "   answered in {} ms with the old token (a login takes {} ms): \
             the refresh runs in the background",
            elapsed.as_millis(),
            LOGIN_DELAY.as_millis()
        );
        let new = self.wait_for_refresh(&old).await?;
        let new_number = self.fake.number_of(&new);
        println!(
            "   background refresh done: token #{new_number} {}",
            expiry_and_scope(&new)
        );
        ensure(new.expires_at() > old.expires_at(), || {
            "the refreshed token does not outlive the old one".to_owned()
        })?;
        self.expect_get(None, &[ApiCall::ok(new_number)]).await?;
        self.expect_logins(old_number + 1)
    }

    /// Waits (a little) for the cache to swap in the refreshed token.
    async fn wait_for_refresh(&self, old: &AccessToken) -> DemoResult<AccessToken> {
        let deadline = Instant::now() + LOGIN_DELAY + Duration::from_secs(1);
        loop {
            let token = self.cache.token().await?;
            if !token.same_token(old) {
                return Ok(token);
            }
            ensure(Instant::now() < deadline, || {
                "no background refresh happened".to_owned()
            })?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn revoked_token(&self) -> DemoResult {
        let current = self.fake.number_of(&self.cache.token().await?);
        println!("4. Revoked token: the API now rejects token #{current}");
        self.fake.revoke(current);
        let next = self.fake.login_count() + 1;
        self.expect_get(None, &[ApiCall::unauthorized(current), ApiCall::ok(next)])
            .await?;
        println!("   the middleware logged in again and retried once: the caller got 200");
        self.expect_logins(next)
    }

    async fn on_behalf_of(&self) -> DemoResult {
        println!("5. Intermediary call with OnBehalfOf(\"{TAXPAYER}\"): a login of its own");
        let plain = self.fake.number_of(&self.cache.token().await?);
        let next = self.fake.login_count() + 1;
        self.expect_get(Some(TAXPAYER), &[ApiCall::ok(next).on_behalf_of(TAXPAYER)])
            .await?;
        let sent = self.fake.login_on_behalf_of(next);
        println!(
            "   login #{next} carried onbehalfof: {}",
            sent.as_deref().unwrap_or("(none)")
        );
        ensure(sent.as_deref() == Some(TAXPAYER), || {
            format!("login #{next} did not carry onbehalfof: {TAXPAYER}")
        })?;
        println!("   a plain call still uses the taxpayer's own token:");
        self.expect_get(None, &[ApiCall::ok(plain)]).await?;
        self.expect_logins(next)
    }

    async fn direct_use(&self) -> DemoResult {
        println!("6. Direct use of the cache (e.g. from another SDK)");
        let logins = self.fake.login_count();
        let mine = self.cache.token().await?;
        println!(
            "   cache.token(): token #{} {}",
            self.fake.number_of(&mine),
            expiry_and_scope(&mine)
        );
        let theirs = self.cache.token_on_behalf_of(TAXPAYER).await?;
        println!(
            "   cache.token_on_behalf_of(\"{TAXPAYER}\"): token #{} {}",
            self.fake.number_of(&theirs),
            expiry_and_scope(&theirs)
        );
        let again = self.cache.token().await?;
        println!(
            "   same_token: token() twice -> {}, token() vs on_behalf_of -> {}",
            mine.same_token(&again),
            mine.same_token(&theirs)
        );
        ensure(mine.same_token(&again) && !mine.same_token(&theirs), || {
            "the cache did not hand out the tokens it holds".to_owned()
        })?;
        ensure(mine.scope() == Some(SCOPE), || {
            format!("expected scope {SCOPE:?}, got {:?}", mine.scope())
        })?;
        self.expect_logins(logins)
    }
}

async fn run_offline_demo() -> DemoResult {
    println!("No {ENV_CLIENT_ID} / {ENV_CLIENT_SECRET}: running against a fake MyInvois.");
    let started = Instant::now();
    let demo = Demo::start().await?;
    demo.first_login().await?;
    demo.cached_calls().await?;
    demo.refresh_ahead_of_expiry().await?;
    demo.revoked_token().await?;
    demo.on_behalf_of().await?;
    demo.direct_use().await?;
    println!(
        "\nAll checks passed in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
