//! The `pws` connector against the PWS simulator over real HTTP: snapshot, change with the
//! right previous, a lost notification recovered by the fail-safe fetch, session expiry,
//! CPU throttling and node restart survived with nothing lost, set presence through the
//! command topic (NATS) into the simulator and back as a change event.

mod support;
mod util;

use presence_bridge::runtime::{self, BridgeHandle};
use presence_bridge::simulate::pws::{self as sim, PwsSimConfig, PwsSimHandle};
use serde_json::Value;
use std::time::Duration;
use support::{free_port, json_lines, run_python, NatsServer};
use util::{config, metric_sum, published, wait_for};

const CONTACTS: u32 = 30;

struct Rig {
    sim: PwsSimHandle,
    bridge: BridgeHandle,
    _dir: tempfile::TempDir,
    nats: Option<NatsServer>,
}

/// The bridge config for `sim`, archive in `dir`, HTTP on `port`.
fn bridge_config(
    sim: &PwsSimHandle,
    dir: &std::path::Path,
    port: u16,
    commands: &str,
    extra: &str,
) -> presence_bridge::config::Config {
    let contacts: Vec<String> = (1..=CONTACTS)
        .map(|n| format!("\"{}\"", sim.user_uri(n)))
        .collect();
    std::env::set_var("PWS_TEST_APP_PASSWORD", "s3cret");
    let mut cfg = config(
        dir,
        &format!(
            r#"
[sinks.archive]
{commands}
[connectors.pws.main]
base_url = "{base}"
app_user = "bridgeapp"
app_password = "${{PWS_TEST_APP_PASSWORD}}"
watchers = ["{watcher}"]
contacts = [{contacts}]
callback_url = "http://127.0.0.1:{port}/pws/main"
{extra}
"#,
            base = sim.base_url(),
            contacts = contacts.join(", "),
            watcher = sim.user_name(CONTACTS + 1),
        ),
    );
    cfg.http.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg
}

async fn simulator() -> PwsSimHandle {
    sim::start(
        "127.0.0.1:0".parse().unwrap(),
        PwsSimConfig {
            users: CONTACTS + 1,
            domain: "example.com".into(),
            app_user: "bridgeapp".into(),
            app_password: "s3cret".into(),
            change_rate: 0.0,
            seed: 1,
            ..PwsSimConfig::default()
        },
    )
    .await
    .unwrap()
}

/// Simulator with users 1..=CONTACTS+1; the bridge watches users 1..=CONTACTS through the
/// last one as watcher, into the archive (and NATS commands when `with_nats`).
async fn rig(extra: &str, with_nats: bool) -> Rig {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let nats = with_nats.then(NatsServer::start);
    let commands = match &nats {
        Some(n) => format!(
            "[sinks.nats]\nurl = \"{u}\"\n[commands.nats]\nurl = \"{u}\"\n",
            u = n.url()
        ),
        None => String::new(),
    };
    let cfg = bridge_config(&sim, dir.path(), port, &commands, extra);
    let bridge = runtime::start(cfg).await.unwrap();
    Rig {
        sim,
        bridge,
        _dir: dir,
        nats,
    }
}

impl Rig {
    fn published(&self) -> u64 {
        published(&self.bridge.metrics.render(), "archive")
    }

    async fn wait_published(&self, n: u64, what: &str) {
        let m = self.bridge.metrics.clone();
        wait_for(what, Duration::from_secs(30), || {
            published(&m.render(), "archive") >= n
        })
        .await;
    }

    /// Stops the bridge and returns the archived events (read by fastavro).
    async fn finish(self) -> (Vec<Value>, PwsSimHandle) {
        let archive = self.bridge.archive_dir.clone().unwrap();
        self.bridge.shutdown();
        self.bridge.wait().await.unwrap();
        drop(self.nats);
        let out = run_python("read_archive.py", &[archive.to_str().unwrap()]);
        (json_lines(&out), self.sim)
    }

    fn errors(&self, kind: &str) -> f64 {
        metric_sum(
            &self.bridge.metrics.render(),
            "presence_connector_errors_total",
            &[&format!("error_type=\"{kind}\"")],
        )
    }
}

