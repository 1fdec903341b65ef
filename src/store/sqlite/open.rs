//! Opening the database file: made owner-only when new (its folder too),
//! refused untouched when it is not this store's, set up or upgraded when
//! it is, and used in WAL mode (readers never wait for a writer) with a
//! busy timeout (a writer waits for another that long at most). Damage is
//! found by SQLite as the pages are read (`SQLITE_CORRUPT`, `SQLITE_NOTADB`),
//! not by a scan of the whole file at each start, which would cost every
//! short-lived process (the command) time in proportion to the file.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, MAIN_DB};

use super::classify::{self, Lasting};
use super::schema;
use crate::store::{StoreError, StoreErrorKind};

/// How long a call waits for another connection's write lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_millis(500);
/// The write-ahead log is cut back to this size after each checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 1 << 20;

/// Opens (creating it if needed) the store's file at `path`, whose schema
/// is made by `migrations`.
pub(super) fn open(path: &Path, migrations: &[&str]) -> Result<Connection, (StoreError, Lasting)> {
    let sqlite = |e: rusqlite::Error| classify::sqlite(&e);
    prepare_file(path).map_err(|e| (e, Lasting::Yes))?;
    // No CREATE: the file was made above, with its mode.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    // SQLite opens a file it may not write read-only, silently.
    if conn.is_readonly(MAIN_DB).map_err(sqlite)? {
        return Err(classify::sqlite(&rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            None,
        )));
    }
    // Nothing is written before the file is known to be ours or new.
    let identity = schema::identify(&conn).map_err(sqlite)?;
    if let Some(refused) = schema::refusal(&identity, migrations) {
        return Err((refused, Lasting::Yes));
    }
    if identity == schema::Identity::Empty {
        // Before the first table and the WAL: freed pages can then be
        // given back to the file system.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(sqlite)?;
    }
    let mode = wal_mode(&conn).map_err(sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err((
            StoreError::new(
                StoreErrorKind::Other,
                format!("cannot use WAL mode (the journal mode stayed {mode:?})"),
            ),
            Lasting::Yes,
        ));
    }
    if schema::needs_upgrade(&identity, migrations) {
        if let Some(refused) = schema::upgrade(&mut conn, migrations).map_err(sqlite)? {
            return Err((refused, Lasting::Yes));
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(sqlite)?;
    Ok(conn)
}

/// Puts the file in WAL mode, or finds it there. The switch takes the
/// file for itself, and SQLite refuses it at once (`SQLITE_BUSY`, without
/// waiting for the busy timeout) while another process makes the same
/// switch or reads the file: processes starting together on a new file
/// meet that. It is tried again until the busy timeout has passed.
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && Instant::now() + pause < deadline =>
            {
                // On the store's own thread, never a runtime's.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            answer => return answer,
        }
    }
}

/// Makes the file (owner-only) and its folder (owner-only) if missing;
/// refuses a directory; warns about a file other users can read.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !folder.exists() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(folder)
                .map_err(|e| classify::io(&e, "create its folder"))?;
        }
    }
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(classify::io(&e, "create the file")),
    }
    let metadata = fs::metadata(path).map_err(|e| classify::io(&e, "read the file's metadata"))?;
    if metadata.is_dir() {
        return Err(StoreError::new(
            StoreErrorKind::Unreachable,
            "it is a directory, not a file",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the token store's file can be read by other users (mode {mode:o}): it holds \
                 access tokens; make it owner-only (chmod 600)"
            );
        }
    }
    Ok(())
}
