//! [`StoreError`]: a token store call that failed, and what kind of failure
//! it was, so that health can be counted and warnings can name the cause.

use std::fmt;

/// What kind of failure a token store call had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached (connection refused or dropped, DNS),
    /// or is skipped for a while after repeated failures.
    Unreachable,
    /// The store did not answer in time.
    Timeout,
    /// Authentication or permission refused (`WRONGPASS`, `NOAUTH`,
    /// `NOPERM`: check the user and its ACL; a database file this user may
    /// not open).
    Auth,
    /// The TLS handshake failed (an unknown CA, a bad certificate, no
    /// rustls crypto provider).
    Tls,
    /// The store refuses writes: a read-only Redis replica (`READONLY`: a
    /// failover happened), or a database file (or its folder) this process
    /// may read but not write.
    ReadOnly,
    /// A script failed (`NOSCRIPT`, a Lua error).
    Script,
    /// The store's data cannot be read: a database file that is damaged,
    /// truncated, or not a database at all.
    Corrupt,
    /// The store holds data this version cannot use: another application's
    /// database, or one written by a newer version of this crate.
    Incompatible,
    /// Anything else (an unexpected answer, a value not in the expected form).
    Other,
}

impl StoreErrorKind {
    /// Every kind, in a fixed order (for counters).
    pub(crate) const ALL: [StoreErrorKind; 9] = [
        StoreErrorKind::Unreachable,
        StoreErrorKind::Timeout,
        StoreErrorKind::Auth,
        StoreErrorKind::Tls,
        StoreErrorKind::ReadOnly,
        StoreErrorKind::Script,
        StoreErrorKind::Corrupt,
        StoreErrorKind::Incompatible,
        StoreErrorKind::Other,
    ];

    pub(crate) fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(Self::ALL.len() - 1)
    }

    /// A short name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Unreachable => "unreachable",
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Auth => "auth",
            StoreErrorKind::Tls => "tls",
            StoreErrorKind::ReadOnly => "read_only",
            StoreErrorKind::Script => "script",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::Incompatible => "incompatible",
            StoreErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token store call failed or could not be made. The cache then goes on
/// as a single process would, counting the failure by its
/// [`kind`](Self::kind) and logging it; it never reaches an API caller.
/// The message never holds a secret (a password, a token).
///
/// ```
/// use myinvois_auth::{StoreError, StoreErrorKind};
/// let err = StoreError::new(StoreErrorKind::ReadOnly, "READONLY: the node is a replica");
/// assert_eq!(err.kind(), StoreErrorKind::ReadOnly);
/// assert_eq!(err.to_string(), "token store (read_only): READONLY: the node is a replica");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("token store ({kind}): {message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    /// A call skipped while the store is skipped, after the first skipped
    /// call of that period was reported: not counted nor logged again.
    repeat: bool,
}

impl StoreError {
    /// A failure of `kind`, described by `message` (which must not hold a secret).
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            repeat: false,
        }
    }

    /// Marks a call skipped while the store is skipped, once the period's
    /// first skipped call was reported.
    #[cfg(any(feature = "redis", feature = "sqlite"))]
    pub(crate) fn repeated(mut self) -> Self {
        self.repeat = true;
        self
    }

    /// The same failure, its message preceded by `context` (what failed: a
    /// file's path).
    #[cfg(feature = "sqlite")]
    pub(crate) fn with_context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Whether the cache already counted this failure's period.
    pub(crate) fn is_repeat(&self) -> bool {
        self.repeat
    }

    /// A failure of no particular kind.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Other, message)
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}
