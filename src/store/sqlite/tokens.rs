//! The shared tokens: one row per entry, with how long it may be kept
//! (`until_ms`, by the saving process's clock, which every process of the
//! host shares), read together with the entry's lease in one snapshot.

use chrono::DateTime;
use rusqlite::{Connection, OptionalExtension};

use super::clock::{duration, ms, SLACK_MS};
use super::leases;
use crate::store::{Loaded, StoredToken};

/// The entry's token, if one is kept and still valid at `now`, and how
/// long its lease has left, in one read transaction.
pub(super) fn load(conn: &mut Connection, now: i64, key: &str) -> rusqlite::Result<Loaded> {
    let tx = conn.transaction()?;
    let row = tx
        .prepare_cached(
            "SELECT access_token, issued_at_ms, expires_at_ms, scope, saved_ms, until_ms
             FROM tokens WHERE key = ?1 AND until_ms > ?2",
        )?
        .query_row((key, now), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .optional()?;
    let locked = leases::left_in(&tx, now, key)?;
    tx.commit()?;
    let Some((access_token, issued_at_ms, expires_at_ms, scope, saved_ms, until_ms)) = row else {
        return Ok(Loaded {
            token: None,
            locked,
        });
    };
    if saved_ms > now.saturating_add(SLACK_MS) {
        // Saved "in the future": the clock went back since. How long it
        // has really been kept is unknown: not trusted.
        tracing::warn!(
            "a token in the token store was saved after now (the clock went back); ignored"
        );
        return Ok(Loaded {
            token: None,
            locked,
        });
    }
    let (Some(issued_at), Some(expires_at)) = (
        DateTime::from_timestamp_millis(issued_at_ms),
        DateTime::from_timestamp_millis(expires_at_ms),
    ) else {
        tracing::warn!("a token in the token store has invalid times; ignored");
        return Ok(Loaded {
            token: None,
            locked,
        });
    };
    Ok(Loaded {
        token: Some(StoredToken {
            access_token,
            issued_at,
            expires_at,
            scope,
            remaining: duration(until_ms.saturating_sub(now)),
        }),
        locked,
    })
}

/// Keeps `token` under `key` for its `remaining` time from `now`.
pub(super) fn save(
    conn: &mut Connection,
    now: i64,
    key: &str,
    token: &StoredToken,
) -> rusqlite::Result<()> {
    let remaining = ms(token.remaining);
    if remaining == 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO tokens
         (key, access_token, issued_at_ms, expires_at_ms, scope, saved_ms, until_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        key,
        &token.access_token,
        token.issued_at.timestamp_millis(),
        token.expires_at.timestamp_millis(),
        &token.scope,
        now,
        now.saturating_add(remaining),
    ))?;
    Ok(())
}
