//! The login call: `POST {identity}/connect/token` (OAuth 2.0 client
//! credentials) and the parsing of its answer into a token or a typed error.

use std::time::Duration;

use chrono::Utc;
use http::{HeaderValue, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Settings, MAX_TOKEN_LIFETIME};
use crate::error::{Error, OAuthErrorCode};
use crate::taxpayer::OnBehalfOf;
use crate::token::Issued;

/// The header an intermediary adds to log in for a taxpayer.
pub(crate) const ON_BEHALF_OF: &str = "onbehalfof";

/// Answers larger than this are not token responses; stop reading.
const MAX_BODY: usize = 64 * 1024;

/// Performs one login. Never retries: the cache decides when to try again.
pub(crate) async fn login(
    settings: &Settings,
    on_behalf_of: Option<&OnBehalfOf>,
) -> Result<Issued, Error> {
    let call = send(settings, on_behalf_of);
    match settings.login_timeout {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(Error::Timeout(limit))),
        None => call.await,
    }
}

async fn send(settings: &Settings, on_behalf_of: Option<&OnBehalfOf>) -> Result<Issued, Error> {
    let secret = settings.credentials.client_secret();
    let mut form = vec![
        ("client_id", settings.credentials.client_id()),
        ("client_secret", secret),
        ("grant_type", "client_credentials"),
    ];
    if let Some(scope) = &settings.scope {
        form.push(("scope", scope));
    }
    let mut request = settings
        .http_client
        .post(settings.token_url.clone())
        .header(http::header::ACCEPT, "application/json")
        .form(&form);
    if let Some(taxpayer) = on_behalf_of {
        request = request.header(ON_BEHALF_OF, taxpayer.as_str());
    }

    let sent_at = Instant::now();
    let mut response = request.send().await.map_err(Error::transport)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| parse_retry_after(v, Utc::now()));
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Error::transport)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Error::InvalidResponse(format!(
                "the answer (HTTP {}) is larger than {MAX_BODY} bytes",
                status.as_u16()
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let parsed = parse_response(status, retry_after, &body, secret)?;
    Ok(Issued {
        secret: parsed.access_token,
        header: parsed.header,
        lifetime: parsed.lifetime,
        scope: parsed.scope,
        sent_at,
    })
}

/// A 200 answer that passed every check.
#[derive(Debug)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) header: HeaderValue,
    pub(crate) lifetime: Duration,
    pub(crate) scope: Option<String>,
}

/// Turns the identity service's answer into a token or a typed error.
///
/// Reads the JSON as an untyped value and picks fields by hand, so that no
/// deserializer message can ever quote a token back; `secret` is scrubbed from
/// any text the service sends back.
pub(crate) fn parse_response(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    secret: &str,
) -> Result<TokenResponse, Error> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Error::RateLimited { retry_after });
    }
    if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED {
        return Err(oauth_error(status, body, secret));
    }
    if status != StatusCode::OK {
        return Err(Error::IdentityService {
            status: status.as_u16(),
        });
    }
    let invalid = |reason: &str| Error::InvalidResponse(reason.to_owned());
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        if body.iter().all(u8::is_ascii_whitespace) {
            invalid("the body is empty")
        } else {
            invalid("the body is not JSON")
        }
    })?;
    let object = json
        .as_object()
        .ok_or_else(|| invalid("the body is not a JSON object"))?;

    let access_token = match object.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(Value::String(_)) => return Err(invalid("access_token is empty")),
        Some(_) => return Err(invalid("access_token is not a string")),
        None => return Err(invalid("access_token is missing")),
    };
    let header = bearer_header(&access_token)?;

    match object.get("token_type") {
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(t)) => {
            return Err(Error::InvalidResponse(format!(
                "token_type is {:?}, expected Bearer",
                truncate(t, 32)
            )))
        }
        Some(_) => return Err(invalid("token_type is not a string")),
        None => return Err(invalid("token_type is missing")),
    }

    let lifetime = match object.get("expires_in") {
        None => return Err(invalid("expires_in is missing")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => return Err(invalid("expires_in is zero")),
            Some(secs) if secs <= MAX_TOKEN_LIFETIME.as_secs() => Duration::from_secs(secs),
            Some(_) => {
                return Err(Error::InvalidResponse(format!(
                    "expires_in is larger than {} seconds",
                    MAX_TOKEN_LIFETIME.as_secs()
                )))
            }
            None if n.as_i64().is_some() => return Err(invalid("expires_in is negative")),
            None => return Err(invalid("expires_in is not a whole number of seconds")),
        },
        Some(_) => return Err(invalid("expires_in is not a number")),
    };

    let scope = match object.get("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("scope is not a string")),
    };

    Ok(TokenResponse {
        access_token,
        header,
        lifetime,
        scope,
    })
}

/// `Bearer <token>`, marked sensitive; an error (never quoting the token) if
/// the token cannot be sent in an HTTP header.
pub(crate) fn bearer_header(access_token: &str) -> Result<HeaderValue, Error> {
    let invalid = || {
        Error::InvalidResponse(
            "access_token has characters that cannot be sent in an HTTP header".into(),
        )
    };
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    let mut header =
        HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| invalid())?;
    header.set_sensitive(true);
    Ok(header)
}

/// A 400/401 answer: the OAuth error body when there is one.
fn oauth_error(status: StatusCode, body: &[u8], secret: &str) -> Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(|s| scrub(s, secret))
    };
    match field("error") {
        Some(code) => Error::OAuth {
            status: status.as_u16(),
            code: OAuthErrorCode::parse(&code),
            description: field("error_description"),
            uri: field("error_uri"),
        },
        // A 400/401 without an OAuth body is still a refusal; report the status.
        None => Error::IdentityService {
            status: status.as_u16(),
        },
    }
}

