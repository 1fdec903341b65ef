//! [`Exchange`]: what the way of one request through [`Auth`](super::Auth)
//! needs of a client stack (reqwest-middleware's or tower's): reading and
//! changing the request, copying it for a retry, the status of the answer,
//! and sending to the next layer.

use std::future::Future;

use http::{Extensions, HeaderMap, Method, StatusCode};

use super::origins::Origin;
use crate::error::Error;
use crate::taxpayer::OnBehalfOf;

/// One client stack's requests and next layer, as the shared way of a
/// request sees them.
pub(crate) trait Exchange {
    /// The stack's request.
    type Request: Send;
    /// The stack's response.
    type Response: Send;
    /// The stack's error (a login failure becomes one with [`fail`](Self::fail)).
    type Error: Send;
    /// What is kept of a request to send it again after a 401.
    type Kept: Send;

    /// The origin the request goes to, if its URL names one.
    fn origin(request: &Self::Request) -> Option<Origin<'_>>;
    /// The request's headers.
    fn headers(request: &Self::Request) -> &HeaderMap;
    /// The request's headers, to change.
    fn headers_mut(request: &mut Self::Request) -> &mut HeaderMap;
    /// The request's method.
    fn method(request: &Self::Request) -> &Method;
    /// The request's path (without the query).
    fn path(request: &Self::Request) -> &str;
    /// The taxpayer the request acts for: its [`OnBehalfOf`] extension (in
    /// the request, or in the stack's `extensions`).
    fn taxpayer<'a>(
        request: &'a Self::Request,
        extensions: &'a Extensions,
    ) -> Option<&'a OnBehalfOf>;
    /// What sending `request` again after a 401 needs, when its body can
    /// be replayed.
    fn keep(request: &Self::Request) -> Option<Self::Kept>;
    /// The method and path of a kept request (its endpoint).
    fn kept_endpoint(kept: &Self::Kept) -> (&Method, &str);
    /// The request again, from what was kept (`None` if it cannot be made).
    fn resend(kept: Self::Kept) -> Option<Self::Request>;
    /// The status of the response.
    fn status(response: &Self::Response) -> StatusCode;
    /// A login failure as the stack's error.
    fn fail(error: Error) -> Self::Error;
    /// Sends `request` to the next layer (the next layer's own future
    /// where it has one: no future of its own around it).
    fn send<'e>(
        &'e mut self,
        request: Self::Request,
        extensions: &'e mut Extensions,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send;
}
