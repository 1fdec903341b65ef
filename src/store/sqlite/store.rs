//! [`SqliteTokenStore`]: the token store contract on one database file,
//! shared by every process of the host that opens it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::clock::{ms, now_ms};
use super::worker::{Access, Worker};
use super::{leases, logins, schema, tokens};
use crate::store::{Loaded, LoginSlot, SlotRequest, StoreError, StoredToken, TokenStore};

/// Shares tokens, logins and the login budget among the processes of one
/// host through one SQLite database file (cargo feature `sqlite`; SQLite
/// is built in, nothing to install).
///
/// Every process that opens the same file (web workers, a job runner
/// beside an API server, scheduled jobs, the `myinvois-auth` command)
/// shares one token per taxpayer, makes one login at a time per taxpayer,
/// and keeps with the others to the client ID's login budget. A process
/// that starts on a file holding valid tokens serves them without a login:
/// a restart costs no logins.
///
/// - **What is kept**: each entry's token (with its issue and expiry
///   times and scope) until it expires, a lease while a process logs in
///   for it, the login times of the budget's window and any hold after a
///   429. Never the client secret. Keys are SHA-256 hashes: no client ID,
///   URL or taxpayer is written in clear. The file is created owner-only
///   (mode 0600, its folder 0700 when the store makes it).
/// - **Time**: the host's wall clock, which all its processes share; a
///   token is kept for the `remaining` time the saving process gave it.
///   A clock step back leaves no lease nor hold longer than its own time.
/// - **No I/O on the runtime**: every SQLite call runs on the store's own
///   thread; a caller waits 1 s at most (a busy file: 0.5 s), and the
///   cache's hot path never reaches the store.
/// - **Bad files** (damaged, truncated, a directory, read-only, another
///   application's database, a newer version's, held locked by another
///   program): each call fails with a [`StoreError`] of its
///   [`kind`](StoreError::kind) (`Corrupt`, `Unreachable`, `ReadOnly`,
///   `Incompatible`, `Timeout`, …), reported once (the cache counts it in
///   [`stats`](crate::TokenCache::stats) and logs one warning naming it);
///   the file is then skipped for 5 s at a time and the cache goes on
///   from memory, as it does while Redis is down. Never a panic, never a
///   token from a damaged file.
/// - **Schema**: a newer crate upgrades an older file; an older one meeting
///   a newer file refuses it (`Incompatible`) and leaves it untouched.
/// - **Size**: expired rows are purged after writes, once a minute at most.
/// - **Tests with tokio's paused clock** (`start_paused`): use a
///   [`MemoryTokenStore`](crate::MemoryTokenStore). While the runtime waits
///   for the store's thread it looks idle, so a paused clock jumps ahead
///   and every call times out.
///
/// ```no_run
/// use std::sync::Arc;
/// use myinvois_auth::{Credentials, Environment, SqliteTokenStore, TokenCache};
/// let store = SqliteTokenStore::new("/var/lib/erp/myinvois-tokens.sqlite3");
/// let cache = TokenCache::builder(Credentials::new("client-id", "client-secret"))
///     .environment(Environment::Production)
///     .token_store(Arc::new(store))
///     .build()?;
/// # Ok::<(), myinvois_auth::Error>(())
/// ```
pub struct SqliteTokenStore {
    path: PathBuf,
    worker: Worker,
}

impl SqliteTokenStore {
    /// A store on the file at `path`, created (with its folder) if
    /// missing. Starts the store's thread, which opens the file at once;
    /// a file that cannot be used is reported by the calls (and by
    /// [`check`](TokenStore::check)), never here.
    ///
    /// ```
    /// use myinvois_auth::{SqliteTokenStore, TokenStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let folder = std::env::temp_dir().join(format!("myinvois-doc-{}", std::process::id()));
    /// let store = SqliteTokenStore::new(folder.join("tokens.sqlite3"));
    /// store.check().await?; // makes the file, and runs every statement the store uses
    /// assert!(store.path().exists());
    /// # drop(store);
    /// # std::fs::remove_dir_all(folder)?;
    /// # Ok(()) }
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_migrations(path.into(), schema::MIGRATIONS)
    }

    pub(super) fn with_migrations(path: PathBuf, migrations: &'static [&'static str]) -> Self {
        SqliteTokenStore {
            worker: Worker::start(path.clone(), migrations),
            path,
        }
    }

    /// A store on [`default_path`](Self::default_path), the file the
    /// `myinvois-auth` command uses unless told otherwise: programs of
    /// one user on one host share tokens with it there. `None` when the
    /// user has no cache folder (no home directory).
    ///
    /// ```no_run
    /// let store = myinvois_auth::SqliteTokenStore::at_default_path().expect("a home directory");
    /// # let _ = store;
    /// ```
    pub fn at_default_path() -> Option<Self> {
        Self::default_path().map(Self::new)
    }

    /// `myinvois-auth/tokens.sqlite3` in the user's cache folder:
    /// `$XDG_CACHE_HOME` or `~/.cache` on Linux and other Unix systems,
    /// `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows.
    ///
    /// ```
    /// if let Some(path) = myinvois_auth::SqliteTokenStore::default_path() {
    ///     assert!(path.ends_with("myinvois-auth/tokens.sqlite3"));
    /// }
    /// ```
    pub fn default_path() -> Option<PathBuf> {
        cache_folder().map(|folder| folder.join("myinvois-auth").join("tokens.sqlite3"))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The user's cache folder, as the platform names it.
fn cache_folder() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if cfg!(windows) {
        return absolute("LOCALAPPDATA");
    }
    let home = absolute("HOME");
    if cfg!(target_os = "macos") {
        return home.map(|home| home.join("Library").join("Caches"));
    }
    absolute("XDG_CACHE_HOME").or_else(|| home.map(|home| home.join(".cache")))
}

