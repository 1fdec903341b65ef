//! `myinvois-auth check`: logs in (within the host's login budget, saving
//! the new token for `token`) and prints what a person needs to trust the
//! credentials; explains each failure. With many taxpayers, a progress
//! line each on stderr: at 12 logins a minute, checking them takes
//! minutes. Once the credentials themselves are refused, the taxpayers
//! left are not checked (each would spend a login on the same answer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use myinvois_auth::{SqliteTokenStore, TokenCache};

use crate::exit::Failure;
use crate::fresh::FreshLogin;
use crate::output::{note, out};
use crate::settings::Settings;

/// How long `check` waits for a login slot by default: long enough for
/// many taxpayers at 12 logins a minute.
const CHECK_WAIT: Duration = Duration::from_secs(600);

pub(crate) async fn run(settings: &Settings, taxpayers: &[String]) -> Result<(), Failure> {
    let store = FreshLogin(SqliteTokenStore::new(&settings.store_path));
    let cache = settings.cache(Some(Arc::new(store)), CHECK_WAIT)?;
    out!(
        "environment:  {} ({})",
        settings.environment,
        settings.identity
    );
    out!("client ID:    {}", cache.client_id());
    if taxpayers.is_empty() {
        return check_one(settings, &cache, None).await;
    }
    let (started, count) = (Instant::now(), taxpayers.len());
    let (mut ok, mut first_failure) = (0, None);
    for (i, tin) in taxpayers.iter().enumerate() {
        if count > 1 {
            note!(
                "check: {}/{count} {tin}: logging in ({} ok so far, {} s)",
                i + 1,
                ok,
                started.elapsed().as_secs()
            );
        }
        out!();
        out!("on behalf of: {tin}");
        match check_one(settings, &cache, Some(tin)).await {
            Ok(()) => ok += 1,
            Err(failure) => {
                failure.tell();
                let stop = failure.is_about_the_credentials();
                first_failure.get_or_insert(failure.code());
                if stop && i + 1 < count {
                    note!(
                        "check: the credentials themselves were refused: the {} taxpayers left \
                         are not checked",
                        count - i - 1
                    );
                    break;
                }
            }
        }
    }
    if count > 1 {
        note!(
            "check: {ok} of {count} taxpayers ok in {} s",
            started.elapsed().as_secs()
        );
    }
    first_failure.map_or(Ok(()), |code| Err(Failure::Told(code)))
}

/// Logs in once and prints what the token says.
async fn check_one(
    settings: &Settings,
    cache: &TokenCache,
    taxpayer: Option<&str>,
) -> Result<(), Failure> {
    let token = match taxpayer {
        Some(tin) => cache.token_on_behalf_of(tin).await,
        None => cache.token().await,
    }
    .map_err(|e| Failure::login(e, &settings.attempt(taxpayer)))?;
    let claims = token.claims().ok();
    let tin = claims.as_ref().and_then(|c| c.taxpayer_tin());
    let name = claims.as_ref().and_then(|c| c.name());
    out!(
        "taxpayer:     {}{}",
        tin.unwrap_or("(no TaxpayerTIN claim)"),
        name.map(|n| format!(" ({n})")).unwrap_or_default()
    );
    if let Some(intermediary) = claims
        .as_ref()
        .filter(|c| c.is_intermediary() == Some(true))
        .and_then(|c| c.intermediary_tin())
    {
        out!("intermediary: {intermediary}");
    }
    out!(
        "scope:        {}",
        token
            .scope()
            .unwrap_or("(none named by the identity service)")
    );
    let left = (token.expires_at() - Utc::now()).num_minutes().max(0);
    out!(
        "expires:      {} (in {left} min)",
        token
            .expires_at()
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    out!("ok:           the credentials work");
    Ok(())
}
