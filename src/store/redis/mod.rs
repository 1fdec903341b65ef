//! [`RedisTokenStore`]: tokens, login locks and the login budget shared by a
//! fleet of processes through Redis: one server (a URL, or a client you
//! built), a Redis Cluster, or a primary found through Sentinel.
//!
//! Where connections come from and when they are remade is in
//! `connection`; what a Redis error means, in `classify`.

mod classify;
mod connection;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::DateTime;
use redis::cluster::ClusterClient;
use redis::sentinel::SentinelClient;

use self::connection::{Conn, Link, Source};
use super::{
    Loaded, LoginSlot, SlotRequest, StoreError, StoredToken, TokenStore, RESERVATION_PENDING,
    RESERVATION_POLL,
};
use crate::error::Error;

/// Default key prefix of [`RedisTokenStore`].
pub const DEFAULT_PREFIX: &str = "myinvois-auth";

/// Reserves a login slot by the sliding-window rule, atomically and by
/// Redis' own clock (so the hosts' clocks do not matter). KEYS[1]: sorted
/// set of the window's logins (score: ms), KEYS[2]: hash {blocked, paced}.
/// ARGV: count, window ms, pace ms (0: not paced), reservation id, pending
/// ms, poll ms. Returns {1, 0, 0} when granted, otherwise {0, ms until a
/// slot frees, ms until asking again may help (0: not before then)}.
///
/// A reservation younger than `pending` ms may still be given back (its
/// process found the entry locked by another, or its token already
/// shared), so while the full window holds one, the answer also says "ask
/// again in `poll` ms": waiting only for the oldest login to leave the
/// window would refuse a caller that a slot freed milliseconds later would
/// serve.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count, window, pace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local blocked = tonumber(redis.call('HGET', KEYS[2], 'blocked') or '0')
if blocked > now then
  return {0, blocked - now, 0}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n >= count then
  local oldest = redis.call('ZRANGE', KEYS[1], n - count, n - count, 'WITHSCORES')
  local wait = math.max(1, tonumber(oldest[2]) + window - now)
  local poll = 0
  if redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[5]), '+inf') > 0 then
    poll = math.min(wait, tonumber(ARGV[6]))
  end
  return {0, wait, poll}
end
if pace > 0 then
  local last = tonumber(redis.call('HGET', KEYS[2], 'paced') or '0')
  if now < last + pace then
    return {0, last + pace - now, 0}
  end
  redis.call('HSET', KEYS[2], 'paced', now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window + 1000)
redis.call('PEXPIRE', KEYS[2], math.max(window, blocked - now) + 1000)
return {1, 0, 0}
"#;

/// Blocks the budget for ARGV[1] ms from Redis' now, keeping a later block.
/// KEYS[1]: the budget's hash.
const BLOCK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked') or '0')
if until_ms > blocked then
  redis.call('HSET', KEYS[1], 'blocked', until_ms)
end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('PEXPIRE', KEYS[1], math.max(ttl, tonumber(ARGV[1]) + 1000))
return 1
"#;

/// The token, how long Redis says it has left, and how long the key's
/// login lock has left (-2 when free), in one atomic call (a waiting process
/// polls this). KEYS[1]: the token, KEYS[2]: the lock (same slot).
const LOAD: &str = r#"
local value = redis.call('GET', KEYS[1])
local lock = redis.call('PTTL', KEYS[2])
if not value then
  return {false, -2, lock}
end
return {value, redis.call('PTTL', KEYS[1]), lock}
"#;

/// Deletes the lock only if its value is still the owner's.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Takes the lock KEYS[1] for ARGV[1] for ARGV[2] ms if it is free, or held
/// without a TTL or with more than ARGV[2] ms left (no live login with
/// these settings holds it). Returns 1 when taken.
const TAKE_OVER: &str = r#"
local left = redis.call('PTTL', KEYS[1])
if left == -2 or left == -1 or left > tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Gives the lock KEYS[1] an expiry of ARGV[1] ms if it has none or a
/// later one. Returns 1 when it did.
const EXPIRE_STALE: &str = r#"
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left > tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 1
end
return 0
"#;

