//! Where a [`TokenCache`] is built: [`TokenCacheBuilder::build`] (after the
//! builder's checks) and [`TokenCache::from_env`].

use super::token_cache::TokenCache;
use crate::config::TokenCacheBuilder;
use crate::error::Error;

impl TokenCacheBuilder {
    /// Checks the settings and builds the cache.
    ///
    /// Fails with [`Error::InvalidConfig`] when no environment or identity URL is
    /// given, a URL is not `https` (or loopback `http`), the client ID or
    /// secret is empty, or (feature `rustls-no-provider` without `rustls` or
    /// `native-tls`) no rustls crypto provider is installed yet. Does not
    /// contact the identity service.
    pub fn build(self) -> Result<TokenCache, Error> {
        Ok(TokenCache::from_settings(self.into_settings()?))
    }
}

impl TokenCache {
    /// A cache with default settings, configured from the process
    /// environment (see [`TokenCacheBuilder::from_env`]).
    ///
    /// ```no_run
    /// let cache = myinvois_auth::TokenCache::from_env()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn from_env() -> Result<TokenCache, Error> {
        TokenCacheBuilder::from_env()?.build()
    }
}
