//! How callers share the one login in flight: the first caller without a
//! token (or the sweep, for a refresh) starts it ([`Entry::spawn_login`]),
//! in a task of its own so that a caller who gives up does not cancel it;
//! every caller joins it ([`Entry::wait_for_login`]) and gets its result,
//! error included. The task publishes a new token, or remembers a failure.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::flight::{Flight, Phase, Progress};
use super::reason::Reason;
use super::state::Entry;
use crate::budget::Urgency;
use crate::clock::after;
use crate::error::Error;
use crate::failure::Class;
use crate::token::AccessToken;

impl Entry {
    /// A new token: served from now on; the failure memory and the retry
    /// pause are over (that pause is for failed refreshes only: the new
    /// token's refresh point decides the next one).
    fn publish(&self, token: &AccessToken) {
        self.current.store(Some(Arc::clone(&token.0)));
        self.next_reason.clear();
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
        if lasting && sent_with != credentials.generation() && self.failures.forget_lasting() {
            self.next_reason.set(Reason::Rotated);
        }
        error
    }

    /// Waits for a login's token. A login that started long ago can deliver a
    /// token that has expired by now: it is never served; one fresh login is
    /// tried instead, and if that token too arrives expired, it is an error.
    pub(super) async fn wait_for_login(
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
                    let reason = self.next_reason.take(Reason::NoValidToken);
                    let flight = self.spawn_login(reason, Urgency::caller(deadline))?;
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
    pub(super) fn spawn_login(
        self: &Arc<Self>,
        reason: Reason,
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
            reason = reason.as_str(),
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            // The OpenTelemetry fields reqwest-tracing's client spans carry.
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
            error.message = tracing::field::Empty,
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
                // Its Display is scrubbed of the secret, as every error's.
                Err(error) => span
                    .record("outcome", "error")
                    .record("otel.status_code", "ERROR")
                    .record("error.type", error.kind())
                    .record("error.message", tracing::field::display(error)),
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
