//! What each failure means, in plain words, and its exit code: a program
//! calling the command can tell a wrong secret from a taxpayer that has
//! not authorised the intermediary, or from a limit to wait out.

use std::process::ExitCode;

use myinvois_auth::{Error, OAuthErrorCode};

use crate::output::note;

/// The exit codes, for `--help`.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  another failure
  2  usage: a bad argument (a secret on the command line, a bad TIN)
  3  configuration: a variable or flag missing or bad
  4  the client ID and secret were refused (invalid_client)
  5  403 Forbidden: the credentials belong to the other environment
  6  the taxpayer has not authorised this intermediary
  7  the login limit is reached: try again later
  8  the identity service is out of reach, timed out or failing (5xx)
  9  the identity service refused the login for another reason";

/// A failure of the command: what to print on stderr, and the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A bad argument (2).
    Usage(String),
    /// A variable or flag missing or bad (3).
    Config(String),
    /// A login that failed, explained, with the code of its class.
    Login { code: u8, explanation: String },
    /// Printed already (by `check`, as it went); only the code is left.
    Told(u8),
    /// Anything else (1).
    Other(String),
}

/// What a login was for, to explain its failure.
pub(crate) struct Attempt<'a> {
    /// `sandbox` or `production`, as configured.
    pub(crate) environment: &'a str,
    /// The identity service's origin.
    pub(crate) identity: &'a str,
    /// The taxpayer, for an intermediary's login.
    pub(crate) taxpayer: Option<&'a str>,
}

impl Failure {
    /// A configuration the library refused.
    pub(crate) fn from_config(error: Error) -> Self {
        let flag = |name: &str| match name {
            "MYINVOIS_CLIENT_ID" => Some("--client-id"),
            "MYINVOIS_CLIENT_SECRET" => Some("--client-secret-file"),
            "MYINVOIS_ENVIRONMENT" => Some("--environment"),
            "MYINVOIS_SCOPE" => Some("--scope"),
            _ => None,
        };
        match &error {
            Error::InvalidTaxpayer { .. } => Failure::Usage(error.to_string()),
            Error::Environment { name, .. } => match flag(name) {
                Some(flag) => Failure::Config(format!("{error} (or give {flag})")),
                None => Failure::Config(error.to_string()),
            },
            _ => Failure::Config(error.to_string()),
        }
    }

    /// A login that failed, classified and explained.
    pub(crate) fn login(error: Error, attempt: &Attempt<'_>) -> Self {
        let (code, advice) = explain(&error, attempt);
        match code {
            2 => Failure::Usage(error.to_string()),
            3 => Failure::Config(error.to_string()),
            _ => Failure::Login {
                code,
                explanation: format!("{advice}\n  ({error})"),
            },
        }
    }

    /// Whether the credentials themselves were refused (every taxpayer's
    /// login would fail alike: checking more costs logins for nothing).
    pub(crate) fn is_about_the_credentials(&self) -> bool {
        matches!(
            self,
            Failure::Login { code: 4 | 5, .. } | Failure::Config(_)
        )
    }

    pub(crate) fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Config(_) => 3,
            Failure::Login { code, .. } | Failure::Told(code) => *code,
            Failure::Other(_) => 1,
        }
    }

    /// Prints the failure on stderr, unless it was already.
    pub(crate) fn tell(&self) {
        match self {
            Failure::Usage(text) | Failure::Config(text) | Failure::Other(text) => {
                note!("myinvois-auth: {text}")
            }
            Failure::Login { explanation, .. } => note!("myinvois-auth: {explanation}"),
            Failure::Told(_) => {}
        }
    }

    /// Prints the failure and gives its exit code.
    pub(crate) fn report(self) -> ExitCode {
        self.tell();
        ExitCode::from(self.code())
    }
}

/// The exit code of a failed login, and what to do about it.
fn explain(error: &Error, attempt: &Attempt<'_>) -> (u8, String) {
    let Attempt {
        environment,
        identity,
        taxpayer,
    } = attempt;
    let other = match *environment {
        "sandbox" => "production",
        "production" => "sandbox",
        _ => "other",
    };
    match error {
        Error::InvalidConfig(_) | Error::Environment { .. } => (3, String::new()),
        Error::InvalidTaxpayer { .. } => (2, String::new()),
        Error::OAuth {
            code: OAuthErrorCode::InvalidClient,
            ..
        } => (
            4,
            "the identity service does not accept this client ID and secret (invalid_client). \
             Check MYINVOIS_CLIENT_ID and the secret; the system user may also be blocked, or \
             its secret expired (MyInvois secrets expire: make a new one in the MyInvois portal)."
                .into(),
        ),
        Error::OAuth { status: 403, .. } | Error::IdentityService { status: 403, .. } => (
            5,
            format!(
                "the identity service answered 403 Forbidden: these credentials most likely \
                 belong to the other environment. This is {environment} ({identity}); \
                 credentials registered in {other} work only there: check MYINVOIS_ENVIRONMENT."
            ),
        ),
        Error::OAuth {
            code: OAuthErrorCode::InvalidGrant | OAuthErrorCode::UnauthorizedClient,
            ..
        } if taxpayer.is_some() => (
            6,
            format!(
                "taxpayer {} has not authorised this intermediary. The taxpayer must add your \
                 company as its intermediary in the MyInvois portal, with the permissions you \
                 need; then check again.",
                taxpayer.unwrap_or_default()
            ),
        ),
        Error::WrongTaxpayer {
            expected,
            issued_for,
            ..
        } => (
            9,
            format!(
                "the identity service answered the login for {expected} with a token for \
                 {issued_for}; it is not used. Check the TIN given, and whether the identity \
                 service is MyInvois'."
            ),
        ),
        Error::RateLimited { retry_after } => (
            7,
            format!(
                "the login limit is reached (MyInvois allows 12 logins a minute per client ID, \
                 shared by every program using it): try again{}.",
                retry_after.map_or(String::new(), |d| format!(" in {} s", d.as_secs().max(1)))
            ),
        ),
        Error::Timeout { .. } | Error::Transport { .. } | Error::LoginAborted => (
            8,
            format!(
                "could not get an answer from the identity service at {identity}. Check the \
                 network or proxy, and MYINVOIS_IDENTITY_URL if set; the service may also be \
                 down for a while."
            ),
        ),
        Error::IdentityService { status, .. } if *status >= 500 => (
            8,
            format!(
                "the identity service at {identity} is failing (HTTP {status}): try again later."
            ),
        ),
        Error::InvalidResponse {
            transient: true, ..
        } => (
            8,
            format!("the identity service at {identity} gave a garbled answer: try again later."),
        ),
        _ => (9, "the identity service refused the login.".into()),
    }
}
