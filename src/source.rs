//! [`TokenSource`]: what a caller of MyInvois tokens needs from whatever
//! gives them (a [`TokenCache`](crate::TokenCache), or a test's fake), so
//! that other SDKs, [`AuthMiddleware`](crate::AuthMiddleware) and the tower
//! layer depend on the trait, not on the cache.

use std::time::Duration;

use crate::config::DEFAULT_MAX_LOGIN_WAIT;
use crate::error::Error;
use crate::taxpayer::OnBehalfOf;
use crate::token::AccessToken;

/// Anything that gives MyInvois access tokens, and hears back what the API
/// made of them.
///
/// [`TokenCache`](crate::TokenCache) implements it;
/// [`AuthMiddleware`](crate::AuthMiddleware) works over it. The trait is
/// object safe: an SDK that calls MyInvois takes an `Arc<dyn TokenSource>`,
/// and its tests pass a fake (tokens made with [`AccessToken::from_secret`]).
///
/// A caller asks for a token ([`cached_token`](Self::cached_token) first,
/// which never waits, then [`token_for`](Self::token_for)), sends it, and
/// reports the answer: a `401 Unauthorized` with
/// [`rejected`](Self::rejected) (which says whether a new token may help),
/// an answer that shows the token got through with
/// [`accepted`](Self::accepted).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use myinvois_auth::{AccessToken, Error, OnBehalfOf, TokenSource};
///
/// /// Always the same token: enough for an SDK's tests.
/// struct Fixed(AccessToken);
///
/// #[async_trait::async_trait]
/// impl TokenSource for Fixed {
///     async fn token_for(&self, _: Option<&OnBehalfOf>, _: Duration) -> Result<AccessToken, Error> {
///         Ok(self.0.clone())
///     }
///     fn rejected(&self, _: &AccessToken, _: &http::Method, _: &str) -> bool {
///         false // a new token would be the same one
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let source: Arc<dyn TokenSource> =
///     Arc::new(Fixed(AccessToken::from_secret("test-token", Duration::from_secs(3600), None)?));
/// let token = source.token_for(None, source.max_login_wait()).await?;
/// assert_eq!(token.secret(), "test-token");
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// A valid token for `on_behalf_of` (`None`: the plain login, as the
    /// taxpayer itself), waiting at most `wait` for a login to be sent.
    async fn token_for(
        &self,
        on_behalf_of: Option<&OnBehalfOf>,
        wait: Duration,
    ) -> Result<AccessToken, Error>;

    /// A valid token for `on_behalf_of` that is at hand now, without waiting
    /// or I/O: the hot path, called before [`token_for`](Self::token_for)
    /// (which returns a boxed future). The default has none.
    fn cached_token(&self, on_behalf_of: Option<&OnBehalfOf>) -> Option<AccessToken> {
        let _ = on_behalf_of;
        None
    }

    /// How long a caller may wait for a login: what a middleware passes to
    /// [`token_for`](Self::token_for), and the bound of every wait it makes.
    /// Defaults to [`DEFAULT_MAX_LOGIN_WAIT`](crate::DEFAULT_MAX_LOGIN_WAIT).
    fn max_login_wait(&self) -> Duration {
        DEFAULT_MAX_LOGIN_WAIT
    }

    /// The API answered `401 Unauthorized` to `token` at `method` `path`:
    /// returns whether a retry with a new token may help (the source
    /// retires `token`, so that [`token_for`](Self::token_for) gives
    /// another). See [`TokenCache::rejected`](crate::TokenCache::rejected).
    fn rejected(&self, token: &AccessToken, method: &http::Method, path: &str) -> bool;

    /// [`rejected`](Self::rejected), waiting (at most
    /// [`max_login_wait`](Self::max_login_wait)) for a verdict another
    /// caller is deciding at the same endpoint, when the source keeps one.
    /// The default does not wait.
    async fn rejected_waiting(
        &self,
        token: &AccessToken,
        method: &http::Method,
        path: &str,
    ) -> bool {
        self.rejected(token, method, path)
    }

    /// The call rejected at `method` `path` is sent again, once, with the
    /// new `token` (for counters: [`TokenCache`](crate::TokenCache) counts
    /// it in [`CacheStats::retries_after_401`](crate::CacheStats::retries_after_401)).
    /// The default does nothing.
    fn retrying(&self, token: &AccessToken, method: &http::Method, path: &str) {
        let _ = (token, method, path);
    }

    /// The API's answer to `token` at `method` `path` shows the token got
    /// through (see [`TokenCache::accepted`](crate::TokenCache::accepted)).
    /// The default does nothing.
    fn accepted(&self, token: &AccessToken, method: &http::Method, path: &str) {
        let _ = (token, method, path);
    }
}
