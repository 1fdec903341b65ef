//! Real `redis-server` processes for integration tests, on free loopback ports.
//!
//! Synchronous std API (blocking waits are short `std::thread::sleep` polls), so
//! it can be called from `#[tokio::test]`s without touching their runtime.
//! Every process is SIGKILLed and every temp dir removed on drop.
//!
//! * [`Redis`]: one standalone server: plain ([`Redis::start`]), TLS
//!   ([`Redis::start_tls`]), least-privilege ACL user ([`Redis::start_with_user`]),
//!   or any mix through [`Redis::builder`]. `kill` / `restart` (same port) /
//!   `freeze` / `unfreeze`.
//! * [`Sentinel`]: primary + replica + one sentinel; `kill_primary`,
//!   `wait_for_promotion`.
//! * [`Cluster`]: N masters, no replicas, `cluster_state:ok` on every node.
//! * [`Proxy`]: TCP forwarder with `repoint` (new connections only) and added latency.
//! * [`raw`] / [`cmd`] / [`command_stats`] / [`total_commands`] / [`reset_stats`]:
//!   inspection over raw RESP2 on a plain port.
//!
//! `REDIS_SERVER` / `REDIS_CLI` override the binaries (default: from `PATH`).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const HOST: &str = "127.0.0.1";

/// The least-privilege ACL the fleet guide (docs/fleets.md, "Operating
/// Redis for a fleet") gives the store's Redis user, after
/// `ACL SETUSER <user> on >password`: the one source of truth the tests run
/// their ACL users from. A test compares it with the guide's line.
pub const STORE_ACL: &[&str] = &[
    "~myinvois-auth:*",
    "-@all",
    "+evalsha",
    "+script|load",
    "+get",
    "+set",
    "+del",
    "+pttl",
    "+pexpire",
    "+time",
    "+hget",
    "+hset",
    "+zadd",
    "+zrem",
    "+zcard",
    "+zcount",
    "+zrange",
    "+zremrangebyscore",
    "+scan",
];

/// What the fleet guide adds to [`STORE_ACL`] on the data nodes behind Sentinel.
pub const STORE_ACL_SENTINEL: &[&str] = &["+role"];

/// What the fleet guide adds to [`STORE_ACL`] on the nodes of a Cluster.
pub const STORE_ACL_CLUSTER: &[&str] = &["+cluster|slots", "+asking", "+ping"];

/// `ACL SETUSER <user> on ><password>` followed by `rules`, run on the
/// plain server at `port` (as its `default` user); panics on an error.
pub fn acl_setuser(port: u16, user: &str, password: &str, rules: &[&str]) {
    let mut args = vec!["ACL", "SETUSER", user, "reset", "on"];
    let password = format!(">{password}");
    args.push(&password);
    args.extend_from_slice(rules);
    let reply = cmd(port, &args);
    assert!(!reply.is_error(), "{args:?}: {reply}");
}
/// Ports handed out stay below this, so that a cluster bus port (+10000) fits.
const MAX_PORT: u16 = 55000;
const START_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(10);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn cli_bin() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

// ------------------------------------------------------------------ temp dirs

/// A fresh directory under `std::env::temp_dir()`, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "myinvois-redis-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ------------------------------------------------------------------ ports

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((HOST, port)).is_ok()
}

fn pick_port(with_bus: bool) -> u16 {
    for _ in 0..10_000 {
        let port = TcpListener::bind((HOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if !(1024..MAX_PORT).contains(&port) || (with_bus && !bindable(port + 10_000)) {
            continue;
        }
        let mut taken = handed_out().lock().unwrap();
        if taken.contains(&port) || (with_bus && taken.contains(&(port + 10_000))) {
            continue;
        }
        taken.insert(port);
        if with_bus {
            taken.insert(port + 10_000);
        }
        return port;
    }
    panic!("no free loopback port below {MAX_PORT}");
}

/// A free loopback port below 55000, never handed out twice in this process.
/// (Bind-then-drop: another process may still grab it; starts retry on that.)
pub fn free_port() -> u16 {
    pick_port(false)
}

/// Like [`free_port`], and `port + 10000` (the cluster bus port) is free too.
pub fn free_cluster_port() -> u16 {
    pick_port(true)
}

// ------------------------------------------------------------------ RESP

/// A parsed RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Bulk(None) | Reply::Array(None))
    }

    /// Status / error / bulk text, an integer in decimal, `(nil)` for nil.
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => "(nil)".into(),
            Reply::Array(Some(items)) => format!("{items:?}"),
        }
    }

    /// An integer reply, or a bulk/status holding a decimal integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(Some(_)) | Reply::Status(_) => self.text().trim().parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// A flat `[field, value, field, value, ..]` array as a map (SENTINEL replies).
    pub fn as_map(&self) -> HashMap<String, String> {
        let items = self.as_array().unwrap_or(&[]);
        items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].text(), c[1].text()))
            .collect()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Error(e) => write!(f, "(error) {e}"),
            other => f.write_str(&other.text()),
        }
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(r: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<Reply> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    raw.extend_from_slice(&line);
    let body = String::from_utf8_lossy(&line[1..])
        .trim_end_matches(['\r', '\n'])
        .to_string();
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {body:?}"));
    let int = |s: &str| s.parse::<i64>().map_err(|_| bad("bad integer"));
    Ok(match line[0] {
        b'+' => Reply::Status(body),
        b'-' => Reply::Error(body),
        b':' => Reply::Int(int(&body)?),
        b'_' => Reply::Bulk(None),
        b'$' => {
            let len = int(&body)?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; len as usize + 2];
                r.read_exact(&mut buf)?;
                raw.extend_from_slice(&buf);
                buf.truncate(len as usize);
                Reply::Bulk(Some(buf))
            }
        }
        b'*' => {
            let n = int(&body)?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(r, raw)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(bad("unsupported RESP type")),
    })
}

