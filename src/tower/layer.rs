//! [`AuthLayer`]: the tower layer, built over a token source and the API
//! origins its tokens go to.

use std::sync::Arc;

use super::service::AuthService;
use crate::auth::Auth;
use crate::cache::TokenCache;
use crate::error::Error;
use crate::source::TokenSource;

/// A tower layer that authenticates MyInvois API calls: the behaviour of
/// [`AuthMiddleware`](crate::AuthMiddleware) for `http::Request<B>`
/// services (see the [module docs](super)).
///
/// ```
/// # use myinvois_auth::{tower::AuthLayer, Credentials, TokenCache};
/// # let cache = TokenCache::builder(Credentials::new("id", "secret"))
/// #     .identity_url("http://127.0.0.1:8080").build()?;
/// let layer = AuthLayer::from_source(std::sync::Arc::new(cache), "http://127.0.0.1:8081")?;
/// # let _ = layer;
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    auth: Auth,
}

/// Its name in its warnings.
const NAME: &str = "AuthLayer";

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.auth, f)
    }
}

impl AuthLayer {
    /// A layer for `cache`, authenticating requests to the API origin of
    /// the cache's environment.
    ///
    /// A cache built from an identity URL alone names no API origin: such a
    /// layer would send every request without a token. It warns (WARN) now,
    /// and once more at the first request that passes through unless an
    /// origin was added with [`api_url`](Self::api_url) before; build it with
    /// [`with_api_url`](Self::with_api_url) instead.
    pub fn new(cache: TokenCache) -> Self {
        AuthLayer {
            auth: Auth::for_cache(cache, NAME),
        }
    }

    /// A layer for `cache`, authenticating requests to the origin
    /// (scheme, host, port) of `api_url` (and to the API origin of the
    /// cache's environment, if it has one). The URL must be `https`, or
    /// `http` to a loopback host, since it receives the token.
    ///
    /// ```
    /// use myinvois_auth::{Credentials, TokenCache, tower::AuthLayer};
    ///
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .identity_url("http://127.0.0.1:8080")
    ///     .build()?;
    /// let auth = AuthLayer::with_api_url(cache.clone(), "http://127.0.0.1:8081")?;
    /// assert!(AuthLayer::with_api_url(cache, "http://example.com").is_err());
    /// # let _ = auth;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn with_api_url(cache: TokenCache, api_url: impl AsRef<str>) -> Result<Self, Error> {
        Ok(AuthLayer {
            auth: Auth::for_cache_and(cache, api_url.as_ref(), NAME)?,
        })
    }

    /// A layer taking its tokens from any [`TokenSource`], authenticating
    /// requests to the origin (scheme, host, port) of `api_url`: `https`,
    /// or `http` to a loopback host, since it receives the token.
    pub fn from_source(
        source: Arc<dyn TokenSource>,
        api_url: impl AsRef<str>,
    ) -> Result<Self, Error> {
        Ok(AuthLayer {
            auth: Auth::for_source(source, api_url.as_ref(), NAME)?,
        })
    }

    /// Also authenticate requests to the origin (scheme, host, port) of
    /// `url` (`https`, or `http` to a loopback host).
    ///
    /// ```
    /// # use myinvois_auth::{tower::AuthLayer, Credentials, TokenCache};
    /// # let cache = TokenCache::builder(Credentials::new("id", "secret"))
    /// #     .identity_url("http://127.0.0.1:8080").build()?;
    /// let layer = AuthLayer::with_api_url(cache, "http://127.0.0.1:8081")?
    ///     .api_url("http://127.0.0.1:8082")?;
    /// assert!(layer.clone().api_url("http://example.com").is_err());
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn api_url(mut self, url: impl AsRef<str>) -> Result<Self, Error> {
        self.auth.add_origin(url.as_ref())?;
        Ok(self)
    }

    /// The source this layer takes its tokens from.
    pub fn source(&self) -> &Arc<dyn TokenSource> {
        self.auth.source()
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService::new(inner, Arc::new(self.auth.clone()))
    }
}
