//! How often a process asks its token store while it waits: for another
//! process's login, for a slot of the fleet's login budget, or for a 429's
//! hold to end. However many of its entries wait, the process makes at most
//! [`CALLS_PER_WINDOW`] store calls in any [`WINDOW`] for them, shared by
//! every cache on the same store ([`Pacer::for_store`]); a store that
//! answers from memory (`TokenStore::is_remote` false) is not paced. The
//! calls a login makes once it has its slot (its lock, save and unlock) do
//! not wait for a turn, nor do a caller's first look and first ask for a
//! slot while nothing of the process waits (a cold start of 12 taxpayers
//! logs in at once); those two count toward the window all the same,
//! unless the login goes on to ask for the lock (won or lost): then they
//! were the login's own, as its lock is.
//!
//! The pacer also keeps what the fleet last said about a budget's window
//! (no slot before a time), so that the process's other entries wait for
//! that time without asking, and lets one entry at a time ask the store for
//! a slot of a budget: a refusal then stops the others from asking too.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::store::TokenStore;

/// At most this many waiting calls ...
pub(super) const CALLS_PER_WINDOW: usize = 2;
/// ... in any window this long: a second, and room for the calls to reach
/// the store a few milliseconds apart from when they were started.
pub(super) const WINDOW: Duration = Duration::from_millis(1050);

/// The pacer of one token store, shared by every cache of the process on it.
pub(super) struct Pacer {
    /// Whether turns are kept to [`CALLS_PER_WINDOW`] a window: not for a
    /// store in memory, which costs nothing to ask.
    limited: bool,
    /// When the recent and the booked calls start, in order (the calls of
    /// the last window, and those booked ahead).
    calls: Mutex<Vec<Instant>>,
    /// Entries waiting now (see [`Pacer::waiting`]).
    waiters: Mutex<usize>,
    /// When the latest turn was booked for.
    last_turn: Mutex<Option<Instant>>,
    /// Per budget key: what the fleet said last.
    closed: Mutex<HashMap<String, Closed>>,
    /// Per budget key: one entry at a time asks the store for a slot.
    asking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The fleet's window of a budget has no slot for this process before
/// `ask_again` (ask then), and, unless a reservation is given back, none
/// before `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Closed {
    pub(super) ask_again: Instant,
    pub(super) slot: Instant,
}

/// The pacers of the process, one per token store (by address), dropped
/// with their store.
type Pacers = Mutex<Vec<(Weak<dyn TokenStore>, Weak<Pacer>)>>;

fn pacers() -> &'static Pacers {
    static PACERS: std::sync::OnceLock<Pacers> = std::sync::OnceLock::new();
    PACERS.get_or_init(Pacers::default)
}

impl Pacer {
    fn new(limited: bool) -> Self {
        Pacer {
            limited,
            calls: Mutex::new(Vec::new()),
            waiters: Mutex::new(0),
            last_turn: Mutex::new(None),
            closed: Mutex::new(HashMap::new()),
            asking: Mutex::new(HashMap::new()),
        }
    }

    /// The pacer of `store`: the same for every cache given the same store.
    pub(super) fn for_store(store: &Arc<dyn TokenStore>) -> Arc<Pacer> {
        let address = Arc::as_ptr(store).cast::<()>();
        let mut pacers = pacers().lock();
        pacers.retain(|(store, pacer)| store.strong_count() > 0 && pacer.strong_count() > 0);
        let found = pacers
            .iter()
            .find(|(known, _)| known.as_ptr().cast::<()>() == address)
            .and_then(|(_, pacer)| pacer.upgrade());
        found.unwrap_or_else(|| {
            let pacer = Arc::new(Pacer::new(store.is_remote()));
            pacers.push((Arc::downgrade(store), Arc::downgrade(&pacer)));
            pacer
        })
    }

