//! Fleets on production Redis topologies (issue 10): TLS with a private CA,
//! Sentinel failover, an endpoint repointed at failover, Cluster.
//!
//! Workers (the `fleet_worker` test of `fleet.rs`, run as separate OS
//! processes) build their store with [`store_from_env`] and run the
//! scenarios of this module with [`scenario`].
//!
//! Worker environment read here (besides `fleet.rs`'s own):
//! * `FLEET_TOPOLOGY`: `tls` (`FLEET_REDIS` a `rediss://` URL, `FLEET_TLS_CA`
//!   the CA's PEM file), `sentinel` (`FLEET_SENTINEL` URL, `FLEET_MASTER`
//!   name), `cluster` (`FLEET_CLUSTER`: node URLs, comma-separated) or
//!   `endpoint` (`FLEET_REDIS`: one URL, e.g. a proxy repointed at
//!   failover); keys under `FLEET_PREFIX`.
//! * scenarios `calls`, `rounds` and `twice`: see [`scenario`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myinvois_auth::{
    AuthMiddleware, Credentials, RedisTokenStore, StoreErrorKind, TokenCache, TokenStore,
};
use redis::cluster::ClusterClientBuilder;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use wiremock::MockServer;

use super::redis_servers::{self, ClientAuth, Cluster, Proxy, Redis, Sentinel, HOST};
use super::support::{CLIENT_ID, SECRET};
use super::{env, reports, spawn_workers, Service};

// ------------------------------------------------------------ worker side

/// The store a worker uses for a topology named in `FLEET_TOPOLOGY`, if any.
pub fn store_from_env() -> Option<RedisTokenStore> {
    let topology = std::env::var("FLEET_TOPOLOGY").ok()?;
    let store = match topology.as_str() {
        // A private CA, handed to the client the operator builds.
        "tls" => {
            let ca = std::fs::read(env("FLEET_TLS_CA")).expect("read the CA PEM");
            let client = redis::Client::build_with_tls(
                env("FLEET_REDIS").as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca),
                },
            )
            .expect("a TLS client");
            RedisTokenStore::from_client(client)
        }
        "sentinel" => RedisTokenStore::from_sentinel(
            SentinelClient::build(
                vec![env("FLEET_SENTINEL")],
                env("FLEET_MASTER"),
                Some(node_login(
                    &env("FLEET_REDIS_USER"),
                    &env("FLEET_REDIS_PASSWORD"),
                )),
                SentinelServerType::Master,
            )
            .expect("a Sentinel client"),
        ),
        "cluster" => {
            let nodes = env("FLEET_CLUSTER");
            RedisTokenStore::from_cluster(
                ClusterClientBuilder::new(nodes.split(',').collect::<Vec<_>>())
                    .username(env("FLEET_REDIS_USER"))
                    .password(env("FLEET_REDIS_PASSWORD"))
                    .build()
                    .expect("a Cluster client"),
            )
        }
        // One URL whose target may change under it (a managed endpoint).
        "endpoint" => RedisTokenStore::new(&env("FLEET_REDIS")).expect("a Redis URL"),
        other => panic!("unknown FLEET_TOPOLOGY {other}"),
    };
    Some(store.prefix(&env("FLEET_PREFIX")))
}

/// How the store logs in to the data nodes behind Sentinel.
fn node_login(user: &str, password: &str) -> SentinelNodeConnectionInfo {
    SentinelNodeConnectionInfo::default().set_redis_connection_info(
        redis::RedisConnectionInfo::default()
            .set_username(user)
            .set_password(password),
    )
}

