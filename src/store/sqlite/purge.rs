//! Old rows go, so that the file stays small: expired tokens and leases,
//! logins that left every window, budgets with nothing left to hold. Freed
//! pages go back to the file system (the file is made with incremental
//! auto-vacuum).

use rusqlite::{Connection, TransactionBehavior};

/// Deletes every row that no longer matters at `now`; returns how many.
pub(super) fn purge(conn: &mut Connection, now: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut gone = 0;
    for table in ["tokens", "leases", "logins", "budgets"] {
        gone += tx
            .prepare_cached(&format!("DELETE FROM {table} WHERE until_ms <= ?1"))?
            .execute([now])?;
    }
    tx.commit()?;
    if gone > 0 {
        // Gives the freed pages back (outside the transaction): the
        // pragma frees a page a step, so it is stepped to its end.
        let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut steps = vacuum.query([])?;
        while steps.next()?.is_some() {}
    }
    Ok(gone)
}
