//! The store's health as its callers see it. A failure is reported once
//! per episode: the first call that meets it gets it as is (the cache
//! counts it and logs one warning naming its class, its kind); later calls
//! that meet a failure of the same kind get it marked as a repeat, until a
//! call succeeds. A
//! file that stays bad, or busy several times in a row, is skipped for a
//! while: calls fail at once, without a trip to the store's thread, and
//! [`is_skipping`](Health::is_skipping) tells the cache to keep to its
//! share of the login budget meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::classify::Lasting;
use crate::store::StoreError;

/// How long a file that failed for good, or stayed busy, is skipped.
pub(super) const SKIP_FOR: Duration = Duration::from_secs(5);
/// Busy failures in a row after which the file is skipped.
const BUSY_TO_SKIP: u32 = 3;

pub(super) struct Health {
    base: Instant,
    /// Until when the file is skipped, in ms since `base` (0: it is not).
    skip_until: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The failure of the current episode, and whether a caller was told.
    failure: Option<(StoreError, bool)>,
    /// Busy failures in a row.
    busy: u32,
}

/// Whether two failures are of one class (told once): a busy file and a
/// call that found no answer in time are both the file not answering.
fn same(a: &StoreError, b: &StoreError) -> bool {
    a.kind() == b.kind()
}

impl Health {
    pub(super) fn new() -> Self {
        Health {
            base: Instant::now(),
            skip_until: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether the file is being skipped now. Two atomic reads at most.
    pub(super) fn is_skipping(&self) -> bool {
        let until = self.skip_until.load(Ordering::Relaxed);
        until != 0 && self.since_base(Instant::now()) < until
    }

    /// The failure to answer with while the file is skipped.
    pub(super) fn skipped(&self) -> Option<StoreError> {
        if !self.is_skipping() {
            return None;
        }
        self.state.lock().failure.as_ref().map(|(f, _)| f.clone())
    }

    /// The store's thread met `error`, which lasts as `lasting` says.
    pub(super) fn failed(&self, error: &StoreError, lasting: Lasting) {
        let mut state = self.state.lock();
        if !state.failure.as_ref().is_some_and(|(f, _)| same(f, error)) {
            state.failure = Some((error.clone(), false));
        }
        let skip = match lasting {
            Lasting::Yes => true,
            Lasting::Busy => {
                state.busy += 1;
                state.busy >= BUSY_TO_SKIP
            }
            Lasting::No => false,
        };
        if skip {
            state.busy = 0;
            let until = self.since_base(Instant::now() + SKIP_FOR);
            self.skip_until.store(until, Ordering::Relaxed);
        }
    }

    /// A call succeeded: the episode, if any, is over.
    pub(super) fn succeeded(&self) {
        let mut state = self.state.lock();
        state.busy = 0;
        if state.failure.take().is_some_and(|(_, told)| told) {
            tracing::info!("the token store's file works again");
        }
        self.skip_until.store(0, Ordering::Relaxed);
    }

    /// What a caller is told of `error`: as is the first time in its
    /// episode, marked as a repeat after that.
    pub(super) fn report(&self, error: StoreError) -> StoreError {
        let mut state = self.state.lock();
        match &mut state.failure {
            Some((failure, told)) if same(failure, &error) => {
                if std::mem::replace(told, true) {
                    error.repeated()
                } else {
                    error
                }
            }
            _ => {
                state.failure = Some((error.clone(), true));
                error
            }
        }
    }
}