/// Runs a worker scenario this module owns. Each prints one `FLEET` report
/// line, with the cache's login and store-error counters (see [`counters`]).
///
/// * `calls`: an [`AuthMiddleware`] client calls `{identity}/api` every
///   50 ms for `FLEET_SECONDS`; reports `ok`, `failed`, `slowest_ms`.
/// * `rounds`: `FLEET_ROUNDS` rounds, one every `FLEET_ROUND_MS` from
///   `FLEET_START_AT` (the same wall-clock instants in every worker); round
///   `k` asks for a new taxpayer, `tin(k)`. Reports `failed`, `start_at`
///   and `r<k>=<token>`: two workers holding the same token for a round
///   shared one login. Builds its own cache (same store, its own client
///   ID) with a login budget of 600 a minute: the rounds need more than
///   the default 12.
/// * `twice`: asks for `FLEET_TAXPAYERS` taxpayers all at once, then again;
///   reports `ok` (first pass), `again` (second pass served the same
///   token) and `t<k>=<token>`.
pub async fn scenario(name: &str, cache: &TokenCache, identity: &str) {
    match name {
        "calls" => calls(cache, identity).await,
        "rounds" => rounds(identity).await,
        "twice" => twice(cache).await,
        other => panic!("unknown scenario {other}"),
    }
}

async fn calls(cache: &TokenCache, identity: &str) {
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::with_api_url(cache.clone(), identity).unwrap())
        .build();
    let until = Instant::now() + Duration::from_secs(env("FLEET_SECONDS").parse().unwrap());
    let (mut ok, mut failed, mut slowest) = (0, 0, Duration::ZERO);
    let mut first_failure = String::from("none");
    while Instant::now() < until {
        let started = Instant::now();
        match client.get(format!("{identity}/api")).send().await {
            Ok(r) if r.status().is_success() => ok += 1,
            outcome => {
                if failed == 0 {
                    first_failure = match outcome {
                        Ok(r) => format!("status_{}", r.status().as_u16()),
                        Err(e) => one_word(&e),
                    };
                }
                failed += 1;
            }
        }
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "FLEET ok={ok} failed={failed} slowest_ms={} first_failure={first_failure} {}",
        slowest.as_millis(),
        counters(cache)
    );
}

async fn rounds(identity: &str) {
    // The process's budget is set by the first cache built for a client ID
    // (the worker's): another client ID gets a budget of its own.
    let cache = TokenCache::builder(Credentials::new(ROUNDS_CLIENT_ID, SECRET))
        .identity_url(identity)
        .login_rate_limit(600, Duration::from_secs(60))
        .token_store(Arc::new(store_from_env().expect("FLEET_TOPOLOGY")))
        .build()
        .unwrap();
    let start_at: i64 = env("FLEET_START_AT").parse().unwrap();
    let count: i64 = env("FLEET_ROUNDS").parse().unwrap();
    let period: i64 = env("FLEET_ROUND_MS").parse().unwrap();
    let (mut failed, mut tokens) = (0, String::new());
    for k in 0..count {
        let wait = start_at + k * period - chrono::Utc::now().timestamp_millis();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        match cache.token_on_behalf_of(tin(k as usize)).await {
            Ok(token) => tokens.push_str(&format!(" r{k}={}", token.secret())),
            Err(e) => {
                failed += 1;
                tokens.push_str(&format!(" r{k}=ERROR:{}", one_word(&e)));
            }
        }
    }
    println!(
        "FLEET failed={failed} start_at={start_at} {}{tokens}",
        counters(&cache)
    );
}

async fn twice(cache: &TokenCache) {
    let taxpayers: usize = env("FLEET_TAXPAYERS").parse().unwrap();
    let pass = || async {
        let mut set = tokio::task::JoinSet::new();
        for t in 0..taxpayers {
            let cache = cache.clone();
            set.spawn(async move {
                let token = cache.token_on_behalf_of(tin(t)).await;
                (
                    t,
                    token
                        .map(|t| t.secret().to_owned())
                        .map_err(|e| one_word(&e)),
                )
            });
        }
        set.join_all().await.into_iter().collect::<BTreeMap<_, _>>()
    };
    let first = pass().await;
    let second = pass().await;
    let ok = first.values().filter(|r| r.is_ok()).count();
    let again = second
        .iter()
        .filter(|(t, r)| r.is_ok() && first[*t] == **r)
        .count();
    let tokens: String = first
        .iter()
        .map(|(t, r)| match r {
            Ok(token) => format!(" t{t}={token}"),
            Err(e) => format!(" t{t}=ERROR:{e}"),
        })
        .collect();
    println!("FLEET ok={ok} again={again} {}{tokens}", counters(cache));
}

