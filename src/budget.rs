//! The login budget: at most `count` logins in any window of `period` for
//! one client ID (MyInvois allows 12 a minute), shared by every entry and
//! every cache in the process that logs in with that client ID, and a
//! `Retry-After` from a 429 honoured by all of them.
//!
//! The rule is the server's: a login goes out at once while the window
//! (`period` plus [`PACING_MARGIN`] for network jitter) holds fewer than
//! `count` logins, so `count` cold taxpayers are all logged in at once.
//! Within that rule:
//!
//! - **Earliest deadline first.** A caller with no token (deadline: now +
//!   `max_login_wait`) goes before a refresh whose token is still valid for
//!   minutes (deadline: just before it expires). A login whose slot would
//!   come after its deadline is refused at once with [`Error::RateLimited`].
//! - **Background refreshes are paced**, one per `(period + margin) / count`,
//!   so they spread over the window, and so do the expiries of the tokens
//!   they bring: a burst of cold logins does not come back as a burst of
//!   expiries an hour later. Refreshes whose tokens expire together are
//!   scheduled backwards from their deadlines (each must start an interval
//!   before the next), so the pace never makes one of them miss.
//! - **Under pressure, every login is paced.** While a caller without a
//!   token has been refused within the last window, there are more logins
//!   wanted than the budget has: every login then keeps to the pace,
//!   earliest deadline first, so logins stay evenly spread (no group of
//!   callers locked out in phase with bursts) and a refresh goes only when
//!   its token is about to expire, wasting no lifetime the budget cannot
//!   spare.
//!
//! Waiters sleep on timers and notifications, never spin.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::after;
use crate::error::Error;

/// MyInvois' login limit: 12 per minute per client ID.
pub const DEFAULT_LOGIN_RATE_LIMIT: (u32, Duration) = (12, Duration::from_secs(60));
/// Added to the period of the login window (and so to the pace of
/// background refreshes): logins reach the identity service with a few
/// milliseconds of jitter, and a window of exactly `period` could let the
/// first and the `count + 1`-th land inside one window there.
pub const PACING_MARGIN: Duration = Duration::from_millis(250);
/// How long to hold off logins after a 429 that carried no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(60);

/// `count` logins per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) count: u32,
    pub(crate) period: Duration,
}

impl RateLimit {
    /// The window no more than `count` logins may share: `period` plus the margin.
    pub(crate) fn window(self) -> Duration {
        self.period.saturating_add(PACING_MARGIN)
    }

    /// The pace: one window over `count`.
    pub(crate) fn interval(self) -> Duration {
        self.window() / self.count.max(1)
    }

    /// One process's share of this budget in a fleet of `processes` that
    /// cannot see what the others spend (their token store is out of
    /// reach), so that the fleet as a whole keeps to `count` a period:
    /// `count / processes` a period while that is at least one; with more
    /// processes than logins, one login per `period × processes / count`,
    /// rounded up to the millisecond.
    pub(crate) fn share(self, processes: u32) -> RateLimit {
        let (count, processes) = (self.count.max(1), processes.max(1));
        if processes <= count {
            return RateLimit {
                count: count / processes,
                period: self.period,
            };
        }
        let ms = self.period.as_millis() * u128::from(processes);
        let ms = ms.div_ceil(u128::from(count));
        RateLimit {
            count: 1,
            period: Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)),
        }
    }
}

/// What a login asks of the budget, shared with the login in flight: a
/// caller without a token that joins a queued background refresh raises it
/// to its own urgency, so the refresh is no longer paced and goes ahead of
/// refreshes that can still wait.
#[derive(Debug)]
pub(crate) struct Urgency {
    state: Mutex<UrgencyState>,
    changed: Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UrgencyState {
    /// The latest anyone waiting on it can use a login: past it, refuse.
    pub(crate) deadline: Instant,
    /// Its place in the queue: the earliest deadline of anyone waiting on it.
    pub(crate) priority: Instant,
    /// A background refresh that no caller waits for: keep to the pace.
    pub(crate) refresh: bool,
}

impl Urgency {
    /// A caller without a valid token, who can wait until `deadline`.
    pub(crate) fn caller(deadline: Instant) -> Self {
        Self::new(deadline, false)
    }

