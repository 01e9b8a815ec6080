//! Self-test of the test harness (`tests/support`): real brokers start, stop and restart on the
//! same ports with their data, and the Python verifiers run.

mod support;

use support::{port_open, KafkaBroker, NatsServer};

#[test]
fn nats_server_stops_and_restarts_on_the_same_ports() {
    let mut nats = NatsServer::start();
    let (port, mon) = (nats.port(), nats.monitor_port());
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert!(port_open(port), "client port open after start");
    assert!(nats.log_path().exists(), "log file written");

    nats.stop();
    assert!(!port_open(port), "client port closed after stop");
    assert!(!port_open(mon), "monitor port closed after stop");

    nats.restart();
    assert_eq!(nats.port(), port, "same port after restart");
    assert!(port_open(port), "client port open after restart");
    assert_eq!(
        support::http_status(mon, "/healthz?js-enabled-only=true"),
        Some(200)
    );
    assert!(nats.store_dir().join("jetstream").is_dir(), "JetStream store kept");

    nats.kill();
    assert!(!port_open(port), "client port closed after kill");
}

#[test]
fn kafka_broker_stops_and_restarts_on_the_same_port() {
    let mut kafka = KafkaBroker::start();
    let port = kafka.port();
    assert_eq!(kafka.bootstrap(), format!("127.0.0.1:{port}"));
    assert!(support::kafka_api_versions_ok(port), "ApiVersions answered");
    kafka.create_topic("harness-topic", 2);

    kafka.stop();
    assert!(!port_open(port), "port closed after stop");

    kafka.restart();
    assert_eq!(kafka.port(), port, "same port after restart");
    assert!(port_open(port), "port open after restart");
    assert!(support::kafka_api_versions_ok(port), "ApiVersions answered after restart");
    // The storage survived: creating the same topic again is refused.
    let again = std::process::Command::new(kafka.bin())
        .args(["topic", "create", "harness-topic", "--broker"])
        .arg(format!("tcp://{}", kafka.bootstrap()))
        .output()
        .expect("run tansu topic create");
    assert!(
        !again.status.success()
            || String::from_utf8_lossy(&again.stderr).contains("TopicAlreadyExists")
            || String::from_utf8_lossy(&again.stdout).contains("TopicAlreadyExists"),
        "topic survived the restart: {again:?}"
    );
}

#[test]
fn python_verifiers_are_runnable() {
    let out = support::run_python("read_archive.py", &["--help"]);
    assert!(out.contains("usage"), "{out}");
}