/// Server-supplied text, bounded, with the secret (should it ever be echoed) removed.
fn scrub(text: &str, secret: &str) -> String {
    let text = truncate(text, 300);
    if !secret.is_empty() && text.contains(secret) {
        text.replace(secret, "<redacted>")
    } else {
        text.to_owned()
    }
}

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// `Retry-After`: delay-seconds, or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past means "now" (zero).
pub(crate) fn parse_retry_after(
    value: &HeaderValue,
    now: chrono::DateTime<Utc>,
) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    Some(
        (date.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Result<TokenResponse, Error> {
        parse_response(StatusCode::OK, None, body.as_bytes(), "s3cr3t")
    }

    fn invalid_reason(body: &str) -> String {
        match ok(body) {
            Err(Error::InvalidResponse(reason)) => reason,
            other => panic!("expected InvalidResponse for {body:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_good_answer() {
        let t = ok(r#"{"access_token":"eyJ.a.b","token_type":"Bearer","expires_in":3600,"scope":"InvoicingAPI"}"#)
            .unwrap();
        assert_eq!(t.access_token, "eyJ.a.b");
        assert_eq!(t.header, "Bearer eyJ.a.b");
        assert!(t.header.is_sensitive());
        assert_eq!(t.lifetime, Duration::from_secs(3600));
        assert_eq!(t.scope.as_deref(), Some("InvoicingAPI"));
        let t = ok(r#"{"access_token":"x","token_type":"bearer","expires_in":1}"#).unwrap();
        assert_eq!(t.scope, None);
    }

    #[test]
    fn every_malformed_answer_is_a_typed_error() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("<html>oops</html>", "not JSON"),
            ("[1,2]", "not a JSON object"),
            (
                r#"{"token_type":"Bearer","expires_in":3600}"#,
                "access_token is missing",
            ),
            (
                r#"{"access_token":"","token_type":"Bearer","expires_in":3600}"#,
                "empty",
            ),
            (
                r#"{"access_token":7,"token_type":"Bearer","expires_in":3600}"#,
                "not a string",
            ),
            (
                r#"{"access_token":"a b","token_type":"Bearer","expires_in":3600}"#,
                "header",
            ),
            (
                r#"{"access_token":"a\nb","token_type":"Bearer","expires_in":3600}"#,
                "header",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer"}"#,
                "expires_in is missing",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer","expires_in":0}"#,
                "zero",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer","expires_in":-5}"#,
                "negative",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer","expires_in":"3600"}"#,
                "not a number",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer","expires_in":1.5}"#,
                "whole number",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer","expires_in":99999999999999}"#,
                "larger",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer","expires_in":1e400}"#,
                "not JSON",
            ),
            (
                r#"{"access_token":"t","token_type":"MAC","expires_in":3600}"#,
                "expected Bearer",
            ),
            (
                r#"{"access_token":"t","expires_in":3600}"#,
                "token_type is missing",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer","expires_in":3600,"scope":1}"#,
                "scope",
            ),
        ];
        for (body, expect) in cases {
            let reason = invalid_reason(body);
            assert!(
                reason.contains(expect),
                "{body:?}: {reason:?} lacks {expect:?}"
            );
        }
    }

    #[test]
    fn errors_never_quote_the_token() {
        for body in [
            r#"{"access_token":"TOPSECRETTOKEN","token_type":"MAC","expires_in":3600}"#,
            r#"{"access_token":"TOPSECRETTOKEN","token_type":"Bearer","expires_in":"TOPSECRETTOKEN"}"#,
            r#"{"access_token":"TOPSECRETTOKEN\u0000","token_type":"Bearer","expires_in":3600}"#,
        ] {
            let err = ok(body).unwrap_err();
            assert!(
                !format!("{err} {err:?}").contains("TOPSECRETTOKEN"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn oauth_errors_are_parsed_from_400_and_401() {
        for status in [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED] {
            let err = parse_response(
                status,
                None,
                br#"{"error":"unauthorised_client","error_description":"User blocked s3cr3t","error_uri":"https://x"}"#,
                "s3cr3t",
            )
            .unwrap_err();
            match err {
                Error::OAuth {
                    status: s,
                    code,
                    description,
                    uri,
                } => {
                    assert_eq!(s, status.as_u16());
                    assert_eq!(code, OAuthErrorCode::UnauthorizedClient);
                    assert_eq!(description.as_deref(), Some("User blocked <redacted>"));
                    assert_eq!(uri.as_deref(), Some("https://x"));
                }
                other => panic!("{other:?}"),
            }
        }
        let err = parse_response(StatusCode::BAD_REQUEST, None, b"<html/>", "s").unwrap_err();
        assert!(
            matches!(err, Error::IdentityService { status: 400 }),
            "{err:?}"
        );
    }

    #[test]
    fn other_statuses_are_identity_service_errors_and_429_is_rate_limited() {
        let err = parse_response(StatusCode::BAD_GATEWAY, None, b"", "s").unwrap_err();
        assert!(matches!(err, Error::IdentityService { status: 502 }));
        let err = parse_response(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(30)),
            b"",
            "s",
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(30))
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            parse_retry_after(&v("30"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(&v("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after(&v("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&v("soon"), now), None);
        assert_eq!(parse_retry_after(&v("-1"), now), None);
    }
}
