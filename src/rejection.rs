//! 401s a new token does not cure: what the cache has learned about the
//! API endpoints that rejected its tokens.
//!
//! A 401 usually means the token was revoked or expired: invalidate it, log
//! in again, retry once. But an endpoint can answer 401 to every token (the
//! client lacks a permission there); then each call would cost a login from
//! the budget every taxpayer shares. So each entry remembers, per endpoint,
//! which token was rejected last:
//!
//! - a 401 with the token rejected before, or at an endpoint with no record,
//!   is about the token: invalidate it and try a new one;
//! - a 401 with a *different* token at an endpoint that already rejected one
//!   teaches the entry that this endpoint's rejection is not about the
//!   token: its 401s are handed to the caller and nothing is invalidated,
//!   for `rejection_memory` after the last of them (so an endpoint that
//!   keeps rejecting costs one login however long it does);
//! - what an entry learned is taken by every other entry of the cache
//!   ([`Learned`]) for `rejection_memory` after it was learned: a
//!   permission the client ID lacks rejects every taxpayer's token, and
//!   learning it again per taxpayer would cost a login each. An entry that
//!   only follows the cache's record still tries a new token once its own
//!   token has been rejected there for a whole `rejection_memory` (a
//!   permission may be lacking for one taxpayer only, and another's token
//!   may really be revoked), and the cache's record is renewed only by an
//!   entry learning it anew. So a token really revoked is replaced once it
//!   has been rejected there for a whole `rejection_memory` (if its 401s
//!   there come further apart than that, at its next refresh at the
//!   latest), and each entry spends at most one login on such an endpoint
//!   while the rejections go on;
//! - an answer that shows the token got through (anything but 401, 407,
//!   408, 429 and 5xx, which a gateway may give before looking at it)
//!   clears the endpoint's records, so a real revocation (many requests
//!   with one revoked token) still costs exactly one login.
//!
//! Records are read without a lock (a snapshot), written under one, and
//! dropped when they end, so that once nothing is remembered an answer
//! costs two atomic loads again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::clock::after;

/// Default for [`TokenCacheBuilder::rejection_memory`](crate::TokenCacheBuilder::rejection_memory): 10 minutes.
pub const DEFAULT_REJECTION_MEMORY: Duration = Duration::from_secs(10 * 60);
/// Endpoints remembered per entry (and per cache); past it, the records
/// that end first are dropped.
const MAX_ENDPOINTS: usize = 64;

/// What to do about a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// About the token: invalidate it, and retry with a new one.
    Renew,
    /// Not about the token: hand the 401 to the caller, invalidate nothing.
    NotTheToken,
}

/// Whether an answer other than 401 shows that the token got through: a
/// proxy or gateway may answer 407, 408, 429 or 5xx before looking at it.
pub(crate) fn shows_token_got_through(status: http::StatusCode) -> bool {
    !(status == http::StatusCode::UNAUTHORIZED
        || status == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
        || status == http::StatusCode::REQUEST_TIMEOUT
        || status == http::StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error())
}

/// Records by endpoint, each with the instant it ends, at most
/// [`MAX_ENDPOINTS`]: read from a snapshot without a lock (on every answer
/// from the API), written under a lock; ended records are dropped.
#[derive(Debug)]
struct ByEndpoint<V> {
    snapshot: ArcSwap<HashMap<String, (V, Instant)>>,
    write: Mutex<()>,
}

impl<V> Default for ByEndpoint<V> {
    fn default() -> Self {
        ByEndpoint {
            snapshot: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
        }
    }
}

impl<V: Clone> ByEndpoint<V> {
    /// Whether anything is recorded (a snapshot load).
    #[inline]
    fn any(&self) -> bool {
        !self.snapshot.load().is_empty()
    }

    /// `endpoint`'s record, unless it has ended at `now`.
    fn get(&self, endpoint: &str, now: Instant) -> Option<V> {
        let snapshot = self.snapshot.load();
        let (value, ends) = snapshot.get(endpoint)?;
        (now < *ends).then(|| value.clone())
    }

    /// Changes the records with `change` (given a copy of them), drops
    /// those ended at `now` and, past the limit, those that end first.
    fn update<R>(
        &self,
        now: Instant,
        change: impl FnOnce(&mut HashMap<String, (V, Instant)>) -> R,
    ) -> R {
        let _writing = self.write.lock();
        let mut records = HashMap::clone(&self.snapshot.load());
        let result = change(&mut records);
        records.retain(|_, (_, ends)| now < *ends);
        while records.len() > MAX_ENDPOINTS {
            let Some(first) = records
                .iter()
                .min_by_key(|(_, (_, ends))| *ends)
                .map(|(endpoint, _)| endpoint.clone())
            else {
                break;
            };
            records.remove(&first);
        }
        self.snapshot.store(Arc::new(records));
        result
    }

