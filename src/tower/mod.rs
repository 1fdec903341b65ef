//! The auth layer for tower clients (hyper-util's `Client`, tonic, any
//! `tower::Service<http::Request<B>>`), with the behaviour of
//! [`AuthMiddleware`](crate::AuthMiddleware): tokens to the API origins
//! only, `onbehalfof` from an [`OnBehalfOf`](crate::OnBehalfOf) extension,
//! a request's own `Authorization` left alone, and on a 401 one renewal and
//! one retry when the body can be replayed ([`ReplayBody`]), with the 401
//! rules of the [`TokenSource`](crate::TokenSource).
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use myinvois_auth::tower::AuthLayer;
//! use myinvois_auth::{Credentials, Environment, TokenCache};
//! use tower::{Layer, ServiceExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
//!     .environment(Environment::Sandbox)
//!     .build()?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let service = AuthLayer::new(cache).layer(client);
//! let request = http::Request::get("https://preprod-api.myinvois.hasil.gov.my/api/v1.0/documenttypes")
//!     .body(Full::new(Bytes::new()))?;
//! let response = service.oneshot(request).await?;
//! # let _ = response; Ok(()) }
//! ```
//!
//! The service's error is a `Box<dyn std::error::Error + Send + Sync>`
//! (tower's `BoxError`): the inner service's, or a login's
//! [`Error`](crate::Error), which
//! [`Error::find_in_error`](crate::Error::find_in_error) finds. A retry
//! layer outside reads the login's wait from
//! [`Error::retry_after`](crate::Error::retry_after).
//!
//! - `layer`: [`AuthLayer`], built over a token source and its API origins;
//! - `service`: [`AuthService`], the layer around a service;
//! - `future`: [`ResponseFuture`], its answer;
//! - `body`: [`ReplayBody`], the bodies a retry can send again.

mod body;
mod future;
mod layer;
mod service;

pub use self::body::ReplayBody;
pub use self::future::ResponseFuture;
pub use self::layer::AuthLayer;
pub use self::service::AuthService;

/// The error of [`AuthService`]: tower's `BoxError`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
