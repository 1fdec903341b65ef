//! What every entry of one cache shares: its settings, the client ID's login
//! budget, counters and clock.

use std::sync::Arc;

use crate::budget::LoginBudget;
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
}

impl Context {
    /// This process's share of the login budget's count while the token
    /// store is out of reach: count / fleet size, at least one.
    pub(crate) fn fallback_share(&self) -> u32 {
        let count = self.budget.limit().map_or(u32::MAX, |l| l.count);
        (count / self.settings.fleet_size).max(1)
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
        }
    }
}
