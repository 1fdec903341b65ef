//! `build()` with no rustls crypto provider installed, in every TLS feature
//! combination: with `rustls-no-provider` alone it is a typed error naming
//! the fix, never a panic; once a provider is installed it builds; with a
//! TLS feature that ships its own provider (`rustls`, `native-tls`) it
//! always builds.
//!
//! A test binary of its own with a single test: it installs the process's
//! crypto provider, which no other test may see. reqwest decides from
//! `CryptoProvider::get_default()` (the installed provider only) and from
//! its own features, which no dev-dependency changes (`cargo tree -e
//! features -i reqwest`), so the library's behaviour here is a user's.
//!
//! CI runs it with `--no-default-features --features rustls-no-provider`
//! (see `.ci/run`) as well as with all features.

use myinvois_auth::{Credentials, Environment, Error, TokenCache};

fn build() -> Result<TokenCache, Error> {
    TokenCache::builder(Credentials::new("client-id", "client-secret"))
        .environment(Environment::Sandbox)
        .build()
}

#[test]
fn build_without_a_crypto_provider_is_an_error_or_a_cache_never_a_panic() {
    let outcome = std::panic::catch_unwind(build);
    let first = outcome.expect("build() panicked with no crypto provider installed");

    if cfg!(all(
        feature = "rustls-no-provider",
        not(feature = "rustls"),
        not(feature = "native-tls")
    )) {
        let err = first.expect_err("no crypto provider: build() must refuse");
        let Error::InvalidConfig(message) = &err else {
            panic!("expected InvalidConfig, got {err:?}");
        };
        assert!(
            message.contains("crypto provider") && message.contains("install_default"),
            "the message names the fix: {message}"
        );
        // Installed before build(), as docs/features.md says: it builds.
        tokio_rustls::rustls::crypto::ring::default_provider()
            .install_default()
            .expect("no provider was installed yet");
        build().expect("builds once a provider is installed");
    } else {
        first.expect("with a TLS feature that has its own provider, or none, it builds");
    }
}
