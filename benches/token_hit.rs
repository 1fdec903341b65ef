//! `TokenCache::token()` on a warm entry: the hot path every authenticated
//! request takes.
//!
//! - `token_hit/one_task`: one task awaiting `token()` in a loop
//!   (`to_async(..).iter`, current-thread runtime).
//! - `token_hit/tasks/N` (N = 1, 2, 8, 64): N tasks on a 2-worker multi-thread
//!   runtime, each doing K calls; the reported time per iteration is the wall
//!   time divided by N*K, so the numbers compare across N.
//!
//! Afterwards it prints a summary (medians of its own timed rounds) with the
//! targets: <= 50 ns median on one task, and per-call cost from 1 to 64 tasks
//! growing by no more than 2x.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use myinvois_auth::TokenCache;
use support::{median, verdict, Server};

const TASKS: [u64; 4] = [1, 2, 8, 64];
const WORKERS: usize = 2;

/// Runs `calls` (about) calls of `token()` split over `tasks` tasks on the
/// current multi-thread runtime. Returns the wall time and the calls made.
async fn spread(cache: &TokenCache, tasks: u64, calls: u64) -> (Duration, u64) {
    let per_task = calls.div_ceil(tasks).max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    black_box(cache.token().await.expect("warm token"));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("task");
    }
    (start.elapsed(), per_task * tasks)
}

fn warm_cache(identity: &Server, runtime: &tokio::runtime::Runtime) -> TokenCache {
    let cache = support::cache_builder(identity).build().expect("cache");
    runtime.block_on(cache.token()).expect("first login");
    cache
}

fn bench_token_hit(c: &mut Criterion) {
    let identity = Server::identity(Duration::ZERO, 3600);
    let single = support::current_thread_runtime();
    let multi = support::multi_thread_runtime(WORKERS);
    let cache = warm_cache(&identity, &single);

    let mut group = c.benchmark_group("token_hit");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);
    group.bench_function("one_task", |b| b.to_async(&single).iter(|| cache.token()));
    for tasks in TASKS {
        group.bench_with_input(BenchmarkId::new("tasks", tasks), &tasks, |b, &tasks| {
            b.to_async(&multi).iter_custom(|iters| {
                let cache = cache.clone();
                async move {
                    let (elapsed, calls) = spread(&cache, tasks, iters).await;
                    // Scale to exactly `iters` calls: criterion divides by it.
                    elapsed.mul_f64(iters as f64 / calls as f64)
                }
            })
        });
    }
    group.finish();
    assert_eq!(identity.requests(), 1, "a warm cache must not log in again");

    summary(&cache, &single, &multi);
    assert_eq!(identity.requests(), 1, "a warm cache must not log in again");
}

/// Own measurement for the labelled summary lines: median of timed rounds.
fn summary(cache: &TokenCache, single: &tokio::runtime::Runtime, multi: &tokio::runtime::Runtime) {
    support::note_smoke_run("token_hit");
    let (rounds, calls) = if support::full_run() {
        (15, 2_000_000)
    } else {
        (3, 10_000)
    };

    let mut one_task: Vec<f64> = (0..rounds)
        .map(|_| {
            single.block_on(async {
                let start = Instant::now();
                for _ in 0..calls {
                    black_box(cache.token().await.expect("warm token"));
                }
                start.elapsed().as_nanos() as f64 / calls as f64
            })
        })
        .collect();
    let one_task = median(&mut one_task);
    println!(
        "token_hit summary: one task, current-thread runtime: median {one_task:.1} ns/call \
         (target <= 50 ns: {})",
        verdict(one_task <= 50.0)
    );

    let mut per_n = Vec::new();
    for tasks in TASKS {
        let mut wall: Vec<f64> = (0..rounds)
            .map(|_| {
                let (elapsed, made) = multi.block_on(spread(cache, tasks, calls));
                elapsed.as_nanos() as f64 / made as f64
            })
            .collect();
        let wall = median(&mut wall);
        per_n.push((tasks, wall));
    }
    let base = per_n[0].1;
    for &(tasks, wall) in &per_n {
        // CPU time per call if all busy workers were fully used.
        let busy = tasks.min(WORKERS as u64) as f64;
        println!(
            "token_hit summary: N={tasks:>2} tasks, {WORKERS}-worker runtime: median {wall:.1} ns/call \
             (wall / (N*K)), {:.2}x of N=1; core-time {:.1} ns/call",
            wall / base,
            wall * busy
        );
    }
    let growth = per_n[per_n.len() - 1].1 / base;
    println!(
        "token_hit summary: per-call cost N=64 / N=1 = {growth:.2}x (target <= 2x: {})",
        verdict(growth <= 2.0)
    );
}

criterion_group!(benches, bench_token_hit);
criterion_main!(benches);
