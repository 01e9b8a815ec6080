//! Real SIP peers for the SIP connector tests: Kamailio (presence server), SIPp and baresip,
//! run as child processes on 127.0.0.1 (see `tests/peers/` and `shared/reference/sip.md` §12).
//!
//! * [`Kamailio`]: `tests/peers/kamailio-presence.cfg` in the foreground on a free port (UDP and
//!   TCP), with its own temporary directory (sqlite DB with the users `watcher`, `alice`, `bob`,
//!   password [`PASSWORD`]; control socket; log). Ready when it answers an `OPTIONS` with 200.
//! * [`sipp_run`] / [`sipp_spawn`]: the scenarios of `tests/peers/sipp/`, each run in its own
//!   temporary directory with every message traced, so tests assert on what went over the wire
//!   ([`SippOutcome::sip_messages`]).
//! * [`Baresip`]: a real UA with a copy of `tests/peers/baresip/` rewritten for the server port.
//! * [`run_digest_probe`]: `tests/peers/tools/digest_subscribe_probe.py` (MD5 / SHA-256 digest).
//!
//! Every constructor calls [`require_sip_peers`], which panics (never skips) when a peer is not
//! installed. Ports come from [`free_sip_port`] (below the kernel's ephemeral range, so a port
//! cannot be taken by some client's socket while its Kamailio restarts). Children stay in the
//! test's process group, so nextest's timeout kills them too; `Drop` kills them otherwise, and
//! prints the tail of their log when the test is panicking.
//!
//! Binaries: `KAMAILIO_BIN`, `SIPP_BIN`, `BARESIP_BIN`, `SQLITE3_BIN` override; otherwise `PATH`,
//! then `/usr/sbin` and `/usr/bin`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{log_stdio, log_tail, python, wait_until, POLL};

/// Password of the users `watcher`, `alice` and `bob` in every [`Kamailio`]'s database.
pub const PASSWORD: &str = "secret";
/// Users created in every [`Kamailio`]'s database (domain `127.0.0.1`).
pub const USERS: &[&str] = &["watcher", "alice", "bob"];
/// How long Kamailio, a spawned SIPp or baresip may take to become ready.
pub const SIP_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Default wall-clock limit of one [`sipp_run`] / [`SippProcess::wait`]; the child is killed
/// (and the outcome marked `timed_out`) when it is reached.
pub const SIPP_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a graceful stop (SIGTERM) may take before SIGKILL.
const SIP_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Debian packages that provide the peers (`.ci/run` installs them).
pub const SIP_PEER_PACKAGES: &str =
    "kamailio kamailio-presence-modules kamailio-sqlite-modules sip-tester baresip-core sqlite3";
/// Debian's sqlite schema files, loaded in this order like `kamailio-presence.sh` does.
const KAMAILIO_SCHEMAS: &[&str] = &["standard", "presence", "rls", "registrar", "auth_db"];
const KAMAILIO_SCHEMA_DIR: &str = "/usr/share/kamailio/db_sqlite";

// ---------------------------------------------------------------------------------------------
// Installation check, paths, ports

/// `tests/peers` in this crate (the fixtures: Kamailio config, SIPp scenarios, baresip config,
/// tools).
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// Path of a SIPp scenario: `tests/peers/sipp/<scenario>`, or `scenario` itself when it contains
/// a `/`.
pub fn sipp_scenario(scenario: &str) -> PathBuf {
    if scenario.contains('/') {
        PathBuf::from(scenario)
    } else {
        peers_dir().join("sipp").join(scenario)
    }
}

struct SipBins {
    kamailio: PathBuf,
    sipp: PathBuf,
    baresip: PathBuf,
    sqlite3: PathBuf,
}

fn lookup_bin(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|c| c.is_file())
}

/// True when a Kamailio module (`name.so`) is installed in a `kamailio/modules` directory.
fn kamailio_module_installed(name: &str) -> bool {
    let file = format!("{name}.so");
    let mut dirs = vec![PathBuf::from("/usr/lib/kamailio/modules")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("kamailio/modules")));
    }
    dirs.iter().any(|d| d.join(&file).is_file())
}

fn sip_bins() -> &'static SipBins {
    static BINS: OnceLock<SipBins> = OnceLock::new();
    BINS.get_or_init(|| {
        let found = [
            ("KAMAILIO_BIN", "kamailio", "kamailio"),
            ("SIPP_BIN", "sipp", "sip-tester"),
            ("BARESIP_BIN", "baresip", "baresip-core"),
            ("SQLITE3_BIN", "sqlite3", "sqlite3"),
        ]
        .map(|(var, name, pkg)| (name, pkg, lookup_bin(var, name)));
        let mut missing: Vec<String> = found
            .iter()
            .filter(|(_, _, p)| p.is_none())
            .map(|(name, pkg, _)| format!("`{name}` (apt package {pkg})"))
            .collect();
        for (module, pkg) in [
            ("presence", "kamailio-presence-modules"),
            ("presence_xml", "kamailio-presence-modules"),
            ("pua_usrloc", "kamailio-presence-modules"),
            ("db_sqlite", "kamailio-sqlite-modules"),
        ] {
            if !kamailio_module_installed(module) {
                missing.push(format!("Kamailio module {module}.so (apt package {pkg})"));
            }
        }
        for schema in KAMAILIO_SCHEMAS {
            let f = Path::new(KAMAILIO_SCHEMA_DIR).join(format!("{schema}-create.sql"));
            if !f.is_file() {
                missing.push(format!(
                    "{} (apt package kamailio-sqlite-modules)",
                    f.display()
                ));
            }
        }
        if !missing.is_empty() {
            panic!(
                "SIP peers missing: {}.\nThe SIP tests run against real peers and are never \
                 skipped; install them with\n  apt-get install -y --no-install-recommends \
                 {SIP_PEER_PACKAGES}\n(.ci/run does this), or point KAMAILIO_BIN / SIPP_BIN / \
                 BARESIP_BIN / SQLITE3_BIN at them.",
                missing.join(", ")
            );
        }
        let [k, s, b, q] = found.map(|(_, _, p)| p.unwrap());
        SipBins {
            kamailio: k,
            sipp: s,
            baresip: b,
            sqlite3: q,
        }
    })
}

