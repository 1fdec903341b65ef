//! A token read from a token store passes the same checks as a fresh one and
//! is trusted no longer than the store says is left.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use myinvois_auth::{Loaded, StoredToken};

use crate::support::{Hooked, Identity, TOKEN_MARK};

/// A store whose every `load` answers `token`.
fn answering(token: StoredToken) -> Arc<Hooked> {
    Arc::new(Hooked::on_load(move |_| {
        Loaded::new(Some(token.clone()), None)
    }))
}

const STORED: &str = "STOREDTOKEN";

fn stored(
    access_token: &str,
    issued_in: chrono::Duration,
    lifetime: chrono::Duration,
    remaining: Duration,
) -> StoredToken {
    let issued_at = Utc::now() + issued_in;
    StoredToken::new(access_token, issued_at, issued_at + lifetime, remaining)
}

#[tokio::test(start_paused = true)]
async fn a_stored_token_that_fails_a_check_is_never_served_and_a_login_happens() {
    let hour = chrono::Duration::hours(1);
    let minute = Duration::from_secs(60);
    let cases = [
        (
            "a 100-year expiry",
            stored(
                STORED,
                chrono::Duration::zero(),
                chrono::Duration::days(36_500),
                minute,
            ),
        ),
        (
            "an empty token",
            stored("", chrono::Duration::zero(), hour, minute),
        ),
        (
            "CR/LF in the token",
            stored("abc\r\nX-Evil: 1", chrono::Duration::zero(), hour, minute),
        ),
        (
            "a space in the token",
            stored("abc def", chrono::Duration::zero(), hour, minute),
        ),
        (
            "issued a year in the future",
            stored(STORED, chrono::Duration::days(365), hour, minute),
        ),
        (
            "expiry before issue",
            stored(STORED, chrono::Duration::zero(), -hour, minute),
        ),
        (
            "expired two years ago by the wall clock, whatever the store says is left",
            stored(STORED, chrono::Duration::days(-730), hour, minute),
        ),
        (
            "nothing left",
            stored(STORED, chrono::Duration::zero(), hour, Duration::ZERO),
        ),
    ];
    for (what, token) in cases {
        let identity = Identity::start().await;
        let store = answering(token);
        let cache = identity.builder().token_store(store).build().unwrap();
        let served = cache.token().await.unwrap();
        assert!(
            served.secret().starts_with(TOKEN_MARK),
            "{what}: the stored token was served"
        );
        assert_eq!(identity.login_count().await, 1, "{what}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_good_stored_token_is_served_for_what_the_store_says_is_left_and_no_longer() {
    let identity = Identity::start().await;
    // Its wall-clock times claim an hour; the store says 60 s are left.
    let store = answering(stored(
        STORED,
        chrono::Duration::minutes(-1),
        chrono::Duration::hours(1),
        Duration::from_secs(60),
    ));
    let cache = identity
        .builder()
        .token_store(store)
        .refresh_before(Duration::ZERO)
        .build()
        .unwrap();
    let token = cache.token().await.unwrap();
    assert_eq!(token.secret(), STORED);
    assert_eq!(identity.login_count().await, 0);
    let left = token.expires_at() - Utc::now();
    assert!(
        left <= chrono::Duration::seconds(61),
        "trusted beyond what the store said: {left}"
    );
    // Past those 60 s the cached token is not served any more: the cache
    // asks the store again (this one answers the same for ever).
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(!cache.token().await.unwrap().same_token(&token));
}

#[tokio::test(start_paused = true)]
async fn a_stored_scope_is_shown_like_text_from_the_identity_service() {
    let identity = Identity::start().await;
    let mut token = stored(
        STORED,
        chrono::Duration::zero(),
        chrono::Duration::hours(1),
        Duration::from_secs(600),
    );
    token.scope = Some(format!(
        "InvoicingAPI {STORED}\r\nforged {}",
        "s".repeat(1000)
    ));
    let store = answering(token);
    let cache = identity.builder().token_store(store).build().unwrap();
    let served = cache.token().await.unwrap();
    assert_eq!(served.secret(), STORED);
    let scope = served.scope().unwrap();
    assert!(scope.starts_with("InvoicingAPI <redacted>"), "{scope}");
    assert!(!scope.chars().any(char::is_control), "{scope:?}");
    assert!(scope.chars().count() <= 301, "{}", scope.len());
    assert!(!format!("{served:?}").contains(STORED));
}
