//! [`ReplayBody`]: a request body the layer can send again after a 401, or
//! that it knows it cannot (a stream).

/// A request body that may be sent a second time: after a 401 the layer
/// retries with a new token only when [`try_clone_body`](Self::try_clone_body)
/// gives a copy, made before the first attempt. A body that cannot be
/// copied (a stream) is sent once; on a 401 its token is still retired, so
/// the next call carries a new one, and the caller gets the 401.
///
/// Implemented for `http_body_util`'s `Full` (a cheap copy for `Bytes`),
/// `Empty`, `Either` and `String`, and, as never copied, `BoxBody`, `UnsyncBoxBody` and
/// `StreamBody`. Implement it for a body of your own:
///
/// ```
/// use myinvois_auth::tower::ReplayBody;
///
/// struct Invoice(bytes::Bytes);
///
/// impl ReplayBody for Invoice {
///     fn try_clone_body(&self) -> Option<Self> {
///         Some(Invoice(self.0.clone()))
///     }
/// }
/// # let _ = Invoice(bytes::Bytes::new()).try_clone_body();
/// ```
pub trait ReplayBody: Sized {
    /// A copy to send again, or `None` when the body cannot be sent twice.
    fn try_clone_body(&self) -> Option<Self>;
}

impl<D: Clone> ReplayBody for http_body_util::Full<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for http_body_util::Empty<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

impl<L: ReplayBody, R: ReplayBody> ReplayBody for http_body_util::Either<L, R> {
    fn try_clone_body(&self) -> Option<Self> {
        match self {
            http_body_util::Either::Left(left) => {
                left.try_clone_body().map(http_body_util::Either::Left)
            }
            http_body_util::Either::Right(right) => {
                right.try_clone_body().map(http_body_util::Either::Right)
            }
        }
    }
}

impl ReplayBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D, E> ReplayBody for http_body_util::combinators::BoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<D, E> ReplayBody for http_body_util::combinators::UnsyncBoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<S> ReplayBody for http_body_util::StreamBody<S> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}
