//! One host: separate OS processes sharing one client ID through one real
//! SQLite file (`SqliteTokenStore`), against an identity stand-in over
//! HTTP in this process.
//!
//! Each test runs this same test binary as worker processes (the ignored
//! `host_worker` test, told what to do through environment variables), as
//! `tests/fleet.rs` does for Redis.

#[path = "all/support.rs"]
#[allow(dead_code)]
mod support;

/// Each bad file: a typed error, counted, one warning; calls still served.
#[path = "host/bad_files.rs"]
mod bad_files;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use myinvois_auth::{Credentials, Error, SqliteTokenStore, TokenCache};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use support::{CLIENT_ID, SECRET};

// ------------------------------------------------------ identity stand-in

/// Issues distinct tokens and records when; optionally enforces a login
/// limit with 429s as MyInvois does, and hangs chosen logins.
#[derive(Clone, Default)]
struct Service {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// When each login arrived, and for whom.
    logins: Vec<(Instant, Option<String>)>,
    /// At most this many logins in any window of this length, then 429.
    limit: Option<(usize, Duration)>,
    rate_limited: usize,
    /// The next login is answered after this long.
    hang_next: Option<Duration>,
}

impl Respond for Service {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let taxpayer = request
            .headers
            .get("onbehalfof")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        state.logins.push((now, taxpayer.clone()));
        let n = state.logins.len();
        if let Some((count, period)) = state.limit {
            let recent = state
                .logins
                .iter()
                .filter(|(at, _)| now.duration_since(*at) < period)
                .count();
            if recent > count {
                state.rate_limited += 1;
                return ResponseTemplate::new(429).insert_header("retry-after", "30");
            }
        }
        let delay = state.hang_next.take().unwrap_or(Duration::from_millis(50));
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": format!("HOST-{n}-{}", taxpayer.unwrap_or_default()),
                "token_type": "Bearer",
                "expires_in": 3600,
            }))
            .set_delay(delay)
    }
}

impl Service {
    async fn start() -> (MockServer, Self) {
        let service = Service::default();
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/connect/token"))
            .respond_with(service.clone())
            .mount(&server)
            .await;
        (server, service)
    }

    fn limit(&self, count: usize, period: Duration) {
        self.state.lock().unwrap().limit = Some((count, period));
    }

    fn hang_next_login(&self, delay: Duration) {
        self.state.lock().unwrap().hang_next = Some(delay);
    }

    fn login_times(&self) -> Vec<Instant> {
        let state = self.state.lock().unwrap();
        state.logins.iter().map(|(at, _)| *at).collect()
    }

    fn taxpayers_logged_in(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut tins: Vec<String> = state.logins.iter().filter_map(|(_, t)| t.clone()).collect();
        tins.sort();
        tins
    }

    fn rate_limited(&self) -> usize {
        self.state.lock().unwrap().rate_limited
    }
}

/// The most logins in any `window`.
fn most_in_any(times: &[Instant], window: Duration) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

// ---------------------------------------------------------------- workers

/// A folder of its own under the system's temporary folder, removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Self {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "myinvois-host-{name}-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a worker process is started: its scenario and variables.
struct Worker<'a> {
    scenario: &'a str,
    env: Vec<(&'static str, String)>,
    /// Runs it through `setpriv` without the capabilities that let root
    /// write a file whatever its mode (so that a read-only file is one).
    unprivileged: bool,
}

impl<'a> Worker<'a> {
    fn new(scenario: &'a str, server: &MockServer, file: &Path) -> Self {
        Worker {
            scenario,
            env: vec![
                ("HOST_IDENTITY", server.uri()),
                ("HOST_FILE", file.display().to_string()),
            ],
            unprivileged: false,
        }
    }

    fn var(mut self, name: &'static str, value: impl ToString) -> Self {
        self.env.push((name, value.to_string()));
        self
    }

    /// Starts `count` of them, all beginning together.
    fn spawn(&self, count: usize) -> Vec<Child> {
        // Several start together, once each had time to start up.
        let lead = if count > 1 { 1500 } else { 0 };
        let start_at = chrono::Utc::now().timestamp_millis() + lead;
        (0..count)
            .map(|i| {
                let exe = std::env::current_exe().unwrap();
                let mut command = if self.unprivileged && is_root() {
                    let mut c = Command::new("setpriv");
                    c.arg("--bounding-set=-dac_override,-dac_read_search")
                        .arg(exe);
                    c
                } else {
                    Command::new(exe)
                };
                command
                    .args(["host_worker", "--exact", "--ignored", "--nocapture"])
                    .env("HOST_SCENARIO", self.scenario)
                    .env("HOST_WORKER_INDEX", i.to_string())
                    .env("HOST_START_AT", start_at.to_string())
                    .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect()
    }
}

fn is_root() -> bool {
    // The owner of a file this process makes.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let probe = std::env::temp_dir().join(format!("myinvois-host-uid-{}", std::process::id()));
        std::fs::write(&probe, b"").unwrap();
        let uid = std::fs::metadata(&probe).unwrap().uid();
        let _ = std::fs::remove_file(probe);
        uid == 0
    }
    #[cfg(not(unix))]
    false
}

/// What a worker reported (`HOST key=value` lines) and logged (stderr).
struct Report {
    values: HashMap<String, String>,
    stderr: String,
}

impl Report {
    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}\n{}", self.values, self.stderr))
    }

    fn number(&self, key: &str) -> u64 {
        self.get(key).parse().unwrap()
    }
}

