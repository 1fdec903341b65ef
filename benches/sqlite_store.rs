//! The SQLite token store (feature `sqlite`) beside the default memory
//! store: what a host-wide store costs, and where.
//!
//! - `sqlite_store/hit/{memory,sqlite}`: `TokenCache::token()` on a warm
//!   entry, one task on a current-thread runtime. The store is never
//!   reached on a hit: the two should be alike.
//! - `sqlite_store/cold/{memory,sqlite}`: a login for a taxpayer the cache
//!   and the store have never seen (a new TIN every iteration), against a
//!   loopback identity service that answers at once, with a login budget
//!   large enough never to wait. With the SQLite store a cold login also
//!   makes its store calls (load, reserve a slot, take the lease, load
//!   again, save, end the lease), each on the store's own thread.
//!
//! The summary prints the medians and the store's extra latency per cold
//! login. Run with `cargo bench --bench sqlite_store --features sqlite`.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use myinvois_auth::{SqliteTokenStore, TokenCache, TokenStore};
use support::{median, percentile, verdict, Server};

/// A folder of the bench's own, removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("myinvois-bench-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("folder");
        Folder(path)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cache with `store` (the memory store when `None`), with a budget far
/// above what the bench spends, so that no login waits for a slot.
fn cache(identity: &Server, store: Option<Arc<dyn TokenStore>>) -> TokenCache {
    let builder =
        support::cache_builder(identity).login_rate_limit(1_000_000, Duration::from_secs(60));
    match store {
        Some(store) => builder.token_store(store),
        None => builder,
    }
    .build()
    .expect("cache")
}

static NEXT_TIN: AtomicU64 = AtomicU64::new(0);

/// A taxpayer nobody has logged in for yet.
fn new_tin() -> String {
    format!("C{:010}", NEXT_TIN.fetch_add(1, Ordering::Relaxed))
}

fn bench_sqlite_store(c: &mut Criterion) {
    let identity = Server::identity(Duration::ZERO, 3600);
    let runtime = support::current_thread_runtime();
    let folder = Folder::new();
    let sqlite: Arc<dyn TokenStore> =
        Arc::new(SqliteTokenStore::new(folder.0.join("tokens.sqlite3")));
    runtime.block_on(sqlite.check()).expect("the store works");
    let memory_cache = cache(&identity, None);
    let sqlite_cache = cache(&identity, Some(Arc::clone(&sqlite)));
    runtime.block_on(memory_cache.token()).expect("login");
    runtime.block_on(sqlite_cache.token()).expect("login");

    let mut group = c.benchmark_group("sqlite_store");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for (name, cache) in [("memory", &memory_cache), ("sqlite", &sqlite_cache)] {
        group.bench_function(format!("hit/{name}"), |b| {
            b.to_async(&runtime).iter(|| cache.token())
        });
    }
    for (name, cache) in [("memory", &memory_cache), ("sqlite", &sqlite_cache)] {
        group.bench_function(format!("cold/{name}"), |b| {
            b.to_async(&runtime).iter(|| async {
                black_box(cache.token_on_behalf_of(new_tin()).await.expect("login"))
            })
        });
    }
    group.finish();

    summary(&runtime, &memory_cache, &sqlite_cache);
    let errors = sqlite_cache.stats().store_errors.total();
    assert_eq!(errors, 0, "the SQLite store failed during the bench");
}

fn summary(runtime: &tokio::runtime::Runtime, memory: &TokenCache, sqlite: &TokenCache) {
    support::note_smoke_run("sqlite_store");
    let (rounds, calls, logins) = if support::full_run() {
        (15, 2_000_000, 400)
    } else {
        (3, 10_000, 20)
    };
    let hit = |cache: &TokenCache| {
        let mut per_call: Vec<f64> = (0..rounds)
            .map(|_| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..calls {
                        black_box(cache.token().await.expect("warm token"));
                    }
                    start.elapsed().as_nanos() as f64 / calls as f64
                })
            })
            .collect();
        median(&mut per_call)
    };
    let (hit_memory, hit_sqlite) = (hit(memory), hit(sqlite));
    println!(
        "sqlite_store summary: token() hit, one task: memory store {hit_memory:.1} ns/call, \
         SQLite store {hit_sqlite:.1} ns/call ({:.2}x; target: the hot path untouched, within \
         1.2x: {})",
        hit_sqlite / hit_memory,
        verdict(hit_sqlite <= hit_memory * 1.2)
    );
    // Cold logins, alternating stores so that both see the same machine.
    let (mut cold_memory, mut cold_sqlite) = (Vec::new(), Vec::new());
    for _ in 0..logins {
        for (cache, times) in [(memory, &mut cold_memory), (sqlite, &mut cold_sqlite)] {
            let tin = new_tin();
            let start = Instant::now();
            runtime
                .block_on(cache.token_on_behalf_of(&tin))
                .expect("login");
            times.push(start.elapsed());
        }
    }
    cold_memory.sort();
    cold_sqlite.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (m50, s50) = (
        percentile(&cold_memory, 50.0),
        percentile(&cold_sqlite, 50.0),
    );
    println!(
        "sqlite_store summary: cold login (loopback identity answering at once), {logins} each: \
         memory store median {:.0} µs (p90 {:.0}), SQLite store median {:.0} µs (p90 {:.0}); \
         the store adds {:.0} µs per cold login",
        us(m50),
        us(percentile(&cold_memory, 90.0)),
        us(s50),
        us(percentile(&cold_sqlite, 90.0)),
        us(s50) - us(m50)
    );
}

criterion_group!(benches, bench_sqlite_store);
criterion_main!(benches);
