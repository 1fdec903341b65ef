//! [`AuthMiddleware`]: adds the bearer token to MyInvois API calls and
//! recovers from a rejected token with one login and one retry.

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderName, HeaderValue, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;
use url::Url;

use crate::cache::TokenCache;
use crate::clock::after;
use crate::config::parse_secure_url;
use crate::error::Error;
use crate::login::ON_BEHALF_OF;
use crate::redact;
use crate::rejection::shows_token_got_through;
use crate::taxpayer::OnBehalfOf;
use crate::token::AccessToken;

/// A `reqwest-middleware` layer that authenticates MyInvois API calls.
///
/// For every request to one of its API origins (the cache's environment API,
/// plus any added with [`api_url`](Self::api_url)) that does not already carry
/// `Authorization`, it:
///
/// 1. takes a token from the [`TokenCache`] (the taxpayer's, when the request
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
#[derive(Debug, Clone)]
pub struct AuthMiddleware {
    cache: TokenCache,
    origins: Vec<ApiOrigin>,
}

/// scheme, host and port, compared without allocating on each request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiOrigin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl ApiOrigin {
    fn of(url: &Url) -> Option<Self> {
        Some(ApiOrigin {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default(),
        })
    }

    fn matches(&self, url: &Url) -> bool {
        url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == self.port
    }
}

impl AuthMiddleware {
    /// A middleware for `cache`, authenticating requests to the API origin of
    /// the cache's environment (none when the cache was built with only an
    /// identity URL: add one with [`api_url`](Self::api_url)).
    pub fn new(cache: TokenCache) -> Self {
        let origins = cache
            .environment()
            .and_then(|env| ApiOrigin::of(&env.api_url()))
            .into_iter()
            .collect();
        AuthMiddleware { cache, origins }
    }

    /// Also authenticate requests to the origin (scheme, host, port) of `url`.
    /// It must be `https`, or `http` to a loopback host, since it receives the token.
    ///
    /// ```
    /// # use myinvois_auth::{AuthMiddleware, Credentials, TokenCache};
    /// # let cache = TokenCache::builder(Credentials::new("id", "secret"))
    /// #     .identity_url("http://127.0.0.1:8080").build()?;
    /// let auth = AuthMiddleware::new(cache).api_url("http://127.0.0.1:8081")?;
    /// assert!(AuthMiddleware::new(auth.cache().clone()).api_url("http://example.com").is_err());
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn api_url(mut self, url: impl AsRef<str>) -> Result<Self, Error> {
        let url = parse_secure_url("API URL", url.as_ref())?;
        let origin = ApiOrigin::of(&url)
            .ok_or_else(|| Error::InvalidConfig("the API URL has no host".into()))?;
        if !self.origins.contains(&origin) {
            self.origins.push(origin);
        }
        Ok(self)
    }

    /// The cache this middleware takes its tokens from.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    fn authenticates(&self, request: &Request) -> bool {
        !request.headers().contains_key(AUTHORIZATION)
            && self.origins.iter().any(|o| o.matches(request.url()))
    }

    /// The token for the request, or the login's error. A failure that a
    /// later login may cure marks the request's extensions with when to ask
    /// again, and for which taxpayer; a retry of the request (a retry
    /// middleware outside this one runs it again with the same extensions)
    /// that still has no valid token waits until then first, so that it
    /// never comes before the 429's `Retry-After` or the failure memory's
    /// back-off. That wait counts against the caller's `max_login_wait`
    /// (a wait longer than that is not made: the caller gets the error at
    /// once, as any caller would).
    async fn token(
        &self,
        taxpayer: Option<&OnBehalfOf>,
        extensions: &mut Extensions,
    ) -> reqwest_middleware::Result<AccessToken> {
        let mut wait = self.cache.max_login_wait();
        if let Some(marked) = extensions.remove::<AskAgainAt>() {
            let now = Instant::now();
            if marked.taxpayer.as_ref() == taxpayer
                && marked.at > now
                && marked.at - now <= wait
                && !self.cache.has_token(taxpayer)
            {
                tokio::time::sleep_until(marked.at).await;
                wait -= marked.at - now;
            }
        }
        self.cache.token_for(taxpayer, wait).await.map_err(|error| {
            if let (true, Some(later)) = (error.is_transient(), error.retry_after()) {
                extensions.insert(AskAgainAt {
                    at: after(Instant::now(), later),
                    taxpayer: taxpayer.cloned(),
                });
            }
            reqwest_middleware::Error::middleware(error)
        })
    }
}

/// Left in a request's extensions by a failed login: when asking again for
/// that taxpayer's token may succeed.
#[derive(Debug, Clone)]
struct AskAgainAt {
    at: Instant,
    taxpayer: Option<OnBehalfOf>,
}

#[async_trait::async_trait]
impl Middleware for AuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if !self.authenticates(&request) {
            return next.run(request, extensions).await;
        }
        let taxpayer = extensions.get::<OnBehalfOf>().cloned();
        let token = self.token(taxpayer.as_ref(), extensions).await?;
        if let Some(taxpayer) = &taxpayer {
            let name = HeaderName::from_static(ON_BEHALF_OF);
            if !request.headers().contains_key(&name) {
                // Validated by the cache before it issued the token.
                let value = HeaderValue::from_str(taxpayer.as_str())
                    .map_err(|_| reqwest_middleware::Error::middleware(invalid(taxpayer)))?;
                request.headers_mut().insert(name, value);
            }
        }
        // The copy for a retry also names the endpoint afterwards; a request
        // that cannot be copied (a streaming body) names it now.
        let retry = request.try_clone();
        let named;
        let (method, path) = match &retry {
            Some(copy) => (copy.method(), copy.url().path()),
            None => {
                named = (request.method().clone(), request.url().path().to_owned());
                (&named.0, named.1.as_str())
            }
        };
        request
            .headers_mut()
            .insert(AUTHORIZATION, token.authorization_header());
        let response = next.clone().run(request, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            if shows_token_got_through(response.status()) {
                self.cache.accepted(&token, method, path);
            }
            return Ok(response);
        }
        if !self.cache.rejected_waiting(&token, method, path).await {
            // This endpoint's 401s are not about the token: a new one would not help.
            return Ok(response);
        }
        let (method, path) = (method.clone(), path.to_owned());
        let Some(mut retry) = retry else {
            tracing::debug!(url = %redact::without_secrets(response.url()), "401 on a streaming request: its token is retired, the request not retried");
            return Ok(response);
        };
        let fresh = self.token(taxpayer.as_ref(), extensions).await?;
        if fresh.same_token(&token) {
            return Ok(response);
        }
        retry
            .headers_mut()
            .insert(AUTHORIZATION, fresh.authorization_header());
        tracing::info!(url = %redact::without_secrets(response.url()), "401 from the API: retrying once with a new token");
        self.cache.counters().retry_after_401();
        drop(response);
        let response = next.run(retry, extensions).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            // Rejected with a fresh token too: learned, nothing invalidated.
            self.cache.rejected(&fresh, &method, &path);
        } else if shows_token_got_through(response.status()) {
            self.cache.accepted(&fresh, &method, &path);
        }
        Ok(response)
    }
}

fn invalid(taxpayer: &OnBehalfOf) -> Error {
    Error::InvalidTaxpayer {
        value: taxpayer.as_str().to_owned(),
        reason: "it cannot be sent as an HTTP header",
    }
}
