//! The `graph` connector against the Graph simulator over real HTTP: the validation
//! handshake, snapshot by resync, change with the right previous, wrong clientState
//! rejected, 429 honoured, a lost subscription re-created and resynced, set presence round
//! trip through the command topic.

mod support;
mod util;

use presence_bridge::runtime::{self, BridgeHandle};
use presence_bridge::simulate::graph::{self as sim, GraphSimConfig, GraphSimHandle};
use serde_json::Value;
use std::time::Duration;
use support::{free_port, json_lines, run_python, NatsServer};
use util::{config, metric_sum, published, wait_for};

const USERS: u32 = 20;

struct Rig {
    sim: GraphSimHandle,
    bridge: BridgeHandle,
    port: u16,
    _dir: tempfile::TempDir,
    nats: Option<NatsServer>,
}

async fn rig(extra: &str, with_nats: bool) -> Rig {
    let sim = sim::start(
        "127.0.0.1:0".parse().unwrap(),
        GraphSimConfig {
            users: USERS + 1,
            ..GraphSimConfig::default()
        },
    )
    .await
    .unwrap();
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
    let users: Vec<String> = (1..=USERS)
        .map(|n| format!("\"{}\"", sim.user_id(n)))
        .collect();
    std::env::set_var("GRAPH_TEST_SECRET", "graph-sim-secret");
    let mut cfg = config(
        dir.path(),
        &format!(
            r#"
[sinks.archive]
{commands}
[connectors.graph.teams]
tenant = "contoso"
client_id = "6731de76-14a6-49ae-97bc-6eba6914391e"
client_secret = "${{GRAPH_TEST_SECRET}}"
token_url = "{token}"
graph_url = "{graph}"
service_accounts = [{{ username = "{svc}", password = "graph-user-password" }}]
users = [{users}]
notification_url = "http://127.0.0.1:{port}/graph/teams"
coalesce_window = "20ms"
{extra}
"#,
            token = sim.token_url(),
            graph = sim.base_url(),
            svc = sim.upn(USERS + 1),
            users = users.join(", "),
        ),
    );
    cfg.http.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let bridge = runtime::start(cfg).await.unwrap();
    Rig {
        sim,
        bridge,
        port,
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
}

fn last_for<'a>(events: &'a [Value], user: &str) -> &'a Value {
    events
        .iter()
        .rev()
        .find(|e| e["user"] == user)
        .unwrap_or_else(|| panic!("no event for {user}"))
}

