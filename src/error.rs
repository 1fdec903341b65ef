//! The one error type of this crate, and the OAuth error codes it parses.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::redact;

/// Everything that can go wrong while configuring the cache or obtaining a token.
///
/// The type is `Clone` because one failed login is handed to every caller that
/// waited on it. No variant ever holds the client secret or an access token:
/// their `Display` and `Debug` output is safe to log.
///
/// Through [`AuthMiddleware`](crate::AuthMiddleware) the error arrives inside a
/// [`reqwest_middleware::Error`], possibly wrapped again by the layers
/// around it (reqwest-retry's `RetryError`, …); [`Error::find_in`] takes it out
/// whatever wraps it:
///
/// ```
/// use myinvois_auth::{Error, OAuthErrorCode};
///
/// fn explain(err: &reqwest_middleware::Error) -> String {
///     match Error::find_in(err) {
///         Some(Error::OAuth { code: OAuthErrorCode::InvalidClient, .. }) => {
///             "check the client ID and secret".to_owned()
///         }
///         Some(Error::RateLimited { retry_after }) => format!("try again in {retry_after:?}"),
///         Some(ours) => ours.to_string(),
///         None => err.to_string(), // not a login failure: the API call itself failed
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Clone, thiserror::Error)]
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
    /// wrong ID or secret, or a blocked or expired system user; `invalid_grant`
    /// for an intermediary usually means the taxpayer has not authorised it.
    /// A new login does not cure it, so the cache remembers it for the entry
    /// and answers again from memory until `retry_after` has passed.
    #[error("login rejected by the identity service (HTTP {status}): {code}{}{}", describe(.description), describe_wait(.retry_after, &false))]
    OAuth {
        /// The HTTP status the identity service answered with.
        status: u16,
        /// The parsed OAuth error code.
        code: OAuthErrorCode,
        /// `error_description`, when the service sent one (scrubbed of the secret).
        description: Option<String>,
        /// `error_uri`, when the service sent one (without user-info, query or fragment).
        uri: Option<String>,
        /// How long the cache answers this taxpayer's logins with this error
        /// before it asks the identity service again.
        retry_after: Option<Duration>,
    },

    /// No login could be made for this client ID: the identity service
    /// answered HTTP 429, or the login budget (12 a minute by default) has no
    /// slot before this caller's wait runs out. Callers holding a valid token
    /// never see this.
    #[error("login rate limit reached{}", describe_wait(.retry_after, &true))]
    RateLimited {
        /// How long until a login may be possible: the 429's `Retry-After`, or
        /// when the budget's next free slot for this caller would come.
        retry_after: Option<Duration>,
    },

    /// The identity service answered with an HTTP status that is neither success
    /// nor an OAuth error (typically a 5xx). Usually transient.
    #[error("identity service answered HTTP {status}{}", describe_wait(.retry_after, &transient_status(.status)))]
    IdentityService {
        /// The HTTP status.
        status: u16,
        /// How long until the cache asks again (the service's own
        /// `Retry-After` when it sent one, else the cache's back-off).
        retry_after: Option<Duration>,
    },

    /// The identity service answered the login with a redirect (HTTP 3xx).
    /// Logins never follow redirects: the client secret goes to the
    /// configured identity service and nowhere else, and no token from
    /// another origin is ever served. Usually a wrong identity URL.
    #[error("the identity service redirected the login (HTTP {status}){}; logins never follow redirects, check the identity URL{}", describe_target(.location), describe_wait(.retry_after, &false))]
    LoginRedirected {
        /// The HTTP status (301, 302, 303, 307, 308, …).
        status: u16,
        /// The origin (scheme, host, port) the redirect pointed to, when it
        /// named one; never its path, query or user-info.
        location: Option<String>,
        /// How long until the cache asks again.
        retry_after: Option<Duration>,
    },

    /// The identity service answered 200, but not with a usable token
    /// (malformed JSON, missing or invalid `access_token` / `expires_in`,
    /// a `token_type` other than Bearer, …).
    #[error("invalid token response from the identity service: {reason}{}", describe_wait(.retry_after, .transient))]
    InvalidResponse {
        /// What is wrong with the answer (never quoting a token).
        reason: String,
        /// Whether asking again may help: an empty, oversized or non-JSON
        /// body may be a passing fault (a proxy's error page, a cut
        /// connection); a well-formed answer whose content is unusable will
        /// be the same next time, so it is remembered like an OAuth error
        /// and never retried (see [`Error::is_transient`]).
        transient: bool,
        /// How long until the cache asks again.
        retry_after: Option<Duration>,
    },

    /// The identity service did not answer within the login timeout or, in a
    /// fleet, the process logging in for this key did not share its token in
    /// time. Transient: retry.
    #[error("login timed out after {after:?}{}", describe_wait(.retry_after, &true))]
    Timeout {
        /// How long was waited.
        after: Duration,
        /// How long until the cache asks again.
        retry_after: Option<Duration>,
    },

    /// The login request failed below HTTP: connection refused, a failed
    /// name lookup, a TLS handshake (an unknown certificate authority, …),
    /// a timeout of the [HTTP client](crate::TokenCacheBuilder::http_client),
    /// a connection cut while the answer was read.
    ///
    /// `Display` names the whole cause chain (`could not reach the identity
    /// service: error sending request: client error (Connect): tcp connect
    /// error: Connection refused (os error 111)`), because a log line
    /// prints `Display` alone. `source()` is reqwest's error, for
    /// `is_connect()`, `is_timeout()` and reporters that walk the chain
    /// (which therefore show the causes twice).
    #[error("could not reach the identity service: {cause}{}", describe_wait(.retry_after, &true))]
    #[non_exhaustive]
    Transport {
        /// reqwest's error, without the URL.
        #[source]
        error: Arc<reqwest::Error>,
        /// reqwest's error and each of its causes, joined by `: `, scrubbed
        /// of the client secret, on one line, cut at 300 characters.
        cause: String,
        /// How long until the cache asks again.
        retry_after: Option<Duration>,
    },

    /// A middleware given to
    /// [`login_middleware`](crate::TokenCacheBuilder::login_middleware)
    /// failed the login's HTTP call, or did what a login may not (send it
    /// a second time, or to another URL than the token URL) and was
    /// stopped. Taken to be transient, like [`Error::Transport`]: the
    /// cache asks again after its back-off.
    #[error("a login middleware failed the login: {cause}{}", describe_wait(.retry_after, &true))]
    #[non_exhaustive]
    LoginMiddleware {
        /// The middleware's error.
        #[source]
        error: Arc<reqwest_middleware::Error>,
        /// Its text and each of its causes, joined by `: `, scrubbed of
        /// the client secret, on one line, cut at 300 characters.
        cause: String,
        /// How long until the cache asks again.
        retry_after: Option<Duration>,
    },

    /// The identity service answered the login for one taxpayer with a
    /// token whose claims name another (`TaxpayerTIN`, or the older
    /// `TaxTin`). It is never served: the API would act for that other
    /// taxpayer. A new login gets the same answer, so the cache remembers it
    /// for the entry like an OAuth error. TINs are no secrets; both are
    /// named. For an identity service that puts something else in that
    /// claim, switch the check off with
    /// [`check_token_taxpayer(false)`](crate::TokenCacheBuilder::check_token_taxpayer).
    #[error("the identity service issued a token for taxpayer {issued_for} to the login for {expected}; it is not served{}", describe_wait(.retry_after, &false))]
    WrongTaxpayer {
        /// The TIN the login asked for.
        expected: String,
        /// The TIN the token names.
        issued_for: String,
        /// How long until the cache asks again.
        retry_after: Option<Duration>,
    },

    /// An access token is not a well-formed JWT, so its claims cannot be read
    /// (see [`AccessToken::claims`](crate::AccessToken::claims)).
    #[error("the access token is not a readable JWT: {0}")]
    InvalidToken(String),

    /// The login task ended without a result (its runtime shut down). Retry.
    #[error("the login was abandoned before it finished")]
    LoginAborted,

    /// A variable read by [`TokenCache::from_env`](crate::TokenCache::from_env)
    /// is missing or unusable. Names the variable, never its value.
    #[error("environment variable {name}: {problem}")]
    Environment {
        /// The variable's name.
        name: &'static str,
        /// What is wrong with it.
        problem: EnvProblem,
    },
}

