//! [`CacheStats`]: counters a caller can read to watch the cache and the
//! login budget at work.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreErrorKind;

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
    /// Token store calls that failed, by kind (the cache went on without
    /// the store each time).
    pub store_errors: StoreErrors,
}

/// Token store failures by [`StoreErrorKind`], from [`CacheStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreErrors {
    /// Out of reach (refused, dropped, or skipped after repeated failures).
    pub unreachable: u64,
    /// No answer in time.
    pub timeout: u64,
    /// Authentication or ACL refused (`WRONGPASS`, `NOAUTH`, `NOPERM`).
    pub auth: u64,
    /// TLS handshake failed (an unknown CA, …).
    pub tls: u64,
    /// A read-only replica answered (`READONLY`: a failover).
    pub read_only: u64,
    /// A script failed.
    pub script: u64,
    /// Anything else.
    pub other: u64,
}

impl StoreErrors {
    /// All failures, whatever their kind.
    pub fn total(&self) -> u64 {
        self.unreachable
            + self.timeout
            + self.auth
            + self.tls
            + self.read_only
            + self.script
            + self.other
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) logins: AtomicU64,
    pub(crate) logins_rate_limited: AtomicU64,
    pub(crate) logins_refused_by_budget: AtomicU64,
    pub(crate) refreshes_ahead: AtomicU64,
    pub(crate) answered_from_memory: AtomicU64,
    store_errors: [AtomicU64; StoreErrorKind::ALL.len()],
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn store_error(&self, kind: StoreErrorKind) {
        Self::bump(&self.store_errors[kind.index()]);
    }

    pub(crate) fn snapshot(&self, entries: usize) -> CacheStats {
        let errors = |kind: StoreErrorKind| self.store_errors[kind.index()].load(Ordering::Relaxed);
        CacheStats {
            logins: self.logins.load(Ordering::Relaxed),
            logins_rate_limited: self.logins_rate_limited.load(Ordering::Relaxed),
            logins_refused_by_budget: self.logins_refused_by_budget.load(Ordering::Relaxed),
            refreshes_ahead: self.refreshes_ahead.load(Ordering::Relaxed),
            answered_from_memory: self.answered_from_memory.load(Ordering::Relaxed),
            entries,
            store_errors: StoreErrors {
                unreachable: errors(StoreErrorKind::Unreachable),
                timeout: errors(StoreErrorKind::Timeout),
                auth: errors(StoreErrorKind::Auth),
                tls: errors(StoreErrorKind::Tls),
                read_only: errors(StoreErrorKind::ReadOnly),
                script: errors(StoreErrorKind::Script),
                other: errors(StoreErrorKind::Other),
            },
        }
    }
}