    /// Waits for this process's next turn to ask the store; `false`, at
    /// once and with no turn taken, when it would come after `deadline`.
    pub(super) async fn turn(&self, deadline: Instant) -> bool {
        if !self.limited {
            return true;
        }
        let at = {
            let mut calls = self.calls.lock();
            let now = Instant::now();
            let at = next_free(&mut calls, now);
            if at > deadline {
                return false;
            }
            calls.push(at);
            calls.sort();
            let mut last = self.last_turn.lock();
            *last = Some(last.map_or(at, |last| last.max(at)));
            at
        };
        tokio::time::sleep_until(at).await;
        true
    }

    /// Counts a call made without waiting for a turn; returns when, for
    /// [`uncount`](Self::uncount).
    pub(super) fn count(&self) -> Instant {
        let now = Instant::now();
        if self.limited {
            let mut calls = self.calls.lock();
            calls.retain(|at| now.saturating_duration_since(*at) < WINDOW);
            calls.push(now);
            calls.sort();
        }
        now
    }

    /// The calls counted at `at` were a login's own after all (it went on
    /// to ask for the lock), not a wait's: they no longer hold turns back.
    pub(super) fn uncount(&self, at: &[Instant]) {
        let mut calls = self.calls.lock();
        for at in at {
            if let Some(i) = calls.iter().position(|c| c == at) {
                calls.remove(i);
            }
        }
    }

    /// Whether an entry of the process waits now (for another process's
    /// login, a slot of the fleet, a 429's hold), or did within the last
    /// window (it took a turn): then every call before a login is sent
    /// takes its turn, a caller's first look too.
    pub(super) fn waiting(&self, budget: &str) -> bool {
        let now = Instant::now();
        let recent_turn = self
            .last_turn
            .lock()
            .is_some_and(|at| now.saturating_duration_since(at) < WINDOW);
        recent_turn || *self.waiters.lock() > 0 || self.closed(budget, now).is_some()
    }

    /// Marks an entry as waiting until the guard is dropped.
    pub(super) fn wait(self: &Arc<Self>) -> Waiting {
        *self.waiters.lock() += 1;
        Waiting(Arc::clone(self))
    }

    /// What the fleet said last about `budget`'s window, while it holds.
    pub(super) fn closed(&self, budget: &str, now: Instant) -> Option<Closed> {
        let mut closed = self.closed.lock();
        match closed.get(budget) {
            Some(c) if c.ask_again > now => Some(*c),
            Some(_) => {
                closed.remove(budget);
                None
            }
            None => None,
        }
    }

    /// The fleet said no slot of `budget` before `closed.ask_again`.
    pub(super) fn close(&self, budget: &str, closed: Closed) {
        let mut all = self.closed.lock();
        let keep = all
            .get(budget)
            .is_some_and(|c| c.ask_again > closed.ask_again);
        if !keep {
            all.insert(budget.to_owned(), closed);
        }
    }

    /// The fleet granted a slot of `budget`: others may ask again.
    pub(super) fn open(&self, budget: &str) {
        self.closed.lock().remove(budget);
    }

    /// Held while asking the store for a slot of `budget`.
    pub(super) fn asking(&self, budget: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.asking.lock().entry(budget.to_owned()).or_default())
    }
}

/// An entry waiting (see [`Pacer::wait`]).
pub(super) struct Waiting(Arc<Pacer>);

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiters = self.0.waiters.lock();
        *waiters = waiters.saturating_sub(1);
    }
}

/// The earliest time from `now` at which one more call keeps every window
/// of [`WINDOW`] to [`CALLS_PER_WINDOW`] calls, counting `calls` (sorted;
/// those that can no longer share a window with `now` are dropped).
fn next_free(calls: &mut Vec<Instant>, now: Instant) -> Instant {
    calls.retain(|at| now.saturating_duration_since(*at) < WINDOW);
    std::iter::once(now)
        .chain(calls.iter().map(|at| crate::clock::after(*at, WINDOW)))
        .filter(|t| *t >= now && windows_fit(calls, *t))
        .min()
        .unwrap_or_else(|| crate::clock::after(calls.last().copied().unwrap_or(now), WINDOW))
}