/// The client ID of the `rounds` scenario's own cache.
const ROUNDS_CLIENT_ID: &str = "fleet-rounds-client";

/// `logins=N` and the store errors by kind, as `FLEET` report fields.
fn counters(cache: &TokenCache) -> String {
    let stats = cache.stats();
    let e = stats.store_errors;
    // Whether a rustls crypto provider was installed process-wide (the
    // store installs one only for TLS).
    let provider = match rustls::crypto::CryptoProvider::get_default() {
        Some(_) => "installed",
        None => "none",
    };
    format!(
        "logins={} store_errors={} unreachable={} timeout={} read_only={} tls={} auth={} script={} other={} crypto_provider={provider}",
        stats.logins,
        e.total(),
        e.unreachable,
        e.timeout,
        e.read_only,
        e.tls,
        e.auth,
        e.script,
        e.other
    )
}

/// A value as one whitespace-free report word.
fn one_word(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}").replace(char::is_whitespace, "_")
}

fn tin(i: usize) -> String {
    format!("C{i:010}")
}

// ------------------------------------------------------------ test side

/// The ACL user the topology tests' stores log in as, made on every data
/// node from the fleet guide's lines (`STORE_ACL` and the topology's additions).
const USER: (&str, &str) = ("myinvois", "s3cret-pw");

/// Makes [`USER`] on the plain node at `port`: the fleet guide's ACL, plus `extra`.
fn readme_user(port: u16, extra: &[&str]) {
    let rules: Vec<&str> = redis_servers::STORE_ACL
        .iter()
        .chain(extra)
        .copied()
        .collect();
    redis_servers::acl_setuser(port, USER.0, USER.1, &rules);
}

/// The environment every topology worker needs.
fn topology_env(server: &MockServer, topology: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FLEET_IDENTITY", server.uri()),
        ("FLEET_TOPOLOGY", topology.to_owned()),
        ("FLEET_PREFIX", prefix.to_owned()),
        ("FLEET_REDIS_USER", USER.0.to_owned()),
        ("FLEET_REDIS_PASSWORD", USER.1.to_owned()),
    ]
}

/// Polls `done` every 20 ms for up to `within`, without blocking the runtime.
async fn poll_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn epoch_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn num(report: &HashMap<String, String>, key: &str) -> u64 {
    report
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {report:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} not a number in {report:?}"))
}

/// Logins grouped into bursts: a login less than `gap` after the previous
/// one belongs to its burst (one refresh made by several processes).
fn bursts(logins: &[Instant], gap: Duration) -> Vec<Vec<Instant>> {
    let mut out: Vec<Vec<Instant>> = Vec::new();
    for &at in logins {
        match out.last_mut() {
            Some(burst) if at - *burst.last().unwrap() < gap => burst.push(at),
            _ => out.push(vec![at]),
        }
    }
    out
}

/// Seconds from `origin` to `at` (negative before it), for printing.
fn secs(at: Instant, origin: Instant) -> f64 {
    if at >= origin {
        (at - origin).as_secs_f64()
    } else {
        -(origin - at).as_secs_f64()
    }
}

/// TLS from a private CA: two processes whose clients trust that CA (built
/// with `Client::build_with_tls`) share one login for 40 cold callers. The
/// test binary links both rustls providers (ring and aws-lc-rs), so redis-rs
/// cannot pick one by itself: workers that do not panic show the store
/// installs one. And a store with only the public web roots names the
/// problem: a TLS error, an unknown CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_two_processes_one_login() {
    let redis = Redis::start_tls(ClientAuth::Optional);
    let ca = redis.tls().unwrap().ca_path();
    let (server, service) = Service::start(3600).await;
    let mut env = topology_env(&server, "tls", "tls");
    env.push(("FLEET_REDIS", redis.url()));
    env.push(("FLEET_TLS_CA", ca.display().to_string()));
    env.push(("FLEET_CALLERS", "20".into()));
    let started = Instant::now();
    let reports = reports(spawn_workers(2, "cold", &env));
    eprintln!("tls: {:?} for 2 processes; {reports:?}", started.elapsed());
    for report in &reports {
        assert_eq!(report["ok"], "20", "{report:?}");
        assert_eq!(report["distinct"], "1", "{report:?}");
    }
    assert_eq!(service.login_times().len(), 1, "one login for the fleet");
    assert_ne!(redis.cli(&["DBSIZE"]), "0", "nothing was stored in Redis");

    // In this process: the public web roots do not know the private CA.
    let store = RedisTokenStore::new(&redis.url()).unwrap();
    let err = store.check().await.unwrap_err();
    eprintln!("tls: without the CA: {err}");
    assert_eq!(err.kind(), StoreErrorKind::Tls, "{err}");
    assert!(err.to_string().contains("unknown CA"), "{err}");
    // And with it, the store is ready.
    let client = redis::Client::build_with_tls(
        redis.url().as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(redis.ca_pem().to_vec()),
        },
    )
    .unwrap();
    RedisTokenStore::from_client(client).check().await.unwrap();
}