impl fmt::Debug for SqliteTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTokenStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenStore for SqliteTokenStore {
    async fn load(&self, key: &str) -> Result<Loaded, StoreError> {
        let key = key.to_owned();
        self.worker
            .call(Access::Read, move |conn, now| tokens::load(conn, now, &key))
            .await
    }

    /// One read of the lease: a waiting process's poll.
    async fn lock_left(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let key = key.to_owned();
        self.worker
            .call(Access::Read, move |conn, now| {
                leases::left_in(conn, now, &key)
            })
            .await
    }

    async fn save(&self, key: &str, token: &StoredToken) -> Result<(), StoreError> {
        let (key, token) = (key.to_owned(), token.clone());
        self.worker
            .call(Access::Write, move |conn, now| {
                tokens::save(conn, now, &key, &token)
            })
            .await
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.worker
            .call(Access::Write, move |conn, _| {
                leases::try_lock(conn, now_ms, &key, &owner, ttl)
            })
            .await
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.worker
            .call(Access::Write, move |conn, _| {
                leases::unlock(conn, &key, &owner)
            })
            .await
    }

    async fn reserve_login(
        &self,
        budget: &str,
        request: &SlotRequest,
    ) -> Result<LoginSlot, StoreError> {
        let (budget, request) = (budget.to_owned(), request.clone());
        self.worker
            .call(Access::Write, move |conn, _| {
                logins::reserve(conn, now_ms, &budget, &request)
            })
            .await
    }

    async fn release_login(&self, budget: &str, id: &str) -> Result<(), StoreError> {
        let (budget, id) = (budget.to_owned(), id.to_owned());
        self.worker
            .call(Access::Write, move |conn, _| {
                logins::release(conn, &budget, &id)
            })
            .await
    }

    async fn block_logins(&self, budget: &str, duration: Duration) -> Result<(), StoreError> {
        let budget = budget.to_owned();
        let hold = ms(duration);
        self.worker
            .call(Access::Write, move |conn, _| {
                logins::block(conn, now_ms, &budget, hold)
            })
            .await
    }

    fn is_available(&self) -> bool {
        self.worker.is_available()
    }

    /// Opens the file (creating or upgrading it) and runs every statement
    /// the store uses, each branch of the budget's included, on probe rows
    /// of its own that expire within 2 s. Fails with the kind of the first
    /// problem (see the type's docs); does not take the cache's one
    /// warning for it.
    async fn check(&self) -> Result<(), StoreError> {
        let probe = format!("readiness-probe-{}", crate::store::lock_owner());
        self.worker
            .call_unreported(Access::Write, move |conn, now| {
                let short = Duration::from_secs(1);
                tokens::load(conn, now, &probe)?;
                leases::left_in(conn, now, &probe)?;
                let owner = probe.as_str();
                if leases::try_lock(conn, || now, &probe, owner, short)? {
                    leases::unlock(conn, &probe, owner)?;
                }
                // A window of one slot: the first (paced) reservation takes
                // it, the second finds it full.
                let mut request = SlotRequest {
                    count: 1,
                    window: short,
                    pace: Some(Duration::from_millis(1)),
                    id: format!("{probe}-1"),
                };
                logins::reserve(conn, || now, &probe, &request)?;
                request.id = format!("{probe}-2");
                request.pace = None;
                logins::reserve(conn, || now, &probe, &request)?;
                logins::release(conn, &probe, &format!("{probe}-1"))?;
                logins::block(conn, || now, &probe, 1)?;
                Ok(())
            })
            .await
    }
}
