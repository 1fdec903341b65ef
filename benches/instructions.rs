//! Instruction counts of the hot path, for callgrind: `TokenCache::token()`
//! on a warm entry, and one `GET` sent plainly with a static header, through
//! `reqwest_middleware` with no middleware, through a pass-through
//! middleware, and through `AuthMiddleware` with a cached token.
//!
//! Everything runs on one thread: a current-thread tokio runtime runs the
//! client and the in-process API and identity stand-ins
//! (`support::Server::*_on_current_runtime`), so the work per call does not
//! depend on the machine's scheduling. `scripts/instructions` runs this
//! binary under `valgrind --tool=callgrind`, counting only inside
//! [`measured`], with two iteration counts, and reports the difference per
//! call (which cancels whatever does not repeat per call).
//!
//! ```text
//! instructions SCENARIO N    run SCENARIO's measured loop N times
//! instructions               smoke run: every scenario a few times
//! ```
//!
//! SCENARIO is `token`, `plain`, `bare`, `pass-through` or `auth`. Each run
//! first makes the one login, sends a request with every variant (checking
//! that each carries the token), and warms the scenario up with
//! [`WARM_UP`] calls, outside the measured loop. Afterwards it checks that
//! there was one login and that every request carried a token, and prints
//! the size of the future each middleware boxes per request.
//!
//! What would make the count depend on the machine is kept out of the loop:
//! the cache's once-a-second sweep for refreshes (see [`Bench::sweep_now`])
//! and a carry in the test clock's arithmetic (see
//! [`runtime_at_whole_second`]). The script also switches off glibc's
//! fastbins, whose consolidation depends on the heap's history.
//!
//! `cargo bench` and `cargo test --benches` run the smoke run (the figures
//! need callgrind: see BENCHMARKS.md).

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Extensions;
use myinvois_auth::{AuthMiddleware, TokenCache};
use reqwest_middleware::{Middleware, Next};
use support::clients::{Clients, PassThrough, Variant};
use support::Server;

/// Calls made before the measured loop: the first calls fill the
/// connection pool, allocator caches and lazily built state.
const WARM_UP: u64 = 200;

/// What one call of the measured loop does.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// `TokenCache::token()` on a warm entry.
    Token,
    /// One `GET` (body read) sent with the given client variant.
    Request(Variant),
}

impl Scenario {
    const ALL: [(&'static str, Scenario); 5] = [
        ("token", Scenario::Token),
        ("plain", Scenario::Request(Variant::Plain)),
        ("bare", Scenario::Request(Variant::Bare)),
        ("pass-through", Scenario::Request(Variant::PassThrough)),
        ("auth", Scenario::Request(Variant::Auth)),
    ];

    fn named(name: &str) -> Option<Scenario> {
        Scenario::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, scenario)| scenario)
    }
}

struct Bench {
    api: Server,
    identity: Server,
    cache: TokenCache,
    clients: Clients,
}

impl Bench {
    /// The stand-ins on the current runtime, a warm cache, and the clients.
    async fn new() -> Bench {
        let identity = Server::identity_on_current_runtime(3600);
        let api = Server::api_on_current_runtime();
        let cache = support::cache_builder(&identity).build().expect("cache");
        let clients = Clients::new(&api, cache.clone()).await;
        Bench {
            api,
            identity,
            cache,
            clients,
        }
    }

    async fn run(&self, scenario: Scenario, calls: u64) {
        match scenario {
            Scenario::Token => {
                for _ in 0..calls {
                    black_box(self.cache.token().await.expect("warm token"));
                }
            }
            Scenario::Request(variant) => {
                for _ in 0..calls {
                    self.clients.send(variant).await;
                }
            }
        }
    }

