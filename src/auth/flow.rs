//! [`Auth`]: one request's way through the auth layer, written once for
//! every client stack ([`Exchange`]): which request gets a token, the token
//! (and the wait before a retried login), the headers, and what a 401
//! leads to (one renewal and one retry when the body can be replayed).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderName, HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use super::exchange::Exchange;
use super::origins::{Origin, Origins};
use crate::cache::TokenCache;
use crate::clock::after;
use crate::error::Error;
use crate::log_limit::{millis, LogLimit};
use crate::login::ON_BEHALF_OF;
use crate::rejection::{endpoint, shows_token_got_through};
use crate::source::TokenSource;
use crate::taxpayer::OnBehalfOf;
use crate::token::AccessToken;

/// A token source and the API origins its tokens go to.
#[derive(Clone)]
pub(crate) struct Auth {
    source: Arc<dyn TokenSource>,
    origins: Origins,
    /// The layer's name in its warnings (`AuthMiddleware`, `AuthLayer`).
    name: &'static str,
    /// What it logs once, or at most once a second (for every clone).
    notes: Arc<Notes>,
}

/// The layer's log lines that are not one per call.
#[derive(Debug, Default)]
struct Notes {
    /// The warning that it has no API origin was given at a request.
    no_origin: AtomicBool,
    /// A retried request waiting out its failed login's `retry_after`.
    ask_again: LogLimit,
    /// A request with no valid token at hand, waiting for the source.
    no_token: LogLimit,
}

/// Left in a request's extensions by a failed login: when asking again for
/// that taxpayer's token may succeed.
#[derive(Debug, Clone)]
struct AskAgainAt {
    at: Instant,
    taxpayer: Option<OnBehalfOf>,
}

impl Auth {
    /// `source`'s tokens go to `origins` only; `name` is the layer's, for
    /// its warnings. Without any origin, no request would ever get a
    /// token: a warning says so now, and another at the first request
    /// that passes through, unless an origin is added before.
    fn new(source: Arc<dyn TokenSource>, origins: Origins, name: &'static str) -> Self {
        if origins.is_empty() {
            tracing::warn!(
                "{name}::new: the cache names no API origin (it was built from an identity URL \
                 alone): no request gets a token until one is added; build it with \
                 {name}::with_api_url(cache, api_url), or give the cache \
                 Environment::custom(identity_url, api_url)"
            );
        }
        Auth {
            source,
            origins,
            name,
            notes: Arc::default(),
        }
    }

    /// For `cache`: its environment's API origin, if it has one.
    pub(crate) fn for_cache(cache: TokenCache, name: &'static str) -> Self {
        let origins = Origins::of(cache.environment().map(|env| env.api_url()).as_ref());
        Auth::new(Arc::new(cache), origins, name)
    }

    /// For `cache`: its environment's API origin, if it has one, and
    /// `api_url`'s.
    pub(crate) fn for_cache_and(
        cache: TokenCache,
        api_url: &str,
        name: &'static str,
    ) -> Result<Self, Error> {
        let mut origins = Origins::of(cache.environment().map(|env| env.api_url()).as_ref());
        origins.add(api_url)?;
        Ok(Auth::new(Arc::new(cache), origins, name))
    }

    /// For any `source`, sending its tokens to `api_url`'s origin.
    pub(crate) fn for_source(
        source: Arc<dyn TokenSource>,
        api_url: &str,
        name: &'static str,
    ) -> Result<Self, Error> {
        let mut origins = Origins::default();
        origins.add(api_url)?;
        Ok(Auth::new(source, origins, name))
    }

    /// Also authenticate requests to the origin of `url`.
    pub(crate) fn add_origin(&mut self, url: &str) -> Result<(), Error> {
        self.origins.add(url)
    }