    /// A background refresh of a token that must be replaced by `deadline`.
    pub(crate) fn refresh(deadline: Instant) -> Self {
        Self::new(deadline, true)
    }

    fn new(deadline: Instant, refresh: bool) -> Self {
        Urgency {
            state: Mutex::new(UrgencyState {
                deadline,
                priority: deadline,
                refresh,
            }),
            changed: Notify::new(),
        }
    }

    /// A caller without a token, who can wait until `deadline`, joins.
    pub(crate) fn join_as_caller(&self, deadline: Instant) {
        let mut state = self.state.lock();
        let before = *state;
        state.priority = state.priority.min(deadline);
        state.deadline = state.deadline.max(deadline);
        state.refresh = false;
        if *state != before {
            self.changed.notify_one();
        }
    }

    pub(crate) fn get(&self) -> UrgencyState {
        *self.state.lock()
    }
}

pub(crate) struct LoginBudget {
    limit: Option<RateLimit>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the logins inside the longest window asked for were let out,
    /// oldest first.
    grants: VecDeque<Instant>,
    /// The longest window asked for (a fleet share's may be longer than
    /// the budget's): grants are kept that long.
    keep_for: Duration,
    /// When the last paced login was let out.
    last_paced: Option<Instant>,
    /// No login before this (from a 429's `Retry-After`).
    blocked_until: Option<Instant>,
    /// When a caller without a token was last refused: within a window of
    /// it, the budget is under pressure.
    last_refusal: Option<Instant>,
    /// Waiting logins, by arrival.
    waiters: BTreeMap<u64, Queued>,
    next_seq: u64,
}

#[derive(Clone)]
struct Queued {
    wanted: UrgencyState,
    wake: Arc<Notify>,
}

/// A waiter as the budget sees it at one instant.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    seq: u64,
    /// When it must be served, in the order the queue is served in.
    priority: Instant,
    paced: bool,
}

/// What a waiter does next.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Go,
    Refuse(Duration),
    WaitUntil(Instant),
}

/// A login slot taken from the budget. Given back (as if never taken) when
/// dropped before [`keep`](Self::keep): the login it was for was never sent.
pub(crate) struct Grant<'a> {
    budget: &'a LoginBudget,
    at: Instant,
    /// For a paced grant, the pace it replaced, restored on refund.
    replaced_pace: Option<Option<Instant>>,
    kept: bool,
}

impl std::fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl Grant<'_> {
    /// Whether the slot kept to the pace (a refresh, or any login under
    /// pressure): the fleet's budget is asked for the same.
    pub(crate) fn paced(&self) -> bool {
        self.replaced_pace.is_some()
    }

    /// The login is being sent: the slot is used for good.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut state = self.budget.state.lock();
        if let Some(i) = state.grants.iter().rposition(|g| *g == self.at) {
            state.grants.remove(i);
        }
        if let Some(previous) = self.replaced_pace {
            if state.last_paced == Some(self.at) {
                state.last_paced = previous;
            }
        }
        state.wake_all();
    }
}

impl State {
    /// Whether a caller without a token was refused within the last window.
    fn under_pressure(&self, now: Instant, limit: RateLimit) -> bool {
        self.last_refusal
            .is_some_and(|at| now.saturating_duration_since(at) < limit.window())
    }

    /// Drops the grants older than any window asked for (`window` now).
    fn prune(&mut self, now: Instant, window: Duration) {
        self.keep_for = self.keep_for.max(window);
        while self
            .grants
            .front()
            .is_some_and(|g| now.saturating_duration_since(*g) >= self.keep_for)
        {
            self.grants.pop_front();
        }
    }