/// One plain-TCP RESP2 connection (for the test's own inspection).
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(port: u16) -> io::Result<Conn> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one command; returns the parsed reply and its exact wire bytes.
    pub fn send(&mut self, args: &[&str]) -> io::Result<(Reply, String)> {
        self.writer.write_all(&encode(args))?;
        let mut raw = Vec::new();
        let reply = read_reply(&mut self.reader, &mut raw)?;
        Ok((reply, String::from_utf8_lossy(&raw).into_owned()))
    }

    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        self.send(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .0
    }

    pub fn raw(&mut self, args: &[&str]) -> String {
        self.send(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .1
    }

    /// `AUTH user pass` on this connection.
    pub fn auth(&mut self, user: &str, pass: &str) -> Reply {
        self.cmd(&["AUTH", user, pass])
    }
}

/// One command on a fresh plain connection; the reply exactly as sent on the
/// wire, e.g. `"+OK\r\n"`, `"$3\r\nbar\r\n"`, `"$-1\r\n"`, `":4999\r\n"`.
pub fn raw(port: u16, args: &[&str]) -> String {
    Conn::open(port)
        .unwrap_or_else(|e| panic!("connect {port}: {e}"))
        .raw(args)
}

/// One command on a fresh plain connection, parsed.
pub fn cmd(port: u16, args: &[&str]) -> Reply {
    Conn::open(port)
        .unwrap_or_else(|e| panic!("connect {port}: {e}"))
        .cmd(args)
}

/// `cmdstat_<name>:calls=N,..` lines of an `INFO commandstats` text as
/// `name -> calls` (subcommands keep their `|`, e.g. `client|setinfo`).
pub fn parse_command_stats(info: &str) -> HashMap<String, u64> {
    info.lines()
        .filter_map(|l| l.trim().strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Calls per command since start (or the last [`reset_stats`]).
pub fn command_stats(port: u16) -> HashMap<String, u64> {
    parse_command_stats(&cmd(port, &["INFO", "commandstats"]).text())
}

/// Commands whose count is the harness's own doing, left out of [`total_commands`].
const HARNESS_COMMANDS: &[&str] = &["info", "config|resetstat"];

fn sum_calls(stats: &HashMap<String, u64>) -> u64 {
    stats
        .iter()
        .filter(|(k, _)| !HARNESS_COMMANDS.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum()
}

/// Sum of all command calls, less `INFO` and `CONFIG RESETSTAT`.
pub fn total_commands(port: u16) -> u64 {
    sum_calls(&command_stats(port))
}

/// `CONFIG RESETSTAT`: zero the command counters.
pub fn reset_stats(port: u16) {
    let r = cmd(port, &["CONFIG", "RESETSTAT"]);
    assert!(!r.is_error(), "CONFIG RESETSTAT on {port}: {r}");
}

fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_string)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------------ TLS material

/// A throwaway CA, a server cert for `127.0.0.1` / `localhost` and a client
/// cert, all signed by that CA, as PEM files in a temp dir.
pub struct TlsFiles {
    dir: TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "myinvois-auth test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let mut server =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.use_authority_key_identifier_extension = true;
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "myinvois-auth test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.use_authority_key_identifier_extension = true;
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();

        let files = TlsFiles {
            dir: TempDir::new("tls"),
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        };
        for (path, pem) in [
            (files.ca_path(), files.ca_pem.clone()),
            (files.server_cert_path(), server_cert.pem()),
            (files.server_key_path(), server_key.serialize_pem()),
            (files.client_cert_path(), files.client_cert_pem.clone()),
            (files.client_key_path(), files.client_key_pem.clone()),
        ] {
            fs::write(path, pem).expect("write PEM");
        }
        files
    }

    pub fn ca_pem(&self) -> &[u8] {
        self.ca_pem.as_bytes()
    }
    pub fn client_cert_pem(&self) -> &[u8] {
        self.client_cert_pem.as_bytes()
    }
    /// PKCS#8 (`BEGIN PRIVATE KEY`), ECDSA P-256.
    pub fn client_key_pem(&self) -> &[u8] {
        self.client_key_pem.as_bytes()
    }
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    pub fn client_cert_path(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }
}

/// `--tls-auth-clients`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `no`: client certs are not asked for.
    No,
    /// `optional`: a client cert is verified if sent, not required.
    Optional,
    /// `yes`: a client cert signed by the CA is required.
    Required,
}

