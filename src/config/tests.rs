//! Tests of the configuration: URL rules, defaults, and what `build()` refuses.

use std::time::Duration;

use url::Url;

use super::builder::*;
use super::environment::{parse_secure_url, token_endpoint};
use super::{Credentials, Environment, TokenCacheBuilder};
use crate::budget::RateLimit;
use crate::error::Error;

#[test]
fn token_endpoint_keeps_path_prefix() {
    let u = Url::parse("https://example.com/identity").unwrap();
    assert_eq!(
        token_endpoint(&u).unwrap().as_str(),
        "https://example.com/identity/connect/token"
    );
    let u = Url::parse("http://127.0.0.1:8080").unwrap();
    assert_eq!(
        token_endpoint(&u).unwrap().as_str(),
        "http://127.0.0.1:8080/connect/token"
    );
}

#[test]
fn plain_http_is_accepted_only_for_loopback() {
    for ok in [
        "https://id.example.com",
        "http://127.0.0.1:1",
        "http://127.8.9.10",
        "http://localhost:8080",
        "http://[::1]:80",
    ] {
        assert!(parse_secure_url("u", ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://id.example.com",
        "http://10.0.0.1",
        "ftp://127.0.0.1",
        "not a url",
        "https://user:pw@id.example.com",
        "https://id.example.com/?a=b",
    ] {
        let err = parse_secure_url("u", bad).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{bad}");
    }
}

#[test]
fn a_custom_environment_written_by_hand_is_checked_like_one_from_custom() {
    let url = |s: &str| Url::parse(s).unwrap();
    let good = url("https://id.example.com");
    for (identity, api) in [
        (url("http://id.example.com/?k=SECRETPW"), good.clone()),
        (url("https://id.example.com/?k=SECRETPW"), good.clone()),
        (good.clone(), url("http://api.example.com")),
        (good.clone(), url("https://u:SECRETPW@api.example.com")),
    ] {
        let env = Environment::Custom {
            identity_url: identity,
            api_url: api,
        };
        assert!(!format!("{env:?}").contains("SECRETPW"), "{env:?}");
        let err = TokenCacheBuilder::new(Credentials::new("id", "s"))
            .environment(env)
            .into_settings()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("SECRETPW"), "{err:?}");
    }
}

#[test]
fn the_builders_debug_shows_no_query_nor_user_info() {
    let builder = TokenCacheBuilder::new(Credentials::new("id", "CLIENTSECRET"))
        .identity_url("https://u:SECRETPW@id.example.com/x?k=SECRETPW#SECRETPW")
        .http_client(
            reqwest::Client::builder()
                .proxy(reqwest::Proxy::all("http://u:SECRETPW@proxy.example.com").unwrap()),
        );
    let shown = format!("{builder:?}");
    assert!(shown.contains("https://id.example.com/x"), "{shown}");
    assert!(
        !shown.contains("SECRETPW") && !shown.contains("CLIENTSECRET"),
        "{shown}"
    );
}

#[test]
fn url_errors_name_the_origin_only() {
    for bad in [
        "https://user:SECRETPW@id.example.com",
        "https://id.example.com/?key=SECRETPW",
        "https://id.example.com/#SECRETPW",
        "http://id.example.com/SECRETPW?x=SECRETPW",
        "ftp://id.example.com/SECRETPW",
        "http://id.example.com:SECRETPW",
        "SECRETPW",
    ] {
        let err = parse_secure_url("identity URL", bad).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("SECRETPW"), "{bad}: {text}");
    }
}

#[test]
fn build_requires_an_environment_and_non_empty_credentials() {
    let err = TokenCacheBuilder::new(Credentials::new("id", "s"))
        .into_settings()
        .unwrap_err();
    assert!(err.to_string().contains("no environment"), "{err}");
    let err = TokenCacheBuilder::new(Credentials::new("", "s"))
        .environment(Environment::Sandbox)
        .into_settings()
        .unwrap_err();
    assert!(err.to_string().contains("client ID"), "{err}");
    let err = TokenCacheBuilder::new(Credentials::new("id", ""))
        .environment(Environment::Sandbox)
        .into_settings()
        .unwrap_err();
    assert!(err.to_string().contains("secret"), "{err}");
}

#[test]
fn identity_url_overrides_the_environment() {
    let s = TokenCacheBuilder::new(Credentials::new("id", "s"))
        .environment(Environment::Production)
        .identity_url("http://127.0.0.1:9/base/")
        .into_settings()
        .unwrap();
    assert_eq!(
        s.token_url.as_str(),
        "http://127.0.0.1:9/base/connect/token"
    );
    assert_eq!(s.refresh_before, DEFAULT_REFRESH_BEFORE);
    assert_eq!(s.login_timeout, Some(DEFAULT_LOGIN_TIMEOUT));
    assert_eq!(
        s.login_rate_limit,
        Some(RateLimit {
            count: 12,
            period: Duration::from_secs(60)
        })
    );
}

#[test]
fn a_budget_that_allows_no_login_is_refused() {
    let base =
        || TokenCacheBuilder::new(Credentials::new("id", "s")).environment(Environment::Sandbox);
    assert!(base()
        .login_rate_limit(0, Duration::from_secs(60))
        .into_settings()
        .is_err());
    assert!(base()
        .login_rate_limit(12, Duration::ZERO)
        .into_settings()
        .is_err());
    assert!(base().max_entries(0).into_settings().is_err());
    let off = base().without_login_rate_limit().into_settings().unwrap();
    assert_eq!(off.login_rate_limit, None);
}

#[test]
fn the_login_timeout_is_set_without_an_option_and_switched_off_by_name() {
    let base =
        || TokenCacheBuilder::new(Credentials::new("id", "s")).environment(Environment::Sandbox);
    let set = base()
        .login_timeout(Duration::from_secs(5))
        .into_settings()
        .unwrap();
    assert_eq!(set.login_timeout, Some(Duration::from_secs(5)));
    let off = base()
        .login_timeout(Duration::from_secs(5))
        .without_login_timeout()
        .into_settings()
        .unwrap();
    assert_eq!(off.login_timeout, None);
    // A zero timeout would fail every login: refused, naming the way out.
    let err = base()
        .login_timeout(Duration::ZERO)
        .into_settings()
        .unwrap_err();
    assert!(err.to_string().contains("without_login_timeout"), "{err}");
}
