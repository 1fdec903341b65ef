//! [`TokenCache`] as a [`TokenSource`]: what the middleware and other SDKs
//! use of it, each method one of the cache's own.

use std::time::Duration;

use super::token_cache::TokenCache;
use crate::error::Error;
use crate::source::TokenSource;
use crate::taxpayer::OnBehalfOf;
use crate::token::AccessToken;

#[async_trait::async_trait]
impl TokenSource for TokenCache {
    async fn token_for(
        &self,
        on_behalf_of: Option<&OnBehalfOf>,
        wait: Duration,
    ) -> Result<AccessToken, Error> {
        self.token_within(on_behalf_of, wait).await
    }

    #[inline]
    fn cached_token(&self, on_behalf_of: Option<&OnBehalfOf>) -> Option<AccessToken> {
        self.cached(on_behalf_of)
    }

    /// The builder's [`max_login_wait`](crate::TokenCacheBuilder::max_login_wait).
    fn max_login_wait(&self) -> Duration {
        self.login_wait()
    }

    fn rejected(&self, token: &AccessToken, method: &http::Method, path: &str) -> bool {
        TokenCache::rejected(self, token, method, path)
    }

    /// Waits for the verdict of another taxpayer's renewal deciding at the
    /// same endpoint, so that taxpayers meeting an endpoint at once do not
    /// each spend a login on it.
    async fn rejected_waiting(
        &self,
        token: &AccessToken,
        method: &http::Method,
        path: &str,
    ) -> bool {
        self.rejected_after_verdict(token, method, path).await
    }

    fn retrying(&self, _: &AccessToken, _: &http::Method, _: &str) {
        self.counters().retry_after_401();
    }

    #[inline]
    fn accepted(&self, token: &AccessToken, method: &http::Method, path: &str) {
        TokenCache::accepted(self, token, method, path)
    }
}
