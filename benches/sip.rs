//! SIP end-to-end: a presentity's state changes on the (simulated) presence server →
//! NOTIFY over UDP → answered, parsed, normalized → outbox → published on a real NATS
//! JetStream → seen by a subscriber. 2 000 presentities, one presence subscription each;
//! p50/p99/max per change rate, and NOTIFYs/s at the highest rate (saturation).
//!
//! Also the start-up: 2 000 SUBSCRIBEs under the configured throttle (`subscribe_rate`),
//! reported as subscriptions per second achieved.
//!
//! ```text
//! cargo bench --bench sip                           # rates 100/s, 1000/s, 4000/s; 15 s each
//! SIP_RATES=8000,16000 SIP_SECS=10 cargo bench --bench sip
//! SIP_SUB_RATES=100,1000,100000 cargo bench --bench sip   # throttle only (SIP_RATES=)
//! ```

mod latency;
#[path = "../tests/support/mod.rs"]
mod support;

use presence_bridge::config::Config;
use presence_bridge::runtime;
use presence_bridge::simulate::sip::{self as sim, Basic, Presence, SipSimConfig};
use std::time::Instant;
use support::{free_port, NatsServer};

const PRESENTITIES: u32 = 2_000;
const ACTIVITIES: [&str; 4] = ["busy", "away", "meeting", "on-the-phone"];

struct Setup {
    nats: NatsServer,
    simh: sim::SipSimHandle,
    bridge: runtime::BridgeHandle,
    _dir: tempfile::TempDir,
}

async fn setup(subscribe_rate: f64) -> Setup {
    let nats = NatsServer::start();
    let simh = sim::start(
        "127.0.0.1:0".parse().unwrap(),
        SipSimConfig {
            users: PRESENTITIES,
            domain: "example.com".into(),
            packages: vec![sim::Package::Presence],
            ..SipSimConfig::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let contacts: Vec<String> = (1..=PRESENTITIES)
        .map(|n| format!("\"{}\"", simh.user_aor(n)))
        .collect();
    let text = format!(
        r#"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[sinks.nats]
url = "{nats}"
[connectors.sip.bench]
server = "{server}"
domain = "example.com"
bind = "127.0.0.1:{sip}"
watcher = "sip:presence-bridge@example.com"
contacts = [{contacts}]
subscribe_rate = {subscribe_rate}
"#,
        data = dir.path().display(),
        port = free_port(),
        sip = free_port(),
        nats = nats.url(),
        server = simh.addr(),
        contacts = contacts.join(", ")
    );
    let bridge = runtime::start(Config::from_toml(&text, "bench").unwrap())
        .await
        .unwrap();
    Setup {
        nats,
        simh,
        bridge,
        _dir: dir,
    }
}

async fn teardown(s: Setup) {
    s.bridge.shutdown();
    let _ = s.bridge.wait().await;
    s.simh.shutdown().await;
    drop(s.nats);
}

async fn run_rate(rate: f64, secs: u64) -> latency::Row {
    let s = setup(100_000.0).await;
    let matcher = latency::Matcher::subscribe(&s.nats.url(), "sip.activities").await;
    let startup = matcher.wait_snapshots(PRESENTITIES as u64).await;
    let before = s.simh.stats();
    let t0 = Instant::now();
    let total = matcher
        .drive(rate, secs, |rng| {
            let aor = s.simh.user_aor(rng.u32(1..=PRESENTITIES));
            let cur = s.simh.presence_of(&aor).and_then(|p| p.activity);
            let next = loop {
                let a = ACTIVITIES[rng.usize(..ACTIVITIES.len())];
                if cur.as_deref() != Some(a) {
                    break a;
                }
            };
            s.simh
                .set_presence(
                    &aor,
                    Presence {
                        basic: Basic::Open,
                        activity: Some(next.to_string()),
                        note: None,
                    },
                )
                .unwrap();
            (aor.to_lowercase(), next.to_string())
        })
        .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let after = s.simh.stats();
    eprintln!(
        "  rate {rate}/s: {} NOTIFYs sent in {elapsed:.1}s ({:.0}/s), {} failed",
        after.notifies_sent - before.notifies_sent,
        (after.notifies_sent - before.notifies_sent) as f64 / elapsed,
        after.notifies_failed - before.notifies_failed,
    );
    teardown(s).await;
    matcher.row(rate, total, startup)
}

/// Start-up under the throttle: time until every presentity's first NOTIFY became an event.
async fn run_throttle(subscribe_rate: f64) -> (f64, f64) {
    let s = setup(subscribe_rate).await;
    let matcher = latency::Matcher::subscribe(&s.nats.url(), "sip.activities").await;
    let secs = matcher.wait_snapshots(PRESENTITIES as u64).await;
    teardown(s).await;
    (subscribe_rate, PRESENTITIES as f64 / secs)
}

fn main() {
    let rates = latency::env_list("SIP_RATES", &[100.0, 1000.0, 4000.0]);
    let sub_rates = latency::env_list("SIP_SUB_RATES", &[200.0, 1000.0, 100_000.0]);
    let secs = latency::env_secs("SIP_SECS", 15);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let throttle: Vec<(f64, f64)> = sub_rates
        .into_iter()
        .map(|r| rt.block_on(run_throttle(r)))
        .collect();
    let rows: Vec<_> = rates
        .into_iter()
        .map(|rate| rt.block_on(run_rate(rate, secs)))
        .collect();
    println!("\nSIP start-up: {PRESENTITIES} SUBSCRIBEs → first NOTIFY → event on NATS");
    println!("{:>16} {:>16}", "subscribe_rate", "achieved/s");
    for (cfg, got) in throttle {
        println!("{cfg:>16} {got:>16.0}");
    }
    latency::print_table(
        &format!(
            "SIP change → NOTIFY → event on NATS, {PRESENTITIES} presentities, {secs}s per rate"
        ),
        &rows,
    );
}
