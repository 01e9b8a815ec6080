//! The `sip` connector against real SIP peers: Kamailio with the presence modules (plain
//! and with MD5 / SHA-256 digest), SIPp notifiers (PIDF, XPIDF, dialog-info, RLS, hostile
//! bodies), SIPp and baresip publishers. Events are read back from the Avro archive with
//! fastavro (an independent decoder).

mod support;
mod util;

use presence_bridge::runtime::{self, BridgeHandle};
use presence_bridge::state::state_key;
use serde_json::Value;
use std::time::Duration;
use support::sip::{
    free_sip_port, require_sip_peers, sipp_run, sipp_spawn, Baresip, BaresipOpts, Kamailio,
    KamailioOpts,
};
use support::{json_lines, run_python, NatsServer};
use util::{command_results, config, metric_sum, publish_commands, wait_for};

const CONNECTOR: &str = "pbx";
const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    bridge: BridgeHandle,
    sip_port: u16,
    _dir: tempfile::TempDir,
    nats: Option<NatsServer>,
}

/// A bridge with one SIP connector `pbx` talking to `server`, archiving events. `extra` is
/// appended inside `[connectors.sip.pbx]`.
async fn rig(server: &str, extra: &str, with_nats: bool) -> Rig {
    require_sip_peers();
    let dir = tempfile::tempdir().unwrap();
    let nats = with_nats.then(NatsServer::start);
    let commands = match &nats {
        Some(n) => format!(
            "[sinks.nats]\nurl = \"{u}\"\n[commands.nats]\nurl = \"{u}\"\n",
            u = n.url()
        ),
        None => String::new(),
    };
    let sip_port = free_sip_port();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[sinks.archive]
{commands}
[connectors.sip.{CONNECTOR}]
server = "{server}"
domain = "127.0.0.1"
bind = "127.0.0.1:{sip_port}"
watcher = "sip:watcher@127.0.0.1"
subscribe_rate = 200.0
t1 = "50ms"
{extra}
"#
        ),
    );
    let bridge = runtime::start(cfg).await.unwrap();
    Rig {
        bridge,
        sip_port,
        _dir: dir,
        nats,
    }
}

impl Rig {
    fn metrics(&self) -> String {
        self.bridge.metrics.render()
    }

    fn errors(&self, kind: &str) -> f64 {
        metric_sum(
            &self.metrics(),
            "presence_connector_errors_total",
            &[&format!("error_type=\"{kind}\"")],
        )
    }

    fn subscriptions(&self, state: &str) -> f64 {
        metric_sum(
            &self.metrics(),
            "presence_subscriptions",
            &[&format!("state=\"{state}\"")],
        )
    }

    /// The bridge's current state of `user` (availability, activity), from its store.
    fn state(&self, user: &str) -> Option<(String, Option<String>)> {
        self.bridge
            .store
            .get_state(&state_key(CONNECTOR, user))
            .unwrap()
            .map(|s| {
                (
                    s.state.availability.as_str().to_string(),
                    s.state.activity.map(|a| a.as_str().to_string()),
                )
            })
    }

    async fn wait_state(&self, user: &str, availability: &str, activity: Option<&str>) {
        let want = Some((availability.to_string(), activity.map(str::to_string)));
        wait_for(
            &format!("{user} to be {availability}/{activity:?}"),
            WAIT,
            || self.state(user) == want,
        )
        .await;
    }

    /// Shuts the bridge down (un-SUBSCRIBE, publications removed) and returns the
    /// archived events, decoded by fastavro.
    async fn finish(self) -> Vec<Value> {
        let archive = self.bridge.archive_dir.clone().unwrap();
        self.bridge.shutdown();
        self.bridge.wait().await.unwrap();
        drop(self.nats);
        json_lines(&run_python("read_archive.py", &[archive.to_str().unwrap()]))
    }
}

/// Runs a blocking harness call (SIPp, baresip) without stalling the bridge's runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn for_user<'a>(events: &'a [Value], user: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["user"] == user).collect()
}

