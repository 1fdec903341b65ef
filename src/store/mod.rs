//! Token stores: where a cache shares tokens, logins and the login budget
//! beyond its own process.
//!
//! Every cache keeps its entries in memory in front of the store: the hot
//! path never touches the store while a local token is valid. The store is
//! consulted only by a login task, on a local miss or a refresh:
//!
//! 1. **load** a token another process may already hold for the entry;
//! 2. otherwise take the entry's **lock**, so one process in the fleet logs
//!    in per key while the others wait for the token to appear (polling
//!    only the lock, [`lock_left`](TokenStore::lock_left), until it is gone;
//!    a lock held for a whole lock TTL is no live login's, and is taken
//!    over: [`take_over_lock`](TokenStore::take_over_lock));
//! 3. **reserve** a fleet-wide login slot (the client ID's budget: at most
//!    `count` logins in any window, across all processes), log in, **save**
//!    the token until it expires;
//! 4. on a 429, **block** logins fleet-wide for its `Retry-After`.
//!
//! A store that fails or answers slowly is never fatal: the cache logs a
//! warning and carries on as a single process would.
//!
//! [`MemoryTokenStore`] is the default; `SqliteTokenStore` (cargo feature
//! `sqlite`) shares among the processes of one host through a database
//! file; `RedisTokenStore` (cargo feature `redis`) across processes and hosts.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

mod error;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "redis")]
pub use self::redis::{RedisTokenStore, DEFAULT_PREFIX as DEFAULT_REDIS_PREFIX};
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteTokenStore;
pub use error::{StoreError, StoreErrorKind};
pub use memory::MemoryTokenStore;

/// How long a fresh login reservation may still be given back (a process
/// gives one back right after its lock attempt and one load: milliseconds,
/// or two store calls at worst on a slow link). Stores that share a budget
/// answer [`LoginSlot::Pending`] while a full window holds one.
#[cfg(any(feature = "redis", feature = "sqlite"))]
pub(crate) const RESERVATION_PENDING: Duration = Duration::from_millis(1000);
/// How soon to ask again while the window's fullness may be such pending
/// reservations.
#[cfg(any(feature = "redis", feature = "sqlite"))]
pub(crate) const RESERVATION_POLL: Duration = Duration::from_millis(100);

/// A token as kept in a store: never the client secret.
///
/// A token read from a store passes the same checks as one fresh from the
/// identity service (not empty, a valid header value, a lifetime of at most
/// [`MAX_TOKEN_LIFETIME`](crate::MAX_TOKEN_LIFETIME)), is not issued in the
/// future, and is trusted for no longer than the store says is left: a
/// token that fails is ignored with a warning, and a login happens instead.
///
/// `#[non_exhaustive]`: a store builds one with [`StoredToken::new`], so
/// that a field added later breaks no store.
///
/// ```compile_fail,E0639
/// # use std::time::Duration;
/// # let now = chrono::Utc::now();
/// let token = myinvois_auth::StoredToken {
///     access_token: "eyJ…".into(),
///     issued_at: now,
///     expires_at: now,
///     scope: None,
///     remaining: Duration::ZERO,
/// };
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredToken {
    /// The access token.
    pub access_token: String,
    /// When it was issued (the issuing process's local send time, by that
    /// host's wall clock: only checked for sanity, never used for expiry).
    pub issued_at: DateTime<Utc>,
    /// When it expires, by the same clock; `expires_at - issued_at` is its lifetime.
    pub expires_at: DateTime<Utc>,
    /// The scope granted, if the identity service said.
    pub scope: Option<String>,
    /// How long it has left. On [`save`](TokenStore::save), by the saving
    /// process's clock: keep it for this long. On [`load`](TokenStore::load),
    /// as the store counts it (Redis: the key's remaining TTL), so that no
    /// host's wall clock decides when a shared token expires.
    pub remaining: Duration,
}

impl StoredToken {
    /// A token issued at `issued_at`, expiring at `expires_at`, with
    /// `remaining` left (see the fields), and no scope.
    ///
    /// ```
    /// use std::time::Duration;
    /// use chrono::{TimeDelta, Utc};
    /// use myinvois_auth::StoredToken;
    ///
    /// let issued_at = Utc::now();
    /// let token = StoredToken::new(
    ///     "eyJhbGciOi…",
    ///     issued_at,
    ///     issued_at + TimeDelta::hours(1),
    ///     Duration::from_secs(3600),
    /// )
    /// .with_scope(Some("InvoicingAPI".to_owned()));
    /// assert_eq!(token.scope.as_deref(), Some("InvoicingAPI"));
    /// assert_eq!(token.remaining, Duration::from_secs(3600));
    /// ```
    pub fn new(
        access_token: impl Into<String>,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        remaining: Duration,
    ) -> Self {
        StoredToken {
            access_token: access_token.into(),
            issued_at,
            expires_at,
            scope: None,
            remaining,
        }
    }

