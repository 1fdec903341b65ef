//! [`MemoryTokenStore`]: the default store, inside one process.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{drop_expired, StoreError, StoredToken, TokenStore};

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
    tokens: Mutex<HashMap<String, (StoredToken, Instant)>>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
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
    async fn load(&self, key: &str) -> Result<Option<StoredToken>, StoreError> {
        let now = Instant::now();
        let mut tokens = self.tokens.lock();
        drop_expired(&mut tokens, now);
        Ok(tokens.get(key).map(|(token, until)| StoredToken {
            remaining: *until - now,
            ..token.clone()
        }))
    }

    async fn save(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        self.tokens
            .lock()
            .insert(key.to_owned(), (token.clone(), until(token.remaining)));
        Ok(())
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut locks = self.locks.lock();
        drop_expired(&mut locks, Instant::now());
        if locks.contains_key(key) {
            return Ok(false);
        }
        locks.insert(key.to_owned(), (owner.to_owned(), until(ttl)));
        Ok(true)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let mut locks = self.locks.lock();
        if locks.get(key).is_some_and(|(held_by, _)| held_by == owner) {
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
        let loaded = store.load("k").await.unwrap().unwrap();
        assert_eq!(loaded.remaining, Duration::from_secs(40));
        assert_eq!(loaded.access_token, "t");
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(store.load("k").await.unwrap(), None);
    }
}