/// Waits for the workers; each must exit successfully (no panic).
fn reports(children: Vec<Child>) -> Vec<Report> {
    children
        .into_iter()
        .map(|mut child| {
            let mut stderr = child.stderr.take().unwrap();
            let errors = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            });
            let mut values = HashMap::new();
            let stdout = child.stdout.take().unwrap();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("HOST ") {
                    for pair in rest.split_whitespace() {
                        if let Some((k, v)) = pair.split_once('=') {
                            values.insert(k.to_owned(), v.to_owned());
                        }
                    }
                }
            }
            let status = child.wait().unwrap();
            let stderr = errors.join().unwrap();
            assert!(status.success(), "a worker failed: {values:?}\n{stderr}");
            Report { values, stderr }
        })
        .collect()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

fn tin(i: usize) -> String {
    format!("C{i:010}")
}

/// One worker process. Ignored, so only the tests here run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the host tests as a worker process"]
async fn host_worker() {
    // Warnings to stderr, where the test counts them.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter("myinvois_auth=warn")
        .try_init();
    let scenario = env("HOST_SCENARIO");
    if scenario == "lock_file" {
        return bad_files::hold_the_file_locked(Path::new(&env("HOST_FILE")));
    }
    let store = Arc::new(SqliteTokenStore::new(env("HOST_FILE")));
    let mut builder = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(env("HOST_IDENTITY"))
        .token_store(store.clone());
    if std::env::var("HOST_NO_BUDGET").is_ok() {
        builder = builder.without_login_rate_limit();
    }
    if let Ok(wait) = std::env::var("HOST_MAX_WAIT") {
        builder = builder.max_login_wait(Duration::from_secs(wait.parse().unwrap()));
    }
    if let Ok(timeout) = std::env::var("HOST_LOGIN_TIMEOUT") {
        builder = builder.login_timeout(Duration::from_secs(timeout.parse().unwrap()));
    }
    let cache = builder.build().unwrap();
    let start_at: i64 = env("HOST_START_AT").parse().unwrap();
    let wait = start_at - chrono::Utc::now().timestamp_millis();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let taxpayers: usize = env("HOST_TAXPAYERS").parse().unwrap();
    let callers: usize = std::env::var("HOST_CALLERS").map_or(1, |c| c.parse().unwrap());
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..taxpayers {
        for _ in 0..callers {
            let cache = cache.clone();
            set.spawn(async move {
                cache
                    .token_on_behalf_of(tin(t))
                    .await
                    .map(|token| (t, token.secret().to_owned()))
            });
        }
    }
    let results = set.join_all().await;
    let mut distinct: HashMap<usize, Vec<String>> = HashMap::new();
    let mut errors: Vec<&Error> = Vec::new();
    for result in &results {
        match result {
            Ok((t, token)) => distinct.entry(*t).or_default().push(token.clone()),
            Err(e) => errors.push(e),
        }
    }
    let mut mixed = 0;
    for tokens in distinct.values_mut() {
        tokens.sort();
        tokens.dedup();
        mixed += usize::from(tokens.len() > 1);
    }
    let stats = cache.stats();
    let kinds = stats.store_errors;
    println!(
        "HOST ok={} errors={} mixed={mixed} logins={} elapsed_ms={} store_errors={} \
         corrupt={} incompatible={} unreachable={} read_only={} timeout={} auth={} other={} \
         available={} first_error={}",
        results.len() - errors.len(),
        errors.len(),
        stats.logins,
        started.elapsed().as_millis(),
        kinds.total(),
        kinds.corrupt,
        kinds.incompatible,
        kinds.unreachable,
        kinds.read_only,
        kinds.timeout,
        kinds.auth,
        kinds.other,
        myinvois_auth::TokenStore::is_available(&*store),
        errors
            .first()
            .map(|e| e.to_string().replace(' ', "_"))
            .unwrap_or_default(),
    );
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_costs_no_logins_50_taxpayers_served_from_the_file() {
    let folder = Folder::new("restart");
    let file = folder.file("tokens.sqlite3");
    let (server, service) = Service::start().await;
    // The budget is not what this shows: 50 logins at once.
    let worker = Worker::new("taxpayers", &server, &file)
        .var("HOST_TAXPAYERS", 50)
        .var("HOST_NO_BUDGET", 1);
    let first = reports(worker.spawn(1));
    assert_eq!(first[0].number("ok"), 50);
    assert_eq!(first[0].number("logins"), 50);
    assert_eq!(service.login_times().len(), 50);

    // A second process, started after the first exited, on the same file.
    let second = reports(worker.spawn(1));
    eprintln!(
        "restart: the second process served 50 taxpayers in {} ms with {} logins",
        second[0].get("elapsed_ms"),
        second[0].get("logins")
    );
    assert_eq!(second[0].number("ok"), 50);
    assert_eq!(second[0].number("logins"), 0, "the restart logged in again");
    assert_eq!(second[0].number("store_errors"), 0);
    assert_eq!(service.login_times().len(), 50);
}

/// The measure, with MyInvois' own limit (12 logins per 60 s, the
/// stand-in answering 429 past it): 4 processes × 20 taxpayers × 50
/// callers, cold. The 13th to 20th logins must wait for the window, so
/// this takes a little over a minute; it runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_keep_together_to_12_logins_a_minute_20_logins_for_20_taxpayers() {
    let folder = Folder::new("budget");
    let file = folder.file("tokens.sqlite3");
    let (server, service) = Service::start().await;
    service.limit(12, Duration::from_secs(60));
    let worker = Worker::new("taxpayers", &server, &file)
        .var("HOST_TAXPAYERS", 20)
        .var("HOST_CALLERS", 50)
        // Every caller waits for its taxpayer's login, past the first window.
        .var("HOST_MAX_WAIT", 120);
    let reports = reports(worker.spawn(4));
    let logins = service.login_times();
    let most = most_in_any(&logins, Duration::from_secs(60));
    let per_process: Vec<u64> = reports.iter().map(|r| r.number("logins")).collect();
    eprintln!(
        "one host: {} logins ({per_process:?} per process), {} × 429, at most {most} in any 60 s, \
         last login {:?} after the first",
        logins.len(),
        service.rate_limited(),
        logins.last().unwrap().duration_since(logins[0]),
    );
    for report in &reports {
        let told = format!("{:?}\n{}", report.values, report.stderr);
        assert_eq!(report.number("ok"), 20 * 50, "{told}");
        assert_eq!(report.number("mixed"), 0, "a taxpayer got two tokens");
        assert_eq!(report.number("store_errors"), 0, "{told}");
    }
    assert_eq!(logins.len(), 20, "one login per taxpayer for the host");
    assert_eq!(
        service.taxpayers_logged_in(),
        (0..20).map(tin).collect::<Vec<_>>()
    );
    assert_eq!(service.rate_limited(), 0);
    assert!(most <= 12, "{most} logins in one 60 s window");
    assert_eq!(per_process.iter().sum::<u64>(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_holding_the_lease_mid_login_costs_at_most_the_lease() {
    let folder = Folder::new("killed");
    let file = folder.file("tokens.sqlite3");
    let (server, service) = Service::start().await;
    service.hang_next_login(Duration::from_secs(120));
    // The lease lasts the login timeout + 5 s: 8 s.
    let worker = Worker::new("taxpayers", &server, &file)
        .var("HOST_TAXPAYERS", 1)
        .var("HOST_LOGIN_TIMEOUT", 3);
    let lease = Duration::from_secs(8);
    let mut holder = worker.spawn(1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while service.login_times().is_empty() {
        assert!(Instant::now() < deadline, "the holder never logged in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its login reached the identity service: it holds the lease. SIGKILL.
    let leased_at = service.login_times()[0];
    holder[0].kill().unwrap();
    holder[0].wait().unwrap();

    let other = reports(worker.spawn(1));
    assert_eq!(other[0].number("ok"), 1, "{}", other[0].stderr);
    let logins = service.login_times();
    assert_eq!(logins.len(), 2);
    let after = logins[1] - leased_at;
    eprintln!(
        "killed holder: the next login went out {after:?} after the lease was taken ({lease:?})"
    );
    // Not before the lease ended (it was kept), nor long after.
    assert!(
        after >= lease - Duration::from_secs(1),
        "{after:?}: the lease was ignored"
    );
    assert!(after <= lease + Duration::from_secs(1), "{after:?}");
}

/// The budget key the cache uses for a client ID at this identity URL.
fn budget_key_of(identity_uri: &str) -> String {
    let token_url = format!("{identity_uri}/connect/token");
    let mut hasher = hmac_sha256::Hash::new();
    for part in [token_url.as_str(), CLIENT_ID] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_seen_by_one_process_holds_off_the_others() {
    let folder = Folder::new("retry-after");
    let file = folder.file("tokens.sqlite3");
    let identity = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .mount(&identity)
        .await;
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(identity.uri())
        .token_store(Arc::new(SqliteTokenStore::new(&file)))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");

    // Another connection to the file, as another process has, asking for a
    // slot of the same client ID's budget: told to wait out the 30 s.
    let other = SqliteTokenStore::new(&file);
    let request = myinvois_auth::SlotRequest::new(12, Duration::from_secs(60), "other-process");
    let answer =
        myinvois_auth::TokenStore::reserve_login(&other, &budget_key_of(&identity.uri()), &request)
            .await
            .unwrap();
    match answer {
        myinvois_auth::LoginSlot::Wait(wait) => assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        ),
        other => panic!("expected to wait, got {other:?}"),
    }
}
