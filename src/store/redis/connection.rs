//! The connection to Redis: where it comes from (a URL, a client the
//! operator built, a Cluster, Sentinel), one connection attempt at a time,
//! and when to remake it.
//!
//! redis-rs' `ConnectionManager` reconnects on I/O errors only, always to the
//! same address; a store that must follow a failover remakes the connection
//! itself: on `READONLY` (the node became a replica), on `MOVED`/`ASK`
//! outside Cluster mode, on repeated timeouts (a hung node) and on dropped
//! connections. Through Sentinel, remaking asks it for the current primary;
//! through a DNS name repointed at failover, a new connection resolves anew.
//!
//! After repeated failures the store skips Redis for a few seconds (a
//! circuit breaker) instead of paying a timeout on every call, then probes
//! it again with the next call.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::sentinel::SentinelClient;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::classify::{classify, Connection as After};
use crate::store::{StoreError, StoreErrorKind};

/// Each Redis call gets this long.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// Making a connection gets this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Failures in a row (timeouts, unreachable) after which Redis is skipped.
const FAILURES_TO_OPEN: u32 = 3;
/// How long Redis is skipped after [`FAILURES_TO_OPEN`] failures in a row.
const OPEN_FOR: Duration = Duration::from_secs(5);
/// Timeouts in a row after which the connection is remade.
const TIMEOUTS_TO_REMAKE: u32 = 2;
/// After a remake (`READONLY`, `MOVED`), the next one waits this long: a
/// node that still answers so right after a new connection was made is
/// not cured by another at once. At [`FAILURES_TO_OPEN`] remakes, each
/// within [`REMAKES_FORGOTTEN`] of the one before, Redis is skipped for
/// [`OPEN_FOR`].
const REMAKE_PAUSE: Duration = Duration::from_secs(1);
/// Remakes further apart than this do not add up.
const REMAKES_FORGOTTEN: Duration = Duration::from_secs(30);

/// Where connections come from.
pub(super) enum Source {
    /// One server (a URL, or a client the operator built: TLS, ACL user).
    Client(redis::Client),
    /// A Redis Cluster.
    Cluster(ClusterClient),
    /// A primary found through Sentinel, asked again on every reconnection.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Source {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Source::Cluster(_))
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let config = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(CALL_TIMEOUT))
                .set_number_of_retries(1)
        };
        let failed = |e: redis::RedisError| classify(&e, self.is_cluster()).0;
        match self {
            Source::Client(client) => {
                if matches!(
                    client.get_connection_info().addr(),
                    redis::ConnectionAddr::TcpTls { .. }
                ) {
                    ensure_crypto_provider()?;
                }
                ConnectionManager::new_with_config(client.clone(), config())
                    .await
                    .map(Conn::Manager)
                    .map_err(failed)
            }
            Source::Cluster(client) => {
                if cluster_may_use_tls(client) {
                    ensure_crypto_provider()?;
                }
                client
                    .get_async_connection()
                    .await
                    .map(|c| Conn::Cluster(Box::new(c)))
                    .map_err(failed)
            }
            Source::Sentinel(sentinel) => {
                // redis-rs does not say whether it reaches Sentinel over
                // TLS: a provider is needed in case it does.
                ensure_crypto_provider()?;
                let primary = sentinel
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(failed)?;
                ConnectionManager::new_with_config(with_keepalive(primary), config())
                    .await
                    .map(Conn::Manager)
                    .map_err(failed)
            }
        }
    }
}

/// The TCP settings of the connections the store makes from a URL or from
/// Sentinel's answer: no Nagle delay, and keepalive, so that a connection a
/// firewall or a dead host dropped silently is noticed.
pub(super) fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true).set_keepalive(
        TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10)),
    )
}

/// The primary's client Sentinel named, with [`tcp_settings`] unless the
/// operator's node settings set keepalive.
fn with_keepalive(client: redis::Client) -> redis::Client {
    let info = client.get_connection_info();
    if info.tcp_settings().keepalive().is_some() {
        return client;
    }
    let info = info.clone().set_tcp_settings(tcp_settings());
    redis::Client::open(info).unwrap_or(client)
}

/// Whether a Cluster client may connect over TLS. redis-rs does not say; its
/// `Debug` shows the initial nodes' addresses and the TLS mode. Anything
/// but a plain answer counts as TLS (a provider is then installed, which
/// is never wrong, only unneeded).
fn cluster_may_use_tls(client: &ClusterClient) -> bool {
    let shown = format!("{client:?}");
    let plain =
        shown.contains("initial_nodes") && shown.contains("tls: None") && !shown.contains("TcpTls");
    !plain
}

