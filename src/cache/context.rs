//! What every entry of one cache shares: its settings, the client ID's login
//! budget, counters and clock, and the one guarded way to call the token
//! store ([`Context::store`]): bounded in time, failures counted by kind.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::pacer::Pacer;
use crate::budget::{LoginBudget, RateLimit};
use crate::clock::Clock;
use crate::config::Settings;
use crate::rejection::Learned;
use crate::stats::Counters;
use crate::store::{budget_key, StoreError, StoreErrorKind};

/// Budget for one token-store call (stores have their own, shorter, limits).
const STORE_CALL_LIMIT: Duration = Duration::from_secs(2);

/// What every entry of one cache shares.
pub(super) struct Context {
    pub(super) settings: Settings,
    pub(super) budget: Arc<LoginBudget>,
    /// The client ID's budget key in the token store.
    pub(super) budget_key: String,
    pub(super) counters: Counters,
    pub(super) clock: Clock,
    /// Endpoints that reject every token, as any entry learned (see `rejection`).
    pub(super) learned: Learned,
    /// How often the process asks the token store while it waits (shared
    /// by every cache on the same store; see `pacer`).
    pub(super) pacer: Arc<Pacer>,
    /// Whether the warning that `fleet_size` is not set was given.
    warned_fleet_size: AtomicBool,
}

impl Context {
    /// This process's share of the login budget while the token store is
    /// out of reach (see [`RateLimit::share`]); `None` without a budget.
    /// With `fleet_size` left unset, the whole budget, and a warning, once.
    pub(super) fn fallback_share(&self) -> Option<RateLimit> {
        let limit = self.budget.limit()?;
        let processes = self.settings.fleet_size.unwrap_or_else(|| {
            if !self.warned_fleet_size.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the token store is out of reach and fleet_size is not set: this process \
                     now takes the whole login budget ({} a {:?}), as do the fleet's others; \
                     set fleet_size to the number of processes sharing the client ID",
                    limit.count,
                    limit.period
                );
            }
            1
        });
        Some(limit.share(processes))
    }

    pub(super) fn new(settings: Settings) -> Self {
        let budget = LoginBudget::shared(
            settings.token_url.as_str(),
            settings.credentials.client_id(),
            settings.login_rate_limit,
        );
        let budget_key = budget_key(
            settings.token_url.as_str(),
            settings.credentials.client_id(),
        );
        Context {
            pacer: Pacer::for_store(&settings.token_store),
            budget_key,
            settings,
            budget,
            counters: Counters::default(),
            clock: Clock::new(),
            learned: Learned::default(),
            warned_fleet_size: AtomicBool::new(false),
        }
    }

    /// Runs a token-store call within [`STORE_CALL_LIMIT`]; a failure (or
    /// no answer in time) is counted by kind, unless the store says it
    /// repeats one already counted (a call skipped while the store is out
    /// of reach).
    pub(super) async fn try_store<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let error = match tokio::time::timeout(STORE_CALL_LIMIT, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
            Err(_) => StoreError::new(
                StoreErrorKind::Timeout,
                "the token store did not answer in time",
            ),
        };
        if !error.is_repeat() {
            self.counters.store_error(error.kind());
        }
        Err(error)
    }

    /// Runs a token-store call as [`try_store`](Self::try_store) does; on
    /// failure, logs a warning naming the kind (once a skip period) and
    /// returns `None`, so the caller goes on as a single process would.
    pub(super) async fn store<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        match self.try_store(call).await {
            Ok(value) => Some(value),
            Err(error) if error.is_repeat() => {
                // Skipped like the calls before it in this skip period.
                tracing::debug!(what, %error, "token store skipped");
                None
            }
            Err(error) => {
                tracing::warn!(what, kind = %error.kind(), %error, "token store unavailable; going on without it");
                None
            }
        }
    }
}