/// The lock TTL the cache takes without a login timeout (a minute and a
/// margin): `check()` reports a lock with more left than this and than
/// any lock the store was asked for.
const LONGEST_DEFAULT_LOCK: Duration = Duration::from_secs(65);
/// `check()` looks at this many keys of the keyspace at most (a `SCAN`
/// of 1000 at a time), going on from there at its next run.
const STALE_SCAN_CALLS: usize = 100;
const STALE_SCAN_COUNT: usize = 1000;
/// Stale locks named in `check()`'s message at most.
const STALE_NAMED: usize = 10;

/// Shares tokens, login locks and the login budget across processes and
/// hosts through Redis (cargo feature `redis`).
///
/// Keys are `<prefix>:token:{<hash>}`, `<prefix>:lock:{<hash>}`,
/// `<prefix>:logins:{<hash>}` and `<prefix>:budget:{<hash>}`, the hash being
/// SHA-256 of identity URL, client ID, scope and taxpayer: none of them is
/// stored in clear, and the client secret is never written. Every key has a
/// TTL. The hash tag keeps one entry's keys in one Cluster slot.
///
/// The connection is made on first use and remade when the node it talks
/// to stops being the primary (`READONLY`), after repeated timeouts and
/// when it drops; after repeated failures Redis is skipped for a few
/// seconds. While Redis is out of reach, the cache logs a warning, works as
/// a single process would, and keeps to its
/// [fleet share](crate::TokenCacheBuilder::fleet_size) of the login budget.
///
/// ```no_run
/// use std::sync::Arc;
/// use myinvois_auth::{Credentials, Environment, RedisTokenStore, TokenCache};
/// let store = RedisTokenStore::new("rediss://user:password@redis.internal:6380/0")?.prefix("erp-prod");
/// let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
///     .environment(Environment::Production)
///     .token_store(Arc::new(store))
///     .fleet_size(20)
///     .build()?;
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
pub struct RedisTokenStore {
    link: Link,
    prefix: String,
    load: redis::Script,
    reserve: redis::Script,
    block: redis::Script,
    unlock: redis::Script,
    take_over: redis::Script,
    expire_stale: redis::Script,
    /// The longest lock TTL asked for (ms), for `check()`.
    longest_lock_ms: AtomicU64,
    /// Where `check()`'s look for stale locks goes on, per node.
    scan_cursors: parking_lot::Mutex<HashMap<String, u64>>,
}

impl RedisTokenStore {
    /// A store at `url` (`redis://`, or `rediss://` for TLS with the public
    /// web roots; user and password in the URL), with the default key
    /// prefix and TCP keepalive. Does not connect yet. For a private CA,
    /// client certificates or other settings, build the client yourself:
    /// [`from_client`](Self::from_client).
    pub fn new(url: &str) -> Result<Self, Error> {
        use redis::IntoConnectionInfo;
        let invalid = |e: redis::RedisError| {
            Error::InvalidConfig(format!("invalid Redis URL ({:?})", e.kind()))
        };
        let info = url
            .into_connection_info()
            .map_err(invalid)?
            .set_tcp_settings(connection::tcp_settings());
        let client = redis::Client::open(info).map_err(invalid)?;
        Ok(Self::from_client(client))
    }

    /// Like [`new`](Self::new), with keys under `prefix`.
    pub fn with_prefix(url: &str, prefix: &str) -> Result<Self, Error> {
        Ok(Self::new(url)?.prefix(prefix))
    }

