//! As whom to log in: [`Credentials`] as the caller gives them, and the
//! [`ClientCredentials`] a running cache holds, whose secret can be rotated.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::Error;

/// The ERP system's client ID and secret, as registered in MyInvois.
///
/// The secret is held in a [`SecretString`]: zeroed when dropped, never
/// printed (`Debug` shows the client ID only), and read only to write the
/// login form. MyInvois secrets expire; give a running cache a new one with
/// [`TokenCache::rotate_secret`](crate::TokenCache::rotate_secret).
///
/// ```
/// use myinvois_auth::Credentials;
/// let creds = Credentials::new("my-client-id", "s3cr3t");
/// assert_eq!(creds.client_id(), "my-client-id");
/// assert!(!format!("{creds:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct Credentials {
    pub(super) client_id: String,
    pub(super) client_secret: SecretString,
}

impl Credentials {
    /// Client ID and client secret (a `&str`, `String` or [`SecretString`]).
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<SecretString>) -> Self {
        Credentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }

    /// The client ID (not a secret).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// The credentials a running cache logs in with: the client ID, and a
/// secret that [`rotate`](Self::rotate) replaces for every clone at once.
pub(crate) struct ClientCredentials {
    client_id: String,
    secret: ArcSwap<Secret>,
}

/// One client secret, numbered: a login's failure is told apart from the
/// failures of the secret in use now.
pub(crate) struct Secret {
    pub(crate) value: SecretString,
    /// 0 for the secret the cache was built with, then one more per rotation.
    pub(crate) generation: u64,
}

impl Secret {
    /// The secret as text may show it: as it is, and form-encoded (as the
    /// login sends it). Both zeroed when dropped.
    pub(crate) fn forms(&self) -> [Zeroizing<String>; 2] {
        let plain = Zeroizing::new(self.value.expose_secret().to_owned());
        // Sized for the worst case, so the buffer holding the secret is
        // never reallocated (which would leave a copy in freed memory).
        let mut encoded = Zeroizing::new(String::with_capacity(3 * plain.len()));
        encoded.extend(url::form_urlencoded::byte_serialize(plain.as_bytes()));
        [plain, encoded]
    }
}

impl ClientCredentials {
    pub(crate) fn new(client_id: String, secret: SecretString) -> Self {
        ClientCredentials {
            client_id,
            secret: ArcSwap::from_pointee(Secret {
                value: secret,
                generation: 0,
            }),
        }
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The current secret. Held by a login for as long as it runs, so a
    /// rotation never changes the secret of a login half-way.
    pub(crate) fn secret(&self) -> Arc<Secret> {
        self.secret.load_full()
    }

    /// The generation of the current secret.
    pub(crate) fn generation(&self) -> u64 {
        self.secret.load().generation
    }

    /// Replaces the secret; refuses an empty one.
    pub(crate) fn rotate(&self, secret: SecretString) -> Result<(), Error> {
        check_secret(&secret)?;
        self.secret.rcu(|current| Secret {
            value: secret.clone(),
            generation: current.generation.wrapping_add(1),
        });
        Ok(())
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

pub(super) fn check_secret(secret: &SecretString) -> Result<(), Error> {
    if secret.expose_secret().is_empty() {
        return Err(Error::InvalidConfig("the client secret is empty".into()));
    }
    Ok(())
}
