//! [`MemoryTokenStore`]: the default store, inside one process.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::{drop_expired, LoginSlot, StoreError, StoredToken, TokenStore};

/// A store in this process's memory: the default. Shared between caches only
/// if they are given the same instance.
///
/// Its login reservations always succeed at once: inside one process the
/// cache's own login budget already paces logins per client ID.
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
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    tokens: Mutex<HashMap<String, (StoredToken, DateTime<Utc>)>>,
    locks: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn until(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

#[async_trait::async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self, key: &str) -> Result<Option<StoredToken>, StoreError> {
        let mut tokens = self.tokens.lock();
        drop_expired(&mut tokens, Utc::now());
        Ok(tokens.get(key).map(|(token, _)| token.clone()))
    }

    async fn save(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        self.tokens
            .lock()
            .insert(key.to_owned(), (token.clone(), token.expires_at));
        Ok(())
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut locks = self.locks.lock();
        drop_expired(&mut locks, Utc::now());
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

    async fn reserve_login(
        &self,
        _budget: &str,
        _interval: Duration,
        _max_wait: Duration,
    ) -> Result<LoginSlot, StoreError> {
        Ok(LoginSlot::After(Duration::ZERO))
    }

    async fn block_logins(&self, _budget: &str, _duration: Duration) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
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

        let live = StoredToken {
            access_token: "t".into(),
            issued_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::seconds(60),
            scope: None,
        };
        let dead = StoredToken {
            expires_at: Utc::now() - chrono::Duration::seconds(1),
            ..live.clone()
        };
        store.save("live", &live).await.unwrap();
        store.save("dead", &dead).await.unwrap();
        assert_eq!(store.load("live").await.unwrap(), Some(live));
        assert_eq!(store.load("dead").await.unwrap(), None);
    }
}
