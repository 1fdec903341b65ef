//! `TokenCacheBuilder::from_vars`: a cache configured from variables logs
//! in with exactly the client ID, secret and scope they hold, in the
//! environment they name. (`tests/env.rs` covers `from_env`'s errors
//! against the real process environment.)

use std::ffi::OsString;

use myinvois_auth::{Environment, TokenCacheBuilder};

use crate::support::{form, Identity};

/// A lookup over `vars`, as a secrets manager's answer would be.
fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    move |name| {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| OsString::from(v))
    }
}

#[tokio::test]
async fn a_cache_from_vars_logs_in_with_exactly_their_credentials_and_scope() {
    let identity = Identity::start().await;
    for (named, environment) in [
        ("sandbox", Environment::Sandbox),
        ("Production", Environment::Production),
    ] {
        identity.server.reset().await;
        identity.issue(3600, std::time::Duration::ZERO).await;
        let vars = lookup(&[
            ("MYINVOIS_CLIENT_ID", "erp-from-vars"),
            // Surrounding whitespace (a secrets file's newline) is not sent.
            ("MYINVOIS_CLIENT_SECRET", "VARSECRET-0d15ea5e\n"),
            ("MYINVOIS_ENVIRONMENT", named),
            ("MYINVOIS_SCOPE", "InvoicingAPI"),
        ]);
        // The identity URL cannot come from the variables; a loopback
        // stand-in replaces the environment's for the login only.
        let cache = TokenCacheBuilder::from_vars(vars)
            .expect("complete configuration")
            .identity_url(identity.uri())
            .build()
            .expect("builds");
        assert_eq!(cache.environment(), Some(&environment), "{named}");
        assert_eq!(cache.client_id(), "erp-from-vars");

        cache.token().await.expect("logs in");
        let logins = identity.logins().await;
        assert_eq!(logins.len(), 1, "{named}");
        let mut fields = form(&logins[0]);
        fields.sort();
        assert_eq!(
            fields,
            [
                ("client_id".to_owned(), "erp-from-vars".to_owned()),
                ("client_secret".to_owned(), "VARSECRET-0d15ea5e".to_owned()),
                ("grant_type".to_owned(), "client_credentials".to_owned()),
                ("scope".to_owned(), "InvoicingAPI".to_owned()),
            ],
            "{named}"
        );
    }
}

#[tokio::test]
async fn without_a_scope_variable_the_login_sends_no_scope() {
    let identity = Identity::start().await;
    let cache = TokenCacheBuilder::from_vars(lookup(&[
        ("MYINVOIS_CLIENT_ID", "erp-from-vars"),
        ("MYINVOIS_CLIENT_SECRET", "VARSECRET-0d15ea5e"),
        ("MYINVOIS_ENVIRONMENT", "sandbox"),
        ("MYINVOIS_SCOPE", "  "),
    ]))
    .expect("an empty scope is no scope")
    .identity_url(identity.uri())
    .build()
    .unwrap();
    cache.token().await.unwrap();
    let fields = form(&identity.logins().await[0]);
    assert!(fields.iter().all(|(name, _)| name != "scope"), "{fields:?}");
}

/// `MYINVOIS_TOKEN_STORE` names a file that caches built from the same
/// variables share: the second makes no login.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_store_variable_gives_caches_one_file_to_share() {
    let identity = Identity::start().await;
    let folder = std::env::temp_dir().join(format!("myinvois-from-vars-{}", std::process::id()));
    let file = folder.join("tokens.sqlite3");
    let vars = [
        ("MYINVOIS_CLIENT_ID", "erp-from-vars"),
        ("MYINVOIS_CLIENT_SECRET", "VARSECRET-0d15ea5e"),
        ("MYINVOIS_ENVIRONMENT", "sandbox"),
        ("MYINVOIS_TOKEN_STORE", file.to_str().unwrap()),
    ];
    let cache = || {
        TokenCacheBuilder::from_vars(lookup(&vars))
            .unwrap()
            .identity_url(identity.uri())
            .build()
            .unwrap()
    };
    let first = cache().token().await.unwrap();
    let second = cache().token().await.unwrap();
    assert_eq!(first.secret(), second.secret());
    assert_eq!(
        identity.logins().await.len(),
        1,
        "the second cache logged in"
    );
    assert!(file.exists());
    let _ = std::fs::remove_dir_all(folder);
}

/// Without the `sqlite` feature the variable is refused, not ignored.
#[cfg(not(feature = "sqlite"))]
#[test]
fn a_token_store_variable_needs_the_sqlite_feature() {
    let err = TokenCacheBuilder::from_vars(lookup(&[
        ("MYINVOIS_CLIENT_ID", "erp-from-vars"),
        ("MYINVOIS_CLIENT_SECRET", "VARSECRET-0d15ea5e"),
        ("MYINVOIS_ENVIRONMENT", "sandbox"),
        ("MYINVOIS_TOKEN_STORE", "/tmp/tokens.sqlite3"),
    ]))
    .unwrap_err();
    assert!(
        matches!(
            err,
            myinvois_auth::Error::Environment {
                name: "MYINVOIS_TOKEN_STORE",
                problem: myinvois_auth::EnvProblem::NeedsFeature("sqlite")
            }
        ),
        "{err:?}"
    );
}
