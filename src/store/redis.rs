//! [`RedisTokenStore`]: tokens, login locks and the login budget shared by a
//! fleet of processes through Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{LoginSlot, SlotRequest, StoreError, StoredToken, TokenStore};

/// Default key prefix of [`RedisTokenStore`].
pub const DEFAULT_PREFIX: &str = "myinvois-auth";
/// After a failed connection, wait this long before the next attempt.
const RECONNECT_AFTER: Duration = Duration::from_secs(5);
/// Each Redis call gets this long.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// Making the connection gets this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Reserves a login slot by the sliding-window rule, atomically and by
/// Redis' own clock (so the hosts' clocks do not matter). KEYS[1]: sorted
/// set of the window's logins (score: ms), KEYS[2]: hash {blocked, paced}.
/// ARGV: count, window ms, pace ms (0: not paced), reservation id.
/// Returns {1, 0} when granted, {0, ms until a slot may free} otherwise.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count, window, pace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local blocked = tonumber(redis.call('HGET', KEYS[2], 'blocked') or '0')
if blocked > now then
  return {0, blocked - now}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n >= count then
  local oldest = redis.call('ZRANGE', KEYS[1], n - count, n - count, 'WITHSCORES')
  return {0, math.max(1, tonumber(oldest[2]) + window - now)}
end
if pace > 0 then
  local last = tonumber(redis.call('HGET', KEYS[2], 'paced') or '0')
  if now < last + pace then
    return {0, last + pace - now}
  end
  redis.call('HSET', KEYS[2], 'paced', now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window + 1000)
redis.call('PEXPIRE', KEYS[2], math.max(window, blocked - now) + 1000)
return {1, 0}
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

/// The token and how long Redis says it has left, in one atomic call.
const LOAD: &str = r#"
local value = redis.call('GET', KEYS[1])
if not value then
  return false
end
return {value, redis.call('PTTL', KEYS[1])}
"#;

/// Deletes the lock only if its value is still the owner's.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Shares tokens, login locks and the login budget across processes and
/// hosts through Redis (cargo feature `redis`).
///
/// Keys are `<prefix>:token:<hash>`, `<prefix>:lock:<hash>` and
/// `<prefix>:budget:<hash>`, the hash being SHA-256 of identity URL, client
/// ID, scope and taxpayer: none of them is stored in clear, and the client
/// secret is never written. Tokens expire from Redis when they expire.
///
/// The connection is made on first use and remade after failures; while
/// Redis is unreachable or slow (each call gets 500 ms), the cache logs a
/// warning and works as a single process would.
///
/// ```no_run
/// use std::sync::Arc;
/// use myinvois_auth::{Credentials, Environment, RedisTokenStore, TokenCache};
/// let store = RedisTokenStore::new("redis://127.0.0.1:6379/")?; // or rediss://user:pass@host
/// let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
///     .environment(Environment::Production)
///     .token_store(Arc::new(store))
///     .build()?;
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
pub struct RedisTokenStore {
    client: redis::Client,
    prefix: String,
    connection: Arc<Mutex<Connection>>,
    load: redis::Script,
    reserve: redis::Script,
    block: redis::Script,
    unlock: redis::Script,
}

/// The shared connection's state. One connection attempt runs at a time,
/// in its own task; callers that arrive meanwhile wait for it (bounded)
/// instead of going on without Redis.
enum Connection {
    Down { next_attempt: Option<Instant> },
    Connecting(watch::Receiver<Option<Result<ConnectionManager, StoreError>>>),
    Up(ConnectionManager),
}

impl RedisTokenStore {
    /// A store at `url` (`redis://`, or `rediss://` for TLS; user and
    /// password in the URL), with the default key prefix. Does not connect yet.
    pub fn new(url: &str) -> Result<Self, crate::Error> {
        Self::with_prefix(url, DEFAULT_PREFIX)
    }

    /// Like [`new`](Self::new), with keys under `prefix`.
    pub fn with_prefix(url: &str, prefix: &str) -> Result<Self, crate::Error> {
        let client = redis::Client::open(url).map_err(|e| {
            crate::Error::InvalidConfig(format!("invalid Redis URL ({:?})", e.kind()))
        })?;
        Ok(RedisTokenStore {
            client,
            prefix: prefix.to_owned(),
            connection: Arc::new(Mutex::new(Connection::Down { next_attempt: None })),
            load: redis::Script::new(LOAD),
            reserve: redis::Script::new(RESERVE),
            block: redis::Script::new(BLOCK),
            unlock: redis::Script::new(UNLOCK),
        })
    }

    /// `<prefix>:<kind>:{<hash>}`: the hash tag keeps every key of one entry
    /// (or one budget) in one Cluster slot, so one script can use them all.
    fn key(&self, kind: &str, hash: &str) -> String {
        format!("{}:{kind}:{{{hash}}}", self.prefix)
    }

