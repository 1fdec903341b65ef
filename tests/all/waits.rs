//! The DEBUG lines of every wait the middleware makes and of every call
//! answered from memory: each kind at most once a second, saying how many
//! it left out, so that a storm of calls writes one line a second.

use std::sync::Arc;
use std::time::Duration;

use myinvois_auth::OnBehalfOf;
use tokio::task::JoinSet;
use wiremock::ResponseTemplate;

use crate::support::{client, Api, Identity, LogCapture};

/// The lines of `log` that contain `what`.
fn lines(log: &LogCapture, what: &str) -> Vec<String> {
    log.text()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

/// Past the one-a-second limit of every kind of line (real time: the
/// servers answer in real time).
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

/// The `left_out` of a line.
fn left_out(line: &str) -> u64 {
    line.split("left_out=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no left_out in {line}"))
}

/// `lines` are at most one a second since `started`, and, the last event
/// having written one, account for all `events`.
fn accounts_for(lines: &[String], events: u64, started: std::time::Instant) {
    let most = started.elapsed().as_secs() + 1;
    assert!(
        lines.len() as u64 <= most,
        "more than one a second: {lines:#?}"
    );
    let counted: u64 = lines.iter().map(|l| 1 + left_out(l)).sum();
    assert_eq!(counted, events, "{lines:#?}");
}

const NO_TOKEN: &str = "no valid token at hand: waiting for the token source";
const VERDICT: &str = "waiting for its verdict";
const LEARNED: &str = "whose 401s a new token does not cure";
const MEMORY: &str = "login failure answered from memory";

#[tokio::test(flavor = "current_thread")]
async fn a_cold_burst_waiting_for_a_login_writes_one_line_a_second() {
    let log = LogCapture::start();
    let started = std::time::Instant::now();
    let identity = Identity::issuing(3600, Duration::from_millis(50)).await;
    let (api, _) = Api::start().await;
    let cache = identity.cache();
    let client = client(&cache, &api);
    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let (client, url) = (client.clone(), api.uri());
        calls.spawn(async move { client.get(url).send().await.unwrap().status() });
    }
    for status in calls.join_all().await {
        assert_eq!(status, 200);
    }
    let waits = lines(&log, NO_TOKEN);
    assert!(!waits.is_empty() && waits.len() < 50, "{waits:?}");
    assert!(
        waits[0].contains("DEBUG") && waits[0].contains("left_out=0"),
        "{waits:?}"
    );
    assert!(waits[0].contains("max_wait_ms=10000"), "{waits:?}");
    // A token at hand: no wait, no line.
    client.get(api.uri()).send().await.unwrap();
    assert_eq!(lines(&log, NO_TOKEN).len(), waits.len());
    // A second later, the next wait writes a line counting those left out.
    next_second().await;
    cache.invalidate(&cache.token().await.unwrap());
    client.get(api.uri()).send().await.unwrap();
    accounts_for(&lines(&log, NO_TOKEN), 51, started);
}

#[tokio::test(flavor = "current_thread")]
async fn calls_answered_from_failure_memory_write_one_line_a_second() {
    let log = LogCapture::start();
    let started = std::time::Instant::now();
    let identity = Identity::empty().await;
    identity
        .answer(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"error": "invalid_client"})),
        )
        .await;
    let (api, _) = Api::start().await;
    let cache = identity.cache();
    let client = client(&cache, &api);
    for _ in 0..5 {
        assert!(client.get(api.uri()).send().await.is_err());
    }
    assert_eq!(identity.login_count().await, 1);
    assert_eq!(cache.stats().answered_from_memory, 4);
    let memory = lines(&log, MEMORY);
    assert!(!memory.is_empty() && memory.len() < 4, "{memory:?}");
    let line = &memory[0];
    assert!(
        line.contains("DEBUG") && line.contains("left_out=0"),
        "{line}"
    );
    assert!(
        line.contains("error=\"oauth\"") || line.contains("error=oauth"),
        "{line}"
    );
    assert!(line.contains("retry_after_ms="), "{line}");
    next_second().await;
    assert!(client.get(api.uri()).send().await.is_err());
    accounts_for(&lines(&log, MEMORY), 5, started);
}

#[tokio::test(flavor = "current_thread")]
async fn calls_whose_401_was_learned_write_one_line_a_second() {
    let log = LogCapture::start();
    let started = std::time::Instant::now();
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let client = client(&identity.cache(), &api_server);
    api.reject_path("/api/v1.0/documents/ABC/raw");
    let url = format!("{}/api/v1.0/documents/ABC/raw", api_server.uri());
    for _ in 0..20 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    }
    assert_eq!(identity.login_count().await, 2);
    let learned = lines(&log, LEARNED);
    assert!(!learned.is_empty() && learned.len() < 20, "{learned:?}");
    assert!(
        learned[0].contains("endpoint=GET /api/v1.0/documents/*/raw"),
        "{learned:?}"
    );
    next_second().await;
    client.get(&url).send().await.unwrap();
    // The first call's retry, the 19 calls after it, and this one.
    accounts_for(&lines(&log, LEARNED), 21, started);
}

#[tokio::test(flavor = "current_thread")]
async fn a_401_waiting_for_another_taxpayers_verdict_writes_a_line() {
    let log = LogCapture::start();
    let identity = Identity::start().await;
    let (api_server, api) = Api::start().await;
    let client = Arc::new(client(&identity.cache(), &api_server));
    let taxpayers: Vec<String> = (0..4).map(|i| format!("C8200000000{i}")).collect();
    for tin in &taxpayers {
        let call = client
            .get(format!("{}/api/v1.0/documenttypes", api_server.uri()))
            .with_extension(OnBehalfOf::new(tin));
        assert_eq!(call.send().await.unwrap().status(), 200);
    }
    api.reject_paths_containing("/forbidden");
    api.delay_rejections(Duration::from_millis(100));
    let mut calls = JoinSet::new();
    for tin in taxpayers {
        let (client, url) = (
            Arc::clone(&client),
            format!("{}/api/v1.0/forbidden", api_server.uri()),
        );
        calls.spawn(async move {
            let call = client.get(url).with_extension(OnBehalfOf::new(tin));
            call.send().await.unwrap().status()
        });
    }
    for status in calls.join_all().await {
        assert_eq!(status, 401);
    }
    assert_eq!(identity.login_count().await, 5, "one renewal for all four");
    let waits = lines(&log, VERDICT);
    assert!(!waits.is_empty(), "{}", log.text());
    let line = &waits[0];
    assert!(
        line.contains("DEBUG") && line.contains("left_out=0"),
        "{line}"
    );
    assert!(line.contains("endpoint=GET /api/v1.0/*"), "{line}");
    assert!(line.contains("max_wait_ms="), "{line}");
}
