//! Intermediary logins: the taxpayer a request or token acts for.

use std::fmt;
use std::sync::Arc;

use crate::error::Error;

/// The longest identifier accepted. A TIN is 11–14 characters and a ROB
/// at most 20; anything this long is a mistake, not an identifier.
const MAX_LEN: usize = 64;

/// Marks a request as made by an intermediary on behalf of a taxpayer.
///
/// Put it in the request's extensions: [`AuthMiddleware`](crate::AuthMiddleware)
/// then uses that taxpayer's token (logging in with the `onbehalfof` header)
/// and adds `onbehalfof: <value>` to the API request too, unless the request
/// already carries one.
///
/// The value is a TIN (`C25845632020`) or `TIN:ROB` for a taxpayer with a
/// business registration number (`IG12345678912:201901234567`). It is checked
/// when used: an invalid one fails the request with [`Error::InvalidTaxpayer`].
///
/// ```no_run
/// # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), reqwest_middleware::Error> {
/// use myinvois_auth::OnBehalfOf;
/// let response = client
///     .get("https://preprod-api.myinvois.hasil.gov.my/api/v1.0/documenttypes")
///     .with_extension(OnBehalfOf::new("C25845632020"))
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OnBehalfOf(Arc<str>);

impl OnBehalfOf {
    /// The taxpayer's TIN, or `TIN:ROB`.
    pub fn new(taxpayer: impl AsRef<str>) -> Self {
        OnBehalfOf(Arc::from(taxpayer.as_ref()))
    }

    /// The identifier as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The TIN: the identifier up to a `:` (the part before the ROB).
    pub(crate) fn tin(&self) -> &str {
        self.0.split(':').next().unwrap_or_default()
    }

    /// Checks that the value can be sent as the `onbehalfof` header and looks
    /// like a TIN or `TIN:ROB`.
    ///
    /// ```
    /// use myinvois_auth::OnBehalfOf;
    /// assert!(OnBehalfOf::new("C25845632020").validate().is_ok());
    /// assert!(OnBehalfOf::new("IG12345678912:201901234567").validate().is_ok());
    /// assert!(OnBehalfOf::new("C123\r\nX-Evil: 1").validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let value = self.as_str();
        let fail = |reason| {
            Err(Error::InvalidTaxpayer {
                value: value.chars().take(MAX_LEN).collect(),
                reason,
            })
        };
        if value.is_empty() {
            return fail("it is empty");
        }
        if value.len() > MAX_LEN {
            return fail("it is longer than 64 characters");
        }
        let mut parts = value.split(':');
        let tin = parts.next().unwrap_or_default();
        let rob = parts.next();
        if parts.next().is_some() {
            return fail("expected TIN or TIN:ROB, found more than one ':'");
        }
        if tin.is_empty() || !tin.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return fail("the TIN must be letters and digits only");
        }
        if let Some(rob) = rob {
            if rob.is_empty() || !rob.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return fail("the ROB must be letters, digits and '-' only");
            }
        }
        Ok(())
    }
}

impl fmt::Debug for OnBehalfOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OnBehalfOf").field(&self.as_str()).finish()
    }
}

impl fmt::Display for OnBehalfOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tin_and_tin_rob() {
        for ok in ["C25845632020", "IG12345678912:201901234567", "C1:123456-A"] {
            assert!(OnBehalfOf::new(ok).validate().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_values_that_are_not_identifiers() {
        let long = "C".repeat(65);
        for bad in [
            "",
            " C1",
            "C1 ",
            "C1:",
            ":123",
            "C1:2:3",
            "C1\n",
            "C1é",
            long.as_str(),
        ] {
            let err = OnBehalfOf::new(bad).validate().unwrap_err();
            assert!(matches!(err, Error::InvalidTaxpayer { .. }), "{bad:?}");
        }
    }
}
