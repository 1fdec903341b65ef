//! Locks that never outlive their holders, and waits that do not flood
//! Redis (issue 17).

use std::sync::Arc;
use std::time::{Duration, Instant};

use myinvois_auth::{Credentials, RedisTokenStore, TokenCache};

use super::redis_servers::Redis;
use super::support::{CLIENT_ID, SECRET};
use super::Service;

fn lock_keys(redis: &Redis, prefix: &str) -> Vec<String> {
    redis
        .cmd(&["KEYS", &format!("{prefix}:lock:*")])
        .as_array()
        .unwrap_or(&[])
        .iter()
        .map(|k| k.text())
        .collect()
}

// ---------------------------------------------------------------- item 2

/// The store's connection made on a current-thread runtime, a login cut off
/// by dropping that runtime (its lock held: the login reached the identity
/// service, which hangs): the next call, on another runtime, logs in within
/// 1 s, and no lock key remains. (The unlock of the cut-off login goes over
/// the dead connection, fails, and must be retried on a fresh one.)
#[test]
fn a_login_cut_off_with_the_runtime_that_made_the_connection_leaves_no_lock() {
    let redis = Redis::start();
    let services = tokio::runtime::Runtime::new().unwrap();
    let (server, service) = services.block_on(Service::start(3600));
    let cache = TokenCache::builder(Credentials::new(CLIENT_ID, SECRET))
        .identity_url(server.uri())
        .token_store(Arc::new(
            RedisTokenStore::with_prefix(&redis.url(), "cut").unwrap(),
        ))
        .build()
        .unwrap();
    service.hang_next_login(Duration::from_secs(60));
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        let cache = cache.clone();
        tokio::spawn(async move { cache.token().await });
        while service.login_times().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(
        lock_keys(&redis, "cut").len(),
        1,
        "the login holds the lock"
    );
    drop(first);

    let second = tokio::runtime::Runtime::new().unwrap();
    let (outcome, took) = second.block_on(async {
        let asked = Instant::now();
        let outcome = cache.token().await;
        (outcome, asked.elapsed())
    });
    let left = lock_keys(&redis, "cut");
    eprintln!(
        "cut-off runtime: the next call {:?} after {took:?}; lock keys left {left:?}; {:?}",
        outcome.as_ref().map(|t| t.secret().to_owned()),
        cache.stats().store_errors
    );
    outcome.expect("the next call is served");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(service.login_times().len(), 2);
    assert_eq!(left, Vec::<String>::new());
}