    /// The token source.
    pub(crate) fn source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }

    /// Whether `request` gets a token (see [`Origins::authenticate`]).
    #[inline]
    pub(crate) fn applies<X: Exchange>(&self, request: &X::Request) -> bool {
        let origin = X::origin(request);
        if self.origins.authenticate(origin, X::headers(request)) {
            return true;
        }
        if self.origins.is_empty() {
            self.no_origin(origin);
        }
        false
    }

    /// A request passes through a layer with no API origin: warned once.
    #[cold]
    fn no_origin(&self, origin: Option<Origin<'_>>) {
        if self.notes.no_origin.swap(true, Ordering::Relaxed) {
            return;
        }
        let to = origin.map_or_else(|| "a URL with no origin".to_owned(), |o| o.to_string());
        tracing::warn!(
            to = %to,
            "{} has no API origin: this request and every other go out without a token; \
             add the API URL with api_url()",
            self.name
        );
    }

    /// Sends `request` (which [`applies`](Self::applies)) with a token
    /// through `next`; on a 401 the token is reported, and, when a new
    /// token may help and the request could be copied, the copy is sent
    /// once more with a new one.
    ///
    /// The future of a request with a cached token that is not answered
    /// 401 holds no more than that way needs: waiting for a token and
    /// the 401's renewal and retry are futures of their own, boxed only
    /// when they happen (a smaller future is a cheaper allocation).
    ///
    /// A function returning an `async move` block, not an `async fn`: an
    /// `async fn` keeps its arguments and its own copies of them, and the
    /// request would take its room in the future twice.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn send<'a, X: Exchange + 'a>(
        &'a self,
        mut next: X,
        mut request: X::Request,
        extensions: &'a mut Extensions,
    ) -> impl Future<Output = Result<X::Response, X::Error>> + 'a {
        async move {
            let taxpayer = X::taxpayer(&request, extensions).cloned();
            let token = {
                // A mark left by a failed login is for this try only.
                let marked = extensions.remove::<AskAgainAt>();
                match self.source.cached_token(taxpayer.as_ref()) {
                    Some(token) => token,
                    None => Box::pin(self.wait_for_token(taxpayer.as_ref(), marked, extensions))
                        .await
                        .map_err(X::fail)?,
                }
            };
            if let Some(taxpayer) = &taxpayer {
                let name = HeaderName::from_static(ON_BEHALF_OF);
                let headers = X::headers_mut(&mut request);
                if !headers.contains_key(&name) {
                    // Validated by the source before it issued the token; a
                    // fake source's may not be.
                    let value = HeaderValue::from_str(taxpayer.as_str())
                        .map_err(|_| X::fail(invalid(taxpayer)))?;
                    headers.insert(name, value);
                }
            }
            // The copy for a retry also names the endpoint afterwards; a request
            // that cannot be copied (a streaming body) names it now.
            let kept = match X::keep(&request) {
                Some(copy) => Kept::Copy(copy),
                None => Kept::Name(X::method(&request).clone(), X::path(&request).to_owned()),
            };
            X::headers_mut(&mut request).insert(AUTHORIZATION, token.authorization_header());
            let response = next.send(request, extensions).await?;
            let status = X::status(&response);
            if status != StatusCode::UNAUTHORIZED {
                if shows_token_got_through(status) {
                    let (method, path) = kept.endpoint::<X>();
                    self.source.accepted(&token, method, path);
                }
                return Ok(response);
            }
            let rejected = Rejected {
                token,
                taxpayer,
                kept,
            };
            Box::pin(self.after_401(next, response, rejected, extensions)).await
        }
    }

    /// A 401 to the request: reported; when a new token may help and the
    /// request was copied, the copy is sent once more with a new token.
    async fn after_401<X: Exchange>(
        &self,
        mut next: X,
        response: X::Response,
        rejected: Rejected<X::Kept>,
        extensions: &mut Extensions,
    ) -> Result<X::Response, X::Error> {
        let Rejected {
            token,
            taxpayer,
            kept,
        } = rejected;
        let (method, path) = kept.endpoint::<X>();
        if !self.source.rejected_waiting(&token, method, path).await {
            // This endpoint's 401s are not about the token: a new one would not help.
            return Ok(response);
        }
        let mut retry = match kept {
            Kept::Copy(kept) => match X::resend(kept) {
                Some(retry) => retry,
                None => {
                    tracing::debug!("401: the request could not be made again, not retried");
                    return Ok(response);
                }
            },
            Kept::Name(method, path) => {
                tracing::debug!(
                    endpoint = %endpoint(&method, &path).template,
                    "401 on a streaming request: its token is retired, the request not retried"
                );
                return Ok(response);
            }
        };
        let fresh = match self.source.cached_token(taxpayer.as_ref()) {
            Some(fresh) => fresh,
            None => {
                let marked = extensions.remove::<AskAgainAt>();
                self.wait_for_token(taxpayer.as_ref(), marked, extensions)
                    .await
                    .map_err(X::fail)?
            }
        };
        if fresh.same_token(&token) {
            return Ok(response);
        }
        X::headers_mut(&mut retry).insert(AUTHORIZATION, fresh.authorization_header());
        let (method, path) = (X::method(&retry).clone(), X::path(&retry).to_owned());
        tracing::info!(
            endpoint = %endpoint(&method, &path).template,
            "401 from the API: retrying once with a new token"
        );
        self.source.retrying(&fresh, &method, &path);
        drop(response);
        let response = next.send(retry, extensions).await?;
        let status = X::status(&response);
        if status == StatusCode::UNAUTHORIZED {
            // Rejected with a fresh token too: learned, nothing invalidated.
            self.source.rejected(&fresh, &method, &path);
        } else if shows_token_got_through(status) {
            self.source.accepted(&fresh, &method, &path);
        }
        Ok(response)
    }

    /// The source's token when none is cached, after what is left of a
    /// failed login's wait (`marked`), within `max_login_wait`.
    ///
    /// A failure that a later login may cure marks the request's
    /// extensions with when to ask again, and for which taxpayer; a retry
    /// of the request (a retry middleware outside this one runs it again
    /// with the same extensions) that still has no valid token waits until
    /// then first, so that it never comes before the 429's `Retry-After`
    /// or the failure memory's back-off. That wait counts against the
    /// caller's `max_login_wait` (a wait longer than that is not made: the
    /// caller gets the error at once, as any caller would).
    async fn wait_for_token(
        &self,
        taxpayer: Option<&OnBehalfOf>,
        marked: Option<AskAgainAt>,
        extensions: &mut Extensions,
    ) -> Result<AccessToken, Error> {
        let mut wait = self.source.max_login_wait();
        if let Some(marked) = marked {
            let now = Instant::now();
            if marked.taxpayer.as_ref() == taxpayer && marked.at > now && marked.at - now <= wait {
                if let Some(left_out) = self.notes.ask_again.allow() {
                    tracing::debug!(
                        wait_ms = millis(marked.at - now),
                        left_out,
                        "a retried request waits out its failed login's retry_after before asking for a token again"
                    );
                }
                tokio::time::sleep_until(marked.at).await;
                wait -= marked.at - now;
            }
        }
        if let Some(left_out) = self.notes.no_token.allow() {
            tracing::debug!(
                max_wait_ms = millis(wait),
                left_out,
                "no valid token at hand: waiting for the token source (a login, or its answer from memory)"
            );
        }
        self.source
            .token_for(taxpayer, wait)
            .await
            .inspect_err(|error| {
                if let (true, Some(later)) = (error.is_transient(), error.retry_after()) {
                    extensions.insert(AskAgainAt {
                        at: after(Instant::now(), later),
                        taxpayer: taxpayer.cloned(),
                    });
                }
            })
    }
}

/// What the way of a request hands on to its 401: the token rejected,
/// the taxpayer, and what was kept of the request.
struct Rejected<K> {
    token: AccessToken,
    taxpayer: Option<OnBehalfOf>,
    kept: Kept<K>,
}

/// What is kept of a request while it is sent: what sending it again
/// after a 401 needs, or, when it cannot be sent again (a streaming body),
/// its method and path, which name its endpoint.
enum Kept<K> {
    Copy(K),
    Name(Method, String),
}

impl<K> Kept<K> {
    /// The method and path of the request.
    fn endpoint<X: Exchange<Kept = K>>(&self) -> (&Method, &str) {
        match self {
            Kept::Copy(copy) => X::kept_endpoint(copy),
            Kept::Name(method, path) => (method, path),
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(self.name)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

fn invalid(taxpayer: &OnBehalfOf) -> Error {
    Error::InvalidTaxpayer {
        value: taxpayer.as_str().to_owned(),
        reason: "it cannot be sent as an HTTP header",
    }
}
