//! [`ResponseFuture`]: the answer of [`AuthService`](super::AuthService):
//! the inner service's own future for a request that gets no token, a
//! boxed one for a request that does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::BoxError;

type Boxed<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

pin_project_lite::pin_project! {
    /// The answer of [`AuthService`](super::AuthService).
    pub struct ResponseFuture<F, R> {
        #[pin]
        kind: Kind<F, R>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, R> {
        /// A request that gets no token: the inner service's answer.
        Direct { #[pin] future: F },
        /// A request that gets a token (and maybe a retry).
        Authenticated { future: Boxed<R> },
    }
}

impl<F, R> ResponseFuture<F, R> {
    pub(super) fn direct(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Direct { future },
        }
    }

    pub(super) fn authenticated(future: Boxed<R>) -> Self {
        ResponseFuture {
            kind: Kind::Authenticated { future },
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { future } => future.poll(cx).map_err(Into::into),
            KindProj::Authenticated { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, R> std::fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