    /// The same token, with the scope granted (as the store kept it).
    pub fn with_scope(mut self, scope: Option<String>) -> Self {
        self.scope = scope;
        self
    }
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// What [`TokenStore::reserve_login`] is asked for: a slot in a window of
/// `window` holding at most `count` logins, fleet-wide.
///
/// `#[non_exhaustive]`: built with [`SlotRequest::new`] (a store's own
/// tests need one), so that a field added later breaks no store.
///
/// ```compile_fail,E0639
/// # use std::time::Duration;
/// let request = myinvois_auth::SlotRequest {
///     count: 12,
///     window: Duration::from_secs(60),
///     pace: None,
///     id: "one".into(),
/// };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotRequest {
    /// At most this many logins in any window.
    pub count: u32,
    /// The window's length (the budget's period plus its jitter margin).
    pub window: Duration,
    /// For a background refresh: keep at least this long after the last
    /// paced login (refreshes spread evenly; callers without a token don't wait).
    pub pace: Option<Duration>,
    /// Names this reservation, so that [`release_login`](TokenStore::release_login)
    /// can give it back if the login is never sent.
    pub id: String,
}

impl SlotRequest {
    /// A slot in a window of `window` holding at most `count` logins, the
    /// reservation named `id`; not paced.
    ///
    /// ```
    /// use std::time::Duration;
    /// use myinvois_auth::SlotRequest;
    ///
    /// let request = SlotRequest::new(12, Duration::from_secs(60), "host-1-42")
    ///     .paced(Duration::from_secs(5));
    /// assert_eq!(request.pace, Some(Duration::from_secs(5)));
    /// assert_eq!(request.id, "host-1-42");
    /// ```
    pub fn new(count: u32, window: Duration, id: impl Into<String>) -> Self {
        SlotRequest {
            count,
            window,
            pace: None,
            id: id.into(),
        }
    }

    /// The same request for a background refresh: at least `pace` after
    /// the last paced login.
    pub fn paced(mut self, pace: Duration) -> Self {
        self.pace = Some(pace);
        self
    }
}

/// The answer to [`TokenStore::reserve_login`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginSlot {
    /// Reserved now: log in.
    Granted,
    /// No slot now; the earliest one may free this far away (ask again then).
    Wait(Duration),
    /// No slot now, but the window is full of reservations so fresh that
    /// some may still be given back (their processes found the entry
    /// locked by another, or its token shared): ask again after
    /// `ask_again`. If none is given back, the earliest slot frees after
    /// `wait`: what a caller that cannot wait for `ask_again` is told.
    Pending {
        /// When to ask again.
        ask_again: Duration,
        /// When a slot frees if no reservation is given back.
        wait: Duration,
    },
}

/// What a store holds for a key: the token, if any, and whether a login
/// (another process's, or another task's) holds the key's lock.
///
/// `#[non_exhaustive]`: built with [`Loaded::new`] or [`Loaded::empty`],
/// so that a field added later breaks no store.
///
/// ```compile_fail,E0639
/// let loaded = myinvois_auth::Loaded { token: None, locked: None };
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loaded {
    /// The unexpired token, with [`remaining`](StoredToken::remaining)
    /// counted by the store's own clock.
    pub token: Option<StoredToken>,
    /// While the key's login lock is held, how long it has left at most:
    /// a waiting process looks again when it expires (its holder may have
    /// died) rather than polling faster.
    pub locked: Option<Duration>,
}

impl Loaded {
    /// What a store holds for a key: `token` (the unexpired one, if any)
    /// and, while the key's login lock is held, how long it has left.
    ///
    /// ```
    /// use std::time::Duration;
    /// use myinvois_auth::Loaded;
    ///
    /// let locked = Loaded::new(None, Some(Duration::from_secs(20)));
    /// assert_eq!(locked.locked, Some(Duration::from_secs(20)));
    /// assert_eq!(Loaded::empty(), Loaded::new(None, None));
    /// ```
    pub fn new(token: Option<StoredToken>, locked: Option<Duration>) -> Self {
        Loaded { token, locked }
    }

