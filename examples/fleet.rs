//! A fleet of worker processes on one client ID sharing tokens, logins and
//! the login budget through Redis.
//!
//! ```text
//! cargo run --example fleet --features redis
//! ```
//!
//! Runs with no credentials: it starts a `redis-server` on a free loopback
//! port (skipping, with a message, when `redis-server` is not installed),
//! loopback stand-ins for the identity service and the API, and then four
//! worker processes (this same program, run again as `fleet worker …`).
//! Every worker calls the API for the ERP system itself and for three
//! taxpayers, all at the same time. It shows that the fleet logs in once
//! per taxpayer, not once per process: 4 logins for 16 cold callers in 4
//! processes, every call served.

#[path = "standins/mod.rs"]
mod standins;

use std::net::TcpListener;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use myinvois_auth::{
    AuthMiddleware, Credentials, OnBehalfOf, RedisTokenStore, TokenCache, TokenStore,
};
use standins::{ensure, DemoResult, StandIns, CLIENT_ID, CLIENT_SECRET};
use tokio::process::{Child, Command};

const WORKERS: usize = 4;
const TAXPAYERS: [&str; 3] = ["C10000000001", "C10000000002", "C10000000003"];

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [role, identity, api, redis, n] if role == "worker" => {
            worker(identity, api, redis, n).await
        }
        _ => coordinator().await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One process of the fleet: its own cache, sharing through Redis.
async fn worker(identity: &str, api: &str, redis: &str, n: &str) -> DemoResult {
    let store = Arc::new(RedisTokenStore::new(redis)?);
    // Readiness: fail at start-up, not at the first login, if Redis is out of reach.
    store.check().await?;
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .identity_url(identity)
        .token_store(store)
        // If Redis becomes unreachable, each process keeps to 1/4 of the budget.
        .fleet_size(WORKERS as u32)
        .build()?;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::with_api_url(cache.clone(), api)?)
        .build();
    let url = format!("{api}/api/v1.0/documenttypes");
    let mut calls = vec![tokio::spawn(client.get(&url).send())];
    for tin in TAXPAYERS {
        let call = client.get(&url).with_extension(OnBehalfOf::new(tin));
        calls.push(tokio::spawn(call.send()));
    }
    for call in calls {
        let status = call.await??.status();
        ensure(status == 200, || {
            format!("worker {n}: a call answered {status}")
        })?;
    }
    println!(
        "   worker {n} (pid {}): 4 calls served, {} login(s) of its own",
        std::process::id(),
        cache.stats().logins
    );
    Ok(())
}

/// Starts Redis, the stand-ins and the workers, and checks the outcome.
async fn coordinator() -> DemoResult {
    let Some(redis) = Redis::start().await? else {
        println!(
            "skipped: `redis-server` is not installed. Install it (Debian/Ubuntu: \
             `sudo apt-get install redis-server`) or run ./scripts/test, which does."
        );
        return Ok(());
    };
    let stand_ins = StandIns::start().await;
    println!("Redis on {}; starting {WORKERS} workers", redis.url);
    let program = std::env::current_exe()?;
    let mut workers: Vec<Child> = Vec::new();
    for n in 1..=WORKERS {
        workers.push(
            Command::new(&program)
                .args(["worker", &stand_ins.identity_url(), &stand_ins.api_url()])
                .args([redis.url.as_str(), &n.to_string()])
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    for worker in &mut workers {
        let status = tokio::time::timeout(Duration::from_secs(60), worker.wait())
            .await
            .map_err(|_| "a worker did not finish in 60 s")??;
        ensure(status.success(), || format!("a worker failed: {status}"))?;
    }
    let logins = stand_ins.logins();
    println!(
        "{} cold callers in {WORKERS} processes: {logins} logins (one per taxpayer), {} API calls served",
        WORKERS * (1 + TAXPAYERS.len()),
        stand_ins.api_calls()
    );
    ensure(logins == 1 + TAXPAYERS.len(), || {
        format!("expected one login per taxpayer for the whole fleet, saw {logins}")
    })?;
    ensure(stand_ins.logins_for(None) == 1, || {
        "the plain login twice".into()
    })?;
    ensure(
        stand_ins.api_calls() == WORKERS * (1 + TAXPAYERS.len()),
        || "not every call was served".into(),
    )?;
    Ok(())
}

/// A throwaway `redis-server` on a free loopback port, stopped on drop.
struct Redis {
    url: String,
    process: std::process::Child,
}

impl Redis {
    async fn start() -> DemoResult<Option<Redis>> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn();
        let process = match spawned {
            Ok(process) => process,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let redis = Redis {
            url: format!("redis://127.0.0.1:{port}"),
            process,
        };
        let client = redis::Client::open(redis.url.as_str())?;
        for _ in 0..100 {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut connection).await;
                if pong.is_ok() {
                    return Ok(Some(redis));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("redis-server did not start in 5 s".into())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
