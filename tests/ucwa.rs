//! The `ucwa` connector against the UCWA simulator over real HTTP: sign-in chain,
//! snapshot, change with the right previous, merged changes, resync and resume links,
//! application and token expiry, PGetReplaced, set presence of a signed-in user through
//! the command topic, UNSUPPORTED for a watched contact.

mod support;
mod util;

use presence_bridge::runtime::{self, BridgeHandle};
use presence_bridge::simulate::ucwa::{self as sim, UcwaSimConfig, UcwaSimHandle};
use serde_json::Value;
use std::time::Duration;
use support::{json_lines, run_python, NatsServer};
use util::{config, metric_sum, published, wait_for};

const CONTACTS: u32 = 20;

struct Rig {
    sim: UcwaSimHandle,
    bridge: BridgeHandle,
    _dir: tempfile::TempDir,
    nats: Option<NatsServer>,
}

/// Users 1..=CONTACTS are watched by two accounts (users CONTACTS+1 and CONTACTS+2).
async fn rig(extra: &str, with_nats: bool) -> Rig {
    let sim = sim::start(
        "127.0.0.1:0".parse().unwrap(),
        UcwaSimConfig {
            users: CONTACTS + 2,
            password: "pw".into(),
            ..UcwaSimConfig::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nats = with_nats.then(NatsServer::start);
    let commands = match &nats {
        Some(n) => format!(
            "[sinks.nats]\nurl = \"{u}\"\n[commands.nats]\nurl = \"{u}\"\n",
            u = n.url()
        ),
        None => String::new(),
    };
    let contacts: Vec<String> = (1..=CONTACTS)
        .map(|n| format!("\"{}\"", sim.user_uri(n)))
        .collect();
    std::env::set_var("UCWA_TEST_PASSWORD", "pw");
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[sinks.archive]
{commands}
[connectors.ucwa.lync]
autodiscover_url = "{ad}"
contacts = [{contacts}]
accounts = [
  {{ username = "{a1}", password = "${{UCWA_TEST_PASSWORD}}" }},
  {{ username = "{a2}", password = "${{UCWA_TEST_PASSWORD}}" }},
]
{extra}
"#,
            ad = sim.autodiscover_url(),
            contacts = contacts.join(", "),
            a1 = sim.upn(CONTACTS + 1),
            a2 = sim.upn(CONTACTS + 2),
        ),
    );
    let bridge = runtime::start(cfg).await.unwrap();
    Rig {
        sim,
        bridge,
        _dir: dir,
        nats,
    }
}

impl Rig {
    async fn wait_published(&self, n: u64, what: &str) {
        let m = self.bridge.metrics.clone();
        wait_for(what, Duration::from_secs(30), || {
            published(&m.render(), "archive") >= n
        })
        .await;
    }

    async fn finish(self) -> Vec<Value> {
        let archive = self.bridge.archive_dir.clone().unwrap();
        self.bridge.shutdown();
        self.bridge.wait().await.unwrap();
        drop(self.nats);
        json_lines(&run_python("read_archive.py", &[archive.to_str().unwrap()]))
    }

    fn errors(&self, kind: &str) -> f64 {
        metric_sum(
            &self.bridge.metrics.render(),
            "presence_connector_errors_total",
            &[&format!("error_type=\"{kind}\"")],
        )
    }
}

/// Sets `user` to `want`, or to `alt` when it already is `want`; returns what was set.
fn change_to(
    sim: &UcwaSimHandle,
    user: &str,
    want: &'static str,
    alt: &'static str,
) -> &'static str {
    let now = sim.presence_of(user).unwrap().0;
    let to = if now == want { alt } else { want };
    assert!(sim.set_presence(user, to, None, None));
    to
}

fn availability(ucwa: &str) -> &'static str {
    match ucwa {
        "Online" => "AVAILABLE",
        "Busy" => "BUSY",
        "IdleBusy" => "BUSY_IDLE",
        "DoNotDisturb" => "DO_NOT_DISTURB",
        "BeRightBack" => "BE_RIGHT_BACK",
        "Away" => "AWAY",
        "Offline" => "OFFLINE",
        other => panic!("{other}"),
    }
}

