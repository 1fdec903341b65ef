//! The `metrics` feature: every counter and the login-duration histogram
//! reach the installed recorder, with the same counts as `stats()`.
//!
//! Each test installs a local recorder around a current-thread runtime: the
//! login tasks run on that thread, and no other test sees the recorder.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use myinvois_auth::{
    metrics as names, Loaded, OnBehalfOf, StoreError, StoreErrorKind, StoredToken, TokenStore,
};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::support::{client, settle_until, Api, Identity};

/// A store whose every call times out.
#[derive(Debug)]
struct Unanswering;

#[async_trait]
impl TokenStore for Unanswering {
    async fn load(&self, _: &str) -> Result<Loaded, StoreError> {
        Err(StoreError::new(StoreErrorKind::Timeout, "no answer"))
    }
    async fn save(&self, _: &str, _: &StoredToken) -> Result<(), StoreError> {
        Err(StoreError::new(StoreErrorKind::Timeout, "no answer"))
    }
    async fn try_lock(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::new(StoreErrorKind::Timeout, "no answer"))
    }
    async fn unlock(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Err(StoreError::new(StoreErrorKind::Timeout, "no answer"))
    }
}

/// A metric as recorded: name, labels, value.
type Seen = (String, Vec<(String, String)>, DebugValue);

/// Every metric recorded so far.
fn read(snapshotter: &Snapshotter) -> Vec<Seen> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.key().name().to_owned(), labels, value)
        })
        .collect()
}

