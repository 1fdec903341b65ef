//! The token cache: [`TokenCache`], the table of its taxpayer entries, and
//! what those entries share.
//!
//! - `token_cache`: the [`TokenCache`] handle and everything it offers;
//! - `source`: the cache as a [`TokenSource`](crate::TokenSource);
//! - `build`: where a cache is built (`TokenCacheBuilder::build`,
//!   `TokenCache::from_env`);
//! - `table`: the table of taxpayer entries (lock-free lookups, sampled LRU
//!   eviction);
//! - `context`: what every entry of one cache shares, with the one guarded
//!   token-store call;
//! - `pacer`: how often a process asks the token store while it waits;
//! - `entry`: one entry, its login and its lock in the token store;
//! - `report`: what the sweep reports through the `metrics` facade
//!   (feature `metrics`): entries held, time left on served tokens.

mod build;
mod context;
mod entry;
mod pacer;
#[cfg(feature = "metrics")]
mod report;
mod source;
mod table;
mod token_cache;

pub use self::token_cache::TokenCache;
