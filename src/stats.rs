//! [`CacheStats`]: counters a caller can read to watch the cache and the
//! login budget at work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;
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
    /// API calls [`AuthMiddleware`](crate::AuthMiddleware) sent again with a
    /// new token after a 401.
    pub retries_after_401: u64,
    /// 401s handed back to the caller because a new token would not cure
    /// them: the endpoint rejects every token (see
    /// [`TokenCache::rejected`](crate::TokenCache::rejected)), counted each
    /// time the cache answers so.
    pub handed_back_401s: u64,
    /// Entries currently cached (the plain login, once used, and each taxpayer).
    pub entries: usize,
    /// Token store calls that failed, by kind (the cache went on without
    /// the store each time). While the store is skipped after failures
    /// (`RedisTokenStore`'s pause after a failed connection, or its
    /// circuit breaker), the calls skipped in one such period count once,
    /// as one `unreachable`; a `SqliteTokenStore` counts each failure once
    /// until a call succeeds again (a damaged file, one `corrupt`): the
    /// counts say how often the store failed, not how many calls the
    /// cache made without it.
    pub store_errors: StoreErrors,
}

/// Token store failures by [`StoreErrorKind`], from [`CacheStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreErrors {
    /// Out of reach (refused, dropped), and each period Redis was skipped
    /// for after failures (once, however many calls it skipped).
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
    /// The store's data cannot be read (a damaged or truncated database
    /// file, or not a database).
    pub corrupt: u64,
    /// The store holds data this version cannot use (another application's
    /// database, or a newer version's).
    pub incompatible: u64,
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
            + self.corrupt
            + self.incompatible
            + self.other
    }
}

/// The cache's counters. Each event is counted here for [`CacheStats`] and,
/// with the `metrics` feature, reported through the `metrics` facade too
/// (see the `metrics` module).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    logins: AtomicU64,
    logins_rate_limited: AtomicU64,
    logins_refused_by_budget: AtomicU64,
    refreshes_ahead: AtomicU64,
    answered_from_memory: AtomicU64,
    retries_after_401: AtomicU64,
    handed_back_401s: AtomicU64,
    store_errors: [AtomicU64; StoreErrorKind::ALL.len()],
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// A login request is being sent.
    pub(crate) fn login_sent(&self) {
        bump(&self.logins);
        #[cfg(feature = "metrics")]
        crate::metrics::login_sent();
    }

    /// A login sent ended after `took`: its error, if it failed.
    pub(crate) fn login_ended(&self, took: Duration, error: Option<&Error>) {
        if let Some(Error::RateLimited { .. }) = error {
            bump(&self.logins_rate_limited);
        }
        #[cfg(feature = "metrics")]
        crate::metrics::login_ended(took, error);
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }

    /// The budget had no slot in time for a login.
    pub(crate) fn refused_by_budget(&self) {
        bump(&self.logins_refused_by_budget);
        #[cfg(feature = "metrics")]
        crate::metrics::refused_by_budget();
    }

    /// A background refresh started ahead of expiry.
    pub(crate) fn refresh_ahead(&self) {
        bump(&self.refreshes_ahead);
        #[cfg(feature = "metrics")]
        crate::metrics::refresh_ahead();
    }

    /// A call got a remembered login failure.
    pub(crate) fn answered_from_memory(&self) {
        bump(&self.answered_from_memory);
        #[cfg(feature = "metrics")]
        crate::metrics::answered_from_memory();
    }

    /// An API call is sent again with a new token after a 401.
    pub(crate) fn retry_after_401(&self) {
        bump(&self.retries_after_401);
        #[cfg(feature = "metrics")]
        crate::metrics::retry_after_401();
    }

    /// A 401 is handed back to the caller: a new token would not cure it.
    pub(crate) fn handed_back_401(&self) {
        bump(&self.handed_back_401s);
        #[cfg(feature = "metrics")]
        crate::metrics::handed_back_401();
    }

    /// A token store call failed.
    pub(crate) fn store_error(&self, kind: StoreErrorKind) {
        bump(&self.store_errors[kind.index()]);
        #[cfg(feature = "metrics")]
        crate::metrics::store_error(kind);
    }

    pub(crate) fn snapshot(&self, entries: usize) -> CacheStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let errors = |kind: StoreErrorKind| load(&self.store_errors[kind.index()]);
        CacheStats {
            logins: load(&self.logins),
            logins_rate_limited: load(&self.logins_rate_limited),
            logins_refused_by_budget: load(&self.logins_refused_by_budget),
            refreshes_ahead: load(&self.refreshes_ahead),
            answered_from_memory: load(&self.answered_from_memory),
            retries_after_401: load(&self.retries_after_401),
            handed_back_401s: load(&self.handed_back_401s),
            entries,
            store_errors: StoreErrors {
                unreachable: errors(StoreErrorKind::Unreachable),
                timeout: errors(StoreErrorKind::Timeout),
                auth: errors(StoreErrorKind::Auth),
                tls: errors(StoreErrorKind::Tls),
                read_only: errors(StoreErrorKind::ReadOnly),
                script: errors(StoreErrorKind::Script),
                corrupt: errors(StoreErrorKind::Corrupt),
                incompatible: errors(StoreErrorKind::Incompatible),
                other: errors(StoreErrorKind::Other),
            },
        }
    }
}
