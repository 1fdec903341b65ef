//! Integration tests over real HTTP: wiremock identity services and APIs on
//! loopback, tokio's paused clock for expiry. Each test names the behaviour it proves.

mod budget;
mod cache;
mod causes;
mod edges;
mod faults;
mod from_vars;
mod login;
mod login_middleware;
#[cfg(feature = "metrics")]
mod metrics;
mod middleware;
mod package;
mod reasons;
mod redirects;
#[cfg(feature = "retry")]
mod retry;
mod secrets;
mod sim;
mod source;
mod store;
mod support;
mod tls;
#[cfg(feature = "tower")]
mod tower;
mod waits;
