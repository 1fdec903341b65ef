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
        ErrorKind::Server(ServerErrorKind::MasterDown) => (
            K::Unreachable,
            "MASTERDOWN: the replica lost its primary; reconnecting".to_owned(),
            Failing,
        ),
        ErrorKind::Server(ServerErrorKind::NoPerm) => (
            K::Auth,
            "NOPERM: the Redis user may not run a command the store needs (see the ACL in the README)"
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
            "NOPERM: the Redis user may not run a command a store script needs (see the ACL in the README)"
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
mod tests {
    use super::*;

    /// The error a server answer `line` (RESP, without CRLF) makes.
    fn answer(line: &str) -> RedisError {
        redis::parse_redis_value(format!("{line}\r\n").as_bytes())
            .and_then(redis::Value::extract_error)
            .expect_err("an error answer")
    }

    fn kind_and_after(error: &RedisError, cluster: bool) -> (StoreErrorKind, Connection) {
        let (error, after) = classify(error, cluster);
        (error.kind(), after)
    }

    #[test]
    fn a_replica_is_read_only_and_the_connection_is_remade() {
        let e = answer("-READONLY You can't write against a read only replica.");
        assert_eq!(
            kind_and_after(&e, false),
            (StoreErrorKind::ReadOnly, Connection::Remake)
        );
        assert!(classify(&e, false).0.to_string().contains("READONLY"));
    }

    #[test]
    fn moved_is_a_remake_outside_cluster_mode_only() {
        let e = answer("-MOVED 3999 127.0.0.1:6381");
        assert_eq!(
            kind_and_after(&e, false),
            (StoreErrorKind::Other, Connection::Remake)
        );
        assert!(classify(&e, false).0.to_string().contains("from_cluster"));
        // In Cluster mode the client follows redirections itself.
        assert_eq!(classify(&e, true).1, Connection::Keep);
        let ask = answer("-ASK 3999 127.0.0.1:6381");
        assert_eq!(classify(&ask, false).1, Connection::Remake);
    }

    #[test]
    fn acl_refusals_are_auth_naming_noperm_also_inside_a_script() {
        let direct = answer("-NOPERM this user has no permissions to run the 'zcount' command");
        // Redis 7.0, a command refused inside a script.
        let script = answer(
            "-ERR The user executing the script can't run this command or subcommand script: f86, on @user_script:1.",
        );
        for e in [direct, script] {
            let (error, after) = classify(&e, false);
            assert_eq!(error.kind(), StoreErrorKind::Auth, "{error}");
            assert!(error.to_string().contains("NOPERM"), "{error}");
            assert_eq!(after, Connection::Keep);
        }
    }

    #[test]
    fn a_wrong_password_is_auth_and_never_quotes_the_server() {
        let e = answer("-WRONGPASS invalid username-password pair or user is disabled.");
        let (error, after) = classify(&e, false);
        assert_eq!(error.kind(), StoreErrorKind::Auth, "{error}");
        assert_eq!(after, Connection::Keep);
        let e = answer("-NOAUTH Authentication required.");
        assert_eq!(classify(&e, false).0.kind(), StoreErrorKind::Auth);
    }

    #[test]
    fn script_errors_and_other_answers_keep_the_connection() {
        let e = answer("-NOSCRIPT No matching script.");
        assert_eq!(
            kind_and_after(&e, false),
            (StoreErrorKind::Script, Connection::Keep)
        );
        let e = answer("-ERR user_script:1: Script attempted to access nonexistent global variable 'x' script: f86");
        assert_eq!(
            kind_and_after(&e, false),
            (StoreErrorKind::Script, Connection::Keep)
        );
        let e = answer("-WRONGTYPE Operation against a key holding the wrong kind of value");
        assert_eq!(
            kind_and_after(&e, false),
            (StoreErrorKind::Other, Connection::Keep)
        );
    }

    #[test]
    fn a_replica_without_its_primary_and_io_failures_count_as_failing() {
        let e = answer(
            "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        );
        assert_eq!(
            kind_and_after(&e, false),
            (StoreErrorKind::Unreachable, Connection::Failing)
        );
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            kind_and_after(&refused, false),
            (StoreErrorKind::Unreachable, Connection::Failing)
        );
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let (error, after) = classify(&reset, false);
        assert_eq!(error.kind(), StoreErrorKind::Unreachable);
        assert_eq!(after, Connection::Failing);
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(
            kind_and_after(&timeout, false),
            (StoreErrorKind::Timeout, Connection::Failing)
        );
    }
}