fn last_for<'a>(events: &'a [Value], user: &str) -> &'a Value {
    events
        .iter()
        .rev()
        .find(|e| e["user"] == user)
        .unwrap_or_else(|| panic!("no event for {user}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_change_with_previous() {
    let rig = rig("", false).await;
    rig.wait_published(CONTACTS as u64, "startup snapshot of every contact")
        .await;
    let alice = rig.sim.user_uri(3);
    let before = rig.sim.basic_of(&alice).unwrap();
    let new = if before == "BUSY" { "AWAY" } else { "BUSY" };
    rig.sim.set_basic(&alice, new);
    rig.wait_published(CONTACTS as u64 + 1, "the change").await;
    let stats = rig.sim.stats();
    let (events, _) = rig.finish().await;
    let (distinct, _, per_user) = util::check_chains(&events);
    assert_eq!(distinct as u64, CONTACTS as u64 + 1);
    assert_eq!(per_user.len() as u32, CONTACTS);
    for e in &events {
        assert_eq!(e["source"]["kind"], "pws");
        assert_eq!(e["source"]["connector"], "main");
    }
    let change = last_for(&events, &alice);
    assert_eq!(change["op"], "CHANGE");
    assert_eq!(change["resync"], false, "found through a notification");
    assert_eq!(change["current"]["raw"]["pws.basic"], new);
    assert_eq!(change["previous"]["raw"]["pws.basic"], before.as_str());
    let snapshot = events.iter().find(|e| e["user"] == alice.as_str()).unwrap();
    assert_eq!(snapshot["resync"], true, "the first fetch is a resync");
    assert!(stats.callbacks_sent >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_notification_is_recovered_by_the_failsafe_fetch() {
    let rig = rig("failsafe_interval = \"1s\"", false).await;
    rig.wait_published(CONTACTS as u64, "snapshot").await;
    rig.sim.drop_callbacks(true);
    let bob = rig.sim.user_uri(4);
    rig.sim.set_basic(&bob, "DND");
    rig.wait_published(CONTACTS as u64 + 1, "change found by the fail-safe fetch")
        .await;
    let (events, _) = rig.finish().await;
    let e = last_for(&events, &bob);
    assert_eq!(e["current"]["availability"], "DO_NOT_DISTURB");
    assert_eq!(e["resync"], true, "found by a poll, not a notification");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_throttling_and_node_restart_lose_nothing() {
    let rig = rig("failsafe_interval = \"1s\"", false).await;
    rig.wait_published(CONTACTS as u64, "snapshot").await;
    let mut expected = CONTACTS as u64;

    // Sessions expire: the next fetch gets 101 → log in, re-subscribe, fetch everything.
    rig.sim.expire_sessions();
    let u5 = rig.sim.user_uri(5);
    rig.sim.set_basic(&u5, "VACATION");
    expected += 1;
    rig.wait_published(expected, "change after session expiry")
        .await;

    // CPU throttling: no callbacks, fetches answered 503/210 — counted, then recovered.
    rig.sim.set_cpu_throttle(true);
    let u6 = rig.sim.user_uri(6);
    rig.sim.set_basic(&u6, "AWAY");
    let m = rig.bridge.metrics.clone();
    wait_for(
        "a throttled fetch to be counted",
        Duration::from_secs(30),
        || {
            metric_sum(
                &m.render(),
                "presence_connector_errors_total",
                &["error_type=\"throttled\""],
            ) > 0.0
        },
    )
    .await;
    assert_eq!(
        rig.published(),
        expected,
        "nothing can be fetched while throttled"
    );
    rig.sim.set_cpu_throttle(false);
    expected += 1;
    rig.wait_published(expected, "change after throttling ends")
        .await;

    // Node restart: every id is gone (133/101) → set up again.
    rig.sim.restart_node();
    let u7 = rig.sim.user_uri(7);
    rig.sim.set_basic(&u7, "UNAVAILABLE");
    expected += 1;
    rig.wait_published(expected, "change after node restart")
        .await;
    assert!(rig.errors("session") + rig.errors("gone") > 0.0);

    let (events, _) = rig.finish().await;
    let (distinct, _, _) = util::check_chains(&events);
    assert_eq!(
        distinct as u64, expected,
        "no spurious events after re-subscribing"
    );
    assert_eq!(last_for(&events, &u5)["current"]["activity"], "VACATION");
    assert_eq!(last_for(&events, &u6)["current"]["availability"], "AWAY");
    assert_eq!(last_for(&events, &u7)["current"]["availability"], "OFFLINE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_presence_round_trip_through_the_command_topic() {
    let rig = rig("", true).await;
    rig.wait_published(CONTACTS as u64, "snapshot").await;
    let url = rig.nats.as_ref().unwrap().url();
    let carol = rig.sim.user_uri(8);
    util::publish_commands(
        &url,
        &[
            format!(r#"{{"command_id":"p1","user":"{carol}","availability":"DO_NOT_DISTURB"}}"#),
            format!(
                r#"{{"command_id":"p2","user":"{carol}","availability":"BUSY","expiry_seconds":60}}"#
            ),
        ],
    );
    rig.wait_published(CONTACTS as u64 + 1, "the commanded change comes back")
        .await;
    assert_eq!(rig.sim.basic_of(&carol).as_deref(), Some("DND"));
    let m = rig.bridge.metrics.clone();
    wait_for("both commands handled", Duration::from_secs(30), || {
        metric_sum(&m.render(), "presence_commands_total", &[]) >= 2.0
    })
    .await;
    let results = util::command_results(&url, 2);
    assert_eq!(results[0]["status"], "APPLIED");
    assert_eq!(results[0]["connector"], "main");
    assert_eq!(results[1]["status"], "REJECTED");
    assert!(results[1]["error"].as_str().unwrap().contains("3600"));
    let (events, _) = rig.finish().await;
    let e = last_for(&events, &carol);
    assert_eq!(e["current"]["availability"], "DO_NOT_DISTURB");
    assert_eq!(e["resync"], false);
}

/// A hostile "PWS" answering garbage: every failure is a counted error, nothing panics,
/// and the connector keeps trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_xml_and_unexpected_statuses_are_counted_errors() {
    use axum::routing::{any, post};
    let app = axum::Router::new()
        .route(
            "/presence-service/users/{u}/sessions",
            post(|| async { (axum::http::StatusCode::CREATED, "<session><sessionKey>k") }),
        )
        .route(
            "/presence-service/{*rest}",
            any(|| async { (axum::http::StatusCode::IM_A_TEAPOT, "\u{0}<<<not xml") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[sinks.archive]
[connectors.pws.bad]
base_url = "http://{addr}/presence-service"
app_user = "a"
app_password = "p"
watchers = ["w"]
contacts = ["x@example.com"]
mode = "poll"
"#
        ),
    );
    let bridge = runtime::start(cfg).await.unwrap();
    let m = bridge.metrics.clone();
    wait_for("parse errors counted", Duration::from_secs(30), || {
        metric_sum(
            &m.render(),
            "presence_connector_errors_total",
            &["connector=\"bad\""],
        ) >= 2.0
    })
    .await;
    let port = bridge.http_addr.port();
    assert_eq!(support::http_status(port, "/health"), Some(200));
    bridge.shutdown();
    bridge.wait().await.unwrap();
}

/// The bridge is down while a contact changes: the notification goes nowhere. On start the
/// bridge subscribes again and fetches everything; only the contact that changed makes an
/// event, with the state from before the downtime as `previous`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_while_the_bridge_was_down_is_found_with_the_right_previous() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bridge = runtime::start(bridge_config(&sim, dir.path(), port, "", ""))
        .await
        .unwrap();
    let m = bridge.metrics.clone();
    wait_for("snapshot", Duration::from_secs(30), || {
        published(&m.render(), "archive") == CONTACTS as u64
    })
    .await;
    bridge.shutdown();
    bridge.wait().await.unwrap();

    let dave = sim.user_uri(9);
    let before = sim.basic_of(&dave).unwrap();
    let new = if before == "AWAY" { "BUSY" } else { "AWAY" };
    sim.set_basic(&dave, new);

    let bridge = runtime::start(bridge_config(&sim, dir.path(), port, "", ""))
        .await
        .unwrap();
    let m = bridge.metrics.clone();
    wait_for(
        "the change made while down",
        Duration::from_secs(30),
        || published(&m.render(), "archive") >= 1,
    )
    .await;
    let archive = bridge.archive_dir.clone().unwrap();
    bridge.shutdown();
    bridge.wait().await.unwrap();
    let events = json_lines(&run_python("read_archive.py", &[archive.to_str().unwrap()]));
    let (distinct, _, _) = util::check_chains(&events);
    assert_eq!(
        distinct as u64,
        CONTACTS as u64 + 1,
        "one new event, no spurious ones"
    );
    let e = last_for(&events, &dave);
    assert_eq!(e["op"], "CHANGE");
    assert_eq!(e["resync"], true);
    assert_eq!(e["previous"]["raw"]["pws.basic"], before.as_str());
    assert_eq!(e["current"]["raw"]["pws.basic"], new);
}

/// Poll mode (IM&P cannot reach the bridge): no callbacks used; changes are found by the
/// periodic fetch and flagged `resync`. Rich presence: activities and notes arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_with_rich_presence() {
    let rig = rig(
        "mode = \"poll\"\npoll_interval = \"200ms\"\npresence = \"rich\"",
        false,
    )
    .await;
    rig.wait_published(CONTACTS as u64, "snapshot").await;
    let erin = rig.sim.user_uri(10);
    assert!(rig
        .sim
        .set_rich(&erin, "on-the-phone", Some("with a customer")));
    rig.wait_published(CONTACTS as u64 + 1, "the rich change, found by polling")
        .await;
    let (events, _) = rig.finish().await;
    let e = last_for(&events, &erin);
    assert_eq!(e["current"]["availability"], "BUSY");
    assert_eq!(e["current"]["activity"], "IN_A_CALL");
    assert_eq!(e["current"]["note"], "with a customer");
    assert_eq!(e["resync"], true, "found by a poll");
    assert!(e["current"]["raw"]["pws.activities"]
        .as_str()
        .unwrap()
        .contains("on-the-phone"));
}