/// `Debug` as derived, except that `Transport` and `LoginMiddleware` show
/// their error by its scrubbed text: reqwest's own `Debug` quotes what the
/// other side sent (a certificate's names, …) as it came, and a
/// middleware's error may quote the request.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig(text) => f.debug_tuple("InvalidConfig").field(text).finish(),
            Error::InvalidTaxpayer { value, reason } => f
                .debug_struct("InvalidTaxpayer")
                .field("value", value)
                .field("reason", reason)
                .finish(),
            Error::OAuth {
                status,
                code,
                description,
                uri,
                retry_after,
            } => f
                .debug_struct("OAuth")
                .field("status", status)
                .field("code", code)
                .field("description", description)
                .field("uri", uri)
                .field("retry_after", retry_after)
                .finish(),
            Error::RateLimited { retry_after } => f
                .debug_struct("RateLimited")
                .field("retry_after", retry_after)
                .finish(),
            Error::IdentityService {
                status,
                retry_after,
            } => f
                .debug_struct("IdentityService")
                .field("status", status)
                .field("retry_after", retry_after)
                .finish(),
            Error::LoginRedirected {
                status,
                location,
                retry_after,
            } => f
                .debug_struct("LoginRedirected")
                .field("status", status)
                .field("location", location)
                .field("retry_after", retry_after)
                .finish(),
            Error::InvalidResponse {
                reason,
                transient,
                retry_after,
            } => f
                .debug_struct("InvalidResponse")
                .field("reason", reason)
                .field("transient", transient)
                .field("retry_after", retry_after)
                .finish(),
            Error::Timeout { after, retry_after } => f
                .debug_struct("Timeout")
                .field("after", after)
                .field("retry_after", retry_after)
                .finish(),
            Error::Transport {
                error: _,
                cause,
                retry_after,
            } => f
                .debug_struct("Transport")
                .field("cause", cause)
                .field("retry_after", retry_after)
                .finish_non_exhaustive(),
            Error::LoginMiddleware {
                error: _,
                cause,
                retry_after,
            } => f
                .debug_struct("LoginMiddleware")
                .field("cause", cause)
                .field("retry_after", retry_after)
                .finish_non_exhaustive(),
            Error::WrongTaxpayer {
                expected,
                issued_for,
                retry_after,
            } => f
                .debug_struct("WrongTaxpayer")
                .field("expected", expected)
                .field("issued_for", issued_for)
                .field("retry_after", retry_after)
                .finish(),
            Error::InvalidToken(text) => f.debug_tuple("InvalidToken").field(text).finish(),
            Error::LoginAborted => f.write_str("LoginAborted"),
            Error::Environment { name, problem } => f
                .debug_struct("Environment")
                .field("name", name)
                .field("problem", problem)
                .finish(),
        }
    }
}

