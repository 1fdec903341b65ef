//! The `myinvois-auth` command, run as a process (the binary cargo built
//! for these tests) against identity stand-ins over HTTP in this process,
//! on a real token store file. No test passes the secret as an argument;
//! each one checks that it appears in no output.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_myinvois-auth");
const CLIENT_ID: &str = "erp-cli";
/// Distinctive, so that any output can be searched for it.
const SECRET: &str = "CLISECRET-5eb63bbbe01eeed0";
const OWN_TIN: &str = "C20000000000";

/// How the stand-in answers logins.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Tokens for the right client ID and secret; `invalid_client` otherwise;
    /// `invalid_grant` for taxpayers that have not authorised it.
    Issue,
    /// 403, as for credentials of the other environment.
    Forbidden,
    /// 429 with Retry-After.
    RateLimited,
    /// 503.
    Down,
}

#[derive(Clone)]
struct Identity {
    mode: Arc<Mutex<Mode>>,
    logins: Arc<Mutex<Vec<Option<String>>>>,
    delay: Arc<Mutex<Duration>>,
}

/// Taxpayers that have not authorised the intermediary.
const UNAUTHORISED: &str = "C99999999999";

impl Respond for Identity {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let taxpayer = request
            .headers
            .get("onbehalfof")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let n = {
            let mut logins = self.logins.lock().unwrap();
            logins.push(taxpayer.clone());
            logins.len()
        };
        let delay = *self.delay.lock().unwrap();
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let answer = match *self.mode.lock().unwrap() {
            Mode::Forbidden => ResponseTemplate::new(403),
            Mode::RateLimited => ResponseTemplate::new(429).insert_header("retry-after", "40"),
            Mode::Down => ResponseTemplate::new(503),
            Mode::Issue
                if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                    || form.get("client_secret").map(String::as_str) != Some(SECRET) =>
            {
                ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_client"}))
            }
            Mode::Issue if taxpayer.as_deref() == Some(UNAUTHORISED) => {
                ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"}))
            }
            Mode::Issue => {
                let tin = taxpayer.clone().unwrap_or_else(|| OWN_TIN.to_owned());
                let claims = json!({
                    "TaxpayerTIN": tin,
                    "name": format!("Taxpayer {tin} Sdn Bhd"),
                    "IsIntermediary": if taxpayer.is_some() { "1" } else { "0" },
                    "IntermedTIN": if taxpayer.is_some() { OWN_TIN } else { "" },
                    "client_id": CLIENT_ID,
                });
                let token = format!(
                    "{}.{}.TOKENSIG-{n}",
                    URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                );
                ResponseTemplate::new(200).set_body_json(json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "scope": "InvoicingAPI",
                }))
            }
        };
        answer.set_delay(delay)
    }
}

impl Identity {
    async fn start(mode: Mode) -> (MockServer, Self) {
        let identity = Identity {
            mode: Arc::new(Mutex::new(mode)),
            logins: Arc::default(),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
        };
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/connect/token"))
            .respond_with(identity.clone())
            .mount(&server)
            .await;
        (server, identity)
    }

    fn logins(&self) -> usize {
        self.logins.lock().unwrap().len()
    }
}

/// A folder of its own, removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Self {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "myinvois-cli-{name}-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    fn store(&self) -> PathBuf {
        self.0.join("tokens.sqlite3")
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The command, configured by the environment alone (nothing inherited).
fn command(identity: &str, store: &PathBuf, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("MYINVOIS_CLIENT_ID", CLIENT_ID)
        .env("MYINVOIS_CLIENT_SECRET", SECRET)
        .env("MYINVOIS_ENVIRONMENT", "sandbox")
        .env("MYINVOIS_IDENTITY_URL", identity)
        .env("MYINVOIS_TOKEN_STORE", store)
        .stdin(Stdio::null());
    command
}