    /// A store on a client you built with the `redis` crate's own API: TLS
    /// with a private CA or client certificates (`Client::build_with_tls`),
    /// an ACL user, TCP settings. Does not connect yet.
    ///
    /// ```no_run
    /// use myinvois_auth::RedisTokenStore;
    /// let ca = std::fs::read("/etc/redis/ca.pem")?;
    /// let client = redis::Client::build_with_tls(
    ///     "rediss://myinvois:password@redis.internal:6380/0",
    ///     redis::TlsCertificates { client_tls: None, root_cert: Some(ca) },
    /// )?;
    /// let store = RedisTokenStore::from_client(client).prefix("erp-prod");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_client(client: redis::Client) -> Self {
        Self::from_source(Source::Client(client))
    }

    /// A store on a Redis Cluster (`redis::cluster::ClusterClient`). Every
    /// key of one entry shares a slot, so each script runs on one node.
    ///
    /// ```no_run
    /// use myinvois_auth::RedisTokenStore;
    /// let cluster = redis::cluster::ClusterClient::new(vec![
    ///     "redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/", "redis://10.0.0.3:6379/",
    /// ])?;
    /// let store = RedisTokenStore::from_cluster(cluster);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_cluster(client: ClusterClient) -> Self {
        Self::from_source(Source::Cluster(client))
    }

    /// A store on the primary that Sentinel names (`redis::sentinel::SentinelClient`),
    /// asked again whenever the connection is remade, so a failover is
    /// followed.
    ///
    /// ```no_run
    /// use myinvois_auth::RedisTokenStore;
    /// use redis::sentinel::{SentinelClient, SentinelServerType};
    /// let sentinel = SentinelClient::build(
    ///     vec!["redis://10.0.0.1:26379/", "redis://10.0.0.2:26379/"],
    ///     "mymaster".to_owned(),
    ///     None,
    ///     SentinelServerType::Master,
    /// )?;
    /// let store = RedisTokenStore::from_sentinel(sentinel);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_sentinel(client: SentinelClient) -> Self {
        Self::from_source(Source::Sentinel(tokio::sync::Mutex::new(client)))
    }

    fn from_source(source: Source) -> Self {
        RedisTokenStore {
            link: Link::new(source),
            prefix: DEFAULT_PREFIX.to_owned(),
            load: redis::Script::new(LOAD),
            reserve: redis::Script::new(RESERVE),
            block: redis::Script::new(BLOCK),
            unlock: redis::Script::new(UNLOCK),
            take_over: redis::Script::new(TAKE_OVER),
            expire_stale: redis::Script::new(EXPIRE_STALE),
            longest_lock_ms: AtomicU64::new(millis(LONGEST_DEFAULT_LOCK)),
            scan_cursors: parking_lot::Mutex::default(),
        }
    }

    /// Puts every key under `prefix` (default [`DEFAULT_PREFIX`]), so that
    /// several deployments can share one Redis.
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// `<prefix>:<kind>:{<hash>}`: the hash tag keeps every key of one entry
    /// (or one budget) in one Cluster slot, so one script can use them all.
    fn key(&self, kind: &str, hash: &str) -> String {
        format!("{}:{kind}:{{{hash}}}", self.prefix)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A lock's PTTL: -2, no lock; -1, a lock without TTL (not ours): held,
/// for long; otherwise the milliseconds it has left.
fn lock_ttl(ms: i64) -> Option<Duration> {
    match ms {
        -2 => None,
        ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    access_token: String,
    issued_at_ms: i64,
    expires_at_ms: i64,
    scope: Option<String>,
}

impl fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection info may hold a password: show the prefix only.
        f.debug_struct("RedisTokenStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenStore for RedisTokenStore {
    async fn load(&self, key: &str) -> Result<Loaded, StoreError> {
        let (token_key, lock_key) = (self.key("token", key), self.key("lock", key));
        let script = &self.load;
        let (raw, ttl_ms, lock_ms): (Option<String>, i64, i64) = self
            .link
            .call(|mut c| async move {
                script
                    .key(&token_key)
                    .key(&lock_key)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let locked = lock_ttl(lock_ms);
        // PTTL: -2 (gone), -1 (no TTL: not written by us), or ms left.
        let (Some(raw), Ok(ttl_ms @ 1..)) = (raw, u64::try_from(ttl_ms)) else {
            return Ok(Loaded {
                token: None,
                locked,
            });
        };
        let unreadable = |what: &str| {
            tracing::warn!("a token in Redis is {what}; ignored");
            Ok(Loaded {
                token: None,
                locked,
            })
        };
        let Ok(record) = serde_json::from_str::<Record>(&raw) else {
            return unreadable("not in the expected form");
        };
        let (Some(issued_at), Some(expires_at)) = (
            DateTime::from_timestamp_millis(record.issued_at_ms),
            DateTime::from_timestamp_millis(record.expires_at_ms),
        ) else {
            return unreadable("stored with invalid times");
        };
        Ok(Loaded {
            token: Some(StoredToken {
                access_token: record.access_token,
                issued_at,
                expires_at,
                scope: record.scope,
                remaining: Duration::from_millis(ttl_ms),
            }),
            locked,
        })
    }

    /// One `PTTL` of the lock's key: a waiting process's poll.
    async fn lock_left(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let key = self.key("lock", key);
        let ms: i64 = self
            .link
            .call(|mut c| async move { redis::cmd("PTTL").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(lock_ttl(ms))
    }

    async fn save(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        let ttl = millis(token.remaining);
        if ttl == 0 {
            return Ok(());
        }
        let record = serde_json::to_string(&Record {
            access_token: token.access_token.clone(),
            issued_at_ms: token.issued_at.timestamp_millis(),
            expires_at_ms: token.expires_at.timestamp_millis(),
            scope: token.scope.clone(),
        })
        .map_err(|_| StoreError::other("cannot encode the token"))?;
        let key = self.key("token", key);
        self.link
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(record)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.longest_lock_ms
            .fetch_max(millis(ttl), Ordering::Relaxed);
        let key = self.key("lock", key);
        let set: Option<String> = self
            .link
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl).max(1))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let key = self.key("lock", key);
        let script = &self.unlock;
        self.link
            .call(|mut c| async move {
                script
                    .key(&key)
                    .arg(owner)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(drop)
    }

    /// One script: the lock is taken if it is free, or held without a TTL
    /// or with more than `ttl` left.
    async fn take_over_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.longest_lock_ms
            .fetch_max(millis(ttl), Ordering::Relaxed);
        let key = self.key("lock", key);
        let script = &self.take_over;
        let taken: i64 = self
            .link
            .call(|mut c| async move {
                script
                    .key(&key)
                    .arg(owner)
                    .arg(millis(ttl).max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(taken == 1)
    }

    async fn reserve_login(
        &self,
        budget: &str,
        request: &SlotRequest,
    ) -> Result<LoginSlot, StoreError> {
        let (logins, state) = (self.key("logins", budget), self.key("budget", budget));
        let script = &self.reserve;
        let (granted, wait, poll): (i64, i64, i64) = self
            .link
            .call(|mut c| async move {
                script
                    .key(&logins)
                    .key(&state)
                    .arg(request.count)
                    .arg(millis(request.window))
                    .arg(request.pace.map_or(0, millis))
                    .arg(&request.id)
                    .arg(millis(RESERVATION_PENDING))
                    .arg(millis(RESERVATION_POLL))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let ms = |n: i64| Duration::from_millis(u64::try_from(n).unwrap_or(0));
        Ok(if granted == 1 {
            LoginSlot::Granted
        } else if poll > 0 {
            LoginSlot::Pending {
                ask_again: ms(poll),
                wait: ms(wait),
            }
        } else {
            LoginSlot::Wait(ms(wait))
        })
    }

    async fn release_login(&self, budget: &str, id: &str) -> Result<(), StoreError> {
        let logins = self.key("logins", budget);
        self.link
            .call(|mut c| async move {
                redis::cmd("ZREM")
                    .arg(&logins)
                    .arg(id)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(drop)
    }

    async fn block_logins(&self, budget: &str, duration: Duration) -> Result<(), StoreError> {
        let key = self.key("budget", budget);
        let script = &self.block;
        self.link
            .call(|mut c| async move {
                script
                    .key(&key)
                    .arg(millis(duration))
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(drop)
    }

    fn is_available(&self) -> bool {
        self.link.is_available()
    }

    /// Connects, and runs every command the store can use, on probe keys
    /// of its own under the prefix, which expire within 2 s: loads every
    /// script (a restarted server or a newly promoted replica has none
    /// cached), runs each (and each branch of the budget script: a probe
    /// window of one slot is filled, so the full-window branch runs too),
    /// and, for a store that is not `from_cluster`, checks that the server
    /// is not a Cluster node. Fails with the kind of the first problem:
    /// unreachable, TLS, auth, an ACL that forbids a command the store
    /// needs (`Auth`, naming NOPERM, also when a script was refused the
    /// command), a Cluster node (`Other`, naming `from_cluster`).
    ///
    /// Then looks for lock keys without a TTL, or with more left than any
    /// lock the crate takes (a restored dump, a `PERSIST`): each is given
    /// an expiry of that longest lock TTL (so it strands nobody) and named
    /// in an `Other` error; the next check passes. It looks at up to
    /// 100 000 keys of the keyspace each time (`SCAN`), going on from there
    /// at the next check.
    async fn check(&self) -> Result<(), StoreError> {
        // Probe keys of this check alone, so that concurrent checks (every
        // process's readiness probe) each run every command.
        let probe = format!("readiness-probe-{}", super::lock_owner());
        let owner = probe.as_str();
        let short = Duration::from_secs(1);
        if !self.link.is_cluster() {
            self.not_a_cluster_node(&probe).await?;
        }
        for script in [
            &self.load,
            &self.reserve,
            &self.block,
            &self.unlock,
            &self.take_over,
            &self.expire_stale,
        ] {
            self.link
                .call(|mut c| async move { script.load_async(&mut c).await })
                .await?;
        }
        self.load(&probe).await?;
        self.lock_left(&probe).await?;
        if self.try_lock(&probe, owner, short).await? {
            self.unlock(&probe, owner).await?;
        }
        self.take_over_lock(&probe, owner, short).await?;
        self.unlock(&probe, owner).await?;
        // A window of one slot: the first reservation (paced) takes it,
        // the second finds the window full.
        let mut request = SlotRequest {
            count: 1,
            window: short,
            pace: Some(Duration::from_millis(1)),
            id: format!("{probe}-1"),
        };
        self.reserve_login(&probe, &request).await?;
        let first = std::mem::replace(&mut request.id, format!("{probe}-2"));
        request.pace = None;
        self.reserve_login(&probe, &request).await?;
        self.release_login(&probe, &first).await?;
        self.block_logins(&probe, Duration::from_millis(1)).await?;
        self.stale_locks().await
    }
}

impl RedisTokenStore {
    /// A server that is a Cluster node answers a command on keys of two
    /// slots with `CROSSSLOT`, whichever slots it serves (a plain store
    /// there meets `MOVED` on other nodes' keys). Two probe keys that do
    /// not exist, in two slots.
    async fn not_a_cluster_node(&self, probe: &str) -> Result<(), StoreError> {
        let keys = [
            format!("{}:{probe}:{{0}}", self.prefix),
            format!("{}:{probe}:{{1}}", self.prefix),
        ];
        let keys = &keys;
        self.link
            .call(|mut c| async move {
                redis::cmd("DEL")
                    .arg(&keys[0])
                    .arg(&keys[1])
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(drop)
    }

    /// Lock keys without a TTL, or with more left than the longest lock
    /// the crate takes: given that expiry, and named in an error.
    async fn stale_locks(&self) -> Result<(), StoreError> {
        let longest = self.longest_lock_ms.load(Ordering::Relaxed);
        let pattern = format!("{}:lock:*", self.prefix);
        let nodes = self.link.scan_nodes().await?;
        let mut stale = Vec::new();
        let mut calls = 0;
        for node in nodes {
            let name = node
                .as_ref()
                .map_or(String::new(), |(h, p)| format!("{h}:{p}"));
            let mut cursor = self.scan_cursors.lock().get(&name).copied().unwrap_or(0);
            loop {
                let (pattern, node) = (&pattern, &node);
                let (next, keys): (u64, Vec<String>) = self
                    .link
                    .call(|mut c| async move {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(STALE_SCAN_COUNT);
                        match (&mut c, node) {
                            (Conn::Cluster(cluster), Some((host, port))) => {
                                let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                                        host: host.clone(),
                                        port: *port,
                                    },
                                );
                                let value = cluster.route_command(scan, routing).await?;
                                Ok(redis::from_redis_value(value)?)
                            }
                            _ => scan.query_async(&mut c).await,
                        }
                    })
                    .await?;
                calls += 1;
                for key in keys {
                    let script = &self.expire_stale;
                    let key = &key;
                    let expired: i64 = self
                        .link
                        .call(|mut c| async move {
                            script.key(key).arg(longest).invoke_async(&mut c).await
                        })
                        .await?;
                    if expired == 1 {
                        stale.push(key.clone());
                    }
                }
                cursor = next;
                if cursor == 0 || calls >= STALE_SCAN_CALLS {
                    break;
                }
            }
            self.scan_cursors.lock().insert(name, cursor);
        }
        if stale.is_empty() {
            return Ok(());
        }
        let shown = stale.iter().take(STALE_NAMED).cloned().collect::<Vec<_>>();
        Err(StoreError::other(format!(
            "{} lock key(s) without a TTL or with more than {longest} ms left (no lock the \
             crate takes; a restored dump, a PERSIST?), each now given {longest} ms: {}{}",
            stale.len(),
            shown.join(", "),
            if stale.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        )))
    }
}
