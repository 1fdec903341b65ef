//! The login budget: at most `count` logins per `period` for one client ID
//! (MyInvois allows 12 a minute), shared by every entry and every cache in
//! the process that logs in with that client ID, and a `Retry-After` from a
//! 429 honoured by all of them.
//!
//! Logins are paced: one every `(period + 250 ms) / count` (5.02 s for 12 a
//! minute), which keeps any window of `period` to at most `count` logins,
//! whatever the server's window alignment and with room for network jitter. A plain sliding window would let `count` logins
//! out in one burst; the bursts then repeat every `period`, and a caller whose
//! calls fall just after them never finds a slot within its wait.
//!
//! Waiting logins are served earliest deadline first: a caller with no token
//! (deadline: now + `max_login_wait`) before a refresh whose token is still
//! valid for minutes (deadline: just before that token expires), and among
//! refreshes, the token closest to expiry first. A login that cannot get a
//! slot before its deadline is refused at once with [`Error::RateLimited`]
//! rather than left waiting. Waiters sleep on timers and notifications, never
//! spin; only the head of the queue watches the next free slot.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;

/// MyInvois' login limit: 12 per minute per client ID.
pub const DEFAULT_LOGIN_RATE_LIMIT: (u32, Duration) = (12, Duration::from_secs(60));
/// Added to the period when pacing: logins reach the identity service with a
/// few milliseconds of jitter, and paced at exactly `period / count`, the
/// first and the `count + 1`-th could land inside one window there.
pub const PACING_MARGIN: Duration = Duration::from_millis(250);
/// How long to hold off logins after a 429 that carried no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(60);

/// `count` logins per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) count: u32,
    pub(crate) period: Duration,
}

pub(crate) struct LoginBudget {
    limit: Option<RateLimit>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the last login was let out.
    last_grant: Option<Instant>,
    /// No login before this (from a 429's `Retry-After`).
    blocked_until: Option<Instant>,
    /// Waiting logins in deadline order, each with its own wake-up.
    waiters: BTreeMap<(Instant, u64), Arc<Notify>>,
    next_seq: u64,
}

impl RateLimit {
    /// The pace: one login per `(period + PACING_MARGIN) / count`.
    pub(crate) fn interval(self) -> Duration {
        (self.period + PACING_MARGIN) / self.count.max(1)
    }
}

/// When the `position`-th waiter in line (0 = first) could send, given the
/// last login let out, the limit and any 429 block. Each waiter ahead is
/// assumed to take the first slot it can.
pub(crate) fn slot_time(
    last_grant: Option<Instant>,
    limit: Option<RateLimit>,
    blocked_until: Option<Instant>,
    position: usize,
    now: Instant,
) -> Instant {
    let base = blocked_until.map_or(now, |b| b.max(now));
    let Some(limit) = limit else { return base };
    let interval = limit.interval();
    let first = last_grant.map_or(base, |last| base.max(last + interval));
    first + interval * u32::try_from(position).unwrap_or(u32::MAX)
}

