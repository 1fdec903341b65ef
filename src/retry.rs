//! Retrying failed logins with `reqwest-retry` (cargo feature `retry`).
//!
//! reqwest-retry's default strategy calls every middleware error `Fatal`,
//! so a login that failed for a moment (a 503, a timeout) fails the call.
//! [`LoginRetryStrategy`] tells it which login failures a retry can cure:
//!
//! - **retried:** 5xx and 408 from the identity service, timeouts, transport
//!   failures, garbled answers (empty, cut, not JSON), abandoned logins, and
//!   [`Error::RateLimited`] (by the server's 429 or by the login budget);
//! - **never retried:** OAuth errors (`invalid_client`, `invalid_grant`, …),
//!   redirects, well-formed answers with unusable content (a `token_type`
//!   other than Bearer, a bad `expires_in`), configuration and taxpayer
//!   errors: a new login cannot cure
//!   them, and retrying would only spend the login budget every taxpayer of
//!   the client ID shares (the cache answers them from memory anyway).
//!
//! Everything else (the API's own responses and transport errors) goes to
//! the inner strategy, reqwest-retry's default unless you give another.
//!
//! A retry never comes before the failure's `retry_after` (the 429's
//! `Retry-After`, the budget's next slot, or the cache's back-off):
//! [`AuthMiddleware`](crate::AuthMiddleware) marks the request's extensions
//! when its login fails, and on the retry waits out what is left of that
//! time first, when that fits within the cache's
//! [`max_login_wait`](crate::TokenCacheBuilder::max_login_wait).
//!
//! # The order of the stack
//!
//! Tracing outermost (one span per call, retries included), then retry, then
//! auth. Retry must sit outside auth: inside, it would only see the API
//! call, never the login.
//!
//! ```
//! use myinvois_auth::{retry, AuthMiddleware, Credentials, TokenCache};
//! use reqwest_retry::policies::ExponentialBackoff;
//!
//! # fn build() -> Result<(), myinvois_auth::Error> {
//! let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
//!     .environment(myinvois_auth::Environment::Sandbox)
//!     .build()?;
//! let policy = ExponentialBackoff::builder().build_with_max_retries(3);
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     // .with(reqwest_tracing::TracingMiddleware::default()) // outermost
//!     .with(retry::middleware(policy))
//!     .with(AuthMiddleware::new(cache))
//!     .build();
//! # let _ = client; Ok(()) }
//! ```

use reqwest::Response;
use reqwest_retry::{DefaultRetryableStrategy, RetryPolicy, RetryTransientMiddleware};
use reqwest_retry::{Retryable, RetryableStrategy};

use crate::error::Error;

/// A reqwest-retry strategy that retries login failures a new login can
/// cure and never those it cannot (see the [module docs](self)). Other
/// outcomes are left to `inner`.
///
/// ```
/// use myinvois_auth::retry::LoginRetryStrategy;
/// use myinvois_auth::{Error, OAuthErrorCode};
/// use reqwest_retry::{Retryable, RetryableStrategy};
///
/// let strategy = LoginRetryStrategy::new();
/// let failed = |e: Error| Err(reqwest_middleware::Error::middleware(e));
/// let busy = Error::IdentityService { status: 503, retry_after: None };
/// assert!(strategy.handle(&failed(busy)) == Some(Retryable::Transient));
/// let refused = Error::OAuth {
///     status: 400,
///     code: OAuthErrorCode::InvalidClient,
///     description: None,
///     uri: None,
///     retry_after: None,
/// };
/// assert!(strategy.handle(&failed(refused)) == Some(Retryable::Fatal));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginRetryStrategy<S = DefaultRetryableStrategy> {
    inner: S,
}

