//! `TokenCache::from_env` against the real process environment.
//!
//! A test binary of its own with a single test: it changes the process
//! environment, which no other thread may read meanwhile.

use myinvois_auth::{EnvProblem, Error, TokenCache, TokenCacheBuilder};

const SECRET: &str = "ENVSECRET-51c0ffee";

fn set(name: &str, value: &str) {
    std::env::set_var(name, value);
}

fn unset(name: &str) {
    std::env::remove_var(name);
}

/// The error of `from_env`, checked never to show the secret.
fn failure() -> Error {
    let err = TokenCache::from_env().expect_err("configuration is incomplete");
    for shown in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
        assert!(!shown.contains(SECRET), "the secret leaked: {shown}");
    }
    err
}

#[test]
fn from_env_names_the_missing_or_bad_variable_and_never_shows_a_value() {
    for name in [
        "MYINVOIS_CLIENT_ID",
        "MYINVOIS_CLIENT_SECRET",
        "MYINVOIS_ENVIRONMENT",
        "MYINVOIS_SCOPE",
    ] {
        unset(name);
    }

    let err = failure();
    assert!(matches!(
        err,
        Error::Environment {
            name: "MYINVOIS_CLIENT_ID",
            problem: EnvProblem::Missing
        }
    ));
    assert_eq!(
        err.to_string(),
        "environment variable MYINVOIS_CLIENT_ID: not set"
    );

    set("MYINVOIS_CLIENT_ID", "erp-system");
    let err = failure();
    assert!(matches!(
        err,
        Error::Environment {
            name: "MYINVOIS_CLIENT_SECRET",
            problem: EnvProblem::Missing
        }
    ));

    set("MYINVOIS_CLIENT_SECRET", "   ");
    assert!(matches!(
        failure(),
        Error::Environment {
            name: "MYINVOIS_CLIENT_SECRET",
            problem: EnvProblem::Missing
        }
    ));

    set("MYINVOIS_CLIENT_SECRET", SECRET);
    assert!(matches!(
        failure(),
        Error::Environment {
            name: "MYINVOIS_ENVIRONMENT",
            problem: EnvProblem::Missing
        }
    ));

    // A value that is not an environment: named, the value not echoed.
    set("MYINVOIS_ENVIRONMENT", "staging-with-ENVSECRET-51c0ffee");
    let err = failure();
    assert!(matches!(
        err,
        Error::Environment {
            name: "MYINVOIS_ENVIRONMENT",
            problem: EnvProblem::Expected(_)
        }
    ));
    assert!(!err.to_string().contains("staging"));

    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::env::set_var(
            "MYINVOIS_CLIENT_SECRET",
            std::ffi::OsStr::from_bytes(b"ENVSECRET-51c0ffee\xff"),
        );
        set("MYINVOIS_ENVIRONMENT", "sandbox");
        assert!(matches!(
            failure(),
            Error::Environment {
                name: "MYINVOIS_CLIENT_SECRET",
                problem: EnvProblem::NotUnicode
            }
        ));
        set("MYINVOIS_CLIENT_SECRET", SECRET);
    }

    // Surrounding whitespace (a trailing newline from a secrets file) is dropped.
    set("MYINVOIS_CLIENT_ID", " erp-system\n");
    set("MYINVOIS_ENVIRONMENT", " Production ");
    set("MYINVOIS_SCOPE", "InvoicingAPI");
    let builder = TokenCacheBuilder::from_env().expect("complete configuration");
    assert!(!format!("{builder:?}").contains(SECRET));
    let cache = builder.build().expect("builds");
    assert_eq!(cache.client_id(), "erp-system");
    assert_eq!(
        cache.environment().map(|e| e.api_url().to_string()),
        Some("https://api.myinvois.hasil.gov.my/".to_owned())
    );
    assert!(!format!("{cache:?}").contains(SECRET));
}
