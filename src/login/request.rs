//! The login call: `POST {identity}/connect/token` (OAuth 2.0 client
//! credentials). Reading its answer is `response`'s job.
//!
//! The client secret leaves [`SecretString`] only to be written into the
//! form body, a buffer that is zeroed when the HTTP client drops it. The
//! login never follows a redirect: the client is built with redirects off
//! (see [`crate::config`]), and any 3xx is a typed error naming only the
//! target's origin. The caller's login middlewares see the request; a
//! guard inside them lets it out once, to the token URL only (see
//! `config::login_client`).

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::response::{parse_response, parse_retry_after};
use crate::config::{Secret, Settings};
use crate::error::Error;
use crate::redact;
use crate::taxpayer::OnBehalfOf;
use crate::token::Issued;

/// The header an intermediary adds to log in for a taxpayer.
pub(crate) const ON_BEHALF_OF: &str = "onbehalfof";

/// Answers larger than this are not token responses; stop reading.
const MAX_BODY: usize = 64 * 1024;

/// Performs one login. Never retries: the cache decides when to try again.
pub(crate) async fn login(
    settings: &Settings,
    secret: &Secret,
    on_behalf_of: Option<&OnBehalfOf>,
) -> Result<Issued, Error> {
    let call = send(settings, secret, on_behalf_of);
    match settings.login_timeout {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(Error::timeout(limit))),
        None => call.await,
    }
}

async fn send(
    settings: &Settings,
    secret: &Secret,
    on_behalf_of: Option<&OnBehalfOf>,
) -> Result<Issued, Error> {
    let forms = secret.forms();
    let mut request = settings
        .http_client
        .get()?
        .post(settings.token_url.clone())
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body(settings, &secret.value));
    if let Some(taxpayer) = on_behalf_of {
        request = request.header(ON_BEHALF_OF, taxpayer.as_str());
    }

    let sensitive = [forms[0].as_str(), forms[1].as_str()];
    let sent_at = Instant::now();
    let mut response = request.send().await.map_err(|e| match e {
        reqwest_middleware::Error::Reqwest(e) => Error::transport(e, &sensitive),
        refused => Error::login_middleware(refused, &sensitive),
    })?;
    let status = response.status();
    if status.is_redirection() {
        // Nothing is sent to the target: the client does not follow redirects.
        // Only its origin is named, scrubbed like any text the service sends,
        // before parsing and after; a host is named in lower case, so the
        // secret is looked for in lower case too.
        let lower: Vec<String> = sensitive.iter().map(|s| s.to_lowercase()).collect();
        let hidden: Vec<&str> = sensitive
            .into_iter()
            .chain(lower.iter().map(String::as_str))
            .collect();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|target| redact::scrub(target, &hidden, usize::MAX))
            .and_then(|target| settings.token_url.join(&target).ok())
            .map(|target| redact::scrub(&redact::origin(&target), &hidden, redact::MAX_TEXT));
        return Err(Error::LoginRedirected {
            status: status.as_u16(),
            location,
            retry_after: None,
        });
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::transport(e, &sensitive))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Error::garbled_response(format!(
                "the answer (HTTP {}) is larger than {MAX_BODY} bytes",
                status.as_u16()
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let parsed = parse_response(status, retry_after, &body, &sensitive)?;
    Ok(Issued {
        secret: parsed.access_token,
        header: parsed.header,
        lifetime: parsed.lifetime,
        scope: parsed.scope,
        sent_at,
    })
}

/// The `application/x-www-form-urlencoded` login form, in a buffer that is
/// zeroed when the HTTP client is done with it (the `Bytes` owner drops).
fn form_body(settings: &Settings, secret: &SecretString) -> Bytes {
    let mut fields: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("client_id", settings.credentials.client_id()),
        ("client_secret", secret.expose_secret()),
    ];
    if let Some(scope) = &settings.scope {
        fields.push(("scope", scope));
    }
    // Sized up front so the buffer holding the secret is never reallocated
    // (a reallocation would leave a copy behind in freed memory).
    let capacity = fields.iter().map(|(k, v)| k.len() + 3 * v.len() + 2).sum();
    let mut body = Zeroizing::new(String::with_capacity(capacity));
    let mut form = url::form_urlencoded::Serializer::new(std::mem::take(&mut *body));
    form.extend_pairs(fields);
    *body = form.finish();
    Bytes::from_owner(ZeroizingBody(body))
}

/// Owns the form body; zeroes it on drop.
struct ZeroizingBody(Zeroizing<String>);

impl AsRef<[u8]> for ZeroizingBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_encodes_every_field_and_keeps_the_secret_intact() {
        let settings = crate::config::TokenCacheBuilder::new(crate::config::Credentials::new(
            "id&x",
            "p@ss w+rd=&",
        ))
        .identity_url("http://127.0.0.1:9")
        .scope("InvoicingAPI")
        .into_settings()
        .unwrap();
        let body = form_body(&settings, &settings.credentials.secret().value);
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            fields,
            [
                ("grant_type", "client_credentials"),
                ("client_id", "id&x"),
                ("client_secret", "p@ss w+rd=&"),
                ("scope", "InvoicingAPI"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }
}