/// Panics, naming the apt packages, unless kamailio (with the presence and sqlite modules and
/// Debian's sqlite schema files), sipp, baresip and sqlite3 are installed. Called by every
/// constructor in this module; call it first in a test that uses none of them.
pub fn require_sip_peers() {
    sip_bins();
}

/// Lowest port of the kernel's ephemeral range (`ip_local_port_range`), 32768 if unknown.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn udp_tcp_bindable(port: u16) -> bool {
    // Both at once: Kamailio listens on UDP and TCP with the same number, SIPp binds UDP (and
    // TCP with -t t1/tn).
    let bindable = {
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        tcp.is_ok() && udp.is_ok()
    };
    // Also nothing bound to another address (e.g. 0.0.0.0) with SO_REUSEADDR.
    bindable && !udp_bound(port) && !tcp_listening(port)
}

/// A port free a moment ago on 127.0.0.1 for both UDP and TCP, chosen at random below the
/// kernel's ephemeral range (20000..32000 on a default Linux), so the kernel never hands it to
/// an outgoing socket (which would break a restart on the same port). Distinct processes can
/// pick the same port only by a 1-in-12000 chance within the same moment; [`Kamailio::start`]
/// and [`sipp_run`] retry on a bind failure anyway.
pub fn free_sip_port() -> u16 {
    let high = ephemeral_low().clamp(12_000, 32_000);
    let low = high.saturating_sub(12_000).max(10_000);
    for _ in 0..1000 {
        let port = fastrand::u16(low..high);
        if udp_tcp_bindable(port) {
            return port;
        }
    }
    panic!("no free UDP+TCP port in 127.0.0.1:{low}..{high}");
}