/// What is wrong with an environment variable, in [`Error::Environment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvProblem {
    /// It is not set (or set to an empty string).
    #[error("not set")]
    Missing,
    /// Its value is not valid Unicode.
    #[error("not valid Unicode")]
    NotUnicode,
    /// Its value is not one of those accepted.
    #[error("expected {0}")]
    Expected(&'static str),
    /// It asks for what this build leaves out: the cargo feature named.
    #[error("needs the cargo feature `{0}`, which this build leaves out")]
    NeedsFeature(&'static str),
}

impl Error {
    /// True when the same call may succeed later without any change of
    /// configuration: timeouts, transport failures, 5xx, garbled answers,
    /// rate limits and abandoned logins. OAuth errors, redirects and
    /// configuration errors are not: retrying them only spends the login
    /// budget.
    ///
    /// ```
    /// use myinvois_auth::Error;
    /// assert!(Error::IdentityService { status: 503, retry_after: None }.is_transient());
    /// assert!(!Error::InvalidConfig("x".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::Timeout { .. }
            | Error::Transport { .. }
            | Error::LoginMiddleware { .. }
            | Error::LoginAborted => true,
            Error::InvalidResponse { transient, .. } => *transient,
            Error::IdentityService { status, .. } => transient_status(status),
            _ => false,
        }
    }

    /// How long until asking again may help, when known: the budget's or
    /// the identity service's `Retry-After`, or how long the cache keeps
    /// answering a failed login from memory.
    ///
    /// ```
    /// use std::time::Duration;
    /// use myinvois_auth::Error;
    /// let err = Error::RateLimited { retry_after: Some(Duration::from_secs(5)) };
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
    /// assert_eq!(Error::LoginAborted.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::OAuth { retry_after, .. }
            | Error::RateLimited { retry_after }
            | Error::IdentityService { retry_after, .. }
            | Error::LoginRedirected { retry_after, .. }
            | Error::InvalidResponse { retry_after, .. }
            | Error::Timeout { retry_after, .. }
            | Error::Transport { retry_after, .. }
            | Error::LoginMiddleware { retry_after, .. }
            | Error::WrongTaxpayer { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The OAuth error code, when the identity service refused the login with one.
    ///
    /// ```
    /// use myinvois_auth::{Error, OAuthErrorCode};
    /// assert_eq!(Error::LoginAborted.oauth_code(), None);
    /// ```
    pub fn oauth_code(&self) -> Option<&OAuthErrorCode> {
        match self {
            Error::OAuth { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Finds this crate's error in an error from a `reqwest-middleware`
    /// client, whatever wraps it: the middleware's own `anyhow` wrapper,
    /// another `reqwest_middleware::Error` inside it, or (with the `retry`
    /// feature) reqwest-retry's `RetryError`. Walking `source()` cannot do
    /// this: the transparent wrappers skip a level. `None` when the failure
    /// was not a login's (the API call itself failed).
    ///
    /// ```
    /// use myinvois_auth::Error;
    /// let login_failed = reqwest_middleware::Error::middleware(Error::LoginAborted);
    /// assert!(matches!(Error::find_in(&login_failed), Some(Error::LoginAborted)));
    /// let other = reqwest_middleware::Error::middleware(std::io::Error::other("not ours"));
    /// assert!(Error::find_in(&other).is_none());
    /// ```
    pub fn find_in(err: &reqwest_middleware::Error) -> Option<&Error> {
        find(err, 0)
    }

    /// Like [`find_in`](Self::find_in), for an error the application has
    /// already converted into its own: an `anyhow::Error` (pass
    /// `err.as_ref()`), a `Box<dyn Error>` (pass `&*err`), or its own type
    /// whose `source()` chain leads to the `reqwest_middleware::Error`.
    /// Follows `source()` and looks inside every `reqwest_middleware::Error`
    /// (and `RetryError`) on the way.
    ///
    /// ```
    /// use myinvois_auth::Error;
    /// let failed = || reqwest_middleware::Error::middleware(Error::LoginAborted);
    ///
    /// let app = anyhow::Error::new(failed()).context("listing document types");
    /// assert!(matches!(Error::find_in_error(app.as_ref()), Some(Error::LoginAborted)));
    ///
    /// let boxed: Box<dyn std::error::Error + Send + Sync> = failed().into();
    /// assert!(matches!(Error::find_in_error(&*boxed), Some(Error::LoginAborted)));
    ///
    /// let other = std::io::Error::other("the disk is full");
    /// assert!(Error::find_in_error(&other).is_none());
    /// ```
    pub fn find_in_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
        std::iter::successors(Some(err), |cause| cause.source())
            .take(MAX_WRAPPING)
            .find_map(|cause| look_at(cause, 0))
            .flatten()
    }

    /// A stable, low-cardinality name for the kind of error, for spans and
    /// metrics labels.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::InvalidConfig(_) => "invalid_config",
            Error::InvalidTaxpayer { .. } => "invalid_taxpayer",
            Error::OAuth { .. } => "oauth",
            Error::RateLimited { .. } => "rate_limited",
            Error::IdentityService { .. } => "identity_service",
            Error::LoginRedirected { .. } => "redirected",
            Error::InvalidResponse { .. } => "invalid_response",
            Error::Timeout { .. } => "timeout",
            Error::Transport { .. } => "transport",
            Error::LoginMiddleware { .. } => "login_middleware",
            Error::WrongTaxpayer { .. } => "wrong_taxpayer",
            Error::InvalidToken(_) => "invalid_token",
            Error::LoginAborted => "aborted",
            Error::Environment { .. } => "environment",
        }
    }

    /// The same error, saying that asking again makes sense after `after`.
    /// Variants that carry no such time are returned unchanged.
    pub(crate) fn with_retry_after(mut self, after: Duration) -> Self {
        match &mut self {
            Error::OAuth { retry_after, .. }
            | Error::RateLimited { retry_after }
            | Error::IdentityService { retry_after, .. }
            | Error::LoginRedirected { retry_after, .. }
            | Error::InvalidResponse { retry_after, .. }
            | Error::Timeout { retry_after, .. }
            | Error::Transport { retry_after, .. }
            | Error::LoginMiddleware { retry_after, .. }
            | Error::WrongTaxpayer { retry_after, .. } => *retry_after = Some(after),
            _ => {}
        }
        self
    }

    /// A failure below HTTP; `sensitive` are the forms of the client
    /// secret, scrubbed from the causes' text.
    pub(crate) fn transport(err: reqwest::Error, sensitive: &[&str]) -> Self {
        // The URL of the identity service is no secret, but a user may have put
        // credentials in it; reqwest errors print the URL, so drop it.
        let error = err.without_url();
        let cause = redact::scrub(&cause_chain(&error), sensitive, redact::MAX_TEXT);
        Error::Transport {
            error: Arc::new(error),
            cause,
            retry_after: None,
        }
    }

    /// A login middleware's failure (or the guard's refusal of what it
    /// did); `sensitive` as for [`transport`](Self::transport).
    pub(crate) fn login_middleware(err: reqwest_middleware::Error, sensitive: &[&str]) -> Self {
        let cause = redact::scrub(&cause_chain(&err), sensitive, redact::MAX_TEXT);
        Error::LoginMiddleware {
            error: Arc::new(err),
            cause,
            retry_after: None,
        }
    }

    /// An answer whose content is unusable: the next one will be too.
    pub(crate) fn invalid_response(reason: impl Into<String>) -> Self {
        Error::InvalidResponse {
            reason: reason.into(),
            transient: false,
            retry_after: None,
        }
    }

    /// An answer that did not arrive whole or readable: perhaps a passing fault.
    pub(crate) fn garbled_response(reason: impl Into<String>) -> Self {
        Error::InvalidResponse {
            reason: reason.into(),
            transient: true,
            retry_after: None,
        }
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Error::Timeout {
            after,
            retry_after: None,
        }
    }
}

