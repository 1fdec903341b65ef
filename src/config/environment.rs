//! Where to log in: [`Environment`] (a MyInvois deployment), and the rule
//! for every URL that may receive the secret or a token (`https`, or `http`
//! to a loopback host; never user-info, a query or a fragment).

use std::fmt;
use std::net::IpAddr;

use url::Url;

use crate::error::Error;
use crate::redact;

const SANDBOX_BASE: &str = "https://preprod-api.myinvois.hasil.gov.my";
const PRODUCTION_BASE: &str = "https://api.myinvois.hasil.gov.my";

/// A MyInvois deployment: the identity service to log in to and the API that
/// accepts its tokens.
///
/// ```
/// use myinvois_auth::Environment;
/// assert_eq!(Environment::Sandbox.identity_url().as_str(), "https://preprod-api.myinvois.hasil.gov.my/");
/// assert_eq!(Environment::Production.api_url().as_str(), "https://api.myinvois.hasil.gov.my/");
///
/// let local = Environment::custom("http://127.0.0.1:8080", "http://127.0.0.1:8081")?;
/// assert_eq!(local.api_url().port(), Some(8081));
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Environment {
    /// LHDN's pre-production (sandbox): `https://preprod-api.myinvois.hasil.gov.my`.
    Sandbox,
    /// LHDN's production: `https://api.myinvois.hasil.gov.my`.
    Production,
    /// Any other deployment (a local stand-in, a proxy). Build it with
    /// [`Environment::custom`], which checks both URLs.
    Custom {
        /// Base URL of the identity service (`/connect/token` is appended).
        identity_url: Url,
        /// Base URL of the MyInvois API; its origin receives the token.
        api_url: Url,
    },
}

impl Environment {
    /// A custom deployment. Both URLs must be `https`, or `http` to a loopback
    /// host (`localhost`, `127.0.0.0/8`, `[::1]`).
    pub fn custom(identity_url: &str, api_url: &str) -> Result<Self, Error> {
        Ok(Environment::Custom {
            identity_url: parse_secure_url("identity URL", identity_url)?,
            api_url: parse_secure_url("API URL", api_url)?,
        })
    }

    /// Base URL of the identity service.
    pub fn identity_url(&self) -> Url {
        match self {
            Environment::Sandbox => Url::parse(SANDBOX_BASE).expect("constant URL"),
            Environment::Production => Url::parse(PRODUCTION_BASE).expect("constant URL"),
            Environment::Custom { identity_url, .. } => identity_url.clone(),
        }
    }

    /// Base URL of the MyInvois API.
    pub fn api_url(&self) -> Url {
        match self {
            Environment::Sandbox => Url::parse(SANDBOX_BASE).expect("constant URL"),
            Environment::Production => Url::parse(PRODUCTION_BASE).expect("constant URL"),
            Environment::Custom { api_url, .. } => api_url.clone(),
        }
    }

    /// The checks of [`Environment::custom`], for a `Custom` written out by
    /// hand (which `#[non_exhaustive]` does not prevent): the cache sends its
    /// secret and tokens to these URLs.
    pub(super) fn checked(self) -> Result<Self, Error> {
        parse_secure_url("identity URL", self.identity_url().as_str())?;
        parse_secure_url("API URL", self.api_url().as_str())?;
        Ok(self)
    }
}

/// Names a custom deployment's URLs without user-info, query or fragment.
impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Environment::Sandbox => f.write_str("Sandbox"),
            Environment::Production => f.write_str("Production"),
            Environment::Custom {
                identity_url,
                api_url,
            } => f
                .debug_struct("Custom")
                .field("identity_url", &redact::without_secrets(identity_url))
                .field("api_url", &redact::without_secrets(api_url))
                .finish(),
        }
    }
}

/// `{base}/connect/token`, keeping any path prefix of the base.
pub(super) fn token_endpoint(base: &Url) -> Result<Url, Error> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join("connect/token")
        .map_err(|e| Error::InvalidConfig(format!("cannot build the token URL: {e}")))
}

/// Parses a URL that may receive a secret: `https`, or `http` to loopback only.
/// An error names the URL by its origin only, never by its user-info, path,
/// query or fragment, where a secret may have been put.
pub(crate) fn parse_secure_url(what: &str, raw: &str) -> Result<Url, Error> {
    // url's ParseError names the kind of fault, never the input.
    let url = Url::parse(raw)
        .map_err(|e| Error::InvalidConfig(format!("the {what} is not a valid URL: {e}")))?;
    let origin = redact::origin(&url);
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidConfig(format!(
            "the {what} ({origin}) must not carry user-info (credentials go in Credentials)"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidConfig(format!(
            "the {what} ({origin}) must not have a query or fragment"
        )));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(Error::InvalidConfig(format!(
            "the {what} {origin} is plain http: secrets are sent only over https (or http to a loopback host)"
        ))),
        other => Err(Error::InvalidConfig(format!(
            "the {what} has scheme {other:?}; expected https"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