    /// Makes the cache run its sweep for refreshes now, so that none runs in
    /// the next second; returns a time before it.
    ///
    /// The sweep (at most once a second, started by a call of `token()`)
    /// allocates; one inside the measured loop changes what malloc does
    /// afterwards and moves the count by hundreds of instructions a request.
    /// At callgrind's speed (about 750 requests a second here), a loop of a
    /// few hundred calls started right after a sweep has none; `main` runs
    /// one before the warm-up and one before the measured loop, and fails
    /// when either ends a second or more after its sweep.
    fn sweep_now(&self, runtime: &tokio::runtime::Runtime) -> Instant {
        std::thread::sleep(Duration::from_millis(1100));
        let before = Instant::now();
        runtime.block_on(async {
            self.cache.token().await.expect("warm token");
            // Let the sweep's task run.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        });
        before
    }

    /// The size of the future each middleware's `handle` boxes for a
    /// request: it is allocated and moved on every request.
    async fn future_sizes(&self) -> [(&'static str, usize); 2] {
        let auth = AuthMiddleware::new(self.cache.clone())
            .api_url(self.api.url())
            .expect("api url");
        [
            ("AuthMiddleware", self.future_size(auth).await),
            ("pass-through", self.future_size(PassThrough).await),
        ]
    }

    /// Sends one request through `middleware`, noting the size of its future.
    async fn future_size(&self, middleware: impl Middleware) -> usize {
        let size = Arc::new(AtomicUsize::new(0));
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(Measure {
                inner: middleware,
                size: Arc::clone(&size),
            })
            .build();
        client.get(self.api.url()).send().await.expect("request");
        size.load(Ordering::Relaxed)
    }

    fn check(&self) {
        assert_eq!(self.identity.requests(), 1, "a warm cache logs in once");
        assert_eq!(
            self.api.requests(),
            self.api.authorized(),
            "every request carries a token"
        );
    }
}

/// Exits with an error unless less than a second has passed since `swept`
/// (from [`Bench::sweep_now`]), so that no other sweep has run since.
fn no_sweep_since(swept: Instant, what: &str) {
    let took = swept.elapsed();
    if took >= Duration::from_secs(1) {
        eprintln!(
            "instructions: {what} ended {took:?} after the cache's sweep, so another may have run inside it \
             and moved the count: run fewer calls (scripts/instructions --calls N1,N2) or on a quieter machine"
        );
        std::process::exit(3);
    }
}

/// A middleware that runs `inner`, noting the size of the future its
/// `handle` returns.
struct Measure<M> {
    inner: M,
    size: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl<M: Middleware> Middleware for Measure<M> {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let future = self.inner.handle(request, extensions, next);
        self.size
            .store(std::mem::size_of_val(&*future), Ordering::Relaxed);
        future.await
    }
}

/// The loop callgrind counts (`--toggle-collect`): never inlined, so that it
/// has a symbol of its own.
#[inline(never)]
fn measured(runtime: &tokio::runtime::Runtime, bench: &Bench, scenario: Scenario, calls: u64) {
    runtime.block_on(bench.run(scenario, calls));
}

/// A current-thread runtime, built in the first 10 ms of a second of the
/// monotonic clock.
///
/// With tokio's `test-util` feature (which the dev-dependencies turn on for
/// every bench), the runtime's time driver reads its clock as `start +
/// (now - start)` at every park, a few times per request; whether that sum
/// carries a second costs a few instructions and happens with probability
/// `start`'s nanoseconds / 10^9, a per-run constant. Starting just after a
/// whole second makes it (almost) never carry, in every run, instead of
/// moving the count per request by up to about 30 instructions from run to
/// run. `std::time::Instant` reads the same clock (`CLOCK_MONOTONIC` on
/// Linux); its nanoseconds are read from its `Debug` text, and if that text
/// ever changes the runtime is built at once (and the counts vary more).
fn runtime_at_whole_second() -> tokio::runtime::Runtime {
    const WINDOW: u64 = 10_000_000;
    fn nanos() -> Option<u64> {
        let text = format!("{:?}", std::time::Instant::now());
        let (_, rest) = text.split_once("tv_nsec: ")?;
        rest.trim_end_matches([' ', '}']).parse().ok()
    }
    if nanos().is_none() {
        eprintln!(
            "instructions: cannot read the clock's nanoseconds from {:?}; the counts may vary by a few instructions per request",
            std::time::Instant::now()
        );
        return support::current_thread_runtime();
    }
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        // Wait for the next second to begin, then build at once.
        while nanos().is_some_and(|n| n < WINDOW / 2) {
            std::hint::spin_loop();
        }
        while nanos().is_some_and(|n| n >= WINDOW / 2) {
            std::hint::spin_loop();
        }
        let runtime = support::current_thread_runtime();
        if nanos().is_some_and(|n| n < WINDOW) || Instant::now() > give_up {
            return runtime;
        }
    }
}

fn main() {
    // `cargo bench` adds `--bench`; other words (a criterion-style filter) are ignored.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runtime = runtime_at_whole_second();
    let bench = runtime.block_on(Bench::new());
    if let [name, calls] = args.as_slice() {
        let Some(scenario) = Scenario::named(name) else {
            eprintln!(
                "instructions: unknown scenario {name:?}: token, plain, bare, pass-through or auth"
            );
            std::process::exit(2);
        };
        let Ok(calls) = calls.parse::<u64>() else {
            eprintln!("instructions: the number of calls must be a whole number, not {calls:?}");
            std::process::exit(2);
        };
        // A sweep at a moment that depends on the machine's speed, in the
        // warm-up or in the loop, would leave the heap in another state.
        let swept = bench.sweep_now(&runtime);
        runtime.block_on(bench.run(scenario, WARM_UP));
        no_sweep_since(swept, "the warm-up");
        let swept = bench.sweep_now(&runtime);
        measured(&runtime, &bench, scenario, calls);
        no_sweep_since(swept, "the measured loop");
        bench.check();
        println!("instructions: {name} x {calls} done");
        for (middleware, size) in runtime.block_on(bench.future_sizes()) {
            println!("instructions: {middleware}'s handle future: {size} bytes");
        }
    } else {
        for (name, scenario) in Scenario::ALL {
            runtime.block_on(bench.run(scenario, 3));
            measured(&runtime, &bench, scenario, 3);
            println!("instructions: {name} ok");
        }
        bench.check();
        println!(
            "instructions: smoke run done; the instruction counts need callgrind: scripts/instructions"
        );
    }
}
