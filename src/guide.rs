//! The guide: how the crate behaves and how to run it, one page per topic.
//!
//! These pages hold no code; they are the detail the README links to
//! (`docs/*.md` in the repository, pulled in here so that docs.rs shows them
//! and their examples run as doctests).
//!
//! - [`middleware`]: which requests get a token, other token sources, the
//!   tower layer, and the order of a stack with reqwest-tracing and
//!   reqwest-retry.
//! - [`rejections`]: the 401 rules: a revoked token costs one login, an
//!   endpoint whose 401s a new token does not cure at most one per memory.
//! - [`errors`]: the one [`Error`](crate::Error) type, and finding it inside
//!   a middleware stack's error.
//! - [`configuration`]: environment variables, and every builder method with
//!   its default.
//! - [`intermediaries`]: acting for taxpayers, and the login limit of 12 a
//!   minute per client ID.
//! - [`hosts`]: the processes of one host sharing tokens and one login
//!   budget through a SQLite file, and the `myinvois-auth` command.
//! - [`fleets`]: many processes sharing tokens and one login budget through
//!   Redis, and operating that Redis.
//! - [`behaviour`]: using the cache directly, and how it behaves (one login
//!   in flight, bounded waits, refresh ahead of expiry).
//! - [`security`]: where the secret and tokens may go, and what no text may
//!   contain.
//! - [`observability`]: tracing spans, counters and metrics.
//! - [`features`]: the cargo features, what a build compiles, the MSRV.
//! - [`benchmarks`]: what the benchmarks measure, their targets and results.

#[doc = include_str!("../docs/middleware.md")]
// Links to items of the `retry` and `tower` features resolve when they are
// on (docs.rs builds with every feature).
#[cfg_attr(
    not(all(feature = "retry", feature = "tower")),
    allow(rustdoc::broken_intra_doc_links)
)]
pub mod middleware {}

#[doc = include_str!("../docs/rejections.md")]
pub mod rejections {}

#[doc = include_str!("../docs/errors.md")]
pub mod errors {}

#[doc = include_str!("../docs/configuration.md")]
pub mod configuration {}

#[doc = include_str!("../docs/intermediaries.md")]
pub mod intermediaries {}

#[doc = include_str!("../docs/hosts.md")]
#[cfg_attr(
    not(all(feature = "sqlite", feature = "redis")),
    allow(rustdoc::broken_intra_doc_links)
)]
pub mod hosts {}

#[doc = include_str!("../docs/fleets.md")]
#[cfg_attr(not(feature = "redis"), allow(rustdoc::broken_intra_doc_links))]
pub mod fleets {}

#[doc = include_str!("../docs/behaviour.md")]
pub mod behaviour {}

#[doc = include_str!("../docs/security.md")]
pub mod security {}

#[doc = include_str!("../docs/observability.md")]
#[cfg_attr(not(feature = "metrics"), allow(rustdoc::broken_intra_doc_links))]
pub mod observability {}

#[doc = include_str!("../docs/features.md")]
#[cfg_attr(
    not(all(
        feature = "redis",
        feature = "retry",
        feature = "metrics",
        feature = "tower"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]
pub mod features {}

#[doc = include_str!("../docs/benchmarks.md")]
pub mod benchmarks {}
