//! Commands on real brokers: command topic → route to the synthetic connector → result on
//! the results topic → the changed presence comes back as a change event. Bad input goes to
//! the dead-letter topic with the reason and the consumer keeps going; a repeated command
//! id is not applied twice.

mod support;
mod util;

use presence_bridge::runtime;
use serde_json::Value;
use std::time::Duration;
use support::{json_lines, run_python, KafkaBroker, NatsServer};
use util::{config, metric_sum, published, wait_for};

const ALICE: &str = "user00001@synthetic.example";
const BOB: &str = "user00002@synthetic.example";

fn write_lines(dir: &std::path::Path, name: &str, lines: &[&str]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n")).unwrap();
    p.display().to_string()
}

fn schema(name: &str) -> String {
    format!("{}/schemas/{name}.avsc", env!("CARGO_MANIFEST_DIR"))
}

/// The JSON commands every test sends, in order, and what must come of each.
const JSON_COMMANDS: [&str; 5] = [
    r#"{"command_id":"c1","user":"User00001@Synthetic.example","availability":"DO_NOT_DISTURB","note":"focus"}"#,
    r#"{not json"#,
    r#"{"command_id":"c2","user":"user00002@synthetic.example"}"#,
    r#"{"command_id":"c1","user":"user00001@synthetic.example","availability":"AWAY"}"#,
    r#"{"command_id":"c3","user":"nobody@example.com","availability":"BUSY"}"#,
];
/// Sent Avro-encoded (single-object) after the JSON ones.
const AVRO_COMMAND: &str = r#"{"command_id":"c4","action":"SET_PRESENCE","user":"user00002@synthetic.example","source":"synth","availability":"BE_RIGHT_BACK","activity":null,"note":null,"expiry_seconds":null,"issued_at":null}"#;

