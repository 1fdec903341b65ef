//! The store on real files: the statements at chosen times (the budget's
//! rules, clock steps), the file's making, schema and purge, and the
//! store's calls on bad files.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use rusqlite::Connection;

use super::classify::Lasting;
use super::health::Health;
use super::{leases, logins, open, purge, schema, tokens, SqliteTokenStore};
use crate::store::{LoginSlot, SlotRequest, StoreError, StoreErrorKind, StoredToken, TokenStore};

/// A folder of its own under the system's temporary folder, removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Self {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "myinvois-sqlite-{name}-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opened(folder: &Folder) -> Connection {
    open::open(&folder.file("tokens.sqlite3"), schema::MIGRATIONS)
        .map_err(|(e, _)| e)
        .unwrap()
}

fn token(access_token: &str, remaining: Duration) -> StoredToken {
    StoredToken {
        access_token: access_token.into(),
        issued_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::seconds(3600),
        scope: Some("InvoicingAPI".into()),
        remaining,
    }
}

fn slot(id: &str, count: u32, window_ms: u64, pace_ms: Option<u64>) -> SlotRequest {
    SlotRequest {
        count,
        window: Duration::from_millis(window_ms),
        pace: pace_ms.map(Duration::from_millis),
        id: id.into(),
    }
}

const T0: i64 = 1_800_000_000_000;

#[cfg(unix)]
#[test]
fn a_new_file_and_its_companions_are_owner_only_in_wal_mode_and_marked_as_ours() {
    use std::os::unix::fs::PermissionsExt;
    let folder = Folder::new("new");
    let path = folder.0.join("deeper").join("tokens.sqlite3");
    let mut conn = open::open(&path, schema::MIGRATIONS)
        .map_err(|(e, _)| e)
        .unwrap();
    tokens::save(&mut conn, T0, "k", &token("t", Duration::from_secs(60))).unwrap();
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(path.clone()), 0o600);
    assert_eq!(mode(folder.0.join("deeper")), 0o700);
    for companion in ["tokens.sqlite3-wal", "tokens.sqlite3-shm"] {
        assert_eq!(
            mode(folder.0.join("deeper").join(companion)),
            0o600,
            "{companion}"
        );
    }
    let journal: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let auto_vacuum: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "incremental");
    assert_eq!(
        schema::identify(&conn).unwrap(),
        schema::Identity::Ours(schema::MIGRATIONS.len() as i32)
    );
}

