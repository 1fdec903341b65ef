//! [`Learned`]: what the entries of one cache know together about the
//! endpoints that answered 401: where a new token cured nothing (so a 401
//! there is not about the token, for every taxpayer, for
//! `rejection_memory` after it was learned), and where a renewal is
//! deciding that right now (so other taxpayers' 401s there wait for its
//! verdict instead of spending a login each).

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::records::ByKey;

/// What the cache learned about one endpoint template.
#[derive(Debug, Clone)]
pub(super) struct Known {
    /// The exact path where a new token cured nothing.
    pub(super) path: String,
    /// A token got through somewhere at the endpoint since.
    pub(super) accepted_since: bool,
    /// One renewal was tried since, to tell a revocation from the
    /// endpoint's own refusals: no more until the record ends.
    pub(super) revived: bool,
}

/// A renewal deciding whether an endpoint's 401s are about the token.
#[derive(Debug)]
struct Probe {
    /// The entry renewing (the address of its records).
    entry: usize,
    /// Given up on after this: its retry may never come.
    until: Instant,
    /// Set to `true` when the verdict is in.
    done: watch::Sender<bool>,
}

/// What the entries of one cache learned together (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Learned {
    templates: ByKey<Known>,
    probes: Mutex<HashMap<String, Probe>>,
}

impl Learned {
    /// Whether anything is known (a relaxed load). A renewal deciding
    /// shows in its own entry's records, which end it.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.templates.any()
    }

    /// What is known about `template` at `now`.
    pub(super) fn known(&self, template: &str, now: Instant) -> Option<Known> {
        self.templates.get(template, now)
    }

    /// A new token cured nothing at `path` of `template`: known until
    /// `until`. A revival spent in the memory that ends stays spent.
    pub(super) fn learn(&self, template: &str, path: &str, now: Instant, until: Instant) {
        self.templates.update(now, |records| {
            let revived = records
                .get(template)
                .is_some_and(|(known, _)| known.revived);
            let known = Known {
                path: path.to_owned(),
                accepted_since: false,
                revived,
            };
            records.insert(template.to_owned(), (known, until));
        });
    }

    /// A token got through at `path` of `template`. At the very path that
    /// taught the record, the endpoint accepts what it rejected: the record
    /// ends; elsewhere, its rejections depend on the path, and are noted.
    pub(super) fn accepted(&self, template: &str, path: &str, now: Instant) {
        let Some(known) = self.known(template, now) else {
            return;
        };
        if known.path == path {
            self.templates.remove(template, now);
        } else if !known.accepted_since {
            self.templates.update(now, |records| {
                if let Some((known, _)) = records.get_mut(template) {
                    known.accepted_since = true;
                }
            });
        }
    }

    /// Takes the one revival of `template`'s record, if it is not spent.
    pub(super) fn revive(&self, template: &str, now: Instant) -> bool {
        self.templates
            .update(now, |records| match records.get_mut(template) {
                Some((known, _)) if known.accepted_since && !known.revived => {
                    known.revived = true;
                    true
                }
                _ => false,
            })
    }

    /// Whether `entry` may renew at `template`: `None` when it may (it
    /// is now the renewal deciding there, until `until` at the latest, or
    /// already was); otherwise the verdict another entry's renewal there
    /// is deciding, to wait for, and when that renewal is given up on.
    /// One lock: two entries never both start deciding.
    pub(super) fn decide_or_wait(
        &self,
        template: &str,
        entry: usize,
        now: Instant,
        until: Instant,
    ) -> Option<(watch::Receiver<bool>, Instant)> {
        let mut probes = self.probes.lock();
        probes.retain(|_, probe| now < probe.until);
        let probe = probes.entry(template.to_owned()).or_insert_with(|| Probe {
            entry,
            until,
            done: watch::Sender::new(false),
        });
        (probe.entry != entry).then(|| (probe.done.subscribe(), probe.until))
    }

    /// `entry`'s renewal at `template` has its verdict: waiters look again.
    pub(super) fn decided(&self, template: &str, entry: usize) {
        let mut probes = self.probes.lock();
        if probes.get(template).is_some_and(|p| p.entry == entry) {
            if let Some(probe) = probes.remove(template) {
                probe.done.send_replace(true);
            }
        }
    }
}
