//! Shared pieces of the benchmarks: a minimal in-process HTTP/1.1 server on
//! loopback (an API stand-in and an identity service stand-in), runtimes, and
//! small statistics helpers.
//!
//! The server runs on its own OS thread with its own current-thread tokio
//! runtime, so its work (and the identity service's fixed delay) does not
//! depend on how busy the benchmark's runtime is; or, for instruction counts
//! (`benches/instructions.rs`), as a task on the benchmark's own
//! current-thread runtime, so that everything runs on one thread in an order
//! that does not depend on the machine. It is deliberately tiny:
//! it reads a request head up to `\r\n\r\n`, reads a `Content-Length` body
//! if there is one (chunked bodies are not supported; reqwest sends none in
//! these benchmarks), and writes a fixed response on the same keep-alive
//! connection. That keeps server-side noise far below what a full mock
//! server (wiremock) adds.
//!
//! [`clients`] holds the clients the request benchmarks compare.

// Each bench uses a different subset of this module.
#![allow(dead_code)]

pub mod clients;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use myinvois_auth::{Credentials, TokenCache, TokenCacheBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the loopback server answers.
enum Kind {
    /// `200 OK` with a small fixed JSON body, at once.
    Api { response: Vec<u8> },
    /// A MyInvois identity service: `{"access_token":"tok-N",...}` after
    /// `delay(N)`, N counting the logins from 1.
    Identity {
        delay: Box<dyn Fn(u64) -> Duration + Send + Sync>,
        expires_in: u64,
    },
}

impl Kind {
    /// `200 OK` with a small JSON body (a list of document types).
    fn api() -> Kind {
        let body = br#"{"result":[{"id":1,"invoiceTypeCode":1,"description":"Invoice"}]}"#;
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        Kind::Api { response }
    }
}

/// Where a server runs.
enum Place {
    /// A thread of its own, with its own current-thread runtime.
    OwnThread,
    /// Tasks on the runtime of the caller of `Server::start`.
    CurrentRuntime,
}

struct State {
    kind: Kind,
    /// Requests received (counted when the whole request has arrived).
    requests: AtomicU64,
    /// Requests received and not yet answered.
    in_flight: AtomicU64,
    /// Requests that carried `authorization: Bearer …`.
    authorized: AtomicU64,
    /// When the oldest request now in flight arrived (identity service only).
    in_flight_since: Mutex<Option<Instant>>,
}

/// A loopback HTTP/1.1 server running until the process ends (on its own
/// thread, or as tasks on the runtime that started it).
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Server {
    /// An API stand-in answering every request with `200 OK` and a small JSON body.
    pub fn api() -> Server {
        Server::start(Kind::api(), Place::OwnThread)
    }

    /// Like [`api`](Self::api), served by a task on the current tokio runtime
    /// (call it inside one) instead of a thread of its own.
    pub fn api_on_current_runtime() -> Server {
        Server::start(Kind::api(), Place::CurrentRuntime)
    }

    /// An identity service stand-in: answers each request after `delay` with a
    /// fresh Bearer token (`tok-1`, `tok-2`, …) valid for `expires_in` seconds.
    pub fn identity(delay: Duration, expires_in: u64) -> Server {
        Server::identity_with(move |_| delay, expires_in)
    }

    /// Like [`identity`](Self::identity) with no delay, served by a task on
    /// the current tokio runtime (call it inside one).
    pub fn identity_on_current_runtime(expires_in: u64) -> Server {
        Server::start(
            Kind::Identity {
                delay: Box::new(|_| Duration::ZERO),
                expires_in,
            },
            Place::CurrentRuntime,
        )
    }

    /// Like [`identity`](Self::identity), with the delay of the N-th login
    /// (from 1) given by `delay`.
    pub fn identity_with(
        delay: impl Fn(u64) -> Duration + Send + Sync + 'static,
        expires_in: u64,
    ) -> Server {
        Server::start(
            Kind::Identity {
                delay: Box::new(delay),
                expires_in,
            },
            Place::OwnThread,
        )
    }

    fn start(kind: Kind, place: Place) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            kind,
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            authorized: AtomicU64::new(0),
            in_flight_since: Mutex::new(None),
        });
        let accept = accept(listener, Arc::clone(&state));
        match place {
            Place::CurrentRuntime => {
                tokio::spawn(accept);
            }
            Place::OwnThread => {
                std::thread::Builder::new()
                    .name(format!("bench-server-{}", addr.port()))
                    .spawn(move || {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("server runtime")
                            .block_on(accept)
                    })
                    .expect("spawn server thread");
            }
        }
        Server { addr, state }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests received and not answered yet (for the identity service: a
    /// login in flight).
    pub fn in_flight(&self) -> u64 {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// For the identity service: when the login it is holding arrived (the
    /// oldest, if several are in flight); `None` when it holds none.
    pub fn in_flight_since(&self) -> Option<Instant> {
        *self.state.in_flight_since.lock().unwrap()
    }

    /// Requests that carried an `authorization: Bearer` header.
    pub fn authorized(&self) -> u64 {
        self.state.authorized.load(Ordering::SeqCst)
    }
}

/// Accepts connections and serves each in a task, until the process ends.
async fn accept(listener: std::net::TcpListener, state: Arc<State>) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            // A client closing its connection is not an error here.
            let _ = serve(stream, state).await;
        });
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        // Answer every complete request already buffered (pipelining is fine).
        while let Some((len, authorized)) = complete_request(&buf) {
            buf.drain(..len);
            let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
            if authorized {
                state.authorized.fetch_add(1, Ordering::SeqCst);
            }
            match &state.kind {
                Kind::Api { response } => stream.write_all(response).await?,
                Kind::Identity { delay, expires_in } => {
                    {
                        let mut since = state.in_flight_since.lock().unwrap();
                        if state.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
                            *since = Some(Instant::now());
                        }
                    }
                    let delay = delay(n);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let body = format!(
                        r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{expires_in},"scope":"InvoicingAPI"}}"#
                    );
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let written = stream.write_all(response.as_bytes()).await;
                    {
                        let mut since = state.in_flight_since.lock().unwrap();
                        if state.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                            *since = None;
                        }
                    }
                    written?;
                }
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// If `buf` starts with a complete request: its length (head and body) and
/// whether it carries `authorization: Bearer`.
fn complete_request(buf: &[u8]) -> Option<(usize, bool)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = &buf[..head_end];
    let mut content_length = 0usize;
    let mut authorized = false;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("a numeric content-length");
        } else if name.eq_ignore_ascii_case(b"authorization") {
            authorized = value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ");
        }
    }
    let total = head_end + content_length;
    (buf.len() >= total).then_some((total, authorized))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A cache builder logging in at `identity` with bench credentials and no