    /// The grants inside the last `window`, oldest first.
    fn in_window(
        &self,
        now: Instant,
        window: Duration,
    ) -> std::collections::vec_deque::Iter<'_, Instant> {
        let first = self
            .grants
            .partition_point(|g| now.saturating_duration_since(*g) >= window);
        self.grants.range(first..)
    }

    fn wake_all(&self) {
        for queued in self.waiters.values() {
            queued.wake.notify_one();
        }
    }

    /// The queue (with `me`, who may not be in it yet) in the order it is
    /// served: by priority, where a refresh's priority is the latest it can
    /// start so that it and every refresh with a later deadline can still
    /// keep to the pace (scheduled backwards from the deadlines).
    fn order(&self, me: (u64, UrgencyState), interval: Duration, pressure: bool) -> Vec<Candidate> {
        let mut all: Vec<(u64, UrgencyState)> = self
            .waiters
            .iter()
            .filter(|(seq, _)| **seq != me.0)
            .map(|(seq, q)| (*seq, q.wanted))
            .chain(std::iter::once(me))
            .collect();
        all.sort_by_key(|(seq, w)| (w.deadline, *seq));
        let mut latest_start: Option<Instant> = None;
        let mut candidates: Vec<Candidate> = all
            .iter()
            .rev()
            .map(|(seq, w)| {
                let mut priority = w.priority;
                if w.refresh {
                    // Its deadline, and an interval before the next
                    // refresh's start.
                    let own = w.deadline;
                    let start = latest_start
                        .and_then(|next| next.checked_sub(interval))
                        .map_or(own, |next| next.min(own));
                    latest_start = Some(start);
                    priority = start;
                }
                Candidate {
                    seq: *seq,
                    priority,
                    paced: pressure || w.refresh,
                }
            })
            .collect();
        candidates.sort_by_key(|c| (c.priority, c.seq));
        candidates
    }

    /// Whether `me` may go now, must be refused, or waits (and until when).
    fn decide(
        &self,
        me: (u64, UrgencyState),
        now: Instant,
        limit: Option<RateLimit>,
        count: u32,
    ) -> Decision {
        let blocked = self.blocked_until.filter(|b| *b > now);
        let Some(limit) = limit else {
            return match blocked {
                None => Decision::Go,
                Some(until) if until > me.1.deadline => {
                    Decision::Refuse(until.saturating_duration_since(now))
                }
                Some(until) => Decision::WaitUntil(until),
            };
        };
        let pressure = self.under_pressure(now, limit);
        let order = self.order(me, limit.interval(), pressure);
        if blocked.is_none() && self.may_go_now(&order, me.0, now, limit, count) {
            return Decision::Go;
        }
        let slot = self.estimate(&order, me.0, now, limit, count, blocked);
        if now >= me.1.deadline || slot > me.1.deadline {
            return Decision::Refuse(slot.saturating_duration_since(now));
        }
        // Woken earlier by any change in the queue.
        Decision::WaitUntil(if slot > now { slot } else { me.1.deadline })
    }

    /// Free slots now go to the waiters that can use one now, in order; a
    /// paced waiter only on the pace, one per pace.
    fn may_go_now(
        &self,
        order: &[Candidate],
        me: u64,
        now: Instant,
        limit: RateLimit,
        count: u32,
    ) -> bool {
        let free = (count as usize).saturating_sub(self.in_window(now, limit.window()).len());
        let mut pace_free = self
            .last_paced
            .is_none_or(|last| now >= after(last, limit.interval()));
        let mut ahead = 0;
        for c in order {
            let eligible = !c.paced || pace_free;
            if c.seq == me {
                return eligible && ahead < free;
            }
            if eligible {
                ahead += 1;
                if c.paced {
                    pace_free = false;
                }
            }
        }
        false
    }

    /// When `me` could go, if every waiter ahead of it takes the first slot
    /// it can: slots open as earlier logins leave the window, and a paced
    /// waiter also keeps to the pace.
    fn estimate(
        &self,
        order: &[Candidate],
        me: u64,
        now: Instant,
        limit: RateLimit,
        count: u32,
        blocked: Option<Instant>,
    ) -> Instant {
        let start = blocked.map_or(now, |b| b.max(now));
        let (window, interval) = (limit.window(), limit.interval());
        let count = count as usize;
        let mut openings: BinaryHeap<Reverse<Instant>> = BinaryHeap::new();
        let grants = self.in_window(now, window);
        for _ in grants.len()..count {
            openings.push(Reverse(start));
        }
        let counted = grants.len().saturating_sub(count);
        for g in grants.skip(counted) {
            openings.push(Reverse(after(*g, window).max(start)));
        }
        let mut pace = self.last_paced.map(|last| after(last, interval));
        for c in order {
            let Some(Reverse(opening)) = openings.pop() else {
                break;
            };
            let mut at = opening;
            if c.paced {
                at = at.max(pace.unwrap_or(at));
                pace = Some(after(at, interval));
            }
            if c.seq == me {
                return at;
            }
            openings.push(Reverse(after(at, window)));
        }
        start
    }
}