    /// `endpoint` showed a token got through: its record goes, and so do
    /// records that have ended (so that `any` turns false again).
    fn accepted(&self, endpoint: &str, now: Instant) {
        let snapshot = self.snapshot.load();
        let stale =
            snapshot.contains_key(endpoint) || snapshot.values().any(|(_, ends)| now >= *ends);
        if stale {
            self.update(now, |records| {
                records.remove(endpoint);
            });
        }
    }
}

/// One entry's records, by endpoint.
#[derive(Debug, Default)]
pub(crate) struct Rejections(ByEndpoint<Record>);

#[derive(Debug, Clone, Copy)]
enum Record {
    /// `token` was rejected here, first at `since`.
    Rejected { token: u64, since: Instant },
    /// Rejects every token: hand its 401s back while the record lasts.
    Learned,
}

impl Rejections {
    /// A 401 from `endpoint` to the token `token` (its identity); `cache`
    /// is what the entries of the cache learned.
    pub(crate) fn rejected(
        &self,
        endpoint: &str,
        token: u64,
        now: Instant,
        memory: Duration,
        cache: &Learned,
    ) -> Verdict {
        let until = after(now, memory);
        let (verdict, learned_now) = self.0.update(now, |records| {
            let record = records
                .get(endpoint)
                .filter(|(_, ends)| now < *ends)
                .map(|(record, _)| *record);
            let (record, verdict, learned_now) = match record {
                // Learned here: it lasts while the 401s go on.
                Some(Record::Learned) => (Record::Learned, Verdict::NotTheToken, false),
                // A second token rejected: not about the token.
                Some(Record::Rejected { token: before, .. }) if before != token => {
                    (Record::Learned, Verdict::NotTheToken, true)
                }
                // The same token again: a burst with one revoked token, or
                // an endpoint the cache learned rejects every token. Follow
                // the cache, but not past a whole memory for one token.
                Some(Record::Rejected { since, .. }) => {
                    let follow = cache.holds(endpoint, now) && now < after(since, memory);
                    let verdict = if follow {
                        Verdict::NotTheToken
                    } else {
                        Verdict::Renew
                    };
                    (Record::Rejected { token, since }, verdict, false)
                }
                None => {
                    let verdict = if cache.holds(endpoint, now) {
                        Verdict::NotTheToken
                    } else {
                        Verdict::Renew
                    };
                    (Record::Rejected { token, since: now }, verdict, false)
                }
            };
            // A renewal starts the count again for the next token.
            let record = match (record, verdict) {
                (Record::Rejected { token, .. }, Verdict::Renew) => {
                    Record::Rejected { token, since: now }
                }
                (record, _) => record,
            };
            records.insert(endpoint.to_owned(), (record, until));
            (verdict, learned_now)
        });
        if learned_now {
            cache.learn(endpoint, now, until);
        }
        verdict
    }

    /// Whether anything is recorded (a snapshot load).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.0.any()
    }

    /// `endpoint` answered in a way that shows the token got through: its
    /// rejections were about the token after all, or are over.
    pub(crate) fn accepted(&self, endpoint: &str, now: Instant) {
        self.0.accepted(endpoint, now);
    }
}

/// The endpoints an entry of a cache learned reject every token: a 401
/// there is not about the token, for any taxpayer, until the endpoint
/// accepts a token again or `rejection_memory` passes since it was learned.
#[derive(Debug, Default)]
pub(crate) struct Learned(ByEndpoint<()>);

impl Learned {
    /// Whether `endpoint` is known to reject every token at `now`.
    fn holds(&self, endpoint: &str, now: Instant) -> bool {
        self.0.get(endpoint, now).is_some()
    }

    /// An entry learned that `endpoint` rejects every token: it holds until
    /// `until`.
    fn learn(&self, endpoint: &str, now: Instant, until: Instant) {
        self.0.update(now, |records| {
            records.insert(endpoint.to_owned(), ((), until));
        });
    }

    /// Whether anything is recorded (a snapshot load).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.0.any()
    }

    /// `endpoint` accepted a token: it does not reject every token.
    pub(crate) fn accepted(&self, endpoint: &str, now: Instant) {
        self.0.accepted(endpoint, now);
    }
}

/// The endpoint a request goes to, as remembered: its method and path, with
/// every path segment that holds a digit (an ID, a version) made alike, so
/// that `GET /api/v1.0/documents/{uuid}/raw` is one endpoint whatever the
/// document. The query is left out.
pub(crate) fn endpoint(method: &http::Method, path: &str) -> String {
    let mut key = String::with_capacity(method.as_str().len() + path.len() + 1);
    key.push_str(method.as_str());
    key.push(' ');
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            key.push('/');
        }
        if segment.bytes().any(|b| b.is_ascii_digit()) {
            key.push('*');
        } else {
            key.push_str(segment);
        }
    }
    key
}

#[cfg(test)]
mod tests;