/// redis-rs builds its rustls configuration from the process-level crypto
/// provider and panics when it cannot pick one (both ring and aws-lc-rs
/// compiled in, none installed). With the `rustls` feature, install
/// aws-lc-rs's (the one this crate's TLS uses) if the application installed
/// none; with `rustls-no-provider`, the application must have installed
/// one: a typed error otherwise, never a panic.
#[cfg(any(feature = "rustls", feature = "rustls-no-provider"))]
fn ensure_crypto_provider() -> Result<(), StoreError> {
    use rustls::crypto::CryptoProvider;
    #[cfg(feature = "rustls")]
    if CryptoProvider::get_default().is_none() {
        // An error means another thread installed one meanwhile: fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    match CryptoProvider::get_default() {
        Some(_) => Ok(()),
        None => Err(StoreError::new(
            StoreErrorKind::Tls,
            "no rustls crypto provider: install one with CryptoProvider::install_default()",
        )),
    }
}

/// The platform's TLS needs no provider.
#[cfg(not(any(feature = "rustls", feature = "rustls-no-provider")))]
fn ensure_crypto_provider() -> Result<(), StoreError> {
    Ok(())
}

/// A connection of any source.
#[derive(Clone)]
pub(super) enum Conn {
    Manager(ConnectionManager),
    Cluster(Box<ClusterConnection>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

type Attempt = watch::Receiver<Option<Result<Conn, StoreError>>>;

/// The shared connection and its health.
pub(super) struct Link {
    source: Arc<Source>,
    state: Arc<Mutex<State>>,
}

struct State {
    phase: Phase,
    /// Numbers connection attempts; the connection an attempt makes keeps
    /// its number.
    generation: u64,
    /// Failures in a row (connects and calls that timed out or found Redis
    /// out of reach); at [`FAILURES_TO_OPEN`], Redis is skipped for a while.
    failures: u32,
    /// Timeouts in a row on the current connection.
    timeouts: u32,
    /// Remakes, each within [`REMAKES_FORGOTTEN`] of the one before.
    remakes: u32,
    /// When the last remake was asked for.
    last_remake: Option<Instant>,
    /// The end of the skip period whose first skipped call was reported:
    /// the period's other skipped calls are marked as repeats.
    skip_reported: Option<Instant>,
}

enum Phase {
    /// No connection; the next call makes one, but not before `retry_at`.
    Down {
        retry_at: Option<Instant>,
    },
    /// A connection attempt is under way.
    Connecting {
        attempt: Attempt,
        generation: u64,
    },
    Up(Conn),
}

impl State {
    fn new() -> Self {
        State {
            phase: Phase::Down { retry_at: None },
            generation: 0,
            failures: 0,
            timeouts: 0,
            remakes: 0,
            last_remake: None,
            skip_reported: None,
        }
    }

    /// Whether the attempt numbered `generation` is the one under way.
    fn connecting(&self, generation: u64) -> bool {
        matches!(self.phase, Phase::Connecting { generation: g, .. } if g == generation)
    }

    /// Whether the connection numbered `generation` is the one in use.
    fn up(&self, generation: u64) -> bool {
        matches!(self.phase, Phase::Up(_)) && self.generation == generation
    }

    /// A call on the connection numbered `generation` answered.
    fn succeeded(&mut self, generation: u64) {
        if self.up(generation) {
            self.failures = 0;
            self.timeouts = 0;
        }
    }

    /// A call on the connection numbered `generation` failed, meaning
    /// `after` for the connection. An older connection's failure (a late
    /// answer on one already remade) changes nothing: the one in use, or
    /// being made, is not thrown away for it.
    fn failed(&mut self, generation: u64, after: After, timeout: bool, now: Instant) {
        if !self.up(generation) {
            return;
        }
        match after {
            After::Keep => {}
            After::Remake => {
                if self
                    .last_remake
                    .is_some_and(|at| now.saturating_duration_since(at) > REMAKES_FORGOTTEN)
                {
                    self.remakes = 0;
                }
                self.remakes += 1;
                self.last_remake = Some(now);
                self.timeouts = 0;
                let retry_at = match self.remakes {
                    // A failover: follow it at once.
                    1 => None,
                    n if n < FAILURES_TO_OPEN => Some(now + REMAKE_PAUSE),
                    _ => {
                        tracing::warn!(
                            "Redis keeps answering as a replica or as a Cluster node \
                             (READONLY, MOVED) after reconnecting: skipping it for {OPEN_FOR:?}"
                        );
                        Some(now + OPEN_FOR)
                    }
                };
                if retry_at.is_none() {
                    tracing::warn!("Redis node changed role: reconnecting");
                }
                self.phase = Phase::Down { retry_at };
            }
            After::Failing => {
                self.failures += 1;
                self.timeouts = if timeout { self.timeouts + 1 } else { 0 };
                let remake = !timeout || self.timeouts >= TIMEOUTS_TO_REMAKE;
                if self.failures >= FAILURES_TO_OPEN {
                    self.phase = Phase::Down {
                        retry_at: Some(now + OPEN_FOR),
                    };
                    self.timeouts = 0;
                } else if remake {
                    self.phase = Phase::Down { retry_at: None };
                    self.timeouts = 0;
                }
            }
        }
    }
}

impl Link {
    pub(super) fn new(source: Source) -> Self {
        Link {
            source: Arc::new(source),
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    /// Whether the store is on a Cluster (`from_cluster`).
    pub(super) fn is_cluster(&self) -> bool {
        self.source.is_cluster()
    }

    /// The nodes a keyspace scan must visit: `None` for the one server;
    /// on a Cluster, each primary's address (from `CLUSTER SLOTS`).
    pub(super) async fn scan_nodes(&self) -> Result<Vec<Option<(String, u16)>>, StoreError> {
        if !self.is_cluster() {
            return Ok(vec![None]);
        }
        let slots: Vec<Value> = self
            .call(
                |mut c| async move { redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await },
            )
            .await?;
        let mut nodes = Vec::new();
        for range in slots {
            // [start, end, [host, port, id, ..], replicas ..]
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(primary)) = parts.get(2) else {
                continue;
            };
            let host = match primary.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = primary.get(1) else {
                continue;
            };
            let node = Some((host, u16::try_from(*port).unwrap_or_default()));
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        Ok(nodes)
    }

    /// Whether Redis is worth asking now (not skipped after failures).
    pub(super) fn is_available(&self) -> bool {
        let state = self.state.lock();
        match &state.phase {
            Phase::Down { retry_at: Some(at) } => Instant::now() >= *at,
            _ => true,
        }
    }

    /// Runs one call with the call timeout, and keeps the connection's
    /// health: a failed call may remake the connection or skip Redis.
    pub(super) async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (connection, generation) = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, f(connection)).await {
            Ok(Ok(value)) => {
                self.state.lock().succeeded(generation);
                Ok(value)
            }
            Ok(Err(error)) => {
                let (error, after) = classify(&error, self.source.is_cluster());
                let timeout = error.kind() == StoreErrorKind::Timeout;
                self.state
                    .lock()
                    .failed(generation, after, timeout, Instant::now());
                Err(error)
            }
            Err(_) => {
                self.state
                    .lock()
                    .failed(generation, After::Failing, true, Instant::now());
                Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    "Redis did not answer in time",
                ))
            }
        }
    }