// ------------------------------------------------------------------ Redis

#[derive(Clone)]
struct AclUser {
    name: String,
    password: String,
    rules: Vec<String>,
}

enum Mode {
    Standalone,
    /// `redis-server <conf> --sentinel` monitoring `master_port` as `name`.
    Sentinel {
        name: String,
        master_port: u16,
        written: bool,
    },
}

/// Options for [`Redis`]; `Redis::builder()`.
pub struct RedisBuilder {
    tls: Option<ClientAuth>,
    user: Option<AclUser>,
    args: Vec<String>,
    cluster: bool,
}

impl RedisBuilder {
    /// Serve TLS only (`--port 0 --tls-port P`), with a fresh [`TlsFiles`].
    pub fn tls(mut self, auth: ClientAuth) -> Self {
        self.tls = Some(auth);
        self
    }

    /// Adds ACL user `name` with `password`, allowed only `commands`
    /// (`-@all` then each entry: a bare name `get` becomes `+get`; entries
    /// starting with `+ - @ ~ % &` are taken as ACL rules verbatim). Keys are
    /// `~*` unless a `~`/`%` rule is given. `default` stays `nopass` so the
    /// harness's own inspection keeps working.
    pub fn user(mut self, name: &str, password: &str, commands: &[&str]) -> Self {
        let mut rules = vec![
            "on".to_string(),
            format!(">{password}"),
            "resetchannels".into(),
        ];
        if !commands
            .iter()
            .any(|c| c.starts_with('~') || c.starts_with('%'))
        {
            rules.push("~*".into());
        }
        rules.push("-@all".into());
        for c in commands {
            let c = c.trim();
            if c.starts_with(|ch: char| ch.is_ascii_alphanumeric()) {
                rules.push(format!("+{c}"));
            } else {
                rules.push(c.to_string());
            }
        }
        self.user = Some(AclUser {
            name: name.into(),
            password: password.into(),
            rules,
        });
        self
    }

    /// Extra `redis-server` arguments, e.g. `["--maxmemory", "10mb"]`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    pub fn start(self) -> Redis {
        let mut redis = Redis {
            port: if self.cluster {
                free_cluster_port()
            } else {
                free_port()
            },
            mode: Mode::Standalone,
            tls: self.tls.map(|auth| (Arc::new(TlsFiles::generate()), auth)),
            user: self.user,
            args: self.args,
            cluster: self.cluster,
            child: None,
            dir: TempDir::new("node"),
        };
        redis.launch();
        redis
    }
}

/// One `redis-server` process (standalone, or a sentinel inside [`Sentinel`]).
pub struct Redis {
    port: u16,
    mode: Mode,
    tls: Option<(Arc<TlsFiles>, ClientAuth)>,
    user: Option<AclUser>,
    args: Vec<String>,
    cluster: bool,
    child: Option<Child>,
    dir: TempDir,
}

impl Redis {
    /// A primary and a replica of it, returning once the replica's link is
    /// up. Diskless sync with no delay: the default 5 s delay would hold up
    /// the first sync (and the one after a failover).
    pub fn primary_and_replica() -> (Redis, Redis) {
        let fast = [
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ];
        let primary = Redis::builder().args(&fast).start();
        let replica = Redis::builder()
            .args(&fast)
            .args(&["--replicaof", HOST, &primary.port().to_string()])
            .start();
        wait_until(START_TIMEOUT, "replica link up", || {
            let info = replica.cmd(&["INFO", "replication"]).text();
            (info_field(&info, "master_link_status").as_deref() == Some("up")).then_some(())
        });
        (primary, replica)
    }

    pub fn builder() -> RedisBuilder {
        RedisBuilder {
            tls: None,
            user: None,
            args: Vec::new(),
            cluster: false,
        }
    }

    /// Plain standalone server, no persistence, `DEBUG` allowed from loopback.
    pub fn start() -> Redis {
        Redis::builder().start()
    }

    /// TLS-only server; `url()` is `rediss://127.0.0.1:P/`.
    pub fn start_tls(auth: ClientAuth) -> Redis {
        Redis::builder().tls(auth).start()
    }