    /// Nothing stored under the key, and its lock free.
    pub fn empty() -> Self {
        Loaded::default()
    }
}

/// Where caches share tokens, logins and the login budget. See the module
/// docs for the protocol; keys are opaque hashes made by the cache.
///
/// Implementations must be safe to call concurrently from many tasks and
/// processes, and should answer quickly: the cache gives each call a short
/// timeout and treats a slow answer like a failure.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The unexpired token stored under `key`, if any, with
    /// [`remaining`](StoredToken::remaining) counted by the store's own
    /// clock, and whether the key's login lock is held. Waiting processes
    /// poll this: it should be one round trip.
    async fn load(&self, key: &str) -> Result<Loaded, StoreError>;

    /// While the login lock of `key` is held, how long it has left at most;
    /// `None` when it is free. A process waiting for another's login polls
    /// this (and [`load`](Self::load)s once the lock is gone), so it should
    /// be as cheap as the store allows: `RedisTokenStore` sends one `PTTL`.
    /// The default asks `load`.
    async fn lock_left(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        Ok(self.load(key).await?.locked)
    }

    /// Stores `token` under `key` for [`remaining`](StoredToken::remaining).
    async fn save(&self, key: &str, token: &StoredToken) -> Result<(), StoreError>;

    /// Takes the login lock of `key` for `owner`, for at most `ttl`.
    /// Returns false when another owner holds it.
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Releases the lock of `key` if `owner` still holds it.
    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError>;

    /// Takes the login lock of `key` for `owner`, for at most `ttl`, as
    /// [`try_lock`](Self::try_lock) does, and also when another owner holds
    /// it without a TTL or with more than `ttl` left: a lock no live login
    /// with these settings holds (a restored dump, a `PERSIST`, another
    /// tool). The cache asks this only of a lock it has watched for a whole
    /// `ttl`, so a lock never strands an entry for longer. Returns false
    /// when another owner holds it with at most `ttl` left.
    ///
    /// The default asks [`try_lock`](Self::try_lock): such a lock then
    /// strands the entry until it expires.
    async fn take_over_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.try_lock(key, owner, ttl).await
    }

    /// Reserves a login slot of `budget` now if the window has room (and,
    /// for a paced request, the pace allows), atomically across processes
    /// and by the store's own clock; otherwise says how long until one may free.
    ///
    /// The default shares no budget: it always grants, leaving the limit to
    /// the cache's own (process-wide) budget, as [`MemoryTokenStore`] does.
    async fn reserve_login(
        &self,
        budget: &str,
        request: &SlotRequest,
    ) -> Result<LoginSlot, StoreError> {
        let _ = (budget, request);
        Ok(LoginSlot::Granted)
    }

    /// Gives back the reservation `id` of `budget`: its login was never sent.
    /// The default does nothing.
    async fn release_login(&self, budget: &str, id: &str) -> Result<(), StoreError> {
        let _ = (budget, id);
        Ok(())
    }

    /// No login slot of `budget` before `duration` from now (a 429 was seen).
    /// The default does nothing (the cache's own budget is blocked anyway).
    async fn block_logins(&self, budget: &str, duration: Duration) -> Result<(), StoreError> {
        let _ = (budget, duration);
        Ok(())
    }

    /// Whether the store is worth asking now: `false` while it is known to
    /// be out of reach (a `RedisTokenStore` skips Redis for a few seconds
    /// after repeated failures). The cache then keeps to its
    /// [fleet share](crate::TokenCacheBuilder::fleet_size) of the login
    /// budget. Must be cheap; the default is `true`.
    fn is_available(&self) -> bool {
        true
    }

    /// Whether each call is a round trip to a server the fleet shares (the
    /// default): while the cache waits (for another process's login, a
    /// slot of the fleet's budget, a 429's hold), it then asks such a store
    /// at most twice a second, however many of its entries wait. A store
    /// that answers from this process's memory, as [`MemoryTokenStore`]
    /// does, returns `false`: asking it costs nothing.
    fn is_remote(&self) -> bool {
        true
    }

    /// Checks that the store can be used: reachable, authenticated, allowed
    /// to run what the cache needs. For a readiness probe; the cache itself
    /// never needs it. The default succeeds.
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The token store a variable names (`MYINVOIS_TOKEN_STORE`): a
/// `SqliteTokenStore` on that file; none when unset or empty. Without the
/// `sqlite` feature, a set variable is refused rather than ignored: the
/// processes it was meant to share among would each spend logins alone.
pub(crate) fn from_env(
    name: &'static str,
    value: Option<std::ffi::OsString>,
) -> Result<Option<std::sync::Arc<dyn TokenStore>>, crate::Error> {
    let Some(value) = value else {
        return Ok(None);
    };
    // Surrounding whitespace (a file's newline) is never part of a path.
    let path = match value.to_str() {
        Some(text) => std::ffi::OsString::from(text.trim()),
        None => value,
    };
    if path.is_empty() {
        return Ok(None);
    }
    #[cfg(feature = "sqlite")]
    {
        let _ = name;
        Ok(Some(std::sync::Arc::new(SqliteTokenStore::new(path))))
    }
    #[cfg(not(feature = "sqlite"))]
    Err(crate::Error::Environment {
        name,
        problem: crate::EnvProblem::NeedsFeature("sqlite"),
    })
}

