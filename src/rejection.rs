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
//! - what one entry learned is taken by every other entry of the cache
//!   ([`Learned`]): a permission the client ID lacks rejects every
//!   taxpayer's token, and learning it again per taxpayer would cost a
//!   login each (700 taxpayers: an hour of the budget);
//! - any other answer from the endpoint clears its records (the entry's and
//!   the cache's), so a real revocation (many requests with one revoked
//!   token) still costs exactly one login, also right after a rejection was
//!   learned elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::clock::after;

/// Default for [`TokenCacheBuilder::rejection_memory`](crate::TokenCacheBuilder::rejection_memory): 10 minutes.
pub const DEFAULT_REJECTION_MEMORY: Duration = Duration::from_secs(10 * 60);
/// Endpoints remembered per entry (and per cache); past it, the oldest
/// records are dropped.
const MAX_ENDPOINTS: usize = 64;

/// What to do about a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// About the token: invalidate it, and retry with a new one.
    Renew,
    /// Not about the token: hand the 401 to the caller, invalidate nothing.
    NotTheToken,
}

/// Records by endpoint, at most [`MAX_ENDPOINTS`], with their number
/// readable without the lock (on every answer from the API).
#[derive(Debug)]
struct ByEndpoint<V> {
    len: AtomicUsize,
    map: Mutex<HashMap<String, V>>,
}

impl<V> Default for ByEndpoint<V> {
    fn default() -> Self {
        ByEndpoint {
            len: AtomicUsize::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<V> ByEndpoint<V> {
    /// Whether anything is recorded (one atomic load).
    #[inline]
    fn any(&self) -> bool {
        self.len.load(Ordering::Relaxed) > 0
    }

    /// Changes the records with `change`; past the limit, drops those that
    /// ended (by `ends`) at `now`, then the oldest to end.
    fn update<R>(
        &self,
        now: Instant,
        ends: impl Fn(&V) -> Instant,
        change: impl FnOnce(&mut HashMap<String, V>) -> R,
    ) -> R {
        let mut map = self.map.lock();
        let result = change(&mut map);
        if map.len() > MAX_ENDPOINTS {
            map.retain(|_, v| now < ends(v));
            while map.len() > MAX_ENDPOINTS {
                let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, v)| ends(v))
                    .map(|(e, _)| e.clone())
                else {
                    break;
                };
                map.remove(&oldest);
            }
        }
        self.len.store(map.len(), Ordering::Relaxed);
        result
    }

    /// Forgets `endpoint`'s record.
    fn remove(&self, endpoint: &str) {
        if !self.any() {
            return;
        }
        let mut map = self.map.lock();
        if map.remove(endpoint).is_some() {
            self.len.store(map.len(), Ordering::Relaxed);
        }
    }
}

/// One entry's records, by endpoint.
#[derive(Debug, Default)]
pub(crate) struct Rejections(ByEndpoint<Record>);

#[derive(Debug, Clone, Copy)]
enum Record {
    /// `token` was rejected here at `at`.
    Rejected { token: u64, at: Instant },
    /// Rejects every token; hand its 401s back until `until`.
    Learned { until: Instant },
}

impl Record {
    /// When it stops counting.
    fn ends(&self, memory: Duration) -> Instant {
        match *self {
            Record::Rejected { at, .. } => after(at, memory),
            Record::Learned { until } => until,
        }
    }
}

impl Rejections {
    /// A 401 from `endpoint` to the token `token` (its identity); `cache`
    /// is what every entry of the cache learned.
    pub(crate) fn rejected(
        &self,
        endpoint: &str,
        token: u64,
        now: Instant,
        memory: Duration,
        cache: &Learned,
    ) -> Verdict {
        let until = after(now, memory);
        let verdict = self.0.update(
            now,
            |record| record.ends(memory),
            |records| {
                let learned_here = match records.get(endpoint) {
                    Some(Record::Learned { until }) => now < *until,
                    Some(Record::Rejected { token: before, at }) => {
                        *before != token && now < after(*at, memory)
                    }
                    None => false,
                };
                if learned_here {
                    records.insert(endpoint.to_owned(), Record::Learned { until });
                    return Verdict::NotTheToken;
                }
                // Remember this token, in case the next 401 here comes with another.
                records.insert(endpoint.to_owned(), Record::Rejected { token, at: now });
                if cache.holds(endpoint, now) {
                    Verdict::NotTheToken
                } else {
                    Verdict::Renew
                }
            },
        );
        if verdict == Verdict::NotTheToken {
            cache.learn(endpoint, now, until);
        }
        verdict
    }

    /// Whether anything is recorded (one atomic load).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.0.any()
    }

    /// `endpoint` answered something other than 401: its rejections were
    /// about the token after all, or are over.
    pub(crate) fn accepted(&self, endpoint: &str) {
        self.0.remove(endpoint);
    }
}

/// The endpoints that rejected every token lately, learned by any entry of
/// a cache: a 401 there is not about the token, for any taxpayer, until the
/// endpoint accepts a token again or `rejection_memory` passes without a 401.
#[derive(Debug, Default)]
pub(crate) struct Learned(ByEndpoint<Instant>);

impl Learned {
    /// Whether `endpoint` is known to reject every token at `now`.
    fn holds(&self, endpoint: &str, now: Instant) -> bool {
        self.0.any() && self.0.map.lock().get(endpoint).is_some_and(|u| now < *u)
    }

    /// `endpoint` rejected a token that a new one would not replace: it
    /// holds until `until` at least.
    fn learn(&self, endpoint: &str, now: Instant, until: Instant) {
        self.0.update(
            now,
            |u| *u,
            |map| {
                let held = map.entry(endpoint.to_owned()).or_insert(until);
                *held = (*held).max(until);
            },
        );
    }

    /// Whether anything is recorded (one atomic load).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.0.any()
    }

    /// `endpoint` accepted a token: it does not reject every token.
    pub(crate) fn accepted(&self, endpoint: &str) {
        self.0.remove(endpoint);
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
        r.accepted("GET /x"); // nothing recorded: nothing happens
        assert_eq!(r.alone("GET /x", 1, now), Verdict::Renew);
        r.accepted("GET /x");
        assert!(!r.any());
        // Token 2 revoked later: about the token, not learned.
        assert_eq!(r.alone("GET /x", 2, now), Verdict::Renew);
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_bounded() {
        let r = Rejections::default();
        let now = Instant::now();
        for i in 0..200 {
            r.alone(&format!("GET /e{i}"), 1, now);
        }
        assert!(r.0.map.lock().len() <= MAX_ENDPOINTS);
        let cache = Learned::default();
        for i in 0..200 {
            cache.learn(&format!("GET /e{i}"), now, now + MEMORY);
        }
        assert!(cache.0.map.lock().len() <= MAX_ENDPOINTS);
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
            let now = t0 + Duration::from_secs(300 * i);
            assert_eq!(
                r.rejected("GET /x", 2, now, MEMORY, &cache),
                Verdict::NotTheToken,
                "{i}"
            );
        }
        // Quiet for the whole memory: a 401 is about the token again.
        let later = t0 + Duration::from_secs(3600) + MEMORY;
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
            b.rejected("GET /x", 7, now, MEMORY, &cache),
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
        cache.accepted("GET /x");
        assert_eq!(c.rejected("GET /x", 9, now, MEMORY, &cache), Verdict::Renew);
        assert_eq!(
            a.rejected("GET /x", 2, now, MEMORY, &cache),
            Verdict::NotTheToken
        );
    }
}
