//! UCWA end-to-end latency: a contact's presence changes on the (simulated) Lync/Skype
//! server → event on the pending GET → GET contactPresence → normalize → outbox →
//! published on a real NATS JetStream → seen by a subscriber. 5 000 contacts on one
//! signed-in account, a steady change rate driven by this bench, p50/p99/max per rate; the
//! highest rate shows events/s at saturation. The simulator's aggregation hold is 0 (a
//! real server holds medium-priority events up to `medium`, 5 s by default).
//!
//! ```text
//! cargo bench --bench ucwa                    # rates 100/s, 1000/s, 4000/s; 15 s each
//! UCWA_RATES=500 UCWA_SECS=30 cargo bench --bench ucwa
//! ```

mod latency;
#[path = "../tests/support/mod.rs"]
mod support;

use presence_bridge::config::Config;
use presence_bridge::model::canonical_user;
use presence_bridge::runtime;
use presence_bridge::simulate::ucwa::{self as sim, UcwaSimConfig};
use support::{free_port, NatsServer};

const CONTACTS: u32 = 5_000;
const STATUSES: [&str; 4] = ["Online", "Busy", "Away", "DoNotDisturb"];

async fn run_rate(rate: f64, secs: u64) -> latency::Row {
    let nats = NatsServer::start();
    let simh = sim::start(
        "127.0.0.1:0".parse().unwrap(),
        UcwaSimConfig {
            users: CONTACTS + 1,
            password: "pw".into(),
            ..UcwaSimConfig::default()
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
[connectors.ucwa.bench]
autodiscover_url = "{ad}"
accounts = [{{ username = "{a}", password = "pw" }}]
contacts = [{contacts}]
contacts_per_request = 1000
"#,
        data = dir.path().display(),
        nats = nats.url(),
        ad = simh.autodiscover_url(),
        a = simh.upn(CONTACTS + 1),
        contacts = contacts.join(", ")
    );
    let bridge = runtime::start(Config::from_toml(&text, "bench").unwrap())
        .await
        .unwrap();
    let matcher = latency::Matcher::subscribe(&nats.url(), "ucwa.availability").await;
    let startup = matcher.wait_snapshots(CONTACTS as u64).await;
    let total = matcher
        .drive(rate, secs, |rng| {
            let uri = simh.user_uri(rng.u32(1..=CONTACTS));
            let cur = simh.presence_of(&uri).map(|p| p.0).unwrap_or_default();
            let next = loop {
                let s = STATUSES[rng.usize(..STATUSES.len())];
                if s != cur {
                    break s;
                }
            };
            simh.set_presence(&uri, next, None, None);
            (canonical_user(&uri), next.to_string())
        })
        .await;
    let stats = simh.stats();
    eprintln!(
        "  rate {rate}/s: {} event responses, {} events, {} presence GETs",
        stats.event_responses, stats.events_sent, stats.presence_gets
    );
    bridge.shutdown();
    let _ = bridge.wait().await;
    simh.shutdown().await;
    matcher.row(rate, total, startup)
}

fn main() {
    let rates = latency::env_list("UCWA_RATES", &[100.0, 1000.0, 4000.0]);
    let secs = latency::env_secs("UCWA_SECS", 15);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<_> = rates
        .into_iter()
        .map(|rate| rt.block_on(run_rate(rate, secs)))
        .collect();
    latency::print_table(
        &format!("UCWA change → event on NATS, {CONTACTS} contacts, {secs}s per rate"),
        &rows,
    );
}
