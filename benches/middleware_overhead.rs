//! What `AuthMiddleware` costs per request, against the same request sent
//! without it.
//!
//! One `reqwest::Client` (one connection pool, keep-alive) sends `GET`
//! requests one after another to an in-process loopback HTTP server:
//!
//! - (a) `a_auth_middleware`: through `reqwest_middleware` with
//!   `AuthMiddleware` and a warm `TokenCache` (the middleware adds the header);
//! - (b) `b_bare_middleware_static_header`: through `reqwest_middleware` with
//!   no middleware, the same `Authorization: Bearer` value set on the request;
//! - (c) `c_plain_reqwest_static_header`: plain `reqwest`, the same header.
//!
//! Criterion reports each variant as throughput (one element per request).
//! Afterwards the bench runs the variants in many short interleaved rounds
//! (cycling through every order of the variants, so machine noise hits all
//! alike) and prints the requests/s of each and the ratios a/b and a/c from
//! that one run.
//! Target: a/b >= 0.99.
//!
//! The interleaved rounds also run (d), `reqwest_middleware` with a
//! pass-through middleware that does nothing (static header): a/d separates
//! what `AuthMiddleware` itself does from the cost of having any middleware.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::clients::{Clients, Variant};
use support::{median, verdict, Server};

/// The variants in the order of the summary's arrays: (a), (b), (c), (d).
const VARIANTS: [Variant; 4] = Variant::ALL;

fn setup(runtime: &tokio::runtime::Runtime) -> (Server, Server, Clients) {
    let api = Server::api();
    let identity = Server::identity(Duration::ZERO, 3600);
    let cache = support::cache_builder(&identity).build().expect("cache");
    let clients = runtime.block_on(Clients::new(&api, cache));
    (api, identity, clients)
}

fn bench_middleware_overhead(c: &mut Criterion) {
    let runtime = support::current_thread_runtime();
    let (api, identity, clients) = setup(&runtime);

    let mut group = c.benchmark_group("middleware_overhead");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .sample_size(50);
    group.bench_function("a_auth_middleware", |b| {
        b.to_async(&runtime).iter(|| clients.send(Variant::Auth))
    });
    group.bench_function("b_bare_middleware_static_header", |b| {
        b.to_async(&runtime).iter(|| clients.send(Variant::Bare))
    });
    group.bench_function("c_plain_reqwest_static_header", |b| {
        b.to_async(&runtime).iter(|| clients.send(Variant::Plain))
    });
    group.finish();

    summary(&runtime, &clients);
    assert_eq!(identity.requests(), 1, "a warm cache must not log in again");
    assert_eq!(
        api.requests(),
        api.authorized(),
        "every request carries a token"
    );
}

/// Interleaved rounds for the ratios printed in the summary: many short
/// rounds (a small batch of requests per variant, every order in turn), so that
/// a noisy neighbour slows all variants alike.
fn summary(runtime: &tokio::runtime::Runtime, clients: &Clients) {
    support::note_smoke_run("middleware_overhead");
    let (rounds, batch) = if support::full_run() {
        (2_400, 20)
    } else {
        (4, 5)
    };
    let mut total = [Duration::ZERO; 4];
    // Per-round throughput ratios of (a) to (b), (c), (d).
    let mut ratios: [Vec<f64>; 3] = Default::default();
    runtime.block_on(async {
        for round in 0..rounds {
            let mut took = [Duration::ZERO; 4];
            // Every order of the variants in turn, so that none always
            // runs first, last, or right after another.
            for v in permutation(round % 24) {
                let start = Instant::now();
                for _ in 0..batch {
                    clients.send(VARIANTS[v]).await;
                }
                took[v] = start.elapsed();
                total[v] += took[v];
            }
            // Throughput ratio a/x = time x / time a.
            for (x, ratio) in ratios.iter_mut().enumerate() {
                ratio.push(took[x + 1].as_secs_f64() / took[0].as_secs_f64());
            }
        }
    });
    let requests = (rounds * batch) as f64;
    let [a, b, c, d] = total.map(|t| requests / t.as_secs_f64());
    let [a_b, a_c, a_d] = ratios.map(|mut r| median(&mut r));
    println!(
        "middleware_overhead summary: {rounds} interleaved rounds x {batch} requests per variant; requests/s: \
         (a) AuthMiddleware {a:.0}, (b) bare reqwest_middleware + static header {b:.0}, \
         (c) plain reqwest + static header {c:.0}, (d) pass-through middleware + static header {d:.0}"
    );
    println!(
        "middleware_overhead summary: mean time per request (a) {:.2} us, (b) {:.2} us, (c) {:.2} us, (d) {:.2} us; \
         (a)-(b) = {:.0} ns, (a)-(d) = {:.0} ns",
        1e6 / a,
        1e6 / b,
        1e6 / c,
        1e6 / d,
        1e9 / a - 1e9 / b,
        1e9 / a - 1e9 / d
    );
    println!(
        "middleware_overhead summary: throughput ratio a/b = {a_b:.4} (median of rounds; overall {:.4}; \
         target >= 0.99: {}), a/c = {a_c:.4} (overall {:.4}), a/d = {a_d:.4} (overall {:.4})",
        a / b,
        verdict(a_b >= 0.99),
        a / c,
        a / d
    );
}

/// The `k`-th (0..24) permutation of the four variant indexes.
fn permutation(mut k: usize) -> [usize; 4] {
    let mut left = vec![0, 1, 2, 3];
    let mut order = [0; 4];
    for (i, slot) in order.iter_mut().enumerate() {
        let radix = (1..4 - i).product::<usize>();
        *slot = left.remove(k / radix);
        k %= radix;
    }
    order
}

criterion_group!(benches, bench_middleware_overhead);
criterion_main!(benches);
