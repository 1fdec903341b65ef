//! [`Rejections`]: what one entry's 401s taught it, and the verdict on
//! each 401 (see the module docs of `rejection` for the rules).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::cache::Learned;
use super::endpoint::Endpoint;
use super::records::ByKey;
use crate::clock::after;

/// Default for [`TokenCacheBuilder::rejection_memory`](crate::TokenCacheBuilder::rejection_memory): 10 minutes.
pub const DEFAULT_REJECTION_MEMORY: Duration = Duration::from_secs(10 * 60);

/// What to do about a 401.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// About the token: invalidate it, and retry with a new one.
    Renew,
    /// Not about the token: hand the 401 to the caller, invalidate nothing.
    NotTheToken,
    /// Another taxpayer's renewal at this endpoint is deciding: wait for
    /// its verdict (until the instant given at the latest), then ask again.
    Await(watch::Receiver<bool>, Instant),
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

/// A token of the entry rejected at an endpoint template: its renewal
/// there is deciding.
#[derive(Debug, Clone, Copy)]
struct Rejected {
    token: u64,
}

/// One entry's records: by endpoint template, the token whose renewal is
/// deciding; by exact path, the paths where the entry's new token was
/// rejected too (they reject every token, whatever the rest of the
/// endpoint does).
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    deciding: ByKey<Rejected>,
    paths: ByKey<()>,
}

impl Rejections {
    /// Names the entry to the cache's records.
    fn id(&self) -> usize {
        self as *const Self as usize
    }

    /// Whether anything is recorded (two relaxed loads).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.deciding.any() || self.paths.any()
    }

    /// A 401 from `endpoint` to the entry's token `token`; `cache` is what
    /// the cache's entries know together. A renewal started here is waited
    /// for by other entries for `decide_within` at most.
    pub(crate) fn rejected(
        &self,
        endpoint: &Endpoint,
        token: u64,
        now: Instant,
        memory: Duration,
        decide_within: Duration,
        cache: &Learned,
    ) -> Verdict {
        let until = after(now, memory);
        let (template, path) = (&endpoint.template, &endpoint.path);
        // A path that rejected a new token of this entry: it lasts while
        // its 401s go on.
        if self.paths.get(path, now).is_some() {
            self.paths.insert(path, (), now, until);
            return Verdict::NotTheToken;
        }
        match self.deciding.get(template, now) {
            // The renewal here cured nothing: the endpoint's 401s are not
            // about the token, for every entry of the cache.
            Some(Rejected { token: before }) if before != token => {
                self.deciding.remove(template, now);
                self.paths.insert(path, (), now, until);
                cache.learn(template, path, now, until);
                cache.decided(template, self.id());
                return Verdict::NotTheToken;
            }
            // The same token again: a burst with one token, whose renewal
            // is one login, shared.
            Some(_) if cache.known(template, now).is_none() => return Verdict::Renew,
            Some(_) => return Verdict::NotTheToken,
            None => {}
        }
        if cache.known(template, now).is_some() {
            // Known not to be about the token; but once a token got
            // through there since, one renewal per memory tells a
            // revocation from the endpoint's refusals.
            if !cache.revive(template, now) {
                return Verdict::NotTheToken;
            }
        } else if let Some((decided, by)) =
            cache.decide_or_wait(template, self.id(), now, after(now, decide_within))
        {
            return Verdict::Await(decided, by);
        }
        self.deciding
            .insert(template, Rejected { token }, now, until);
        Verdict::Renew
    }

    /// `endpoint` answered in a way that shows the entry's token got
    /// through: a renewal deciding there is over (it cured), and a path
    /// that rejected every token accepts one again.
    pub(crate) fn accepted(&self, endpoint: &Endpoint, now: Instant, cache: &Learned) {
        let (template, path) = (&endpoint.template, &endpoint.path);
        if self.deciding.get(template, now).is_some() {
            self.deciding.remove(template, now);
            cache.decided(template, self.id());
        }
        self.paths.remove(path, now);
        cache.accepted(template, path, now);
    }

    #[cfg(test)]
    pub(super) fn paths_len(&self) -> usize {
        self.paths.len()
    }
}
