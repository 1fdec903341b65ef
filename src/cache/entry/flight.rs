//! The one login in flight per entry, as its callers see it: where it
//! stands ([`Phase`]), told by the login task ([`Progress`]) over a `watch`
//! channel that every waiting caller holds a receiver of ([`Flight`]).
//!
//! The channel says where the login stands, so that a caller without a
//! token waits at most `max_login_wait` for it to be sent (a queued refresh
//! it joined may be waiting for a slot minutes away), and holds no timer
//! while it is sent: its own timeout bounds it then. (Under tokio's paused
//! test clock, a pending timer would let time jump during its I/O.)

use std::sync::Arc;

use tokio::sync::watch;

use crate::budget::Urgency;
use crate::error::Error;
use crate::token::AccessToken;

/// Where a login in flight stands.
#[derive(Debug, Clone)]
pub(super) enum Phase {
    /// Waiting for a slot from the login budget (or about to ask).
    Queued,
    /// Waiting for another process of the fleet, which is sending the login.
    AwaitingFleet,
    /// The login request is being sent.
    Sending,
    /// Finished.
    Done(Result<AccessToken, Error>),
}

impl Phase {
    /// Not yet sent by this process: the caller's `max_login_wait` bounds
    /// this, whatever the login waits for (a slot, or another process of
    /// the fleet, which may give up and leave the login queued again). Once
    /// sent, only the login timeout bounds it.
    pub(super) fn waiting(&self) -> bool {
        matches!(self, Phase::Queued | Phase::AwaitingFleet)
    }
}

/// How the login task tells its callers where it stands.
pub(super) struct Progress(pub(super) watch::Sender<Phase>);

impl Progress {
    pub(super) fn set(&self, phase: Phase) {
        self.0.send_replace(phase);
    }

    /// Whether the login waits for another process of the fleet.
    pub(super) fn awaiting_fleet(&self) -> bool {
        matches!(*self.0.borrow(), Phase::AwaitingFleet)
    }
}

/// The login in flight for an entry: where it stands, and how urgently it
/// needs a slot from the login budget.
pub(super) struct Flight {
    pub(super) rx: watch::Receiver<Phase>,
    pub(super) urgency: Arc<Urgency>,
}

impl Flight {
    /// A login is running while its task still holds the sender.
    pub(super) fn is_running(&self) -> bool {
        self.rx.has_changed().is_ok()
    }
}
