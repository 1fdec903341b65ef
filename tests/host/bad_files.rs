//! Each bad file the issue names: a worker process on it gets the typed
//! error, counted once in `stats()` under its kind, with one warning
//! naming that kind; every call is still served (by logins, from memory);
//! no panic; and nothing is written into a file that is not the store's.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{is_root, reports, Folder, Report, Service, Worker};

/// Fills `file` with the tokens of the case's 3 taxpayers, through a
/// worker process, and folds its write-ahead log back into the file (as
/// the last connection to close does), so that the damage done next hits
/// the tokens.
async fn filled(file: &Path) {
    let (server, _service) = Service::start().await;
    let report = reports(
        Worker::new("taxpayers", &server, file)
            .var("HOST_TAXPAYERS", 3)
            .spawn(1),
    );
    assert_eq!(report[0].number("logins"), 3);
    let conn = rusqlite::Connection::open(file).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(conn);
    assert!(
        !file.with_extension("sqlite3-wal").exists(),
        "the WAL was not folded back"
    );
}

/// Runs a worker on `file` asking for 3 taxpayers; checks that all were
/// served by logins, that the store failed with `kind` and nothing else,
/// counted once, and that one warning names it.
async fn served_despite(file: &Path, kind: &str, unprivileged: bool) -> Report {
    let (server, service) = Service::start().await;
    let mut worker = Worker::new("taxpayers", &server, file).var("HOST_TAXPAYERS", 3);
    worker.unprivileged = unprivileged;
    let report = reports(worker.spawn(1)).remove(0);
    let warnings: Vec<&str> = report
        .stderr
        .lines()
        .filter(|l| l.contains("token store unavailable"))
        .collect();
    eprintln!("{kind}: {warnings:?}");
    assert_eq!(report.number("ok"), 3, "{}", report.stderr);
    assert_eq!(
        report.number("logins"),
        3,
        "a token from the bad file was served"
    );
    assert_eq!(service.login_times().len(), 3);
    assert_eq!(report.number(kind), 1, "{}", report.stderr);
    assert_eq!(report.number("store_errors"), 1, "{}", report.stderr);
    assert_eq!(warnings.len(), 1, "{}", report.stderr);
    assert!(
        warnings[0].contains(&format!("kind={kind}")),
        "{}",
        warnings[0]
    );
    assert!(!report.stderr.contains("panicked"), "{}", report.stderr);
    assert_eq!(
        report.get("available"),
        "false",
        "the bad file is not skipped"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_is_corrupt() {
    let folder = Folder::new("damaged");
    let file = folder.file("tokens.sqlite3");
    filled(&file).await;
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 4096, "{} bytes", bytes.len());
    // The header stays; every page after the first is overwritten.
    for byte in &mut bytes[4096..] {
        *byte = 0x5a;
    }
    std::fs::write(&file, bytes).unwrap();
    served_despite(&file, "corrupt", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_corrupt() {
    let folder = Folder::new("truncated");
    let file = folder.file("tokens.sqlite3");
    filled(&file).await;
    let size = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    served_despite(&file, "corrupt", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_no_database_is_corrupt_and_left_as_it_was() {
    let folder = Folder::new("text");
    let file = folder.file("tokens.sqlite3");
    let text = "these are someone's notes, not a database\n".repeat(200);
    std::fs::write(&file, &text).unwrap();
    served_despite(&file, "corrupt", false).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_unreachable() {
    let folder = Folder::new("directory");
    let file = folder.file("tokens.sqlite3");
    std::fs::create_dir(&file).unwrap();
    let report = served_despite(&file, "unreachable", false).await;
    assert!(report.stderr.contains("directory"), "{}", report.stderr);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_file_is_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let folder = Folder::new("read-only");
    let file = folder.file("tokens.sqlite3");
    filled(&file).await;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
    if is_root() {
        // Root writes whatever the mode: the worker runs without that power.
        let setpriv = Command::new("setpriv").arg("--version").output();
        assert!(
            setpriv.is_ok_and(|o| o.status.success()),
            "setpriv (util-linux) is needed to run this test as root"
        );
    }
    let before = std::fs::read(&file).unwrap();
    served_despite(&file, "read_only", true).await;
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_applications_database_is_incompatible_and_left_untouched() {
    let folder = Folder::new("foreign");
    let file = folder.file("tokens.sqlite3");
    let other = rusqlite::Connection::open(&file).unwrap();
    other
        .execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total TEXT);
             INSERT INTO invoices VALUES (1, '100.00');",
        )
        .unwrap();
    drop(other);
    let before = std::fs::read(&file).unwrap();
    let report = served_despite(&file, "incompatible", false).await;
    assert!(
        report.stderr.contains("another application"),
        "{}",
        report.stderr
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the other database changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_versions_file_is_incompatible_and_left_untouched() {
    let folder = Folder::new("newer");
    let file = folder.file("tokens.sqlite3");
    filled(&file).await;
    let newer = rusqlite::Connection::open(&file).unwrap();
    newer.pragma_update(None, "user_version", 99).unwrap();
    drop(newer);
    let before = std::fs::read(&file).unwrap();
    let report = served_despite(&file, "incompatible", false).await;
    assert!(report.stderr.contains("newer"), "{}", report.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_locked_by_another_program_times_out() {
    let folder = Folder::new("locked");
    let file = folder.file("tokens.sqlite3");
    filled(&file).await;
    // Another program (this binary, as `lock_file`) holds it locked.
    let (server, _) = Service::start().await;
    let mut locker = Worker::new("lock_file", &server, &file).spawn(1).remove(0);
    let said = BufReader::new(locker.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("HOST "));
    assert_eq!(said.as_deref(), Some("HOST locked=1"));
    let report = served_despite(&file, "timeout", false).await;
    assert!(report.stderr.contains("locked"), "{}", report.stderr);
    let _ = locker.kill();
    let _ = locker.wait();
}

/// The `lock_file` worker: takes the file's locks as another program
/// would (exclusive locking mode, a write transaction), says so, and
/// holds them until killed.
pub(super) fn hold_the_file_locked(file: &Path) {
    let conn = rusqlite::Connection::open(file).unwrap();
    conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let _: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    println!("HOST locked=1");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
    drop(conn);
}
