//! The auth middleware in a reqwest-middleware stack with `reqwest-tracing`
//! and `reqwest-retry`, in the order that works: tracing outermost (one
//! span per call, retries included), then retry, then auth (so that a
//! failed login can be retried at all).
//!
//! ```text
//! cargo run --example middleware_stack --features retry
//! ```
//!
//! Runs with no credentials against loopback stand-ins. It shows:
//!
//! 1. the identity service answers 503 to the first login: the retry layer
//!    retries, no sooner than the cache's back-off (the retry waits it out
//!    instead of being answered from memory), and the call succeeds;
//! 2. a wrong secret (`invalid_client`) fails at once, after one login and
//!    no retry: a new login cannot cure it;
//! 3. `Error::find_in` takes the login's error out of reqwest-retry's
//!    `RetryError`, where a bare `downcast_ref` finds nothing.
//!
//! Each claim is checked; the example fails if one does not hold.
//!
//! `RUST_LOG=info` (the default here) shows the login spans and the retry.

#[path = "standins/mod.rs"]
mod standins;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use myinvois_auth::{
    retry, AuthMiddleware, Credentials, Error, OAuthErrorCode, TokenCache,
    DEFAULT_TRANSIENT_ERROR_BACKOFF,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryError;
use reqwest_tracing::TracingMiddleware;
use standins::{ensure, DemoResult, StandIns, CLIENT_ID, CLIENT_SECRET};
use wiremock::ResponseTemplate;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("middleware_stack example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Tracing, then retry, then auth.
fn stack(cache: &TokenCache, stand_ins: &StandIns) -> DemoResult<ClientWithMiddleware> {
    let policy = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(50), Duration::from_secs(2))
        .build_with_max_retries(3);
    Ok(ClientBuilder::new(reqwest::Client::new())
        .with(TracingMiddleware::default())
        .with(retry::middleware(policy))
        .with(AuthMiddleware::with_api_url(
            cache.clone(),
            stand_ins.api_url(),
        )?)
        .build())
}

async fn run() -> DemoResult {
    let stand_ins = StandIns::start().await;
    let url = format!("{}/api/v1.0/documenttypes", stand_ins.api_url());

    // 1. A 503 at a cold start, cured by one retry.
    stand_ins.answer_next_login(ResponseTemplate::new(503));
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, CLIENT_SECRET))
        .identity_url(stand_ins.identity_url())
        .build()?;
    let response = stack(&cache, &stand_ins)?.get(&url).send().await?;
    ensure(response.status() == 200, || {
        format!("answered {}", response.status())
    })?;
    let times = stand_ins.login_times();
    ensure(times.len() == 2, || {
        format!("expected 2 logins, saw {}", times.len())
    })?;
    // A first transient failure is remembered for half to all of the
    // initial back-off (jitter); the policy's own first retry comes within
    // 50 ms, so only the auth middleware's wait can explain a later login
    // with no attempt answered from memory in between.
    let gap = times[1] - times[0];
    let shortest_backoff = DEFAULT_TRANSIENT_ERROR_BACKOFF.0 / 2;
    ensure(gap >= shortest_backoff, || {
        format!("the retry logged in {gap:?} after the 503, before the back-off ({shortest_backoff:?} at least)")
    })?;
    let from_memory = cache.stats().answered_from_memory;
    ensure(from_memory == 0, || {
        format!("{from_memory} attempts were answered from memory instead of waiting")
    })?;
    println!(
        "1. 503 on the first login; retried {:.2}s later (the back-off is at least {:.2}s); \
         the call succeeded (2 logins, 0 answered from memory)",
        gap.as_secs_f64(),
        shortest_backoff.as_secs_f64(),
    );

    // 2. A wrong secret: one login, no retry.
    let wrong = TokenCache::builder(Credentials::new(CLIENT_ID, "not-the-secret"))
        .identity_url(stand_ins.identity_url())
        .build()?;
    let before = stand_ins.logins();
    let err = stack(&wrong, &stand_ins)?
        .get(&url)
        .send()
        .await
        .expect_err("a wrong secret cannot log in");
    ensure(stand_ins.logins() == before + 1, || {
        format!("invalid_client cost {} logins", stand_ins.logins() - before)
    })?;

    // 3. Our error, found inside reqwest-retry's RetryError.
    let reqwest_middleware::Error::Middleware(wrapped) = &err else {
        return Err(format!("expected a middleware error, got {err:?}").into());
    };
    ensure(
        matches!(
            wrapped.downcast_ref::<RetryError>(),
            Some(RetryError::Error(_))
        ),
        || format!("expected reqwest-retry's RetryError::Error (no retry), got {wrapped:?}"),
    )?;
    ensure(wrapped.downcast_ref::<Error>().is_none(), || {
        "a bare downcast_ref found the error: find_in would not be needed".to_owned()
    })?;
    match Error::find_in(&err) {
        Some(Error::OAuth {
            code: OAuthErrorCode::InvalidClient,
            ..
        }) => {
            println!("2. invalid_client after 1 login and no retry: check the client ID and secret")
        }
        other => return Err(format!("expected invalid_client, found {other:?}").into()),
    }
    println!(
        "3. Error::find_in found it inside reqwest-retry's RetryError, \
         where a bare downcast_ref finds nothing: {err}"
    );
    Ok(())
}