#[test]
fn tokens_are_kept_for_their_remaining_time_by_the_hosts_clock() {
    let folder = Folder::new("tokens");
    let mut conn = opened(&folder);
    tokens::save(&mut conn, T0, "k", &token("t1", Duration::from_secs(60))).unwrap();
    let loaded = tokens::load(&mut conn, T0 + 20_000, "k").unwrap();
    let stored = loaded.token.unwrap();
    assert_eq!(stored.access_token, "t1");
    assert_eq!(stored.remaining, Duration::from_secs(40));
    assert_eq!(stored.scope.as_deref(), Some("InvoicingAPI"));
    assert_eq!(loaded.locked, None);
    assert_eq!(
        tokens::load(&mut conn, T0 + 60_000, "k").unwrap().token,
        None
    );
    // Saved "in the future": the clock went back since; not trusted.
    tokens::save(
        &mut conn,
        T0 + 600_000,
        "k",
        &token("t2", Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(tokens::load(&mut conn, T0, "k").unwrap().token, None);
    // Nothing is kept for a token with no time left.
    tokens::save(&mut conn, T0, "z", &token("t3", Duration::ZERO)).unwrap();
    assert_eq!(tokens::load(&mut conn, T0, "z").unwrap().token, None);
}

#[test]
fn leases_belong_to_their_owner_expire_and_survive_no_clock_step() {
    let folder = Folder::new("leases");
    let mut conn = opened(&folder);
    let ttl = Duration::from_secs(25);
    assert!(leases::try_lock(&mut conn, || T0, "k", "a", ttl).unwrap());
    assert!(!leases::try_lock(&mut conn, || T0 + 1, "k", "b", ttl).unwrap());
    leases::unlock(&conn, "k", "b").unwrap(); // not b's to end
    assert_eq!(
        leases::left_in(&conn, T0 + 5_000, "k").unwrap(),
        Some(Duration::from_secs(20))
    );
    // load says so too, in the same snapshot as the token.
    assert_eq!(
        tokens::load(&mut conn, T0 + 5_000, "k").unwrap().locked,
        Some(Duration::from_secs(20))
    );
    leases::unlock(&conn, "k", "a").unwrap();
    assert_eq!(leases::left_in(&conn, T0 + 5_000, "k").unwrap(), None);
    // A dead holder's lease ends with its time.
    assert!(leases::try_lock(&mut conn, || T0, "k", "dead", ttl).unwrap());
    assert!(leases::try_lock(&mut conn, || T0 + 25_000, "k", "c", ttl).unwrap());
    // A lease taken an hour "ahead" (the clock went back an hour) holds
    // nobody up for that hour.
    assert!(leases::try_lock(&mut conn, || T0 + 3_600_000, "j", "x", ttl).unwrap());
    assert_eq!(leases::left_in(&conn, T0, "j").unwrap(), None);
    assert!(leases::try_lock(&mut conn, || T0, "j", "y", ttl).unwrap());
}

#[test]
fn the_window_grants_count_logins_then_says_when_a_slot_frees() {
    let folder = Folder::new("window");
    let mut conn = opened(&folder);
    for i in 0..3 {
        let at = T0 + i * 100;
        let granted = logins::reserve(
            &mut conn,
            || at,
            "b",
            &slot(&format!("r{i}"), 3, 60_000, None),
        );
        assert_eq!(granted.unwrap(), LoginSlot::Granted);
    }
    // Full, with fresh reservations that may still be given back: ask again soon.
    match logins::reserve(&mut conn, || T0 + 500, "b", &slot("r3", 3, 60_000, None)).unwrap() {
        LoginSlot::Pending { ask_again, wait } => {
            assert_eq!(ask_again, Duration::from_millis(100));
            assert_eq!(wait, Duration::from_millis(59_500));
        }
        other => panic!("{other:?}"),
    }
    // Later, only the oldest leaving the window frees a slot.
    assert_eq!(
        logins::reserve(&mut conn, || T0 + 30_000, "b", &slot("r3", 3, 60_000, None)).unwrap(),
        LoginSlot::Wait(Duration::from_millis(30_000))
    );
    // Another budget is another window.
    assert_eq!(
        logins::reserve(
            &mut conn,
            || T0 + 30_000,
            "other",
            &slot("o", 3, 60_000, None)
        )
        .unwrap(),
        LoginSlot::Granted
    );
    // A reservation given back frees its slot at once.
    logins::release(&conn, "b", "r1").unwrap();
    assert_eq!(
        logins::reserve(&mut conn, || T0 + 30_000, "b", &slot("r4", 3, 60_000, None)).unwrap(),
        LoginSlot::Granted
    );
    // The oldest leaves the window at T0 + 60 s.
    assert_eq!(
        logins::reserve(&mut conn, || T0 + 60_000, "b", &slot("r5", 3, 60_000, None)).unwrap(),
        LoginSlot::Granted
    );
}

#[test]
fn paced_logins_keep_their_pace_and_holds_after_a_429_are_kept() {
    let folder = Folder::new("pace");
    let mut conn = opened(&folder);
    let paced = |id: &str| slot(id, 12, 60_000, Some(5_000));
    assert_eq!(
        logins::reserve(&mut conn, || T0, "b", &paced("p1")).unwrap(),
        LoginSlot::Granted
    );
    assert_eq!(
        logins::reserve(&mut conn, || T0 + 1_000, "b", &paced("p2")).unwrap(),
        LoginSlot::Wait(Duration::from_secs(4))
    );
    // A caller without a token is not paced.
    assert_eq!(
        logins::reserve(&mut conn, || T0 + 1_000, "b", &slot("u", 12, 60_000, None)).unwrap(),
        LoginSlot::Granted
    );
    assert_eq!(
        logins::reserve(&mut conn, || T0 + 5_000, "b", &paced("p2")).unwrap(),
        LoginSlot::Granted
    );
    // A 429: no slot for 30 s; a shorter hold later does not shorten it.
    logins::block(&mut conn, || T0 + 6_000, "b", 30_000).unwrap();
    logins::block(&mut conn, || T0 + 7_000, "b", 1_000).unwrap();
    assert_eq!(
        logins::reserve(&mut conn, || T0 + 16_000, "b", &slot("x", 12, 60_000, None)).unwrap(),
        LoginSlot::Wait(Duration::from_secs(20))
    );
    assert_eq!(
        logins::reserve(&mut conn, || T0 + 36_000, "b", &slot("x", 12, 60_000, None)).unwrap(),
        LoginSlot::Granted
    );
}

#[test]
fn a_clock_step_back_never_holds_the_budget_beyond_its_own_bounds() {
    let folder = Folder::new("clock");
    let mut conn = opened(&folder);
    let day = 24 * 3_600_000;
    // Logins and a pace written a day "ahead": the clock went back a day.
    for i in 0..3 {
        let id = format!("f{i}");
        logins::reserve(
            &mut conn,
            || T0 + day,
            "b",
            &slot(&id, 3, 60_000, Some(5_000)),
        )
        .ok();
    }
    assert_eq!(
        logins::reserve(&mut conn, || T0, "b", &slot("n", 3, 60_000, Some(5_000))).unwrap(),
        LoginSlot::Granted
    );
    // A hold far ahead waits the longest Retry-After at most.
    logins::block(&mut conn, || T0 + day, "h", 60_000).unwrap();
    match logins::reserve(&mut conn, || T0, "h", &slot("n", 3, 60_000, None)).unwrap() {
        LoginSlot::Wait(wait) => assert!(wait <= crate::MAX_RETRY_AFTER, "{wait:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn purge_drops_every_row_that_no_longer_matters_and_gives_the_space_back() {
    let folder = Folder::new("purge");
    let path = folder.file("tokens.sqlite3");
    let mut conn = opened(&folder);
    let long = "x".repeat(2_000);
    for i in 0..2_000 {
        let key = format!("k{i}");
        tokens::save(&mut conn, T0, &key, &token(&long, Duration::from_secs(60))).unwrap();
        leases::try_lock(&mut conn, || T0, &key, "o", Duration::from_secs(25)).unwrap();
        logins::reserve(&mut conn, || T0, &key, &slot("r", 12, 60_000, Some(1))).unwrap();
    }
    tokens::save(
        &mut conn,
        T0,
        "kept",
        &token("t", Duration::from_secs(3600)),
    )
    .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    assert_eq!(
        purge::purge(&mut conn, T0 + 10_000).unwrap(),
        0,
        "nothing expired yet"
    );
    let gone = purge::purge(&mut conn, T0 + 120_000).unwrap();
    assert_eq!(gone, 4 * 2_000, "tokens, leases, logins and budgets");
    assert!(tokens::load(&mut conn, T0 + 120_000, "kept")
        .unwrap()
        .token
        .is_some());
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < full / 10, "{full} bytes, then {after}");
}

#[test]
fn a_newer_version_and_another_applications_database_are_refused_untouched() {
    let folder = Folder::new("schema");
    // Another application's database.
    let foreign = folder.file("foreign.db");
    let other = Connection::open(&foreign).unwrap();
    other
        .execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (7);",
        )
        .unwrap();
    drop(other);
    // A file of this store from a newer crate (one more step).
    let newer = folder.file("newer.sqlite3");
    const NEWER: &[&str] = &[schema::MIGRATIONS[0], "CREATE TABLE later (x);"];
    drop(open::open(&newer, NEWER).map_err(|(e, _)| e).unwrap());
    for path in [foreign, newer] {
        let before = std::fs::read(&path).unwrap();
        let (error, lasting) = open::open(&path, schema::MIGRATIONS).unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Incompatible, "{error}");
        assert_eq!(lasting, Lasting::Yes);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{}: changed",
            path.display()
        );
    }
    let conn = Connection::open(folder.file("foreign.db")).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "delete",
        "another application's journal mode was changed"
    );
}

