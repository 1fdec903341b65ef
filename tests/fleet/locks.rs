//! Locks that never outlive their holders, and waits that do not flood
//! Redis (issue 17): a lock key without a TTL (or with an hour left), a
//! login cut off with the runtime that made the store's connection, a lock
//! command that ran late on a frozen primary, refreshes queued on the fleet
//! budget.
//!
//! Worker scenarios of this module (run by `fleet.rs`'s `fleet_worker`):
//! * `spread`: an [`AuthMiddleware`] client calls `{identity}/api` as each
//!   of `FLEET_TAXPAYERS` taxpayers in turn, one call every 50 ms, for
//!   `FLEET_SECONDS`; then waits 1.5 s (logins under way end) and reports
//!   `ok`, `failed`, `first_failure` and the counters.
//! * `queued`: `FLEET_TAXPAYERS` taxpayers of its own (none shared with
//!   another worker), each asked for every 300 ms by a task of its own for
//!   `FLEET_SECONDS`; reports `served`, `refused` (RateLimited, Timeout).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use myinvois_auth::{
    AuthMiddleware, Credentials, Error, OnBehalfOf, RedisTokenStore, TokenCache, TokenStore,
};

use super::redis_servers::{ClientOwners, Monitor, Monitored, Proxy, Redis};
use super::support::{CLIENT_ID, SECRET};
use super::{env, reports, spawn_workers, worker_env, Service};

/// The scenarios this module runs in a worker.
pub const SCENARIOS: &[&str] = &["spread", "queued"];

pub async fn scenario(name: &str, cache: &TokenCache, identity: &str) {
    match name {
        "spread" => spread(cache, identity).await,
        "queued" => queued(cache).await,
        other => panic!("unknown scenario {other}"),
    }
}

async fn spread(cache: &TokenCache, identity: &str) {
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            AuthMiddleware::new(cache.clone())
                .api_url(identity)
                .unwrap(),
        )
        .build();
    let taxpayers: usize = env("FLEET_TAXPAYERS").parse().unwrap();
    let until = Instant::now() + Duration::from_secs(env("FLEET_SECONDS").parse().unwrap());
    let (mut ok, mut failed, mut first_failure) = (0, 0, String::from("none"));
    let mut k = 0;
    while Instant::now() < until {
        let taxpayer = OnBehalfOf::new(tin(k % taxpayers));
        let started = Instant::now();
        match client
            .get(format!("{identity}/api"))
            .with_extension(taxpayer)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => ok += 1,
            outcome => {
                if failed == 0 {
                    first_failure = format!(
                        "{}_after_{}ms",
                        match outcome {
                            Ok(r) => r.status().to_string(),
                            Err(e) => e.to_string(),
                        },
                        started.elapsed().as_millis()
                    )
                    .replace(char::is_whitespace, "_");
                }
                failed += 1;
            }
        }
        k += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = cache.stats().store_errors;
    println!(
        "FLEET ok={ok} failed={failed} first_failure={first_failure} logins={} store_errors={} timeout={}",
        cache.stats().logins,
        e.total(),
        e.timeout
    );
}

