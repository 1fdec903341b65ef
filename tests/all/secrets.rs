//! No secret or token in error messages. (Logs and `Debug` output are
//! checked in `tests/logs.rs`, which owns the global trace subscriber.)

use std::time::Duration;

use myinvois_auth::Credentials;

use crate::support::{Identity, CLIENT_ID, SECRET, TOKEN_MARK};

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "{what} shows the client secret: {text}"
    );
    assert!(!text.contains(TOKEN_MARK), "{what} shows a token: {text}");
}

#[tokio::test]
async fn transport_and_timeout_errors_do_not_show_the_secret() {
    let identity = Identity::issuing(3600, Duration::from_secs(30)).await;
    let cache = identity
        .builder()
        .login_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert_clean("a timeout error", &format!("{err} {err:?}"));

    let cache = myinvois_auth::TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url("http://127.0.0.1:9")
        .build()
        .unwrap();
    let err = cache.token().await.unwrap_err();
    assert_clean("a transport error", &format!("{err} {err:?}"));
}