/// A store on the primary that `sentinel` names, keys under `prefix`,
/// logged in as [`USER`] (see [`sentinel_with_readme_user`]).
fn sentinel_store(sentinel: &Sentinel, prefix: &str) -> RedisTokenStore {
    let client = SentinelClient::build(
        vec![sentinel.sentinel_url()],
        sentinel.master_name(),
        Some(node_login(USER.0, USER.1)),
        SentinelServerType::Master,
    )
    .unwrap();
    RedisTokenStore::from_sentinel(client).prefix(prefix)
}

/// A primary, a replica and Sentinel, with [`USER`] on both data nodes
/// made from the fleet guide's lines for Sentinel.
fn sentinel_with_readme_user() -> Sentinel {
    let sentinel = Sentinel::start();
    for node in sentinel.nodes() {
        readme_user(node.port(), redis_servers::STORE_ACL_SENTINEL);
    }
    sentinel
}

/// This process's established TCP connections to `port` on loopback, as
/// `ss -tnop` prints them (its timer column shows keepalive).
fn this_process_connections_to(port: u16) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args([
            "-tnopH",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) not runnable");
    let me = format!("pid={},", std::process::id());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&me))
        .map(str::to_owned)
        .collect()
}

/// The keys matching `pattern` on the plain server at `port`, each with its PTTL.
fn keys_with_ttl(port: u16, pattern: &str) -> Vec<(String, i64)> {
    let keys = redis_servers::cmd(port, &["KEYS", pattern]);
    keys.as_array()
        .unwrap_or(&[])
        .iter()
        .map(|key| {
            let key = key.text();
            let ttl = redis_servers::cmd(port, &["PTTL", &key])
                .as_int()
                .unwrap_or(-3);
            (key, ttl)
        })
        .collect()
}

/// Waits until a write on `primary` reaches the replica on `replica`. A
/// replica whose link is up may not be streamed writes yet: after a
/// diskless sync, Redis 7 waits for its first `REPLCONF ACK` (sent once a
/// second), and a primary killed before would take every write with it.
async fn replicating(primary: u16, replica: u16) {
    let probe = format!("topologies:probe:{}", epoch_ms());
    let set = redis_servers::cmd(primary, &["SET", &probe, "1", "PX", "60000"]);
    assert!(!set.is_error(), "{set}");
    poll_until(
        Duration::from_secs(10),
        "writes streamed to the replica",
        || redis_servers::cmd(replica, &["EXISTS", &probe]).as_int() == Some(1),
    )
    .await;
}