/// Local ports (`/proc/net/{file}`, IPv4 and IPv6) whose state matches `state` (None: any).
fn proc_net_ports(files: &[&str], state: Option<&str>) -> Vec<u16> {
    let mut ports = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{f}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || state.is_some_and(|s| cols[3] != s) {
                continue;
            }
            if let Some(port) = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// True when some socket is bound to UDP `port` (any address), per `/proc/net/udp{,6}`.
pub fn udp_bound(port: u16) -> bool {
    proc_net_ports(&["udp", "udp6"], None).contains(&port)
}

/// True when some socket listens on TCP `port` (any address), per `/proc/net/tcp{,6}`.
pub fn tcp_listening(port: u16) -> bool {
    proc_net_ports(&["tcp", "tcp6"], Some("0A")).contains(&port)
}

/// Sends one `OPTIONS sip:127.0.0.1:PORT` over UDP from an ephemeral port and returns the status
/// code of the answer, or None when nothing (well-formed) came back within 300 ms.
pub fn sip_options(port: u16) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    sock.connect(("127.0.0.1", port)).ok()?;
    let local = sock.local_addr().ok()?.port();
    let tag = fastrand::u64(..);
    let branch = format!("z9hG4bK-ping-{:x}", fastrand::u64(..));
    let call_id = format!("ping-{:x}@127.0.0.1", fastrand::u64(..));
    let msg = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:ping@127.0.0.1>;tag={tag:x}\r\n\
         To: <sip:127.0.0.1:{port}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send(msg.as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    // Skip anything that is not the answer to this request (there should be nothing else).
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        let n = sock.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        if !text.contains(&call_id) {
            continue;
        }
        let first = text.lines().next()?;
        let mut parts = first.split_whitespace();
        if parts.next() == Some("SIP/2.0") {
            return parts.next()?.parse().ok();
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Process helpers

/// Direct children of `ppid` (from `/proc/*/stat`).
fn child_pids(ppid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if proc_stat(pid).is_some_and(|(_, parent)| parent == ppid) {
            pids.push(pid);
        }
    }
    pids
}

/// (state, ppid) of a process, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut cols = rest.split_whitespace();
    let state = cols.next()?.chars().next()?;
    let ppid = cols.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True when `pid` exists and is not a zombie.
fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM `child` (whose workers are `workers`), wait up to `grace` for all of them, then
/// SIGKILL what is left; reaps `child`. Returns its exit status.
fn terminate(child: &mut Child, workers: &[u32], grace: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + grace;
    if matches!(child.try_wait(), Ok(None)) {
        signal(child.id(), "-TERM");
    }
    let mut status = None;
    while Instant::now() < deadline {
        if status.is_none() {
            status = child.try_wait().ok().flatten();
        }
        if status.is_some() && !workers.iter().any(|p| pid_alive(*p)) {
            return status;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    for p in workers {
        if pid_alive(*p) {
            signal(*p, "-KILL");
        }
    }
    let status = child.wait().ok();
    wait_until("killed workers to exit", SIP_STOP_TIMEOUT, None, || {
        !workers.iter().any(|p| pid_alive(*p))
    });
    status
}

fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn print_tail_if_panicking(what: &str, path: &Path) {
    if std::thread::panicking() {
        eprintln!("{what}:{}", log_tail(path));
    }
}

// ---------------------------------------------------------------------------------------------
// Kamailio

/// Options of a [`Kamailio`] (the `-A` defines of `kamailio-presence.cfg`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KamailioOpts {
    /// None: no authentication. `Some("MD5")`: `-A WITH_AUTH` (digest, qop=auth, MD5 — the
    /// module's default). `Some("SHA-256")` (or `"SHA-512-256"`): additionally
    /// `-A AUTH_ALGORITHM="SHA-256"`. Challenges are 407 for PUBLISH/SUBSCRIBE, 401 for REGISTER;
    /// the realm is the From domain (`127.0.0.1`).
    pub auth: Option<&'static str>,
    /// `-A WITH_PUA_USRLOC`: a REGISTER makes Kamailio PUBLISH `open` for that AOR.
    pub pua_usrloc: bool,
}

/// `tests/peers/kamailio-presence.cfg` running in the foreground (`-DD -E`) on 127.0.0.1, UDP and
/// TCP on the same free port, state in its own temporary directory (sqlite DB, control socket,
/// log) that outlives [`Kamailio::stop`], so [`Kamailio::restart`] comes back on the same port
/// with the same users and stored publications (`presentity`), but without subscriptions (they
/// are kept in memory only, `subs_db_mode 0`). Several can run at once.
pub struct Kamailio {
    opts: KamailioOpts,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    workers: Vec<u32>,
}

impl Kamailio {
    /// Creates the database (Debian's `db_sqlite/*-create.sql` like `kamailio-presence.sh`,
    /// users [`USERS`] with password [`PASSWORD`]), starts Kamailio on a [`free_sip_port`] and
    /// waits until it answers `OPTIONS` with 200 over UDP and accepts TCP connections. Panics
    /// with the log tail if it exits or is not ready within [`SIP_READY_TIMEOUT`]. Retries on
    /// another port if the port was taken in the meantime.
    pub fn start(opts: KamailioOpts) -> Kamailio {
        let bins = sip_bins();
        if let Some(alg) = opts.auth {
            assert!(
                matches!(alg, "MD5" | "SHA-256" | "SHA-512-256"),
                "KamailioOpts::auth: unsupported algorithm {alg:?} (MD5, SHA-256, SHA-512-256)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("pb-kam-")
            .tempdir()
            .expect("tempdir");
        let mut kam = Kamailio {
            opts,
            dir,
            port: 0,
            child: None,
            workers: Vec::new(),
        };
        kam.create_db(&bins.sqlite3);
        for attempt in 1..=3 {
            kam.port = free_sip_port();
            match kam.spawn() {
                Ok(()) => return kam,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    eprintln!("kamailio: port {} taken, retrying", kam.port);
                }
                Err(log) => panic!("kamailio on port {} exited early{log}", kam.port),
            }
        }
        unreachable!()
    }

    fn create_db(&self, sqlite3: &Path) {
        // WAL: readers (Kamailio::sql while a test polls) never block Kamailio's writes.
        let mut sql = String::from("PRAGMA journal_mode=WAL;\n");
        for t in KAMAILIO_SCHEMAS {
            let f = Path::new(KAMAILIO_SCHEMA_DIR).join(format!("{t}-create.sql"));
            let text =
                std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            // rls_watchers.reason must accept NULL for rls db_mode 2 (as the .sh does).
            sql.push_str(&text.replace("reason VARCHAR(64) NOT NULL", "reason VARCHAR(64)"));
            sql.push('\n');
        }
        for u in USERS {
            sql.push_str(&format!(
                "INSERT INTO subscriber(username,domain,password) \
                 VALUES ('{u}','127.0.0.1','{PASSWORD}');\n"
            ));
        }
        run_sqlite(sqlite3, &self.db_path(), &sql);
    }

    /// Starts the child on `self.port`; Err(log tail) if it exits before being ready.
    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "kamailio already running");
        let bins = sip_bins();
        let port = self.port;
        let log = self.log_path();
        let (out, err) = log_stdio(&log, &format!("kamailio start on port {port}"));
        let mut cmd = Command::new(&bins.kamailio);
        cmd.arg("-f")
            .arg(peers_dir().join("kamailio-presence.cfg"))
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-Y")
            .arg(self.dir.path())
            .arg("-w")
            .arg(self.dir.path())
            .args(self.defines())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bins.kamailio.display()));
        self.child = Some(child);
        let deadline = Instant::now() + SIP_READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                // Workers may still be shutting down; the caller may retry on another port.
                return Err(format!(" ({status}){}", log_tail(&log)));
            }
            if sip_options(port) == Some(200) && tcp_listening(port) {
                break;
            }
            if Instant::now() >= deadline {
                let mut child = self.child.take().unwrap();
                let workers = child_pids(child.id());
                terminate(&mut child, &workers, Duration::from_secs(2));
                panic!(
                    "kamailio on port {port} did not answer OPTIONS within \
                     {SIP_READY_TIMEOUT:?}{}",
                    log_tail(&log)
                );
            }
            std::thread::sleep(POLL);
        }
        // All worker processes are forked before the listeners serve requests; remember them so
        // stop() can make sure none is left holding the port.
        self.workers = child_pids(self.child.as_ref().unwrap().id());
        Ok(())
    }

    fn defines(&self) -> Vec<String> {
        let port = self.port;
        let dir = self.dir.path().display().to_string();
        let mut d = vec![
            format!("SIP_PORT={port}"),
            format!("SRV_URI=\"sip:127.0.0.1:{port}\""),
            // db_sqlite drops the leading '/' of the path in `sqlite:///abs` and opens it
            // relative to the working directory (`/` by default, our dir with -w), hence
            // four slashes.
            format!("DBURL=\"sqlite:///{}\"", self.db_path().display()),
            format!("CTL_SOCK=\"unix:{dir}/kamailio_ctl\""),
        ];
        if let Some(alg) = self.opts.auth {
            d.push("WITH_AUTH".into());
            if alg != "MD5" {
                d.push(format!("AUTH_ALGORITHM=\"{alg}\""));
            }
        }
        if self.opts.pua_usrloc {
            d.push("WITH_PUA_USRLOC".into());
        }
        d.into_iter().flat_map(|v| ["-A".to_string(), v]).collect()
    }

    /// The options it was started with.
    pub fn opts(&self) -> KamailioOpts {
        self.opts
    }

    /// The SIP port (UDP and TCP on 127.0.0.1); unchanged by [`Kamailio::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT` — the remote host of a [`sipp_run`].
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `sip:USER@127.0.0.1:PORT` — a presentity / request URI at this server.
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@127.0.0.1:{}", self.port)
    }

    /// `sip:127.0.0.1:PORT` — the server's own URI (Contact of its 2xx and NOTIFYs).
    pub fn server_uri(&self) -> String {
        format!("sip:127.0.0.1:{}", self.port)
    }

    /// The state directory (kept across restarts).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The sqlite database (tables `subscriber`, `presentity`, `watchers`, `location`, ...).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("presence.sqlite")
    }

    /// stdout + stderr of every run, appended (`xlog` lines `REQ <method> ...` and `RPL <code>
    /// ...` for every request received and every reply to its NOTIFYs).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kamailio.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Runs SQL on the database with the `sqlite3` CLI and returns its output (rows `|`
    /// separated). Panics on an SQL error.
    pub fn sql(&self, sql: &str) -> String {
        run_sqlite(&sip_bins().sqlite3, &self.db_path(), sql)
    }

    /// Adds a digest user (`subscriber` table; read per request, so no restart is needed).
    pub fn add_user(&self, user: &str, password: &str) {
        assert!(
            !user.contains('\'') && !password.contains('\''),
            "no quotes in test users"
        );
        self.sql(&format!(
            "INSERT INTO subscriber(username,domain,password) \
             VALUES ('{user}','127.0.0.1','{password}');"
        ));
    }

    /// Bodies of the stored publications (`presentity` rows) of `user` for `event` (e.g.
    /// `presence`, `dialog`), oldest first. Kamailio writes a PUBLISH to the table before it
    /// answers 200, and deletes it on `Expires: 0`.
    pub fn presentity(&self, user: &str, event: &str) -> Vec<String> {
        assert!(!user.contains('\'') && !event.contains('\''));
        // hex() keeps multi-line bodies in one output line.
        let out = self.sql(&format!(
            "SELECT hex(body) FROM presentity WHERE username='{user}' AND event='{event}' \
             ORDER BY received_time, id;"
        ));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|h| {
                let bytes: Vec<u8> = (0..h.len() / 2)
                    .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect()
    }

    /// Polls [`Kamailio::presentity`] (every 100 ms) until `pred` holds for the bodies and
    /// returns them; panics with `what` and the log tail after `timeout`.
    pub fn wait_for_presentity(
        &self,
        user: &str,
        event: &str,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let bodies = self.presentity(user, event);
            if pred(&bodies) {
                return bodies;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what} (presentity of {user}, \
                     {event}: {bodies:?}){}",
                    log_tail(&self.log_path())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True while the main process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Graceful stop: SIGTERM (Kamailio then stops its workers), SIGKILL after 10 s; returns
    /// once no Kamailio process is left and the UDP and TCP port are released. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let mut workers = self.workers.clone();
            workers.extend(child_pids(c.id()));
            terminate(&mut c, &workers, SIP_STOP_TIMEOUT);
            let port = self.port;
            wait_until(
                "the kamailio port to be released",
                SIP_STOP_TIMEOUT,
                Some(&self.log_path()),
                || !udp_bound(port) && !tcp_listening(port),
            );
        }
    }

    /// Stops (if running) and starts again on the same port with the same database: users and
    /// stored publications persist; subscriptions (in memory) are gone, so in-dialog requests
    /// of old subscriptions get 481. Waits for readiness like [`Kamailio::start`].
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!("kamailio restart on port {} failed{log}", self.port);
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if self.log_path().exists() {
            print_tail_if_panicking(&format!("kamailio on port {}", self.port), &self.log_path());
        }
        if let Some(mut c) = self.child.take() {
            let mut workers = self.workers.clone();
            workers.extend(child_pids(c.id()));
            terminate(&mut c, &workers, Duration::from_secs(3));
        }
    }
}