fn other(a: &str) -> (&'static str, &'static str) {
    if a == "Busy" {
        ("Away", "Away")
    } else {
        ("Busy", "InACall")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_snapshot_change_and_client_state() {
    let rig = rig("", false).await;
    rig.wait_published(USERS as u64, "snapshot by the initial resync")
        .await;
    assert!(rig.sim.stats().validations_ok >= 1, "validation handshake");
    let u = rig.sim.user_id(3);
    let (before, _) = rig.sim.presence_of(&u).unwrap();
    let (a, act) = other(&before);
    assert!(rig.sim.set_presence(&u, a, act));
    rig.wait_published(USERS as u64 + 1, "the notified change")
        .await;

    // A notification with the wrong clientState is refused and counted.
    let client = reqwest::Client::new();
    let body = serde_json::json!({"value":[{"subscriptionId":"nope","clientState":"forged","changeType":"updated","resource":format!("communications/presences('{u}')")}]});
    let r = client
        .post(format!("http://127.0.0.1:{}/graph/teams", rig.port))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let m = rig.bridge.metrics.clone();
    assert!(
        metric_sum(
            &m.render(),
            "presence_connector_errors_total",
            &["error_type=\"unknown_subscription\""]
        ) >= 1.0
    );
    // Validation handshake answered by the bridge itself.
    let r = client
        .post(format!(
            "http://127.0.0.1:{}/graph/teams?validationToken=a%20b%3Cc",
            rig.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "a b<c");

    let events = rig.finish().await;
    let (distinct, _, _) = util::check_chains(&events);
    assert_eq!(distinct as u64, USERS as u64 + 1);
    let e = last_for(&events, &u);
    assert_eq!(e["op"], "CHANGE");
    assert_eq!(e["resync"], false);
    assert_eq!(e["current"]["raw"]["graph.availability"], a);
    assert_eq!(e["previous"]["raw"]["graph.availability"], before.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_token_expiry_and_lost_subscription_lose_nothing() {
    let rig = rig("renew_interval = \"300ms\"", false).await;
    rig.wait_published(USERS as u64, "snapshot").await;
    let mut expected = USERS as u64;

    // 429 with a fractional Retry-After: waited out, then fetched.
    rig.sim.throttle_next(2);
    let u4 = rig.sim.user_id(4);
    let (a, act) = other(&rig.sim.presence_of(&u4).unwrap().0);
    assert!(rig.sim.set_presence(&u4, a, act));
    expected += 1;
    rig.wait_published(expected, "change after throttling")
        .await;
    assert!(rig.sim.stats().throttled >= 1);

    // Tokens revoked: a 401 gets a new token and the request again.
    rig.sim.expire_tokens();
    let u6 = rig.sim.user_id(6);
    let (a6, act6) = other(&rig.sim.presence_of(&u6).unwrap().0);
    assert!(rig.sim.set_presence(&u6, a6, act6));
    expected += 1;
    rig.wait_published(expected, "change after the tokens expired")
        .await;

    // Subscription gone: the renewal gets 404, creates it again and resyncs.
    let created = rig.sim.stats().subscriptions_created;
    rig.sim.expire_subscriptions();
    let u5 = rig.sim.user_id(5);
    let (a5, act5) = other(&rig.sim.presence_of(&u5).unwrap().0);
    assert!(rig.sim.set_presence(&u5, a5, act5));
    expected += 1;
    rig.wait_published(expected, "change found by the resync after re-creation")
        .await;
    assert!(rig.sim.stats().subscriptions_created > created);

    let events = rig.finish().await;
    let (distinct, _, _) = util::check_chains(&events);
    assert_eq!(distinct as u64, expected, "no spurious events");
    assert_eq!(last_for(&events, &u5)["resync"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_preferred_presence_round_trip() {
    let rig = rig("", true).await;
    rig.wait_published(USERS as u64, "snapshot").await;
    let url = rig.nats.as_ref().unwrap().url();
    let u = rig.sim.user_id(7);
    let target = if rig.sim.presence_of(&u).unwrap().0 == "DoNotDisturb" {
        "BUSY"
    } else {
        "DO_NOT_DISTURB"
    };
    util::publish_commands(
        &url,
        &[
            format!(r#"{{"command_id":"g1","user":"{u}","availability":"{target}"}}"#),
            format!(
                r#"{{"command_id":"g2","user":"{u}","availability":"BUSY","activity":"PRESENTING"}}"#
            ),
        ],
    );
    rig.wait_published(USERS as u64 + 1, "the commanded change comes back")
        .await;
    let m = rig.bridge.metrics.clone();
    wait_for("both commands handled", Duration::from_secs(30), || {
        metric_sum(&m.render(), "presence_commands_total", &[]) >= 2.0
    })
    .await;
    let results = util::command_results(&url, 2);
    assert_eq!(results[0]["status"], "APPLIED");
    assert_eq!(
        results[1]["status"], "REJECTED",
        "not a valid preferred pair"
    );
    let events = rig.finish().await;
    let e = last_for(&events, &u);
    assert_eq!(e["current"]["availability"], target);
}

/// Lifecycle notifications: `missed` → the shard is fetched again (lost notifications
/// recovered, flagged resync); `subscriptionRemoved` → the subscription is created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_missed_and_subscription_removed_are_recovered() {
    let rig = rig("", false).await;
    rig.wait_published(USERS as u64, "snapshot").await;

    rig.sim.drop_notifications(true);
    let u9 = rig.sim.user_id(9);
    let (a, act) = other(&rig.sim.presence_of(&u9).unwrap().0);
    assert!(rig.sim.set_presence(&u9, a, act));
    rig.sim.drop_notifications(false);
    rig.sim.emit_lifecycle("missed");
    rig.wait_published(USERS as u64 + 1, "the lost change, found by the resync")
        .await;

    let created = rig.sim.stats().subscriptions_created;
    rig.sim.emit_lifecycle("subscriptionRemoved");
    let sim = rig.sim.clone();
    wait_for(
        "subscription created again",
        Duration::from_secs(30),
        || sim.stats().subscriptions_created > created,
    )
    .await;
    let u10 = rig.sim.user_id(10);
    let (a10, act10) = other(&rig.sim.presence_of(&u10).unwrap().0);
    assert!(rig.sim.set_presence(&u10, a10, act10));
    rig.wait_published(USERS as u64 + 2, "a change through the new subscription")
        .await;

    let events = rig.finish().await;
    let (distinct, _, _) = util::check_chains(&events);
    assert_eq!(distinct as u64, USERS as u64 + 2, "no spurious events");
    assert_eq!(last_for(&events, &u9)["resync"], true);
    assert_eq!(
        last_for(&events, &u9)["current"]["raw"]["graph.availability"],
        a
    );
    assert_eq!(
        last_for(&events, &u10)["current"]["raw"]["graph.availability"],
        a10
    );
}

/// Rich notifications: the presence arrives encrypted (RSA-OAEP key transport, HMAC-SHA256,
/// AES-CBC) and is decrypted by the bridge; no presence read is needed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_rich_notifications_need_no_fetch() {
    use base64::Engine;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let spki = key.to_public_key().to_public_key_der().unwrap();
    std::env::set_var("GRAPH_TEST_KEY", pem.as_str());
    let cert = base64::engine::general_purpose::STANDARD.encode(spki.as_bytes());
    let rig = rig(
        &format!(
            "encryption = {{ certificate = \"{cert}\", certificate_id = \"bridge-cert-1\", private_key = \"${{GRAPH_TEST_KEY}}\" }}"
        ),
        false,
    )
    .await;
    rig.wait_published(USERS as u64, "snapshot").await;
    let reads = rig.sim.stats().reads;
    let u = rig.sim.user_id(11);
    let (a, act) = other(&rig.sim.presence_of(&u).unwrap().0);
    assert!(rig.sim.set_presence(&u, a, act));
    rig.wait_published(USERS as u64 + 1, "the decrypted change")
        .await;
    assert_eq!(
        rig.sim.stats().reads,
        reads,
        "no fetch for a rich notification"
    );
    let m = rig.bridge.metrics.clone();
    assert_eq!(
        metric_sum(
            &m.render(),
            "presence_connector_errors_total",
            &["error_type=\"decrypt\""]
        ),
        0.0
    );
    let events = rig.finish().await;
    let e = last_for(&events, &u);
    assert_eq!(e["current"]["raw"]["graph.availability"], a);
    assert_eq!(e["resync"], false);
}

/// `command_api = "session"`: setPresence with the app's session (valid pairs only, 5 min–4 h);
/// and hostile webhook bodies are refused and counted, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_api_commands_and_hostile_webhook_bodies() {
    let rig = rig("command_api = \"session\"", true).await;
    rig.wait_published(USERS as u64, "snapshot").await;
    let url = rig.nats.as_ref().unwrap().url();
    // A user not in DoNotDisturb (which would outrank the app's Busy session).
    let u = (1..=USERS)
        .map(|n| rig.sim.user_id(n))
        .find(|id| {
            let a = rig.sim.presence_of(id).unwrap().0;
            a != "DoNotDisturb" && a != "Busy"
        })
        .expect("some user is neither DND nor Busy");
    util::publish_commands(
        &url,
        &[
            format!(
                r#"{{"command_id":"s1","user":"{u}","availability":"BUSY","activity":"IN_A_CALL","expiry_seconds":600}}"#
            ),
            format!(
                r#"{{"command_id":"s2","user":"{u}","availability":"BUSY","activity":"PRESENTING"}}"#
            ),
            format!(
                r#"{{"command_id":"s3","user":"{u}","availability":"AWAY","expiry_seconds":60}}"#
            ),
        ],
    );
    let m = rig.bridge.metrics.clone();
    wait_for("the commands handled", Duration::from_secs(30), || {
        metric_sum(&m.render(), "presence_commands_total", &[]) >= 3.0
    })
    .await;
    assert_eq!(rig.sim.presence_of(&u).unwrap().0, "Busy");
    let results = util::command_results(&url, 3);
    let status: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["APPLIED", "REJECTED", "REJECTED"], "{results:#?}");
    assert!(results[2]["error"].as_str().unwrap().contains("PT5M..PT4H"));

    let client = reqwest::Client::new();
    let hook = format!("http://127.0.0.1:{}/graph/teams", rig.port);
    let r = client
        .post(&hook)
        .body("{\"value\": [[[[ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(&hook)
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "bodies over 1 MiB are refused");
    assert!(
        metric_sum(
            &m.render(),
            "presence_connector_errors_total",
            &["error_type=\"notification_parse\""]
        ) >= 1.0
    );
    assert_eq!(
        support::http_status(rig.port, "/health"),
        Some(200),
        "still up"
    );
    rig.finish().await;
}
