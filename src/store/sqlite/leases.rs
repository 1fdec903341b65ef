//! One login at a time per entry, across processes: a lease (owner, when
//! taken, until when) held for the login only. A lease whose holder died
//! ends when it expires; one taken "in the future" (the clock went back
//! since) is taken as ended, so that a clock step never holds others up
//! for longer than the lease's own time.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::clock::{duration, ms, SLACK_MS};

/// How long the lease of `key` has left at `now`, if it is held.
pub(super) fn left_in(
    conn: &Connection,
    now: i64,
    key: &str,
) -> rusqlite::Result<Option<Duration>> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached("SELECT taken_ms, until_ms FROM leases WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(taken, until)| held(now, taken, until)))
}

/// How long a lease taken at `taken` until `until` has left at `now`.
fn held(now: i64, taken: i64, until: i64) -> Option<Duration> {
    (until > now && taken <= now.saturating_add(SLACK_MS))
        .then(|| duration(until.saturating_sub(now)))
}

/// Takes the lease of `key` for `owner` for `ttl`, unless another holds it.
/// The time is read by `clock` once the write lock is had (see
/// `logins::reserve`): a lease counted from before a busy wait would end
/// that much early.
pub(super) fn try_lock(
    conn: &mut Connection,
    clock: impl FnOnce() -> i64,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = clock();
    if left_in(&tx, now, key)?.is_some() {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO leases (key, owner, taken_ms, until_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((key, owner, now, now.saturating_add(ms(ttl).max(1))))?;
    tx.commit()?;
    Ok(true)
}

/// Ends the lease of `key` if `owner` still holds it.
pub(super) fn unlock(conn: &Connection, key: &str, owner: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM leases WHERE key = ?1 AND owner = ?2")?
        .execute((key, owner))?;
    Ok(())
}