fn run_sqlite(sqlite3: &Path, db: &Path, sql: &str) -> String {
    let mut child = Command::new(sqlite3)
        .arg("-batch")
        .args(["-cmd", ".timeout 5000"]) // wait for Kamailio's write locks
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", sqlite3.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .expect("write sql");
    let out = child.wait_with_output().expect("sqlite3");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sqlite3 {} failed ({}): {}\nSQL: {}",
        db.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        &sql[..sql.len().min(2000)]
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// SIPp

/// Direction of a traced SIP message, seen from SIPp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// One message from a SIPp message log (`-trace_msg`).
#[derive(Debug, Clone)]
pub struct SipMessage {
    pub direction: Direction,
    /// `UDP` or `TCP`.
    pub transport: String,
    /// The message, CRLF line ends as on the wire.
    pub text: String,
}

impl SipMessage {
    /// `PUBLISH sip:... SIP/2.0` or `SIP/2.0 200 OK`.
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("").trim_end()
    }

    /// The status code of a response, None for a request.
    pub fn status(&self) -> Option<u16> {
        let l = self.start_line();
        l.strip_prefix("SIP/2.0 ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The method of a request (None for a response; see [`SipMessage::cseq_method`]).
    pub fn method(&self) -> Option<&str> {
        let l = self.start_line();
        if l.starts_with("SIP/2.0") {
            None
        } else {
            l.split_whitespace().next()
        }
    }

    /// The method named in CSeq (also for responses).
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    fn head(&self) -> &str {
        match self.text.find("\r\n\r\n") {
            Some(i) => &self.text[..i],
            None => self.text.split("\n\n").next().unwrap_or(""),
        }
    }

    /// Values of every header `name` (case-insensitive, full names only), trimmed.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.head()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    /// The first header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// The body (after the blank line), possibly empty.
    pub fn body(&self) -> &str {
        match self.text.find("\r\n\r\n") {
            Some(i) => &self.text[i + 4..],
            None => self.text.split_once("\n\n").map(|x| x.1).unwrap_or(""),
        }
    }
}

/// Parses a SIPp `-trace_msg` log into messages.
pub fn parse_sipp_messages(log: &str) -> Vec<SipMessage> {
    let mut out = Vec::new();
    // Blocks start with a line of dashes and a timestamp, then "UDP message sent (N bytes):"
    // or "UDP message received [N] bytes :", a blank line and the message.
    for block in log.split("\n-----------------------------------------------") {
        let mut lines = block.splitn(3, '\n');
        let _stamp = lines.next();
        let Some(kind) = lines.next() else { continue };
        let Some(rest) = lines.next() else { continue };
        let direction = if kind.contains("message sent") {
            Direction::Sent
        } else if kind.contains("message received") {
            Direction::Received
        } else {
            continue;
        };
        let transport = kind.split_whitespace().next().unwrap_or("").to_string();
        let text = rest.trim_start_matches(['\r', '\n']).trim_end_matches('\n');
        if text.is_empty() {
            continue;
        }
        out.push(SipMessage {
            direction,
            transport,
            text: text.to_string(),
        });
    }
    out
}

/// Result of a finished SIPp run.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// The command line (for reports).
    pub command: String,
    /// Exit status; SIPp exits 0 when every call succeeded, 1 when one failed, 97 on `-timeout`
    /// (the global timeout), 99 when no call was processed, 254/255 on fatal errors.
    pub status: Option<ExitStatus>,
    /// True when the harness killed it at its deadline.
    pub timed_out: bool,
    /// The message log (`-trace_msg -message_file`): every SIP message sent and received,
    /// except a received one that aborted the call (see [`SippOutcome::unexpected`]).
    pub messages: String,
    /// The `<log>` actions of the scenario (`-trace_logs`), e.g. `initial PUBLISH: 200, ...`.
    pub log: String,
    /// Unexpected messages (`-trace_err`).
    pub errors: String,
    /// stdout + stderr (final statistics screen, fatal errors).
    pub output: String,
}

impl SippOutcome {
    /// Exit code (None if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Exit 0 and not killed at the deadline.
    pub fn success(&self) -> bool {
        !self.timed_out && self.code() == Some(0)
    }

    /// Panics with [`SippOutcome::report`] unless [`SippOutcome::success`].
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "sipp failed:\n{}", self.report());
        self
    }

    /// The messages of the message log, in order.
    pub fn sip_messages(&self) -> Vec<SipMessage> {
        parse_sipp_messages(&self.messages)
    }

    /// Received messages only.
    pub fn received(&self) -> Vec<SipMessage> {
        self.sip_messages()
            .into_iter()
            .filter(|m| m.direction == Direction::Received)
            .collect()
    }

    /// Sent messages only.
    pub fn sent(&self) -> Vec<SipMessage> {
        self.sip_messages()
            .into_iter()
            .filter(|m| m.direction == Direction::Sent)
            .collect()
    }

    /// The requests with `method` that SIPp sent, each with the first final response received
    /// for it (matched by Call-ID and CSeq), in order. Retransmissions of a request or a
    /// response (UDP under load) are collapsed, so this is stable where the raw log is not.
    pub fn client_transactions(&self, method: &str) -> Vec<(SipMessage, Option<SipMessage>)> {
        let msgs = self.sip_messages();
        let key = |m: &SipMessage| {
            (
                m.header("Call-ID").map(str::to_owned),
                m.header("CSeq").map(str::to_owned),
            )
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for req in msgs
            .iter()
            .filter(|m| m.direction == Direction::Sent && m.method() == Some(method))
        {
            if !seen.insert(key(req)) {
                continue;
            }
            let resp = msgs
                .iter()
                .find(|m| {
                    m.direction == Direction::Received
                        && m.status().is_some_and(|s| s >= 200)
                        && key(m) == key(req)
                })
                .cloned();
            out.push((req.clone(), resp));
        }
        out
    }

    /// Final status codes of [`SippOutcome::client_transactions`] with `method` (requests
    /// without a logged answer are left out), e.g. `[407, 200]` for a digest PUBLISH.
    pub fn statuses(&self, method: &str) -> Vec<u16> {
        self.client_transactions(method)
            .iter()
            .filter_map(|(_, resp)| resp.as_ref()?.status())
            .collect()
    }

    /// Messages that made SIPp abort the call ("Aborting call on unexpected message"), from the
    /// error log. SIPp does not reliably write these to the message log, so they may be missing
    /// from [`SippOutcome::sip_messages`] / [`SippOutcome::statuses`]. (On such an abort SIPp
    /// also sends a BYE in the dialog — `-default_behaviors` — which Kamailio answers 405.)
    pub fn unexpected(&self) -> Vec<SipMessage> {
        self.errors
            .split("Aborting call on unexpected message")
            .skip(1)
            .filter_map(|chunk| {
                let start = chunk.find("received '")? + "received '".len();
                let rest = &chunk[start..];
                let end = rest.rfind('\'')?;
                Some(SipMessage {
                    direction: Direction::Received,
                    transport: String::new(),
                    text: rest[..end].replace("\r\n", "\n").replace('\n', "\r\n"),
                })
            })
            .collect()
    }

    /// Received requests with this method (e.g. every `NOTIFY`), in order, retransmissions
    /// (same Call-ID and CSeq) collapsed.
    pub fn requests(&self, method: &str) -> Vec<SipMessage> {
        let mut seen = HashSet::new();
        self.received()
            .into_iter()
            .filter(|m| m.method() == Some(method))
            .filter(|m| {
                seen.insert((
                    m.header("Call-ID").map(str::to_owned),
                    m.header("CSeq").map(str::to_owned),
                ))
            })
            .collect()
    }

    /// Command, status, output, `<log>` actions, errors and the message log, for failures.
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {:?}{}\n--- output ---\n{}\n--- log actions ---\n{}\n\
             --- unexpected messages ---\n{}\n--- message log ---\n{}",
            self.command,
            self.status,
            if self.timed_out {
                " (killed at the harness deadline)"
            } else {
                ""
            },
            tail_chars(&self.output, 4000),
            self.log,
            self.errors,
            tail_chars(&self.messages, 20000)
        )
    }
}