async fn queued(cache: &TokenCache) {
    let index: usize = env("FLEET_WORKER_INDEX").parse().unwrap();
    let taxpayers: usize = env("FLEET_TAXPAYERS").parse().unwrap();
    let until = Instant::now() + Duration::from_secs(env("FLEET_SECONDS").parse().unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..taxpayers {
        let cache = cache.clone();
        let taxpayer = tin(index * 100 + k);
        tasks.spawn(async move {
            let (mut served, mut refused) = (0, 0);
            while Instant::now() < until {
                match cache.token_on_behalf_of(&taxpayer).await {
                    Ok(_) => served += 1,
                    Err(Error::RateLimited { .. } | Error::Timeout { .. }) => refused += 1,
                    Err(other) => panic!("{other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (served, refused)
        });
    }
    let (served, refused) = tasks
        .join_all()
        .await
        .into_iter()
        .fold((0, 0), |(s, r), (s2, r2)| (s + s2, r + r2));
    println!(
        "FLEET served={served} refused={refused} logins={} pid={}",
        cache.stats().logins,
        std::process::id()
    );
}

fn tin(i: usize) -> String {
    format!("C{i:010}")
}

/// The store key of a taxpayer's entry (as the cache hashes it).
fn entry_key_of(identity_uri: &str, taxpayer: &str) -> String {
    let token_url = format!("{identity_uri}/connect/token");
    let mut hasher = hmac_sha256::Hash::new();
    for part in [token_url.as_str(), CLIENT_ID, "", taxpayer] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lock_keys(redis: &Redis, prefix: &str) -> Vec<String> {
    redis
        .cmd(&["KEYS", &format!("{prefix}:lock:*")])
        .as_array()
        .unwrap_or(&[])
        .iter()
        .map(|k| k.text())
        .collect()
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------- item 1

/// A lock key without a TTL, and one with an hour left (a restored dump, a
/// `PERSIST`, another tool): no live login of the crate holds such a lock.
/// Each is taken over once the crate's own lock TTL (login timeout 1 s +
/// 5 s: 6 s) has passed since it was first seen: the next caller then logs
/// in, and every caller before gets an answer within `max_login_wait`.
/// `check()` names both keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_without_a_ttl_or_with_an_hour_left_is_taken_over_after_the_locks_ttl() {
    let redis = Redis::start();
    let (server, service) = Service::start(3600).await;
    let lock_ttl = Duration::from_secs(6);
    let max_wait = Duration::from_secs(2);
    let store = Arc::new(RedisTokenStore::with_prefix(&redis.url(), "stale").unwrap());
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .login_timeout(Duration::from_secs(1))
        .max_login_wait(max_wait)
        .token_store(store.clone())
        .build()
        .unwrap();
    let stale = [(tin(1), None), (tin(2), Some("3600000"))];
    let mut keys = Vec::new();
    for (taxpayer, ttl) in &stale {
        let key = format!("stale:lock:{{{}}}", entry_key_of(&server.uri(), taxpayer));
        let mut set = vec!["SET", &key, "restored-from-a-dump"];
        if let Some(ms) = ttl {
            set.extend(["PX", ms]);
        }
        assert!(!redis.cmd(&set).is_error());
        keys.push(key);
    }

    // Callers one after another, 250 ms apart, each noting when it asked,
    // how long it took and whether it was served, until one that asked
    // after the lock's TTL is.
    let started = Instant::now();
    let give_up = lock_ttl + max_wait + Duration::from_secs(3);
    let callers = stale.iter().map(|(taxpayer, _)| {
        let cache = cache.clone();
        let taxpayer = taxpayer.clone();
        tokio::spawn(async move {
            let mut calls = Vec::new();
            loop {
                let asked = Instant::now();
                let outcome = cache.token_on_behalf_of(&taxpayer).await;
                let served = match outcome {
                    Ok(_) => true,
                    Err(Error::Timeout { .. } | Error::RateLimited { .. }) => false,
                    Err(other) => panic!("{other:?}"),
                };
                calls.push((asked - started, asked.elapsed(), served));
                if (served && asked - started >= lock_ttl) || started.elapsed() > give_up {
                    return calls;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    });
    let outcomes: Vec<_> = futures_join(callers).await;
    eprintln!(
        "stale locks (asked at, took, served): {outcomes:?}; {} logins",
        service.login_times().len(),
    );
    for calls in &outcomes {
        for (asked, took, served) in calls {
            // An answer within max_login_wait, every time.
            assert!(
                *took <= max_wait + Duration::from_millis(500),
                "a caller waited {took:?}"
            );
            // Not served before the lock's TTL had passed (the lock is
            // kept that long), and the first caller after it is.
            assert!(
                !served || *asked + *took >= lock_ttl - Duration::from_secs(1),
                "served at {:?}: the lock was not kept",
                *asked + *took
            );
        }
        let after_ttl = calls.iter().find(|(asked, _, _)| *asked >= lock_ttl);
        assert!(
            after_ttl.is_some_and(|(_, _, served)| *served),
            "the first caller after the lock's TTL was not served: the entry is stranded: {calls:?}"
        );
    }
    assert_eq!(service.login_times().len(), 2, "one login each");
    assert_eq!(lock_keys(&redis, "stale"), Vec::<String>::new());

    // check() names such keys (set again: the logins took the first over).
    for (key, (_, ttl)) in keys.iter().zip(&stale) {
        let mut set = vec!["SET", key, "restored-from-a-dump"];
        if let Some(ms) = ttl {
            set.extend(["PX", ms]);
        }
        assert!(!redis.cmd(&set).is_error());
    }
    let err = store.check().await.expect_err("check() passed");
    eprintln!("stale locks: check(): {err}");
    for key in &keys {
        assert!(
            err.to_string().contains(key.as_str()),
            "{key} not named: {err}"
        );
    }
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------- item 2

/// The store's connection made on a current-thread runtime, a login cut off
/// by dropping that runtime (its lock held: the login reached the identity
/// service, which hangs): the next call, on another runtime, logs in within
/// 1 s, and no lock key remains. (The unlock of the cut-off login goes over
/// the dead connection, fails, and must be retried on a fresh one.)
#[test]
fn a_login_cut_off_with_the_runtime_that_made_the_connection_leaves_no_lock() {
    let redis = Redis::start();
    let services = tokio::runtime::Runtime::new().unwrap();
    let (server, service) = services.block_on(Service::start(3600));
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .token_store(Arc::new(
            RedisTokenStore::with_prefix(&redis.url(), "cut").unwrap(),
        ))
        .build()
        .unwrap();
    service.hang_next_login(Duration::from_secs(60));
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        let cache = cache.clone();
        tokio::spawn(async move { cache.token().await });
        while service.login_times().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(
        lock_keys(&redis, "cut").len(),
        1,
        "the login holds the lock"
    );
    drop(first);

    let second = tokio::runtime::Runtime::new().unwrap();
    let (outcome, took) = second.block_on(async {
        let asked = Instant::now();
        let outcome = cache.token().await;
        (outcome, asked.elapsed())
    });
    let left = lock_keys(&redis, "cut");
    eprintln!(
        "cut-off runtime: the next call {:?} after {took:?}; lock keys left {left:?}; {:?}",
        outcome.as_ref().map(|t| t.secret().to_owned()),
        cache.stats().store_errors
    );
    outcome.expect("the next call is served");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(service.login_times().len(), 2);
    assert_eq!(left, Vec::<String>::new());
}

// ---------------------------------------------------------------- item 3

/// A primary stopped (SIGSTOP) for 10 s while 3 processes serve 4 taxpayers
/// each (8 s tokens, so logins go on): the server is stopped right after it
/// grants a login slot, so that process's lock command (40 ms behind, a
/// proxy's delay) gets no answer and runs only when the server resumes. No
/// call fails, and once the server answers again no lock is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_command_that_ran_late_leaves_no_lock_and_no_call_fails() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port(), Duration::from_millis(20));
    let (server, service) = Service::start(8).await;
    let pid = redis.pid().unwrap().to_string();
    let armed = Arc::new(AtomicBool::new(false));
    let stopped: Arc<Mutex<Option<Instant>>> = Arc::default();
    let monitor = Monitor::start_with(redis.port(), {
        let (armed, stopped) = (Arc::clone(&armed), Arc::clone(&stopped));
        move |command| {
            let reserves = command.name() == "EVALSHA"
                && command.args.get(3).is_some_and(|k| k.contains(":logins:"));
            if reserves && armed.swap(false, Ordering::SeqCst) {
                let stop = std::process::Command::new("kill")
                    .args(["-STOP", &pid])
                    .status();
                assert!(stop.is_ok_and(|s| s.success()));
                *stopped.lock().unwrap() = Some(Instant::now());
            }
        }
    });
    let mut env = worker_env(&server, &redis, "late");
    env.retain(|(k, _)| *k != "FLEET_REDIS");
    env.push(("FLEET_REDIS", proxy.url()));
    env.push(("FLEET_TAXPAYERS", "4".into()));
    env.push(("FLEET_SECONDS", "24".into()));
    env.push(("FLEET_REFRESH_BEFORE", "4".into()));
    env.push(("FLEET_LOGIN_RATE", "600/60".into()));
    let workers = spawn_workers(3, "spread", &env);
    // 1.5 s to start, 3 s of sharing, then stop at the next slot granted.
    std::thread::sleep(Duration::from_millis(4500));
    armed.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(8);
    let stopped_at = loop {
        if let Some(at) = *stopped.lock().unwrap() {
            break at;
        }
        assert!(Instant::now() < deadline, "no slot granted to stop at");
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped_at.elapsed()));
    redis.unfreeze();
    let resumed = epoch_secs();
    let reports = reports(workers);
    let left = lock_keys(&redis, "late");
    let late_locks: Vec<Monitored> = monitor
        .seen()
        .into_iter()
        .filter(|c| {
            c.name() == "SET"
                && c.args.iter().any(|a| a.eq_ignore_ascii_case("NX"))
                && (c.at - resumed).abs() < 0.2
        })
        .collect();
    // When each lock that ran late was deleted (by a script: `DEL` as
    // MONITOR shows a script's commands), after the server resumed.
    let seen = monitor.seen();
    let released: Vec<Option<f64>> = late_locks
        .iter()
        .map(|late| {
            seen.iter()
                .find(|c| c.at >= late.at && c.name() == "DEL" && c.args.get(1) == late.args.get(1))
                .map(|del| del.at - resumed)
        })
        .collect();
    eprintln!(
        "late lock: {} logins; lock commands run as the server resumed: {late_locks:?}; \
         deleted {released:?} s after it resumed; lock keys left after the workers ended: \
         {left:?}; {reports:?}",
        service.login_times().len()
    );
    assert!(
        !late_locks.is_empty(),
        "no lock command ran late: the scenario missed its mark"
    );
    for report in &reports {
        assert_eq!(report["failed"], "0", "{report:?}");
    }
    assert_eq!(left, Vec::<String>::new(), "a lock left behind");
}

// ---------------------------------------------------------------- item 4

/// 4 processes, 3 taxpayers of their own each, 20 s tokens refreshed 10 s
/// before expiry, under a fleet budget of 4 logins per 10 s: refreshes (and
/// callers) queue for slots. Every command each process sends is counted
/// per second of Redis' clock (MONITOR, the process found by its socket),
/// less the commands of the logins it sends (the look and reservation that
/// led to one, its lock, its look under the lock, its save and unlock): at
/// most 2 in every second once the process waits. Its first second is its
/// cold start, not a wait: each caller's first look and the first ask for
/// a slot go at once (and a fresh server loads each script on first use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_with_refreshes_queued_on_the_budget_ask_at_most_twice_every_second() {
    const WORKERS: usize = 4;
    let redis = Redis::start();
    let (server, service) = Service::start(20).await;
    let monitor = Monitor::start(redis.port());
    let mut env = worker_env(&server, &redis, "queued");
    env.push(("FLEET_TAXPAYERS", "3".into()));
    env.push(("FLEET_SECONDS", "20".into()));
    env.push(("FLEET_REFRESH_BEFORE", "10".into()));
    env.push(("FLEET_LOGIN_RATE", "4/10".into()));
    let workers = spawn_workers(WORKERS, "queued", &env);
    let owners = ClientOwners::watch(redis.port());
    let reports = reports(workers);
    let owners = owners.stop();
    let commands: Vec<Monitored> = monitor
        .seen()
        .into_iter()
        .filter(|c| c.client != "lua" && c.name() != "CLIENT")
        .collect();
    let per_process = waiting_commands_per_second(&commands, &owners);
    let pids: Vec<u32> = reports.iter().map(|r| r["pid"].parse().unwrap()).collect();
    let mut worst = (0, 0, 0.0);
    let mut total = 0;
    for (pid, per_second) in &per_process {
        assert!(
            pids.contains(pid),
            "a connection of an unknown process {pid}"
        );
        for (second, count) in per_second {
            if *count > worst.1 {
                worst = (*pid, *count, *second as f64);
            }
        }
        total += per_second.values().sum::<usize>();
    }
    // What the worst second held, for the failure message.
    let worst_second: Vec<String> = commands
        .iter()
        .filter(|c| {
            c.at.floor() == worst.2
                && c.client_port().and_then(|p| owners.get(&p)) == Some(&worst.0)
        })
        .map(|c| {
            let words: Vec<&str> = c.args.iter().take(4).map(String::as_str).collect();
            format!("{:.3} {}", c.at - worst.2, words.join(" "))
        })
        .collect();
    let unknown = commands
        .iter()
        .filter(|c| c.client_port().is_none_or(|p| !owners.contains_key(&p)))
        .count();
    // Over the whole run after each process's cold start.
    let seconds: i64 = per_process
        .values()
        .map(|s| match (s.keys().next(), s.keys().last()) {
            (Some(first), Some(last)) => last - first + 1,
            _ => 0,
        })
        .sum();
    eprintln!(
        "queued refreshes: {:.2} commands a second per process on average ({total} in \
         {seconds} process-seconds)",
        total as f64 / seconds.max(1) as f64
    );
    eprintln!(
        "queued refreshes: {} logins; {} commands from the workers ({unknown} from unknown \
         connections), {total} of them while waiting after the cold start; the worst second \
         after it: {} from process {} (second {}); per process and second: {per_process:?}; \
         {reports:?}",
        service.login_times().len(),
        commands.len(),
        worst.1,
        worst.0,
        worst.2
    );
    assert_eq!(
        unknown, 0,
        "commands from connections not matched to a process"
    );
    assert!(service.login_times().len() >= 8, "no logins went on");
    assert!(
        worst.1 <= 2,
        "{} commands in one second from one waiting process: {worst_second:#?}",
        worst.1
    );
}

/// Each process's commands per second of Redis' clock (keyed by the
/// second), from a second after its first command (its cold start), less
/// those of the logins it sent: for each lock it took (`SET <lock> NX`),
/// the last look of that entry and the last reservation before it, and the
/// first look, save and unlock of that entry after it.
fn waiting_commands_per_second(
    commands: &[Monitored],
    owners: &HashMap<u16, u32>,
) -> BTreeMap<u32, BTreeMap<i64, usize>> {
    let mut by_process: BTreeMap<u32, Vec<&Monitored>> = BTreeMap::new();
    for c in commands {
        if let Some(pid) = c.client_port().and_then(|p| owners.get(&p)) {
            by_process.entry(*pid).or_default().push(c);
        }
    }
    let entry_of = |key: &str| {
        key.split_once('{')
            .map(|(_, h)| h.trim_end_matches('}').to_owned())
    };
    let keys_of = |c: &Monitored| -> Vec<String> {
        match c.name().as_str() {
            "EVALSHA" => {
                let n: usize = c.args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
                c.args.iter().skip(3).take(n).cloned().collect()
            }
            _ => c.args.get(1).cloned().into_iter().collect(),
        }
    };
    let kind = |c: &Monitored| -> &'static str {
        let keys = keys_of(c);
        let first = keys.first().map(String::as_str).unwrap_or("");
        match (c.name().as_str(), keys.len()) {
            ("SET", _) if first.contains(":lock:") => "lock",
            ("SET", _) if first.contains(":token:") => "save",
            ("EVALSHA", 2) if first.contains(":token:") => "look",
            ("EVALSHA", 2) if first.contains(":logins:") => "reserve",
            ("EVALSHA", 1) if first.contains(":lock:") => "unlock",
            _ => "other",
        }
    };
    let mut out = BTreeMap::new();
    for (pid, list) in by_process {
        let mut login = vec![false; list.len()];
        for (i, c) in list.iter().enumerate() {
            if kind(c) != "lock" {
                continue;
            }
            login[i] = true;
            let entry = keys_of(c).first().and_then(|k| entry_of(k));
            let same_entry = |c: &Monitored| keys_of(c).first().and_then(|k| entry_of(k)) == entry;
            let before = |what: &str, same: bool, login: &mut Vec<bool>| {
                if let Some(j) = (0..i)
                    .rev()
                    .find(|&j| !login[j] && kind(list[j]) == what && (!same || same_entry(list[j])))
                {
                    login[j] = true;
                }
            };
            before("reserve", false, &mut login);
            before("look", true, &mut login);
            for what in ["look", "save", "unlock"] {
                if let Some(j) = (i + 1..list.len())
                    .find(|&j| !login[j] && kind(list[j]) == what && same_entry(list[j]))
                {
                    login[j] = true;
                }
            }
        }
        // The cold start: the process's first second.
        let cold_until = list.first().map_or(0.0, |c| c.at + 1.0);
        let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
        for (c, is_login) in list.iter().zip(&login) {
            if !is_login && c.at >= cold_until {
                *per_second.entry(c.at.floor() as i64).or_default() += 1;
            }
        }
        out.insert(pid, per_second);
    }
    out
}
