//! What every entry of one cache shares: its settings, the client ID's login
//! budget, counters and clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::budget::{LoginBudget, RateLimit};
use crate::clock::Clock;
use crate::config::Settings;
use crate::rejection::Learned;
use crate::stats::Counters;
use crate::store::budget_key;

/// What every entry of one cache shares.
pub(crate) struct Context {
    pub(crate) settings: Settings,
    pub(crate) budget: Arc<LoginBudget>,
    /// The client ID's budget key in the token store.
    pub(crate) budget_key: String,
    pub(crate) counters: Counters,
    pub(crate) clock: Clock,
    /// Endpoints that reject every token, as any entry learned (see `rejection`).
    pub(crate) learned: Learned,
    /// Whether the warning that `fleet_size` is not set was given.
    warned_fleet_size: AtomicBool,
}

impl Context {
    /// This process's share of the login budget while the token store is
    /// out of reach (see [`RateLimit::share`]); `None` without a budget.
    /// With `fleet_size` left unset, the whole budget, and a warning, once.
    pub(crate) fn fallback_share(&self) -> Option<RateLimit> {
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

    pub(crate) fn new(settings: Settings) -> Self {
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
            budget_key,
            settings,
            budget,
            counters: Counters::default(),
            clock: Clock::new(),
            learned: Learned::default(),
            warned_fleet_size: AtomicBool::new(false),
        }
    }
}