    /// Plain server with a least-privilege ACL user (see [`RedisBuilder::user`]).
    pub fn start_with_user(name: &str, password: &str, commands: &[&str]) -> Redis {
        Redis::builder().user(name, password, commands).start()
    }

    fn sentinel(master_name: &str, master_port: u16) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            mode: Mode::Sentinel {
                name: master_name.into(),
                master_port,
                written: false,
            },
            tls: None,
            user: None,
            args: Vec::new(),
            cluster: false,
            child: None,
            dir: TempDir::new("sentinel"),
        };
        redis.launch();
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:P`
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// `redis://127.0.0.1:P/`, or `rediss://..` for TLS.
    pub fn url(&self) -> String {
        format!("{}://{HOST}:{}/", self.scheme(), self.port)
    }

    /// `redis://user:pass@127.0.0.1:P/` (percent-encoded); panics without a user.
    pub fn url_with_user(&self) -> String {
        let u = self.user.as_ref().expect("started without an ACL user");
        format!(
            "{}://{}:{}@{HOST}:{}/",
            self.scheme(),
            percent_encode(&u.name),
            percent_encode(&u.password),
            self.port
        )
    }

    /// `(user, password)` of the ACL user, if any.
    pub fn user(&self) -> Option<(&str, &str)> {
        self.user
            .as_ref()
            .map(|u| (u.name.as_str(), u.password.as_str()))
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|(t, _)| &**t)
    }
    pub fn ca_pem(&self) -> &[u8] {
        self.tls().expect("not a TLS server").ca_pem()
    }
    pub fn client_cert_pem(&self) -> &[u8] {
        self.tls().expect("not a TLS server").client_cert_pem()
    }
    pub fn client_key_pem(&self) -> &[u8] {
        self.tls().expect("not a TLS server").client_key_pem()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL and reap; the port refuses connections afterwards.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill if running, start again on the same port (data is gone: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            panic!("restart of redis on {}: {e}", self.port);
        }
        self.after_start();
    }

    /// SIGSTOP: the port still accepts TCP connections but nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Redis::freeze`].
    pub fn unfreeze(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("not running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "kill {sig} {pid}");
    }

    /// One command over a plain connection (not for TLS servers: use [`Redis::cli`]).
    pub fn cmd(&self, args: &[&str]) -> Reply {
        assert!(
            self.tls.is_none(),
            "plain RESP to a TLS port: use Redis::cli"
        );
        cmd(self.port, args)
    }

    /// Exact RESP reply bytes of one command (plain servers only).
    pub fn raw(&self, args: &[&str]) -> String {
        assert!(
            self.tls.is_none(),
            "plain RESP to a TLS port: use Redis::cli"
        );
        raw(self.port, args)
    }

    /// `redis-cli` (with `--tls --cacert --cert --key` for TLS servers) as the
    /// `default` user; its stdout, trimmed (non-TTY, so raw values).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self
            .cli_command(args)
            .output()
            .unwrap_or_else(|e| panic!("{} not runnable: {e}", cli_bin()));
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cli_bin());
        c.args(["-h", HOST, "-p", &self.port.to_string()]);
        if let Some((tls, _)) = &self.tls {
            c.arg("--tls")
                .arg("--cacert")
                .arg(tls.ca_path())
                .arg("--cert")
                .arg(tls.client_cert_path())
                .arg("--key")
                .arg(tls.client_key_path());
        }
        c.args(args).stdin(Stdio::null());
        c
    }

    /// `INFO <section>` text (works for TLS servers too).
    pub fn info(&self, section: &str) -> String {
        if self.tls.is_some() {
            self.cli(&["INFO", section])
        } else {
            self.cmd(&["INFO", section]).text()
        }
    }

    /// Calls per command since (re)start or [`Redis::reset_stats`]. Counters
    /// are zeroed at the end of every start, so the harness's own PING and
    /// setup are not in them.
    pub fn command_stats(&self) -> HashMap<String, u64> {
        parse_command_stats(&self.info("commandstats"))
    }

    /// Sum of [`Redis::command_stats`], less `INFO` and `CONFIG RESETSTAT`.
    pub fn total_commands(&self) -> u64 {
        sum_calls(&self.command_stats())
    }

    pub fn reset_stats(&self) {
        if self.tls.is_some() {
            self.cli(&["CONFIG", "RESETSTAT"]);
        } else {
            reset_stats(self.port);
        }
    }

    /// The server's log file.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(match self.mode {
            Mode::Standalone => "redis.log",
            Mode::Sentinel { .. } => "sentinel.log",
        })
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    fn argv(&mut self) -> Vec<String> {
        let dir = self.dir.path().display().to_string();
        let log = self.log_path().display().to_string();
        if let Mode::Sentinel {
            name,
            master_port,
            written,
        } = &mut self.mode
        {
            let conf = self.dir.path().join("sentinel.conf");
            if !*written {
                // Sentinel rewrites this file (myid, known replicas, epochs):
                // write it once per port, keep it across restarts.
                let text = format!(
                    "port {port}\nbind {HOST}\nprotected-mode no\ndaemonize no\n\
                     dir \"{dir}\"\nlogfile \"{log}\"\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {name} {HOST} {master_port} 1\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n\
                     sentinel parallel-syncs {name} 1\n",
                    port = self.port
                );
                fs::write(&conf, text).expect("write sentinel.conf");
                *written = true;
            }
            return vec![conf.display().to_string(), "--sentinel".into()];
        }
        let mut a: Vec<String> = [
            "--bind",
            HOST,
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["--dir".into(), dir, "--logfile".into(), log]);
        a.extend(["--enable-debug-command".into(), "local".into()]);
        match &self.tls {
            None => a.extend(["--port".into(), self.port.to_string()]),
            Some((tls, auth)) => {
                a.extend([
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    self.port.to_string(),
                ]);
                a.extend([
                    "--tls-cert-file".into(),
                    tls.server_cert_path().display().to_string(),
                ]);
                a.extend([
                    "--tls-key-file".into(),
                    tls.server_key_path().display().to_string(),
                ]);
                a.extend([
                    "--tls-ca-cert-file".into(),
                    tls.ca_path().display().to_string(),
                ]);
                let auth = match auth {
                    ClientAuth::No => "no",
                    ClientAuth::Optional => "optional",
                    ClientAuth::Required => "yes",
                };
                a.extend(["--tls-auth-clients".into(), auth.into()]);
            }
        }
        if self.cluster {
            let conf = self.dir.path().join(format!("nodes-{}.conf", self.port));
            a.extend(["--cluster-enabled".into(), "yes".into()]);
            a.extend(["--cluster-config-file".into(), conf.display().to_string()]);
            a.extend(["--cluster-node-timeout".into(), "2000".into()]);
        }
        if let Some(u) = &self.user {
            a.push("--user".into());
            a.push(u.name.clone());
            a.extend(u.rules.iter().cloned());
        }
        a.extend(self.args.iter().cloned());
        a
    }

    /// First start: retry on a new port when the picked one was taken meanwhile.
    fn launch(&mut self) {
        let mut last = String::new();
        for _ in 0..4 {
            match self.spawn_and_wait() {
                Ok(()) => {
                    self.after_start();
                    return;
                }
                Err(e) => {
                    last = e;
                    self.kill();
                    self.port = if self.cluster {
                        free_cluster_port()
                    } else {
                        free_port()
                    };
                    if let Mode::Sentinel { written, .. } = &mut self.mode {
                        *written = false;
                    }
                }
            }
        }
        panic!("redis-server would not start: {last}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let argv = self.argv();
        let stdio = File::create(self.dir.path().join("stdio.log")).map_err(|e| e.to_string())?;
        let child = Command::new(server_bin())
            .args(&argv)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdio.try_clone().map_err(|e| e.to_string())?)
            .stderr(stdio)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} not runnable (apt-get install redis-server): {e}",
                    server_bin()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "port {} exited with {status}:\n{}\n{}",
                    self.port,
                    tail(&self.dir.path().join("stdio.log"), 10),
                    tail(&self.log_path(), 10)
                ));
            }
            if self.ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "port {} not ready after {START_TIMEOUT:?}:\n{}",
                    self.port,
                    tail(&self.log_path(), 10)
                ));
            }
            thread::sleep(POLL);
        }
    }

    fn ready(&self) -> bool {
        if TcpStream::connect((HOST, self.port)).is_err() {
            return false;
        }
        if self.tls.is_some() {
            return self
                .cli_command(&["PING"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
                .unwrap_or(false);
        }
        match Conn::open(self.port).and_then(|mut c| c.send(&["PING"])) {
            Ok((Reply::Status(s), _)) => s == "PONG",
            Ok((Reply::Error(e), _)) => e.starts_with("NOAUTH"),
            _ => false,
        }
    }

    fn after_start(&self) {
        if matches!(self.mode, Mode::Standalone) {
            self.reset_stats();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------------ Sentinel

/// A primary, one replica and one sentinel (quorum 1, down-after 1 s,
/// failover-timeout 5 s) monitoring them as `mymaster`.
pub struct Sentinel {
    nodes: Vec<Redis>,
    sentinel: Redis,
    master_name: String,
    /// The primary port before the last `kill_primary` (or at start).
    previous_primary: u16,
}

impl Sentinel {
    pub const MASTER_NAME: &'static str = "mymaster";

    /// Returns once the replica is in sync and the sentinel knows it.
    pub fn start() -> Sentinel {
        let (primary, replica) = Redis::primary_and_replica();
        let sentinel = Redis::sentinel(Self::MASTER_NAME, primary.port());
        let s = Sentinel {
            previous_primary: primary.port(),
            nodes: vec![primary, replica],
            sentinel,
            master_name: Self::MASTER_NAME.into(),
        };
        let replica_port = s.nodes[1].port().to_string();
        wait_until(START_TIMEOUT, "sentinel to see the replica", || {
            let replicas = s.sentinel.cmd(&["SENTINEL", "REPLICAS", &s.master_name]);
            replicas.as_array()?.iter().map(Reply::as_map).find(|r| {
                r.get("port") == Some(&replica_port)
                    && r.get("flags").map(String::as_str) == Some("slave")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
            })?;
            Some(())
        });
        s
    }

    pub fn sentinel_port(&self) -> u16 {
        self.sentinel.port()
    }

    /// `redis://127.0.0.1:<sentinel port>/`
    pub fn sentinel_url(&self) -> String {
        self.sentinel.url()
    }

    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The primary's port as the sentinel currently reports it.
    pub fn primary_port(&self) -> u16 {
        self.master_addr().expect("sentinel knows no primary")
    }

    /// The port of the other data node (the replica, if no failover is under way).
    pub fn replica_port(&self) -> u16 {
        let p = self.primary_port();
        self.nodes
            .iter()
            .map(Redis::port)
            .find(|&n| n != p)
            .unwrap()
    }

    /// `SENTINEL get-master-addr-by-name` as a port.
    pub fn master_addr(&self) -> Option<u16> {
        let r = self
            .sentinel
            .cmd(&["SENTINEL", "get-master-addr-by-name", &self.master_name]);
        r.as_array()?.get(1)?.as_int().map(|p| p as u16)
    }

    /// The data node on `port`.
    pub fn node(&mut self, port: u16) -> &mut Redis {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("no node on that port")
    }

    pub fn nodes(&self) -> &[Redis] {
        &self.nodes
    }

    /// The sentinel process itself (plain RESP: `sentinel().cmd(..)`).
    pub fn sentinel(&self) -> &Redis {
        &self.sentinel
    }

    /// SIGKILLs the current primary; returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        self.node(port).kill();
        self.previous_primary = port;
        port
    }

    /// Waits until the sentinel reports a primary other than the one before the
    /// last [`Sentinel::kill_primary`], and that node answers `ROLE` as master;
    /// returns its port. Panics with the sentinel log on timeout.
    pub fn wait_for_promotion(&self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(port) = self.master_addr().filter(|&p| p != self.previous_primary) {
                let role = Conn::open(port)
                    .ok()
                    .and_then(|mut c| c.send(&["ROLE"]).ok());
                if let Some((Reply::Array(Some(r)), _)) = role {
                    if r.first().map(Reply::text).as_deref() == Some("master") {
                        return port;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no promotion within {timeout:?}; sentinel log:\n{}",
                    tail(&self.sentinel.log_path(), 30)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

// ------------------------------------------------------------------ Cluster

/// `n` cluster masters (no replicas), every node at `cluster_state:ok`.
pub struct Cluster {
    nodes: Vec<Redis>,
}

impl Cluster {
    /// `n >= 3` (redis-cli refuses fewer masters).
    pub fn start(n: usize) -> Cluster {
        assert!(
            n >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let nodes: Vec<Redis> = (0..n).map(|_| Redis::builder().cluster().start()).collect();
        let mut create = Command::new(cli_bin());
        create.args(["--cluster", "create"]);
        create.args(nodes.iter().map(Redis::addr));
        create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null());
        let out = create.output().expect("redis-cli not runnable");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes };
        cluster.wait_ok(START_TIMEOUT);
        for node in &cluster.nodes {
            node.reset_stats();
        }
        cluster
    }

    /// Waits for `cluster_state:ok` and all nodes known, on every node.
    pub fn wait_ok(&self, timeout: Duration) {
        let n = self.nodes.len().to_string();
        wait_until(timeout, "cluster_state:ok on every node", || {
            self.nodes
                .iter()
                .all(|node| {
                    let info = node.cmd(&["CLUSTER", "INFO"]).text();
                    info_field(&info, "cluster_state").as_deref() == Some("ok")
                        && info_field(&info, "cluster_known_nodes").as_deref() == Some(n.as_str())
                })
                .then_some(())
        });
    }

    pub fn nodes(&self) -> &[Redis] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [Redis] {
        &mut self.nodes
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Redis::port).collect()
    }

    /// `redis://127.0.0.1:p/` for each node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// The port of the master serving `key`'s slot.
    pub fn port_for_key(&self, key: &str) -> u16 {
        let any = self.nodes[0].port();
        let slot = cmd(any, &["CLUSTER", "KEYSLOT", key])
            .as_int()
            .expect("KEYSLOT");
        let slots = cmd(any, &["CLUSTER", "SLOTS"]);
        for range in slots.as_array().expect("CLUSTER SLOTS") {
            let r = range.as_array().expect("slot range");
            let (lo, hi) = (r[0].as_int().unwrap(), r[1].as_int().unwrap());
            if (lo..=hi).contains(&slot) {
                return r[2].as_array().expect("master")[1].as_int().unwrap() as u16;
            }
        }
        panic!("slot {slot} unassigned");
    }

    /// Sum of [`Redis::total_commands`] over all nodes.
    pub fn total_commands(&self) -> u64 {
        self.nodes.iter().map(Redis::total_commands).sum()
    }
}

// ------------------------------------------------------------------ Proxy

type ConnMap = Arc<Mutex<HashMap<u64, (TcpStream, TcpStream)>>>;

/// A loopback TCP forwarder (its own threads, no runtime). New connections go
/// to the current target; `repoint` leaves established ones where they are,
/// as a managed Redis DNS endpoint does. Drop stops accepting and closes
/// every forwarded connection.
pub struct Proxy {
    port: u16,
    target: Arc<AtomicU16>,
    latency_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    conns: ConnMap,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<port()>` to `127.0.0.1:<target_port>`, each chunk
    /// delivered `added_latency` after it was read, in each direction (so a
    /// round trip gains 2x). Zero for none.
    pub fn start(target_port: u16, added_latency: Duration) -> Proxy {
        let listener = TcpListener::bind((HOST, 0)).expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target_port));
        let latency_us = Arc::new(AtomicU64::new(added_latency.as_micros() as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns: ConnMap = Arc::default();
        let acceptor = {
            let (target, latency_us, stop, accepted, conns) = (
                target.clone(),
                latency_us.clone(),
                stop.clone(),
                accepted.clone(),
                conns.clone(),
            );
            thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || {
                    let mut next_id = 0u64;
                    for client in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(client) = client else { continue };
                        accepted.fetch_add(1, Ordering::SeqCst);
                        let to = target.load(Ordering::SeqCst);
                        let Ok(upstream) = TcpStream::connect((HOST, to)) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        next_id += 1;
                        forward(next_id, client, upstream, &latency_us, &conns);
                    }
                })
                .expect("spawn proxy thread")
        };
        Proxy {
            port,
            target,
            latency_us,
            stop,
            accepted,
            conns,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<proxy port>/`
    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}/", self.port)
    }

    pub fn target(&self) -> u16 {
        self.target.load(Ordering::SeqCst)
    }

    /// New connections go to `new_target_port`; open ones stay put.
    pub fn repoint(&self, new_target_port: u16) {
        self.target.store(new_target_port, Ordering::SeqCst);
    }

    /// Changes the added latency for chunks read from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently forwarded.
    pub fn open_connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Closes every forwarded connection (both sides), as a network blip would.
    pub fn sever_all(&self) {
        for (_, (a, b)) in self.conns.lock().unwrap().drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((HOST, self.port)); // wake accept()
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.sever_all();
    }
}

fn forward(
    id: u64,
    client: TcpStream,
    upstream: TcpStream,
    latency_us: &Arc<AtomicU64>,
    conns: &ConnMap,
) {
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (Ok(c3), Ok(u3)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    conns.lock().unwrap().insert(id, (c3, u3));
    pipe(id, client, u2, latency_us.clone(), conns.clone());
    pipe(id, upstream, c2, latency_us.clone(), conns.clone());
}

/// One direction: a reader stamps chunks, a writer delivers each at stamp +
/// latency, so latency is added per chunk without serializing the stream.
/// Either side closing (after queued chunks are delivered) closes both.
fn pipe(
    id: u64,
    mut from: TcpStream,
    mut to: TcpStream,
    latency_us: Arc<AtomicU64>,
    conns: ConnMap,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            let due = Instant::now() + Duration::from_micros(latency_us.load(Ordering::SeqCst));
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        if let Some((a, b)) = conns.lock().unwrap().remove(&id) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    });
}

// ------------------------------------------------------------------ MONITOR

/// One command as `MONITOR` shows it: when the server ran it (its clock, in
/// seconds since the epoch), who sent it (`127.0.0.1:<port>`, or `lua` for
/// a command a script ran) and its words.
#[derive(Clone, Debug)]
pub struct Monitored {
    pub at: f64,
    pub client: String,
    pub args: Vec<String>,
}

impl Monitored {
    /// The command's name, upper case.
    pub fn name(&self) -> String {
        self.args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default()
    }

    /// The local port of a TCP client (`None` for `lua`).
    pub fn client_port(&self) -> Option<u16> {
        self.client.rsplit_once(':')?.1.parse().ok()
    }
}

/// `MONITOR` on the plain server at a port, read by a thread of its own:
/// every command the server runs, in order. `on_command` sees each one as
/// it arrives (to act at a chosen command: a freeze).
pub struct Monitor {
    seen: Arc<Mutex<Vec<Monitored>>>,
    stream: TcpStream,
    reader: Option<JoinHandle<()>>,
}

impl Monitor {
    pub fn start(port: u16) -> Monitor {
        Monitor::start_with(port, |_| {})
    }

    pub fn start_with(
        port: u16,
        mut on_command: impl FnMut(&Monitored) + Send + 'static,
    ) -> Monitor {
        let mut conn = Conn::open(port).unwrap_or_else(|e| panic!("connect {port}: {e}"));
        let ok = conn.cmd(&["MONITOR"]);
        assert_eq!(ok, Reply::Status("OK".into()), "MONITOR: {ok}");
        let stream = conn.writer.try_clone().expect("clone the MONITOR socket");
        // A frozen server sends nothing for a while: no read timeout.
        stream.set_read_timeout(None).expect("no read timeout");
        let seen: Arc<Mutex<Vec<Monitored>>> = Arc::default();
        let reader = {
            let seen = Arc::clone(&seen);
            let mut lines = conn.reader;
            thread::Builder::new()
                .name(format!("monitor-{port}"))
                .spawn(move || {
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match lines.read_until(b'\n', &mut line) {
                            Ok(1..) => {}
                            _ => break,
                        }
                        let text = String::from_utf8_lossy(&line);
                        if let Some(command) = parse_monitor_line(text.trim_end()) {
                            on_command(&command);
                            seen.lock().unwrap().push(command);
                        }
                    }
                })
                .expect("spawn the MONITOR reader")
        };
        Monitor {
            seen,
            stream,
            reader: Some(reader),
        }
    }

    /// Every command seen so far.
    pub fn seen(&self) -> Vec<Monitored> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// `+1700000000.123456 [0 127.0.0.1:5555] "SET" "k" "v"`, the words quoted
/// as Redis' `sdscatrepr` writes them.
fn parse_monitor_line(line: &str) -> Option<Monitored> {
    let rest = line.strip_prefix('+')?;
    let (at, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('[')?;
    let (source, rest) = rest.split_once(']')?;
    let client = source.split_once(' ')?.1.to_owned();
    let mut args = Vec::new();
    let mut chars = rest.trim_start().chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut word = Vec::<u8>::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => word.push(b'\n'),
                    'r' => word.push(b'\r'),
                    't' => word.push(b'\t'),
                    'a' => word.push(7),
                    'b' => word.push(8),
                    'x' => {
                        let hex: String = [chars.next()?, chars.next()?].iter().collect();
                        word.push(u8::from_str_radix(&hex, 16).ok()?);
                    }
                    other => word.extend_from_slice(other.to_string().as_bytes()),
                },
                other => word.extend_from_slice(other.to_string().as_bytes()),
            }
        }
        args.push(String::from_utf8_lossy(&word).into_owned());
    }
    Some(Monitored {
        at: at.parse().ok()?,
        client,
        args,
    })
}

