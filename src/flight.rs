//! The one login in flight per entry: started by the first caller without a
//! token (or by the sweep, for a refresh), run in its own task so that a
//! caller who gives up does not cancel it, and handed to every waiting
//! caller through a `watch` channel, its error included.
//!
//! The channel also says where the login stands, so that a caller without
//! a token waits at most `max_login_wait` for it to be sent (a queued
//! refresh it joined may be waiting for a slot minutes away), and holds no
//! timer while it is sent: its own timeout bounds it then. (Under tokio's
//! paused test clock, a pending timer would let time jump during its I/O.)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::budget::Urgency;
use crate::clock::after;
use crate::entry::Entry;
use crate::error::Error;
use crate::failure::Class;
use crate::token::AccessToken;

/// Where a login in flight stands.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Waiting for a slot from the login budget (or about to ask).
    Queued,
    /// Waiting for another process of the fleet, which is sending the login.
    AwaitingFleet,
    /// The login request is being sent.
    Sending,
    /// Finished.
    Done(Result<AccessToken, Error>),
}

impl Phase {
    /// Not yet sent by this process: the caller's `max_login_wait` bounds
    /// this, whatever the login waits for (a slot, or another process of
    /// the fleet, which may give up and leave the login queued again). Once
    /// sent, only the login timeout bounds it.
    fn waiting(&self) -> bool {
        matches!(self, Phase::Queued | Phase::AwaitingFleet)
    }
}

/// How the login task tells its callers where it stands.
pub(crate) struct Progress(watch::Sender<Phase>);

impl Progress {
    pub(crate) fn set(&self, phase: Phase) {
        self.0.send_replace(phase);
    }

    /// Whether the login waits for another process of the fleet.
    fn awaiting_fleet(&self) -> bool {
        matches!(*self.0.borrow(), Phase::AwaitingFleet)
    }
}

/// The login in flight for an entry: where it stands, and how urgently it
/// needs a slot from the login budget.
pub(crate) struct Flight {
    pub(crate) rx: watch::Receiver<Phase>,
    pub(crate) urgency: Arc<Urgency>,
}

impl Flight {
    /// A login is running while its task still holds the sender.
    pub(crate) fn is_running(&self) -> bool {
        self.rx.has_changed().is_ok()
    }
}

impl Entry {
    /// A new token: served from now on; the failure memory and the retry
    /// pause are over (that pause is for failed refreshes only: the new
    /// token's refresh point decides the next one).
    fn publish(&self, token: &AccessToken) {
        self.current.store(Some(Arc::clone(&token.0)));
        self.failures.forget();
        self.refresh_not_before.store(0, Ordering::Relaxed);
    }

    /// Remembers a failed login, unless it is a failure a new login cannot
    /// cure and the secret it was sent with has been rotated since (the
    /// new one may cure it: `invalid_client` while the old is revoked).
    fn remember_failure(&self, error: Error) -> Error {
        let credentials = &self.ctx.settings.credentials;
        let sent_with = self.login_secret.load(Ordering::Relaxed);
        let lasting = Class::of(&error) == Some(Class::Lasting);
        if lasting && sent_with != credentials.generation() {
            return error;
        }
        let policy = &self.ctx.settings.failure_policy;
        let error = self.failures.remember(error, Instant::now(), policy);
        // Rotated between the look above and now: `rotate_secret` moves the
        // generation on before it forgets, so either it forgot this, or
        // this sees the new generation.
        if lasting && sent_with != credentials.generation() {
            self.failures.forget_lasting();
        }
        error
    }

    /// Waits for a login's token. A login that started long ago can deliver a
    /// token that has expired by now: it is never served; one fresh login is
    /// tried instead, and if that token too arrives expired, it is an error.
    pub(crate) async fn wait_for_login(
        self: &Arc<Self>,
        wait: Duration,
    ) -> Result<AccessToken, Error> {
        let called = Instant::now();
        let token = self.join_login(wait).await?;
        if Instant::now() < token.0.expires {
            return Ok(token);
        }
        // The second try waits for what is left of the caller's wait.
        let token = self
            .join_login(wait.saturating_sub(called.elapsed()))
            .await?;
        if Instant::now() < token.0.expires {
            return Ok(token);
        }
        Err(Error::garbled_response(
            "the token had expired by the time the login answered",
        ))
    }