impl LoginBudget {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        LoginBudget {
            limit,
            state: Mutex::new(State::default()),
        }
    }

    /// The budget shared by every cache of this process that logs in at
    /// `token_url` with `client_id`. The first cache to ask sets the limit
    /// while any cache holds it.
    ///
    /// A budget outlives its caches for as long as it matters: while its
    /// window holds a login or a refusal, or a 429's hold runs. So a cache
    /// built per job (or on a configuration reload) keeps to the window
    /// and the hold its predecessor left. A budget no cache holds and that
    /// no longer matters is dropped at the next call: memory stays bounded
    /// by the client IDs in use. A cache built while no other holds the
    /// budget sets a new limit, keeping what the old one remembers.
    pub(crate) fn shared(token_url: &str, client_id: &str, limit: Option<RateLimit>) -> Arc<Self> {
        type Registry = Mutex<HashMap<(String, String), Arc<LoginBudget>>>;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let now = Instant::now();
        let mut registry = REGISTRY.get_or_init(Default::default).lock();
        registry.retain(|_, budget| Arc::strong_count(budget) > 1 || budget.matters(now));
        let key = (token_url.to_owned(), client_id.to_owned());
        let budget = match registry.get(&key) {
            Some(budget) if budget.limit == limit => return Arc::clone(budget),
            Some(budget) if Arc::strong_count(budget) > 1 => {
                tracing::warn!(
                    client_id,
                    "another cache already set this client ID's login budget; keeping its limit"
                );
                return Arc::clone(budget);
            }
            // Held by no cache: the new limit, and what the old one remembers.
            Some(budget) => Arc::new(budget.with_limit(limit)),
            None => Arc::new(LoginBudget::new(limit)),
        };
        registry.insert(key, Arc::clone(&budget));
        budget
    }

    /// Whether the budget still matters to a cache built at `now`: its
    /// window holds a login or a refusal, or a 429's hold runs.
    fn matters(&self, now: Instant) -> bool {
        let state = self.state.lock();
        let window = self
            .limit
            .map_or(Duration::ZERO, RateLimit::window)
            .max(state.keep_for);
        let recent = |at: Option<Instant>| at.is_some_and(|at| now < after(at, window));
        state.blocked_until.is_some_and(|until| now < until)
            || recent(state.grants.back().copied())
            || recent(state.last_refusal)
            || !state.waiters.is_empty()
    }

    /// A budget with `limit` and everything this one remembers.
    fn with_limit(&self, limit: Option<RateLimit>) -> Self {
        let state = self.state.lock();
        LoginBudget {
            limit,
            state: Mutex::new(State {
                grants: state.grants.clone(),
                keep_for: state.keep_for,
                last_paced: state.last_paced,
                blocked_until: state.blocked_until,
                last_refusal: state.last_refusal,
                waiters: BTreeMap::new(),
                next_seq: 0,
            }),
        }
    }

    pub(crate) fn limit(&self) -> Option<RateLimit> {
        self.limit
    }

    /// Waits for a login slot, until the urgency's deadline at the latest,
    /// and refuses at once when the slot would come later. `share`, when
    /// given, is the rule instead of the budget's (while a fleet's shared
    /// budget is out of reach, each process keeps to its share: see
    /// [`RateLimit::share`]); it never allows more than the budget.
    pub(crate) async fn acquire(
        &self,
        urgency: &Urgency,
        share: Option<RateLimit>,
    ) -> Result<Grant<'_>, Error> {
        let limit = match (self.limit, share) {
            (Some(limit), Some(share)) => Some(RateLimit {
                count: share.count.clamp(1, limit.count.max(1)),
                period: share.period.max(limit.period),
            }),
            (limit, _) => limit,
        };
        let count = limit.map_or(u32::MAX, |l| l.count);
        let window = limit.map_or(Duration::ZERO, RateLimit::window);
        let wake = Arc::new(Notify::new());
        let mut place = Place {
            budget: self,
            seq: None,
        };
        loop {
            let now = Instant::now();
            let wanted = urgency.get();
            let wake_at = {
                let mut state = self.state.lock();
                state.prune(now, window);
                let seq = place.seq.unwrap_or(state.next_seq);
                match state.decide((seq, wanted), now, limit, count) {
                    Decision::Go => {
                        // Nobody else's turn comes sooner because of this.
                        place.leave(&mut state, false);
                        state.grants.push_back(now);
                        let paced =
                            wanted.refresh || limit.is_some_and(|l| state.under_pressure(now, l));
                        let replaced_pace = paced.then(|| state.last_paced.replace(now));
                        return Ok(Grant {
                            budget: self,
                            at: now,
                            replaced_pace,
                            kept: false,
                        });
                    }
                    Decision::Refuse(retry_after) => {
                        place.leave(&mut state, true);
                        if !wanted.refresh {
                            state.last_refusal = Some(now);
                        }
                        return Err(Error::RateLimited {
                            retry_after: Some(retry_after),
                        });
                    }
                    Decision::WaitUntil(at) => {
                        place.enqueue(&mut state, wanted, &wake);
                        at
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = wake.notified() => {}
                _ = urgency.changed.notified() => {}
            }
        }
    }

    /// Holds off every login until `retry_after` from now (a 429 was seen).
    pub(crate) fn block_for(&self, retry_after: Duration) {
        let until = after(Instant::now(), retry_after);
        let mut state = self.state.lock();
        if state.blocked_until.is_none_or(|b| b < until) {
            state.blocked_until = Some(until);
        }
        state.wake_all();
    }
}

/// A waiter's place in the queue, left when it is served, refused or
/// dropped mid-wait (waking the others when that may move them up).
struct Place<'a> {
    budget: &'a LoginBudget,
    seq: Option<u64>,
}

impl Place<'_> {
    fn enqueue(&mut self, state: &mut State, wanted: UrgencyState, wake: &Arc<Notify>) {
        let seq = *self.seq.get_or_insert_with(|| {
            state.next_seq += 1;
            state.next_seq - 1
        });
        let queued = Queued {
            wanted,
            wake: Arc::clone(wake),
        };
        if let Some(before) = state.waiters.insert(seq, queued) {
            if before.wanted != wanted {
                // Moved up the queue: the others' estimates change.
                state.wake_all();
            }
        }
    }

    fn leave(&mut self, state: &mut State, wake_others: bool) {
        if let Some(seq) = self.seq.take() {
            state.waiters.remove(&seq);
            if wake_others {
                state.wake_all();
            }
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.seq.is_some() {
            let mut state = self.budget.state.lock();
            self.leave(&mut state, true);
        }
    }
}

#[cfg(test)]
mod tests;
