//! [`TokenCache`]: the shared token cache, one entry per taxpayer.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::{Credentials, Environment, Settings, TokenCacheBuilder};
use crate::entry::Entry;
use crate::error::Error;
use crate::taxpayer::OnBehalfOf;
use crate::token::AccessToken;

/// A shared cache of MyInvois access tokens.
///
/// Cloning is cheap and every clone shares the same entries: one for the
/// plain (taxpayer) login, and one per taxpayer an intermediary acts for.
/// Each entry has at most one login in flight; callers on a cold or expired
/// entry wait for it together, and a token close to expiry is refreshed in the
/// background while callers keep using it.
///
/// Use it through [`AuthMiddleware`](crate::AuthMiddleware), or directly:
///
/// ```no_run
/// use myinvois_auth::{Credentials, Environment, TokenCache};
///
/// # async fn run() -> Result<(), myinvois_auth::Error> {
/// let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
///     .environment(Environment::Sandbox)
///     .build()?;
/// let token = cache.token().await?;                               // as the taxpayer
/// let theirs = cache.token_on_behalf_of("C25845632020").await?;   // as an intermediary
/// assert!(!token.same_token(&theirs));
/// # Ok(()) }
/// ```
///
/// Tokens are never served after their expiry. Logins run as tokio tasks, so
/// the cache must be used inside a tokio runtime.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    plain: Arc<Entry>,
    taxpayers: RwLock<HashMap<Arc<str>, Arc<Entry>>>,
}

impl TokenCache {
    /// Starts configuring a cache for these credentials.
    pub fn builder(credentials: Credentials) -> TokenCacheBuilder {
        TokenCacheBuilder::new(credentials)
    }

    pub(crate) fn from_settings(settings: Settings) -> Self {
        let settings = Arc::new(settings);
        TokenCache {
            inner: Arc::new(Inner {
                plain: Arc::new(Entry::new(Arc::clone(&settings), None)),
                settings,
                taxpayers: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// A valid token for the plain login (the ERP system as the taxpayer).
    ///
    /// Returns at once while a valid token is cached; otherwise waits for the
    /// one login in flight (starting it if needed) and shares its result,
    /// error included.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        self.inner.plain.token().await
    }

    /// A valid token for an intermediary acting for `taxpayer` (a TIN, or
    /// `TIN:ROB`): the login carries the `onbehalfof` header. Each taxpayer has
    /// its own entry; one taxpayer's login never delays another's calls.
    ///
    /// Fails with [`Error::InvalidTaxpayer`] for a value that is not an identifier.
    pub async fn token_on_behalf_of(
        &self,
        taxpayer: impl AsRef<str>,
    ) -> Result<AccessToken, Error> {
        let taxpayer = taxpayer.as_ref();
        if let Some(entry) = self.inner.taxpayers.read().get(taxpayer) {
            if let Some(token) = entry.cached() {
                return Ok(token);
            }
        }
        self.taxpayer_entry(taxpayer)?.token().await
    }

    /// The token for `on_behalf_of`, or the plain login's for `None`.
    pub(crate) async fn token_for(
        &self,
        on_behalf_of: Option<&OnBehalfOf>,
    ) -> Result<AccessToken, Error> {
        match on_behalf_of {
            None => self.token().await,
            Some(taxpayer) => self.token_on_behalf_of(taxpayer.as_str()).await,
        }
    }

    /// Forgets `token` if it is still the one cached for its taxpayer, so that
    /// the next caller logs in again. Use it when the API rejected the token
    /// (HTTP 401). Returns whether anything was forgotten: an invalidation that
    /// names an older token than the current one (or a token of another cache)
    /// changes nothing.
    ///
    /// ```no_run
    /// # async fn run(cache: myinvois_auth::TokenCache) -> Result<(), myinvois_auth::Error> {
    /// let token = cache.token().await?;
    /// // ... the API answered 401 with this token:
    /// cache.invalidate(&token);
    /// let fresh = cache.token().await?; // logs in again
    /// # let _ = fresh; Ok(()) }
    /// ```
    pub fn invalidate(&self, token: &AccessToken) -> bool {
        match token.on_behalf_of() {
            None => self.inner.plain.invalidate(token),
            Some(taxpayer) => match self.inner.taxpayers.read().get(taxpayer.as_str()) {
                Some(entry) => entry.invalidate(token),
                None => false,
            },
        }
    }

    /// The environment the cache was built with, if any.
    pub fn environment(&self) -> Option<&Environment> {
        self.inner.settings.environment.as_ref()
    }

    /// The client ID the cache logs in with.
    pub fn client_id(&self) -> &str {
        self.inner.settings.credentials.client_id()
    }

    fn taxpayer_entry(&self, taxpayer: &str) -> Result<Arc<Entry>, Error> {
        if let Some(entry) = self.inner.taxpayers.read().get(taxpayer) {
            return Ok(Arc::clone(entry));
        }
        let on_behalf_of = OnBehalfOf::new(taxpayer);
        on_behalf_of.validate()?;
        let mut map = self.inner.taxpayers.write();
        let entry = map.entry(Arc::from(taxpayer)).or_insert_with(|| {
            Arc::new(Entry::new(
                Arc::clone(&self.inner.settings),
                Some(on_behalf_of),
            ))
        });
        Ok(Arc::clone(entry))
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.inner.settings;
        f.debug_struct("TokenCache")
            .field("client_id", &s.credentials.client_id())
            .field("token_url", &s.token_url.as_str())
            .field("scope", &s.scope)
            .field("taxpayers", &self.inner.taxpayers.read().len())
            .finish_non_exhaustive()
    }
}
