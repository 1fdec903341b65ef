//! What makes a file this store's: SQLite's `application_id` header field
//! set to [`APPLICATION_ID`], and `user_version` holding the schema
//! version. A newer crate upgrades an older file, in one write
//! transaction; an older crate meeting a newer file, or any other
//! application's database, refuses it with a typed error and changes
//! nothing in it.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::{StoreError, StoreErrorKind};

/// `application_id` of this store's files ("MIAS": MyInvois auth store).
pub(super) const APPLICATION_ID: i32 = 0x4D49_4153;

/// Version 1: tokens, leases, the login log and budget holds.
const V1: &str = "
CREATE TABLE tokens (
    key TEXT PRIMARY KEY,
    access_token TEXT NOT NULL,
    issued_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    scope TEXT,
    saved_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    taken_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE logins (
    budget TEXT NOT NULL,
    id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (budget, id)
) WITHOUT ROWID;
CREATE INDEX logins_by_time ON logins (budget, at_ms);
CREATE TABLE budgets (
    budget TEXT PRIMARY KEY,
    blocked_until_ms INTEGER NOT NULL DEFAULT 0,
    paced_ms INTEGER NOT NULL DEFAULT 0,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The steps from each version to the next: `MIGRATIONS[n]` takes a file
/// from version `n` to `n + 1` (version 0: a new, empty file). The schema
/// version this crate writes is their count.
pub(super) const MIGRATIONS: &[&str] = &[V1];

/// What a file holds, as far as this store is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Identity {
    /// No table at all: a new file, this store's to set up.
    Empty,
    /// This store's, at this schema version.
    Ours(i32),
    /// Another application's database.
    Foreign(String),
}

/// Reads what the file is, without writing anything. One statement, so
/// one state of the file: read one by one, the three values could straddle
/// another process's setup of a new file (its `application_id` from
/// before, its tables from after), which reads as another application's
/// database.
pub(super) fn identify(conn: &Connection) -> rusqlite::Result<Identity> {
    let (application_id, version, tables): (i32, i32, i64) = conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id()),
                (SELECT user_version FROM pragma_user_version()),
                (SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(match application_id {
        APPLICATION_ID => Identity::Ours(version),
        0 if tables == 0 && version == 0 => Identity::Empty,
        0 => Identity::Foreign(format!(
            "it holds tables this store did not make ({tables} in all)"
        )),
        other => Identity::Foreign(format!("its application_id is {other:#x}")),
    })
}

/// The error for a file this store will not use, if it is one.
pub(super) fn refusal(identity: &Identity, migrations: &[&str]) -> Option<StoreError> {
    let latest = latest(migrations);
    match identity {
        Identity::Foreign(why) => Some(StoreError::new(
            StoreErrorKind::Incompatible,
            format!(
                "another application's database ({why}); give the token store a file of its own"
            ),
        )),
        Identity::Ours(version) if *version > latest => Some(StoreError::new(
            StoreErrorKind::Incompatible,
            format!(
                "written by a newer myinvois-auth (schema version {version}; this one reads up to \
                 {latest}): upgrade this program, or give it a file of its own"
            ),
        )),
        _ => None,
    }
}

fn latest(migrations: &[&str]) -> i32 {
    i32::try_from(migrations.len()).unwrap_or(i32::MAX)
}

/// Whether the file needs setting up or upgrading.
pub(super) fn needs_upgrade(identity: &Identity, migrations: &[&str]) -> bool {
    match identity {
        Identity::Empty => true,
        Identity::Ours(version) => *version < latest(migrations),
        Identity::Foreign(_) => false,
    }
}

/// Sets up a new file or upgrades an older one to the latest version, in
/// one write transaction that looks again at what the file is (another
/// process may have done it meanwhile). Returns the refusal if the file
/// turned out not to be this store's.
pub(super) fn upgrade(
    conn: &mut Connection,
    migrations: &[&str],
) -> rusqlite::Result<Option<StoreError>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let identity = identify(&tx)?;
    if let Some(refused) = refusal(&identity, migrations) {
        return Ok(Some(refused));
    }
    let from = match identity {
        Identity::Empty => {
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            0
        }
        Identity::Ours(version) => version,
        Identity::Foreign(_) => return Ok(None),
    };
    let from = usize::try_from(from).unwrap_or(0);
    for step in migrations.iter().skip(from) {
        tx.execute_batch(step)?;
    }
    if from < migrations.len() {
        tracing::info!(
            from,
            to = migrations.len(),
            "token store file set up or upgraded"
        );
    }
    tx.pragma_update(None, "user_version", latest(migrations))?;
    tx.commit()?;
    Ok(None)
}
