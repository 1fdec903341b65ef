//! The store's own thread, which owns the connection to the file: no
//! SQLite call ever runs on an async runtime's worker thread. Calls queue
//! to it (a bounded queue) and wait for the answer for at most
//! [`CALL_TIMEOUT`]; a call whose caller gave up meanwhile is skipped. The
//! thread opens the file as soon as it starts (a process that starts on a
//! file full of tokens finds them without waiting), opens it again after
//! a failure that lasts once the skip period is over, and purges old rows
//! after a write, once a minute at most (rows only pile up through writes,
//! so a process that only reads tokens never writes to purge).

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::classify::{self, Lasting};
use super::clock::now_ms;
use super::health::Health;
use super::{open, purge};
use crate::store::{StoreError, StoreErrorKind};

/// The longest a caller waits for its call (the busy timeout, and room
/// for the call itself).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Calls that may wait for the thread at once.
const QUEUE: usize = 256;
/// How often old rows are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// Whether a call writes (and may then purge old rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

/// The handle to the store's thread.
pub(super) struct Worker {
    jobs: SyncSender<Job>,
    health: Arc<Health>,
}

/// What the store's thread holds.
struct Session {
    path: PathBuf,
    migrations: &'static [&'static str],
    conn: Option<Connection>,
    health: Arc<Health>,
    next_purge: Instant,
}

impl Worker {
    /// Starts the thread for the file at `path`.
    pub(super) fn start(path: PathBuf, migrations: &'static [&'static str]) -> Self {
        let (jobs, queue) = sync_channel::<Job>(QUEUE);
        let health = Arc::new(Health::new());
        let mut session = Session {
            path,
            migrations,
            conn: None,
            health: Arc::clone(&health),
            next_purge: Instant::now(),
        };
        let started = std::thread::Builder::new()
            .name("myinvois-auth-sqlite".into())
            .spawn(move || {
                let _ = session.connection();
                while let Ok(job) = queue.recv() {
                    job(&mut session);
                }
            });
        if let Err(error) = started {
            // The queue's receiver is gone: every call fails, typed.
            let error = StoreError::new(
                StoreErrorKind::Other,
                format!("cannot start the token store's thread ({:?})", error.kind()),
            );
            health.failed(&error, Lasting::Yes);
        }
        Worker { jobs, health }
    }

    /// Whether the file is worth asking now (not skipped after failures).
    pub(super) fn is_available(&self) -> bool {
        !self.health.is_skipping()
    }

    /// Runs `f` on the connection, on the store's thread, with the time
    /// by the host's clock; a failure is reported once per episode.
    pub(super) async fn call<T, F>(&self, access: Access, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call_unreported(access, f)
            .await
            .map_err(|e| self.health.report(e))
    }

    /// Like [`call`](Self::call), without marking the failure as told (a
    /// readiness check must not take the cache's one warning).
    pub(super) async fn call_unreported<T, F>(&self, access: Access, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    {
        if let Some(skipped) = self.health.skipped() {
            return Err(skipped);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let deadline = Instant::now() + CALL_TIMEOUT;
        let job: Job = Box::new(move |session: &mut Session| {
            if Instant::now() < deadline {
                let answer = session.run(f);
                let wrote = access == Access::Write && answer.is_ok();
                // The caller has its answer before any purge: a purge may
                // wait for the file as long as the busy timeout.
                let _ = reply.send(answer);
                if wrote {
                    session.purge_if_due();
                }
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let error = StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("{QUEUE} calls already wait for the token store's file"),
                );
                self.health.failed(&error, Lasting::Busy);
                return Err(error);
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(self
                    .health
                    .skipped()
                    .unwrap_or_else(|| StoreError::other("the token store's thread has ended")))
            }
        }
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::other(
                "the token store's thread dropped the call",
            )),
            Err(_) => {
                let error = StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("the token store's file did not answer within {CALL_TIMEOUT:?}"),
                );
                self.health.failed(&error, Lasting::Busy);
                Err(error)
            }
        }
    }
}

impl Session {
    /// The open connection, opening the file if needed.
    fn connection(&mut self) -> Result<&mut Connection, StoreError> {
        if self.conn.is_none() {
            match open::open(&self.path, self.migrations) {
                Ok(conn) => {
                    tracing::debug!(path = %self.path.display(), "token store file opened");
                    self.conn = Some(conn);
                }
                Err((error, lasting)) => return Err(self.failed(error, lasting)),
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::other("no connection"))
    }

    /// Runs one call.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, i64) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        if let Some(skipped) = self.health.skipped() {
            return Err(skipped);
        }
        let conn = self.connection()?;
        match f(conn, now_ms()) {
            Ok(value) => {
                self.health.succeeded();
                Ok(value)
            }
            Err(error) => {
                let (error, lasting) = classify::sqlite(&error);
                Err(self.failed(error, lasting))
            }
        }
    }

    /// Records a failure; one that lasts closes the file.
    fn failed(&mut self, error: StoreError, lasting: Lasting) -> StoreError {
        if lasting == Lasting::Yes {
            self.conn = None;
        }
        let error = error.with_context(self.path.display());
        self.health.failed(&error, lasting);
        error
    }

    /// Purges old rows if a purge is due. It never waits for the file: the
    /// calls queued behind it would wait too. A file another process is
    /// writing is purged at the next due time instead.
    fn purge_if_due(&mut self) {
        let now = Instant::now();
        if now < self.next_purge {
            return;
        }
        self.next_purge = now + PURGE_EVERY;
        if let Some(conn) = self.conn.as_mut() {
            let purged = conn
                .busy_timeout(Duration::ZERO)
                .and_then(|()| purge::purge(conn, now_ms()));
            match purged {
                Ok(gone) => tracing::debug!(gone, "token store purged"),
                Err(error) => tracing::debug!(%error, "token store purge failed"),
            }
            if let Err(error) = conn.busy_timeout(open::BUSY_TIMEOUT) {
                // Calls would then fail at once on a busy file: start over.
                tracing::debug!(%error, "token store: cannot set the busy timeout again");
                self.conn = None;
            }
        }
    }
}