fn counter(seen: &[Seen], name: &str, label: Option<(&str, &str)>) -> u64 {
    seen.iter()
        .filter(|(n, labels, _)| {
            n == name && label.is_none_or(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn histogram_len(seen: &[Seen], name: &str, outcome: &str) -> usize {
    seen.iter()
        .filter(|(n, labels, _)| {
            n == name && labels.iter().any(|(k, v)| k == "outcome" && v == outcome)
        })
        .map(|(_, _, value)| match value {
            DebugValue::Histogram(values) => values.len(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

#[test]
fn every_event_reaches_the_metrics_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A local recorder: the login tasks run on this thread (current-thread
    // runtime), and no other test sees it.
    let stats = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            names::describe();
            let identity = Identity::empty().await;
            identity
                .server
                .register(
                    Mock::given(method("POST"))
                        .respond_with(ResponseTemplate::new(503))
                        .up_to_n_times(1)
                        .with_priority(1),
                )
                .await;
            identity
                .server
                .register(
                    Mock::given(method("POST"))
                        .and(wiremock::matchers::header("onbehalfof", "C10000000001"))
                        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
                        .with_priority(2),
                )
                .await;
            identity.issue(3600, Duration::ZERO).await;
            let (api_server, api) = Api::start().await;
            let cache = identity
                .builder()
                .transient_error_backoff(Duration::ZERO, Duration::ZERO)
                .token_store(Arc::new(Unanswering))
                .max_login_wait(Duration::ZERO)
                .build()
                .unwrap();
            let http = client(&cache, &api_server);
            let url = format!("{}/api/v1.0/documenttypes", api_server.uri());

            // 1. A 503: a failed login.
            assert!(http.get(&url).send().await.is_err());
            // 2. A login, then a 401 retried with a new login.
            http.get(&url).send().await.unwrap();
            api.revoke("TOKENVALUE-1");
            assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
            // 3. A 429 for one taxpayer; the budget then refuses another
            //    taxpayer's login (no wait allowed, blocked for 1 s).
            for tin in ["C10000000001", "C10000000002"] {
                let call = http.get(&url).with_extension(OnBehalfOf::new(tin));
                assert!(call.send().await.is_err());
            }
            cache.stats()
        })
    });

    let seen = read(&snapshotter);
    assert_eq!(stats.logins, 4);
    assert_eq!(counter(&seen, names::LOGINS, None), stats.logins);
    assert_eq!(
        counter(
            &seen,
            names::LOGIN_FAILURES,
            Some(("kind", "identity_service"))
        ),
        1
    );
    assert_eq!(
        counter(&seen, names::LOGIN_FAILURES, Some(("kind", "rate_limited"))),
        1
    );
    assert_eq!(counter(&seen, names::LOGIN_FAILURES, None), 2);
    assert_eq!(stats.logins_rate_limited, 1);
    assert_eq!(counter(&seen, names::BUDGET_REFUSALS, None), 1);
    assert_eq!(stats.logins_refused_by_budget, 1);
    assert_eq!(counter(&seen, names::RETRIES_AFTER_401, None), 1);
    assert_eq!(stats.retries_after_401, 1);
    assert_eq!(
        counter(&seen, names::REFRESHES_AHEAD, None),
        stats.refreshes_ahead
    );
    assert_eq!(
        counter(&seen, names::STORE_ERRORS, Some(("kind", "timeout"))),
        stats.store_errors.timeout
    );
    assert!(stats.store_errors.timeout > 0);
    assert_eq!(histogram_len(&seen, names::LOGIN_DURATION, "ok"), 2);
    assert_eq!(histogram_len(&seen, names::LOGIN_DURATION, "error"), 2);
}

/// Refreshes ahead and answers from memory are never counted by the test
/// above (it has no refresh and no remembered failure): here each happens
/// exactly once.
#[test]
fn a_refresh_ahead_and_an_answer_from_memory_reach_the_metrics_recorder() {
    const UNAUTHORISED: &str = "C10000000009";
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let stats = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let identity = Identity::empty().await;
            identity
                .server
                .register(
                    Mock::given(method("POST"))
                        .and(wiremock::matchers::header("onbehalfof", UNAUTHORISED))
                        .respond_with(
                            ResponseTemplate::new(400)
                                .set_body_json(serde_json::json!({ "error": "invalid_grant" })),
                        )
                        .with_priority(1),
                )
                .await;
            // One-minute tokens, refreshed in their last 20 s.
            identity.issue(60, Duration::ZERO).await;
            let cache = identity
                .builder()
                .refresh_before(Duration::from_secs(20))
                .build()
                .unwrap();

            // 1. A refresh ahead of expiry: the old token is served while
            //    the new one is fetched in the background.
            let first = cache.token().await.unwrap();
            tokio::time::advance(Duration::from_secs(41)).await;
            assert!(cache.token().await.unwrap().same_token(&first));
            settle_until(|| async { !cache.token().await.unwrap().same_token(&first) }).await;

            // 2. A taxpayer that has not authorised us: one login fails,
            //    the next call is answered from memory without a login.
            cache.token_on_behalf_of(UNAUTHORISED).await.unwrap_err();
            let remembered = cache.token_on_behalf_of(UNAUTHORISED).await.unwrap_err();
            assert!(remembered.retry_after().is_some(), "{remembered:?}");
            assert_eq!(identity.login_count().await, 3);
            cache.stats()
        })
    });

    let seen = read(&snapshotter);
    assert_eq!(stats.refreshes_ahead, 1);
    assert_eq!(counter(&seen, names::REFRESHES_AHEAD, None), 1);
    assert_eq!(stats.answered_from_memory, 1);
    assert_eq!(counter(&seen, names::ANSWERED_FROM_MEMORY, None), 1);
    assert_eq!(counter(&seen, names::LOGINS, None), 3);
    assert_eq!(
        counter(&seen, names::LOGIN_FAILURES, Some(("kind", "oauth"))),
        1
    );
}

/// Runs `test` on a current-thread runtime (paused clock when `paused`)
/// with a local recorder; returns what it recorded, and the test's value.
fn recorded<T, F>(paused: bool, test: impl FnOnce() -> F) -> (Vec<Seen>, T)
where
    F: std::future::Future<Output = T>,
{
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap();
    let value = metrics::with_local_recorder(&recorder, || runtime.block_on(test()));
    (read(&snapshotter), value)
}

fn gauge(seen: &[Seen], name: &str) -> Option<f64> {
    seen.iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, value)| match value {
            DebugValue::Gauge(v) => v.0,
            other => panic!("{name} is not a gauge: {other:?}"),
        })
        .next()
}

