//! The one login in flight per entry: started by the first caller without a
//! token (or by the sweep, for a refresh), run in its own task so that a
//! caller who gives up does not cancel it, and handed to every waiting
//! caller through a `watch` channel, its error included.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::entry::Entry;
use crate::error::Error;
use crate::token::AccessToken;

pub(crate) type LoginResult = Option<Result<AccessToken, Error>>;

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
            match inflight.as_ref() {
                Some(rx) if is_running(Some(rx)) => rx.clone(),
                _ => {
                    let deadline = Instant::now() + self.ctx.settings.max_login_wait;
                    let rx = self.spawn_login("no valid token", deadline)?;
                    *inflight = Some(rx.clone());
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
    /// runs. The login waits for a budget slot until `deadline`.
    pub(crate) fn spawn_login(
        self: &Arc<Self>,
        reason: &'static str,
        deadline: Instant,
    ) -> Result<watch::Receiver<LoginResult>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfig("the token cache must be used inside a tokio runtime".into())
        })?;
        let (tx, rx) = watch::channel(None);
        let entry = Arc::clone(self);
        runtime.spawn(async move {
            let result = entry.obtain(reason, deadline).await;
            if let Ok(token) = &result {
                entry.current.store(Some(Arc::clone(&token.0)));
                // The retry pause is for failed refreshes only: the new
                // token's own refresh point decides the next one.
                entry.refresh_not_before.store(0, Ordering::Relaxed);
            }
            // The token is stored before the login stops being "in flight", so
            // a caller that finds no login in flight finds the token.
            *entry.inflight.lock() = None;
            let _ = tx.send(Some(result));
        });
        Ok(rx)
    }
}

/// A login is running while its task still holds the sender.
pub(crate) fn is_running(rx: Option<&watch::Receiver<LoginResult>>) -> bool {
    rx.is_some_and(|rx| rx.has_changed().is_ok())
}
