//! The one login in flight per entry: started by the first caller without a
//! token (or by the sweep, for a refresh), run in its own task so that a
//! caller who gives up does not cancel it, and handed to every waiting
//! caller through a `watch` channel, its error included.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::budget::Urgency;
use crate::clock::after;
use crate::entry::Entry;
use crate::error::Error;
use crate::token::AccessToken;

pub(crate) type LoginResult = Option<Result<AccessToken, Error>>;

/// The login in flight for an entry: its result, once there is one, and how
/// urgently it needs a slot from the login budget.
pub(crate) struct Flight {
    pub(crate) rx: watch::Receiver<LoginResult>,
    pub(crate) urgency: Arc<Urgency>,
}

impl Flight {
    /// A login is running while its task still holds the sender.
    pub(crate) fn is_running(&self) -> bool {
        self.rx.has_changed().is_ok()
    }
}

impl Entry {
    /// Waits for a login's token. A login that started long ago can deliver a
    /// token that has expired by now: it is never served; one fresh login is
    /// tried instead, and if that token too arrives expired, it is an error.
    pub(crate) async fn wait_for_login(self: &Arc<Self>) -> Result<AccessToken, Error> {
        let token = self.join_login().await?;
        if Instant::now() < token.0.expires {
            return Ok(token);
        }
        let token = self.join_login().await?;
        if Instant::now() < token.0.expires {
            return Ok(token);
        }
        Err(Error::invalid_response(
            "the token had expired by the time the login answered",
        ))
    }

    async fn join_login(self: &Arc<Self>) -> Result<AccessToken, Error> {
        let mut rx = {
            let mut inflight = self.inflight.lock();
            // A login may have finished since the lock-free check.
            if let Some(token) = self.cached(self.ctx.clock.now()) {
                return Ok(token);
            }
            let deadline = after(Instant::now(), self.ctx.settings.max_login_wait);
            match inflight.as_ref() {
                Some(flight) if flight.is_running() => {
                    // Perhaps a queued background refresh: it is urgent now.
                    flight.urgency.join_as_caller(deadline);
                    flight.rx.clone()
                }
                _ => {
                    let flight = self.spawn_login("no valid token", Urgency::caller(deadline))?;
                    let rx = flight.rx.clone();
                    *inflight = Some(flight);
                    rx
                }
            }
        };
        let result = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::LoginAborted)?;
        result.clone().unwrap_or(Err(Error::LoginAborted))
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
        let (tx, rx) = watch::channel(None);
        let urgency = Arc::new(urgency);
        let entry = Arc::clone(self);
        let wanted = Arc::clone(&urgency);
        runtime.spawn(async move {
            let result = match entry.obtain(reason, &wanted).await {
                Ok(token) => {
                    entry.current.store(Some(Arc::clone(&token.0)));
                    entry.failures.forget();
                    // The retry pause is for failed refreshes only: the new
                    // token's own refresh point decides the next one.
                    entry.refresh_not_before.store(0, Ordering::Relaxed);
                    Ok(token)
                }
                Err(error) => Err(entry.failures.remember(
                    error,
                    Instant::now(),
                    &entry.ctx.settings.failure_policy,
                )),
            };
            // The token is stored before the login stops being "in flight", so
            // a caller that finds no login in flight finds the token.
            *entry.inflight.lock() = None;
            let _ = tx.send(Some(result));
        });
        Ok(Flight { rx, urgency })
    }
}
