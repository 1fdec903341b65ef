//! [`CacheStats`]: counters a caller can read to watch the cache and the
//! login budget at work.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a [`TokenCache`](crate::TokenCache)'s counters, from
/// [`TokenCache::stats`](crate::TokenCache::stats). Counts are since the
/// cache was built, over all its clones.
///
/// ```
/// # use myinvois_auth::{Credentials, TokenCache};
/// # let cache = TokenCache::builder(Credentials::new("id", "s")).identity_url("http://127.0.0.1:9").build()?;
/// let stats = cache.stats();
/// assert_eq!(stats.logins, 0);
/// assert_eq!(stats.entries, 0);
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Login requests sent to the identity service.
    pub logins: u64,
    /// Logins the identity service refused with HTTP 429.
    pub logins_rate_limited: u64,
    /// Logins not sent because the login budget had no slot in time (the
    /// caller got [`Error::RateLimited`](crate::Error::RateLimited)).
    pub logins_refused_by_budget: u64,
    /// Background refreshes started ahead of expiry.
    pub refreshes_ahead: u64,
    /// Calls answered with a remembered login failure instead of a login
    /// (see [`login_error_backoff`](crate::TokenCacheBuilder::login_error_backoff)).
    pub answered_from_memory: u64,
    /// Entries currently cached (the plain login, once used, and each taxpayer).
    pub entries: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) logins: AtomicU64,
    pub(crate) logins_rate_limited: AtomicU64,
    pub(crate) logins_refused_by_budget: AtomicU64,
    pub(crate) refreshes_ahead: AtomicU64,
    pub(crate) answered_from_memory: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, entries: usize) -> CacheStats {
        CacheStats {
            logins: self.logins.load(Ordering::Relaxed),
            logins_rate_limited: self.logins_rate_limited.load(Ordering::Relaxed),
            logins_refused_by_budget: self.logins_refused_by_budget.load(Ordering::Relaxed),
            refreshes_ahead: self.refreshes_ahead.load(Ordering::Relaxed),
            answered_from_memory: self.answered_from_memory.load(Ordering::Relaxed),
            entries,
        }
    }
}