    /// The connection, made on first use. Callers that arrive while it is
    /// being made wait for that attempt (bounded by the connect timeout)
    /// instead of going on without Redis. No lock is held across an `.await`.
    async fn connection(&self) -> Result<(Conn, u64), StoreError> {
        // A new attempt's task is spawned after the lock is released: a
        // runtime shutting down drops it at once, and its guard takes the lock.
        let mut spawn = None;
        let (mut attempt, generation) = {
            let mut state = self.state.lock();
            match &state.phase {
                Phase::Up(connection) => return Ok((connection.clone(), state.generation)),
                Phase::Connecting {
                    attempt,
                    generation,
                } => (attempt.clone(), *generation),
                Phase::Down { retry_at: Some(at) } if Instant::now() < *at => {
                    let at = *at;
                    let skipped = StoreError::new(
                        StoreErrorKind::Unreachable,
                        format!(
                            "Redis skipped for {:.1} s after repeated failures",
                            at.saturating_duration_since(Instant::now()).as_secs_f64()
                        ),
                    );
                    // Counted and logged once per skip period.
                    let first = state.skip_reported.replace(at) != Some(at);
                    return Err(if first { skipped } else { skipped.repeated() });
                }
                Phase::Down { .. } => {
                    let runtime = tokio::runtime::Handle::try_current()
                        .map_err(|_| StoreError::other("not inside a tokio runtime"))?;
                    state.generation += 1;
                    let generation = state.generation;
                    let (tx, attempt) = watch::channel(None);
                    state.phase = Phase::Connecting {
                        attempt: attempt.clone(),
                        generation,
                    };
                    spawn = Some((runtime, tx));
                    (attempt, generation)
                }
            }
        };
        if let Some((runtime, tx)) = spawn {
            self.start_connecting(&runtime, generation, tx);
        }
        let outcome = tokio::time::timeout(
            CONNECT_TIMEOUT + CALL_TIMEOUT,
            attempt.wait_for(Option::is_some),
        )
        .await
        .map_err(|_| StoreError::new(StoreErrorKind::Timeout, "connecting to Redis timed out"))?
        .map_err(|_| {
            // Its task was dropped (its runtime shut down) or panicked: the
            // next call makes another (the task's guard did this already).
            abandon(&self.state, generation);
            StoreError::new(
                StoreErrorKind::Unreachable,
                "the connection attempt was abandoned",
            )
        })?;
        outcome
            .clone()
            .unwrap_or_else(|| Err(StoreError::other("no connection")))
            .map(|connection| (connection, generation))
    }

