//! Real local servers for the tests: a MyInvois identity service that issues
//! distinct tokens and an API that accepts only tokens it is told to accept.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use myinvois_auth::{
    Credentials, Loaded, MemoryTokenStore, StoreError, StoredToken, TokenCache, TokenCacheBuilder,
    TokenStore,
};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const CLIENT_ID: &str = "erp-client-1";
/// Distinctive, so a test can search any output for it.
pub const SECRET: &str = "CLIENTSECRET-7f3a9c";
/// Every token issued starts with this.
pub const TOKEN_MARK: &str = "TOKENVALUE";

/// Issues `TOKENVALUE-<n>[-<taxpayer>]`, numbered from 1, after `delay`.
#[derive(Clone)]
pub struct IssueTokens {
    issued: Arc<AtomicUsize>,
    lifetime: u64,
    delay: Duration,
}

impl Respond for IssueTokens {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let taxpayer = request
            .headers
            .get("onbehalfof")
            .map(|v| format!("-{}", v.to_str().unwrap()))
            .unwrap_or_default();
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": format!("{TOKEN_MARK}-{n}{taxpayer}"),
                "token_type": "Bearer",
                "expires_in": self.lifetime,
                "scope": "InvoicingAPI",
            }))
            .set_delay(self.delay)
    }
}

pub struct Identity {
    pub server: MockServer,
}

impl Identity {
    /// Issues 1-hour tokens at once.
    pub async fn start() -> Self {
        Self::issuing(3600, Duration::ZERO).await
    }

    /// Issues tokens living `lifetime` seconds, answering after `delay`.
    pub async fn issuing(lifetime: u64, delay: Duration) -> Self {
        let identity = Self::empty().await;
        identity.issue(lifetime, delay).await;
        identity
    }

    /// No route mounted yet. A server of its own, not one of wiremock's
    /// pool, on a port no identity service of this process had before: a
    /// client ID's login budget outlives its caches (as it must), so a test
    /// must not meet the budget an earlier test left at the same identity
    /// URL (a paused-clock test's budget can hold slots hours ahead).
    pub async fn empty() -> Self {
        // One on a port used before is held while the next starts, so
        // that the OS gives that one another port.
        let mut held = Vec::new();
        loop {
            let server = MockServer::builder().start().await;
            if first_use_of_port(server.address().port()) {
                return Identity { server };
            }
            held.push(server);
        }
    }

    pub async fn issue(&self, lifetime: u64, delay: Duration) {
        Mock::given(method("POST"))
            .and(path("/connect/token"))
            .respond_with(IssueTokens {
                issued: Arc::new(AtomicUsize::new(0)),
                lifetime,
                delay,
            })
            .mount(&self.server)
            .await;
    }

    /// Answers every login with `template`.
    pub async fn answer(&self, template: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path("/connect/token"))
            .respond_with(template)
            .mount(&self.server)
            .await;
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Login requests received so far.
    pub async fn logins(&self) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == "/connect/token")
            .collect()
    }

    pub async fn login_count(&self) -> usize {
        self.logins().await.len()
    }

    /// A builder for this service with test settings: no login timeout (so a
    /// paused clock never fires it while real I/O is pending).
    pub fn builder(&self) -> TokenCacheBuilder {
        TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
            .identity_url(self.uri())
            .without_login_timeout()
    }

    pub fn cache(&self) -> TokenCache {
        self.builder().build().expect("valid test configuration")
    }
}

/// Whether no identity service of this process was on `port` before
/// (every identity service asks, so that no two share a login budget).
pub fn first_use_of_port(port: u16) -> bool {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    USED.lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(port)
}

/// An API that answers 200 to a bearer token in its accepted set, 401 otherwise,
/// and records the `Authorization` and `onbehalfof` headers it saw.
#[derive(Clone, Default)]
pub struct Api {
    state: Arc<Mutex<ApiState>>,
}

#[derive(Default)]
struct ApiState {
    rejected: HashSet<String>,
    reject_all: bool,
    /// Paths that answer 401 to every token (a permission the client lacks).
    rejecting_paths: HashSet<String>,
    /// (path, taxpayer): 401 to every token of that taxpayer there (a
    /// permission that taxpayer has not granted).
    rejecting_for: HashSet<(String, String)>,
    /// Paths holding one of these answer 401 to every token (IDs the
    /// client may not see, whatever its token).
    rejecting_containing: Vec<String>,
    /// How long a 401 takes.
    rejection_delay: Duration,
}