fn histogram(seen: &[Seen], name: &str) -> Vec<f64> {
    seen.iter()
        .filter(|(n, _, _)| n == name)
        .flat_map(|(_, _, value)| match value {
            DebugValue::Histogram(values) => values.iter().map(|v| v.0).collect::<Vec<_>>(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .collect()
}

/// One event, one count: a login answered 429 is one login sent and one
/// login failure of kind `rate_limited`, nothing else.
#[test]
fn a_429_counts_once() {
    let (seen, stats) = recorded(false, || async {
        let identity = Identity::empty().await;
        identity
            .answer(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
            .await;
        let cache = identity.cache();
        let err = cache.token().await.unwrap_err();
        assert!(
            matches!(err, myinvois_auth::Error::RateLimited { .. }),
            "{err:?}"
        );
        cache.stats()
    });
    assert_eq!(counter(&seen, names::LOGINS, None), 1);
    assert_eq!(
        counter(&seen, names::LOGIN_FAILURES, Some(("kind", "rate_limited"))),
        1
    );
    let counts: Vec<_> = seen
        .iter()
        .filter(|(name, _, value)| {
            name != names::LOGINS && matches!(value, DebugValue::Counter(n) if *n > 0)
        })
        .collect();
    assert_eq!(
        counts.len(),
        1,
        "the 429 counted more than once: {counts:?}"
    );
    // The cache's own counters keep the 429s apart.
    assert_eq!(stats.logins_rate_limited, 1);
}

#[test]
fn the_entries_gauge_sums_the_caches_and_follows_them() {
    let (seen, _second) = recorded(true, || async {
        let identity = Identity::start().await;
        let first = identity.cache();
        first.token().await.unwrap();
        for tin in ["C10000000001", "C10000000002"] {
            first.token_on_behalf_of(tin).await.unwrap();
        }
        let second = identity.cache();
        second.token().await.unwrap();
        // The sweep (at most once a second, from a call) reports them.
        tokio::time::advance(Duration::from_secs(2)).await;
        first.token().await.unwrap();
        second.token().await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // Dropping a cache takes its entries off.
        drop(first);
        second
    });
    assert_eq!(gauge(&seen, names::ENTRIES), Some(1.0), "{seen:?}");
    // (The second cache is dropped after the recorder is gone.)
}

#[test]
fn the_entries_gauge_counts_every_entry_of_a_cache() {
    let (seen, stats) = recorded(true, || async {
        let identity = Identity::start().await;
        let cache = identity.cache();
        cache.token().await.unwrap();
        for tin in ["C10000000001", "C10000000002"] {
            cache.token_on_behalf_of(tin).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.token().await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // Kept alive past the snapshot.
        (cache.stats(), cache)
    });
    let (stats, _cache) = stats;
    assert_eq!(stats.entries, 3);
    assert_eq!(gauge(&seen, names::ENTRIES), Some(3.0), "{seen:?}");
}

/// The sweep samples the seconds left on each token served since the
/// sweep before: not the idle taxpayer's, and nothing on the hot path.
#[test]
fn the_seconds_left_on_served_tokens_are_sampled_by_the_sweep() {
    let (seen, ()) = recorded(true, || async {
        let identity = Identity::start().await;
        let cache = identity.cache();
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        // The first sweep runs at the first call, before any token.
        cache.token().await.unwrap();
        cache.token_on_behalf_of("C10000000001").await.unwrap();
        // The next one samples both tokens, served since.
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.token().await.unwrap();
        settle().await;
        // Only the plain entry is used from here on: 50 calls, one sample.
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..50 {
            cache.token().await.unwrap();
        }
        settle().await;
    });
    let left = histogram(&seen, names::TOKEN_SECONDS_LEFT);
    assert_eq!(left.len(), 3, "both tokens, then the one served: {left:?}");
    // One-hour tokens, 2 s and 102 s on (less the margin before expiry).
    assert!(
        left[..2].iter().all(|s| (3590.0..=3598.0).contains(s)),
        "{left:?}"
    );
    assert!((3490.0..=3498.0).contains(&left[2]), "{left:?}");
}

#[test]
fn a_401_handed_back_is_counted() {
    let (seen, stats) = recorded(false, || async {
        let identity = Identity::start().await;
        let (api_server, api) = Api::start().await;
        api.reject_path("/api/v1.0/documents/recent");
        let cache = identity.cache();
        let http = client(&cache, &api_server);
        let url = format!("{}/api/v1.0/documents/recent", api_server.uri());
        // Retried once with a new token, rejected again: handed back;
        // then handed back at once.
        for _ in 0..2 {
            assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
        }
        cache.stats()
    });
    assert_eq!(stats.retries_after_401, 1);
    assert_eq!(stats.handed_back_401s, 2);
    assert_eq!(counter(&seen, names::HANDED_BACK_401S, None), 2);
    assert_eq!(counter(&seen, names::RETRIES_AFTER_401, None), 1);
}
