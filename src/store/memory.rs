//! [`MemoryTokenStore`]: the default store, inside one process.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{drop_expired, Loaded, StoreError, StoredToken, TokenStore};

/// A store in this process's memory: the default. Shared between caches only
/// if they are given the same instance.
///
/// It shares no login budget (the trait's default): inside one process the
/// cache's own budget already limits logins per client ID.
///
/// ```
/// use std::sync::Arc;
/// use myinvois_auth::{Credentials, MemoryTokenStore, TokenCache};
/// let store = Arc::new(MemoryTokenStore::new());
/// let cache = TokenCache::builder(Credentials::new("id", "secret"))
///     .identity_url("http://127.0.0.1:8080")
///     .token_store(store)
///     .build()?;
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
/// It counts time on tokio's clock, so a paused test clock expires its
/// tokens and locks too.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    tokens: Mutex<Expiring<StoredToken>>,
    locks: Mutex<Expiring<String>>,
}

/// Values that expire, dropped lazily: a lookup ignores an expired value,
/// and the whole map is swept only when it has doubled since the last
/// sweep, so each call costs O(1) amortized, however many it holds.
#[derive(Debug)]
struct Expiring<V> {
    values: HashMap<String, (V, Instant)>,
    sweep_at: usize,
}

impl<V> Default for Expiring<V> {
    fn default() -> Self {
        Expiring {
            values: HashMap::new(),
            sweep_at: 64,
        }
    }
}

impl<V> Expiring<V> {
    fn get(&self, key: &str, now: Instant) -> Option<(&V, Instant)> {
        self.values
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(value, until)| (value, *until))
    }

    fn insert(&mut self, key: &str, value: V, until: Instant, now: Instant) {
        if self.values.len() >= self.sweep_at {
            drop_expired(&mut self.values, now);
            self.sweep_at = (self.values.len() * 2).max(64);
        }
        self.values.insert(key.to_owned(), (value, until));
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        self.values.remove(key).map(|(value, _)| value)
    }
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn until(ttl: Duration) -> Instant {
    crate::clock::after(Instant::now(), ttl)
}

#[async_trait::async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self, key: &str) -> Result<Loaded, StoreError> {
        let now = Instant::now();
        let token = self
            .tokens
            .lock()
            .get(key, now)
            .map(|(token, until)| StoredToken {
                remaining: until - now,
                ..token.clone()
            });
        let locked = self
            .locks
            .lock()
            .get(key, now)
            .map(|(_, until)| until - now);
        Ok(Loaded { token, locked })
    }

    async fn save(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        let now = Instant::now();
        self.tokens
            .lock()
            .insert(key, token.clone(), until(token.remaining), now);
        Ok(())
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut locks = self.locks.lock();
        if locks.get(key, now).is_some() {
            return Ok(false);
        }
        locks.insert(key, owner.to_owned(), until(ttl), now);
        Ok(true)
    }

    /// Also takes a lock with more than `ttl` left (another cache's, with
    /// a longer login timeout, that has been watched for `ttl`).
    async fn take_over_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut locks = self.locks.lock();
        if locks
            .get(key, now)
            .is_some_and(|(_, until)| until - now <= ttl)
        {
            return Ok(false);
        }
        locks.insert(key, owner.to_owned(), until(ttl), now);
        Ok(true)
    }

    /// In memory: asking costs nothing, waits need no pacing.
    fn is_remote(&self) -> bool {
        false
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let mut locks = self.locks.lock();
        if locks
            .get(key, Instant::now())
            .is_some_and(|(held_by, _)| held_by == owner)
        {
            locks.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[tokio::test(start_paused = true)]
    async fn locks_belong_to_their_owner_and_tokens_expire() {
        let store = MemoryTokenStore::new();
        assert!(store
            .try_lock("k", "a", Duration::from_secs(30))
            .await
            .unwrap());
        assert!(!store
            .try_lock("k", "b", Duration::from_secs(30))
            .await
            .unwrap());
        store.unlock("k", "b").await.unwrap(); // not b's to release
        assert!(!store
            .try_lock("k", "b", Duration::from_secs(30))
            .await
            .unwrap());
        store.unlock("k", "a").await.unwrap();
        assert!(store
            .try_lock("k", "b", Duration::from_secs(30))
            .await
            .unwrap());
        // A lock with no more left than the TTL is not taken over; one
        // with more is.
        let ttl = Duration::from_secs(10);
        assert!(!store
            .take_over_lock("k", "c", Duration::from_secs(30))
            .await
            .unwrap());
        assert!(store.take_over_lock("k", "c", ttl).await.unwrap());
        assert!(!store.take_over_lock("k", "d", ttl).await.unwrap());
        store.unlock("k", "c").await.unwrap();

        let token = StoredToken {
            access_token: "t".into(),
            issued_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::seconds(3600),
            scope: None,
            remaining: Duration::from_secs(60),
        };
        store.save("k", &token).await.unwrap();
        tokio::time::advance(Duration::from_secs(20)).await;
        // The store says how long is left by its own clock.
        let loaded = store.load("k").await.unwrap().token.unwrap();
        assert_eq!(loaded.remaining, Duration::from_secs(40));
        assert_eq!(loaded.access_token, "t");
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(store.load("k").await.unwrap().token, None);
    }
}
