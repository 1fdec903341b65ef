//! [`AuthService`]: the layer around a tower service; its requests go the
//! way every client stack's go ([`Auth`]), through the [`Exchange`] of
//! `http::Request<B>` and the inner service.

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode};
use tower_service::Service;

use super::body::ReplayBody;
use super::future::ResponseFuture;
use super::BoxError;
use crate::auth::{Auth, Exchange, Origin};
use crate::error::Error;
use crate::taxpayer::OnBehalfOf;

/// A tower service that authenticates MyInvois API calls, made by
/// [`AuthLayer`](super::AuthLayer).
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S> AuthService<S> {
    pub(super) fn new(inner: S, auth: Arc<Auth>) -> Self {
        AuthService { inner, auth }
    }
}

/// An inner service's requests, as the way of a request sees them. A
/// tower request carries its extensions: the mark a failed login leaves
/// for a retry is not kept (a tower retry policy reads the error's
/// `retry_after` instead).
struct Tower<S, B> {
    inner: S,
    body: PhantomData<fn(B)>,
}

impl<S, B, R> Exchange for Tower<S, B>
where
    S: Service<Request<B>, Response = Response<R>> + Send,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: ReplayBody + Send,
    R: Send,
{
    type Request = Request<B>;
    type Response = Response<R>;
    type Error = BoxError;
    type Kept = Request<B>;

    #[inline]
    fn origin(request: &Request<B>) -> Option<Origin<'_>> {
        Origin::of_uri(request.uri())
    }
    #[inline]
    fn headers(request: &Request<B>) -> &HeaderMap {
        request.headers()
    }
    #[inline]
    fn headers_mut(request: &mut Request<B>) -> &mut HeaderMap {
        request.headers_mut()
    }
    #[inline]
    fn method(request: &Request<B>) -> &Method {
        request.method()
    }
    #[inline]
    fn path(request: &Request<B>) -> &str {
        request.uri().path()
    }
    #[inline]
    fn taxpayer<'a>(request: &'a Request<B>, _: &'a Extensions) -> Option<&'a OnBehalfOf> {
        request.extensions().get::<OnBehalfOf>()
    }
    #[inline]
    fn kept_endpoint(kept: &Request<B>) -> (&Method, &str) {
        (kept.method(), kept.uri().path())
    }
    #[inline]
    fn resend(kept: Request<B>) -> Option<Request<B>> {
        Some(kept)
    }
    fn keep(request: &Request<B>) -> Option<Request<B>> {
        let mut copy = Request::new(request.body().try_clone_body()?);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
    #[inline]
    fn status(response: &Response<R>) -> StatusCode {
        response.status()
    }
    fn fail(error: Error) -> BoxError {
        Box::new(error)
    }
    async fn send<'e>(
        &'e mut self,
        request: Request<B>,
        _: &'e mut Extensions,
    ) -> Result<Response<R>, BoxError> {
        std::future::poll_fn(|cx| self.inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        self.inner.call(request).await.map_err(Into::into)
    }
}

impl<S, B, R> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: ReplayBody + Send + 'static,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Response<R>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !self.auth.applies::<Tower<S, B>>(&request) {
            return ResponseFuture::direct(self.inner.call(request));
        }
        // The service made ready goes with the request; this one keeps a clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        ResponseFuture::authenticated(Box::pin(async move {
            let next = Tower {
                inner,
                body: PhantomData,
            };
            auth.send(next, request, &mut Extensions::new()).await
        }))
    }
}