/// Sentinel failover under load, the stores logged in to the data nodes as
/// a user made from the fleet guide's ACL lines for Sentinel: three
/// processes call the API every 50 ms with 12 s tokens (refreshed 6 s
/// before expiry); between two refreshes the primary is SIGKILLed. No call
/// fails, none waits (a caller with a
/// valid token never does), none is made with an expired token, and once
/// the stores have asked Sentinel for the new primary, each refresh is
/// again one login for the whole fleet, every ~6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_sharing_resumes_and_no_call_fails() {
    const LIFETIME: Duration = Duration::from_secs(12);
    let mut sentinel = sentinel_with_readme_user();
    replicating(sentinel.primary_port(), sentinel.replica_port()).await;
    let (server, service) = Service::start(LIFETIME.as_secs()).await;
    let mut env = topology_env(&server, "sentinel", "myinvois-auth");
    env.push(("FLEET_SENTINEL", sentinel.sentinel_url()));
    env.push(("FLEET_MASTER", sentinel.master_name().to_owned()));
    env.push(("FLEET_SECONDS", "30".into()));
    env.push(("FLEET_REFRESH_BEFORE", "6".into()));
    let workers = spawn_workers(3, "calls", &env);

    // The first refresh done (its login answered, its lock released): the
    // primary dies between two refreshes, and the next one falls just
    // after the failover.
    poll_until(Duration::from_secs(20), "the first refresh", || {
        service.login_times().len() >= 2
    })
    .await;
    let primary = sentinel.primary_port();
    poll_until(
        Duration::from_secs(5),
        "the refresh's lock released",
        || keys_with_ttl(primary, "myinvois-auth:lock:*").is_empty(),
    )
    .await;
    let old = sentinel.kill_primary();
    let killed = Instant::now();
    let new = sentinel.wait_for_promotion(Duration::from_secs(20));
    let promoted = Instant::now();
    let reports = reports(workers);

    let logins = service.login_times();
    let bursts = bursts(&logins, Duration::from_secs(3));
    let shown: Vec<String> = bursts
        .iter()
        .map(|b| format!("{:+.1}s x{}", secs(b[0], killed), b.len()))
        .collect();
    // Sharing resumed: the first refresh after the promotion made by one
    // process for all.
    let resumed = bursts
        .iter()
        .find(|b| b[0] > promoted && b.len() == 1)
        .map(|b| b[0] - promoted);
    let slowest = reports.iter().map(|r| num(r, "slowest_ms")).max().unwrap();
    eprintln!(
        "sentinel: primary {old} killed; {new} promoted {:?} later; logins (time after the kill, count): {shown:?}; sharing resumed {resumed:?} after the promotion; slowest call {slowest} ms",
        promoted - killed
    );
    eprintln!("sentinel: {reports:?}");
    for report in &reports {
        assert_eq!(report["failed"], "0", "{report:?}");
        assert!(num(report, "ok") > 200, "{report:?}");
    }
    assert_eq!(
        service.expired_calls.load(Ordering::SeqCst),
        0,
        "expired-token calls"
    );
    assert!(slowest < 5000, "a call waited {slowest} ms");
    // The stores did lose their primary (otherwise this proves nothing).
    assert!(
        reports.iter().any(|r| num(r, "store_errors") > 0),
        "no store call failed: {reports:?}"
    );
    // The fleet kept refreshing: never a token's lifetime without a login.
    for pair in logins.windows(2) {
        assert!(
            pair[1] - pair[0] < LIFETIME,
            "no login for {:?} from {:+.1} s after the kill: {shown:?}",
            pair[1] - pair[0],
            secs(pair[0], killed)
        );
    }
    // From 10 s after the promotion, one login per refresh for the fleet.
    let settled = promoted + Duration::from_secs(10);
    assert!(
        logins.iter().any(|t| *t >= settled),
        "no refresh after the failover settled: {shown:?}"
    );
    for pair in logins.windows(2).filter(|p| p[1] >= settled) {
        assert!(
            pair[1] - pair[0] > Duration::from_secs(3),
            "two logins {:?} apart, {:.1} s after the promotion: {shown:?}",
            pair[1] - pair[0],
            secs(pair[1], promoted)
        );
    }
    let resumed = resumed.expect("sharing never resumed");
    assert!(
        resumed < Duration::from_secs(10),
        "sharing resumed {resumed:?} after the promotion"
    );
    // The fleet guide's lines leave nothing denied in the ACL log of the node
    // that serves now.
    let denied = redis_servers::cmd(new, &["ACL", "LOG"]);
    assert!(
        denied.as_array().unwrap_or(&[]).is_empty(),
        "denied on the new primary: {denied}"
    );
}

