//! Reading the identity service's answer to a login: a token that passed
//! every check, or a typed error that quotes nothing secret.
//!
//! The JSON is read as an untyped value and fields are picked by hand, so no
//! deserializer message can ever quote a token back; text the service sends
//! (error descriptions, unknown codes) is scrubbed of the client secret and of
//! any token in the same answer before it is cut to length.

use std::time::{Duration, SystemTime};

use http::{HeaderValue, StatusCode};
use serde_json::Value;
use url::Url;

use crate::error::{Error, OAuthErrorCode};
use crate::redact::{self, MAX_TEXT};
use crate::token::{checked_token, MAX_TOKEN_LIFETIME};

/// The longest `Retry-After` honoured: a larger one (up to `u64::MAX`
/// seconds, or a date in year 9999) is cut to this. MyInvois' window is one
/// minute; a longer block would only strand every taxpayer of the client ID.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A 200 answer that passed every check.
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) header: HeaderValue,
    pub(crate) lifetime: Duration,
    pub(crate) scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &redact::REDACTED)
            .field("lifetime", &self.lifetime)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Turns the identity service's answer into a token or a typed error.
/// `sensitive` are the values no error text may contain (the client secret,
/// in every form it was sent).
pub(crate) fn parse_response(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    sensitive: &[&str],
) -> Result<TokenResponse, Error> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Error::RateLimited { retry_after });
    }
    if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED {
        return Err(oauth_error(status, retry_after, body, sensitive));
    }
    if status != StatusCode::OK {
        return Err(Error::IdentityService {
            status: status.as_u16(),
            retry_after,
        });
    }
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        if body.iter().all(u8::is_ascii_whitespace) {
            Error::garbled_response("the body is empty")
        } else {
            Error::garbled_response("the body is not JSON")
        }
    })?;
    let object = json
        .as_object()
        .ok_or_else(|| Error::invalid_response("the body is not a JSON object"))?;

    let access_token = match object.get("access_token") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(Error::invalid_response("access_token is not a string")),
        None => return Err(Error::invalid_response("access_token is missing")),
    };

    match object.get("token_type") {
        // RFC 6749 §5.1: the type is case-insensitive.
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        // Never echoed: a misbehaving service could put the token there.
        Some(Value::String(t)) => {
            return Err(Error::invalid_response(format!(
                "token_type is not Bearer (a {}-character value)",
                t.chars().count()
            )))
        }
        Some(_) => return Err(Error::invalid_response("token_type is not a string")),
        None => return Err(Error::invalid_response("token_type is missing")),
    }

    let seconds = match object.get("expires_in") {
        None => return Err(Error::invalid_response("expires_in is missing")),
        Some(value) => whole_seconds(value)
            .map_err(|reason| Error::invalid_response(format!("expires_in {reason}")))?,
    };
    let lifetime = Duration::from_secs(seconds);
    let header = checked_token(&access_token, lifetime)?;

    let scope = match object.get("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            // Shown by the token's `Debug`: as scrubbed as any server text.
            let mut hidden = sensitive.to_vec();
            hidden.push(&access_token);
            Some(redact::scrub(s, &hidden, MAX_TEXT))
        }
        Some(_) => return Err(Error::invalid_response("scope is not a string")),
    };

    Ok(TokenResponse {
        access_token,
        header,
        lifetime,
        scope,
    })
}

/// `expires_in` as whole seconds: an integral JSON number (`3600`,
/// `3600.0`) or a string holding one (`"3600"`), as some servers send.
fn whole_seconds(value: &Value) -> Result<u64, &'static str> {
    let number = match value {
        Value::Number(n) => {
            if let Some(secs) = n.as_u64() {
                return Ok(secs);
            }
            n.as_f64().ok_or("is not a number")?
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(secs) = s.parse::<u64>() {
                return Ok(secs);
            }
            s.parse::<f64>().map_err(|_| "is not a number of seconds")?
        }
        _ => return Err("is not a number"),
    };
    if !number.is_finite() {
        Err("is not a finite number")
    } else if number < 0.0 {
        Err("is negative")
    } else if number.fract() != 0.0 {
        Err("is not a whole number of seconds")
    } else if number > MAX_TOKEN_LIFETIME.as_secs() as f64 {
        // Also keeps the cast below in range.
        Err("is larger than the longest token lifetime accepted")
    } else {
        Ok(number as u64)
    }
}

/// A 400/401 answer: the OAuth error body when there is one.
fn oauth_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    sensitive: &[&str],
) -> Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let text = |name: &str| json.as_ref()?.get(name)?.as_str();
    // A token in an error answer is as secret as the client secret.
    let mut hidden = sensitive.to_vec();
    if let Some(token) = text("access_token") {
        hidden.push(token);
    }
    let field = |name: &str| text(name).map(|s| redact::scrub(s, &hidden, MAX_TEXT));
    match field("error") {
        Some(code) => Error::OAuth {
            status: status.as_u16(),
            code: OAuthErrorCode::parse(&code),
            description: field("error_description"),
            uri: text("error_uri").map(|uri| scrubbed_url(uri, &hidden)),
            retry_after,
        },
        // A 400/401 without an OAuth body is still a refusal; report the status.
        None => Error::IdentityService {
            status: status.as_u16(),
            retry_after,
        },
    }
}

/// A URL the identity service sent, safe to show: scrubbed as it came
/// (parsing lowercases the host and percent-encodes the path, which could
/// hide a secret from the scrub), without user-info, query and fragment,
/// and scrubbed again as it is shown, of the values in lower case too.
fn scrubbed_url(raw: &str, hidden: &[&str]) -> String {
    let lower: Vec<String> = hidden.iter().map(|s| s.to_lowercase()).collect();
    let hidden: Vec<&str> = hidden
        .iter()
        .copied()
        .chain(lower.iter().map(String::as_str))
        .collect();
    let scrubbed = redact::scrub(raw, &hidden, usize::MAX);
    match Url::parse(&scrubbed) {
        Ok(url) => redact::scrub(&redact::without_secrets(&url), &hidden, MAX_TEXT),
        Err(_) => redact::scrub(&scrubbed, &hidden, MAX_TEXT),
    }
}

/// `Retry-After`: delay-seconds, or an HTTP date in any of the three forms
/// RFC 9110 §5.6.7 allows (IMF-fixdate, RFC 850, asctime). A date in the
/// past means "now"; anything longer than [`MAX_RETRY_AFTER`] is cut to it.
pub(crate) fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let wait = if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        // Digits only: a number too large for u64 is still "very long".
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let date = httpdate::parse_http_date(text).ok()?;
        date.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests;