fn check_results(results: &[Value]) {
    let by: Vec<(String, String, bool)> = results
        .iter()
        .map(|r| {
            (
                r["command_id"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["duplicate"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by,
        [
            ("c1".into(), "APPLIED".into(), false),
            ("c1".into(), "APPLIED".into(), true),
            ("c3".into(), "REJECTED".into(), false),
            ("c4".into(), "APPLIED".into(), false),
        ],
        "{results:#?}"
    );
    assert_eq!(results[0]["user"], ALICE, "user ids are canonicalised");
    assert_eq!(results[0]["connector"], "synth");
    assert!(results[2]["error"]
        .as_str()
        .unwrap()
        .contains("no connector holds user nobody@example.com"));
}

fn check_dead_letters(reasons: &[String]) {
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("malformed command"), "{reasons:?}");
    assert!(
        reasons[1].contains("SET_PRESENCE needs an availability"),
        "{reasons:?}"
    );
}

/// The applied commands came back as change events with the right previous state.
fn check_changes(values: &[Value]) {
    let alice: Vec<&Value> = values.iter().filter(|v| v["user"] == ALICE).collect();
    assert_eq!(
        alice.len(),
        2,
        "snapshot + the commanded change (c1 applied once)"
    );
    assert_eq!(alice[1]["current"]["availability"], "DO_NOT_DISTURB");
    assert_eq!(alice[1]["current"]["note"], "focus");
    assert_eq!(alice[1]["previous"], alice[0]["current"]);
    let bob: Vec<&Value> = values.iter().filter(|v| v["user"] == BOB).collect();
    assert_eq!(bob.len(), 2);
    assert_eq!(bob[1]["current"]["availability"], "BE_RIGHT_BACK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_commands_results_dead_letters_and_dedupe() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let b = broker.bootstrap();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[sinks.kafka]
brokers = "{b}"
partitions = 1
[commands.kafka]
brokers = "{b}"
group_id = "bridge-test"
[connectors.synthetic.synth]
users = 3
rate = 0.0
max_changes = 0
"#
        ),
    );
    let handle = runtime::start(cfg).await.unwrap();
    let m = handle.metrics.clone();
    wait_for("snapshots published", Duration::from_secs(60), || {
        published(&m.render(), "kafka") == 3
    })
    .await;
    let json = write_lines(dir.path(), "cmds.jsonl", &JSON_COMMANDS);
    let avro = write_lines(dir.path(), "cmds-avro.jsonl", &[AVRO_COMMAND]);
    run_python(
        "produce_kafka.py",
        // One key: all commands on one partition, handled in the order sent.
        &[
            "--bootstrap",
            &b,
            "--topic",
            "presence.commands",
            "--file",
            &json,
            "--key",
            "k",
        ],
    );
    run_python(
        "produce_kafka.py",
        &[
            "--bootstrap",
            &b,
            "--topic",
            "presence.commands",
            "--file",
            &avro,
            "--avro-schema",
            &schema("presence_command"),
            "--key",
            "k",
        ],
    );
    wait_for("all commands handled", Duration::from_secs(60), || {
        let t = m.render();
        metric_sum(&t, "presence_commands_total", &[]) as u64 == 4
            && metric_sum(&t, "presence_dead_letters_total", &[]) as u64 == 2
            && published(&t, "kafka") == 5
    })
    .await;
    handle.shutdown();
    handle.wait().await.unwrap();

    let results = json_lines(&run_python(
        "consume_kafka.py",
        &[
            "--bootstrap",
            &b,
            "--topic",
            "presence.command-results",
            "--count",
            "4",
            "--schema",
            &schema("command_result"),
        ],
    ));
    for r in &results {
        assert_eq!(r["key"], r["value"]["user"]);
    }
    // Results are keyed by user over several partitions: restore handling order.
    let mut values: Vec<Value> = results.iter().map(|r| r["value"].clone()).collect();
    values.sort_by_key(|v| v["completed_at"].as_i64());
    check_results(&values);

    let dlq = json_lines(&run_python(
        "consume_kafka.py",
        &[
            "--bootstrap",
            &b,
            "--topic",
            "presence.commands.dlq",
            "--count",
            "2",
            "--raw",
        ],
    ));
    // Dead letters keep the command's key (one partition): order them by origin offset.
    let origin = |d: &Value| -> (String, i64) {
        let o = d["headers"]["dead_letter_origin"]
            .as_str()
            .unwrap()
            .to_string();
        let (tp, off) = o.rsplit_once('/').unwrap();
        (tp.to_string(), off.parse().unwrap())
    };
    let mut dlq = dlq;
    dlq.sort_by_key(|d| origin(d).1);
    for d in &dlq {
        assert!(origin(d).0.starts_with("presence.commands/"), "{d}");
    }
    let reasons: Vec<String> = dlq
        .iter()
        .map(|d| {
            d["headers"]["dead_letter_reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    check_dead_letters(&reasons);

    let changes = json_lines(&run_python(
        "consume_kafka.py",
        &[
            "--bootstrap",
            &b,
            "--topic",
            "presence.changes",
            "--count",
            "5",
        ],
    ));
    let values: Vec<Value> = changes.iter().map(|c| c["value"].clone()).collect();
    check_changes(&values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_commands_results_dead_letters_and_dedupe() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[sinks.nats]
url = "{url}"
[commands.nats]
url = "{url}"
[connectors.synthetic.synth]
users = 3
rate = 0.0
max_changes = 0
"#
        ),
    );
    let handle = runtime::start(cfg).await.unwrap();
    let m = handle.metrics.clone();
    wait_for("snapshots published", Duration::from_secs(60), || {
        published(&m.render(), "nats") == 3
    })
    .await;
    let json = write_lines(dir.path(), "cmds.jsonl", &JSON_COMMANDS);
    let avro = write_lines(dir.path(), "cmds-avro.jsonl", &[AVRO_COMMAND]);
    for (file, extra) in [
        (&json, vec![]),
        (
            &avro,
            vec!["--avro-schema".to_string(), schema("presence_command")],
        ),
    ] {
        let mut args = vec![
            "--url",
            &url,
            "--subject",
            "presence.commands",
            "--file",
            file,
            "--jetstream",
            "--ensure-stream",
            "PRESENCE_COMMANDS",
        ];
        args.extend(extra.iter().map(String::as_str));
        run_python("publish_nats.py", &args);
    }
    wait_for("all commands handled", Duration::from_secs(60), || {
        let t = m.render();
        metric_sum(&t, "presence_commands_total", &[]) as u64 == 4
            && metric_sum(&t, "presence_dead_letters_total", &[]) as u64 == 2
            && published(&t, "nats") == 5
    })
    .await;
    handle.shutdown();
    handle.wait().await.unwrap();

    let results = json_lines(&run_python(
        "consume_nats.py",
        &[
            "--url",
            &url,
            "--stream",
            "PRESENCE_COMMANDS_RESULTS",
            "--subject",
            "presence.command-results.>",
            "--count",
            "4",
            "--schema",
            &schema("command_result"),
        ],
    ));
    let values: Vec<Value> = results.iter().map(|r| r["value"].clone()).collect();
    check_results(&values);

    let dlq = json_lines(&run_python(
        "consume_nats.py",
        &[
            "--url",
            &url,
            "--stream",
            "PRESENCE_COMMANDS_RESULTS",
            "--subject",
            "presence.commands.dlq",
            "--count",
            "2",
            "--raw",
        ],
    ));
    let reasons: Vec<String> = dlq
        .iter()
        .map(|d| {
            d["headers"]["dead_letter_reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    check_dead_letters(&reasons);

    let changes = json_lines(&run_python(
        "consume_nats.py",
        &[
            "--url",
            &url,
            "--stream",
            "PRESENCE",
            "--subject",
            "presence.changes.>",
            "--count",
            "5",
        ],
    ));
    let values: Vec<Value> = changes.iter().map(|c| c["value"].clone()).collect();
    check_changes(&values);
}
