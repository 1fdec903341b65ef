//! An intermediary (an accounting firm, a platform) acting for many
//! taxpayers through one client ID.
//!
//! ```text
//! cargo run --example intermediary
//! ```
//!
//! Runs with no credentials against loopback stand-ins that behave like
//! MyInvois: one login per taxpayer (`onbehalfof`), at most 12 logins per
//! window or a 429. To finish in seconds the window here is 2 seconds
//! instead of MyInvois' minute; the cache is told so with
//! `login_rate_limit`, as you would leave it at its default (12 a minute)
//! in production. It shows:
//!
//! 1. 36 taxpayers at once: the login budget spreads their logins over the
//!    windows, so the identity service never answers 429, and every call
//!    is served;
//! 2. each taxpayer's token really is theirs (`claims().taxpayer_tin()`);
//! 3. calls after that cost no login at all;
//! 4. a taxpayer that has not authorised the intermediary fails once
//!    (`invalid_grant`), and further calls for it are answered from memory
//!    without spending the budget every other taxpayer shares;
//! 5. `stats()` says all of it.
//!
//! The example checks each claim and exits with an error if one is false.

#[path = "standins/mod.rs"]
mod standins;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use myinvois_auth::{AuthMiddleware, Credentials, Error, OAuthErrorCode, OnBehalfOf, TokenCache};
use standins::{ensure, DemoResult, StandIns, CLIENT_ID, CLIENT_SECRET};

const TAXPAYERS: usize = 36;
const WINDOW: Duration = Duration::from_secs(2);
const NOT_AUTHORISED: &str = "C99999999999";

fn tin(i: usize) -> String {
    format!("C{:011}", 10_000_000_000u64 + i as u64)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intermediary example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> DemoResult {
    let stand_ins = StandIns::start().await;
    stand_ins.limit_logins(12, WINDOW);
    stand_ins.unauthorised(NOT_AUTHORISED);

    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .identity_url(stand_ins.identity_url())
        .login_rate_limit(12, WINDOW)
        // Long enough for the last of 36 taxpayers (three windows).
        .max_login_wait(Duration::from_secs(15))
        .build()?;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::with_api_url(
            cache.clone(),
            stand_ins.api_url(),
        )?)
        .build();
    let url = format!("{}/api/v1.0/documents/recent", stand_ins.api_url());

    // 1. Every taxpayer at once.
    let started = Instant::now();
    let calls = (0..TAXPAYERS).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let response = client
                .get(url)
                .with_extension(OnBehalfOf::new(tin(i)))
                .send()
                .await?;
            Ok::<_, reqwest_middleware::Error>(response.status())
        })
    });
    for call in calls.collect::<Vec<_>>() {
        let status = call.await??;
        ensure(status == 200, || format!("a call answered {status}"))?;
    }
    println!(
        "1. {TAXPAYERS} taxpayers served in {:.1}s with {} logins, {} answered 429",
        started.elapsed().as_secs_f64(),
        stand_ins.logins(),
        stand_ins.rate_limited()
    );
    ensure(stand_ins.logins() == TAXPAYERS, || {
        format!(
            "expected one login per taxpayer, saw {}",
            stand_ins.logins()
        )
    })?;
    ensure(stand_ins.rate_limited() == 0, || {
        "the budget let a 429 happen".into()
    })?;

    // 2. Each token belongs to its taxpayer.
    for i in 0..TAXPAYERS {
        let token = cache.token_on_behalf_of(tin(i)).await?;
        let claims = token.claims()?;
        ensure(claims.taxpayer_tin() == Some(tin(i).as_str()), || {
            format!("the token for {} names {:?}", tin(i), claims.taxpayer_tin())
        })?;
    }
    println!("2. every token's TaxpayerTIN claim is its own taxpayer's");

    // 3. Cached: no more logins.
    for i in 0..TAXPAYERS {
        let call = client.get(&url).with_extension(OnBehalfOf::new(tin(i)));
        ensure(call.send().await?.status() == 200, || {
            "a cached call failed".into()
        })?;
    }
    ensure(stand_ins.logins() == TAXPAYERS, || {
        "a cached call logged in".into()
    })?;
    println!("3. {TAXPAYERS} more calls, no login");

    // 4. A taxpayer that has not authorised us: one login, then memory.
    let before = stand_ins.logins();
    for attempt in 1..=5 {
        let err = cache
            .token_on_behalf_of(NOT_AUTHORISED)
            .await
            .expect_err("not authorised");
        if attempt == 1 {
            println!("4. {NOT_AUTHORISED}: {err}");
        }
        ensure(
            matches!(
                &err,
                Error::OAuth {
                    code: OAuthErrorCode::InvalidGrant,
                    ..
                }
            ),
            || format!("expected invalid_grant, got {err}"),
        )?;
    }
    ensure(stand_ins.logins() == before + 1, || {
        format!("5 failed calls cost {} logins", stand_ins.logins() - before)
    })?;
    println!("   5 calls for it cost 1 login; the other 4 were answered from memory");

    // 5. The counters.
    let stats = cache.stats();
    println!(
        "5. stats: {} logins, {} refused by the budget, {} answered from memory, {} entries",
        stats.logins, stats.logins_refused_by_budget, stats.answered_from_memory, stats.entries
    );
    ensure(stats.logins == stand_ins.logins() as u64, || {
        "stats disagree".into()
    })?;
    ensure(stats.answered_from_memory == 4, || "memory not used".into())?;
    ensure(stats.logins_refused_by_budget == 0, || {
        "a caller was refused".into()
    })?;
    Ok(())
}
