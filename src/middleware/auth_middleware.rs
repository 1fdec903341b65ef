//! [`AuthMiddleware`]: adds the bearer token to MyInvois API calls and
//! recovers from a rejected token with one login and one retry (the way
//! of a request is `auth`'s, shared with the tower layer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::retry_copy::RetryCopy;
use crate::auth::{Auth, Exchange, Origin};
use crate::cache::TokenCache;
use crate::error::Error;
use crate::source::TokenSource;
use crate::taxpayer::OnBehalfOf;

/// A `reqwest-middleware` layer that authenticates MyInvois API calls.
///
/// For every request to one of its API origins (the cache's environment API,
/// plus any added with [`api_url`](Self::api_url)) that does not already carry
/// `Authorization`, it:
///
/// 1. takes a token from its [`TokenSource`] (a [`TokenCache`], or any
///    other: see [`from_source`](Self::from_source)) (the taxpayer's, when the request
///    carries an [`OnBehalfOf`] extension, which also adds the `onbehalfof`
///    header unless the request has one) and sets `Authorization: Bearer …`;
/// 2. on a `401 Unauthorized`, invalidates that token (only if it is still the
///    cached one), obtains a new one, and retries the request once. A burst of
///    401s caused by one revoked token causes one login. An endpoint whose
///    401s a new token does not cure costs at most one login per
///    `rejection_memory`, for all taxpayers together: once it has rejected a
///    fresh token too, its 401s are handed back and nothing is invalidated,
///    and while one taxpayer's renewal there decides, the others' 401s wait
///    for its verdict (see [`TokenCache::rejected`]).
///
/// Requests to any other origin pass through untouched and never see a token.
///
/// ```no_run
/// use myinvois_auth::{AuthMiddleware, Credentials, Environment, OnBehalfOf, TokenCache};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
///     .environment(Environment::Sandbox)
///     .build()?;
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(AuthMiddleware::new(cache.clone()))
///     .build();
/// let url = "https://preprod-api.myinvois.hasil.gov.my/api/v1.0/documenttypes";
/// let mine = client.get(url).send().await?;
/// let theirs = client.get(url).with_extension(OnBehalfOf::new("C25845632020")).send().await?;
/// # let _ = (mine, theirs); Ok(()) }
/// ```
///
/// # Note
///
/// The retry sends a copy of the request made before the first attempt with
/// `Request::try_clone`. A request with a streaming body cannot be copied: it
/// is not retried, and the caller gets the 401 response; its token is still
/// retired, so the next call carries a new one.
///
/// Login failures come back as [`reqwest_middleware::Error::Middleware`] holding
/// an [`Error`]; [`Error::find_in`] takes it out, whatever other layers
/// wrapped it in. To retry the failures a new login can cure, put
/// reqwest-retry outside this layer with `retry::LoginRetryStrategy` (cargo
/// feature `retry`): a retried request then waits for the failure's
/// `retry_after` before asking for a token again.
#[derive(Clone)]
pub struct AuthMiddleware {
    auth: Auth,
}

/// Its name in its warnings.
const NAME: &str = "AuthMiddleware";

impl std::fmt::Debug for AuthMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.auth, f)
    }
}

impl AuthMiddleware {
    /// A middleware for `cache`, authenticating requests to the API origin of
    /// the cache's environment.
    ///
    /// A cache built from an identity URL alone names no API origin: such a
    /// middleware would send every request without a token. It warns (WARN) now,
    /// and once more at the first request that passes through unless an
    /// origin was added with [`api_url`](Self::api_url) before; build it with
    /// [`with_api_url`](Self::with_api_url) instead.
    pub fn new(cache: TokenCache) -> Self {
        AuthMiddleware {
            auth: Auth::for_cache(cache, NAME),
        }
    }

