//! Tests of `classify`.

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
    let e =
        answer("-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.");
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
