//! `myinvois-auth claims`: the decoded claims of the current token, as
//! JSON, never the token itself.

use std::collections::BTreeMap;
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
    let claims = token.claims().map_err(|e| Failure::Other(e.to_string()))?;
    let sorted: BTreeMap<&str, &serde_json::Value> = claims.iter().collect();
    let text = serde_json::to_string_pretty(&sorted)
        .map_err(|e| Failure::Other(format!("cannot show the claims: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Other(format!("cannot write the claims: {}", e.kind())))
}