    /// The shared connection, made on first use; after a failure, not retried
    /// for [`RECONNECT_AFTER`]. While it is being made, callers wait for it
    /// (at most the connect timeout). No lock is held across an `.await`.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut attempt = {
            let mut state = self.connection.lock();
            match &*state {
                Connection::Up(manager) => return Ok(manager.clone()),
                Connection::Connecting(attempt) => attempt.clone(),
                Connection::Down {
                    next_attempt: Some(at),
                } if Instant::now() < *at => {
                    return Err(StoreError("Redis unavailable; will reconnect later".into()))
                }
                Connection::Down { .. } => {
                    let attempt = self.start_connecting()?;
                    *state = Connection::Connecting(attempt.clone());
                    attempt
                }
            }
        };
        let outcome = tokio::time::timeout(CONNECT_TIMEOUT, attempt.wait_for(Option::is_some))
            .await
            .map_err(|_| StoreError("connecting to Redis timed out".into()))?
            .map_err(|_| StoreError("the connection attempt was abandoned".into()))?;
        outcome
            .clone()
            .unwrap_or_else(|| Err(StoreError("no connection".into())))
    }

    /// Starts one connection attempt in its own task (a caller that gives up
    /// does not cancel it) and records its outcome.
    fn start_connecting(
        &self,
    ) -> Result<watch::Receiver<Option<Result<ConnectionManager, StoreError>>>, StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError("not inside a tokio runtime".into()))?;
        let (tx, rx) = watch::channel(None);
        let (client, connection) = (self.client.clone(), Arc::clone(&self.connection));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let connect = async move {
            let outcome = match tokio::time::timeout(
                CONNECT_TIMEOUT,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            {
                Ok(Ok(manager)) => Ok(manager),
                Ok(Err(e)) => Err(redis_error(e)),
                Err(_) => Err(StoreError("connecting to Redis timed out".into())),
            };
            *connection.lock() = match &outcome {
                Ok(manager) => {
                    tracing::info!("connected to Redis");
                    Connection::Up(manager.clone())
                }
                Err(_) => Connection::Down {
                    next_attempt: Some(Instant::now() + RECONNECT_AFTER),
                },
            };
            let _ = tx.send(Some(outcome));
        };
        runtime.spawn(connect);
        Ok(rx)
    }

    /// Runs one Redis call with the call timeout.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, f(connection)).await {
            Ok(result) => result.map_err(redis_error),
            Err(_) => Err(StoreError("Redis did not answer in time".into())),
        }
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    // A RedisError's Display can quote the server's words but never our
    // values; keep only its kind and category to be sure.
    StoreError(format!("Redis error: {:?} ({})", e.kind(), e.category()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    async fn load(&self, key: &str) -> Result<Option<StoredToken>, StoreError> {
        let key = self.key("token", key);
        let script = &self.load;
        let found: Option<(String, i64)> = self
            .call(|mut c| async move { script.key(&key).invoke_async(&mut c).await })
            .await?;
        // PTTL: -2 (gone meanwhile), -1 (no TTL: not written by us), or ms left.
        let Some((raw, ttl_ms)) = found else {
            return Ok(None);
        };
        let Ok(ttl_ms) = u64::try_from(ttl_ms) else {
            return Ok(None);
        };
        let record: Record = serde_json::from_str(&raw)
            .map_err(|_| StoreError("a stored token is not in the expected form".into()))?;
        let (Some(issued_at), Some(expires_at)) = (
            DateTime::from_timestamp_millis(record.issued_at_ms),
            DateTime::from_timestamp_millis(record.expires_at_ms),
        ) else {
            return Err(StoreError("a stored token has invalid times".into()));
        };
        Ok((ttl_ms > 0).then_some(StoredToken {
            access_token: record.access_token,
            issued_at,
            expires_at,
            scope: record.scope,
            remaining: Duration::from_millis(ttl_ms),
        }))
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
        .map_err(|_| StoreError("cannot encode the token".into()))?;
        let key = self.key("token", key);
        self.call(|mut c| async move {
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
        let key = self.key("lock", key);
        let set: Option<String> = self
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
        self.call(|mut c| async move {
            script
                .key(&key)
                .arg(owner)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    async fn reserve_login(
        &self,
        budget: &str,
        request: &SlotRequest,
    ) -> Result<LoginSlot, StoreError> {
        let (logins, state) = (self.key("logins", budget), self.key("budget", budget));
        let script = &self.reserve;
        let (granted, wait): (i64, i64) = self
            .call(|mut c| async move {
                script
                    .key(&logins)
                    .key(&state)
                    .arg(request.count)
                    .arg(millis(request.window))
                    .arg(request.pace.map_or(0, millis))
                    .arg(&request.id)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(if granted == 1 {
            LoginSlot::Granted
        } else {
            LoginSlot::Wait(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
        })
    }

    async fn release_login(&self, budget: &str, id: &str) -> Result<(), StoreError> {
        let logins = self.key("logins", budget);
        self.call(|mut c| async move {
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
        self.call(|mut c| async move {
            script
                .key(&key)
                .arg(millis(duration))
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }
}