/// login budget: the benches measure the cache, and cold_burst logs in far
/// more often than MyInvois' 12 logins a minute.
pub fn cache_builder(identity: &Server) -> TokenCacheBuilder {
    TokenCache::builder(Credentials::new("bench-client", "bench-secret"))
        .identity_url(identity.url())
        .without_login_rate_limit()
}

/// A current-thread runtime (timers and I/O enabled).
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

/// A multi-thread runtime with `workers` worker threads (timers and I/O enabled).
pub fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("multi-thread runtime")
}

/// True for a real measurement run (`cargo bench`); false when the bench
/// binary runs as a test (`cargo test --benches`, `cargo bench -- --test`),
/// where the hand-made measurements are shortened to a smoke test.
pub fn full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

/// In test mode, prints a line saying the summary that follows is a smoke
/// run, not a measurement.
pub fn note_smoke_run(bench: &str) {
    if !full_run() {
        println!("{bench} summary: smoke run (test mode, tiny sizes): the numbers below are not measurements");
    }
}

/// The median of `values` (which it sorts). Panics when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The `p`-th percentile (0..=100, nearest rank) of `sorted`. Panics when empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Whether a target was met, for the summary lines.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "NOT MET"
    }
}

/// Whether a sanity check of the set-up passed, for the summary lines.
pub fn check(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}