/// A login cut by a failover: the primary dies while one process logs in
/// (holding the entry's lock, which the replica has). That process gets its
/// token, but its save and unlock go to the dead primary (and it does not
/// unlock again later), so the lock lives on, on the new primary, guarding
/// no login. Another process asking for
/// the token after the promotion should not wait that lock out: it should
/// be served within its `max_login_wait` (4 s here; the lock lives the
/// login timeout + 5 s: 15 s here, 25 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_cut_by_a_failover_does_not_hold_up_the_fleet_until_its_lock_expires() {
    let max_wait = Duration::from_secs(4);
    let mut sentinel = sentinel_with_readme_user();
    replicating(sentinel.primary_port(), sentinel.replica_port()).await;
    let (server, service) = Service::start(3600).await;
    let cache = || {
        TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
            .identity_url(server.uri())
            .login_timeout(Duration::from_secs(10))
            .max_login_wait(max_wait)
            .token_store(Arc::new(sentinel_store(&sentinel, "myinvois-auth")))
            .build()
            .unwrap()
    };
    // Two processes' worth: each cache has its own connection.
    let (one, two) = (cache(), cache());
    let login = tokio::spawn({
        let one = one.clone();
        async move { one.token().await }
    });
    // The login reached the identity service (answered 200 ms later): kill.
    poll_until(Duration::from_secs(10), "the login sent", || {
        service.login_times().len() == 1
    })
    .await;
    let primary = sentinel.primary_port();
    let locks_before = keys_with_ttl(primary, "myinvois-auth:lock:*");
    sentinel.kill_primary();
    login.await.unwrap().expect("the first process is served");
    let new = sentinel.wait_for_promotion(Duration::from_secs(20));
    let promoted = Instant::now();
    // Until Sentinel has settled, redis-rs finds no valid primary
    // (MasterNameNotFoundBySentinel) and the other process would go on
    // without the store: wait until a store can reach the new primary.
    let probe = sentinel_store(&sentinel, "myinvois-auth");
    while probe.check().await.is_err() {
        assert!(
            promoted.elapsed() < Duration::from_secs(20),
            "Sentinel never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let locks_after = keys_with_ttl(new, "myinvois-auth:lock:*");
    // The client the store made from Sentinel's answer has TCP keepalive
    // (the operator's node settings had none).
    let sockets = this_process_connections_to(new);
    eprintln!("cut login: this process's connections to the new primary: {sockets:#?}");
    assert!(!sockets.is_empty(), "no connection to the new primary");
    assert!(
        sockets.iter().all(|s| s.contains("keepalive")),
        "a connection without keepalive: {sockets:#?}"
    );
    eprintln!(
        "cut login: the new primary reachable through Sentinel {:?} after the promotion",
        promoted.elapsed()
    );
    eprintln!("cut login: locks on the old primary at the kill {locks_before:?}, on the new one after the promotion {locks_after:?}");

    let asked = Instant::now();
    let token = two.token().await;
    let waited = asked.elapsed();
    eprintln!(
        "cut login: the other process waited {waited:?} for its token ({:?}); {} logins; {:?}",
        token.as_ref().map(|t| t.secret().to_owned()),
        service.login_times().len(),
        two.stats().store_errors
    );
    token.expect("the other process is served");
    assert!(
        waited <= max_wait + Duration::from_secs(1),
        "waited {waited:?} for a lock that guards no login (its PTTL after the promotion: {locks_after:?})"
    );
}

/// A managed endpoint repointed at failover (a proxy here): its open
/// connections stay on the old primary, which comes back as a replica and
/// answers writes with READONLY. The stores reconnect through the endpoint,
/// reach the new primary, and a new taxpayer asked by two processes at once
/// is again one login, within 10 s of the repoint; no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_repointed_at_failover_is_followed() {
    const ROUNDS: i64 = 20;
    let (primary, replica) = Redis::primary_and_replica();
    replicating(primary.port(), replica.port()).await;
    let proxy = Proxy::start(primary.port(), Duration::ZERO);
    let (server, service) = Service::start(3600).await;
    let mut env = topology_env(&server, "endpoint", "endpoint");
    env.push(("FLEET_REDIS", proxy.url()));
    env.push(("FLEET_ROUNDS", ROUNDS.to_string()));
    env.push(("FLEET_ROUND_MS", "1000".into()));
    let workers = spawn_workers(2, "rounds", &env);

    // Rounds shared through the old primary, then the failover.
    poll_until(Duration::from_secs(20), "five rounds", || {
        service.login_times().len() >= 5
    })
    .await;
    let promote = replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    assert!(!promote.is_error(), "{promote}");
    let demote = primary.cmd(&["REPLICAOF", HOST, &replica.port().to_string()]);
    assert!(!demote.is_error(), "{demote}");
    proxy.repoint(replica.port());
    let repointed = epoch_ms();
    let reports = reports(workers);
    eprintln!("endpoint: {reports:?}");

    for report in &reports {
        assert_eq!(report["failed"], "0", "{report:?}");
    }
    // Logins per round: 1 when the two processes shared one token.
    let start_at: i64 = reports[0]["start_at"].parse().unwrap();
    let rounds: Vec<(i64, usize)> = (0..ROUNDS)
        .map(|k| {
            let tokens: BTreeSet<&String> = reports.iter().map(|r| &r[&format!("r{k}")]).collect();
            (start_at + k * 1000 - repointed, tokens.len())
        })
        .collect();
    let shown: Vec<String> = rounds
        .iter()
        .map(|(at, n)| format!("{:+.1}s x{n}", *at as f64 / 1000.0))
        .collect();
    let resumed = rounds
        .iter()
        .find(|&&(at, n)| at > 0 && n == 1)
        .map(|r| r.0);
    eprintln!(
        "endpoint: logins per round (time after the repoint, count): {shown:?}; sharing resumed {resumed:?} ms after the repoint; {} logins in all",
        service.login_times().len()
    );
    // Shared before (a round that began within 1 s before the repoint may
    // straddle it) and from 10 s after.
    for (at, n) in &rounds {
        if *at < -1000 || *at >= 10_000 {
            assert_eq!(*n, 1, "round at {at} ms from the repoint: {shown:?}");
        }
    }
    let resumed = resumed.expect("sharing never resumed");
    assert!(resumed < 10_000, "resumed {resumed} ms after the repoint");
    // The old connections did meet the demoted primary.
    assert!(
        reports.iter().any(|r| num(r, "read_only") > 0),
        "no READONLY seen: the failover was not exercised: {reports:?}"
    );
    let distinct: BTreeSet<&String> = reports
        .iter()
        .flat_map(|r| (0..ROUNDS).map(move |k| &r[&format!("r{k}")]))
        .collect();
    assert_eq!(
        service.login_times().len(),
        distinct.len(),
        "a token per login"
    );
}