/// Runs it; checks that the secret is in neither output.
fn run(mut command: Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    );
    assert!(!stdout.contains(SECRET), "the secret on stdout: {stdout}");
    assert!(!stderr.contains(SECRET), "the secret on stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (status.code().unwrap_or(-1), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_token_calls_make_one_login_and_print_only_the_token() {
    let folder = Folder::new("hundred");
    let (server, identity) = Identity::start(Mode::Issue).await;
    let mut tokens = Vec::new();
    let mut times = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let (code, stdout, stderr) = run(command(&server.uri(), &folder.store(), &["token"]));
        times.push(started.elapsed());
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stderr, "", "a cached token logs nothing");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "only the token: {stdout:?}");
        assert!(lines[0].contains(".TOKENSIG-"), "{stdout}");
        tokens.push(lines[0].to_owned());
    }
    times.sort();
    eprintln!(
        "100 `token` calls: {} login(s); wall time median {:?}, slowest {:?} (the first logs in)",
        identity.logins(),
        times[50],
        times[99]
    );
    assert_eq!(identity.logins(), 1);
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "one token for all 100 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_shown_and_the_token_never() {
    let folder = Folder::new("claims");
    let (server, identity) = Identity::start(Mode::Issue).await;
    let (code, token, _) = run(command(
        &server.uri(),
        &folder.store(),
        &["token", "--on-behalf-of", "C10000000001"],
    ));
    assert_eq!(code, 0);
    let (code, stdout, stderr) = run(command(
        &server.uri(),
        &folder.store(),
        &["claims", "--on-behalf-of", "C10000000001"],
    ));
    assert_eq!(code, 0, "{stderr}");
    let claims: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(claims["TaxpayerTIN"], "C10000000001");
    assert_eq!(claims["IntermedTIN"], OWN_TIN);
    let signature = token.trim().rsplit('.').next().unwrap();
    assert!(
        !stdout.contains(token.trim()) && !stdout.contains(signature),
        "{stdout}"
    );
    assert_eq!(identity.logins(), 1, "claims used the stored token");
}