/// Processes starting together on a new file: one sets it up while the
/// others look at what it is. What they read must be one state of the
/// file, never its `application_id` from before the setup and its tables
/// from after (which reads as another application's database).
#[test]
fn processes_opening_a_new_file_together_all_find_it_theirs() {
    let folder = Folder::new("together");
    for round in 0..60 {
        let path = folder.file(&format!("tokens-{round}.sqlite3"));
        let start = std::sync::Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    open::open(&path, schema::MIGRATIONS).map(drop)
                })
            })
            .collect();
        for opener in openers {
            if let Err((error, lasting)) = opener.join().unwrap() {
                panic!("round {round}: {error} ({lasting:?})");
            }
        }
    }
}

/// A process that opens a file already at this version writes nothing to
/// it: it opens while another process holds the write lock (the command,
/// started while a worker logs in, does not wait for that login's write
/// to read its token).
#[test]
fn opening_a_file_at_this_version_takes_no_write_lock() {
    let folder = Folder::new("current");
    drop(opened(&folder));
    let path = folder.file("tokens.sqlite3");
    let writer = Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let conn = open::open(&path, schema::MIGRATIONS).map_err(|(e, _)| e);
    writer.execute_batch("COMMIT").unwrap();
    let conn = conn.unwrap();
    assert_eq!(
        schema::identify(&conn).unwrap(),
        schema::Identity::Ours(i32::try_from(schema::MIGRATIONS.len()).unwrap())
    );
}

