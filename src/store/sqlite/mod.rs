//! [`SqliteTokenStore`]: tokens, logins and the login budget shared by the
//! processes of one host through one SQLite database file.
//!
//! The store's thread owns the connection (`worker`) and keeps its health
//! (`health`: one report per failure, skipping a bad file for a while);
//! opening the file is `open`, what makes a file this store's and how it
//! is upgraded `schema`, what a failure means `classify`, the clock
//! `clock`. The statements: shared tokens in `tokens`, login leases in
//! `leases`, the login budget in `logins`, old rows in `purge`.

mod classify;
mod clock;
mod health;
mod leases;
mod logins;
mod open;
mod purge;
mod schema;
mod store;
mod tokens;
mod worker;

#[cfg(test)]
mod tests;

pub use store::SqliteTokenStore;