fn avail(e: &Value) -> (&str, &str) {
    (
        e["current"]["availability"].as_str().unwrap_or(""),
        e["current"]["activity"].as_str().unwrap_or(""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_publish_gives_snapshot_then_change_with_previous() {
    let kam = Kamailio::start(KamailioOpts::default());
    let rig = rig(
        &kam.target(),
        r#"contacts = ["alice"]
events = ["presence"]"#,
        false,
    )
    .await;
    // Nobody has published for alice: Kamailio's empty NOTIFY is "no state" → OFFLINE.
    rig.wait_state("alice@127.0.0.1", "OFFLINE", None).await;
    blocking(|| {
        sipp_run(
            "publish-pidf.xml",
            &[
                "-s",
                "alice",
                "-key",
                "basic",
                "open",
                "-key",
                "activity",
                "meeting",
                "-key",
                "note",
                "In a meeting",
                "-key",
                "expires",
                "600",
            ],
            &kam.target(),
        )
    })
    .assert_success();
    rig.wait_state("alice@127.0.0.1", "BUSY", Some("IN_A_MEETING"))
        .await;
    let events = rig.finish().await;
    let alice = for_user(&events, "alice@127.0.0.1");
    assert_eq!(alice.len(), 2, "{alice:#?}");
    assert_eq!(alice[0]["op"], "SNAPSHOT");
    assert_eq!(avail(alice[0]), ("OFFLINE", ""));
    assert_eq!(alice[0]["current"]["raw"]["sip.subscription"], "no-state");
    assert_eq!(alice[1]["op"], "CHANGE");
    assert_eq!(avail(alice[1]), ("BUSY", "IN_A_MEETING"));
    assert_eq!(alice[1]["current"]["note"], "In a meeting");
    assert_eq!(alice[1]["previous"]["availability"], "OFFLINE");
    assert_eq!(alice[1]["sequence"].as_i64(), Some(2));
    assert_eq!(alice[1]["source"]["kind"], "sip");
}

async fn digest_against(alg: &'static str) {
    let kam = Kamailio::start(KamailioOpts {
        auth: Some(alg),
        ..Default::default()
    });
    std::env::set_var("SIP_TEST_PASSWORD", "secret");
    let rig = rig(
        &kam.target(),
        r#"contacts = ["alice"]
password = "${SIP_TEST_PASSWORD}""#,
        false,
    )
    .await;
    rig.wait_state("alice@127.0.0.1", "OFFLINE", None).await;
    assert_eq!(rig.subscriptions("active"), 1.0);
    assert_eq!(rig.errors("auth"), 0.0);
    // Kamailio logs the algorithm it challenged with; both requests carried credentials.
    let events = rig.finish().await;
    assert_eq!(for_user(&events, "alice@127.0.0.1").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_md5_against_kamailio() {
    digest_against("MD5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_sha256_against_kamailio() {
    digest_against("SHA-256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_wrong_password_fails_cleanly() {
    let kam = Kamailio::start(KamailioOpts {
        auth: Some("SHA-256"),
        ..Default::default()
    });
    let rig = rig(
        &kam.target(),
        r#"contacts = ["alice"]
password = "not-the-password"
retry_delay = "1h""#,
        false,
    )
    .await;
    let m = rig.bridge.metrics.clone();
    wait_for("an authentication failure", WAIT, || {
        metric_sum(
            &m.render(),
            "presence_connector_errors_total",
            &["error_type=\"auth\""],
        ) >= 1.0
    })
    .await;
    assert_eq!(rig.subscriptions("active"), 0.0);
    assert_eq!(rig.state("alice@127.0.0.1"), None);
    // The bridge itself is fine: healthy, and it shuts down cleanly.
    assert_eq!(
        support::http_status(rig.bridge.http_addr.port(), "/health"),
        Some(200)
    );
    let events = rig.finish().await;
    assert!(events.is_empty(), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_pidf_refresh_in_dialog_before_expiry_and_unsubscribe_on_shutdown() {
    let mut notifier = sipp_spawn("notifier.xml", &["-base_cseq", "1000"]);
    // 10 s granted, T1 = 50 ms (Timer F 3.2 s): the refresh is due after 6.8 s.
    let rig = rig(
        &notifier.target(),
        r#"contacts = ["alice"]
expires = "10s""#,
        false,
    )
    .await;
    rig.wait_state("alice@127.0.0.1", "OFFLINE", None).await;
    let refresh = blocking(|| {
        notifier.wait_for_message("the in-dialog refresh", Duration::from_secs(20), |m| {
            m.method() == Some("SUBSCRIBE") && m.header("To").is_some_and(|t| t.contains("tag="))
        })
    });
    let msgs = notifier.messages_so_far();
    let initial = msgs
        .iter()
        .find(|m| m.method() == Some("SUBSCRIBE"))
        .unwrap();
    assert_eq!(refresh.header("Call-ID"), initial.header("Call-ID"));
    assert!(refresh.header("CSeq").unwrap().starts_with("2 "));
    assert_eq!(refresh.header("Expires"), Some("10"));
    // Shutdown sends Expires: 0 in the dialog; the notifier ends its scenario with the
    // terminated NOTIFY we answer with 200 — SIPp exits 0 only if all of that happened.
    let events = rig.finish().await;
    notifier.wait().assert_success();
    let alice = for_user(&events, "alice@127.0.0.1");
    let got: Vec<(&str, &str)> = alice.iter().map(|e| avail(e)).collect();
    assert_eq!(
        got,
        [("AVAILABLE", ""), ("BUSY", "IN_A_CALL"), ("OFFLINE", "")],
        "{alice:#?}"
    );
    assert_eq!(alice[1]["previous"]["availability"], "AVAILABLE");
    assert_eq!(alice[2]["previous"]["activity"], "IN_A_CALL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_restart_recovers_subscriptions() {
    let mut kam = Kamailio::start(KamailioOpts::default());
    let rig = rig(
        &kam.target(),
        r#"contacts = ["alice"]
expires = "10s""#,
        false,
    )
    .await;
    rig.wait_state("alice@127.0.0.1", "OFFLINE", None).await;
    // Kamailio keeps subscriptions in memory only: after a restart our refresh gets 481
    // and a brand-new subscription must follow.
    kam.restart();
    let m = rig.bridge.metrics.clone();
    wait_for("the refresh to be refused with 481", WAIT, || {
        metric_sum(
            &m.render(),
            "presence_connector_errors_total",
            &["error_type=\"refresh_481\""],
        ) >= 1.0
    })
    .await;
    wait_for("the new subscription", WAIT, || {
        metric_sum(&m.render(), "presence_subscriptions", &["state=\"active\""]) == 1.0
    })
    .await;
    blocking(|| {
        sipp_run(
            "publish-pidf.xml",
            &[
                "-s", "alice", "-key", "basic", "open", "-key", "activity", "away", "-key", "note",
                "Lunch", "-key", "expires", "600",
            ],
            &kam.target(),
        )
    })
    .assert_success();
    rig.wait_state("alice@127.0.0.1", "AWAY", None).await;
    let events = rig.finish().await;
    let alice = for_user(&events, "alice@127.0.0.1");
    assert_eq!(alice.last().unwrap()["previous"]["availability"], "OFFLINE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialog_info_notifier_gives_in_a_call() {
    let mut notifier = sipp_spawn("notifier-dialog.xml", &["-base_cseq", "1000"]);
    let rig = rig(
        &notifier.target(),
        r#"[[connectors.sip.pbx.targets]]
uri = "alice"
events = ["dialog"]"#,
        false,
    )
    .await;
    rig.wait_state("alice@127.0.0.1", "BUSY", Some("IN_A_CALL"))
        .await;
    let events = rig.finish().await;
    notifier.wait().assert_success();
    let alice = for_user(&events, "alice@127.0.0.1");
    let raw: Vec<&str> = alice
        .iter()
        .map(|e| e["current"]["raw"]["sip.dialog"].as_str().unwrap_or(""))
        .collect();
    // idle (v0) → ringing (v1, partial) → in a call (v2, partial).
    assert_eq!(raw, ["idle", "ringing", "in-a-call"], "{alice:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xpidf_notifier() {
    let mut notifier = sipp_spawn("notifier-xpidf.xml", &["-base_cseq", "1000"]);
    let rig = rig(&notifier.target(), r#"contacts = ["alice"]"#, false).await;
    rig.wait_state("alice@127.0.0.1", "OFFLINE", None).await;
    let events = rig.finish().await;
    notifier.wait().assert_success();
    let alice = for_user(&events, "alice@127.0.0.1");
    let got: Vec<(&str, &str)> = alice.iter().map(|e| avail(e)).collect();
    assert_eq!(
        got,
        [("AVAILABLE", ""), ("BUSY", "IN_A_CALL"), ("OFFLINE", "")],
        "{alice:#?}"
    );
    assert_eq!(alice[1]["current"]["raw"]["sip.xpidf.status"], "inuse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_notifier_gives_one_user_per_resource() {
    let mut notifier = sipp_spawn("notifier-rls.xml", &["-base_cseq", "1000"]);
    let rig = rig(
        &notifier.target(),
        r#"lists = ["sip:buddies@127.0.0.1"]"#,
        false,
    )
    .await;
    rig.wait_state("alice@127.0.0.1", "BUSY", Some("IN_A_CALL"))
        .await;
    rig.wait_state("carol@127.0.0.1", "UNKNOWN", None).await;
    let events = rig.finish().await;
    notifier.wait().assert_success();
    // The list SUBSCRIBE carried Supported: eventlist (the notifier logs it).
    let alice = for_user(&events, "alice@127.0.0.1");
    assert_eq!(alice.len(), 2, "{alice:#?}");
    assert_eq!(avail(alice[0]), ("BUSY", ""));
    assert_eq!(avail(alice[1]), ("BUSY", "IN_A_CALL"));
    // bob is pending (no state part): no event for him.
    assert!(for_user(&events, "bob@127.0.0.1").is_empty());
    assert_eq!(
        for_user(&events, "carol@127.0.0.1")[0]["current"]["raw"]["sip.subscription"],
        "terminated;reason=rejected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_and_malformed_sip_are_counted_not_fatal() {
    let mut notifier = sipp_spawn("notifier-hostile.xml", &["-base_cseq", "1000"]);
    let rig = rig(&notifier.target(), r#"contacts = ["alice"]"#, false).await;
    rig.wait_state("alice@127.0.0.1", "AVAILABLE", None).await;
    assert_eq!(rig.errors("body_parse"), 2.0);
    // Garbage datagrams and a NOTIFY for no dialog at our SIP port.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{}", rig.sip_port);
    for junk in [
        &b"\x00\x01\x02garbage"[..],
        b"NOTIFY sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n",
        &[b'A'; 60000][..],
    ] {
        sock.send_to(junk, &to).unwrap();
    }
    let stale = "NOTIFY sip:watcher@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKstale1\r\nFrom: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:watcher@127.0.0.1>;tag=nosuch\r\nCall-ID: stale@x\r\nCSeq: 5 NOTIFY\r\nEvent: presence\r\nSubscription-State: active\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(stale.as_bytes(), &to).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 481"), "{answer}");
    assert_eq!(
        support::http_status(rig.bridge.http_addr.port(), "/health"),
        Some(200)
    );
    let events = rig.finish().await;
    notifier.wait().assert_success();
    let alice = for_user(&events, "alice@127.0.0.1");
    assert_eq!(alice.len(), 1, "{alice:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_publish_from_sipp_and_baresip() {
    // No upstream server is needed for inbound PUBLISH; point `server` at a closed port.
    let rig = rig(
        &format!("127.0.0.1:{}", free_sip_port()),
        r#"[connectors.sip.pbx.inbound_publish]
enabled = true
min_expires = "1s""#,
        false,
    )
    .await;
    let bridge = format!("127.0.0.1:{}", rig.sip_port);
    // initial → refresh (no body) → modify → bogus tag (412) → remove.
    let out = blocking(|| sipp_run("publish-lifecycle.xml", &["-s", "alice"], &bridge));
    out.assert_success();
    assert_eq!(out.statuses("PUBLISH"), [200, 200, 200, 412, 200]);
    let etags: Vec<String> = out
        .received()
        .iter()
        .filter_map(|m| m.header("SIP-ETag").map(str::to_string))
        .collect();
    assert_eq!(etags.len(), 3, "{etags:?}");
    assert!(etags[0] != etags[1] && etags[1] != etags[2], "{etags:?}");
    rig.wait_state("alice@127.0.0.1", "OFFLINE", None).await;

    // baresip announces itself by PUBLISH, as Zoiper does.
    let mut phone = blocking(|| {
        Baresip::spawn(
            rig.sip_port,
            &BaresipOpts {
                user: "bob".into(),
                commands: vec!["/presence_online".into()],
                ..Default::default()
            },
        )
    });
    rig.wait_state("bob@127.0.0.1", "AVAILABLE", None).await;
    blocking(|| phone.stop());
    let events = rig.finish().await;
    let alice = for_user(&events, "alice@127.0.0.1");
    assert!(alice.len() >= 2, "{alice:#?}");
    assert_eq!(alice[0]["op"], "SNAPSHOT");
    assert_eq!(alice.last().unwrap()["current"]["availability"], "OFFLINE");
    assert!(!for_user(&events, "bob@127.0.0.1").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_presence_command_publishes_to_kamailio_and_a_watcher_sees_it() {
    let kam = Kamailio::start(KamailioOpts::default());
    let rig = rig(&kam.target(), r#"contacts = ["alice"]"#, true).await;
    rig.wait_state("alice@127.0.0.1", "OFFLINE", None).await;
    let nats = rig.nats.as_ref().unwrap().url();
    publish_commands(
        &nats,
        &[serde_json::json!({
            "command_id": "c-dnd",
            "action": "SET_PRESENCE",
            "user": "alice@127.0.0.1",
            "availability": "DO_NOT_DISTURB",
            "note": "Focus time",
        })
        .to_string()],
    );
    let results = command_results(&nats, 1);
    assert_eq!(results[0]["status"], "APPLIED", "{results:#?}");
    // Our own subscription sees the composed state come back from Kamailio.
    rig.wait_state("alice@127.0.0.1", "DO_NOT_DISTURB", None)
        .await;
    // An independent watcher (SIPp) gets our PIDF in its NOTIFY.
    let watch = blocking(|| {
        sipp_run(
            "subscribe.xml",
            &[
                "-s",
                "alice",
                "-key",
                "event",
                "presence",
                "-key",
                "accept",
                "application/pidf+xml",
                "-key",
                "expires",
                "10",
            ],
            &kam.target(),
        )
    });
    watch.assert_success();
    let notify = &watch.requests("NOTIFY")[0];
    assert!(notify.body().contains("Focus time"), "{}", notify.body());
    let events = rig.finish().await;
    let alice = for_user(&events, "alice@127.0.0.1");
    assert_eq!(
        alice.last().unwrap()["current"]["availability"],
        "DO_NOT_DISTURB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_transport_against_kamailio() {
    let kam = Kamailio::start(KamailioOpts::default());
    let rig = rig(
        &kam.target(),
        r#"contacts = ["bob"]
transport = "tcp""#,
        false,
    )
    .await;
    rig.wait_state("bob@127.0.0.1", "OFFLINE", None).await;
    blocking(|| {
        sipp_run(
            "publish-pidf.xml",
            &[
                "-s",
                "bob",
                "-key",
                "basic",
                "open",
                "-key",
                "activity",
                "on-the-phone",
                "-key",
                "note",
                "On a call",
                "-key",
                "expires",
                "600",
            ],
            &kam.target(),
        )
    })
    .assert_success();
    rig.wait_state("bob@127.0.0.1", "BUSY", Some("IN_A_CALL"))
        .await;
    let events = rig.finish().await;
    assert_eq!(for_user(&events, "bob@127.0.0.1").len(), 2);
}
