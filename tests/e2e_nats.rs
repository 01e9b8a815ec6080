//! End to end on a real `nats-server -js`: synthetic source → bridge → JetStream and the
//! archive, read back by independent Python decoders (nats-py + fastavro).

mod support;
mod util;

use presence_bridge::runtime;
use std::time::Duration;
use support::{json_lines, run_python, NatsServer};
use util::{check_chains, config, published, wait_for};

const USERS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_archive_end_to_end_decoded_independently() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let changes = 300;
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[sinks.archive]
[sinks.nats]
url = "{url}"
[connectors.synthetic.synth]
users = {USERS}
rate = 0.0
max_changes = {changes}
repeat_ratio = 0.3
seed = 11
"#,
            url = nats.url()
        ),
    );
    let handle = runtime::start(cfg).await.unwrap();
    let total = USERS as u64 + changes;
    let m = handle.metrics.clone();
    wait_for(
        "all events on NATS and in the archive",
        Duration::from_secs(60),
        || {
            let t = m.render();
            published(&t, "nats") == total && published(&t, "archive") == total
        },
    )
    .await;

    // Operations endpoints while running.
    let port = handle.http_addr.port();
    assert_eq!(support::http_status(port, "/health"), Some(200));
    assert_eq!(support::http_status(port, "/ready"), Some(200));
    let text = m.render();
    assert!(
        util::metric_sum(&text, "presence_unchanged_dropped_total", &[]) > 0.0,
        "repeats must be dropped as unchanged:\n{text}"
    );
    assert_eq!(
        util::metric_sum(&text, "presence_changes_total", &["op=\"SNAPSHOT\""]) as usize,
        USERS
    );
    assert_eq!(
        handle.outbox_depth(),
        0,
        "acknowledged entries leave the outbox"
    );

    handle.shutdown();
    handle.wait().await.unwrap();

    // Independent reader 1: nats-py + fastavro, checking framing and fingerprint.
    let out = run_python(
        "consume_nats.py",
        &[
            "--url",
            &nats.url(),
            "--stream",
            "PRESENCE",
            "--subject",
            "presence.changes.>",
            "--count",
            &total.to_string(),
        ],
    );
    let msgs = json_lines(&out);
    assert_eq!(msgs.len() as u64, total);
    for msg in &msgs {
        let v = &msg["value"];
        let token = v["user"].as_str().unwrap().replace('.', "_");
        assert_eq!(
            msg["subject"].as_str().unwrap(),
            format!("presence.changes.synthetic.{token}"),
            "one subject per user"
        );
        assert_eq!(msg["headers"]["Nats-Msg-Id"], v["event_id"]);
        assert_eq!(msg["headers"]["source"], "synthetic/synth");
    }
    let values: Vec<_> = msgs.iter().map(|m| m["value"].clone()).collect();
    let (distinct, dups, per_user) = check_chains(&values);
    assert_eq!((distinct as u64, dups), (total, 0));
    assert_eq!(per_user.len(), USERS);

    // Independent reader 2: fastavro on the archive files; same events, same ids.
    let archive = dir.path().join("archive");
    let out = run_python("read_archive.py", &[archive.to_str().unwrap()]);
    let archived = json_lines(&out);
    let (distinct, dups, _) = check_chains(&archived);
    assert_eq!((distinct as u64, dups), (total, 0));
    let ids = |v: &[serde_json::Value]| {
        let mut ids: Vec<String> = v
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&archived), ids(&values));
}

/// NATS goes away mid-stream: the outbox grows, `/ready` says 503, and when NATS returns
/// everything arrives exactly once (JetStream drops re-publishes by `Nats-Msg-Id`), in order
/// per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_grows_the_outbox_and_drains_in_order() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let changes = 2500u64;
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[outbox]
retry_max_delay = "500ms"
[sinks.nats]
url = "{url}"
[connectors.synthetic.synth]
users = {USERS}
rate = 400.0
max_changes = {changes}
repeat_ratio = 0.0
"#,
            url = nats.url()
        ),
    );
    let handle = runtime::start(cfg).await.unwrap();
    let m = handle.metrics.clone();
    let port = handle.http_addr.port();
    wait_for("first events published", Duration::from_secs(30), || {
        published(&m.render(), "nats") >= 100
    })
    .await;

    nats.stop();
    let before = published(&m.render(), "nats");
    wait_for(
        "outbox to grow while NATS is down",
        Duration::from_secs(30),
        || handle.outbox_depth() >= 200,
    )
    .await;
    wait_for("/ready to report 503", Duration::from_secs(30), || {
        support::http_status(port, "/ready") == Some(503)
    })
    .await;
    assert!(published(&m.render(), "nats") - before < 200);

    nats.restart();
    let total = USERS as u64 + changes;
    wait_for(
        "everything published after NATS returned",
        Duration::from_secs(90),
        || published(&m.render(), "nats") >= total && handle.outbox_depth() == 0,
    )
    .await;
    wait_for("/ready back to 200", Duration::from_secs(30), || {
        support::http_status(port, "/ready") == Some(200)
    })
    .await;
    handle.shutdown();
    handle.wait().await.unwrap();

    let out = run_python(
        "consume_nats.py",
        &[
            "--url",
            &nats.url(),
            "--stream",
            "PRESENCE",
            "--subject",
            "presence.changes.>",
            "--count",
            &total.to_string(),
        ],
    );
    let values: Vec<_> = json_lines(&out)
        .iter()
        .map(|m| m["value"].clone())
        .collect();
    let (distinct, dups, _) = check_chains(&values);
    assert_eq!(distinct as u64, total, "every change arrived");
    assert_eq!(
        dups, 0,
        "JetStream de-duplicated re-publishes by Nats-Msg-Id"
    );
}
