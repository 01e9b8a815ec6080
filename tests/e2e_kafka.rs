//! End to end on a real Kafka-protocol broker (tansu): synthetic source → bridge → topic,
//! read back by an independent Python client (confluent-kafka + fastavro); broker outage;
//! Confluent wire format with a schema registry (a small Confluent-REST test double).

mod support;
mod util;

use presence_bridge::runtime;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{json_lines, run_python, KafkaBroker};
use util::{check_chains, config, published, wait_for};

const USERS: usize = 15;

fn consume(
    broker: &KafkaBroker,
    topic: &str,
    count: u64,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    let mut args = vec![
        "--bootstrap".to_string(),
        broker.bootstrap(),
        "--topic".into(),
        topic.into(),
        "--count".into(),
        count.to_string(),
        "--timeout".into(),
        "60".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    json_lines(&run_python("consume_kafka.py", &a))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_end_to_end_decoded_independently() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let changes = 200u64;
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[sinks.kafka]
brokers = "{b}"
topic = "presence.changes"
partitions = 3
[connectors.synthetic.synth]
users = {USERS}
rate = 0.0
max_changes = {changes}
seed = 5
"#,
            b = broker.bootstrap()
        ),
    );
    let handle = runtime::start(cfg).await.unwrap();
    let total = USERS as u64 + changes;
    let m = handle.metrics.clone();
    wait_for(
        "all events acknowledged by Kafka",
        Duration::from_secs(60),
        || published(&m.render(), "kafka") == total,
    )
    .await;
    handle.shutdown();
    handle.wait().await.unwrap();

    let msgs = consume(&broker, "presence.changes", total, &[]);
    assert_eq!(msgs.len() as u64, total);
    let mut partition_of: HashMap<String, i64> = HashMap::new();
    for msg in &msgs {
        let v = &msg["value"];
        let user = v["user"].as_str().unwrap();
        assert_eq!(msg["key"], user, "key = canonical user id");
        assert_eq!(msg["headers"]["event_id"], v["event_id"]);
        assert_eq!(msg["headers"]["source"], "synthetic/synth");
        let p = msg["partition"].as_i64().unwrap();
        assert_eq!(
            *partition_of.entry(user.to_string()).or_insert(p),
            p,
            "one user, one partition"
        );
    }
    // The consumer reads partitions interleaved; order per user is order per partition.
    let mut values: Vec<_> = msgs.clone();
    values.sort_by_key(|m| (m["partition"].as_i64(), m["offset"].as_i64()));
    let values: Vec<_> = values.iter().map(|m| m["value"].clone()).collect();
    let (distinct, dups, per_user) = check_chains(&values);
    assert_eq!((distinct as u64, dups), (total, 0));
    assert_eq!(per_user.len(), USERS);
}

/// The broker stops mid-stream and comes back (same storage): nothing is lost and every
/// user's events arrive in order; re-published entries carry the same event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_loses_nothing_and_keeps_order() {
    let mut broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let changes = 2000u64;
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[outbox]
retry_max_delay = "500ms"
[sinks.kafka]
brokers = "{b}"
partitions = 2
[connectors.synthetic.synth]
users = {USERS}
rate = 300.0
max_changes = {changes}
repeat_ratio = 0.0
"#,
            b = broker.bootstrap()
        ),
    );
    let handle = runtime::start(cfg).await.unwrap();
    let m = handle.metrics.clone();
    wait_for("first events published", Duration::from_secs(60), || {
        published(&m.render(), "kafka") >= 100
    })
    .await;
    broker.stop();
    wait_for(
        "outbox to grow while the broker is down",
        Duration::from_secs(30),
        || handle.outbox_depth() >= 300,
    )
    .await;
    let port = handle.http_addr.port();
    wait_for("/ready to report 503", Duration::from_secs(30), || {
        support::http_status(port, "/ready") == Some(503)
    })
    .await;
    broker.restart();
    let total = USERS as u64 + changes;
    wait_for(
        "outbox drained after the broker returned",
        Duration::from_secs(120),
        || published(&m.render(), "kafka") >= total && handle.outbox_depth() == 0,
    )
    .await;
    wait_for("/ready back to 200", Duration::from_secs(30), || {
        support::http_status(port, "/ready") == Some(200)
    })
    .await;
    handle.shutdown();
    handle.wait().await.unwrap();

    // The topic may hold more copies than were acknowledged (a produce the broker stored
    // just before it went down is sent again from the outbox): read to the end.
    let n = published(&m.render(), "kafka");
    let mut msgs = consume(&broker, "presence.changes", n, &["--to-end"]);
    msgs.sort_by_key(|m| (m["partition"].as_i64(), m["offset"].as_i64()));
    let values: Vec<_> = msgs.iter().map(|m| m["value"].clone()).collect();
    let (distinct, dups, _) = check_chains(&values);
    assert_eq!(distinct as u64, total, "every change arrived");
    eprintln!("{distinct} events, {dups} duplicate copies (same event id, same content)");
}

/// (subject, schema) pairs the registry double was asked to register.
type Registered = Arc<Mutex<Vec<(String, String)>>>;

/// A Confluent Schema Registry test double: `POST /subjects/{s}/versions` → `{"id": N}`.
async fn registry_double() -> (String, Registered) {
    use axum::extract::{Path, State};
    use axum::routing::post;
    let seen: Registered = Arc::default();
    let app = axum::Router::new()
        .route(
            "/subjects/{subject}/versions",
            post(
                |State(seen): State<Registered>,
                 Path(subject): Path<String>,
                 body: axum::body::Bytes| async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let schema = v["schema"].as_str().unwrap().to_string();
                    let mut s = seen.lock().unwrap();
                    s.push((subject, schema));
                    axum::Json(serde_json::json!({ "id": 40 + s.len() }))
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_registry_gives_confluent_wire_format() {
    let broker = KafkaBroker::start();
    let (url, seen) = registry_double().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[schema_registry]
url = "{url}"
[sinks.kafka]
brokers = "{b}"
topic = "changes.cf"
partitions = 1
[connectors.synthetic.synth]
users = 5
rate = 0.0
max_changes = 10
"#,
            b = broker.bootstrap()
        ),
    );
    let handle = runtime::start(cfg).await.unwrap();
    let m = handle.metrics.clone();
    wait_for("events published", Duration::from_secs(60), || {
        published(&m.render(), "kafka") == 15
    })
    .await;
    handle.shutdown();
    handle.wait().await.unwrap();
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "changes.cf-value");
        assert_eq!(s[0].1, presence_bridge::codec::PRESENCE_CHANGE_AVSC);
    }
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/presence_change.avsc");
    let msgs = consume(
        &broker,
        "changes.cf",
        15,
        &["--confluent-schema-file", schema],
    );
    assert_eq!(msgs.len(), 15);
    for msg in &msgs {
        assert_eq!(msg["schema_id"], 41, "0x00 + registry id framing: {msg}");
    }
}