impl Api {
    /// Starts the API; by default every token is accepted.
    pub async fn start() -> (MockServer, Api) {
        let server = MockServer::start().await;
        let api = Api::default();
        Mock::given(method("GET"))
            .respond_with(api.clone())
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(api.clone())
            .mount(&server)
            .await;
        (server, api)
    }

    /// From now on, answer 401 to this token.
    pub fn revoke(&self, token: &str) {
        self.state.lock().unwrap().rejected.insert(token.to_owned());
    }

    /// From now on, answer 401 to every token.
    pub fn reject_all(&self) {
        self.state.lock().unwrap().reject_all = true;
    }

    /// From now on, answer 401 to every token on `path`.
    pub fn reject_path(&self, path: &str) {
        self.state
            .lock()
            .unwrap()
            .rejecting_paths
            .insert(path.to_owned());
    }

    /// From now on, answer 401 to every token of `taxpayer` on `path`.
    pub fn reject_path_for(&self, path: &str, taxpayer: &str) {
        self.state
            .lock()
            .unwrap()
            .rejecting_for
            .insert((path.to_owned(), taxpayer.to_owned()));
    }

    /// From now on, answer 401 to every token on any path containing `part`.
    pub fn reject_paths_containing(&self, part: &str) {
        self.state
            .lock()
            .unwrap()
            .rejecting_containing
            .push(part.to_owned());
    }

    /// From now on, answer 401s after `delay` (real time).
    pub fn delay_rejections(&self, delay: Duration) {
        self.state.lock().unwrap().rejection_delay = delay;
    }

    /// From now on, `path` accepts tokens again (a permission granted).
    pub fn allow_path(&self, path: &str) {
        self.state.lock().unwrap().rejecting_paths.remove(path);
    }
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let state = self.state.lock().unwrap();
        let bearer = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let taxpayer = request
            .headers
            .get("onbehalfof")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let path_rejects = state.rejecting_paths.contains(request.url.path())
            || state
                .rejecting_containing
                .iter()
                .any(|part| request.url.path().contains(part.as_str()))
            || state
                .rejecting_for
                .contains(&(request.url.path().to_owned(), taxpayer.to_owned()));
        match bearer {
            Some(t) if !state.reject_all && !path_rejects && !state.rejected.contains(t) => {
                ResponseTemplate::new(200).set_body_string("ok")
            }
            _ => ResponseTemplate::new(401).set_delay(state.rejection_delay),
        }
    }
}

/// The bearer tokens of the requests `server` received, in order.
pub async fn bearers(server: &MockServer) -> Vec<Option<String>> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            r.headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

/// A middleware client for `cache` that authenticates calls to `api`.
pub fn client(cache: &TokenCache, api: &MockServer) -> reqwest_middleware::ClientWithMiddleware {
    let auth = myinvois_auth::AuthMiddleware::with_api_url(cache.clone(), api.uri())
        .expect("loopback API URL");
    reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
    )
    .with(auth)
    .build()
}

/// Lets spawned tasks and real I/O progress without moving a paused clock,
/// until `done` answers true; fails the test after 10 real seconds.
pub async fn settle_until<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The form fields of a login request.
pub fn form(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

type LoadHook = Box<dyn Fn(Loaded) -> Loaded + Send + Sync>;
type SaveHook = Box<dyn Fn() + Send + Sync>;

/// A memory store with the test's fault hooked in: `on_load` changes what
/// every `load` answers, `before_save` runs before every `save`.
pub struct Hooked {
    inner: MemoryTokenStore,
    on_load: LoadHook,
    before_save: SaveHook,
}

impl Hooked {
    pub fn on_load(hook: impl Fn(Loaded) -> Loaded + Send + Sync + 'static) -> Self {
        Hooked {
            inner: MemoryTokenStore::new(),
            on_load: Box::new(hook),
            before_save: Box::new(|| {}),
        }
    }

    pub fn before_save(hook: impl Fn() + Send + Sync + 'static) -> Self {
        Hooked {
            inner: MemoryTokenStore::new(),
            on_load: Box::new(|loaded| loaded),
            before_save: Box::new(hook),
        }
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

#[async_trait::async_trait]
impl TokenStore for Hooked {
    async fn load(&self, key: &str) -> Result<Loaded, StoreError> {
        Ok((self.on_load)(self.inner.load(key).await?))
    }
    async fn save(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        (self.before_save)();
        self.inner.save(key, token).await
    }
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.try_lock(key, owner, ttl).await
    }
    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.unlock(key, owner).await
    }
}

/// Every log line (TRACE and up) written on this thread while it lives: a
/// current-thread runtime keeps every task of the test on it.
pub struct LogCapture {
    text: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    pub fn start() -> Self {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(Arc::clone(&text));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        LogCapture {
            text,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }
}