/// Which process holds each established TCP connection to `port` on
/// loopback: local port -> pid (from `ss -tnpH`).
pub fn client_pids(port: u16) -> HashMap<u16, u32> {
    let out = Command::new("ss")
        .args([
            "-tnpH",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) not runnable");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            // Recv-Q Send-Q Local Peer Process
            let local = words.nth(2)?;
            let local_port = local.rsplit_once(':')?.1.parse().ok()?;
            let pid = line.split("pid=").nth(1)?.split(',').next()?.parse().ok()?;
            Some((local_port, pid))
        })
        .collect()
}

/// Which process held each connection to a port while it was watched
/// (local port -> pid), from `ss` every 100 ms on a thread of its own.
pub struct ClientOwners {
    owners: Arc<Mutex<HashMap<u16, u32>>>,
    watching: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ClientOwners {
    pub fn watch(port: u16) -> ClientOwners {
        let owners: Arc<Mutex<HashMap<u16, u32>>> = Arc::default();
        let watching = Arc::new(AtomicBool::new(true));
        let thread = {
            let (owners, watching) = (Arc::clone(&owners), Arc::clone(&watching));
            thread::spawn(move || {
                while watching.load(Ordering::SeqCst) {
                    owners.lock().unwrap().extend(client_pids(port));
                    thread::sleep(Duration::from_millis(100));
                }
            })
        };
        ClientOwners {
            owners,
            watching,
            thread: Some(thread),
        }
    }

    /// Stops watching; what was seen.
    pub fn stop(mut self) -> HashMap<u16, u32> {
        self.watching.store(false, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.owners.lock().unwrap().clone()
    }
}