impl LoginBudget {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        LoginBudget {
            limit,
            state: Mutex::new(State::default()),
        }
    }

    /// The budget shared by every cache of this process that logs in at
    /// `token_url` with `client_id`. The first cache to ask sets the limit.
    pub(crate) fn shared(token_url: &str, client_id: &str, limit: Option<RateLimit>) -> Arc<Self> {
        type Registry = Mutex<HashMap<(String, String), Weak<LoginBudget>>>;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let mut registry = REGISTRY.get_or_init(Default::default).lock();
        registry.retain(|_, budget| budget.strong_count() > 0);
        let key = (token_url.to_owned(), client_id.to_owned());
        if let Some(budget) = registry.get(&key).and_then(Weak::upgrade) {
            if budget.limit != limit {
                tracing::warn!(
                    client_id,
                    "another cache already set this client ID's login budget; keeping its limit"
                );
            }
            return budget;
        }
        let budget = Arc::new(LoginBudget::new(limit));
        registry.insert(key, Arc::downgrade(&budget));
        budget
    }

    /// Waits for a login slot, until `deadline` at the latest. Refuses at
    /// once when the slot this caller would get lies beyond its deadline.
    pub(crate) async fn acquire(&self, deadline: Instant) -> Result<(), Error> {
        let (key, wake) = {
            let mut state = self.state.lock();
            let seq = state.next_seq;
            state.next_seq += 1;
            let key = (deadline, seq);
            let wake = Arc::new(Notify::new());
            state.waiters.insert(key, Arc::clone(&wake));
            (key, wake)
        };
        let mut waiter = Waiter {
            budget: self,
            key,
            registered: true,
        };
        loop {
            let now = Instant::now();
            let wake_at = {
                let mut state = self.state.lock();
                let position = state.waiters.range(..key).count();
                let slot = slot_time(
                    state.last_grant,
                    self.limit,
                    state.blocked_until,
                    position,
                    now,
                );
                // A slot free now is taken even if the deadline has just
                // passed: the deadline bounds waiting, nothing else.
                if position == 0 && slot <= now {
                    state.last_grant = Some(now);
                    waiter.leave(&mut state);
                    return Ok(());
                }
                if slot > deadline || (position > 0 && now >= deadline) {
                    waiter.leave(&mut state);
                    return Err(Error::RateLimited {
                        retry_after: Some(slot.saturating_duration_since(now)),
                    });
                }
                // The head watches its slot; the others wait to become head,
                // or for their deadline.
                if position == 0 {
                    slot
                } else {
                    deadline
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// Holds off every login until `retry_after` from now (a 429 was seen).
    pub(crate) fn block_for(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut state = self.state.lock();
        if state.blocked_until.is_none_or(|b| b < until) {
            state.blocked_until = Some(until);
        }
    }
}

/// A place in the queue; leaving it (or being dropped, if the login task is
/// cancelled) wakes the next in line.
struct Waiter<'a> {
    budget: &'a LoginBudget,
    key: (Instant, u64),
    registered: bool,
}

impl Waiter<'_> {
    fn leave(&mut self, state: &mut State) {
        if !self.registered {
            return;
        }
        self.registered = false;
        let was_head = state.waiters.keys().next() == Some(&self.key);
        state.waiters.remove(&self.key);
        if was_head {
            if let Some(next) = state.waiters.values().next() {
                next.notify_one();
            }
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.registered {
            let mut state = self.budget.state.lock();
            self.leave(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const TWELVE: Option<RateLimit> = Some(RateLimit {
        count: 12,
        period: Duration::from_secs(60),
    });

    #[test]
    fn logins_are_paced_one_per_period_plus_margin_over_count() {
        let t0 = Instant::now();
        let now = t0 + S(20);
        let step = (S(60) + PACING_MARGIN) / 12;
        assert_eq!(step, Duration::from_nanos(5_020_833_333));
        // Nothing sent yet: the first goes now, the next ones a step apart.
        assert_eq!(slot_time(None, TWELVE, None, 0, now), now);
        assert_eq!(slot_time(None, TWELVE, None, 3, now), now + step * 3);
        // Last sent 2 s ago: the next slot is a step after it.
        let last = now - S(2);
        assert_eq!(slot_time(Some(last), TWELVE, None, 0, now), last + step);
        assert_eq!(slot_time(Some(last), TWELVE, None, 1, now), last + step * 2);
        // Last sent long ago: now.
        assert_eq!(slot_time(Some(t0), TWELVE, None, 0, now), now);
    }

    #[test]
    fn a_429_block_comes_first_and_no_limit_means_only_the_block() {
        let t0 = Instant::now();
        assert_eq!(slot_time(None, TWELVE, Some(t0 + S(30)), 0, t0), t0 + S(30));
        let step = (S(60) + PACING_MARGIN) / 12;
        assert_eq!(
            slot_time(None, TWELVE, Some(t0 + S(30)), 2, t0),
            t0 + S(30) + step * 2
        );
        assert_eq!(slot_time(None, None, Some(t0 + S(30)), 99, t0), t0 + S(30));
        assert_eq!(slot_time(Some(t0), None, None, 99, t0), t0);
        // A block in the past is no block.
        assert_eq!(slot_time(None, None, Some(t0), 0, t0 + S(1)), t0 + S(1));
    }

    #[test]
    fn no_window_of_a_period_ever_holds_more_than_count_grants() {
        let t0 = Instant::now();
        let mut last = None;
        let mut grants = Vec::new();
        for i in 0..100u64 {
            // Demand arrives in bursts; grants must not.
            let now = t0 + S(i / 20 * 60);
            let t = slot_time(last, TWELVE, None, 0, now);
            grants.push(t);
            last = Some(t);
        }
        grants.sort();
        for (i, t) in grants.iter().enumerate() {
            let in_window = grants[i..].iter().take_while(|g| **g < *t + S(60)).count();
            assert!(in_window <= 12, "window at {i} holds {in_window}");
            // Even with 250 ms of jitter in the window's favour.
            let jittered = grants[i..]
                .iter()
                .take_while(|g| **g < *t + S(60) + PACING_MARGIN - Duration::from_millis(1))
                .count();
            assert!(jittered <= 12, "window at {i} holds {jittered} with jitter");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_earliest_deadline_first() {
        let budget = Arc::new(LoginBudget::new(Some(RateLimit {
            count: 1,
            period: S(60),
        })));
        budget.acquire(Instant::now() + S(1)).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, deadline) in [("late", 500), ("early", 200), ("middle", 300)] {
            let (budget, order) = (Arc::clone(&budget), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                budget.acquire(Instant::now() + S(deadline)).await.unwrap();
                order.lock().push((name, Instant::now()));
            }));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock();
        let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["early", "middle", "late"]);
        assert_eq!(order[1].1 - order[0].1, S(60) + PACING_MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_arrival_with_an_earlier_deadline_takes_the_next_slot() {
        let budget = Arc::new(LoginBudget::new(Some(RateLimit {
            count: 1,
            period: S(60),
        })));
        let t0 = Instant::now();
        budget.acquire(t0 + S(1)).await.unwrap();
        let refresh = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move {
                budget.acquire(t0 + S(300)).await.unwrap();
                Instant::now() - t0
            }
        });
        tokio::time::sleep(S(55)).await;
        let cold = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move {
                budget.acquire(t0 + S(65)).await.unwrap();
                Instant::now() - t0
            }
        });
        let step = S(60) + PACING_MARGIN;
        assert_eq!(cold.await.unwrap(), step);
        assert_eq!(refresh.await.unwrap(), step * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_that_cannot_be_served_by_its_deadline_is_refused_at_once() {
        let budget = LoginBudget::new(Some(RateLimit {
            count: 1,
            period: S(60),
        }));
        budget.acquire(Instant::now() + S(1)).await.unwrap();
        let started = Instant::now();
        let err = budget.acquire(Instant::now() + S(10)).await.unwrap_err();
        assert_eq!(
            Instant::now(),
            started,
            "no waiting when the slot is too far"
        );
        assert!(
            matches!(err, Error::RateLimited { retry_after: Some(d) } if d == S(60) + PACING_MARGIN),
            "{err:?}"
        );
        budget.block_for(S(30));
        tokio::time::advance(S(61)).await;
        // A step later the next slot is free, and the block has passed.
        budget.acquire(Instant::now() + S(1)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_slot_is_granted_even_at_or_past_the_deadline() {
        let budget = LoginBudget::new(TWELVE);
        let deadline = Instant::now();
        tokio::time::advance(Duration::from_millis(1)).await;
        budget.acquire(deadline).await.unwrap();
        // But a slot that is not free now is refused.
        let err = budget.acquire(Instant::now()).await.unwrap_err();
        assert!(matches!(err, Error::RateLimited { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_block_holds_off_logins_until_it_ends() {
        let budget = LoginBudget::new(None);
        budget.block_for(S(30));
        let started = Instant::now();
        budget.acquire(Instant::now() + S(45)).await.unwrap();
        assert_eq!(Instant::now() - started, S(30));
        budget.block_for(S(30));
        assert!(budget.acquire(Instant::now() + S(10)).await.is_err());
    }
}