/// Wrappers nested deeper than this are not searched (no real stack nests
/// more than a few; a bound keeps a pathological chain from recursing far).
const MAX_WRAPPING: usize = 16;

fn find(err: &reqwest_middleware::Error, depth: usize) -> Option<&Error> {
    let reqwest_middleware::Error::Middleware(wrapped) = err else {
        return None;
    };
    if depth >= MAX_WRAPPING {
        return None;
    }
    wrapped
        .chain()
        .take(MAX_WRAPPING)
        .find_map(|cause| look_at(cause, depth))
        .flatten()
}

/// What one error of a chain says: `None` if it is none of ours and wraps
/// none (look at the next), else the answer (ours, or what its wrapped
/// `reqwest_middleware::Error` holds, perhaps nothing).
fn look_at<'a>(
    cause: &'a (dyn std::error::Error + 'static),
    depth: usize,
) -> Option<Option<&'a Error>> {
    if let Some(ours) = cause.downcast_ref::<Error>() {
        return Some(Some(ours));
    }
    if let Some(inner) = cause.downcast_ref::<reqwest_middleware::Error>() {
        return Some(find(inner, depth + 1));
    }
    #[cfg(feature = "retry")]
    if let Some(retry) = cause.downcast_ref::<reqwest_retry::RetryError>() {
        let (reqwest_retry::RetryError::WithRetries { err: inner, .. }
        | reqwest_retry::RetryError::Error(inner)) = retry;
        return Some(find(inner, depth + 1));
    }
    None
}

