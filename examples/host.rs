//! One host: processes sharing tokens, logins and the login budget through
//! one SQLite file, so that a restart (or the next scheduled job) costs no
//! logins.
//!
//! ```text
//! cargo run --example host --features sqlite
//! ```
//!
//! Runs with no credentials: it starts loopback stand-ins for the identity
//! service and the API, then a first process (this same program, run again
//! as `host worker …`) that calls the API for the ERP system itself and
//! for three taxpayers, logging in for each, and exits. A second process,
//! started afterwards on the same file, makes the same calls with 0
//! logins: it takes the tokens the first one left there.

#[path = "standins/mod.rs"]
mod standins;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use myinvois_auth::{AuthMiddleware, Credentials, OnBehalfOf, SqliteTokenStore, TokenCache};
use standins::{ensure, DemoResult, StandIns, CLIENT_ID, CLIENT_SECRET};
use tokio::process::Command;

const TAXPAYERS: [&str; 3] = ["C10000000001", "C10000000002", "C10000000003"];

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [role, identity, api, file, n] if role == "worker" => worker(identity, api, file, n).await,
        _ => coordinator().await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One process of the host: its own cache, sharing through the file.
async fn worker(identity: &str, api: &str, file: &str, n: &str) -> DemoResult {
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .identity_url(identity)
        .token_store(Arc::new(SqliteTokenStore::new(file)))
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
            format!("process {n}: a call answered {status}")
        })?;
    }
    let stats = cache.stats();
    ensure(stats.store_errors.total() == 0, || {
        format!("process {n}: the store failed: {:?}", stats.store_errors)
    })?;
    println!(
        "   process {n} (pid {}): 4 calls served, {} login(s) of its own",
        std::process::id(),
        stats.logins
    );
    Ok(())
}

/// Starts the stand-ins, then the two processes one after the other.
async fn coordinator() -> DemoResult {
    let stand_ins = StandIns::start().await;
    let folder = Folder::new()?;
    let file = folder.0.join("tokens.sqlite3");
    println!("token store: {}", file.display());
    let program = std::env::current_exe()?;
    let mut logins = Vec::new();
    for n in 1..=2 {
        let status = Command::new(&program)
            .args(["worker", &stand_ins.identity_url(), &stand_ins.api_url()])
            .arg(&file)
            .arg(n.to_string())
            .kill_on_drop(true)
            .status();
        let status = tokio::time::timeout(Duration::from_secs(60), status)
            .await
            .map_err(|_| "a process did not finish in 60 s")??;
        ensure(status.success(), || format!("process {n} failed: {status}"))?;
        logins.push(stand_ins.logins());
    }
    let (first, second) = (logins[0], logins[1] - logins[0]);
    println!(
        "the first process logged in {first} times (once per taxpayer); the second, started \
         after it exited, {second} times: it took their tokens from the file"
    );
    ensure(first == 1 + TAXPAYERS.len(), || {
        format!("expected one login per taxpayer, saw {first}")
    })?;
    ensure(second == 0, || {
        format!("the second process logged in {second} times")
    })?;
    ensure(stand_ins.api_calls() == 2 * (1 + TAXPAYERS.len()), || {
        "not every call was served".into()
    })?;
    Ok(())
}

/// A folder of the example's own, removed at the end.
struct Folder(PathBuf);

impl Folder {
    fn new() -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("myinvois-host-example-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Folder(path))
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
