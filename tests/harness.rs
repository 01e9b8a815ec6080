//! Self-test of the test harness (`tests/support`): real brokers start, stop and restart on the
//! same ports with their data, and the Python verifiers read what they wrote.

mod support;

use std::path::Path;

use support::{json_lines, port_open, run_python, KafkaBroker, NatsServer};

/// A PresenceChange record (schemas/presence_change.avsc) as JSON, for the Python encoders.
fn sample_change(user: &str, sequence: i64) -> String {
    serde_json::json!({
        "event_id": format!("harness-{user}-{sequence}"),
        "op": if sequence == 1 { "SNAPSHOT" } else { "CHANGE" },
        "resync": false,
        "source": {"kind": "synthetic", "connector": "harness", "server": null,
                   "server_time": 1_700_000_000_123_i64},
        "user": user,
        "sequence": sequence,
        "observed_at": 1_700_000_000_456_i64 + sequence,
        "previous": null,
        "current": {"availability": "BUSY", "activity": "IN_A_CALL", "note": "hi",
                    "device": null, "last_active": null, "out_of_office": false,
                    "raw": {"availability": "Busy"}}
    })
    .to_string()
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write sample file");
    path.to_str().unwrap().to_string()
}

#[test]
fn nats_server_stops_and_restarts_on_the_same_ports_with_its_data() {
    let mut nats = NatsServer::start();
    let (port, mon) = (nats.port(), nats.monitor_port());
    let url = nats.url();
    assert_eq!(url, format!("nats://127.0.0.1:{port}"));
    assert!(port_open(port), "client port open after start");
    assert!(nats.log_path().exists(), "log file written");

    let tmp = tempfile::tempdir().unwrap();
    let file = write_lines(tmp.path(), "in.jsonl", &[sample_change("a@example.com", 1)]);
    run_python(
        "publish_nats.py",
        &[
            "--url",
            &url,
            "--subject",
            "presence.changes.a",
            "--file",
            &file,
            "--avro-schema",
            "schemas/presence_change.avsc",
            "--jetstream",
            "--ensure-stream",
            "HARNESS",
            "--stream-subjects",
            "presence.changes.>",
            "--header",
            "Nats-Msg-Id=harness-a-1",
        ],
    );

    nats.stop();
    assert!(!port_open(port), "client port closed after stop");
    assert!(!port_open(mon), "monitor port closed after stop");

    nats.restart();
    assert_eq!(nats.url(), url, "same port after restart");
    assert!(port_open(port), "client port open after restart");
    assert_eq!(
        support::http_status(mon, "/healthz?js-enabled-only=true"),
        Some(200)
    );

    let out = run_python(
        "consume_nats.py",
        &[
            "--url",
            &url,
            "--stream",
            "HARNESS",
            "--subject",
            "presence.changes.>",
            "--count",
            "1",
            "--timeout",
            "15",
        ],
    );
    let msgs = json_lines(&out);
    assert_eq!(msgs.len(), 1, "{out}");
    assert_eq!(msgs[0]["subject"], "presence.changes.a");
    assert_eq!(msgs[0]["headers"]["Nats-Msg-Id"], "harness-a-1");
    assert_eq!(msgs[0]["value"]["user"], "a@example.com");
    assert_eq!(msgs[0]["value"]["observed_at"], 1_700_000_000_457_i64);

    nats.kill();
    assert!(!port_open(port), "client port closed after kill");
}

#[test]
fn kafka_broker_stops_and_restarts_on_the_same_port_with_its_data() {
    let mut kafka = KafkaBroker::start();
    let port = kafka.port();
    let bootstrap = kafka.bootstrap();
    assert_eq!(bootstrap, format!("127.0.0.1:{port}"));
    assert!(support::kafka_api_versions_ok(port), "ApiVersions answered");
    kafka.create_topic("harness-changes", 2);

    let tmp = tempfile::tempdir().unwrap();
    let lines = [
        sample_change("b@example.com", 1),
        sample_change("b@example.com", 2),
    ];
    let file = write_lines(tmp.path(), "in.jsonl", &lines);
    run_python(
        "produce_kafka.py",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            "harness-changes",
            "--file",
            &file,
            "--key",
            "b@example.com",
            "--avro-schema",
            "schemas/presence_change.avsc",
            "--header",
            "content-type=application/vnd.apache.avro",
        ],
    );

    kafka.stop();
    assert!(!port_open(port), "port closed after stop");

    kafka.restart();
    assert_eq!(kafka.bootstrap(), bootstrap, "same port after restart");
    assert!(port_open(port), "port open after restart");
    assert!(
        support::kafka_api_versions_ok(port),
        "ApiVersions answered after restart"
    );

    let out = run_python(
        "consume_kafka.py",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            "harness-changes",
            "--count",
            "2",
            "--timeout",
            "20",
        ],
    );
    let msgs = json_lines(&out);
    assert_eq!(msgs.len(), 2, "{out}");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["key"], "b@example.com");
        assert_eq!(
            m["offset"], i as i64,
            "one key, one partition, in order: {out}"
        );
        assert_eq!(m["headers"]["content-type"], "application/vnd.apache.avro");
        assert_eq!(m["value"]["sequence"], i as i64 + 1);
    }

    kafka.kill();
    assert!(!port_open(port), "port closed after kill");
}

#[test]
fn python_verifiers_are_runnable() {
    for script in [
        "read_archive.py",
        "consume_kafka.py",
        "consume_nats.py",
        "produce_kafka.py",
        "publish_nats.py",
    ] {
        let out = run_python(script, &["--help"]);
        assert!(out.contains("usage"), "{script}: {out}");
    }
}
