//! [`Origins`]: the API origins that get a token, the one place that decides
//! which request carries one (the reqwest middleware and the tower layer
//! both ask it).

use http::header::AUTHORIZATION;
use http::HeaderMap;
use url::Url;

use crate::config::parse_secure_url;
use crate::error::Error;

/// The origin of a request's URL as the middleware compares it: scheme,
/// host, and port (the scheme's default when the URL names none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: Option<u16>,
    /// Scheme and host are in lower case already, as `url::Url` keeps them
    /// (and as the API origins are kept): compared byte for byte, not
    /// letter by letter ignoring case (a hundred instructions a request).
    lower_case: bool,
}

impl<'a> Origin<'a> {
    /// The origin of a `url::Url` (reqwest's requests).
    #[inline]
    pub(crate) fn of_url(url: &'a Url) -> Option<Self> {
        Some(Origin {
            scheme: url.scheme(),
            host: url.host_str()?,
            port: url.port_or_known_default(),
            lower_case: true,
        })
    }

    /// The origin of an `http::Uri` (tower's requests): none for a URI
    /// without scheme or host (a path alone names no origin).
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn of_uri(uri: &'a http::Uri) -> Option<Self> {
        let scheme = uri.scheme_str()?;
        Some(Origin {
            scheme,
            host: uri.host()?,
            port: uri.port_u16().or(match scheme {
                "https" => Some(443),
                "http" => Some(80),
                _ => None,
            }),
            lower_case: false,
        })
    }
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// One API origin, kept as `Url` names it (scheme and host in lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiOrigin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl ApiOrigin {
    fn of(url: &Url) -> Option<Self> {
        let origin = Origin::of_url(url)?;
        Some(ApiOrigin {
            scheme: origin.scheme.to_owned(),
            host: origin.host.to_owned(),
            port: origin.port,
        })
    }

    #[inline]
    fn matches(&self, origin: &Origin<'_>) -> bool {
        if origin.port != self.port {
            return false;
        }
        if origin.lower_case {
            origin.host == self.host && origin.scheme == self.scheme
        } else {
            origin.host.eq_ignore_ascii_case(&self.host)
                && origin.scheme.eq_ignore_ascii_case(&self.scheme)
        }
    }
}

/// The origins whose requests get a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins(Vec<ApiOrigin>);

impl Origins {
    /// The origin of `url` (the environment's API URL), if it has a host.
    pub(crate) fn of(url: Option<&Url>) -> Self {
        Origins(url.and_then(ApiOrigin::of).into_iter().collect())
    }

    /// Adds the origin of `url`: `https`, or `http` to a loopback host,
    /// since it receives the token.
    pub(crate) fn add(&mut self, url: &str) -> Result<(), Error> {
        let url = parse_secure_url("API URL", url)?;
        let origin = ApiOrigin::of(&url)
            .ok_or_else(|| Error::InvalidConfig("the API URL has no host".into()))?;
        if !self.0.contains(&origin) {
            self.0.push(origin);
        }
        Ok(())
    }

    /// Whether there is none: nothing would ever get a token.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request to `origin` with `headers` gets a token: it goes
    /// to an API origin and carries no `Authorization` of its own.
    #[inline]
    pub(crate) fn authenticate(&self, origin: Option<Origin<'_>>, headers: &HeaderMap) -> bool {
        let Some(origin) = origin else {
            return false;
        };
        self.0.iter().any(|o| o.matches(&origin)) && !headers.contains_key(AUTHORIZATION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_origins_get_a_token() {
        let mut origins = Origins::default();
        origins.add("https://api.example.com").unwrap();
        origins.add("http://127.0.0.1:8081/base").unwrap();
        origins.add("http://localhost").unwrap();
        let none = HeaderMap::new();
        let yes = |s: &str| {
            let url = Url::parse(s).unwrap();
            let by_url = origins.authenticate(Origin::of_url(&url), &none);
            #[cfg(feature = "tower")]
            {
                let uri: http::Uri = s.parse().unwrap();
                assert_eq!(
                    by_url,
                    origins.authenticate(Origin::of_uri(&uri), &none),
                    "{s}"
                );
            }
            by_url
        };
        assert!(yes("https://api.example.com/x"));
        assert!(yes("https://API.Example.com:443/x"));
        assert!(yes("http://127.0.0.1:8081/y?z"));
        assert!(!yes("http://api.example.com/x"));
        assert!(!yes("https://api.example.com:8443/x"));
        assert!(!yes("https://api.example.com.evil.test/x"));
        assert!(!yes("http://127.0.0.1:8082/"));
        // A URL without a port has its scheme's: 80 for http.
        assert!(yes("http://localhost/x"));
        assert!(yes("http://LocalHost:80/x"));
        assert!(!yes("http://localhost:8080/x"));
        #[cfg(feature = "tower")]
        assert!(
            !origins.authenticate(Origin::of_uri(&"/x".parse().unwrap()), &none),
            "a path alone"
        );
        let mut mine = HeaderMap::new();
        mine.insert(AUTHORIZATION, "Bearer mine".parse().unwrap());
        let url = Url::parse("https://api.example.com/x").unwrap();
        assert!(!origins.authenticate(Origin::of_url(&url), &mine));
    }
}
