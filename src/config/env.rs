//! Configuration from environment variables: [`TokenCacheBuilder::from_env`]
//! (and `TokenCache::from_env`, which builds it at once).

use std::env;
use std::ffi::OsString;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::builder::{has_control, TokenCacheBuilder};
use super::credentials::Credentials;
use super::environment::Environment;
use crate::error::{EnvProblem, Error};

/// The system user's client ID (required).
pub const ENV_CLIENT_ID: &str = "MYINVOIS_CLIENT_ID";
/// The system user's client secret (required).
pub const ENV_CLIENT_SECRET: &str = "MYINVOIS_CLIENT_SECRET";
/// `sandbox` or `production` (required: a sandbox credential never reaches
/// production by default, nor the other way round).
pub const ENV_ENVIRONMENT: &str = "MYINVOIS_ENVIRONMENT";
/// The `scope` form parameter, e.g. `InvoicingAPI` (optional).
pub const ENV_SCOPE: &str = "MYINVOIS_SCOPE";
/// The database file of a `SqliteTokenStore` that the host's processes
/// share (optional; needs the cargo feature `sqlite`).
pub const ENV_TOKEN_STORE: &str = "MYINVOIS_TOKEN_STORE";

impl TokenCacheBuilder {
    /// A builder configured from the process environment:
    /// [`MYINVOIS_CLIENT_ID`](ENV_CLIENT_ID),
    /// [`MYINVOIS_CLIENT_SECRET`](ENV_CLIENT_SECRET),
    /// [`MYINVOIS_ENVIRONMENT`](ENV_ENVIRONMENT) (`sandbox` or `production`)
    /// and, optionally, [`MYINVOIS_SCOPE`](ENV_SCOPE) and
    /// [`MYINVOIS_TOKEN_STORE`](ENV_TOKEN_STORE) (a `SqliteTokenStore` on
    /// that file, shared by the host's processes; with the cargo feature
    /// `sqlite`, and [`EnvProblem::NeedsFeature`] without it). Everything
    /// else can be set on the builder before [`build`](Self::build).
    ///
    /// Values are trimmed of surrounding whitespace. A variable that is
    /// missing, empty, not Unicode or not an accepted value fails with
    /// [`Error::Environment`], which names the variable and never shows its
    /// value.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let cache = myinvois_auth::TokenCacheBuilder::from_env()?
    ///     .max_login_wait(Duration::from_secs(5))
    ///     .build()?;
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| env::var_os(name))
    }

    /// Like [`from_env`](Self::from_env), reading each variable from
    /// `lookup` instead of the process environment (a secrets manager's
    /// answer, a configuration map, a test).
    ///
    /// ```
    /// use myinvois_auth::{EnvProblem, Error, TokenCacheBuilder};
    /// let vars = [("MYINVOIS_CLIENT_ID", "erp"), ("MYINVOIS_ENVIRONMENT", "sandbox")];
    /// let lookup = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into());
    /// let err = TokenCacheBuilder::from_vars(lookup).unwrap_err();
    /// assert!(matches!(
    ///     err,
    ///     Error::Environment { name: "MYINVOIS_CLIENT_SECRET", problem: EnvProblem::Missing }
    /// ));
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, Error> {
        // Surrounding whitespace (a trailing newline from a secrets file)
        // is never part of a MyInvois value. The raw text is zeroed when
        // dropped: it may be the secret.
        let read = |name: &'static str| -> Result<Option<String>, Error> {
            let Some(value) = lookup(name) else {
                return Ok(None);
            };
            let value = Zeroizing::new(value.into_string().map_err(|_| Error::Environment {
                name,
                problem: EnvProblem::NotUnicode,
            })?);
            let value = value.trim();
            // The client ID and scope are named in log lines, where a line
            // break would forge one; no MyInvois value holds one.
            if name != ENV_CLIENT_SECRET && has_control(value) {
                return Err(Error::Environment {
                    name,
                    problem: EnvProblem::Expected("a value without control characters (CR, LF, …)"),
                });
            }
            Ok((!value.is_empty()).then(|| value.to_owned()))
        };
        let required = |name: &'static str| {
            read(name)?.ok_or(Error::Environment {
                name,
                problem: EnvProblem::Missing,
            })
        };
        let client_id = required(ENV_CLIENT_ID)?;
        let client_secret = SecretString::from(required(ENV_CLIENT_SECRET)?);
        let environment = match required(ENV_ENVIRONMENT)?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "sandbox" => Environment::Sandbox,
            "production" => Environment::Production,
            _ => {
                return Err(Error::Environment {
                    name: ENV_ENVIRONMENT,
                    problem: EnvProblem::Expected("`sandbox` or `production`"),
                })
            }
        };
        let mut builder = TokenCacheBuilder::new(Credentials::new(client_id, client_secret))
            .environment(environment);
        if let Some(scope) = read(ENV_SCOPE)? {
            builder = builder.scope(scope);
        }
        if let Some(store) = crate::store::from_env(ENV_TOKEN_STORE, lookup(ENV_TOKEN_STORE))? {
            builder = builder.token_store(store);
        }
        Ok(builder)
    }
}
