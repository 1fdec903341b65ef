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
mod tests {
    use super::*;

    const MEMORY: Duration = Duration::from_secs(600);
    const S: fn(u64) -> Duration = Duration::from_secs;

    impl Rejections {
        /// With a cache that has learned nothing else.
        fn alone(&self, endpoint: &str, token: u64, now: Instant) -> Verdict {
            self.rejected(endpoint, token, now, MEMORY, &Learned::default())
        }
    }

    #[test]
    fn endpoints_are_method_and_path_with_ids_made_alike() {
        let get = http::Method::GET;
        assert_eq!(
            endpoint(&get, "/api/v1.0/documents/F9D425P6DS7D8IU/raw"),
            "GET /api/*/documents/*/raw"
        );
        assert_eq!(
            endpoint(&get, "/api/v1.0/documents/ABCDE1/raw"),
            endpoint(&get, "/api/v1.0/documents/XYZ9/raw")
        );
        assert_ne!(
            endpoint(&get, "/api/v1.0/documenttypes"),
            endpoint(&http::Method::POST, "/api/v1.0/documenttypes")
        );
        assert_eq!(endpoint(&get, "/"), "GET /");
    }

    #[test]
    fn only_answers_past_the_token_check_clear_what_was_learned() {
        use http::StatusCode;
        for status in [200, 201, 204, 302, 400, 403, 404, 409, 422] {
            assert!(
                shows_token_got_through(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [401, 407, 408, 429, 500, 502, 503, 504] {
            assert!(
                !shows_token_got_through(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_token_rejected_at_one_endpoint_teaches_it_is_not_the_token() {
        let r = Rejections::default();
        let now = Instant::now();
        assert_eq!(r.alone("GET /x", 1, now), Verdict::Renew);
        // The same token again (a burst with one revoked token): still about it.
        assert_eq!(r.alone("GET /x", 1, now), Verdict::Renew);
        // A new token rejected too: learned.
        assert_eq!(r.alone("GET /x", 2, now), Verdict::NotTheToken);
        assert_eq!(r.alone("GET /x", 3, now), Verdict::NotTheToken);
        // Other endpoints are not affected.
        assert_eq!(r.alone("GET /y", 3, now), Verdict::Renew);
        // For a while only.
        tokio::time::advance(MEMORY).await;
        assert_eq!(r.alone("GET /x", 3, Instant::now()), Verdict::Renew);
    }

    #[tokio::test(start_paused = true)]
    async fn an_accepted_call_clears_the_record_so_a_revocation_is_about_the_token_again() {
        let r = Rejections::default();
        let now = Instant::now();
        r.accepted("GET /x", now); // nothing recorded: nothing happens
        assert_eq!(r.alone("GET /x", 1, now), Verdict::Renew);
        r.accepted("GET /x", now);
        assert!(!r.any());
        // Token 2 revoked later: about the token, not learned.
        assert_eq!(r.alone("GET /x", 2, now), Verdict::Renew);
    }

    #[tokio::test(start_paused = true)]
    async fn records_that_ended_are_dropped_so_answers_cost_nothing_again() {
        let (r, cache) = (Rejections::default(), Learned::default());
        let t0 = Instant::now();
        r.rejected("GET /x", 1, t0, MEMORY, &cache);
        r.rejected("GET /x", 2, t0, MEMORY, &cache);
        assert!(r.any() && cache.any());
        // Another endpoint answers, after the records ended: they go.
        let later = t0 + MEMORY;
        r.accepted("GET /other", later);
        cache.accepted("GET /other", later);
        assert!(!r.any() && !cache.any());
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_bounded() {
        let r = Rejections::default();
        let now = Instant::now();
        for i in 0..200 {
            r.alone(&format!("GET /e{i}"), 1, now);
        }
        assert!(r.0.snapshot.load().len() <= MAX_ENDPOINTS);
        let cache = Learned::default();
        for i in 0..200 {
            cache.learn(&format!("GET /e{i}"), now, now + MEMORY);
        }
        assert!(cache.0.snapshot.load().len() <= MAX_ENDPOINTS);
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_learned_lasts_while_the_rejections_go_on() {
        let r = Rejections::default();
        let cache = Learned::default();
        let t0 = Instant::now();
        assert_eq!(r.rejected("GET /x", 1, t0, MEMORY, &cache), Verdict::Renew);
        assert_eq!(
            r.rejected("GET /x", 2, t0, MEMORY, &cache),
            Verdict::NotTheToken
        );
        // A 401 every 5 minutes for an hour: learned all along.
        for i in 1..=12 {
            let now = t0 + S(300 * i);
            assert_eq!(
                r.rejected("GET /x", 2, now, MEMORY, &cache),
                Verdict::NotTheToken,
                "{i}"
            );
        }
        // Quiet for the whole memory: a 401 is about the token again.
        let later = t0 + S(3600) + MEMORY;
        assert_eq!(
            r.rejected("GET /x", 2, later, MEMORY, &cache),
            Verdict::Renew
        );
    }

    #[tokio::test(start_paused = true)]
    async fn what_one_entry_learned_every_entry_of_the_cache_takes_until_a_token_is_accepted() {
        let (a, b, c) = (
            Rejections::default(),
            Rejections::default(),
            Rejections::default(),
        );
        let cache = Learned::default();
        let now = Instant::now();
        assert_eq!(a.rejected("GET /x", 1, now, MEMORY, &cache), Verdict::Renew);
        assert_eq!(b.rejected("GET /x", 7, now, MEMORY, &cache), Verdict::Renew);
        assert_eq!(
            a.rejected("GET /x", 2, now, MEMORY, &cache),
            Verdict::NotTheToken
        );
        // b's next token, and c's first: no login spent.
        assert_eq!(
            b.rejected("GET /x", 8, now, MEMORY, &cache),
            Verdict::NotTheToken
        );
        assert_eq!(
            c.rejected("GET /x", 9, now, MEMORY, &cache),
            Verdict::NotTheToken
        );
        // Other endpoints are not affected.
        assert_eq!(c.rejected("GET /y", 9, now, MEMORY, &cache), Verdict::Renew);
        // The endpoint accepts a token: a 401 there is about the token again
        // for entries that learned nothing themselves.
        cache.accepted("GET /x", now);
        assert_eq!(c.rejected("GET /x", 9, now, MEMORY, &cache), Verdict::Renew);
        assert_eq!(
            a.rejected("GET /x", 2, now, MEMORY, &cache),
            Verdict::NotTheToken
        );
    }

    #[tokio::test(start_paused = true)]
    async fn following_the_cache_never_keeps_a_token_past_a_whole_memory() {
        // x learned that /e rejects every token of x; a's token is really
        // revoked, and a only calls /e. x goes on being rejected there.
        let (x, a, cache) = (
            Rejections::default(),
            Rejections::default(),
            Learned::default(),
        );
        let t0 = Instant::now();
        assert_eq!(x.rejected("GET /e", 1, t0, MEMORY, &cache), Verdict::Renew);
        assert_eq!(
            x.rejected("GET /e", 2, t0, MEMORY, &cache),
            Verdict::NotTheToken
        );
        let mut renewed = None;
        for minute in 1..=30 {
            let now = t0 + S(60 * minute);
            x.rejected("GET /e", 2, now, MEMORY, &cache);
            if a.rejected("GET /e", 5, now, MEMORY, &cache) == Verdict::Renew {
                renewed = Some(minute);
                break;
            }
        }
        // Its first 401 was at minute 1; renewed once it had been rejected
        // for a whole memory (x's 401s do not keep the cache's record alive).
        assert!(
            renewed.is_some_and(|m| m <= 11),
            "renewed at minute {renewed:?}"
        );
    }
}