/// The store key of an entry: a hash, so that identity URL, client ID, scope
/// and taxpayer never appear in the store in clear.
pub(crate) fn entry_key(
    identity: &str,
    client_id: &str,
    scope: Option<&str>,
    taxpayer: Option<&str>,
) -> String {
    hash(&[
        identity,
        client_id,
        scope.unwrap_or(""),
        taxpayer.unwrap_or(""),
    ])
}

/// The store key of a client ID's login budget.
pub(crate) fn budget_key(identity: &str, client_id: &str) -> String {
    hash(&[identity, client_id])
}

/// SHA-256 over the length-prefixed parts, in hex. The keys existing
/// fleets hold are these: whatever computes the digest must not change them.
fn hash(parts: &[&str]) -> String {
    let mut hasher = hmac_sha256::Hash::new();
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A unique lock owner for one login attempt of this process.
pub(crate) fn lock_owner() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PROCESS: OnceLock<String> = OnceLock::new();
    let process = PROCESS.get_or_init(|| {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        format!("{}-{nanos:x}", std::process::id())
    });
    format!("{process}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Unused entries of a map of expiring values, dropped lazily.
pub(crate) fn drop_expired<V>(map: &mut HashMap<String, (V, Instant)>, now: Instant) {
    map.retain(|_, (_, until)| *until > now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashes_that_separate_every_part() {
        let k = entry_key("https://id", "client", Some("InvoicingAPI"), Some("C1"));
        assert_eq!(k.len(), 64);
        assert!(!k.contains("client") && !k.contains("C1"));
        assert_ne!(
            k,
            entry_key("https://id", "client", Some("InvoicingAPI"), None)
        );
        assert_ne!(k, entry_key("https://id", "client", None, Some("C1")));
        assert_ne!(
            entry_key("a", "bc", None, None),
            entry_key("ab", "c", None, None)
        );
        assert_eq!(
            k,
            entry_key("https://id", "client", Some("InvoicingAPI"), Some("C1"))
        );
        assert_ne!(
            budget_key("https://id", "client"),
            budget_key("https://id", "other")
        );
    }

    /// The keys a fleet already has in its store: a new version that
    /// hashed otherwise would strand every token and lock there (each
    /// process would log in again, and two versions side by side would
    /// not share). SHA-256 over the length-prefixed parts, as computed
    /// apart from the crate (Python's hashlib).
    #[test]
    fn keys_are_the_ones_existing_fleets_hold() {
        let token_url = "https://preprod-api.myinvois.hasil.gov.my/connect/token";
        assert_eq!(
            entry_key(
                token_url,
                "erp-client-1",
                Some("InvoicingAPI"),
                Some("C25845632020")
            ),
            "5b45ed8bdc82657bed0d269318da446fa1017e4706bebfbdfdf6de1563fa7d51"
        );
        assert_eq!(
            entry_key(token_url, "erp-client-1", None, None),
            "76341943c235f209507389ec34cbf9cd7a86dcb519021e63970fb37747c7d1fd"
        );
        assert_eq!(
            budget_key(token_url, "erp-client-1"),
            "19255b41bb3e069f86acc787ba2d620112f3084005d44d1f23789e6ff9c70520"
        );
    }

    #[test]
    fn lock_owners_are_unique() {
        assert_ne!(lock_owner(), lock_owner());
    }

    #[test]
    fn stored_tokens_do_not_print_the_token() {
        let t = StoredToken {
            access_token: "TOPSECRET".into(),
            issued_at: Utc::now(),
            expires_at: Utc::now(),
            scope: None,
            remaining: Duration::from_secs(1),
        };
        assert!(!format!("{t:?}").contains("TOPSECRET"));
    }
}