/// What `check` printed, and its exit code, against a stand-in in `mode`.
async fn check(mode: Mode, args: &[&str], identity_url: Option<&str>) -> (i32, String, String) {
    let folder = Folder::new("check");
    let (server, _identity) = Identity::start(mode).await;
    let url = identity_url.map_or(server.uri(), str::to_owned);
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    run(command(&url, &folder.store(), &all))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_what_the_credentials_are() {
    let (code, stdout, stderr) = check(Mode::Issue, &[], None).await;
    eprintln!("{stdout}");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("environment:  sandbox (http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("client ID:    {CLIENT_ID}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "taxpayer:     {OWN_TIN} (Taxpayer {OWN_TIN} Sdn Bhd)"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("scope:        InvoicingAPI"), "{stdout}");
    assert!(stdout.contains("expires:      20"), "{stdout}");
    assert!(
        stdout.contains("(in 59 min)") || stdout.contains("(in 60 min)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("TOKENSIG"),
        "the token was printed: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_logs_in_even_with_a_stored_token() {
    let folder = Folder::new("fresh");
    let (server, identity) = Identity::start(Mode::Issue).await;
    assert_eq!(
        run(command(&server.uri(), &folder.store(), &["token"])).0,
        0
    );
    let (code, _, stderr) = run(command(&server.uri(), &folder.store(), &["check"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(identity.logins(), 2, "check trusted a stored token");
    // Its token is saved: the next `token` needs no login.
    let (_, after, _) = run(command(&server.uri(), &folder.store(), &["token"]));
    assert!(after.contains("TOKENSIG-2"), "{after}");
    assert_eq!(identity.logins(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_explains_each_failure_and_exits_with_its_code() {
    // A port that refuses connections: bound, never listening.
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead_url = format!("http://127.0.0.1:{}", dead.local_addr().unwrap().port());
    struct Case<'a> {
        what: &'a str,
        mode: Mode,
        args: &'a [&'a str],
        url: Option<&'a str>,
        code: i32,
        says: &'a str,
    }
    let case = |what, mode, args, code, says| Case {
        what,
        mode,
        args,
        url: None,
        code,
        says,
    };
    let cases = [
        case(
            "a wrong client ID",
            Mode::Issue,
            &["--client-id", "someone-else"],
            4,
            "invalid_client",
        ),
        case(
            "the other environment",
            Mode::Forbidden,
            &[],
            5,
            "other environment",
        ),
        case(
            "an unauthorised taxpayer",
            Mode::Issue,
            &["--on-behalf-of", UNAUTHORISED],
            6,
            "has not authorised this intermediary",
        ),
        case(
            "the login limit",
            Mode::RateLimited,
            &[],
            7,
            "try again in 40 s",
        ),
        case("a failing service", Mode::Down, &[], 8, "HTTP 503"),
        Case {
            url: Some(&dead_url),
            ..case(
                "no service at all",
                Mode::Issue,
                &[],
                8,
                "could not get an answer",
            )
        },
    ];
    for Case {
        what,
        mode,
        args,
        url,
        code: expected,
        says,
    } in cases
    {
        let (code, stdout, stderr) = check(mode, args, url).await;
        eprintln!("{what}: exit {code}\n{stderr}");
        assert_eq!(code, expected, "{what}: {stdout}\n{stderr}");
        assert!(stderr.contains(says), "{what}: {stderr}");
        assert!(!stdout.contains("ok:"), "{what}: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_many_taxpayers_shows_progress_and_stops_when_the_credentials_are_refused() {
    let folder = Folder::new("many");
    let (server, identity) = Identity::start(Mode::Issue).await;
    let (code, stdout, stderr) = run(command(
        &server.uri(),
        &folder.store(),
        &[
            "check",
            "--on-behalf-of",
            "C10000000001",
            UNAUTHORISED,
            "C10000000003",
        ],
    ));
    eprintln!("{stderr}");
    assert_eq!(code, 6, "{stdout}\n{stderr}");
    for line in [
        "check: 1/3 C10000000001: logging in",
        "check: 2/3 C99999999999: logging in",
        "check: 3/3 C10000000003: logging in",
        "check: 2 of 3 taxpayers ok",
    ] {
        assert!(stderr.contains(line), "{line}: {stderr}");
    }
    assert_eq!(
        stdout.matches("ok:           the credentials work").count(),
        2
    );
    assert_eq!(identity.logins(), 3);

    // Refused credentials: the taxpayers left would only repeat it.
    let mut wrong = command(
        &server.uri(),
        &folder.store(),
        &[
            "check",
            "--on-behalf-of",
            "C10000000004",
            "C10000000005",
            "C10000000006",
        ],
    );
    wrong.env("MYINVOIS_CLIENT_ID", "someone-else");
    let (code, _, stderr) = run(wrong);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("the 2 taxpayers left are not checked"),
        "{stderr}"
    );
    assert_eq!(
        identity.logins(),
        4,
        "one login spent on refused credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_never_taken_from_nor_seen_in_a_process_argument() {
    let folder = Folder::new("secret");
    let (server, identity) = Identity::start(Mode::Issue).await;
    // Given as an argument anyway: refused, and not echoed.
    for args in [
        &["token", "--client-secret", SECRET][..],
        &["token", &format!("--client-secret={SECRET}")],
    ] {
        let mut given = command(&server.uri(), &folder.store(), args);
        given.env_remove("MYINVOIS_CLIENT_SECRET");
        let (code, stdout, stderr) = run(given);
        assert_eq!(code, 2, "{stdout}{stderr}");
        assert!(stderr.contains("MYINVOIS_CLIENT_SECRET"), "{stderr}");
    }
    assert_eq!(identity.logins(), 0);

    // From a file, and while the command is logging in, no process on
    // the host has the secret in its arguments.
    let secret_file = folder.0.join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    *identity.delay.lock().unwrap() = Duration::from_millis(1500);
    let mut from_file = command(&server.uri(), &folder.store(), &["token"]);
    from_file
        .env_remove("MYINVOIS_CLIENT_SECRET")
        .env("MYINVOIS_CLIENT_SECRET_FILE", &secret_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = from_file.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while identity.logins() == 0 {
        assert!(Instant::now() < deadline, "no login");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(arguments) = std::fs::read(entry.path().join("cmdline")) {
            seen += 1;
            let arguments = String::from_utf8_lossy(&arguments);
            assert!(!arguments.contains(SECRET), "the secret in {arguments}");
        }
    }
    assert!(seen > 1, "no process seen");
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("TOKENSIG-1") && !stdout.contains(SECRET));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_setting_is_a_configuration_error_naming_it() {
    let folder = Folder::new("config");
    let (server, identity) = Identity::start(Mode::Issue).await;
    let mut missing = command(&server.uri(), &folder.store(), &["token"]);
    missing.env_remove("MYINVOIS_ENVIRONMENT");
    let (code, _, stderr) = run(missing);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("MYINVOIS_ENVIRONMENT") && stderr.contains("--environment"),
        "{stderr}"
    );
    let (code, _, stderr) = run(command(
        "http://identity.example.com",
        &folder.store(),
        &["token"],
    ));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("plain http"), "{stderr}");
    let (code, _, stderr) = run(command(
        &server.uri(),
        &folder.store(),
        &["token", "--on-behalf-of", "not a TIN"],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(identity.logins(), 0);
}

/// A reader that went away before the command wrote (`… | head -n 0`, a
/// caller that closed its pipe): the command exits with its own code, and
/// never with a panic's 101. `token` and `claims` cannot hand over what
/// they are for: a failure (1), said on stderr; `check` finishes its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_output_pipe_is_no_panic() {
    let folder = Folder::new("closed-pipe");
    let (server, _identity) = Identity::start(Mode::Issue).await;
    for (args, expected) in [
        (
            &["check", "--on-behalf-of", "C10000000001", "C10000000002"][..],
            0,
        ),
        (&["token"], 1),
        (&["claims"], 1),
    ] {
        let mut child = command(&server.uri(), &folder.store(), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the command writes anything.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains(SECRET), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(expected), "{args:?}: {stderr}");
    }
}
