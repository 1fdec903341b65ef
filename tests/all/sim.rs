//! A simulated MyInvois identity service for the login-budget simulations.
//!
//! A real HTTP/1 server (hyper) on loopback, running in the test's own tokio
//! runtime so that it shares the paused clock: it enforces the MyInvois login
//! limit per client ID (answering 429 with `Retry-After`), and it records every
//! token it issues so the simulated API can tell whether a call carried an
//! expired one.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;

pub const LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct SimState {
    /// Accepted logins: receipt time and taxpayer.
    pub logins: Vec<(Instant, Option<String>)>,
    /// Answers with 429.
    pub refused: usize,
    window: VecDeque<Instant>,
    issued: HashMap<String, (Instant, Option<String>)>,
    /// Force a 429 with this Retry-After on the next login.
    pub next_retry_after: Option<u64>,
    /// Per taxpayer, when its latest token expires.
    latest: HashMap<Option<String>, Instant>,
    /// Lifetime thrown away: what was left of a taxpayer's token when it
    /// logged in again (refreshed ahead of expiry).
    pub wasted: Duration,
}

#[derive(Clone)]
pub struct SimIdentity {
    pub uri: String,
    pub state: Arc<Mutex<SimState>>,
}

/// How the simulated service issues tokens.
#[derive(Clone, Copy)]
pub struct Issuing {
    pub lifetime: Duration,
    /// Count expiry from the issue time truncated to the second (as many
    /// identity servers do), seconds starting at this instant.
    pub truncate_from: Option<Instant>,
    /// How long a login takes to answer (on the test's clock).
    pub delay: Duration,
}

impl SimIdentity {
    /// Starts the service, allowing `limit` logins per `period` (by receipt
    /// time), issuing one-hour tokens.
    pub async fn start(limit: usize, period: Duration) -> Self {
        let issuing = Issuing {
            lifetime: LIFETIME,
            truncate_from: None,
            delay: Duration::ZERO,
        };
        Self::start_issuing(limit, period, issuing).await
    }

    /// Like [`start`](Self::start), issuing tokens as `issuing` says.
    pub async fn start_issuing(limit: usize, period: Duration, issuing: Issuing) -> Self {
        // A port no identity service of this process had (see `support`);
        // one that had is held, so that the OS gives another.
        let mut held = Vec::new();
        let listener = loop {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            if crate::support::first_use_of_port(listener.local_addr().unwrap().port()) {
                break listener;
            }
            held.push(listener);
        };
        drop(held);
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(SimState::default()));
        let served = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move {
                            Ok::<_, Infallible>(
                                answer(&state, request, limit, period, issuing).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        SimIdentity { uri, state }
    }

    /// Whether the API would accept `token` for `taxpayer` now.
    pub fn accepts(&self, token: &str, taxpayer: Option<&str>) -> bool {
        let state = self.state.lock().unwrap();
        match state.issued.get(token) {
            Some((expires, issued_for)) => {
                Instant::now() < *expires && issued_for.as_deref() == taxpayer
            }
            None => false,
        }
    }

    pub fn login_times(&self) -> Vec<Instant> {
        self.state
            .lock()
            .unwrap()
            .logins
            .iter()
            .map(|l| l.0)
            .collect()
    }

    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// Token lifetime thrown away by logging in again before expiry, per login.
    pub fn wasted_per_login(&self) -> Duration {
        let state = self.state.lock().unwrap();
        state.wasted / u32::try_from(state.logins.len().max(1)).unwrap_or(u32::MAX)
    }
}

async fn answer(
    state: &Mutex<SimState>,
    request: Request<Incoming>,
    limit: usize,
    period: Duration,
    issuing: Issuing,
) -> Response<Full<Bytes>> {
    let taxpayer = request
        .headers()
        .get("onbehalfof")
        .map(|v| v.to_str().unwrap().to_owned());
    let _ = request.into_body().collect().await;
    if !issuing.delay.is_zero() {
        tokio::time::sleep(issuing.delay).await;
    }
    let now = Instant::now();
    let mut state = state.lock().unwrap();
    while state
        .window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= period)
    {
        state.window.pop_front();
    }
    let forced = state.next_retry_after.take();
    if forced.is_some() || state.window.len() >= limit {
        state.refused += 1;
        let retry_after = forced.unwrap_or_else(|| {
            let oldest = *state.window.front().unwrap();
            (oldest + period - now).as_secs_f64().ceil() as u64
        });
        return Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", retry_after.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    state.window.push_back(now);
    state.logins.push((now, taxpayer.clone()));
    let issued_at = match issuing.truncate_from {
        Some(epoch) => epoch + Duration::from_secs(now.duration_since(epoch).as_secs()),
        None => now,
    };
    let expires = issued_at + issuing.lifetime;
    if let Some(previous) = state.latest.insert(taxpayer.clone(), expires) {
        state.wasted += previous.saturating_duration_since(now);
    }
    let n = state.logins.len();
    let token = format!("SIM-{n}");
    state.issued.insert(token.clone(), (expires, taxpayer));
    let body = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": issuing.lifetime.as_secs(),
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The largest number of `times` inside any window `[t, t + period)`.
pub fn max_in_any_window(times: &[Instant], period: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= period {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}