    /// Starts connection attempt `generation` in its own task (a caller
    /// that gives up does not cancel it), and records its outcome. If the
    /// task never finishes (dropped with its runtime, or a panic), its
    /// guard puts the link back to `Down`, so that the next call makes
    /// another attempt instead of waiting on this one for ever.
    fn start_connecting(
        &self,
        runtime: &tokio::runtime::Handle,
        generation: u64,
        tx: watch::Sender<Option<Result<Conn, StoreError>>>,
    ) {
        let (source, state) = (Arc::clone(&self.source), Arc::clone(&self.state));
        let mut guard = Unfinished {
            state: Arc::clone(&state),
            generation,
            finished: false,
        };
        runtime.spawn(async move {
            let outcome = match tokio::time::timeout(CONNECT_TIMEOUT, source.connect()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    "connecting to Redis timed out",
                )),
            };
            guard.finish();
            let mut state = state.lock();
            // (Unless it was given up meanwhile: then its outcome only
            // serves the callers that waited for it.)
            if state.connecting(generation) {
                state.phase = match &outcome {
                    Ok(connection) => {
                        tracing::info!("connected to Redis");
                        state.timeouts = 0;
                        Phase::Up(connection.clone())
                    }
                    Err(error) => {
                        state.failures += 1;
                        tracing::warn!(%error, "cannot connect to Redis");
                        // Try again soon, then skip Redis for a while.
                        let wait = if state.failures >= FAILURES_TO_OPEN {
                            OPEN_FOR
                        } else {
                            Duration::from_millis(500)
                        };
                        Phase::Down {
                            retry_at: Some(Instant::now() + wait),
                        }
                    }
                };
            }
            drop(state);
            let _ = tx.send(Some(outcome));
        });
    }
}

/// Puts the link back to `Down` if attempt `generation` is still the one
/// under way.
fn abandon(state: &Mutex<State>, generation: u64) {
    let mut state = state.lock();
    if state.connecting(generation) {
        tracing::warn!("a Redis connection attempt was abandoned; the next call makes another");
        state.phase = Phase::Down { retry_at: None };
    }
}

/// Held by a connection attempt's task until it records its outcome:
/// dropped before (the task dropped with its runtime, or a panic), it
/// abandons the attempt.
struct Unfinished {
    state: Arc<Mutex<State>>,
    generation: u64,
    finished: bool,
}

impl Unfinished {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.finished {
            abandon(&self.state, self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_taken_for_tls_unless_it_is_plainly_not() {
        let plain = ClusterClient::new(vec!["redis://127.0.0.1:7000/"]).unwrap();
        assert!(!cluster_may_use_tls(&plain), "{plain:?}");
        let url = ClusterClient::new(vec!["rediss://127.0.0.1:7000/"]).unwrap();
        assert!(cluster_may_use_tls(&url));
        let mode = redis::cluster::ClusterClientBuilder::new(vec!["redis://127.0.0.1:7000/"])
            .tls(redis::TlsMode::Secure)
            .build()
            .unwrap();
        assert!(cluster_may_use_tls(&mode));
    }

    fn connecting(state: &mut State) -> u64 {
        state.generation += 1;
        state.phase = Phase::Connecting {
            attempt: watch::channel(None).1,
            generation: state.generation,
        };
        state.generation
    }

    #[test]
    fn a_late_failure_of_an_older_connection_changes_nothing() {
        let mut state = State::new();
        let old = connecting(&mut state);
        let new = connecting(&mut state);
        assert!(old < new);
        let now = Instant::now();
        // The old connection's READONLY and timeouts, arriving late, do not
        // abandon the attempt under way nor count toward the breaker.
        state.failed(old, After::Remake, false, now);
        for _ in 0..FAILURES_TO_OPEN {
            state.failed(old, After::Failing, true, now);
        }
        assert!(state.connecting(new));
        assert_eq!((state.failures, state.remakes), (0, 0));
    }

    #[test]
    fn a_connection_that_is_down_is_not_failed_twice() {
        let mut state = State::new();
        let generation = connecting(&mut state);
        state.phase = Phase::Down { retry_at: None };
        state.failed(generation, After::Failing, false, Instant::now());
        assert_eq!(state.failures, 0);
        assert!(matches!(state.phase, Phase::Down { retry_at: None }));
    }
}