fn canonical(uri: &str) -> String {
    presence_bridge::model::canonical_user(uri)
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
    rig.wait_published(CONTACTS as u64, "snapshot of every contact")
        .await;
    let alice = rig.sim.user_uri(3);
    let (before, _) = rig.sim.presence_of(&alice).unwrap();
    let new = if before == "Busy" { "Away" } else { "Busy" };
    assert!(rig
        .sim
        .set_presence(&alice, new, Some("on-the-phone"), None));
    rig.wait_published(CONTACTS as u64 + 1, "the change").await;
    let events = rig.finish().await;
    let (distinct, _, per_user) = util::check_chains(&events);
    assert_eq!(distinct as u64, CONTACTS as u64 + 1);
    assert_eq!(per_user.len() as u32, CONTACTS);
    let e = last_for(&events, &canonical(&alice));
    assert_eq!(e["op"], "CHANGE");
    assert_eq!(e["resync"], false);
    assert_eq!(e["source"]["kind"], "ucwa");
    assert_eq!(e["current"]["raw"]["ucwa.availability"], new);
    assert_eq!(e["previous"]["raw"]["ucwa.availability"], before.as_str());
    assert_eq!(e["current"]["activity"], "IN_A_CALL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_resume_pget_replaced_and_expiry_lose_nothing() {
    let rig = rig("", false).await;
    rig.wait_published(CONTACTS as u64, "snapshot").await;
    let mut expected = CONTACTS as u64;

    // resync link: every contact is fetched again; only real changes become events.
    let u4 = rig.sim.user_uri(4);
    rig.sim.force_resync();
    let to4 = change_to(&rig.sim, &u4, "DoNotDisturb", "Online");
    expected += 1;
    rig.wait_published(expected, "change around a resync").await;

    // resume link: subscriptions gone → subscribed again, initial states fetched.
    rig.sim.force_resume();
    let u5 = rig.sim.user_uri(5);
    let to5 = change_to(&rig.sim, &u5, "BeRightBack", "Online");
    expected += 1;
    rig.wait_published(expected, "change after resume").await;

    // 409 PGetReplaced: counted, the pending GET is sent again, nothing is lost.
    rig.sim.replace_pending_gets();
    let sim = rig.sim.clone();
    wait_for("a replaced pending GET", Duration::from_secs(10), || {
        sim.stats().pget_replaced >= 1
    })
    .await;
    let u3 = rig.sim.user_uri(3);
    let now3 = rig.sim.presence_of(&u3).unwrap().0;
    let to3 = if now3 == "Away" { "Busy" } else { "Away" };
    assert!(rig.sim.set_presence(&u3, to3, None, None));
    expected += 1;
    rig.wait_published(expected, "change after PGetReplaced")
        .await;
    let m = rig.bridge.metrics.clone();
    wait_for("PGetReplaced counted", Duration::from_secs(10), || {
        metric_sum(
            &m.render(),
            "presence_connector_errors_total",
            &["error_type=\"pget_replaced\""],
        ) >= 1.0
    })
    .await;

    // Application gone (404 ApplicationNotFound) → new application and subscriptions.
    rig.sim.expire_applications();
    let u6 = rig.sim.user_uri(6);
    let to6 = change_to(&rig.sim, &u6, "Offline", "Online");
    expected += 1;
    rig.wait_published(expected, "change after the application expired")
        .await;

    // Tokens expire → 401 → a new token, same application.
    rig.sim.expire_tokens();
    let u7 = rig.sim.user_uri(7);
    let to7 = change_to(&rig.sim, &u7, "IdleBusy", "Online");
    expected += 1;
    rig.wait_published(expected, "change after the token expired")
        .await;
    assert!(rig.errors("application_gone") > 0.0);

    let events = rig.finish().await;
    let (distinct, _, _) = util::check_chains(&events);
    assert_eq!(distinct as u64, expected, "no spurious events");
    for (u, to) in [(&u4, to4), (&u5, to5), (&u6, to6), (&u7, to7)] {
        assert_eq!(
            last_for(&events, &canonical(u))["current"]["availability"],
            availability(to)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_own_presence_through_the_command_topic() {
    let rig = rig("", true).await;
    rig.wait_published(CONTACTS as u64, "snapshot").await;
    let url = rig.nats.as_ref().unwrap().url();
    let account = rig.sim.upn(CONTACTS + 1);
    let watched = canonical(&rig.sim.user_uri(2));
    util::publish_commands(
        &url,
        &[
            format!(r#"{{"command_id":"u1","user":"{account}","availability":"BUSY"}}"#),
            format!(r#"{{"command_id":"u2","user":"{watched}","availability":"AWAY"}}"#),
        ],
    );
    let m = rig.bridge.metrics.clone();
    wait_for("both commands handled", Duration::from_secs(30), || {
        metric_sum(&m.render(), "presence_commands_total", &[]) >= 2.0
    })
    .await;
    assert_eq!(rig.sim.presence_of(&account).unwrap().0, "Busy");
    let results = util::command_results(&url, 2);
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r["command_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("u1")["status"], "APPLIED");
    assert_eq!(by_id("u2")["status"], "UNSUPPORTED");
    assert!(by_id("u2")["error"]
        .as_str()
        .unwrap()
        .contains("signed-in user"));
    rig.finish().await;
}

/// A hostile "UCWA" answering garbage JSON: counted errors, no panic, the bridge stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_counted_error() {
    use axum::routing::any;
    let app = axum::Router::new().route(
        "/{*rest}",
        any(|| async { (axum::http::StatusCode::OK, "{\"_links\": [[[[") }),
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
[connectors.ucwa.bad]
autodiscover_url = "http://{addr}/autodiscover"
contacts = ["x@example.com"]
accounts = [{{ username = "u@example.com", password = "p" }}]
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
    assert_eq!(
        support::http_status(bridge.http_addr.port(), "/health"),
        Some(200)
    );
    bridge.shutdown();
    bridge.wait().await.unwrap();
}

/// Subscriptions are extended on a timer; one the server no longer knows (extend → 404) is
/// created again, and changes keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_subscriptions_are_recreated_by_the_renewal() {
    let rig = rig(
        "subscription_minutes = 10\nrenew_interval = \"300ms\"",
        false,
    )
    .await;
    rig.wait_published(CONTACTS as u64, "snapshot").await;
    let created = rig.sim.stats().subscriptions_created;
    assert_eq!(created, 2, "one subscription per account");
    rig.sim.expire_subscriptions();
    let sim = rig.sim.clone();
    wait_for(
        "subscriptions created again",
        Duration::from_secs(30),
        || sim.stats().subscriptions_created >= created + 2,
    )
    .await;
    let u8 = rig.sim.user_uri(8);
    assert!(rig.sim.set_presence(&u8, "Away", Some("off-work"), None));
    rig.wait_published(CONTACTS as u64 + 1, "change after re-subscribing")
        .await;
    let events = rig.finish().await;
    let (distinct, _, _) = util::check_chains(&events);
    assert_eq!(distinct as u64, CONTACTS as u64 + 1, "no spurious events");
    let e = last_for(&events, &canonical(&u8));
    assert_eq!(e["current"]["availability"], "AWAY");
    assert_eq!(e["current"]["activity"], "OFF_WORK");
}
