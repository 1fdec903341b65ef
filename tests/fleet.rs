//! Fleets: separate OS processes sharing one client ID through a real
//! `redis-server` (started here on a free loopback port; `./scripts/test`
//! installs Debian's package when it is missing).
//!
//! Each fleet test runs this same test binary as worker processes (the
//! ignored `fleet_worker` test, told what to do through environment
//! variables) against one identity service and API in this process.

#[path = "all/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "support/redis_servers.rs"]
mod redis_servers;

/// Fleets on production Redis topologies: TLS, Sentinel, Cluster, an
/// endpoint repointed at failover.
#[path = "fleet/topologies.rs"]
mod topologies;

/// Locks that never outlive their holders, waits that do not flood Redis
/// (issue 17).
#[path = "fleet/locks.rs"]
mod locks;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use myinvois_auth::{
    AuthMiddleware, Credentials, Error, LoginSlot, RedisTokenStore, SlotRequest, TokenCache,
    TokenStore,
};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use redis_servers::Redis;
use support::{CLIENT_ID, SECRET};

// ------------------------------------------------- identity service and API

/// Issues distinct tokens, records when, and serves an API that answers 401
/// to a token past its lifetime (so a call with an expired token is seen).
#[derive(Clone)]
struct Service {
    lifetime: u64,
    issued: Arc<Mutex<HashMap<String, Instant>>>,
    logins: Arc<Mutex<Vec<Instant>>>,
    expired_calls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    /// The next login is answered after this long instead of 200 ms.
    hang_next: Arc<Mutex<Option<Duration>>>,
}

struct Issue(Service);
struct Api(Service);

impl Respond for Issue {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut logins = self.0.logins.lock().unwrap();
        logins.push(Instant::now());
        let token = format!("FLEET-{}", logins.len());
        self.0
            .issued
            .lock()
            .unwrap()
            .insert(token.clone(), Instant::now());
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.0.lifetime,
            }))
            .set_delay(
                self.0
                    .hang_next
                    .lock()
                    .unwrap()
                    .take()
                    .unwrap_or(Duration::from_millis(200)),
            )
    }
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let bearer = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let issued = self.0.issued.lock().unwrap().get(bearer).copied();
        match issued {
            Some(at) if at.elapsed() < Duration::from_secs(self.0.lifetime) => {
                ResponseTemplate::new(200)
            }
            _ => {
                self.0.expired_calls.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(401)
            }
        }
    }
}

impl Service {
    async fn start(lifetime: u64) -> (MockServer, Self) {
        let service = Service {
            lifetime,
            issued: Arc::default(),
            logins: Arc::default(),
            expired_calls: Arc::default(),
            calls: Arc::default(),
            hang_next: Arc::default(),
        };
        // Not pooled: a budget outlives its caches, per identity URL.
        let server = MockServer::builder().start().await;
        Mock::given(method("POST"))
            .and(path("/connect/token"))
            .respond_with(Issue(service.clone()))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api"))
            .respond_with(Api(service.clone()))
            .mount(&server)
            .await;
        (server, service)
    }

    fn login_times(&self) -> Vec<Instant> {
        self.logins.lock().unwrap().clone()
    }

    /// Answers the next login only after `delay`: its sender hangs in it.
    fn hang_next_login(&self, delay: Duration) {
        *self.hang_next.lock().unwrap() = Some(delay);
    }
}

// ---------------------------------------------------------------- workers

/// Starts `count` worker processes for `scenario`, all beginning together.
fn spawn_workers(count: usize, scenario: &str, env: &[(&str, String)]) -> Vec<Child> {
    let start_at = chrono::Utc::now().timestamp_millis() + 1500;
    (0..count)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args(["fleet_worker", "--exact", "--ignored", "--nocapture"])
                .env("FLEET_SCENARIO", scenario)
                .env("FLEET_WORKER_INDEX", i.to_string())
                .env("FLEET_START_AT", start_at.to_string())
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Waits for the workers; returns each one's `FLEET key=value` report lines.
fn reports(children: Vec<Child>) -> Vec<HashMap<String, String>> {
    children
        .into_iter()
        .map(|mut child| {
            // Read beside stdout, so a worker never blocks on a full pipe;
            // shown if the worker fails (its panic message).
            let mut stderr = child.stderr.take().unwrap();
            let errors = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
                text
            });
            let stdout = child.stdout.take().unwrap();
            let mut report = HashMap::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("FLEET ") {
                    for pair in rest.split_whitespace() {
                        if let Some((k, v)) = pair.split_once('=') {
                            report.insert(k.to_owned(), v.to_owned());
                        }
                    }
                }
            }
            let status = child.wait().unwrap();
            let errors = errors.join().unwrap();
            assert!(status.success(), "a worker failed: {report:?}\n{errors}");
            report
        })
        .collect()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

