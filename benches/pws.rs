//! PWS end-to-end latency: a contact's presence changes on the (simulated) IM&P server →
//! notification → fetch → normalize → outbox → published on a real NATS JetStream → seen
//! by a subscriber. 10 000 contacts over two 5 000-contact subscriptions, a steady change
//! rate driven by this bench (so every change has a start time), p50/p99/max per rate.
//!
//! ```text
//! cargo bench --bench pws                     # rates 100/s and 1000/s, 20 s each
//! PWS_RATES=50,500,2000 PWS_SECS=30 cargo bench --bench pws
//! ```

mod latency;
#[path = "../tests/support/mod.rs"]
mod support;

use presence_bridge::config::Config;
use presence_bridge::runtime;
use presence_bridge::simulate::pws::{self as sim, PwsSimConfig};
use support::{free_port, NatsServer};

const CONTACTS: u32 = 10_000;
const STATUSES: [&str; 4] = ["AVAILABLE", "BUSY", "AWAY", "DND"];

async fn run_rate(rate: f64, secs: u64) -> latency::Row {
    let nats = NatsServer::start();
    let simh = sim::start(
        "127.0.0.1:0".parse().unwrap(),
        PwsSimConfig {
            users: CONTACTS + 2,
            ..PwsSimConfig::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let contacts: Vec<String> = (1..=CONTACTS)
        .map(|n| format!("\"{}\"", simh.user_uri(n)))
        .collect();
    let text = format!(
        r#"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[sinks.nats]
url = "{nats}"
[connectors.pws.bench]
base_url = "{base}"
app_user = "pwsapp"
app_password = "pwsapp-secret"
watchers = ["{w1}", "{w2}"]
contacts = [{contacts}]
callback_url = "http://127.0.0.1:{port}/pws/bench"
"#,
        data = dir.path().display(),
        nats = nats.url(),
        base = simh.base_url(),
        w1 = simh.user_name(CONTACTS + 1),
        w2 = simh.user_name(CONTACTS + 2),
        contacts = contacts.join(", ")
    );
    let bridge = runtime::start(Config::from_toml(&text, "bench").unwrap())
        .await
        .unwrap();
    let matcher = latency::Matcher::subscribe(&nats.url(), "pws.basic").await;
    let startup = matcher.wait_snapshots(CONTACTS as u64).await;
    let total = matcher
        .drive(rate, secs, |rng| {
            let user = simh.user_uri(rng.u32(1..=CONTACTS));
            let cur = simh.basic_of(&user).unwrap_or_default();
            let next = loop {
                let s = STATUSES[rng.usize(..STATUSES.len())];
                if s != cur {
                    break s;
                }
            };
            simh.set_basic(&user, next);
            (user, next.to_string())
        })
        .await;
    let stats = simh.stats();
    eprintln!(
        "  rate {rate}/s: {} callbacks, {} fetches",
        stats.callbacks_sent, stats.fetches
    );
    bridge.shutdown();
    let _ = bridge.wait().await;
    simh.shutdown().await;
    matcher.row(rate, total, startup)
}

fn main() {
    let rates = latency::env_list("PWS_RATES", &[100.0, 1000.0]);
    let secs = latency::env_secs("PWS_SECS", 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<_> = rates
        .into_iter()
        .map(|rate| rt.block_on(run_rate(rate, secs)))
        .collect();
    latency::print_table(
        &format!("PWS change → event on NATS, {CONTACTS} contacts, {secs}s per rate"),
        &rows,
    );
}