/// Whether adding `t` leaves no window of [`WINDOW`] holding more than
/// [`CALLS_PER_WINDOW`] calls that contains `t`.
fn windows_fit(calls: &[Instant], t: Instant) -> bool {
    let mut all: Vec<Instant> = calls.to_vec();
    all.push(t);
    all.sort();
    all.windows(CALLS_PER_WINDOW + 1).all(|w| {
        let (first, last) = (w[0], w[CALLS_PER_WINDOW]);
        !(first..=last).contains(&t) || last.saturating_duration_since(first) >= WINDOW
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_keep_to_two_calls_in_any_window() {
        let pacer = Pacer::new(true);
        let far = Instant::now() + Duration::from_secs(60);
        let mut at = Vec::new();
        for _ in 0..7 {
            assert!(pacer.turn(far).await);
            at.push(Instant::now());
        }
        for w in at.windows(CALLS_PER_WINDOW + 1) {
            assert!(w[CALLS_PER_WINDOW] - w[0] >= WINDOW, "{at:?}");
        }
        // Two at once, then one a window later: 7 calls take 3 windows.
        assert_eq!(at[6] - at[0], WINDOW * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn counted_calls_hold_back_turns_and_a_late_turn_is_refused() {
        let pacer = Pacer::new(true);
        pacer.count();
        pacer.count();
        let start = Instant::now();
        assert!(!pacer.turn(start + Duration::from_millis(500)).await);
        assert_eq!(Instant::now(), start, "a refused turn does not wait");
        assert!(pacer.turn(start + WINDOW).await);
        assert_eq!(Instant::now() - start, WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn uncounted_calls_hold_nothing_back() {
        let pacer = Pacer::new(true);
        let counted = [pacer.count(), pacer.count()];
        pacer.uncount(&counted);
        let start = Instant::now();
        assert!(pacer.turn(start).await);
        assert!(pacer.turn(start).await);
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_share_the_turns() {
        let pacer = Arc::new(Pacer::new(true));
        let far = Instant::now() + Duration::from_secs(60);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let pacer = Arc::clone(&pacer);
            tasks.spawn(async move {
                assert!(pacer.turn(far).await);
                Instant::now()
            });
        }
        let mut at = tasks.join_all().await;
        at.sort();
        for w in at.windows(CALLS_PER_WINDOW + 1) {
            assert!(w[CALLS_PER_WINDOW] - w[0] >= WINDOW, "{at:?}");
        }
        assert_eq!(at[9] - start, WINDOW * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_in_memory_is_not_paced() {
        let store: Arc<dyn TokenStore> = Arc::new(crate::store::MemoryTokenStore::new());
        let pacer = Pacer::for_store(&store);
        let start = Instant::now();
        for _ in 0..10 {
            assert!(pacer.turn(start).await);
        }
        assert_eq!(Instant::now(), start);
    }

    #[test]
    fn a_store_has_one_pacer_for_every_cache_on_it() {
        let store: Arc<dyn TokenStore> = Arc::new(crate::store::MemoryTokenStore::new());
        let other: Arc<dyn TokenStore> = Arc::new(crate::store::MemoryTokenStore::new());
        let one = Pacer::for_store(&store);
        assert!(Arc::ptr_eq(&one, &Pacer::for_store(&Arc::clone(&store))));
        assert!(!Arc::ptr_eq(&one, &Pacer::for_store(&other)));
    }

    #[test]
    fn the_fleets_last_word_holds_until_it_is_time_to_ask_again() {
        let pacer = Pacer::new(true);
        let now = Instant::now();
        let closed = Closed {
            ask_again: now + Duration::from_secs(1),
            slot: now + Duration::from_secs(9),
        };
        pacer.close("b", closed);
        assert_eq!(pacer.closed("b", now), Some(closed));
        assert!(pacer.waiting("b"));
        assert!(!pacer.waiting("other"));
        assert_eq!(pacer.closed("b", now + Duration::from_secs(1)), None);
        pacer.close("b", closed);
        pacer.open("b");
        assert_eq!(pacer.closed("b", now), None);
    }
}
