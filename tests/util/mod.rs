//! Bridge-specific helpers for integration tests (brokers are in `support`).
#![allow(dead_code)]

use presence_bridge::config::Config;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// A config from TOML text (the same path users take), with `data_dir` and a free HTTP port.
pub fn config(data_dir: &Path, body: &str) -> Config {
    init_logs();
    let text = format!(
        "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{body}",
        data_dir.display()
    );
    Config::from_toml(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Polls `f` every 20 ms until it is true; panics after `timeout` naming `what`.
pub async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of a counter family's samples whose labels contain every `needle`.
pub fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Events acknowledged by `sink`.
pub fn published(text: &str, sink: &str) -> u64 {
    metric_sum(
        text,
        "presence_events_published_total",
        &[&format!("sink=\"{sink}\"")],
    ) as u64
}

/// The record without the verifiers' own `_…` keys (e.g. `_file`).
fn strip_meta(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| !k.starts_with('_'));
    }
    v
}

/// Checks a stream of decoded `PresenceChange` records (JSON, as printed by the Python
/// verifiers or `replay`):
/// - duplicates (same event id) are identical records (a re-publish after a crash/outage);
/// - per user, first occurrences come in sequence order 1, 2, 3… without holes;
/// - sequence 1 is the only SNAPSHOT and has no previous; every later `previous` equals the
///   `current` of the sequence before.
///
/// Returns (distinct events, duplicates, events per user).
pub fn check_chains(events: &[Value]) -> (usize, usize, BTreeMap<String, Vec<Value>>) {
    let mut seen: HashMap<String, &Value> = HashMap::new();
    let mut dups = 0;
    let mut per_user: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events {
        let id = e["event_id"].as_str().expect("event_id").to_string();
        if let Some(first) = seen.get(&id) {
            assert_eq!(
                strip_meta(first),
                strip_meta(e),
                "re-published event {id} differs from the first copy"
            );
            dups += 1;
            continue;
        }
        seen.insert(id, e);
        per_user
            .entry(e["user"].as_str().unwrap().to_string())
            .or_default()
            .push(e.clone());
    }
    for (user, evs) in &per_user {
        for (i, e) in evs.iter().enumerate() {
            let seq = e["sequence"].as_i64().unwrap();
            assert_eq!(
                seq,
                i as i64 + 1,
                "{user}: sequence out of order or with a hole"
            );
            if i == 0 {
                assert_eq!(
                    e["op"], "SNAPSHOT",
                    "{user}: first event must be a SNAPSHOT"
                );
                assert!(e["previous"].is_null(), "{user}: SNAPSHOT with a previous");
            } else {
                assert_eq!(
                    e["op"], "CHANGE",
                    "{user} seq {seq}: later events are CHANGEs"
                );
                assert_eq!(
                    e["previous"],
                    evs[i - 1]["current"],
                    "{user} seq {seq}: previous is not the last current"
                );
                assert_ne!(
                    e["previous"], e["current"],
                    "{user} seq {seq}: unchanged event"
                );
            }
        }
    }
    (seen.len(), dups, per_user)
}

/// Bridge logs in test output (shown for failing tests); level from RUST_LOG, default info.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Publishes JSON command lines to `presence.commands` on JetStream (the stream is created
/// if the bridge has not yet), with the independent Python client.
pub fn publish_commands(nats_url: &str, lines: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cmds.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    super::support::run_python(
        "publish_nats.py",
        &[
            "--url",
            nats_url,
            "--subject",
            "presence.commands",
            "--file",
            file.to_str().unwrap(),
            "--jetstream",
            "--ensure-stream",
            "PRESENCE_COMMANDS",
        ],
    );
}

/// The first `count` command results on NATS, decoded by fastavro with the result schema.
pub fn command_results(nats_url: &str, count: usize) -> Vec<Value> {
    let out = super::support::run_python(
        "consume_nats.py",
        &[
            "--url",
            nats_url,
            "--stream",
            "PRESENCE_COMMANDS_RESULTS",
            "--subject",
            "presence.command-results.>",
            "--count",
            &count.to_string(),
            "--schema",
            concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/command_result.avsc"),
        ],
    );
    super::support::json_lines(&out)
        .into_iter()
        .map(|r| r["value"].clone())
        .collect()
}
