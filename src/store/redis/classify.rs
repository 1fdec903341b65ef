//! What a Redis error means: its [`StoreErrorKind`], a message that names
//! the cause (never a password or a token), and whether the connection must
//! be remade (a failover: `READONLY`, or `MOVED`/`ASK` outside Cluster mode).

use std::error::Error as _;

use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::store::{StoreError, StoreErrorKind};

/// What a failed call means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Connection {
    /// Keep using it.
    Keep,
    /// It talks to the wrong node (a replica after a failover): remake it.
    Remake,
    /// It is broken or out of reach: remake it, and count the failure.
    Failing,
}

/// Classifies `error`; `cluster` says whether redirections are expected.
pub(super) fn classify(error: &RedisError, cluster: bool) -> (StoreError, Connection) {
    use Connection::{Failing, Keep, Remake};
    use StoreErrorKind as K;
    let (kind, message, connection) = match error.kind() {
        ErrorKind::Server(ServerErrorKind::ReadOnly) => (
            K::ReadOnly,
            "READONLY: the node is a replica (a failover happened); reconnecting".to_owned(),
            Remake,
        ),
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask) if !cluster => (
            K::Other,
            "MOVED/ASK: the server is a Cluster; use RedisTokenStore::from_cluster".to_owned(),
            Remake,
        ),
        ErrorKind::Server(ServerErrorKind::CrossSlot) if !cluster => (
            K::Other,
            "CROSSSLOT: the server is a Cluster node; use RedisTokenStore::from_cluster".to_owned(),
            Keep,
        ),
        ErrorKind::Server(ServerErrorKind::MasterDown) => (
            K::Unreachable,
            "MASTERDOWN: the replica lost its primary; reconnecting".to_owned(),
            Failing,
        ),
        ErrorKind::Server(ServerErrorKind::NoPerm) => (
            K::Auth,
            "NOPERM: the Redis user may not run a command the store needs (see the ACL in the guide, myinvois_auth::guide::fleets)"
                .to_owned(),
            Keep,
        ),
        ErrorKind::Server(ServerErrorKind::NoScript) => {
            (K::Script, "NOSCRIPT: the script is not loaded".to_owned(), Keep)
        }
        ErrorKind::AuthenticationFailed => (
            K::Auth,
            "authentication failed (WRONGPASS: check the user and password)".to_owned(),
            Keep,
        ),
        ErrorKind::Extension if matches!(error.code(), Some("NOAUTH" | "WRONGPASS")) => (
            K::Auth,
            format!(
                "{}: check the user and password",
                error.code().unwrap_or("auth")
            ),
            Keep,
        ),
        _ if error.is_timeout() => (K::Timeout, "Redis did not answer in time".to_owned(), Failing),
        _ if error.is_io_error() => match tls_failure(error) {
            Some(tls) => (K::Tls, tls, Failing),
            None if error.is_connection_refusal() => (
                K::Unreachable,
                "connection refused".to_owned(),
                Failing,
            ),
            None => (
                K::Unreachable,
                format!("I/O error: {}", io_kind(error)),
                Failing,
            ),
        },
        // A command refused inside a script: Redis 7.0 says `ERR The user
        // executing the script can't run this command`; later ones, NOPERM.
        ErrorKind::Server(ServerErrorKind::ResponseError) if is_script_acl_error(error) => (
            K::Auth,
            "NOPERM: the Redis user may not run a command a store script needs (see the ACL in the guide, myinvois_auth::guide::fleets)"
                .to_owned(),
            Keep,
        ),
        ErrorKind::Server(ServerErrorKind::ResponseError) if is_script_error(error) => (
            K::Script,
            "a script failed on the server".to_owned(),
            Keep,
        ),
        other => (K::Other, format!("Redis error: {other:?}"), Keep),
    };
    (StoreError::new(kind, message), connection)
}

/// What a TLS failure inside an I/O error says, if it is one.
#[cfg(any(feature = "rustls", feature = "rustls-no-provider"))]
fn tls_failure(error: &RedisError) -> Option<String> {
    tls_error(error).map(tls_message)
}

/// (Redis uses the platform's TLS: its failures show as I/O errors.)
#[cfg(not(any(feature = "rustls", feature = "rustls-no-provider")))]
fn tls_failure(_error: &RedisError) -> Option<String> {
    None
}

/// The rustls error inside an I/O error, if there is one.
#[cfg(any(feature = "rustls", feature = "rustls-no-provider"))]
fn tls_error(error: &RedisError) -> Option<&rustls::Error> {
    let io = error.source()?;
    let io = io
        .downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
        .map(|arc| &**arc as &(dyn std::error::Error + 'static))
        .unwrap_or(io);
    io.downcast_ref::<std::io::Error>()?
        .get_ref()?
        .downcast_ref::<rustls::Error>()
}

#[cfg(any(feature = "rustls", feature = "rustls-no-provider"))]
fn tls_message(error: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match error {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "TLS: unknown CA (the server's certificate is not signed by a trusted root: \
             pass your CA with RedisTokenStore::from_client)"
                .to_owned()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "TLS: the server's certificate is not valid for its name".to_owned()
        }
        Error::InvalidCertificate(other) => format!("TLS: invalid certificate ({other:?})"),
        other => format!("TLS: {other}"),
    }
}

fn io_kind(error: &RedisError) -> String {
    error
        .source()
        .and_then(|e| {
            e.downcast_ref::<std::io::Error>()
                .map(|io| format!("{:?}", io.kind()))
        })
        .unwrap_or_else(|| "connection lost".to_owned())
}

fn is_script_acl_error(error: &RedisError) -> bool {
    error.detail().is_some_and(|d| {
        d.contains("can't run this command") || d.contains("no permissions to run")
    })
}

fn is_script_error(error: &RedisError) -> bool {
    error
        .detail()
        .is_some_and(|d| d.contains("script") || d.contains("Lua"))
}

#[cfg(test)]
mod tests;