/// A Redis Cluster of three masters, the stores logged in as a user made
/// from the fleet guide's ACL lines for a Cluster: two processes asking for the
/// same 12 taxpayers at once (then again) make 12 logins in all and get the same
/// token for each; the entries' keys spread over several nodes (the hash
/// tags keep each entry's keys in one slot), and no call meets a MOVED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_three_masters_two_processes_twelve_taxpayers_twelve_logins() {
    let cluster = Cluster::start(3);
    for node in cluster.nodes() {
        readme_user(node.port(), redis_servers::STORE_ACL_CLUSTER);
    }
    let (server, service) = Service::start(3600).await;
    let mut env = topology_env(&server, "cluster", "myinvois-auth");
    env.push(("FLEET_CLUSTER", cluster.urls().join(",")));
    env.push(("FLEET_TAXPAYERS", "12".into()));
    let reports = reports(spawn_workers(2, "twice", &env));
    let per_node: Vec<usize> = cluster
        .nodes()
        .iter()
        .map(|node| {
            node.cmd(&["KEYS", "myinvois-auth:token:*"])
                .as_array()
                .map_or(0, <[_]>::len)
        })
        .collect();
    eprintln!(
        "cluster: {} logins; tokens per node {per_node:?}; {reports:?}",
        service.login_times().len()
    );
    // Cluster routing: every call reached its slot's node, and the
    // entries are spread over the nodes.
    for report in &reports {
        assert_eq!(report["store_errors"], "0", "{report:?}");
        assert_eq!(report["other"], "0", "MOVED or another error: {report:?}");
    }
    assert!(
        per_node.iter().filter(|n| **n > 0).count() > 1,
        "all on one node: {per_node:?}"
    );
    // Sharing: a taxpayer both processes were served got one token.
    for t in 0..12 {
        let key = format!("t{t}");
        let (a, b) = (&reports[0][&key], &reports[1][&key]);
        if a.starts_with("FLEET-") && b.starts_with("FLEET-") {
            assert_eq!(a, b, "taxpayer {t} not shared");
        }
    }
    // Every caller served, with 12 logins: as many as the budget (12 a
    // minute) allows. A process whose fleet slot is refused because the
    // other one reserved slots for these same entries must wait for their
    // tokens, not fail with RateLimited.
    for report in &reports {
        assert_eq!(report["ok"], "12", "callers refused: {report:?}");
        assert_eq!(report["again"], "12", "{report:?}");
        // Plain TCP: no process-wide TLS provider was chosen for the
        // application.
        assert_eq!(report["crypto_provider"], "none", "{report:?}");
    }
    assert_eq!(service.login_times().len(), 12, "12 logins in all");
    assert_eq!(per_node.iter().sum::<usize>(), 12, "{per_node:?}");
    // The fleet guide's lines leave nothing denied in any node's ACL log (an
    // alert on denials would fire).
    for node in cluster.nodes() {
        let denied = node.cmd(&["ACL", "LOG"]);
        let denied = denied.as_array().unwrap_or(&[]);
        assert!(
            denied.is_empty(),
            "denied on node {}: {:?}",
            node.port(),
            denied.iter().map(|d| d.as_map()).collect::<Vec<_>>()
        );
    }
}

