//! The login budget of a client ID, shared by the processes of the host:
//! a sliding-window log of login times, counted and appended in one write
//! transaction, with the rules of `RedisTokenStore`'s script (a slot when
//! the window has room, paced refreshes, reservations that may still be
//! given back, holds after a 429).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::clock::{duration, ms, SLACK_MS};
use crate::store::{LoginSlot, SlotRequest, RESERVATION_PENDING, RESERVATION_POLL};
use crate::MAX_RETRY_AFTER;

/// Rows of a budget outlive what they are needed for by this much.
const KEEP_MARGIN_MS: i64 = 1_000;

/// Reserves a login slot of `budget` if the window has room (and, for a
/// paced request, the pace allows); otherwise says when to ask again.
///
/// The time is read by `clock` once the write lock is had: another process
/// may hold the file for up to the busy timeout, and a login counted from
/// before that wait would leave the window that much early.
pub(super) fn reserve(
    conn: &mut Connection,
    clock: impl FnOnce() -> i64,
    budget: &str,
    request: &SlotRequest,
) -> rusqlite::Result<LoginSlot> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = clock();
    let count = i64::from(request.count.max(1));
    let window = ms(request.window).max(1);
    let (blocked, paced): (i64, i64) = tx
        .prepare_cached("SELECT blocked_until_ms, paced_ms FROM budgets WHERE budget = ?1")?
        .query_row([budget], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    if blocked > now {
        // A hold never outlasts the longest Retry-After taken, whatever
        // the clock did since it was written.
        let wait = blocked.saturating_sub(now).min(ms(MAX_RETRY_AFTER));
        return Ok(LoginSlot::Wait(duration(wait)));
    }
    // Logins older than the window leave it; so do logins "in the future"
    // by more than a window (the clock went back that far: they would
    // otherwise hold their slots until the clock caught up).
    tx.prepare_cached("DELETE FROM logins WHERE budget = ?1 AND (at_ms <= ?2 OR at_ms > ?3)")?
        .execute((
            budget,
            now.saturating_sub(window),
            now.saturating_add(window),
        ))?;
    let n: i64 = tx
        .prepare_cached("SELECT count(*) FROM logins WHERE budget = ?1")?
        .query_row([budget], |r| r.get(0))?;
    if n >= count {
        // The slot frees when the login `count` places from the newest
        // leaves the window.
        let oldest: i64 = tx
            .prepare_cached(
                "SELECT at_ms FROM logins WHERE budget = ?1 ORDER BY at_ms LIMIT 1 OFFSET ?2",
            )?
            .query_row((budget, n - count), |r| r.get(0))?;
        let wait = oldest
            .min(now)
            .saturating_add(window)
            .saturating_sub(now)
            .clamp(1, window);
        // A reservation so fresh that it may still be given back: ask
        // again soon rather than only when the oldest leaves.
        let fresh: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM logins WHERE budget = ?1 AND at_ms >= ?2)",
            )?
            .query_row((budget, now.saturating_sub(ms(RESERVATION_PENDING))), |r| {
                r.get(0)
            })?;
        return Ok(if fresh {
            LoginSlot::Pending {
                ask_again: duration(wait.min(ms(RESERVATION_POLL))),
                wait: duration(wait),
            }
        } else {
            LoginSlot::Wait(duration(wait))
        });
    }
    if let Some(pace) = request.pace {
        let pace = ms(pace);
        // A pace "in the future" (the clock went back) is forgotten.
        let last = if paced > now.saturating_add(SLACK_MS) {
            0
        } else {
            paced
        };
        let next = last.saturating_add(pace);
        if now < next {
            return Ok(LoginSlot::Wait(duration((next - now).min(pace))));
        }
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO logins (budget, id, at_ms, until_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((
        budget,
        &request.id,
        now,
        now.saturating_add(window).saturating_add(KEEP_MARGIN_MS),
    ))?;
    let keep = now
        .saturating_add(window.max(blocked.saturating_sub(now)))
        .saturating_add(KEEP_MARGIN_MS);
    tx.prepare_cached(
        "INSERT INTO budgets (budget, paced_ms, until_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (budget) DO UPDATE SET
             paced_ms = CASE WHEN ?4 THEN excluded.paced_ms ELSE paced_ms END,
             until_ms = max(until_ms, excluded.until_ms)",
    )?
    .execute((
        budget,
        if request.pace.is_some() { now } else { 0 },
        keep,
        request.pace.is_some(),
    ))?;
    tx.commit()?;
    Ok(LoginSlot::Granted)
}

/// Gives back the reservation `id` of `budget`: its login was never sent.
pub(super) fn release(conn: &Connection, budget: &str, id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM logins WHERE budget = ?1 AND id = ?2")?
        .execute((budget, id))?;
    Ok(())
}

/// No slot of `budget` for `hold_ms` from now (read by `clock` once the
/// write lock is had, as in [`reserve`]), keeping a later hold.
pub(super) fn block(
    conn: &mut Connection,
    clock: impl FnOnce() -> i64,
    budget: &str,
    hold_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let until = clock().saturating_add(hold_ms.max(0));
    tx.prepare_cached(
        "INSERT INTO budgets (budget, blocked_until_ms, until_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (budget) DO UPDATE SET
             blocked_until_ms = max(blocked_until_ms, excluded.blocked_until_ms),
             until_ms = max(until_ms, excluded.until_ms)",
    )?
    .execute((budget, until, until.saturating_add(KEEP_MARGIN_MS)))?;
    tx.commit()
}
