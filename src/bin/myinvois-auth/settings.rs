//! The command's configuration: each flag, or else its environment
//! variable (the same as `TokenCacheBuilder::from_env`'s, plus
//! `MYINVOIS_IDENTITY_URL` and `MYINVOIS_TOKEN_STORE`). The client secret
//! comes from `MYINVOIS_CLIENT_SECRET` or a file, never from the command
//! line, where other users of the host can read it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use myinvois_auth::{
    Environment, SqliteTokenStore, TokenCache, TokenCacheBuilder, TokenStore, ENV_CLIENT_ID,
    ENV_CLIENT_SECRET, ENV_ENVIRONMENT, ENV_SCOPE, ENV_TOKEN_STORE,
};
use zeroize::Zeroizing;

use crate::args::ConfigArgs;
use crate::exit::{Attempt, Failure};

/// Another identity service than the environment's.
pub(crate) const ENV_IDENTITY_URL: &str = "MYINVOIS_IDENTITY_URL";
/// A file holding the client secret.
pub(crate) const ENV_CLIENT_SECRET_FILE: &str = "MYINVOIS_CLIENT_SECRET_FILE";

/// What the commands run with.
pub(crate) struct Settings {
    builder: Builder,
    /// The token store's file.
    pub(crate) store_path: PathBuf,
    /// `sandbox` or `production`, as configured.
    pub(crate) environment: String,
    /// The identity service's origin.
    pub(crate) identity: String,
    max_wait: Option<Duration>,
}

/// Makes a fresh builder (a builder is consumed by `build`).
type Builder = Box<dyn Fn() -> Result<TokenCacheBuilder, myinvois_auth::Error>>;

impl Settings {
    pub(crate) fn resolve(args: &ConfigArgs) -> Result<Self, Failure> {
        if args.client_secret.is_some() {
            return Err(Failure::Usage(format!(
                "--client-secret is refused: other users of this host can read a process's \
                 arguments. Set {ENV_CLIENT_SECRET}, or put the secret in a file (owner-only) \
                 and give --client-secret-file PATH or {ENV_CLIENT_SECRET_FILE}"
            )));
        }
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let secret_file = args
            .client_secret_file
            .clone()
            .map(OsString::from)
            .or_else(|| var(ENV_CLIENT_SECRET_FILE))
            .map(PathBuf::from);
        let secret = match secret_file {
            Some(path) if var(ENV_CLIENT_SECRET).is_some() => {
                let _ = path;
                return Err(Failure::Config(format!(
                    "both {ENV_CLIENT_SECRET} and a secret file are set: keep one"
                )));
            }
            Some(path) => Some(read_secret(&path)?),
            None => None,
        };
        let flag = |value: &Option<String>| value.clone().map(OsString::from);
        let client_id = flag(&args.client_id).or_else(|| var(ENV_CLIENT_ID));
        let environment = flag(&args.environment).or_else(|| var(ENV_ENVIRONMENT));
        let scope = flag(&args.scope).or_else(|| var(ENV_SCOPE));
        let identity_url = args
            .identity_url
            .clone()
            .or_else(|| var(ENV_IDENTITY_URL).and_then(|v| v.into_string().ok()));
        let store_path = match args
            .token_store
            .clone()
            .or_else(|| var(ENV_TOKEN_STORE).map(PathBuf::from))
        {
            Some(path) => path,
            None => SqliteTokenStore::default_path().ok_or_else(|| {
                Failure::Config(format!(
                    "no cache folder (HOME is not set): give the token store's file with \
                     --token-store or {ENV_TOKEN_STORE}"
                ))
            })?,
        };
        let environment_name = environment
            .clone()
            .and_then(|e| e.into_string().ok())
            .map(|e| e.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let lookup = move |name: &str| -> Option<OsString> {
            match name {
                ENV_CLIENT_ID => client_id.clone(),
                ENV_CLIENT_SECRET => match &secret {
                    Some(secret) => Some(OsString::from(secret.as_str())),
                    None => var(ENV_CLIENT_SECRET),
                },
                ENV_ENVIRONMENT => environment.clone(),
                ENV_SCOPE => scope.clone(),
                // The store is made here (see `cache`), not by from_vars.
                _ => None,
            }
        };
        let url = identity_url.clone();
        let builder: Builder = Box::new(move || {
            let builder = TokenCacheBuilder::from_vars(&lookup)?;
            Ok(match &url {
                Some(url) => builder.identity_url(url.clone()),
                None => builder,
            })
        });
        let identity = match (&identity_url, environment_name.as_str()) {
            (Some(url), _) => origin(url),
            (None, "sandbox") => origin(Environment::Sandbox.identity_url().as_str()),
            (None, "production") => origin(Environment::Production.identity_url().as_str()),
            (None, _) => String::new(),
        };
        Ok(Settings {
            builder,
            store_path,
            environment: environment_name,
            identity,
            max_wait: args.max_wait.map(Duration::from_secs),
        })
    }

    /// What a login is for, to explain its failure.
    pub(crate) fn attempt<'a>(&'a self, taxpayer: Option<&'a str>) -> Attempt<'a> {
        Attempt {
            environment: &self.environment,
            identity: &self.identity,
            taxpayer,
        }
    }

    /// A cache on the host's token store, or on `store` when given.
    pub(crate) fn cache(
        &self,
        store: Option<Arc<dyn TokenStore>>,
        default_wait: Duration,
    ) -> Result<TokenCache, Failure> {
        let store = store.unwrap_or_else(|| Arc::new(SqliteTokenStore::new(&self.store_path)));
        (self.builder)()
            .map(|b| {
                // Most calls find a token in the host's store: the login's
                // client (the system's root certificates) only when needed.
                b.token_store(store)
                    .max_login_wait(self.max_wait.unwrap_or(default_wait))
                    .lazy_login_client()
            })
            .and_then(TokenCacheBuilder::build)
            .map_err(Failure::from_config)
    }
}

/// The secret in a file, without surrounding whitespace; zeroed on drop.
fn read_secret(path: &Path) -> Result<Zeroizing<String>, Failure> {
    let text = std::fs::read(path)
        .map(|bytes| Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned()))
        .map_err(|e| {
            Failure::Config(format!(
                "cannot read the client secret file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
    let secret = Zeroizing::new(text.trim().to_owned());
    if secret.is_empty() {
        return Err(Failure::Config(format!(
            "the client secret file {} is empty",
            path.display()
        )));
    }
    Ok(secret)
}

/// `scheme://host[:port]` of a URL (what is shown of it), or the text if
/// it is not one.
fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => "(not a URL)".to_owned(),
    }
}
