//! Integration tests over real HTTP: wiremock identity services and APIs on
//! loopback, tokio's paused clock for expiry. Each test names the behaviour it proves.

mod budget;
mod cache;
mod faults;
mod login;
mod middleware;
mod redirects;
mod secrets;
mod sim;
mod store;
mod support;
mod tls;
