//! Test support shared by the integration tests (`mod support;`).
//!
//! Real brokers, run as child processes on free local ports:
//!
//! * [`NatsServer`]: the `nats-server` binary with JetStream (`NATS_SERVER_BIN` overrides the
//!   binary; default: `nats-server` on `PATH`, then `/usr/sbin/nats-server`).
//! * [`KafkaBroker`]: the `tansu` Kafka-protocol broker with SQLite storage (`TANSU_BIN`
//!   overrides the binary; default: `tansu` on `PATH`, then `~/.cargo/bin/tansu`).
//!
//! Both keep their storage in a temporary directory that outlives `stop()`, so `restart()`
//! comes back on the same ports with the same data. Child output goes to a log file in that
//! directory ([`NatsServer::log_path`], [`KafkaBroker::log_path`]), never to the test output.
//! Readiness is polled (20 ms steps, 20 s deadline), never a fixed sleep.
//!
//! Python verifiers live in `tests/py/`; [`run_python`] runs one and returns its stdout.
//!
//! Real SIP peers (Kamailio, SIPp, baresip) for the SIP connector tests are in [`sip`].
#![allow(dead_code)]

pub mod sip;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop (SIGTERM) may take before the child is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `ready` every 20 ms until it returns true; panics after `timeout` with `what` and the
/// tail of `log` (if any).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    log: Option<&Path>,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}{}",
                log.map(log_tail).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("\n--- last lines of {} ---\n{tail}", path.display())
}

/// Status code of `GET http://127.0.0.1:port{path}` (HTTP/1.0, raw socket), or None.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf);
    let status_line = head.lines().next()?;
    status_line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends a Kafka ApiVersions v0 request and returns true when a well-formed response with the
/// same correlation id and error code 0 comes back.
pub fn kafka_api_versions_ok(port: u16) -> bool {
    fn attempt(port: u16) -> std::io::Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        let correlation_id: i32 = 0x5042_0001;
        let client_id = b"presence-bridge-tests";
        let mut req = Vec::new();
        req.extend_from_slice(&18i16.to_be_bytes()); // api_key: ApiVersions
        req.extend_from_slice(&0i16.to_be_bytes()); // api_version 0
        req.extend_from_slice(&correlation_id.to_be_bytes());
        req.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
        req.extend_from_slice(client_id);
        let mut frame = (req.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&req);
        s.write_all(&frame)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(6..=1 << 20).contains(&len) {
            return Ok(false);
        }
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body)?;
        let cid = i32::from_be_bytes(body[0..4].try_into().unwrap());
        let error_code = i16::from_be_bytes(body[4..6].try_into().unwrap());
        Ok(cid == correlation_id && error_code == 0)
    }
    attempt(port).unwrap_or(false)
}

/// Resolves a binary: `$env_var`, then `name` on `PATH`, then the `fallbacks`.
fn find_bin(env_var: &str, name: &str, fallbacks: &[PathBuf]) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    for f in fallbacks {
        if f.is_file() {
            return f.clone();
        }
    }
    panic!(
        "`{name}` not found: set {env_var}, put it on PATH, or install it (see .ci/run); \
         looked also in {fallbacks:?}"
    )
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Opens (appending) the log file and returns (stdout, stderr) handles for a child.
fn log_stdio(path: &Path, banner: &str) -> (Stdio, Stdio) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()));
    let _ = writeln!(f, "===== {banner} =====");
    let err: File = f.try_clone().expect("clone log handle");
    (Stdio::from(f), Stdio::from(err))
}

/// SIGTERM, wait up to `STOP_TIMEOUT`, then SIGKILL; always reaps the child.
fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Panics with the log tail when the child has already exited.
fn assert_running(child: &mut Child, what: &str, log: &Path) -> bool {
    if let Ok(Some(status)) = child.try_wait() {
        panic!("{what} exited early with {status}{}", log_tail(log));
    }
    true
}

// ---------------------------------------------------------------------------------------------
// NATS