impl LoginRetryStrategy {
    /// Login failures as above; everything else as reqwest-retry's default.
    ///
    /// [`middleware`] builds the same; by hand, with reqwest-retry's own
    /// constructor:
    ///
    /// ```
    /// use myinvois_auth::retry::LoginRetryStrategy;
    /// use reqwest_retry::policies::ExponentialBackoff;
    /// use reqwest_retry::RetryTransientMiddleware;
    ///
    /// let policy = ExponentialBackoff::builder().build_with_max_retries(3);
    /// let retry = RetryTransientMiddleware::new_with_policy_and_strategy(
    ///     policy,
    ///     LoginRetryStrategy::new(),
    /// );
    /// # let _ = retry;
    /// ```
    pub fn new() -> Self {
        LoginRetryStrategy {
            inner: DefaultRetryableStrategy,
        }
    }
}

impl<S: RetryableStrategy> LoginRetryStrategy<S> {
    /// Login failures as above; everything else as `inner` decides. Keep
    /// your own rule for the API's answers and add this one for logins:
    ///
    /// ```
    /// use myinvois_auth::retry::LoginRetryStrategy;
    /// use myinvois_auth::{Error, OAuthErrorCode};
    /// use reqwest_retry::policies::ExponentialBackoff;
    /// use reqwest_retry::{
    ///     default_on_request_failure, default_on_request_success, Retryable, RetryableStrategy,
    ///     RetryTransientMiddleware,
    /// };
    ///
    /// /// The application's rule: retry the API's 409 Conflict too.
    /// struct RetryConflicts;
    ///
    /// impl RetryableStrategy for RetryConflicts {
    ///     fn handle(
    ///         &self,
    ///         res: &Result<reqwest::Response, reqwest_middleware::Error>,
    ///     ) -> Option<Retryable> {
    ///         match res {
    ///             Ok(answer) if answer.status() == 409 => Some(Retryable::Transient),
    ///             Ok(answer) => default_on_request_success(answer),
    ///             Err(error) => default_on_request_failure(error),
    ///         }
    ///     }
    /// }
    ///
    /// let policy = ExponentialBackoff::builder().build_with_max_retries(3);
    /// let retry = RetryTransientMiddleware::new_with_policy_and_strategy(
    ///     policy,
    ///     LoginRetryStrategy::with_inner(RetryConflicts),
    /// );
    /// # let _ = retry;
    ///
    /// // The API's answers go to RetryConflicts; login failures never do.
    /// let strategy = LoginRetryStrategy::with_inner(RetryConflicts);
    /// let conflict = http::Response::builder().status(409).body("").unwrap();
    /// assert!(strategy.handle(&Ok(conflict.into())) == Some(Retryable::Transient));
    /// let refused = Error::OAuth {
    ///     status: 400,
    ///     code: OAuthErrorCode::InvalidClient,
    ///     description: None,
    ///     uri: None,
    ///     retry_after: None,
    /// };
    /// let failed = Err(reqwest_middleware::Error::middleware(refused));
    /// assert!(strategy.handle(&failed) == Some(Retryable::Fatal));
    /// ```
    pub fn with_inner(inner: S) -> Self {
        LoginRetryStrategy { inner }
    }
}

impl<S: RetryableStrategy> RetryableStrategy for LoginRetryStrategy<S> {
    fn handle(&self, res: &Result<Response, reqwest_middleware::Error>) -> Option<Retryable> {
        if let Err(err) = res {
            if let Some(ours) = Error::find_in(err) {
                return Some(if ours.is_transient() {
                    Retryable::Transient
                } else {
                    Retryable::Fatal
                });
            }
        }
        self.inner.handle(res)
    }
}

/// reqwest-retry's middleware with `policy` and a [`LoginRetryStrategy`]:
/// put it outside [`AuthMiddleware`](crate::AuthMiddleware) (see the
/// [module docs](self)).
///
/// ```
/// use reqwest_retry::policies::ExponentialBackoff;
/// let retry = myinvois_auth::retry::middleware(ExponentialBackoff::builder().build_with_max_retries(2));
/// # let _ = retry;
/// ```
pub fn middleware<P>(policy: P) -> RetryTransientMiddleware<P, LoginRetryStrategy>
where
    P: RetryPolicy + Send + Sync + 'static,
{
    RetryTransientMiddleware::new_with_policy_and_strategy(policy, LoginRetryStrategy::new())
}

#[cfg(test)]
mod tests;
