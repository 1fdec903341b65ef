//! Intermediaries with many taxpayers: the cost of a call for one warm
//! taxpayer among 10 000 cached, and of a new taxpayer on a full cache.
//!
//! - `taxpayers/hit/plain` and `taxpayers/hit/on_behalf_of_10000`: 64 tasks
//!   on a 2-worker runtime calling `token()`, or `token_on_behalf_of(tin)`
//!   for one warm taxpayer while 10 000 are cached; wall time / calls.
//! - `taxpayers/new/...`: a taxpayer the cache has not seen, on a cache that
//!   is full at 1 000 or 10 000 entries (so one entry is evicted), or has
//!   room. Each includes a login to the loopback identity service; the
//!   eviction is the difference between full and not full.
//!
//! The summary prints the ratio on_behalf_of / plain (target: <= 2x), and
//! what a taxpayer not in the cache costs on a full cache of 1 000 and of
//! 10 000 entries: with a login, and without (its token taken back from the
//! token store), which isolates the eviction (target: flat, not a scan).

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use myinvois_auth::TokenCache;
use support::{median, verdict, Server};

const TASKS: u64 = 64;
const WORKERS: usize = 2;
const CACHED: usize = 10_000;
const WARM: &str = "C0000004242";

fn tin(i: usize) -> String {
    format!("C{i:010}")
}

/// A cache holding `n` taxpayers (and the plain login), at most `max`.
fn filled(
    identity: &Server,
    runtime: &tokio::runtime::Runtime,
    n: usize,
    max: usize,
) -> TokenCache {
    let cache = support::cache_builder(identity)
        .max_entries(max)
        .build()
        .expect("cache");
    runtime.block_on(async {
        cache.token().await.expect("plain login");
        for i in 0..n {
            cache
                .token_on_behalf_of(tin(i))
                .await
                .expect("taxpayer login");
        }
    });
    cache
}

/// 64 tasks making `calls` calls in all; wall time per call.
async fn spread(cache: &TokenCache, on_behalf_of: bool, calls: u64) -> Duration {
    let per_task = calls.div_ceil(TASKS).max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let token = if on_behalf_of {
                        cache.token_on_behalf_of(WARM).await
                    } else {
                        cache.token().await
                    };
                    black_box(token.expect("warm token"));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("task");
    }
    start.elapsed() / u32::try_from(per_task * TASKS).unwrap_or(u32::MAX)
}

/// Serves `n` taxpayers the cache has not seen; mean time per taxpayer.
fn new_taxpayers(
    cache: &TokenCache,
    runtime: &tokio::runtime::Runtime,
    from: usize,
    n: usize,
) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        for i in from..from + n {
            black_box(cache.token_on_behalf_of(tin(i)).await.expect("login"));
        }
        start.elapsed() / u32::try_from(n).unwrap_or(u32::MAX)
    })
}

fn bench_taxpayers(c: &mut Criterion) {
    let identity = Server::identity(Duration::ZERO, 3600);
    let setup = support::current_thread_runtime();
    let multi = support::multi_thread_runtime(WORKERS);
    let cache = filled(&identity, &setup, CACHED, CACHED + 1);
    assert_eq!(cache.stats().entries, CACHED + 1);

    let mut group = c.benchmark_group("taxpayers");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    for (name, on_behalf_of) in [("hit/plain", false), ("hit/on_behalf_of_10000", true)] {
        group.bench_function(name, |b| {
            b.to_async(&multi).iter_custom(|iters| {
                let cache = cache.clone();
                async move {
                    spread(&cache, on_behalf_of, iters).await
                        * u32::try_from(iters).unwrap_or(u32::MAX)
                }
            })
        });
    }
    let mut next = CACHED;
    for (name, size, max) in [
        ("new/full_1000", 1_000, 1_000),
        ("new/full_10000", CACHED, CACHED),
        ("new/room_10000", CACHED, usize::MAX),
    ] {
        let cache = filled(&identity, &setup, size, max);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = usize::try_from(iters).unwrap_or(usize::MAX);
                next += n;
                new_taxpayers(&cache, &setup, next, n) * u32::try_from(iters).unwrap_or(u32::MAX)
            })
        });
    }
    group.finish();

    summary(&identity, &cache, &setup, &multi);
}

/// Own measurements for the labelled summary lines: medians of timed rounds.
fn summary(
    identity: &Server,
    cache: &TokenCache,
    setup: &tokio::runtime::Runtime,
    multi: &tokio::runtime::Runtime,
) {
    support::note_smoke_run("taxpayers");
    let (rounds, calls, fresh) = if support::full_run() {
        (15, 2_000_000, 2_000)
    } else {
        (3, 20_000, 200)
    };
    let per = |on_behalf_of: bool| {
        let mut ns: Vec<f64> = (0..rounds)
            .map(|_| {
                multi
                    .block_on(spread(cache, on_behalf_of, calls))
                    .as_nanos() as f64
            })
            .collect();
        median(&mut ns)
    };
    let plain = per(false);
    let theirs = per(true);
    let ratio = theirs / plain;
    println!(
        "taxpayers summary: {TASKS} tasks, {WORKERS}-worker runtime, {CACHED} taxpayers cached: \
         token() {plain:.1} ns/call, token_on_behalf_of(warm) {theirs:.1} ns/call, \
         ratio {ratio:.2}x (target <= 2x: {})",
        verdict(ratio <= 2.0)
    );

    let mut cost = Vec::new();
    for (label, size, max) in [
        ("full at 1 000", 1_000, 1_000),
        ("full at 10 000", CACHED, CACHED),
        ("room at 10 000", CACHED, usize::MAX),
    ] {
        let cache = filled(identity, setup, size, max);
        let mut us: Vec<f64> = (0..rounds.min(5))
            .map(|r| {
                let from = 1_000_000 + r * fresh;
                new_taxpayers(&cache, setup, from, fresh).as_nanos() as f64 / 1000.0
            })
            .collect();
        let us = median(&mut us);
        println!("taxpayers summary: a new taxpayer (one loopback login included), cache {label}: {us:.1} us");
        cost.push(us);
    }
    println!(
        "taxpayers summary: new taxpayer, 10 000 / 1 000 entries = {:.2}x (a login dominates)",
        cost[1] / cost[0]
    );

    // Without the login: taxpayers evicted earlier come back, take their
    // token from the token store (no login) and evict another entry.
    let mut back = Vec::new();
    for size in [1_000, CACHED] {
        let cache = filled(identity, setup, 2 * size, size);
        let logins = identity.requests();
        // The first half was evicted while the second was filled; each
        // round calls the half the previous one evicted.
        let mut us: Vec<f64> = (0..rounds.min(5))
            .map(|r| new_taxpayers(&cache, setup, (r % 2) * size, size).as_nanos() as f64 / 1000.0)
            .collect();
        let misses = cache.stats();
        assert!(misses.entries <= size + 1);
        assert_eq!(
            identity.requests(),
            logins,
            "a returning taxpayer logged in"
        );
        let us = median(&mut us);
        println!(
            "taxpayers summary: a returning taxpayer (token from the store, one eviction), \
             cache full at {size}: {us:.2} us"
        );
        back.push(us);
    }
    let growth = back[1] / back[0];
    println!(
        "taxpayers summary: returning taxpayer on a full cache, 10 000 / 1 000 entries = \
         {growth:.2}x (target: flat, <= 1.5x, not a scan of every entry: {})",
        verdict(growth <= 1.5)
    );
}

criterion_group!(benches, bench_taxpayers);
criterion_main!(benches);
