//! Durability across real process deaths: the `presence-bridge` binary is killed with
//! SIGKILL in the middle of a stream, started again, and stopped with SIGTERM. The archive,
//! read by fastavro, must hold every user's chain without holes, with exactly one SNAPSHOT
//! per user and `previous` always equal to the last `current` — re-published entries (the
//! outbox after a crash) carry the same event id and identical content.

mod support;
mod util;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, json_lines, run_python};
use util::{check_chains, published};

fn metrics(port: u16) -> Option<String> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn start(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_presence-bridge"))
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn presence-bridge")
}

fn wait_published(port: u16, at_least: u64, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(m) = metrics(port) {
            if published(&m, "archive") >= at_least {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "bridge exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {at_least} events"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn previous_chains_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[sinks.archive]
[connectors.synthetic.synth]
users = 12
rate = 400.0
repeat_ratio = 0.2
seed = 3
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("bridge.log");

    let mut first = start(&cfg, &log);
    wait_published(port, 300, &mut first, &log);
    first.kill().unwrap(); // SIGKILL: no shutdown path runs
    first.wait().unwrap();

    let mut second = start(&cfg, &log);
    wait_published(port, 300, &mut second, &log);
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = second.wait().unwrap();
    assert!(exit.success(), "graceful stop on SIGTERM: {exit}");

    let archive = dir.path().join("data/archive");
    let records = json_lines(&run_python("read_archive.py", &[archive.to_str().unwrap()]));
    let (distinct, dups, per_user) = check_chains(&records);
    // Every acknowledged publication of both runs is in the archive; an entry acknowledged
    // just before the SIGKILL but not yet removed from the outbox appears twice.
    assert!(
        records.len() >= 600,
        "both runs' events are there: {}",
        records.len()
    );
    assert_eq!(records.len(), distinct + dups);
    assert_eq!(per_user.len(), 12);
    // The restart re-sent every user's state (resync): users it changed for have a CHANGE
    // flagged resync, never a second SNAPSHOT (check_chains asserts that).
    let resync_changes = records
        .iter()
        .filter(|r| r["op"] == "CHANGE" && r["resync"] == true)
        .count();
    assert!(resync_changes > 0, "restart resync produced CHANGEs");
    eprintln!("{distinct} events, {dups} re-published after the crash");

    // Our own decoder reads the same history.
    let out = Command::new(env!("CARGO_BIN_EXE_presence-bridge"))
        .args(["replay", "--from"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success());
    let ours = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(ours.len(), records.len());
    for (a, b) in ours.iter().zip(&records) {
        assert_eq!(a["event_id"], b["event_id"]);
        assert_eq!(a["current"], b["current"]);
    }
}

#[test]
fn check_config_names_each_bad_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[sinks.kafka]\nbrokers = \"h:9092\"\ntopics = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_presence-bridge"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sinks.kafka"), "{err}");
    assert!(err.contains("topics"), "{err}");
    assert!(err.contains("remove it or fix its spelling"), "{err}");

    std::fs::write(
        &cfg,
        "[pipeline]\nbatch_size = 0\n[connectors.synthetic.s]\nusers = 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_presence-bridge"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "no sink configured",
        "pipeline.batch_size",
        "connectors.synthetic.s.users",
    ] {
        assert!(err.contains(want), "{want} missing in:\n{err}");
    }

    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors/synthetic.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_presence-bridge"))
        .args(["check-config", good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
