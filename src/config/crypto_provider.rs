//! The TLS check of `build()`: with `rustls-no-provider` alone, a crypto
//! provider must be installed before a cache is built.

use crate::error::Error;

/// With `rustls-no-provider` alone, reqwest panics when it builds a client
/// and no rustls crypto provider is installed (it has none of its own to
/// fall back on): refuse instead, naming the fix.
#[cfg(all(
    feature = "rustls-no-provider",
    not(feature = "rustls"),
    not(feature = "native-tls")
))]
pub(super) fn check_crypto_provider() -> Result<(), Error> {
    match rustls::crypto::CryptoProvider::get_default() {
        Some(_) => Ok(()),
        None => Err(Error::InvalidConfig(
            "no rustls crypto provider is installed (feature `rustls-no-provider`): install one \
             before build(), e.g. `rustls::crypto::ring::default_provider().install_default()`"
                .into(),
        )),
    }
}

/// `rustls` brings aws-lc-rs; `native-tls` is reqwest's default when on.
#[cfg(not(all(
    feature = "rustls-no-provider",
    not(feature = "rustls"),
    not(feature = "native-tls")
)))]
pub(super) fn check_crypto_provider() -> Result<(), Error> {
    Ok(())
}