/// `error` and each of its causes, joined by `: `; a cause whose text the
/// ones before already hold (an error that prints its source) is left out.
fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for cause in std::iter::successors(Some(error), |e| e.source()).take(MAX_WRAPPING) {
        let said = cause.to_string();
        if said.is_empty() || text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

fn describe_target(location: &Option<String>) -> String {
    location
        .as_deref()
        .map(|origin| format!(" to {origin}"))
        .unwrap_or_default()
}

fn describe(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// When asking again makes sense: "retry after" for a transient failure;
/// a lasting one is not worth retrying, so say how long the cache keeps
/// answering it from memory instead.
fn describe_wait(retry_after: &Option<Duration>, transient: &bool) -> String {
    let Some(wait) = retry_after else {
        return String::new();
    };
    let secs = wait.as_secs_f64().ceil();
    if *transient {
        format!("; retry after {secs}s")
    } else {
        format!(" (answered from memory for another {secs}s)")
    }
}

/// An identity service status a later login may not meet: 5xx and 408.
fn transient_status(status: &u16) -> bool {
    *status >= 500 || *status == 408
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Error, OAuthErrorCode};

    const WAIT: Option<Duration> = Some(Duration::from_millis(68_200));

    #[test]
    fn a_lasting_failure_says_it_is_answered_from_memory_never_retry_after() {
        let lasting = [
            Error::OAuth {
                status: 400,
                code: OAuthErrorCode::InvalidClient,
                description: None,
                uri: None,
                retry_after: WAIT,
            },
            Error::LoginRedirected {
                status: 302,
                location: None,
                retry_after: WAIT,
            },
            Error::InvalidResponse {
                reason: "token_type is not Bearer".into(),
                transient: false,
                retry_after: WAIT,
            },
            Error::IdentityService {
                status: 404,
                retry_after: WAIT,
            },
        ];
        for error in lasting {
            assert!(!error.is_transient());
            let shown = error.to_string();
            assert!(
                shown.ends_with(" (answered from memory for another 69s)"),
                "{shown}"
            );
            assert!(!shown.contains("retry"), "{shown}");
        }
        assert_eq!(
            Error::OAuth {
                status: 400,
                code: OAuthErrorCode::InvalidClient,
                description: Some("bad secret".into()),
                uri: None,
                retry_after: WAIT,
            }
            .to_string(),
            "login rejected by the identity service (HTTP 400): invalid_client (bad secret) \
             (answered from memory for another 69s)"
        );
    }

    #[test]
    fn a_transient_failure_says_when_to_retry() {
        let transient = [
            Error::RateLimited { retry_after: WAIT },
            Error::IdentityService {
                status: 503,
                retry_after: WAIT,
            },
            Error::InvalidResponse {
                reason: "the answer is not JSON".into(),
                transient: true,
                retry_after: WAIT,
            },
            Error::Timeout {
                after: Duration::from_secs(20),
                retry_after: WAIT,
            },
        ];
        for error in transient {
            assert!(error.is_transient());
            let shown = error.to_string();
            assert!(shown.ends_with("; retry after 69s"), "{shown}");
        }
        // No time known: nothing said.
        assert_eq!(
            Error::RateLimited { retry_after: None }.to_string(),
            "login rate limit reached"
        );
    }
}