#[test]
fn a_newer_crate_upgrades_an_older_file_and_keeps_its_tokens() {
    let folder = Folder::new("upgrade");
    let path = folder.file("tokens.sqlite3");
    let mut conn = opened(&folder);
    tokens::save(&mut conn, T0, "k", &token("kept", Duration::from_secs(60))).unwrap();
    drop(conn);
    const NEXT: &[&str] = &[
        schema::MIGRATIONS[0],
        "ALTER TABLE tokens ADD COLUMN note TEXT;",
    ];
    let mut conn = open::open(&path, NEXT).map_err(|(e, _)| e).unwrap();
    assert_eq!(schema::identify(&conn).unwrap(), schema::Identity::Ours(2));
    let loaded = tokens::load(&mut conn, T0 + 1, "k").unwrap();
    assert_eq!(loaded.token.unwrap().access_token, "kept");
    conn.execute("UPDATE tokens SET note = 'v2'", []).unwrap();
}

#[test]
fn a_failure_is_told_once_per_episode_then_marked_as_a_repeat() {
    let health = Health::new();
    let corrupt = StoreError::new(StoreErrorKind::Corrupt, "bad");
    health.failed(&corrupt, Lasting::Yes);
    assert!(health.is_skipping());
    let first = health.report(health.skipped().unwrap());
    assert!(!first.is_repeat());
    assert!(health.report(health.skipped().unwrap()).is_repeat());
    // Another failure is another episode: told again.
    let busy = StoreError::new(StoreErrorKind::Timeout, "busy");
    health.failed(&busy, Lasting::Busy);
    assert!(!health.report(busy.clone()).is_repeat());
    health.succeeded();
    assert!(!health.is_skipping());
    assert!(!health.report(corrupt).is_repeat());
    // Busy thrice in a row: skipped.
    let health = Health::new();
    for _ in 0..2 {
        health.failed(&busy, Lasting::Busy);
        assert!(!health.is_skipping());
    }
    health.failed(&busy, Lasting::Busy);
    assert!(health.is_skipping());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_shares_through_the_file_between_two_instances() {
    let folder = Folder::new("store");
    let path = folder.file("tokens.sqlite3");
    let (one, two) = (SqliteTokenStore::new(&path), SqliteTokenStore::new(&path));
    one.check().await.unwrap();
    one.save("k", &token("shared", Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        two.load("k").await.unwrap().token.unwrap().access_token,
        "shared"
    );
    assert!(one
        .try_lock("k", "a", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(!two
        .try_lock("k", "b", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(two.lock_left("k").await.unwrap().is_some());
    one.unlock("k", "a").await.unwrap();
    assert_eq!(two.lock_left("k").await.unwrap(), None);
    let request = slot("r", 1, 60_000, None);
    assert_eq!(
        one.reserve_login("b", &request).await.unwrap(),
        LoginSlot::Granted
    );
    assert!(matches!(
        two.reserve_login("b", &slot("s", 1, 60_000, None))
            .await
            .unwrap(),
        LoginSlot::Pending { .. }
    ));
    two.release_login("b", "r").await.unwrap();
    two.block_logins("b", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(
        one.reserve_login("b", &request).await.unwrap(),
        LoginSlot::Wait(w) if w > Duration::from_secs(29)
    ));
    assert!(one.is_available() && two.is_available());
    assert!(!format!("{one:?}").contains("shared"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_fails_every_call_typed_told_once_and_is_skipped() {
    let folder = Folder::new("bad");
    let garbage = folder.file("garbage.sqlite3");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let store = SqliteTokenStore::new(&garbage);
    let first = store.load("k").await.unwrap_err();
    assert_eq!(first.kind(), StoreErrorKind::Corrupt, "{first}");
    assert!(!first.is_repeat());
    assert!(first.to_string().contains("garbage.sqlite3"), "{first}");
    let again = store.save("k", &token("t", Duration::from_secs(60))).await;
    assert!(again.unwrap_err().is_repeat());
    assert!(!store.is_available());
    // A readiness check says what is wrong without taking the report.
    assert_eq!(
        store.check().await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );

    let directory = SqliteTokenStore::new(&folder.0);
    let error = directory.load("k").await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Unreachable, "{error}");
    assert!(error.to_string().contains("directory"), "{error}");
}

/// Another process holds the file's write lock for a while, then lets go
/// at `released`: what the store writes meanwhile is dated from when it
/// had the lock, not from before its wait (a login counted early leaves
/// the window early, and the identity service sees 13 in a minute; a hold
/// or lease counted early ends early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_waited_for_the_file_is_dated_from_when_it_had_it() {
    use super::clock::now_ms;
    let folder = Folder::new("dated");
    let path = folder.file("tokens.sqlite3");
    let store = SqliteTokenStore::new(&path);
    store.check().await.unwrap();
    // Each of the three writes, after a wait of 300 ms for another writer.
    let held_for = |path: PathBuf| {
        let (taken, was_taken) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let conn = Connection::open(path).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            taken.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let released = now_ms();
            conn.execute_batch("COMMIT").unwrap();
            released
        });
        was_taken.recv().unwrap();
        holder
    };
    let read = |sql: &str| -> i64 {
        Connection::open(&path)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    };

    let holder = held_for(path.clone());
    let granted = store
        .reserve_login("b", &slot("late", 12, 60_000, None))
        .await
        .unwrap();
    let released = holder.join().unwrap();
    assert_eq!(granted, LoginSlot::Granted);
    let at = read("SELECT at_ms FROM logins WHERE id = 'late'");
    assert!(
        at >= released,
        "the login was counted {} ms before it had the file",
        released - at
    );

    let holder = held_for(path.clone());
    assert!(store
        .try_lock("k", "late", Duration::from_secs(25))
        .await
        .unwrap());
    let released = holder.join().unwrap();
    let taken = read("SELECT taken_ms FROM leases WHERE owner = 'late'");
    assert!(
        taken >= released,
        "the lease was dated {} ms early",
        released - taken
    );

    let holder = held_for(path.clone());
    store
        .block_logins("held", Duration::from_secs(30))
        .await
        .unwrap();
    let released = holder.join().unwrap();
    let until = read("SELECT blocked_until_ms FROM budgets WHERE length(budget) > 0 AND blocked_until_ms > 0 ORDER BY blocked_until_ms DESC LIMIT 1");
    assert!(
        until >= released + 30_000,
        "the hold ends {} ms early",
        released + 30_000 - until
    );
}

/// The first write of a process purges old rows: its caller has the
/// answer before that purge, which may take long (here: 100,000 expired
/// rows; another process writing would make it wait for the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_answered_before_the_purge_it_brings_on() {
    let folder = Folder::new("purge-after");
    let path = folder.file("tokens.sqlite3");
    let mut conn = opened(&folder);
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO tokens (key, access_token, issued_at_ms, expires_at_ms, saved_ms, until_ms)
                 VALUES (?1, 'old', 0, 1, 0, 1)",
            )
            .unwrap();
        for i in 0..100_000 {
            insert.execute([format!("old-{i}")]).unwrap();
        }
    }
    tx.commit().unwrap();
    // A new store's first write is due to purge.
    let store = SqliteTokenStore::new(&path);
    store
        .save("k", &token("new", Duration::from_secs(60)))
        .await
        .unwrap();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM tokens WHERE until_ms <= 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        left > 0,
        "the write was answered only once the purge was done"
    );
}
