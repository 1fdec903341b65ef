//! Counters and a histogram through the [`metrics`](https://docs.rs/metrics)
//! facade (cargo feature `metrics`): install any `metrics` recorder
//! (Prometheus, StatsD, OpenTelemetry, …) and they are reported with it.
//! The same counts are in [`TokenCache::stats`](crate::TokenCache::stats).
//!
//! | Name | Kind | Labels | Counts |
//! |---|---|---|---|
//! | `myinvois_auth_logins_total` | counter | | login requests sent |
//! | `myinvois_auth_login_failures_total` | counter | `kind` | logins sent that failed, by kind of error |
//! | `myinvois_auth_logins_rate_limited_total` | counter | | logins the identity service answered with 429 |
//! | `myinvois_auth_budget_refusals_total` | counter | | logins not sent: no budget slot in time |
//! | `myinvois_auth_refreshes_ahead_total` | counter | | background refreshes ahead of expiry |
//! | `myinvois_auth_answered_from_memory_total` | counter | | calls answered with a remembered login failure |
//! | `myinvois_auth_retries_after_401_total` | counter | | API calls sent again after a 401 |
//! | `myinvois_auth_store_errors_total` | counter | `kind` | token store failures, by [`StoreErrorKind`] |
//! | `myinvois_auth_login_duration_seconds` | histogram | `outcome` (`ok`, `error`) | time from sending a login to its answer |
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
/// Logins the identity service answered with 429.
pub const LOGINS_RATE_LIMITED: &str = "myinvois_auth_logins_rate_limited_total";
/// Logins not sent because the budget had no slot in time.
pub const BUDGET_REFUSALS: &str = "myinvois_auth_budget_refusals_total";
/// Background refreshes started ahead of expiry.
pub const REFRESHES_AHEAD: &str = "myinvois_auth_refreshes_ahead_total";
/// Calls answered with a remembered login failure.
pub const ANSWERED_FROM_MEMORY: &str = "myinvois_auth_answered_from_memory_total";
/// API calls sent again with a new token after a 401.
pub const RETRIES_AFTER_401: &str = "myinvois_auth_retries_after_401_total";
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
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        LOGINS,
        "Login requests sent to the MyInvois identity service"
    );
    describe_counter!(LOGIN_FAILURES, "Logins sent that failed, by kind of error");
    describe_counter!(
        LOGINS_RATE_LIMITED,
        "Logins the identity service answered with HTTP 429"
    );
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
    describe_counter!(STORE_ERRORS, "Token store calls that failed, by kind");
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
        metrics::counter!(LOGIN_FAILURES, "kind" => error.kind()).increment(1);
        if let Error::RateLimited { .. } = error {
            metrics::counter!(LOGINS_RATE_LIMITED).increment(1);
        }
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

pub(crate) fn store_error(kind: StoreErrorKind) {
    metrics::counter!(STORE_ERRORS, "kind" => kind.as_str()).increment(1);
}
