//! What a failure of the database file means: its [`StoreErrorKind`], a
//! message that names the cause and what to do (never a token), and
//! whether it lasts (a bad file stays bad until someone fixes it: the
//! store then skips the file for a while instead of failing every call on
//! it) or passes (a file held locked by another program for a moment).

use std::io;

use rusqlite::ErrorCode;

use crate::store::{StoreError, StoreErrorKind};

/// Whether a failure lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lasting {
    /// The file itself is unusable: close it, and skip it for a while.
    Yes,
    /// The file was busy: try again; several in a row skip it for a while.
    Busy,
    /// Anything else: try again.
    No,
}

/// A failure of SQLite.
pub(super) fn sqlite(error: &rusqlite::Error) -> (StoreError, Lasting) {
    use StoreErrorKind as K;
    let (kind, message, lasting) = match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            K::Timeout,
            "the file stayed locked by another program (busy) for longer than the busy timeout",
            Lasting::Busy,
        ),
        Some(ErrorCode::OperationInterrupted) => {
            (K::Timeout, "the call was interrupted", Lasting::Busy)
        }
        Some(ErrorCode::ReadOnly) => (
            K::ReadOnly,
            "the file is read-only to this process (the file, its -wal and -shm files and \
             their folder must be writable by the user the program runs as)",
            Lasting::Yes,
        ),
        Some(ErrorCode::NotADatabase) => (
            K::Corrupt,
            "not a SQLite database (another kind of file, or an encrypted one); if it was this \
             store's, delete it: it holds only tokens, which are logged in for again",
            Lasting::Yes,
        ),
        Some(ErrorCode::DatabaseCorrupt) => (
            K::Corrupt,
            "the database is damaged or truncated; delete it: it holds only tokens, which are \
             logged in for again",
            Lasting::Yes,
        ),
        Some(ErrorCode::CannotOpen) => (
            K::Unreachable,
            "cannot open the file (a directory? a folder that cannot be created?)",
            Lasting::Yes,
        ),
        Some(ErrorCode::PermissionDenied | ErrorCode::AuthorizationForStatementDenied) => (
            K::Auth,
            "permission denied: the file belongs to another user, or its mode forbids this one",
            Lasting::Yes,
        ),
        Some(ErrorCode::SystemIoFailure) => (
            K::Unreachable,
            "an I/O error on the file (a disk or file system failure, or a file cut short)",
            Lasting::Yes,
        ),
        Some(ErrorCode::DiskFull) => (K::Other, "the disk is full", Lasting::No),
        Some(ErrorCode::FileLockingProtocolFailed) => (
            K::Unreachable,
            "the file system does not support SQLite's locks (a network file system?)",
            Lasting::Yes,
        ),
        _ => {
            return (
                StoreError::new(K::Other, format!("SQLite error: {}", describe(error))),
                Lasting::No,
            )
        }
    };
    (StoreError::new(kind, message), lasting)
}

/// A failure of the file system, before SQLite opened the file.
pub(super) fn io(error: &io::Error, doing: &str) -> StoreError {
    use io::ErrorKind as E;
    use StoreErrorKind as K;
    let (kind, what) = match error.kind() {
        E::PermissionDenied => (K::Auth, "permission denied"),
        E::ReadOnlyFilesystem => (K::ReadOnly, "the file system is read-only"),
        E::IsADirectory => (K::Unreachable, "it is a directory, not a file"),
        E::NotADirectory => (K::Unreachable, "a part of its path is not a directory"),
        E::NotFound => (K::Unreachable, "a folder on its path does not exist"),
        E::StorageFull => (K::Other, "the disk is full"),
        _ => (K::Unreachable, "an I/O error"),
    };
    StoreError::new(kind, format!("cannot {doing}: {what} ({:?})", error.kind()))
}

/// SQLite's own words for a failure: its code and message. They name
/// SQL, files and codes, never a bound value (a token).
fn describe(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(code, Some(message)) => {
            format!("{:?}: {message}", code.code)
        }
        rusqlite::Error::SqliteFailure(code, None) => format!("{:?}", code.code),
        // The other variants name types and columns (a row of another form).
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn each_bad_file_has_a_kind_and_a_lasting_class() {
        use rusqlite::ffi;
        for (code, kind, lasting) in [
            (ffi::SQLITE_BUSY, StoreErrorKind::Timeout, Lasting::Busy),
            (ffi::SQLITE_LOCKED, StoreErrorKind::Timeout, Lasting::Busy),
            (ffi::SQLITE_READONLY, StoreErrorKind::ReadOnly, Lasting::Yes),
            (ffi::SQLITE_NOTADB, StoreErrorKind::Corrupt, Lasting::Yes),
            (ffi::SQLITE_CORRUPT, StoreErrorKind::Corrupt, Lasting::Yes),
            (
                ffi::SQLITE_CANTOPEN,
                StoreErrorKind::Unreachable,
                Lasting::Yes,
            ),
            (ffi::SQLITE_PERM, StoreErrorKind::Auth, Lasting::Yes),
            (ffi::SQLITE_IOERR, StoreErrorKind::Unreachable, Lasting::Yes),
            (ffi::SQLITE_FULL, StoreErrorKind::Other, Lasting::No),
            (ffi::SQLITE_MISUSE, StoreErrorKind::Other, Lasting::No),
        ] {
            let (error, was) = sqlite(&failure(code));
            assert_eq!((error.kind(), was), (kind, lasting), "code {code}: {error}");
        }
    }

    #[test]
    fn file_system_failures_name_the_cause() {
        let error = io(
            &io::Error::from(io::ErrorKind::IsADirectory),
            "create the file",
        );
        assert_eq!(error.kind(), StoreErrorKind::Unreachable);
        assert!(error.to_string().contains("directory"), "{error}");
        let error = io(
            &io::Error::from(io::ErrorKind::PermissionDenied),
            "create the file",
        );
        assert_eq!(error.kind(), StoreErrorKind::Auth);
    }
}