/// A plain store (not `from_cluster`) pointed at one node of a Cluster:
/// keys of the other nodes' slots answer MOVED. Remaking the connection
/// cannot cure that, so after a remake at once and one after a pause the
/// store skips Redis for a while: a bounded number of connections (not one
/// per MOVED), and a cache on it still serves every taxpayer (on its own),
/// counting the failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_outside_cluster_mode_reconnects_a_bounded_number_of_times_and_falls_back() {
    let cluster = Cluster::start(3);
    let node = &cluster.nodes()[0];
    // Its readiness check says so, every time (its probe keys used to land
    // in one slot now and then, and it passed).
    for _ in 0..9 {
        let err = RedisTokenStore::new(&node.url())
            .unwrap()
            .check()
            .await
            .expect_err("check() passed on a Cluster node");
        assert_eq!(err.kind(), StoreErrorKind::Other, "{err}");
        assert!(err.to_string().contains("from_cluster"), "{err}");
    }
    let connections = || -> i64 {
        let info = node.info("stats");
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_connections_received")
    };
    let store = Arc::new(RedisTokenStore::new(&node.url()).unwrap());
    let before = connections();
    let mut moved = 0;
    for i in 0..30 {
        if let Err(e) = store.load(&format!("key-{i}")).await {
            moved += usize::from(e.to_string().contains("MOVED"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (Less the connection the INFO that reads the count opens.)
    let made = connections() - before - 1;
    eprintln!(
        "MOVED outside Cluster mode: 30 loads: {moved} MOVED, {made} connections; available: {}",
        store.is_available()
    );
    assert!(moved > 0, "no key of another node's slot");
    assert!(made <= 3, "{made} connections for 30 loads");
    assert!(!store.is_available(), "Redis not skipped");

    let (server, service) = Service::start(3600).await;
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .without_login_rate_limit()
        .token_store(store)
        .build()
        .unwrap();
    for t in 0..12 {
        cache.token_on_behalf_of(tin(t)).await.unwrap();
    }
    assert_eq!(service.login_times().len(), 12);
    let made = connections() - before - 2;
    eprintln!(
        "MOVED outside Cluster mode: a cache served 12 taxpayers with 12 logins; {made} connections in all; {:?}",
        cache.stats().store_errors
    );
    assert!(made <= 3, "{made} connections");
}
