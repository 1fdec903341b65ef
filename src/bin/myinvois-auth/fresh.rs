//! A token store that never hands out a stored token, for `check`: it
//! must show that the credentials work now, so it logs in, while keeping
//! to the host's login budget and leases and saving the new token (the
//! next `token` uses it).

use std::time::Duration;

use myinvois_auth::{Loaded, LoginSlot, SlotRequest, StoreError, StoredToken, TokenStore};

/// `S`, except that `load` finds no token.
#[derive(Debug)]
pub(crate) struct FreshLogin<S>(pub(crate) S);

#[async_trait::async_trait]
impl<S: TokenStore> TokenStore for FreshLogin<S> {
    async fn load(&self, key: &str) -> Result<Loaded, StoreError> {
        let mut loaded = self.0.load(key).await?;
        loaded.token = None;
        Ok(loaded)
    }

    async fn lock_left(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        self.0.lock_left(key).await
    }

    async fn save(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        self.0.save(key, token).await
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.0.try_lock(key, owner, ttl).await
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.0.unlock(key, owner).await
    }

    async fn reserve_login(
        &self,
        budget: &str,
        request: &SlotRequest,
    ) -> Result<LoginSlot, StoreError> {
        self.0.reserve_login(budget, request).await
    }

    async fn release_login(&self, budget: &str, id: &str) -> Result<(), StoreError> {
        self.0.release_login(budget, id).await
    }

    async fn block_logins(&self, budget: &str, duration: Duration) -> Result<(), StoreError> {
        self.0.block_logins(budget, duration).await
    }

    fn is_available(&self) -> bool {
        self.0.is_available()
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.0.check().await
    }
}
