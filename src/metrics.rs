//! Counters, a gauge and histograms through the [`metrics`](https://docs.rs/metrics)
//! facade (cargo feature `metrics`): install any `metrics` recorder
//! (Prometheus, StatsD, OpenTelemetry, …) and they are reported with it.
//! The same counts are in [`TokenCache::stats`](crate::TokenCache::stats).
//!
//! | Name | Kind | Labels | Counts |
//! |---|---|---|---|
//! | `myinvois_auth_logins_total` | counter | | login requests sent |
//! | `myinvois_auth_login_failures_total` | counter | `kind` | logins sent that failed, by kind of error |
//! | `myinvois_auth_budget_refusals_total` | counter | | logins not sent: no budget slot in time |
//! | `myinvois_auth_refreshes_ahead_total` | counter | | background refreshes ahead of expiry |
//! | `myinvois_auth_answered_from_memory_total` | counter | | calls answered with a remembered login failure |
//! | `myinvois_auth_retries_after_401_total` | counter | | API calls sent again after a 401 |
//! | `myinvois_auth_401s_handed_back_total` | counter | | 401s handed back: a new token would not cure them |
//! | `myinvois_auth_store_errors_total` | counter | `kind` | token store failures, by [`StoreErrorKind`] |
//! | `myinvois_auth_login_duration_seconds` | histogram | `outcome` (`ok`, `error`) | time from sending a login to its answer |
//! | `myinvois_auth_entries` | gauge | | entries cached, over every cache of the process |
//! | `myinvois_auth_token_seconds_left` | histogram | | seconds a served token had left, sampled by the sweep |
//!
//! Each event counts once: a login the identity service answered with 429
//! is one `myinvois_auth_logins_total` and one
//! `myinvois_auth_login_failures_total{kind="rate_limited"}`.
//!
//! The gauge and the samples are taken by the cache's sweep, which runs at
//! most once a second while the cache is used (from a call, off the hot
//! path): `myinvois_auth_entries` is what each cache held at its last
//! sweep, added up over the caches of the process (a cache dropped takes
//! its part off); each sweep records, for every entry whose token was
//! served since the sweep before (by the last-use clock, whose grain is a
//! second), how long that token had left to be served. Its low end shows
//! refreshes falling behind before callers are refused.
//!
//! `kind` of a login failure is one of `oauth`, `rate_limited`,
//! `identity_service`, `redirected`, `invalid_response`, `timeout`,
//! `transport`, `login_middleware`, `wrong_taxpayer`. Labels never carry a
//! taxpayer, client ID or URL, so their number stays small.
//!
//! ```
//! // Once, at start-up, after installing a recorder:
//! myinvois_auth::metrics::describe();
//! ```

use std::time::Duration;

use crate::error::Error;
use crate::store::StoreErrorKind;

/// Login requests sent.
pub const LOGINS: &str = "myinvois_auth_logins_total";
/// Logins sent that failed, labelled `kind`.
pub const LOGIN_FAILURES: &str = "myinvois_auth_login_failures_total";
/// Logins not sent because the budget had no slot in time.
pub const BUDGET_REFUSALS: &str = "myinvois_auth_budget_refusals_total";
/// Background refreshes started ahead of expiry.
pub const REFRESHES_AHEAD: &str = "myinvois_auth_refreshes_ahead_total";
/// Calls answered with a remembered login failure.
pub const ANSWERED_FROM_MEMORY: &str = "myinvois_auth_answered_from_memory_total";
/// API calls sent again with a new token after a 401.
pub const RETRIES_AFTER_401: &str = "myinvois_auth_retries_after_401_total";
/// 401s handed back to the caller: a new token would not cure them.
pub const HANDED_BACK_401S: &str = "myinvois_auth_401s_handed_back_total";
/// Entries cached (gauge), over every cache of the process.
pub const ENTRIES: &str = "myinvois_auth_entries";
/// Seconds a served token had left, sampled by the sweep (histogram).
pub const TOKEN_SECONDS_LEFT: &str = "myinvois_auth_token_seconds_left";
/// Token store failures, labelled `kind`.
pub const STORE_ERRORS: &str = "myinvois_auth_store_errors_total";
/// Seconds from sending a login to its answer, labelled `outcome`.
pub const LOGIN_DURATION: &str = "myinvois_auth_login_duration_seconds";