/// A `nats-server -js` child process on free local ports with its own store directory.
pub struct NatsServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a JetStream-enabled server and waits until `/healthz?js-enabled-only=true` is 200.
    pub fn start() -> NatsServer {
        let bin = find_bin(
            "NATS_SERVER_BIN",
            "nats-server",
            &[
                PathBuf::from("/usr/sbin/nats-server"),
                PathBuf::from("/usr/bin/nats-server"),
            ],
        );
        let dir = tempfile::Builder::new()
            .prefix("pb-nats-")
            .tempdir()
            .expect("tempdir");
        let mut server = NatsServer {
            bin,
            dir,
            port: free_port(),
            monitor_port: free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let store = self.store_dir();
        let (out, err) = log_stdio(&self.log_path(), "nats-server start");
        let child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&store)
            .args(["-m", &self.monitor_port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        let log = self.log_path();
        let (mon, port) = (self.monitor_port, self.port);
        let child = self.child.as_mut().unwrap();
        wait_until(
            "nats-server JetStream health",
            READY_TIMEOUT,
            Some(&log),
            || {
                assert_running(child, "nats-server", &log)
                    && http_status(mon, "/healthz?js-enabled-only=true") == Some(200)
                    && port_open(port)
            },
        );
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The JetStream store directory (`-sd`), kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// stdout + stderr of every run of the server, appended.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Graceful stop (SIGTERM, then SIGKILL after 10 s) and wait. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }

    /// Hard crash: SIGKILL and wait. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }

    /// Stops (if running) and starts again on the same ports with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka (tansu)

/// Environment variables `tansu broker` reads settings from.
const TANSU_ENV: &[&str] = &[
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "DATA_LAKE",
    "ICEBERG_CATALOG",
];

/// A `tansu broker` child process (Kafka protocol) with SQLite storage on a free local port.
///
/// Tansu auto-creates topics on produce only if asked to; use [`KafkaBroker::create_topic`]
/// (the `tansu topic create` CLI) before producing, or rdkafka's admin client.
pub struct KafkaBroker {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    cluster_id: String,
    child: Option<Child>,
}

impl KafkaBroker {
    /// Starts the broker and waits until it answers a Kafka ApiVersions request.
    pub fn start() -> KafkaBroker {
        let bin = find_bin("TANSU_BIN", "tansu", &[home_dir().join(".cargo/bin/tansu")]);
        let dir = tempfile::Builder::new()
            .prefix("pb-tansu-")
            .tempdir()
            .expect("tempdir");
        let mut broker = KafkaBroker {
            bin,
            dir,
            port: free_port(),
            cluster_id: format!("pb-test-{}", std::process::id()),
            child: None,
        };
        broker.spawn();
        broker
    }

    /// The storage engine URL. Tansu resolves a `sqlite://` URL against its working directory
    /// (even `sqlite:///abs/path` is made relative), so the broker runs in the temp directory
    /// and this names `<tempdir>/tansu.db`, which is kept across restarts.
    pub fn storage_url(&self) -> String {
        "sqlite://tansu.db".to_string()
    }

    /// The SQLite database file behind [`KafkaBroker::storage_url`].
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("tansu.db")
    }

    /// The tansu binary in use (for CLI calls such as `tansu topic list`).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "tansu already running");
        let (out, err) = log_stdio(&self.log_path(), "tansu broker start");
        let mut cmd = Command::new(&self.bin);
        // tansu reads its settings from these variables too; the test's own flags must win.
        for var in TANSU_ENV {
            cmd.env_remove(var);
        }
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = cmd
            .arg("broker")
            .args(["--cluster-id", &self.cluster_id])
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", &self.storage_url()])
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        let log = self.log_path();
        let port = self.port;
        let child = self.child.as_mut().unwrap();
        wait_until(
            "tansu ApiVersions response",
            READY_TIMEOUT,
            Some(&log),
            || assert_running(child, "tansu", &log) && kafka_api_versions_ok(port),
        );
    }

    /// `127.0.0.1:PORT`
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// stdout + stderr of every run of the broker, appended.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Creates a topic with `partitions` partitions (replication factor 1) via the tansu CLI.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", name])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawn {} topic create: {e}", self.bin.display()));
        assert!(
            out.status.success(),
            "tansu topic create {name} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Graceful stop (SIGTERM, then SIGKILL after 10 s) and wait. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }

    /// Hard crash: SIGKILL and wait. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }

    /// Stops (if running) and starts again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python verifiers

/// The Python interpreter: `$PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// Path of `tests/py/<script>` in this crate.
pub fn py_script(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script)
}

/// Runs `tests/py/<script> args...` (cwd: the crate root), asserts exit 0 and returns stdout.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = py_script(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in tests/py
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {} {}: {e}", python(), path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {} {:?} failed ({}):\n--- stderr ---\n{}\n--- stdout ---\n{}",
        python(),
        path.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr),
        stdout
    );
    stdout
}

/// Parses JSON-lines output (e.g. of [`run_python`]).
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}