fn tail_chars(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// A SIPp child process (see [`sipp_spawn`]); killed on drop.
pub struct SippProcess {
    dir: tempfile::TempDir,
    port: u16,
    command: String,
    child: Option<Child>,
}

const SIPP_BIND_FAILED: i32 = 254;

fn sipp_command(
    dir: &Path,
    port: u16,
    scenario: &str,
    args: &[&str],
    target: Option<&str>,
) -> (Command, String) {
    let bins = sip_bins();
    let sf = sipp_scenario(scenario);
    assert!(sf.is_file(), "no SIPp scenario {}", sf.display());
    let mut argv: Vec<String> = vec![
        "-sf".into(),
        sf.display().to_string(),
        "-m".into(),
        "1".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-nostdin".into(),
        "-trace_msg".into(),
        "-message_file".into(),
        dir.join("messages.log").display().to_string(),
        "-trace_logs".into(),
        "-log_file".into(),
        dir.join("actions.log").display().to_string(),
        "-trace_err".into(),
        "-error_file".into(),
        dir.join("errors.log").display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.extend(target.map(str::to_string));
    let mut cmd = Command::new(&bins.sipp);
    let (out, err) = log_stdio(&dir.join("output.log"), "sipp");
    cmd.args(&argv)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let shown = std::iter::once(bins.sipp.display().to_string())
        .chain(argv.iter().map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("'{a}'")
            } else {
                a.clone()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ");
    (cmd, shown)
}

fn sipp_outcome(
    dir: &Path,
    command: String,
    status: Option<ExitStatus>,
    timed_out: bool,
) -> SippOutcome {
    SippOutcome {
        command,
        status,
        timed_out,
        messages: read_lossy(&dir.join("messages.log")),
        log: read_lossy(&dir.join("actions.log")),
        errors: read_lossy(&dir.join("errors.log")),
        output: read_lossy(&dir.join("output.log")),
    }
}

/// Runs `sipp -sf tests/peers/sipp/<scenario> -m 1 -i 127.0.0.1 -p <free port> -nostdin
/// -trace_msg ... <args> <target>` to completion (at most [`SIPP_TIMEOUT`], then it is killed
/// and the outcome is `timed_out`) and returns the outcome; it does not assert success.
///
/// `args` are appended after the defaults (a later option wins, e.g. `-m 2`); pass the
/// presentity as `-s alice`, keys as `-key NAME VALUE`, digest credentials as `-au alice -ap
/// secret`, TCP as `-t t1`. `target` is `host:port` (e.g. [`Kamailio::target`]). Runs in its
/// own temporary directory; retried on another port if SIPp could not bind its port.
pub fn sipp_run(scenario: &str, args: &[&str], target: &str) -> SippOutcome {
    sipp_run_timeout(scenario, args, target, SIPP_TIMEOUT)
}

/// [`sipp_run`] with another deadline.
pub fn sipp_run_timeout(
    scenario: &str,
    args: &[&str],
    target: &str,
    timeout: Duration,
) -> SippOutcome {
    for attempt in 1..=3 {
        let dir = tempfile::Builder::new()
            .prefix("pb-sipp-")
            .tempdir()
            .expect("tempdir");
        let (mut cmd, command) =
            sipp_command(dir.path(), free_sip_port(), scenario, args, Some(target));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
        let (status, timed_out) = wait_child(&mut child, timeout);
        let outcome = sipp_outcome(dir.path(), command, status, timed_out);
        if outcome.code() == Some(SIPP_BIND_FAILED) && attempt < 3 {
            eprintln!(
                "sipp could not bind its port, retrying:\n{}",
                outcome.output
            );
            continue;
        }
        return outcome;
    }
    unreachable!()
}

/// Waits for `child` up to `timeout`; kills it at the deadline. (status, timed_out)
fn wait_child(child: &mut Child, timeout: Duration) -> (Option<ExitStatus>, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (Some(status), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return (child.wait().ok(), true);
        }
        std::thread::sleep(POLL);
    }
}

/// Spawns a long-running SIPp — typically a UAS such as `notifier.xml` — on a [`free_sip_port`]
/// and returns once its UDP port (and TCP port with `-t t1`/`-t tn`) is bound. Same defaults and
/// `args` as [`sipp_run`], no remote target. Point the code under test at
/// [`SippProcess::target`] / [`SippProcess::uri`], then [`SippProcess::wait`].
pub fn sipp_spawn(scenario: &str, args: &[&str]) -> SippProcess {
    SippProcess::spawn_on(free_sip_port(), scenario, args, None)
}

impl SippProcess {
    /// Like [`sipp_spawn`] on a given local `port` (e.g. to bring a notifier back on the same
    /// port) and with an optional remote `target` (for a long-running UAC).
    pub fn spawn_on(port: u16, scenario: &str, args: &[&str], target: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pb-sipp-")
            .tempdir()
            .expect("tempdir");
        let (mut cmd, command) = sipp_command(dir.path(), port, scenario, args, target);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
        let mut p = SippProcess {
            dir,
            port,
            command,
            child: Some(child),
        };
        let tcp = args
            .windows(2)
            .any(|w| w[0] == "-t" && w[1].starts_with('t'));
        let output = p.dir.path().join("output.log");
        let child = p.child.as_mut().unwrap();
        wait_until(
            &format!("sipp {scenario} to bind 127.0.0.1:{port}"),
            SIP_READY_TIMEOUT,
            Some(&output),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "sipp {scenario} exited early with {status}{}",
                        log_tail(&output)
                    );
                }
                udp_bound(port) && (!tcp || tcp_listening(port))
            },
        );
        p
    }

    /// Its local SIP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `sip:USER@127.0.0.1:PORT` — a request URI that reaches this SIPp.
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@127.0.0.1:{}", self.port)
    }

    /// The command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Messages traced so far (SIPp writes each one as it is sent or received).
    pub fn messages_so_far(&self) -> Vec<SipMessage> {
        parse_sipp_messages(&read_lossy(&self.dir.path().join("messages.log")))
    }

    /// Polls the message log until a message matches `pred` and returns it; panics with the log
    /// after `timeout`.
    pub fn wait_for_message(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&SipMessage) -> bool,
    ) -> SipMessage {
        let mut found = None;
        let log = self.dir.path().join("messages.log");
        wait_until(what, timeout, Some(&log), || {
            found = self.messages_so_far().into_iter().find(|m| pred(m));
            found.is_some()
        });
        found.unwrap()
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits (at most [`SIPP_TIMEOUT`], then kills it) for it to finish and returns the outcome.
    pub fn wait(&mut self) -> SippOutcome {
        self.wait_timeout(SIPP_TIMEOUT)
    }

    /// [`SippProcess::wait`] with another deadline.
    pub fn wait_timeout(&mut self, timeout: Duration) -> SippOutcome {
        let (status, timed_out) = match self.child.take() {
            Some(mut c) => wait_child(&mut c, timeout),
            None => (None, false),
        };
        sipp_outcome(self.dir.path(), self.command.clone(), status, timed_out)
    }

    /// Kills it now and returns what it traced (status is the kill's).
    pub fn kill(&mut self) -> SippOutcome {
        self.wait_timeout(Duration::ZERO)
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let messages = self.dir.path().join("messages.log");
            print_tail_if_panicking(&format!("sipp {}", self.command), &messages);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Digest probe

/// Runs `tests/peers/tools/digest_subscribe_probe.py 127.0.0.1 PORT PRESENTITY USER PASSWORD`
/// (SUBSCRIBE with RFC 8760 digest, MD5 or SHA-256 as challenged) and returns (exit code,
/// stdout + stderr). Exit 0: challenged, 2xx, first NOTIFY received.
pub fn run_digest_probe(port: u16, presentity: &str, user: &str, password: &str) -> (i32, String) {
    require_sip_peers();
    let script = peers_dir().join("tools/digest_subscribe_probe.py");
    let out = Command::new(python())
        .arg(&script)
        .args(["127.0.0.1", &port.to_string(), presentity, user, password])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {} {}: {e}", python(), script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

// ---------------------------------------------------------------------------------------------
// baresip

/// Options of a [`Baresip`].
#[derive(Debug, Clone)]
pub struct BaresipOpts {
    /// The account user (`sip:USER@127.0.0.1:SERVER_PORT`); default `alice`.
    pub user: String,
    /// Digest password (`auth_pass`); default [`PASSWORD`].
    pub password: String,
    /// Commands run at start-up (`-e`), e.g. `/presence_online`, `/presence_offline`.
    pub commands: Vec<String>,
    /// `-t N`: quit (gracefully) after N seconds.
    pub quit_after: Option<u32>,
    /// `-s`: print the SIP trace to the output (default true).
    pub sip_trace: bool,
    /// `regint` of the account: REGISTER interval in seconds, 0 = no REGISTER (default 0).
    pub regint: u32,
    /// `pubint` of the account: PUBLISH refresh interval in seconds (default 120).
    pub pubint: u32,
}

impl Default for BaresipOpts {
    fn default() -> Self {
        BaresipOpts {
            user: "alice".into(),
            password: PASSWORD.into(),
            commands: Vec::new(),
            quit_after: None,
            sip_trace: true,
            regint: 0,
            pubint: 120,
        }
    }
}

/// Result of a finished baresip.
#[derive(Debug, Clone)]
pub struct BaresipOutcome {
    pub status: Option<ExitStatus>,
    /// stdout + stderr (with `-s`: every SIP message, ANSI colour codes included).
    pub output: String,
}

/// baresip 1.0 with a copy of `tests/peers/baresip/` in a temporary directory, rewritten so the
/// account (`accounts`) and contact `bob` (`contacts`) point at 127.0.0.1:`server_port`, and
/// `sip_listen` / `ctrl_tcp_listen` use free ports. It PUBLISHes PIDF for the account
/// (`basic` `unknown`; `open` after `/presence_online`), SUBSCRIBEs to bob, and on a graceful
/// exit removes its publication (Expires 0) and un-subscribes. Killed on drop.
pub struct Baresip {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Baresip {
    /// Writes the config and starts baresip; returns once it printed `baresip is ready.`.
    pub fn spawn(server_port: u16, opts: &BaresipOpts) -> Baresip {
        let bins = sip_bins();
        let dir = tempfile::Builder::new()
            .prefix("pb-baresip-")
            .tempdir()
            .expect("tempdir");
        let port = free_sip_port();
        let cfg = dir.path().join("config");
        std::fs::create_dir(&cfg).expect("mkdir config");
        let src = peers_dir().join("baresip");
        let read = |name: &str| {
            std::fs::read_to_string(src.join(name))
                .unwrap_or_else(|e| panic!("read {}/{name}: {e}", src.display()))
        };
        let rewrite = |text: String, from: &str, to: &str| {
            assert!(
                text.contains(from),
                "baresip fixture has no {from:?}:\n{text}"
            );
            text.replace(from, to)
        };
        let config = rewrite(
            read("config"),
            "127.0.0.1:16010",
            &format!("127.0.0.1:{port}"),
        );
        let config = rewrite(
            config,
            "127.0.0.1:4444",
            &format!("127.0.0.1:{}", free_sip_port()),
        );
        let server = format!("127.0.0.1:{server_port}");
        let accounts = rewrite(read("accounts"), "127.0.0.1:15060", &server);
        let accounts = rewrite(accounts, "<sip:alice@", &format!("<sip:{}@", opts.user));
        let accounts = rewrite(accounts, "regint=0", &format!("regint={}", opts.regint));
        let accounts = rewrite(accounts, "pubint=120", &format!("pubint={}", opts.pubint));
        let accounts = rewrite(
            accounts,
            "auth_pass=secret",
            &format!("auth_pass={}", opts.password),
        );
        let contacts = rewrite(read("contacts"), "127.0.0.1:15060", &server);
        for (name, text) in [
            ("config", config),
            ("accounts", accounts),
            ("contacts", contacts),
        ] {
            std::fs::write(cfg.join(name), text).expect("write baresip config");
        }

        let log = dir.path().join("baresip.log");
        let (out, err) = log_stdio(&log, "baresip");
        let mut cmd = Command::new(&bins.baresip);
        cmd.arg("-f").arg(&cfg);
        if opts.sip_trace {
            cmd.arg("-s");
        }
        if let Some(t) = opts.quit_after {
            cmd.args(["-t", &t.to_string()]);
        }
        for c in &opts.commands {
            cmd.args(["-e", c]);
        }
        let child = cmd
            .current_dir(dir.path())
            .env("HOME", dir.path()) // nothing of the real ~/.baresip
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bins.baresip.display()));
        let mut b = Baresip {
            dir,
            port,
            child: Some(child),
        };
        b.wait_for_output("baresip is ready.", SIP_READY_TIMEOUT);
        b
    }

    /// Its local SIP port (`sip_listen`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated config directory (`-f`).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// stdout + stderr so far.
    pub fn output(&self) -> String {
        read_lossy(&self.dir.path().join("baresip.log"))
    }

    /// Polls the output until it contains `needle`; panics with the output after `timeout` or
    /// if baresip exits first without printing it.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) {
        let log = self.dir.path().join("baresip.log");
        let child = &mut self.child;
        wait_until(
            &format!("baresip output {needle:?}"),
            timeout,
            Some(&log),
            || {
                if read_lossy(&log).contains(needle) {
                    return true;
                }
                if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
                    panic!(
                        "baresip exited ({status}) without printing {needle:?}{}",
                        log_tail(&log)
                    );
                }
                false
            },
        );
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Graceful stop (SIGTERM: baresip removes its publication and un-subscribes, then exits;
    /// SIGKILL after 10 s) and returns the outcome.
    pub fn stop(&mut self) -> BaresipOutcome {
        let status = self
            .child
            .take()
            .and_then(|mut c| terminate(&mut c, &[], SIP_STOP_TIMEOUT));
        BaresipOutcome {
            status,
            output: self.output(),
        }
    }

    /// Waits for it to exit by itself (use with [`BaresipOpts::quit_after`]); killed after
    /// `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> BaresipOutcome {
        let status = self
            .child
            .take()
            .and_then(|mut c| wait_child(&mut c, timeout).0);
        BaresipOutcome {
            status,
            output: self.output(),
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        print_tail_if_panicking("baresip", &self.dir.path().join("baresip.log"));
    }
}

/// Runs baresip until it quits by itself (`opts.quit_after` is required) and returns its
/// outcome (at most `quit_after` + 20 s, then it is killed).
pub fn baresip_run(server_port: u16, opts: &BaresipOpts) -> BaresipOutcome {
    let secs = opts
        .quit_after
        .expect("baresip_run needs BaresipOpts::quit_after (-t N)");
    let mut b = Baresip::spawn(server_port, opts);
    b.wait(Duration::from_secs(u64::from(secs) + 20))
}