/// Describes every metric above to the installed recorder (units and help
/// text). Optional: the metrics are reported without it. Call it once,
/// after installing the recorder (a description given to no recorder is
/// lost):
///
/// ```
/// // Here metrics-util's in-memory recorder; in production, for example,
/// // metrics-exporter-prometheus's.
/// let recorder = metrics_util::debugging::DebuggingRecorder::new();
/// let snapshotter = recorder.snapshotter();
/// metrics::set_global_recorder(recorder).expect("no recorder installed yet");
/// myinvois_auth::metrics::describe();
///
/// // Once a metric is reported (here counted by hand, as the cache does on
/// // a login), the recorder has its help text.
/// metrics::counter!(myinvois_auth::metrics::LOGINS).increment(1);
/// let (_, unit, help, _) = snapshotter.snapshot().into_vec().remove(0);
/// assert_eq!(unit, None);
/// assert_eq!(
///     help.as_deref(),
///     Some("Login requests sent to the MyInvois identity service")
/// );
/// ```
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        LOGINS,
        "Login requests sent to the MyInvois identity service"
    );
    describe_counter!(LOGIN_FAILURES, "Logins sent that failed, by kind of error");
    describe_counter!(
        BUDGET_REFUSALS,
        "Logins not sent: the login budget had no slot in time"
    );
    describe_counter!(
        REFRESHES_AHEAD,
        "Background token refreshes started ahead of expiry"
    );
    describe_counter!(
        ANSWERED_FROM_MEMORY,
        "Calls answered with a remembered login failure"
    );
    describe_counter!(
        RETRIES_AFTER_401,
        "API calls sent again with a new token after HTTP 401"
    );
    describe_counter!(
        HANDED_BACK_401S,
        "HTTP 401s handed back to the caller: a new token would not cure them"
    );
    describe_counter!(STORE_ERRORS, "Token store calls that failed, by kind");
    describe_gauge!(ENTRIES, "Token cache entries held, over every cache");
    describe_histogram!(
        TOKEN_SECONDS_LEFT,
        Unit::Seconds,
        "Time a served token had left to be served, sampled once a second"
    );
    describe_histogram!(
        LOGIN_DURATION,
        Unit::Seconds,
        "Time from sending a login to its answer"
    );
}

pub(crate) fn login_sent() {
    metrics::counter!(LOGINS).increment(1);
}

pub(crate) fn login_ended(took: Duration, error: Option<&Error>) {
    let outcome = if error.is_some() { "error" } else { "ok" };
    metrics::histogram!(LOGIN_DURATION, "outcome" => outcome).record(took.as_secs_f64());
    if let Some(error) = error {
        // A 429 is this, kind "rate_limited": counted once.
        metrics::counter!(LOGIN_FAILURES, "kind" => error.kind()).increment(1);
    }
}

pub(crate) fn refused_by_budget() {
    metrics::counter!(BUDGET_REFUSALS).increment(1);
}

pub(crate) fn refresh_ahead() {
    metrics::counter!(REFRESHES_AHEAD).increment(1);
}

pub(crate) fn answered_from_memory() {
    metrics::counter!(ANSWERED_FROM_MEMORY).increment(1);
}

pub(crate) fn retry_after_401() {
    metrics::counter!(RETRIES_AFTER_401).increment(1);
}

pub(crate) fn handed_back_401() {
    metrics::counter!(HANDED_BACK_401S).increment(1);
}

/// A cache now holds `now` entries where it held `before`.
pub(crate) fn entries_changed(before: u64, now: u64) {
    let gauge = metrics::gauge!(ENTRIES);
    if now >= before {
        gauge.increment((now - before) as f64);
    } else {
        gauge.decrement((before - now) as f64);
    }
}

/// Where the sweep records the time left on each token served.
pub(crate) fn seconds_left() -> metrics::Histogram {
    metrics::histogram!(TOKEN_SECONDS_LEFT)
}

pub(crate) fn store_error(kind: StoreErrorKind) {
    metrics::counter!(STORE_ERRORS, "kind" => kind.as_str()).increment(1);
}