/// One worker process. Ignored, so only the fleet tests run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the fleet tests as a worker process"]
async fn fleet_worker() {
    let identity = env("FLEET_IDENTITY");
    // A topology's own store (TLS, Cluster, Sentinel), or one server's.
    let store = topologies::store_from_env().unwrap_or_else(|| {
        RedisTokenStore::with_prefix(&env("FLEET_REDIS"), &env("FLEET_PREFIX")).unwrap()
    });
    let mut builder = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(&identity)
        .token_store(Arc::new(store));
    if let Ok(before) = std::env::var("FLEET_REFRESH_BEFORE") {
        builder = builder.refresh_before(Duration::from_secs(before.parse().unwrap()));
    }
    if let Ok(timeout) = std::env::var("FLEET_LOGIN_TIMEOUT") {
        builder = builder.login_timeout(Duration::from_secs(timeout.parse().unwrap()));
    }
    // `count/seconds`
    if let Ok(rate) = std::env::var("FLEET_LOGIN_RATE") {
        let (count, secs) = rate.split_once('/').unwrap();
        builder = builder.login_rate_limit(
            count.parse().unwrap(),
            Duration::from_secs(secs.parse().unwrap()),
        );
    }
    let cache = builder.build().unwrap();
    let start_at: i64 = env("FLEET_START_AT").parse().unwrap();
    let wait = start_at - chrono::Utc::now().timestamp_millis();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    match env("FLEET_SCENARIO").as_str() {
        "cold" => {
            let started = Instant::now();
            let callers: usize = env("FLEET_CALLERS").parse().unwrap();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..callers {
                let cache = cache.clone();
                set.spawn(async move { cache.token().await.map(|t| t.secret().to_owned()) });
            }
            let results = set.join_all().await;
            let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            let mut distinct = ok.clone();
            distinct.sort();
            distinct.dedup();
            let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            println!(
                "FLEET ok={} distinct={} elapsed_ms={} errors={}",
                ok.len(),
                distinct.len(),
                started.elapsed().as_millis(),
                format!("{errors:?}").replace(' ', "_")
            );
        }
        "taxpayers" => {
            // Every taxpayer at once; how many were served, and logins made.
            let taxpayers: usize = env("FLEET_TAXPAYERS").parse().unwrap();
            let mut set = tokio::task::JoinSet::new();
            for t in 0..taxpayers {
                let cache = cache.clone();
                set.spawn(async move { cache.token_on_behalf_of(format!("C{t:010}")).await });
            }
            let ok = set.join_all().await.iter().filter(|r| r.is_ok()).count();
            let stats = cache.stats();
            println!(
                "FLEET ok={ok} logins={} store_errors={}",
                stats.logins,
                stats.store_errors.total()
            );
        }
        "expiry" => {
            let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                .with(AuthMiddleware::with_api_url(cache.clone(), &identity).unwrap())
                .build();
            let until = Instant::now() + Duration::from_secs(env("FLEET_SECONDS").parse().unwrap());
            let (mut ok, mut failed) = (0, 0);
            while Instant::now() < until {
                match client.get(format!("{identity}/api")).send().await {
                    Ok(r) if r.status().is_success() => ok += 1,
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!("FLEET ok={ok} failed={failed}");
        }
        "budget" => {
            let index: usize = env("FLEET_WORKER_INDEX").parse().unwrap();
            let taxpayers: usize = env("FLEET_TAXPAYERS").parse().unwrap();
            let until = Instant::now() + Duration::from_secs(env("FLEET_SECONDS").parse().unwrap());
            let (mut served, mut limited) = (0, 0);
            // A cold start: every worker asks for its share of the
            // taxpayers at once.
            let workers: usize = env("FLEET_WORKERS").parse().unwrap();
            let mut cold = tokio::task::JoinSet::new();
            for t in (index..taxpayers).step_by(workers) {
                let cache = cache.clone();
                cold.spawn(async move { cache.token_on_behalf_of(format!("C{t:010}")).await });
            }
            for result in cold.join_all().await {
                match result {
                    Ok(_) => served += 1,
                    // No token within max_login_wait: refused by the budget,
                    // or another process was still sending its login.
                    Err(Error::RateLimited { .. } | Error::Timeout { .. }) => limited += 1,
                    Err(other) => panic!("{other:?}"),
                }
            }
            let mut i = index;
            while Instant::now() < until {
                match cache
                    .token_on_behalf_of(format!("C{:010}", i % taxpayers))
                    .await
                {
                    Ok(_) => served += 1,
                    Err(Error::RateLimited { .. } | Error::Timeout { .. }) => limited += 1,
                    Err(other) => panic!("{other:?}"),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let errors = cache.stats().store_errors;
            println!(
                "FLEET served={served} limited={limited} store_errors={} auth={}",
                errors.total(),
                errors.auth
            );
        }
        other if locks::SCENARIOS.contains(&other) => {
            locks::scenario(other, &cache, &identity).await
        }
        other => topologies::scenario(other, &cache, &identity).await,
    }
}

fn worker_env(server: &MockServer, redis: &Redis, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FLEET_IDENTITY", server.uri()),
        ("FLEET_REDIS", redis.url()),
        ("FLEET_PREFIX", prefix.to_owned()),
    ]
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_with_100_cold_callers_each_make_one_login() {
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    let mut env = worker_env(&server, &redis, "cold");
    env.push(("FLEET_CALLERS", "100".into()));
    let reports = reports(spawn_workers(4, "cold", &env));
    for report in &reports {
        assert_eq!(report["ok"], "100", "{report:?}");
        assert_eq!(report["distinct"], "1", "{report:?}");
    }
    assert_eq!(service.login_times().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_through_expiries_make_one_login_per_refresh_and_no_expired_call() {
    let redis = Redis::start();
    // 12 s tokens, refreshed 6 s before expiry, for 27 s: 4 tokens in all.
    let (server, service) = Service::start(12).await;
    let mut env = worker_env(&server, &redis, "expiry");
    env.push(("FLEET_SECONDS", "27".into()));
    env.push(("FLEET_REFRESH_BEFORE", "6".into()));
    let reports = reports(spawn_workers(4, "expiry", &env));
    for report in &reports {
        assert_eq!(report["failed"], "0", "{report:?}");
        assert!(report["ok"].parse::<usize>().unwrap() > 100, "{report:?}");
    }
    assert_eq!(service.expired_calls.load(Ordering::SeqCst), 0);
    let logins = service.login_times();
    // A first login, then one per refresh (every ~6 s), never one per process.
    assert!(
        (4..=6).contains(&logins.len()),
        "{} logins in 27 s",
        logins.len()
    );
    for pair in logins.windows(2) {
        assert!(
            pair[1] - pair[0] > Duration::from_secs(3),
            "two logins {:?} apart",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_processes_and_30_cold_taxpayers_log_12_in_at_once_and_stay_within_12_a_minute() {
    // As the fleet guide's least-privilege user: the full window's branch of
    // the budget script runs commands the plain path never does.
    let redis = Redis::start_with_user("myinvois", "s3cret-pw", redis_servers::STORE_ACL);
    let (server, service) = Service::start(3600).await;
    let mut env = worker_env(&server, &redis, "myinvois-auth");
    env.retain(|(k, _)| *k != "FLEET_REDIS");
    env.push(("FLEET_REDIS", redis.url_with_user()));
    env.push(("FLEET_TAXPAYERS", "30".into()));
    env.push(("FLEET_WORKERS", "6".into()));
    env.push(("FLEET_SECONDS", "65".into()));
    let reports = reports(spawn_workers(6, "budget", &env));
    let logins = service.login_times();
    let mut most = 0;
    for (i, start) in logins.iter().enumerate() {
        let in_window = logins[i..]
            .iter()
            .take_while(|t| **t - *start < Duration::from_secs(60))
            .count();
        most = most.max(in_window);
    }
    eprintln!(
        "fleet budget: {} logins in 65 s, at most {most} in any 60 s; {reports:?}",
        logins.len()
    );
    assert!(most <= 12, "{most} logins in one 60 s window");
    // The window has room at the start: 12 logins in the first second,
    // fleet-wide (the fleet's window lets them all out at once).
    assert!(
        logins[11] - logins[0] < Duration::from_secs(1),
        "the first 12 logins took {:?}",
        logins[11] - logins[0]
    );
    assert!(
        logins.len() >= 12,
        "the limit was not reached: {}",
        logins.len()
    );
    assert!(reports
        .iter()
        .all(|r| r["served"].parse::<usize>().unwrap() > 0));
    for report in &reports {
        assert_eq!(report["store_errors"], "0", "{report:?}");
    }
    let denied = redis.cmd(&["ACL", "LOG"]);
    assert!(
        denied.as_array().unwrap_or(&[]).is_empty(),
        "the fleet guide's ACL left denials in the ACL log: {denied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_working_while_redis_is_down_and_sharing_resumes_when_it_returns() {
    let mut redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    let cache = || {
        TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
            .identity_url(server.uri())
            .without_login_rate_limit()
            .token_store(Arc::new(
                RedisTokenStore::with_prefix(&redis.url(), "outage").unwrap(),
            ))
            .build()
            .unwrap()
    };
    // Two caches, each with its own Redis connection: two processes' worth.
    let (one, two) = (cache(), cache());
    one.token_on_behalf_of("C1000000001").await.unwrap();
    two.token_on_behalf_of("C1000000001").await.unwrap();
    assert_eq!(service.login_times().len(), 1, "shared through Redis");

    redis.kill();
    let a = one.token_on_behalf_of("C1000000002").await.unwrap();
    let b = two.token_on_behalf_of("C1000000002").await.unwrap();
    assert!(!a.same_token(&b));
    assert_eq!(service.login_times().len(), 3, "each logged in on its own");
    // Cached tokens are served as ever.
    one.token_on_behalf_of("C1000000001").await.unwrap();

    redis.restart();
    // Sharing resumes once the stores reconnect (they retry every 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut taxpayer = 3;
    loop {
        let before = service.login_times().len();
        let tin = format!("C{:010}", 1_000_000_000u64 + taxpayer);
        one.token_on_behalf_of(&tin).await.unwrap();
        two.token_on_behalf_of(&tin).await.unwrap();
        if service.login_times().len() == before + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "sharing did not resume");
        taxpayer += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_seen_by_one_process_holds_off_the_others() {
    let redis = Redis::start();
    let identity = MockServer::builder().start().await;
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .mount(&identity)
        .await;
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(identity.uri())
        .token_store(Arc::new(
            RedisTokenStore::with_prefix(&redis.url(), "retry").unwrap(),
        ))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");

    // Another process: its own connection, asking for a slot of the same
    // client ID's budget, is told to wait out the rest of the 30 s.
    let other = RedisTokenStore::with_prefix(&redis.url(), "retry").unwrap();
    let budget = budget_key_of(&identity.uri());
    match other
        .reserve_login(&budget, &slot(12, 60, None))
        .await
        .unwrap()
    {
        LoginSlot::Wait(wait) => {
            assert!(
                wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
                "{wait:?}"
            )
        }
        other => panic!("expected to wait, got {other:?}"),
    }
}

/// A caller that cannot wait for the fleet's "ask again soon" is refused
/// with the time a slot really frees, not the polling interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_while_reservations_are_fresh_says_when_a_slot_frees() {
    let redis = Redis::start();
    let (identity, _) = Service::start(3600).await;
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(identity.uri())
        .without_login_timeout()
        .max_login_wait(Duration::from_millis(50))
        .token_store(Arc::new(
            RedisTokenStore::with_prefix(&redis.url(), "fresh").unwrap(),
        ))
        .build()
        .unwrap();
    // One fresh reservation (a login of this process) ...
    cache.token_on_behalf_of("C10000000001").await.unwrap();
    // ... and 11 logins of other processes 10 s ago: the 60 s window is
    // full for another 50 s.
    let key = format!("fresh:logins:{{{}}}", budget_key_of(&identity.uri()));
    let now_ms: i64 = {
        let time = redis.cmd(&["TIME"]);
        let parts = time.as_array().expect("TIME answers two numbers");
        parts[0].as_int().unwrap() * 1000 + parts[1].as_int().unwrap() / 1000
    };
    for i in 0..11 {
        let score = (now_ms - 10_000).to_string();
        redis.cli(&["ZADD", &key, &score, &format!("other-{i}")]);
    }
    let err = cache.token_on_behalf_of("C10000000002").await.unwrap_err();
    match err {
        Error::RateLimited {
            retry_after: Some(wait),
        } => assert!(wait > Duration::from_secs(45), "told to wait {wait:?}"),
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

fn slot(count: u32, window_secs: u64, pace: Option<Duration>) -> SlotRequest {
    let request = SlotRequest::new(
        count,
        Duration::from_secs(window_secs),
        format!("{:?}", std::time::SystemTime::now()),
    );
    match pace {
        Some(pace) => request.paced(pace),
        None => request,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_window_lets_count_logins_out_at_once_across_connections() {
    let redis = Redis::start();
    let one = RedisTokenStore::with_prefix(&redis.url(), "window").unwrap();
    let two = RedisTokenStore::with_prefix(&redis.url(), "window").unwrap();
    // Three logins in a 10 s window, from two connections, at once ...
    for store in [&one, &two, &one] {
        assert_eq!(
            store.reserve_login("b", &slot(3, 10, None)).await.unwrap(),
            LoginSlot::Granted
        );
    }
    // ... and the fourth is told to ask again shortly while those may still
    // be given back (their processes may find the entry locked by another),
    // then, once they are logins for sure, to wait for the first to leave
    // the window.
    match two.reserve_login("b", &slot(3, 10, None)).await.unwrap() {
        LoginSlot::Pending { ask_again, wait } => {
            assert!(ask_again <= Duration::from_millis(100), "{ask_again:?}");
            assert!(wait > Duration::from_secs(9), "{wait:?}");
        }
        other => panic!("expected to ask again soon, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    match two.reserve_login("b", &slot(3, 10, None)).await.unwrap() {
        LoginSlot::Wait(wait) => assert!(
            wait > Duration::from_secs(8) && wait <= Duration::from_secs(9),
            "{wait:?}"
        ),
        other => panic!("expected to wait, got {other:?}"),
    }
    // A reservation given back frees its slot.
    let kept = slot(3, 10, None);
    let other = RedisTokenStore::with_prefix(&redis.url(), "window").unwrap();
    assert_eq!(
        other.reserve_login("c", &kept).await.unwrap(),
        LoginSlot::Granted
    );
    assert!(matches!(
        other.reserve_login("c", &slot(1, 10, None)).await.unwrap(),
        LoginSlot::Pending { .. }
    ));
    other.release_login("c", &kept.id).await.unwrap();
    assert_eq!(
        other.reserve_login("c", &slot(1, 10, None)).await.unwrap(),
        LoginSlot::Granted
    );
    // Paced requests (refreshes) keep their pace although the window has room.
    let pace = Some(Duration::from_secs(5));
    assert_eq!(
        one.reserve_login("d", &slot(12, 60, pace)).await.unwrap(),
        LoginSlot::Granted
    );
    match two.reserve_login("d", &slot(12, 60, pace)).await.unwrap() {
        LoginSlot::Wait(wait) => assert!(wait > Duration::from_secs(4), "{wait:?}"),
        other => panic!("expected to wait for the pace, got {other:?}"),
    }
    assert_eq!(
        two.reserve_login("d", &slot(12, 60, None)).await.unwrap(),
        LoginSlot::Granted
    );
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

/// Overwrites the one token stored under `prefix` with `record`, kept `ttl_ms`.
async fn overwrite_stored_token(
    redis: &Redis,
    prefix: &str,
    record: serde_json::Value,
    ttl_ms: u64,
) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:token:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    redis::cmd("SET")
        .arg(&keys[0])
        .arg(record.to_string())
        .arg("PX")
        .arg(ttl_ms)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_redis_that_fails_a_check_is_never_served_and_a_login_happens() {
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    let now = chrono::Utc::now().timestamp_millis();
    let hour = 3_600_000i64;
    let year = 365 * 24 * hour;
    let cases = [
        ("a 100-year expiry", "FLEET-BAD", now, now + 100 * year),
        ("an empty token", "", now, now + hour),
        (
            "CR/LF in the token",
            "FLEET-BAD\r\nX-Evil: 1",
            now,
            now + hour,
        ),
        (
            "issued a year in the future",
            "FLEET-BAD",
            now + year,
            now + year + hour,
        ),
        ("expiry before issue", "FLEET-BAD", now, now - hour),
    ];
    for (i, (what, token, issued, expires)) in cases.into_iter().enumerate() {
        let prefix = format!("checks{i}");
        let cache = || {
            TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
                .identity_url(server.uri())
                .without_login_rate_limit()
                .token_store(Arc::new(
                    RedisTokenStore::with_prefix(&redis.url(), &prefix).unwrap(),
                ))
                .build()
                .unwrap()
        };
        cache().token().await.unwrap();
        let logins = service.login_times().len();
        overwrite_stored_token(
            &redis,
            &prefix,
            json!({"access_token": token, "issued_at_ms": issued, "expires_at_ms": expires, "scope": null}),
            60_000,
        )
        .await;
        let served = cache().token().await.unwrap();
        assert!(served.secret().starts_with("FLEET-"), "{what}");
        assert_ne!(
            served.secret(),
            token,
            "{what}: the stored token was served"
        );
        assert_eq!(service.login_times().len(), logins + 1, "{what}: no login");
    }
}

/// A Redis record whose scope holds the client secret (a store written by
/// another tool, or tampered with): the token is served, its scope never
/// shows the secret, nor does any log line. Current-thread, so the
/// captured logs hold every task's.
#[tokio::test]
async fn a_scope_in_redis_holding_the_client_secret_is_never_shown() {
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    let prefix = "scope";
    let cache = || {
        TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
            .identity_url(server.uri())
            .without_login_rate_limit()
            .token_store(Arc::new(
                RedisTokenStore::with_prefix(&redis.url(), prefix).unwrap(),
            ))
            .build()
            .unwrap()
    };
    cache().token().await.unwrap();
    let logins = service.login_times().len();
    let now = chrono::Utc::now().timestamp_millis();
    overwrite_stored_token(
        &redis,
        prefix,
        json!({"access_token": "FLEET-STORED", "issued_at_ms": now, "expires_at_ms": now + 3_600_000,
               "scope": format!("InvoicingAPI {SECRET}")}),
        3_600_000,
    )
    .await;
    let (logs, _guard) = captured_logs_at(tracing::Level::TRACE);
    let token = cache().token().await.unwrap();
    assert_eq!(token.secret(), "FLEET-STORED");
    assert_eq!(
        service.login_times().len(),
        logins,
        "the record was not taken"
    );
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("token taken from the token store"), "{text}");
    for shown in [
        token.scope().unwrap().to_owned(),
        format!("{token:?}"),
        text,
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_redis_is_trusted_for_its_ttl_not_the_writers_clock() {
    let redis = Redis::start();
    let (server, _service) = Service::start(3600).await;
    let cache = || {
        TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
            .identity_url(server.uri())
            .token_store(Arc::new(
                RedisTokenStore::with_prefix(&redis.url(), "ttl").unwrap(),
            ))
            .build()
            .unwrap()
    };
    cache().token().await.unwrap();
    // Written by a host whose clock runs 2 minutes ahead: its wall-clock
    // expiry is 2 minutes late. Redis' TTL is the truth: 30 s left.
    let ahead = chrono::Utc::now().timestamp_millis() + 120_000;
    overwrite_stored_token(
        &redis,
        "ttl",
        json!({"access_token": "FLEET-SHARED", "issued_at_ms": ahead - 3_570_000, "expires_at_ms": ahead + 30_000, "scope": null}),
        30_000,
    )
    .await;
    let token = cache().token().await.unwrap();
    assert_eq!(token.secret(), "FLEET-SHARED");
    let left = token.expires_at() - chrono::Utc::now();
    assert!(
        left <= chrono::Duration::seconds(30),
        "served past its real expiry: {left} left"
    );
}

// ------------------------------------------------ production faults (issue 10)

/// Polls `done` every 20 ms for up to `within`; panics when it never holds.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tin(i: usize) -> String {
    format!("C{i:010}")
}

/// A loopback port that refuses connections for as long as it is kept:
/// bound but never listening, so no server another test starts meanwhile
/// can be given it (a port released at once could be).
struct DeadPort(tokio::net::TcpSocket);

impl DeadPort {
    fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        DeadPort(socket)
    }

    /// A Redis URL on it.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.0.local_addr().unwrap().port())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_killed_mid_login_costs_at_most_the_locks_ttl() {
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    service.hang_next_login(Duration::from_secs(120));
    let mut env = worker_env(&server, &redis, "killed");
    env.push(("FLEET_CALLERS", "1".into()));
    // The lock lives the login timeout + 5 s: 8 s.
    env.push(("FLEET_LOGIN_TIMEOUT", "3".into()));
    let ttl = Duration::from_secs(8);
    let mut holder = spawn_workers(1, "cold", &env);
    // Its login reached the identity service: it holds the lock. Kill it.
    wait_until(Duration::from_secs(15), || service.login_times().len() == 1);
    let locked_at = service.login_times()[0];
    holder[0].kill().unwrap();
    holder[0].wait().unwrap();

    let other = reports(spawn_workers(1, "cold", &env));
    assert_eq!(other[0]["ok"], "1", "{other:?}");
    let logins = service.login_times();
    assert_eq!(logins.len(), 2);
    let after = logins[1] - locked_at;
    eprintln!(
        "killed holder: the next login went out {after:?} after the lock was taken (TTL {ttl:?})"
    );
    // Not before the lock expired (the lock is kept), nor long after.
    assert!(
        after >= ttl - Duration::from_secs(1),
        "{after:?}: the lock was ignored"
    );
    assert!(after <= ttl + Duration::from_secs(1), "{after:?}");
}

/// The issue's measure: 8 processes waiting on one key's login for 5 s,
/// counted from when that login is sent, make at most 2 Redis commands a
/// second each (INFO commandstats, which also counts the commands a script
/// runs inside Redis); and, in every one of those seconds, each process
/// sends at most 2 commands from its first poll on (MONITOR, the process
/// found by its socket; issue 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_waiting_on_one_login_poll_at_most_twice_a_second() {
    const WAITING: usize = 8;
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    service.hang_next_login(Duration::from_secs(7));
    let monitor = redis_servers::Monitor::start(redis.port());
    let mut env = worker_env(&server, &redis, "poll");
    env.push(("FLEET_CALLERS", "1".into()));
    let workers = spawn_workers(WAITING + 1, "cold", &env);
    let owners = redis_servers::ClientOwners::watch(redis.port());
    // One process sends the login (it hangs 7 s); eight wait for its token.
    wait_until(Duration::from_secs(15), || service.login_times().len() == 1);
    let before = redis.total_commands();
    let sent = service.login_times()[0];
    let window = Duration::from_secs(5);
    std::thread::sleep((sent + window).saturating_duration_since(Instant::now()));
    let stats = redis.command_stats();
    let commands = redis.total_commands() - before;
    let rate = commands as f64 / (WAITING as f64 * window.as_secs_f64());
    eprintln!(
        "poll load: {commands} Redis commands in the {window:?} after the login was sent, \
         from {WAITING} waiting processes: {rate:.2} per process per second; {stats:?}"
    );
    assert!(
        rate <= 2.0,
        "{rate:.2} commands a second per waiting process"
    );
    // Every second, per process, from its first poll (PTTL) on: what it
    // sent before is its own try at the login (a look, a slot, the lock
    // another process won).
    let sent_at =
        chrono::Utc::now().timestamp_millis() as f64 / 1000.0 - sent.elapsed().as_secs_f64();
    let owners = owners.stop();
    let mut per_process: HashMap<u32, Vec<redis_servers::Monitored>> = HashMap::new();
    for command in monitor.seen() {
        if let Some(pid) = command.client_port().and_then(|p| owners.get(&p)) {
            per_process.entry(*pid).or_default().push(command);
        }
    }
    let mut worst = 0;
    let mut shown = Vec::new();
    for commands in per_process.values() {
        let Some(polling) = commands.iter().find(|c| c.name() == "PTTL").map(|c| c.at) else {
            continue;
        };
        let mut seconds: HashMap<i64, usize> = HashMap::new();
        for c in commands
            .iter()
            .filter(|c| c.at >= polling && c.at < sent_at + 5.0)
        {
            *seconds.entry(c.at.floor() as i64).or_default() += 1;
        }
        worst = worst.max(seconds.values().copied().max().unwrap_or(0));
        shown.push(seconds.len());
    }
    eprintln!(
        "poll load: {} waiting processes seen polling; the most commands one sent in one second: {worst}",
        shown.len()
    );
    assert_eq!(shown.len(), WAITING, "waiting processes not seen polling");
    assert!(
        worst <= 2,
        "{worst} commands in one second from one waiting process"
    );
    for report in reports(workers) {
        assert_eq!(report["ok"], "1", "{report:?}");
    }
    assert_eq!(service.login_times().len(), 1, "one login for the fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_wait_for_the_first_connection_instead_of_skipping_redis() {
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    // 12 taxpayers already shared in Redis.
    let warm = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .without_login_rate_limit()
        .token_store(Arc::new(
            RedisTokenStore::with_prefix(&redis.url(), "race").unwrap(),
        ))
        .build()
        .unwrap();
    for i in 0..12 {
        warm.token_on_behalf_of(tin(i)).await.unwrap();
    }
    assert_eq!(service.login_times().len(), 12);
    // Two processes behind a slow link (10 ms each way per chunk) ask for
    // all 12 at once, while their first connection is being made.
    let proxy = redis_servers::Proxy::start(redis.port(), Duration::from_millis(10));
    let mut env = worker_env(&server, &redis, "race");
    env.retain(|(k, _)| *k != "FLEET_REDIS");
    env.push(("FLEET_REDIS", proxy.url()));
    env.push(("FLEET_TAXPAYERS", "12".into()));
    for report in reports(spawn_workers(2, "taxpayers", &env)) {
        assert_eq!(report["ok"], "12", "{report:?}");
        assert_eq!(report["logins"], "0", "{report:?}");
    }
    assert_eq!(service.login_times().len(), 12, "12 logins in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_out_of_reach_each_process_keeps_to_its_fleet_share() {
    let (server, service) = Service::start(3600).await;
    let dead = DeadPort::new();
    let store = RedisTokenStore::new(&dead.url()).unwrap();
    // Six processes share the client ID's 12 logins a minute: 2 each.
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .token_store(Arc::new(store))
        .fleet_size(6)
        .build()
        .unwrap();
    let mut served = 0;
    for i in 0..5 {
        match cache.token_on_behalf_of(tin(i)).await {
            Ok(_) => served += 1,
            Err(Error::RateLimited { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(served, 2, "a process took more than its share");
    assert_eq!(service.login_times().len(), 2);
    let stats = cache.stats();
    assert!(stats.store_errors.unreachable > 0, "{stats:?}");
}

/// More processes than the budget has logins a window: each keeps to one
/// login per `window × fleet_size / count`, so the fleet as a whole stays
/// within `count` a window on average. Here 2 logins per 10 s and 4
/// processes: one login per 20 s each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_more_processes_than_logins_a_window_each_takes_a_rate_not_a_login_a_window() {
    let (server, service) = Service::start(3600).await;
    let dead = DeadPort::new();
    let store = RedisTokenStore::new(&dead.url()).unwrap();
    let cache = TokenCache::builder(Credentials::new("fleet-share-client", SECRET))
        .identity_url(server.uri())
        .login_rate_limit(2, Duration::from_secs(10))
        .max_login_wait(Duration::from_secs(5))
        .token_store(Arc::new(store))
        .fleet_size(4)
        .build()
        .unwrap();
    cache.token_on_behalf_of(tin(0)).await.unwrap();
    let asked = Instant::now();
    let err = cache.token_on_behalf_of(tin(1)).await.unwrap_err();
    eprintln!(
        "fleet share: second login refused after {:?}: {err:?}",
        asked.elapsed()
    );
    match err {
        // The next login of this process's share: 20 s (+ the margin)
        // after the first, not 10 s (a login per window each: 4 a window
        // for the fleet, twice the budget).
        Error::RateLimited {
            retry_after: Some(wait),
        } => assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_millis(20_250),
            "told to wait {wait:?}"
        ),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(asked.elapsed() < Duration::from_secs(1), "refused at once");
    assert_eq!(service.login_times().len(), 1);
}

/// Logs written while `run` runs on this thread (a current-thread runtime
/// keeps every task on it).
fn captured_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    captured_logs_at(tracing::Level::WARN)
}

/// Logs at `level` and above written while the guard lives, on this thread.
fn captured_logs_at(
    level: tracing::Level,
) -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
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
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(Arc::clone(&logs));
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A token store set, `fleet_size` left at 1, and the store out of reach:
/// the process takes the whole budget, and says so once.
#[tokio::test]
async fn a_fleet_without_fleet_size_is_warned_once_when_the_store_is_out_of_reach() {
    let (logs, _guard) = captured_logs();
    let (server, _service) = Service::start(3600).await;
    let dead = DeadPort::new();
    let store = RedisTokenStore::new(&dead.url()).unwrap();
    let cache = TokenCache::builder(Credentials::new("fleet-warn-client", SECRET))
        .identity_url(server.uri())
        .token_store(Arc::new(store))
        .build()
        .unwrap();
    for i in 0..4 {
        cache.token_on_behalf_of(tin(i)).await.unwrap();
    }
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("fleet_size")).collect();
    eprintln!("{warnings:#?}");
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("whole"), "{}", warnings[0]);
}

/// The `ACL SETUSER myinvois ...` lines of the fleet guide, docs/fleets.md
/// (a line and its indented continuation lines), as the words after the
/// user name.
fn guide_acl_lines() -> Vec<Vec<String>> {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fleets.md"))
        .expect("docs/fleets.md");
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut open = false;
    for line in guide.lines() {
        let text = line.trim();
        if let Some(rest) = text.strip_prefix("ACL SETUSER myinvois ") {
            lines.push(rest.split_whitespace().map(str::to_owned).collect());
            open = true;
        } else if open && line.starts_with(' ') && text.starts_with('+') {
            let last = lines.last_mut().unwrap();
            last.extend(text.split_whitespace().map(str::to_owned));
        } else {
            open = false;
        }
    }
    lines
}

/// The tests' ACL users are built from `STORE_ACL` (and its Sentinel and
/// Cluster additions): the fleet guide says exactly the same.
#[test]
fn the_fleet_guide_gives_the_acl_the_tests_run_with() {
    let lines = guide_acl_lines();
    let base: Vec<String> = ["on", ">password"]
        .iter()
        .chain(redis_servers::STORE_ACL)
        .map(|s| s.to_string())
        .collect();
    let words = |rules: &[&str]| rules.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        lines,
        vec![
            base,
            words(redis_servers::STORE_ACL_SENTINEL),
            words(redis_servers::STORE_ACL_CLUSTER)
        ],
        "docs/fleets.md's ACL lines and tests/support/redis_servers.rs' STORE_ACL differ"
    );
}

/// `check()` runs every command the store can use: with the guide's ACL
/// it passes, and without any one of its commands it fails as `Auth`,
/// naming NOPERM (a command refused inside a script too). The scripts stay
/// cached between the tries: `check()` loads them itself (a user without
/// `+script|load` must fail it, though the scripts it would run are there:
/// a restart or a newly promoted replica has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_every_command_of_the_readme_acl() {
    use myinvois_auth::StoreErrorKind;
    use redis_servers::{acl_setuser, STORE_ACL};
    let redis = Redis::start();
    let url = format!("redis://probe:pw@127.0.0.1:{}/", redis.port());
    acl_setuser(redis.port(), "probe", "pw", STORE_ACL);
    RedisTokenStore::new(&url).unwrap().check().await.unwrap();
    // Twice (scripts loaded, probe keys of the first check still there).
    RedisTokenStore::new(&url).unwrap().check().await.unwrap();
    // Every probe key is under the prefix, and expires within seconds.
    let keys = redis.cmd(&["KEYS", "*"]);
    assert!(!keys.as_array().unwrap_or(&[]).is_empty(), "no probe key");
    for key in keys.as_array().unwrap_or(&[]) {
        let key = key.text();
        let ttl = redis.cmd(&["PTTL", &key]).as_int().unwrap();
        assert!(key.starts_with("myinvois-auth:"), "{key}");
        assert!((1..=2000).contains(&ttl), "{key}: PTTL {ttl}");
    }
    let mut passed_without = Vec::new();
    for missing in STORE_ACL.iter().filter(|r| r.starts_with('+')) {
        let rules: Vec<&str> = STORE_ACL.iter().copied().filter(|r| r != missing).collect();
        acl_setuser(redis.port(), "probe", "pw", &rules);
        match RedisTokenStore::new(&url).unwrap().check().await {
            Ok(()) => passed_without.push(*missing),
            Err(err) => {
                assert_eq!(err.kind(), StoreErrorKind::Auth, "without {missing}: {err}");
                assert!(
                    err.to_string().contains("NOPERM"),
                    "without {missing}: {err}"
                );
            }
        }
    }
    assert!(
        passed_without.is_empty(),
        "check() passed without {passed_without:?}: it does not run them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_health_name_the_kind_of_failure() {
    use myinvois_auth::StoreErrorKind;
    // Out of reach.
    let port = DeadPort::new();
    let dead = RedisTokenStore::new(&port.url()).unwrap();
    let err = dead.check().await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unreachable, "{err}");

    // A least-privilege user: ready, and a fleet shares through it.
    let redis = Redis::start_with_user("myinvois", "s3cret-pw", redis_servers::STORE_ACL);
    let store = || Arc::new(RedisTokenStore::new(&redis.url_with_user()).unwrap());
    store().check().await.unwrap();
    let (server, service) = Service::start(3600).await;
    let cache = || {
        TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
            .identity_url(server.uri())
            .token_store(store())
            .build()
            .unwrap()
    };
    cache().token().await.unwrap();
    cache().token().await.unwrap();
    assert_eq!(service.login_times().len(), 1, "shared through Redis");
    assert_eq!(cache().stats().store_errors.total(), 0);

    // A wrong password.
    let wrong = redis.url_with_user().replace("s3cret-pw", "wrong");
    let err = RedisTokenStore::new(&wrong)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Auth, "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");

    // A user whose ACL lacks what the store needs: NOPERM, named.
    let limited = Redis::start_with_user("limited", "pw", &["get", "set", "ping"]);
    let err = RedisTokenStore::new(&limited.url_with_user())
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("NOPERM"), "{err}");
    // And a cache on it counts the failures by kind, and still logs in.
    let (server, _) = Service::start(3600).await;
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .token_store(Arc::new(
            RedisTokenStore::new(&limited.url_with_user()).unwrap(),
        ))
        .build()
        .unwrap();
    cache.token().await.unwrap();
    assert!(cache.stats().store_errors.auth > 0, "{:?}", cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_is_skipped_after_repeated_timeouts_instead_of_costing_every_login() {
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .without_login_rate_limit()
        .token_store(Arc::new(
            RedisTokenStore::with_prefix(&redis.url(), "hung").unwrap(),
        ))
        .build()
        .unwrap();
    cache.token_on_behalf_of(tin(0)).await.unwrap();
    redis.freeze();
    // Ten cold logins while Redis hangs. Each makes six store calls: with
    // a 500 ms timeout on each, that was 3 s a login. The first pays a few
    // timeouts, then Redis is skipped: the others pay none.
    let started = Instant::now();
    cache.token_on_behalf_of(tin(1)).await.unwrap();
    let first = started.elapsed();
    let started = Instant::now();
    for i in 2..=10 {
        cache.token_on_behalf_of(tin(i)).await.unwrap();
    }
    let rest = started.elapsed();
    redis.unfreeze();
    eprintln!(
        "hung Redis: first cold login {first:?}, the next nine {rest:?}; {:?}",
        cache.stats().store_errors
    );
    assert!(first < Duration::from_secs(4), "{first:?}");
    // The identity service takes 200 ms a login: nothing more is spent.
    let each = rest / 9;
    assert!(each < Duration::from_millis(350), "{each:?} a login");
    assert!(cache.stats().store_errors.timeout >= 2);
    assert_eq!(service.login_times().len(), 11);
}

/// A connection attempt cut off (its task dropped with the runtime that
/// ran it, here while Redis is frozen) must not leave the store
/// "connecting" for ever: on another runtime, once Redis answers, the store
/// connects again within a couple of seconds.
#[test]
fn a_connection_attempt_cut_off_with_its_runtime_does_not_wedge_the_store() {
    let redis = Redis::start();
    let store = Arc::new(RedisTokenStore::new(&redis.url()).unwrap());
    redis.freeze();
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let probe = Arc::clone(&store);
    first.spawn(async move {
        let _ = probe.check().await;
    });
    // The attempt is under way (TCP accepted, the handshake unanswered).
    std::thread::sleep(Duration::from_millis(300));
    first.shutdown_background();
    redis.unfreeze();
    let second = tokio::runtime::Runtime::new().unwrap();
    let (outcome, took) = second.block_on(async {
        let started = Instant::now();
        loop {
            let outcome = store.check().await;
            if outcome.is_ok() || started.elapsed() > Duration::from_secs(3) {
                return (outcome, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    eprintln!("cut connection attempt: check() on another runtime {outcome:?} after {took:?}");
    outcome.expect("the store never connected again");
}

/// The `total_connections_received` of a plain server.
fn connections_received(redis: &Redis) -> i64 {
    let info = redis.info("stats");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_connections_received")
}

/// A store pointed at a replica (READONLY on every write) remakes its
/// connection once at once, then pauses, then skips Redis for a while: a
/// bounded number of connections, not one per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_replica_remake_the_connection_a_bounded_number_of_times() {
    let (_primary, replica) = Redis::primary_and_replica();
    let store = RedisTokenStore::new(&replica.url()).unwrap();
    let before = connections_received(&replica);
    let started = Instant::now();
    let mut kinds = Vec::new();
    for _ in 0..20 {
        let outcome = store.try_lock("k", "o", Duration::from_secs(5)).await;
        kinds.push(outcome.map_err(|e| e.kind().to_string()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (Less the connection the INFO that reads the count opens.)
    let made = connections_received(&replica) - before - 1;
    eprintln!(
        "replica: 20 writes over {:?}: {made} connections; available afterwards: {}; {kinds:?}",
        started.elapsed(),
        store.is_available()
    );
    assert!(made <= 3, "{made} connections for 20 writes");
    assert!(
        !store.is_available(),
        "Redis not skipped after repeated READONLY"
    );
    assert!(kinds.iter().all(Result::is_err), "{kinds:?}");
}

/// A Redis store whose `load` panics once this process holds an entry's
/// lock: the login task is cut off between taking the lock and logging in.
#[derive(Debug)]
struct PanicsOnceLocked {
    inner: RedisTokenStore,
    locked: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl TokenStore for PanicsOnceLocked {
    async fn load(&self, key: &str) -> Result<myinvois_auth::Loaded, myinvois_auth::StoreError> {
        if self.locked.swap(false, Ordering::SeqCst) {
            panic!("login task cut off (test)");
        }
        self.inner.load(key).await
    }
    async fn save(
        &self,
        key: &str,
        token: &myinvois_auth::StoredToken,
    ) -> Result<(), myinvois_auth::StoreError> {
        self.inner.save(key, token).await
    }
    async fn try_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, myinvois_auth::StoreError> {
        let taken = self.inner.try_lock(key, owner, ttl).await?;
        self.locked.store(taken, Ordering::SeqCst);
        Ok(taken)
    }
    async fn unlock(&self, key: &str, owner: &str) -> Result<(), myinvois_auth::StoreError> {
        self.inner.unlock(key, owner).await
    }
}

/// A login cut off after it took the entry's lock (its task panicked, as
/// it would be dropped mid-login) releases the lock at once, from a task
/// of its own, instead of leaving the fleet to wait out the lock's TTL (or
/// this process's next login of the entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_cut_off_after_taking_the_lock_releases_it_at_once() {
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    let store = PanicsOnceLocked {
        inner: RedisTokenStore::new(&redis.url()).unwrap(),
        locked: Default::default(),
    };
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .token_store(Arc::new(store))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert!(matches!(err, Error::LoginAborted), "{err:?}");
    assert_eq!(service.login_times().len(), 0, "cut off before the login");
    let cut = Instant::now();
    // The lock lives the login timeout + 5 s (25 s) if nobody releases it.
    let lock = || {
        redis
            .cmd(&["KEYS", "myinvois-auth:lock:*"])
            .as_array()
            .map_or(0, <[_]>::len)
    };
    while lock() > 0 && cut.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "cut-off login: lock still there: {}, after {:?}",
        lock(),
        cut.elapsed()
    );
    assert_eq!(lock(), 0, "the lock was left for its TTL");
}

/// While Redis is skipped after failures, the calls skipped are counted
/// (and logged) once per skip period, not once each: the stats say how
/// often the store failed, not how many calls the cache did not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_count_a_skip_period_once_not_every_call_skipped() {
    let (server, service) = Service::start(3600).await;
    let dead = DeadPort::new();
    let store = RedisTokenStore::new(&dead.url()).unwrap();
    let cache = TokenCache::builder(Credentials::new("fleet-skips-client", SECRET))
        .identity_url(server.uri())
        .without_login_rate_limit()
        .token_store(Arc::new(store))
        .build()
        .unwrap();
    let started = Instant::now();
    for i in 0..10 {
        cache.token_on_behalf_of(tin(i)).await.unwrap();
    }
    let took = started.elapsed();
    let errors = cache.stats().store_errors;
    eprintln!("skips: 10 logins in {took:?} with Redis out of reach: {errors:?}");
    assert_eq!(service.login_times().len(), 10);
    // Each connection attempt that failed, and the first call skipped in
    // each pause after it: a few for 2 s of logins (47 counted before).
    assert!(errors.total() <= 8, "{errors:?}");
    assert!(errors.unreachable >= 2, "{errors:?}");
}
