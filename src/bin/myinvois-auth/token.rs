//! `myinvois-auth token`: the access token on stdout, and nothing else,
//! through the host's token store (a cached token costs no login).

use std::io::Write;

use myinvois_auth::DEFAULT_MAX_LOGIN_WAIT;

use crate::exit::Failure;
use crate::settings::Settings;

pub(crate) async fn run(settings: &Settings, taxpayer: Option<&str>) -> Result<(), Failure> {
    let cache = settings.cache(None, DEFAULT_MAX_LOGIN_WAIT)?;
    let token = match taxpayer {
        Some(tin) => cache.token_on_behalf_of(tin).await,
        None => cache.token().await,
    }
    .map_err(|e| Failure::login(e, &settings.attempt(taxpayer)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", token.secret())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Other(format!("cannot write the token: {}", e.kind())))
}
