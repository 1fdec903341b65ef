//! 1000 concurrent callers on a cold entry: one login, shared by all.
//!
//! Each iteration builds a fresh `TokenCache` (untimed), then spawns 1000
//! tasks on a 2-worker runtime that all call `token()`. The time of the
//! iteration runs from just before the first task is spawned to the moment
//! the last task holds the token (each task stamps when it got it; joining
//! the tasks afterwards is not timed). The loopback identity service answers
//! after a fixed 50 ms and counts requests: every iteration must cause exactly
//! one login, or the bench panics.
//!
//! One login round trip is measured the same way the cache logs in: a plain
//! reqwest POST of the login form on a fresh connection to the same service.
//! The summary prints the burst time minus that round trip (the cost of
//! serving 1000 callers beyond the login itself).
//! Targets: exactly 1 login; all 1000 callers served within one login round
//! trip + 5 ms.

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use support::{median, percentile, verdict, Server};

const CALLERS: usize = 1000;
const LOGIN_DELAY: Duration = Duration::from_millis(50);
const WORKERS: usize = 2;

/// What one burst measured.
struct Burst {
    /// From the first spawn until the last caller held the token.
    all_served: Duration,
    logins: u64,
}

/// One cold burst of `CALLERS` callers on a fresh cache.
async fn burst(identity: &Server) -> Burst {
    let cache = support::cache_builder(identity).build().expect("cache");
    let before = identity.requests();
    let start = Instant::now();
    let handles: Vec<_> = (0..CALLERS)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let token = cache.token().await.expect("token");
                (Instant::now(), token)
            })
        })
        .collect();
    let mut last = start;
    let mut first_token = None;
    for handle in handles {
        let (served, token) = handle.await.expect("caller task");
        last = last.max(served);
        let first = first_token.get_or_insert_with(|| token.clone());
        assert!(first.same_token(&token), "callers got different tokens");
    }
    let logins = identity.requests() - before;
    assert_eq!(
        logins, 1,
        "cold burst of {CALLERS} callers caused {logins} logins (must be 1)"
    );
    Burst {
        all_served: last - start,
        logins,
    }
}

/// One login round trip without the cache: the login form POSTed with plain
/// reqwest on a fresh connection (the cache's own client keeps no idle
/// connections), body read. Median of `n`.
async fn login_round_trip(identity: &Server, n: usize) -> Duration {
    let url = format!("{}/connect/token", identity.url());
    let form = [
        ("client_id", "bench-client"),
        ("client_secret", "bench-secret"),
        ("grant_type", "client_credentials"),
    ];
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let response = client
            .post(&url)
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .expect("login round trip");
        assert!(response.status().is_success());
        response.bytes().await.expect("body");
        times.push(start.elapsed().as_secs_f64());
    }
    Duration::from_secs_f64(median(&mut times))
}

fn bench_cold_burst(c: &mut Criterion) {
    let runtime = support::multi_thread_runtime(WORKERS);
    let identity = Server::identity(LOGIN_DELAY, 3600);
    let full = support::full_run();
    let round_trip = runtime.block_on(login_round_trip(&identity, if full { 21 } else { 3 }));
    let bursts: Arc<Mutex<Vec<Burst>>> = Arc::default();

    let mut group = c.benchmark_group("cold_burst");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(12));
    group.bench_function("1000_callers_50ms_login", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (identity, bursts) = (&identity, Arc::clone(&bursts));
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let burst = burst(identity).await;
                    total += burst.all_served;
                    bursts.lock().unwrap().push(burst);
                }
                total
            }
        })
    });
    group.finish();

    // A few more bursts in test mode (criterion runs the routine once there).
    if !full {
        for _ in 0..2 {
            let burst = runtime.block_on(burst(&identity));
            bursts.lock().unwrap().push(burst);
        }
    }
    let bursts = bursts.lock().unwrap();
    summary(&bursts, round_trip);
}

fn summary(bursts: &[Burst], round_trip: Duration) {
    support::note_smoke_run("cold_burst");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let min_logins = bursts.iter().map(|b| b.logins).min().unwrap_or(0);
    let max_logins = bursts.iter().map(|b| b.logins).max().unwrap_or(0);
    let mut served: Vec<Duration> = bursts.iter().map(|b| b.all_served).collect();
    served.sort();
    let overhead = |d: Duration| ms(d) - ms(round_trip);
    let p50 = percentile(&served, 50.0);
    let p90 = percentile(&served, 90.0);
    let max = served[served.len() - 1];
    let within = served
        .iter()
        .filter(|&&d| d <= round_trip + Duration::from_millis(5))
        .count();
    println!(
        "cold_burst summary: {} bursts of {CALLERS} callers; logins per burst: min {min_logins}, max {max_logins} \
         (target exactly 1: {})",
        bursts.len(),
        verdict(min_logins == 1 && max_logins == 1)
    );
    println!(
        "cold_burst summary: one login round trip (plain reqwest, fresh connection, {} ms server delay): {:.2} ms",
        LOGIN_DELAY.as_millis(),
        ms(round_trip)
    );
    println!(
        "cold_burst summary: time until all {CALLERS} callers hold the token: median {:.2} ms, p90 {:.2} ms, max {:.2} ms; \
         minus one login round trip: median {:+.2} ms, p90 {:+.2} ms, max {:+.2} ms",
        ms(p50),
        ms(p90),
        ms(max),
        overhead(p50),
        overhead(p90),
        overhead(max)
    );
    println!(
        "cold_burst summary: bursts within round trip + 5 ms: {within}/{} (target all: {})",
        served.len(),
        verdict(within == served.len())
    );
}

criterion_group!(benches, bench_cold_burst);
criterion_main!(benches);
