//! 401s a new token does not cure: what an entry has learned about the API
//! endpoints that rejected its tokens.
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
//!   token: for a while, its 401s are handed to the caller and nothing is
//!   invalidated;
//! - any other answer from the endpoint clears its record, so a real
//!   revocation (many requests with one revoked token) still costs exactly
//!   one login, also right after a rejection was learned elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::clock::after;

/// Default for [`TokenCacheBuilder::rejection_memory`](crate::TokenCacheBuilder::rejection_memory): 10 minutes.
pub const DEFAULT_REJECTION_MEMORY: Duration = Duration::from_secs(10 * 60);
/// Endpoints remembered per entry; past it, the oldest records are dropped.
const MAX_ENDPOINTS: usize = 64;

/// What to do about a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// About the token: invalidate it, and retry with a new one.
    Renew,
    /// Not about the token: hand the 401 to the caller, invalidate nothing.
    NotTheToken,
}

/// One entry's records, by endpoint.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    /// How many records there are, read without the lock on every answer.
    len: AtomicUsize,
    records: Mutex<HashMap<String, Record>>,
}

#[derive(Debug, Clone, Copy)]
enum Record {
    /// `token` was rejected here at `at`.
    Rejected { token: u64, at: Instant },
    /// Rejects every token; hand its 401s back until `until`.
    Learned { until: Instant },
}

impl Rejections {
    /// A 401 from `endpoint` to the token `token` (its identity).
    pub(crate) fn rejected(
        &self,
        endpoint: &str,
        token: u64,
        now: Instant,
        memory: Duration,
    ) -> Verdict {
        let mut records = self.records.lock();
        let verdict = match records.get(endpoint) {
            Some(Record::Learned { until }) if now < *until => Verdict::NotTheToken,
            Some(Record::Rejected { token: before, at })
                if *before != token && now < after(*at, memory) =>
            {
                records.insert(
                    endpoint.to_owned(),
                    Record::Learned {
                        until: after(now, memory),
                    },
                );
                Verdict::NotTheToken
            }
            _ => {
                records.insert(endpoint.to_owned(), Record::Rejected { token, at: now });
                Verdict::Renew
            }
        };
        if records.len() > MAX_ENDPOINTS {
            forget_oldest(&mut records, now);
        }
        self.len.store(records.len(), Ordering::Relaxed);
        verdict
    }

    /// Whether anything is recorded (one atomic load).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.len.load(Ordering::Relaxed) > 0
    }

    /// `endpoint` answered something other than 401: its rejections were
    /// about the token after all, or are over.
    pub(crate) fn accepted(&self, endpoint: &str) {
        if !self.any() {
            return;
        }
        let mut records = self.records.lock();
        if records.remove(endpoint).is_some() {
            self.len.store(records.len(), Ordering::Relaxed);
        }
    }
}

/// Drops expired records, then the oldest, down to the limit.
fn forget_oldest(records: &mut HashMap<String, Record>, now: Instant) {
    records.retain(|_, record| match record {
        Record::Learned { until } => now < *until,
        Record::Rejected { .. } => true,
    });
    while records.len() > MAX_ENDPOINTS {
        let oldest = records
            .iter()
            .map(|(endpoint, record)| {
                let at = match record {
                    Record::Rejected { at, .. } => *at,
                    Record::Learned { until } => *until,
                };
                (at, endpoint.clone())
            })
            .min();
        match oldest {
            Some((_, endpoint)) => records.remove(&endpoint),
            None => break,
        };
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
        assert_eq!(r.rejected("GET /x", 1, now, MEMORY), Verdict::Renew);
        // The same token again (a burst with one revoked token): still about it.
        assert_eq!(r.rejected("GET /x", 1, now, MEMORY), Verdict::Renew);
        // A new token rejected too: learned.
        assert_eq!(r.rejected("GET /x", 2, now, MEMORY), Verdict::NotTheToken);
        assert_eq!(r.rejected("GET /x", 3, now, MEMORY), Verdict::NotTheToken);
        // Other endpoints are not affected.
        assert_eq!(r.rejected("GET /y", 3, now, MEMORY), Verdict::Renew);
        // For a while only.
        tokio::time::advance(MEMORY).await;
        assert_eq!(
            r.rejected("GET /x", 3, Instant::now(), MEMORY),
            Verdict::Renew
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_accepted_call_clears_the_record_so_a_revocation_is_about_the_token_again() {
        let r = Rejections::default();
        let now = Instant::now();
        r.accepted("GET /x"); // nothing recorded: nothing happens
        assert_eq!(r.rejected("GET /x", 1, now, MEMORY), Verdict::Renew);
        r.accepted("GET /x");
        assert_eq!(r.len.load(Ordering::Relaxed), 0);
        // Token 2 revoked later: about the token, not learned.
        assert_eq!(r.rejected("GET /x", 2, now, MEMORY), Verdict::Renew);
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_bounded() {
        let r = Rejections::default();
        let now = Instant::now();
        for i in 0..200 {
            r.rejected(&format!("GET /e{i}"), 1, now, MEMORY);
        }
        assert!(r.records.lock().len() <= MAX_ENDPOINTS);
    }
}