    /// Joins the login in flight (starting one if none runs) and waits for
    /// its result, at most `wait` (the caller's `max_login_wait`, or what is
    /// left of it) for it to be sent (by this process or another one of the
    /// fleet): a caller whose wait runs out while the login still waits for
    /// a slot gets `RateLimited`, and the login goes on.
    async fn join_login(self: &Arc<Self>, wait: Duration) -> Result<AccessToken, Error> {
        let joined = Instant::now();
        let deadline = after(joined, wait);
        let mut rx = {
            let mut inflight = self.inflight.lock();
            // A login may have finished since the lock-free check.
            if let Some(token) = self.cached(self.ctx.clock.now()) {
                return Ok(token);
            }
            match inflight.as_ref() {
                Some(flight) if flight.is_running() => {
                    // Perhaps a queued background refresh: it is urgent now.
                    flight.urgency.join_as_caller(deadline);
                    flight.rx.clone()
                }
                _ => {
                    // A login that failed since the caller looked is
                    // answered from memory, not tried again.
                    if let Some(error) = self.failures.recall(joined) {
                        self.ctx.counters.answered_from_memory();
                        return Err(error);
                    }
                    let flight = self.spawn_login("no valid token", Urgency::caller(deadline))?;
                    let rx = flight.rx.clone();
                    *inflight = Some(flight);
                    rx
                }
            }
        };
        let sent = tokio::time::timeout_at(deadline, rx.wait_for(|p| !p.waiting()))
            .await
            .map(|changed| changed.is_ok());
        match sent {
            Ok(true) => {}
            Ok(false) => return Err(Error::LoginAborted),
            Err(_) => {
                // A slot that comes exactly at the deadline is in time (as
                // the budget counts it): let the login take it first.
                tokio::task::yield_now().await;
                match &*rx.borrow() {
                    Phase::Queued => return Err(Error::RateLimited { retry_after: None }),
                    // Another process is sending it; the login goes on and
                    // shares its token with the next caller.
                    Phase::AwaitingFleet => return Err(Error::timeout(joined.elapsed())),
                    Phase::Sending | Phase::Done(_) => {}
                }
            }
        }
        let done = rx
            .wait_for(|p| matches!(p, Phase::Done(_)))
            .await
            .map_err(|_| Error::LoginAborted)?;
        match &*done {
            Phase::Done(result) => result.clone(),
            _ => Err(Error::LoginAborted),
        }
    }

    /// Starts the login task. Called with `inflight` locked, so at most one
    /// runs. The login waits for a budget slot as `urgency` says.
    pub(crate) fn spawn_login(
        self: &Arc<Self>,
        reason: &'static str,
        urgency: Urgency,
    ) -> Result<Flight, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfig("the token cache must be used inside a tokio runtime".into())
        })?;
        let (tx, rx) = watch::channel(Phase::Queued);
        let urgency = Arc::new(urgency);
        let entry = Arc::clone(self);
        let wanted = Arc::clone(&urgency);
        // The login serves every caller that waits on it, so it is no
        // child of the one that started it: its own span, following from it.
        let span = tracing::info_span!(
            parent: None,
            "myinvois_auth.login",
            entry = %self.label,
            reason,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        span.follows_from(tracing::Span::current().id());
        let login = async move {
            let started = Instant::now();
            let progress = Progress(tx);
            let result = entry.obtain(&wanted, &progress).await;
            let span = tracing::Span::current();
            span.record(
                "duration_ms",
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
            match &result {
                Ok(_) => span.record("outcome", "ok"),
                Err(error) => span
                    .record("outcome", "error")
                    .record("error", error.kind()),
            };
            let result = match result {
                Ok(token) => {
                    entry.publish(&token);
                    Ok(token)
                }
                // Gave up waiting for another process's login: no login of
                // this process failed, nothing to remember.
                Err(error) if progress.awaiting_fleet() => Err(error),
                Err(error) => Err(entry.remember_failure(error)),
            };
            // The token is stored before the login stops being "in flight", so
            // a caller that finds no login in flight finds the token.
            *entry.inflight.lock() = None;
            progress.set(Phase::Done(result));
        };
        runtime.spawn(login.instrument(span));
        Ok(Flight { rx, urgency })
    }
}
