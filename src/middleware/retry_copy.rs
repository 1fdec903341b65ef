//! [`RetryCopy`]: what `AuthMiddleware` keeps of a request to send it again
//! after a 401, made on every request and nearly always dropped unused.
//!
//! A request without a body (most MyInvois calls) is kept as its parts,
//! with its URL as text inline when it is short enough: no allocation, no
//! free, no map built to be thrown away. The URL is parsed again only for
//! a retry (`url` guarantees that parsing a URL's text gives that URL
//! back). `Request::try_clone` would first set the copy's timeout, which
//! makes reqwest build the copy a map of settings that the next line
//! replaces by a clone of the original's, a thousand instructions a
//! request thrown away; a `Url` clone allocates its text. What the copy
//! carries is what a request's public API can set: method, URL, headers,
//! version, timeout. A request with a body is kept by `try_clone` (the
//! only way to share its bytes rather than copy them); one with a
//! streaming body cannot be kept (`None`).

use std::time::Duration;

use arrayvec::ArrayString;
use http::{HeaderMap, Method, Version};
use reqwest::{Request, Url};

/// The longest URL kept inline (longer ones are kept as a `Url`): MyInvois
/// calls' URLs are about 60 to 110 bytes. At most 255 (the path's place
/// in it is kept in bytes).
const INLINE: usize = 160;

/// What is kept of a request to send it again.
pub(crate) enum RetryCopy {
    /// A request with a body: reqwest's own copy, which shares the body.
    Whole(Request),
    /// A request without a body: its parts.
    Parts(Parts),
}

/// The parts of a request without a body.
pub(crate) struct Parts {
    method: Method,
    url: UrlText,
    /// `None`: the request had no header.
    headers: Option<HeaderMap>,
    version: Version,
    timeout: Option<Duration>,
}

/// A request's URL, kept as text inline when it fits.
enum UrlText {
    /// The URL's text, its path at `path`.
    Inline {
        text: ArrayString<INLINE>,
        path: (u8, u8),
    },
    /// Too long to keep inline.
    Url(Url),
}

impl RetryCopy {
    /// What `request` needs to be sent again, if it can be.
    pub(crate) fn of(request: &Request) -> Option<Self> {
        if request.body().is_some() {
            return request.try_clone().map(RetryCopy::Whole);
        }
        Some(RetryCopy::Parts(Parts {
            method: request.method().clone(),
            url: UrlText::of(request.url()),
            headers: (!request.headers().is_empty()).then(|| request.headers().clone()),
            version: request.version(),
            timeout: request.timeout().copied(),
        }))
    }

    /// The method and path of the request (its endpoint).
    pub(crate) fn endpoint(&self) -> (&Method, &str) {
        match self {
            RetryCopy::Whole(request) => (request.method(), request.url().path()),
            RetryCopy::Parts(parts) => (&parts.method, parts.url.path()),
        }
    }

    /// The request again; `None` if its URL no longer parses (never
    /// seen: a URL's text parses to that URL).
    pub(crate) fn into_request(self) -> Option<Request> {
        let parts = match self {
            RetryCopy::Whole(request) => return Some(request),
            RetryCopy::Parts(parts) => parts,
        };
        let mut request = Request::new(parts.method, parts.url.into_url()?);
        if let Some(headers) = parts.headers {
            *request.headers_mut() = headers;
        }
        *request.version_mut() = parts.version;
        if let Some(timeout) = parts.timeout {
            *request.timeout_mut() = Some(timeout);
        }
        Some(request)
    }
}

impl UrlText {
    fn of(url: &Url) -> Self {
        let whole = url.as_str();
        let path = url.path();
        // Where the path is in the URL's text: `path` is a slice of it, so
        // the range is within the text (were it not, `path()` would find
        // no path there, never panic).
        let start = path.as_ptr().addr().wrapping_sub(whole.as_ptr().addr());
        let end = start.wrapping_add(path.len());
        match (
            ArrayString::from(whole),
            u8::try_from(start),
            u8::try_from(end),
        ) {
            (Ok(text), Ok(start), Ok(end)) => UrlText::Inline {
                text,
                path: (start, end),
            },
            _ => UrlText::Url(url.clone()),
        }
    }

    fn path(&self) -> &str {
        match self {
            UrlText::Inline { text, path } => text
                .get(usize::from(path.0)..usize::from(path.1))
                .unwrap_or_default(),
            UrlText::Url(url) => url.path(),
        }
    }

    fn into_url(self) -> Option<Url> {
        match self {
            UrlText::Inline { text, .. } => Url::parse(&text).ok(),
            UrlText::Url(url) => Some(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RetryCopy;

    #[test]
    fn the_copy_for_a_retry_carries_everything_a_request_can_set() {
        let client = reqwest::Client::new();
        let long = format!(
            "https://api.example.com/api/v1.0/documents/{}/raw?x=1",
            "A".repeat(200)
        );
        for url in [
            "https://api.example.com/api/v1.0/documents/ABC/raw?x=1#f",
            "https://api.example.com/api/v1.0/documents/ABC%20D%C3%A9/raw",
            "http://127.0.0.1:8080/",
            long.as_str(),
        ] {
            let request = client
                .get(url)
                .header("accept", "application/json")
                .header("x-trace", "1")
                .timeout(Duration::from_secs(7))
                .version(http::Version::HTTP_11)
                .build()
                .unwrap();
            let kept = RetryCopy::of(&request).unwrap();
            assert_eq!(kept.endpoint(), (request.method(), request.url().path()));
            let copied = kept.into_request().unwrap();
            assert_eq!(copied.method(), request.method());
            assert_eq!(copied.url(), request.url());
            assert_eq!(copied.url().as_str(), request.url().as_str());
            assert_eq!(copied.headers(), request.headers());
            assert_eq!(copied.version(), request.version());
            assert_eq!(copied.timeout(), Some(&Duration::from_secs(7)));
            assert!(copied.body().is_none());
        }
        // No header, no timeout: none made up.
        let bare = client.delete("https://api.example.com/x").build().unwrap();
        let copied = RetryCopy::of(&bare).unwrap().into_request().unwrap();
        assert!(copied.headers().is_empty());
        assert_eq!(copied.timeout(), None);
        assert_eq!(copied.method(), http::Method::DELETE);
        // A body is shared, not lost; a stream cannot be copied.
        let posted = client
            .post("https://api.example.com/x")
            .body("{}")
            .build()
            .unwrap();
        let posted_copy = RetryCopy::of(&posted).unwrap().into_request().unwrap();
        assert_eq!(
            posted_copy.body().and_then(|b| b.as_bytes()),
            Some(&b"{}"[..])
        );
        let streamed = client
            .post("https://api.example.com/x")
            .body(reqwest::Body::wrap(http_body_util::Full::new(&b"x"[..])))
            .build()
            .unwrap();
        assert!(RetryCopy::of(&streamed).is_none());
    }
}
