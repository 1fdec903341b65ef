//! The guarantees at the edges of a cache's life: a cache rebuilt, many
//! taxpayers meeting one endpoint at once, IDs of any shape, a token that
//! names another taxpayer, text from configuration, a short refresh window.

use std::time::Duration;

use myinvois_auth::Error;
use tokio::time::Instant;
use wiremock::ResponseTemplate;

use crate::support::Identity;

#[tokio::test(start_paused = true)]
async fn the_login_budget_outlives_the_cache_that_spent_it() {
    let identity = Identity::start().await;
    let build = || {
        identity
            .builder()
            .login_rate_limit(1, Duration::from_secs(60))
            .max_login_wait(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let cache = build();
    cache.token().await.unwrap();
    drop(cache);
    // A cache built per job: its own memory store holds no token, and the
    // client ID's window still holds the login the first one made.
    let rebuilt = build();
    let err = rebuilt.token().await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(identity.login_count().await, 1);
    // Once the window has passed, the rebuilt cache logs in.
    tokio::time::advance(Duration::from_secs(60)).await;
    rebuilt.token().await.unwrap();
    assert_eq!(identity.login_count().await, 2);
}

#[tokio::test(start_paused = true)]
async fn a_429s_hold_outlives_the_cache_that_met_it() {
    let identity = Identity::empty().await;
    identity
        .answer(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .await;
    let build = || {
        identity
            .builder()
            .max_login_wait(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let cache = build();
    let err = cache.token().await.unwrap_err();
    let held_at = Instant::now();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    drop(cache);
    identity.server.reset().await;
    identity.issue(3600, Duration::ZERO).await;
    // Refused at once while the hold ends beyond the caller's wait (1 s).
    for second in 0..29 {
        let rebuilt = build();
        let err = rebuilt.token().await.unwrap_err();
        assert!(
            matches!(err, Error::RateLimited { retry_after: Some(d) } if d <= Duration::from_secs(30 - second)),
            "{second} s after the 429: {err:?}"
        );
        drop(rebuilt);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(identity.login_count().await, 0, "a login inside the 30 s");
    // 29 s in, the hold ends within the wait: the login goes out at 30 s.
    build().token().await.unwrap();
    assert_eq!(held_at.elapsed(), Duration::from_secs(30));
    assert_eq!(identity.login_count().await, 1);
}
