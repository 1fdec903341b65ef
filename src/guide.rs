//! The guide: how the crate behaves and how to run it, one page per topic.
//!
//! These pages hold no code; they are the detail the README links to
//! (`docs/*.md` in the repository, pulled in here so that docs.rs shows them
//! and their examples run as doctests).
//!
//! - [`benchmarks`]: what the benchmarks measure, their targets and results.

#[doc = include_str!("../docs/benchmarks.md")]
pub mod benchmarks {}
