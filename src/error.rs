//! The one error type of this crate, and the OAuth error codes it parses.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong while configuring the cache or obtaining a token.
///
/// The type is `Clone` because one failed login is handed to every caller that
/// waited on it. No variant ever holds the client secret or an access token:
/// their `Display` and `Debug` output is safe to log.
///
/// Through [`AuthMiddleware`](crate::AuthMiddleware) the error arrives wrapped in
/// [`reqwest_middleware::Error::Middleware`]; take it out with `downcast_ref`:
///
/// ```
/// use myinvois_auth::{Error, OAuthErrorCode};
///
/// fn explain(err: &reqwest_middleware::Error) -> String {
///     match err {
///         reqwest_middleware::Error::Middleware(inner) => match inner.downcast_ref::<Error>() {
///             Some(Error::OAuth { code: OAuthErrorCode::InvalidClient, .. }) => {
///                 "check the client ID and secret".to_owned()
///             }
///             Some(Error::RateLimited { retry_after }) => format!("try again in {retry_after:?}"),
///             Some(other) => other.to_string(),
///             None => inner.to_string(),
///         },
///         reqwest_middleware::Error::Reqwest(e) => e.to_string(),
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given settings that cannot work (missing environment, a
    /// URL that is not `https` and not loopback, an empty client ID, …).
    /// Fix the configuration; retrying does not help.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A taxpayer identifier given to [`OnBehalfOf`](crate::OnBehalfOf) or
    /// [`TokenCache::token_on_behalf_of`](crate::TokenCache::token_on_behalf_of)
    /// is not a TIN (`C25845632020`) or `TIN:ROB` value.
    #[error("invalid taxpayer identifier {value:?}: {reason}")]
    InvalidTaxpayer {
        /// The identifier as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The identity service refused the login with an OAuth error
    /// (HTTP 400 or 401 with an `error` body). `invalid_client` usually means a
    /// wrong ID or secret, or a blocked or expired system user.
    #[error("login rejected by the identity service (HTTP {status}): {code}{}", describe(.description))]
    OAuth {
        /// The HTTP status the identity service answered with.
        status: u16,
        /// The parsed OAuth error code.
        code: OAuthErrorCode,
        /// `error_description`, when the service sent one.
        description: Option<String>,
        /// `error_uri`, when the service sent one.
        uri: Option<String>,
    },

    /// No login could be made for this client ID: the identity service
    /// answered HTTP 429, or the login budget (12 a minute by default) has no
    /// slot before this caller's wait runs out. Callers holding a valid token
    /// never see this.
    #[error("login rate limit reached{}", describe_retry(.retry_after))]
    RateLimited {
        /// How long until a login may be possible: the 429's `Retry-After`, or
        /// when the budget's next free slot for this caller would come.
        retry_after: Option<Duration>,
    },

    /// The identity service answered with an HTTP status that is neither success
    /// nor an OAuth error (typically a 5xx). Usually transient.
    #[error("identity service answered HTTP {status}")]
    IdentityService {
        /// The HTTP status.
        status: u16,
    },

    /// The identity service answered 200, but not with a usable token
    /// (malformed JSON, missing or invalid `access_token` / `expires_in`,
    /// a `token_type` other than Bearer, …).
    #[error("invalid token response from the identity service: {0}")]
    InvalidResponse(String),

    /// The identity service did not answer within the login timeout or, in a
    /// fleet, the process logging in for this key did not share its token in
    /// time. Transient: retry.
    #[error("login timed out after {0:?}")]
    Timeout(Duration),

    /// The login request failed below HTTP (DNS, connection refused, TLS, …).
    /// The message includes reqwest's; it is not repeated as `source()`, so
    /// error reporters that walk the chain do not print it twice.
    #[error("could not reach the identity service: {0}")]
    Transport(Arc<reqwest::Error>),

    /// An access token is not a well-formed JWT, so its claims cannot be read
    /// (see [`AccessToken::claims`](crate::AccessToken::claims)).
    #[error("the access token is not a readable JWT: {0}")]
    InvalidToken(String),

    /// The login task ended without a result (its runtime shut down). Retry.
    #[error("the login was abandoned before it finished")]
    LoginAborted,
}

impl Error {
    /// True when the same call may succeed later without any change of
    /// configuration: timeouts, transport failures, 5xx, rate limits and
    /// abandoned logins.
    ///
    /// ```
    /// use myinvois_auth::Error;
    /// assert!(Error::IdentityService { status: 503 }.is_transient());
    /// assert!(!Error::InvalidConfig("x".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::Timeout(_)
            | Error::Transport(_)
            | Error::LoginAborted => true,
            Error::IdentityService { status } => *status >= 500,
            _ => false,
        }
    }

    pub(crate) fn transport(err: reqwest::Error) -> Self {
        // The URL of the identity service is no secret, but a user may have put
        // credentials in it; reqwest errors print the URL, so drop it.
        Error::Transport(Arc::new(err.without_url()))
    }
}

fn describe(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

fn describe_retry(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

/// The `error` field of an OAuth 2.0 token error response (RFC 6749 §5.2).
///
/// MyInvois documents the British spelling `unauthorised_client`; both
/// spellings parse to [`OAuthErrorCode::UnauthorizedClient`].
///
/// ```
/// use myinvois_auth::OAuthErrorCode;
/// assert_eq!(OAuthErrorCode::parse("invalid_client"), OAuthErrorCode::InvalidClient);
/// assert_eq!(OAuthErrorCode::parse("unauthorised_client"), OAuthErrorCode::UnauthorizedClient);
/// assert_eq!(OAuthErrorCode::parse("slow_down"), OAuthErrorCode::Other("slow_down".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`: the request is malformed.
    InvalidRequest,
    /// `invalid_client`: unknown client, wrong secret, or the system user is blocked or expired.
    InvalidClient,
    /// `invalid_grant`.
    InvalidGrant,
    /// `unauthorized_client` (or MyInvois' `unauthorised_client`): the client may not use this grant.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`: the requested scope is unknown or not allowed.
    InvalidScope,
    /// Any other code, as sent.
    Other(String),
}

impl OAuthErrorCode {
    /// Parses an OAuth `error` value. Never fails: unknown codes become [`OAuthErrorCode::Other`].
    pub fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" | "unauthorised_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The code as the RFC spells it (`Other` codes as received).
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
