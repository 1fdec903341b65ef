//! [`TokenClaims`]: the JWT payload of a MyInvois access token, read
//! without verifying its signature.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::Error;

/// The claims of an access token, decoded from its JWT payload.
///
/// **Not verified**: the signature is not checked, so use these only to
/// inspect a token this process received from the identity service itself
/// (for example, to check that a token belongs to the taxpayer it was
/// requested for), never to authorize anything.
///
/// MyInvois tokens carry, among others, `TaxpayerTIN`, `IsIntermediary`,
/// `IntermedTIN`, `IntermedROB`, `client_id`, `scope` and `exp`.
///
/// ```
/// use myinvois_auth::TokenClaims;
/// // header.payload.signature, payload = {"TaxpayerTIN":"C1","IsIntermediary":"1","IntermedTIN":"C9"}
/// let jwt = "e30.eyJUYXhwYXllclRJTiI6IkMxIiwiSXNJbnRlcm1lZGlhcnkiOiIxIiwiSW50ZXJtZWRUSU4iOiJDOSJ9.c2ln";
/// let claims = TokenClaims::decode(jwt)?;
/// assert_eq!(claims.taxpayer_tin(), Some("C1"));
/// assert_eq!(claims.is_intermediary(), Some(true));
/// assert_eq!(claims.intermediary_tin(), Some("C9"));
/// assert!(TokenClaims::decode("not-a-jwt").is_err());
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TokenClaims {
    claims: Map<String, Value>,
}

impl TokenClaims {
    /// Decodes the payload of a compact JWT (`header.payload.signature`).
    /// Fails with [`Error::InvalidToken`] when it is not one; the error never
    /// quotes the token.
    pub fn decode(jwt: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidToken(reason.to_owned());
        let mut parts = jwt.split('.');
        let (Some(_header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JWT: expected three dot-separated parts"));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| invalid("the JWT payload is not base64url"))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(claims)) => Ok(TokenClaims { claims }),
            Ok(_) => Err(invalid("the JWT payload is not a JSON object")),
            Err(_) => Err(invalid("the JWT payload is not JSON")),
        }
    }

    /// Any claim, as JSON.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The taxpayer the token acts for (`TaxpayerTIN`, or the older `TaxTin`).
    pub fn taxpayer_tin(&self) -> Option<&str> {
        self.text("TaxpayerTIN").or_else(|| self.text("TaxTin"))
    }

    /// Whether an intermediary logged in on the taxpayer's behalf (`IsIntermediary`).
    pub fn is_intermediary(&self) -> Option<bool> {
        match self.get("IsIntermediary")? {
            Value::String(s) if s == "1" || s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s == "0" || s.eq_ignore_ascii_case("false") => Some(false),
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The intermediary's TIN (`IntermedTIN`), when present and not empty.
    pub fn intermediary_tin(&self) -> Option<&str> {
        self.text("IntermedTIN")
    }

    /// The intermediary's business registration number (`IntermedROB`).
    pub fn intermediary_rob(&self) -> Option<&str> {
        self.text("IntermedROB")
    }

    /// The name of the taxpayer the token acts for (`name`), when present
    /// and not empty.
    ///
    /// ```
    /// # use myinvois_auth::TokenClaims;
    /// // payload = {"name":"ACME SDN BHD"}
    /// let claims = TokenClaims::decode("e30.eyJuYW1lIjoiQUNNRSBTRE4gQkhEIn0.c2ln")?;
    /// assert_eq!(claims.name(), Some("ACME SDN BHD"));
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.text("name")
    }

    /// Every claim, by name.
    ///
    /// ```
    /// # use myinvois_auth::TokenClaims;
    /// // payload = {"TaxpayerTIN":"C1","IsIntermediary":"1","IntermedTIN":"C9"}
    /// let jwt = "e30.eyJUYXhwYXllclRJTiI6IkMxIiwiSXNJbnRlcm1lZGlhcnkiOiIxIiwiSW50ZXJtZWRUSU4iOiJDOSJ9.c2ln";
    /// let claims = TokenClaims::decode(jwt)?;
    /// let mut names: Vec<&str> = claims.iter().map(|(name, _)| name).collect();
    /// names.sort();
    /// assert_eq!(names, ["IntermedTIN", "IsIntermediary", "TaxpayerTIN"]);
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.claims
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    /// The client ID the token was issued to (`client_id`).
    pub fn client_id(&self) -> Option<&str> {
        self.text("client_id")
    }

    /// The token's own expiry (`exp`), by the identity service's clock.
    /// The cache does not use it: it counts from the local send time.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.get("exp")?.as_i64()?, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn reads_a_myinvois_payload() {
        let claims = TokenClaims::decode(&jwt(
            r#"{"exp":1763436142,"client_id":"abc","IsIntermediary":"0","IntermedTIN":"","TaxpayerTIN":"C4889129000"}"#,
        ))
        .unwrap();
        assert_eq!(claims.taxpayer_tin(), Some("C4889129000"));
        assert_eq!(claims.is_intermediary(), Some(false));
        assert_eq!(claims.intermediary_tin(), None);
        assert_eq!(claims.client_id(), Some("abc"));
        assert_eq!(claims.expires_at().unwrap().timestamp(), 1763436142);
        let old = TokenClaims::decode(&jwt(r#"{"TaxTin":"C1"}"#)).unwrap();
        assert_eq!(old.taxpayer_tin(), Some("C1"));
    }

    #[test]
    fn malformed_tokens_are_typed_errors_that_do_not_quote_them() {
        let not_json = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode("SECRETPART"));
        let array = jwt("[1]");
        for bad in [
            "",
            "SECRETPART",
            "a.b",
            "a.b.c.d",
            "e30.!!!SECRETPART.sig",
            &not_json,
            &array,
        ] {
            let err = TokenClaims::decode(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidToken(_)), "{bad:?}");
            assert!(!format!("{err} {err:?}").contains("SECRETPART"));
        }
    }
}