    /// A middleware for `cache`, authenticating requests to the origin
    /// (scheme, host, port) of `api_url` (and to the API origin of the
    /// cache's environment, if it has one). The URL must be `https`, or
    /// `http` to a loopback host, since it receives the token.
    ///
    /// ```
    /// use myinvois_auth::{Credentials, TokenCache, AuthMiddleware};
    ///
    /// let cache = TokenCache::builder(Credentials::new("id", "secret"))
    ///     .identity_url("http://127.0.0.1:8080")
    ///     .build()?;
    /// let auth = AuthMiddleware::with_api_url(cache.clone(), "http://127.0.0.1:8081")?;
    /// assert!(AuthMiddleware::with_api_url(cache, "http://example.com").is_err());
    /// # let _ = auth;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn with_api_url(cache: TokenCache, api_url: impl AsRef<str>) -> Result<Self, Error> {
        Ok(AuthMiddleware {
            auth: Auth::for_cache_and(cache, api_url.as_ref(), NAME)?,
        })
    }

    /// A middleware taking its tokens from any [`TokenSource`] (a
    /// [`TokenCache`], another SDK's, a test's fake), authenticating
    /// requests to the origin (scheme, host, port) of `api_url`; add more
    /// with [`api_url`](Self::api_url). The URL must be `https`, or `http`
    /// to a loopback host, since it receives the token.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use myinvois_auth::{AuthMiddleware, Credentials, TokenCache, TokenSource};
    /// # let cache = TokenCache::builder(Credentials::new("id", "secret"))
    /// #     .identity_url("http://127.0.0.1:8080").build()?;
    /// let source: Arc<dyn TokenSource> = Arc::new(cache);
    /// let auth = AuthMiddleware::from_source(source, "http://127.0.0.1:8081")?;
    /// # let _ = auth;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn from_source(
        source: Arc<dyn TokenSource>,
        api_url: impl AsRef<str>,
    ) -> Result<Self, Error> {
        Ok(AuthMiddleware {
            auth: Auth::for_source(source, api_url.as_ref(), NAME)?,
        })
    }

    /// Also authenticate requests to the origin (scheme, host, port) of `url`.
    /// It must be `https`, or `http` to a loopback host, since it receives the token.
    ///
    /// ```
    /// # use myinvois_auth::{AuthMiddleware, Credentials, TokenCache};
    /// # let cache = TokenCache::builder(Credentials::new("id", "secret"))
    /// #     .identity_url("http://127.0.0.1:8080").build()?;
    /// let auth = AuthMiddleware::with_api_url(cache, "http://127.0.0.1:8081")?
    ///     .api_url("http://127.0.0.1:8082")?;
    /// assert!(auth.clone().api_url("http://example.com").is_err());
    /// # let _ = auth;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn api_url(mut self, url: impl AsRef<str>) -> Result<Self, Error> {
        self.auth.add_origin(url.as_ref())?;
        Ok(self)
    }

    /// The source this middleware takes its tokens from.
    pub fn source(&self) -> &Arc<dyn TokenSource> {
        self.auth.source()
    }
}

/// reqwest-middleware's requests and next layer.
struct Reqwest<'a> {
    next: Next<'a>,
}

impl<'a> Exchange for Reqwest<'a> {
    type Request = Request;
    type Response = Response;
    type Error = reqwest_middleware::Error;
    type Kept = RetryCopy;

    #[inline]
    fn origin(request: &Request) -> Option<Origin<'_>> {
        Origin::of_url(request.url())
    }
    #[inline]
    fn headers(request: &Request) -> &HeaderMap {
        request.headers()
    }
    #[inline]
    fn headers_mut(request: &mut Request) -> &mut HeaderMap {
        request.headers_mut()
    }
    #[inline]
    fn method(request: &Request) -> &Method {
        request.method()
    }
    #[inline]
    fn path(request: &Request) -> &str {
        request.url().path()
    }
    #[inline]
    fn taxpayer<'r>(_: &'r Request, extensions: &'r Extensions) -> Option<&'r OnBehalfOf> {
        extensions.get::<OnBehalfOf>()
    }
    #[inline]
    fn keep(request: &Request) -> Option<RetryCopy> {
        RetryCopy::of(request)
    }
    #[inline]
    fn kept_endpoint(kept: &RetryCopy) -> (&Method, &str) {
        kept.endpoint()
    }
    fn resend(kept: RetryCopy) -> Option<Request> {
        kept.into_request()
    }
    #[inline]
    fn status(response: &Response) -> StatusCode {
        response.status()
    }
    fn fail(error: Error) -> reqwest_middleware::Error {
        reqwest_middleware::Error::middleware(error)
    }
    fn send<'e>(
        &'e mut self,
        request: Request,
        extensions: &'e mut Extensions,
    ) -> impl Future<Output = reqwest_middleware::Result<Response>> + Send + use<'a, 'e> {
        self.next.clone().run(request, extensions)
    }
}

/// The signature `#[async_trait]` gives `Middleware::handle`, written out:
/// a request to another origin is handed on with no future of its own, and
/// one that gets a token is one boxed future, the way of `auth` itself.
impl Middleware for AuthMiddleware {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        request: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        if !self.auth.applies::<Reqwest<'_>>(&request) {
            return next.run(request, extensions);
        }
        Box::pin(self.auth.send(Reqwest { next }, request, extensions))
    }
}
