//! Graph end-to-end latency: a user's presence changes in the (simulated) Graph → webhook
//! notification → coalesced `getPresencesByUserId` → outbox → published on a real NATS
//! JetStream → seen by a subscriber. 20 000 users over 31 service accounts (31
//! subscriptions of ≤ 650 ids), a steady change rate; also presence reads per change (the
//! coalescing should bring it towards 1/650).
//!
//! ```text
//! cargo bench --bench graph                   # rates 100/s and 1000/s, 15 s each
//! GRAPH_RATES=500 GRAPH_SECS=30 cargo bench --bench graph
//! ```

mod latency;
#[path = "../tests/support/mod.rs"]
mod support;

use presence_bridge::config::Config;
use presence_bridge::runtime;
use presence_bridge::simulate::graph::{self as sim, GraphSimConfig};
use support::{free_port, NatsServer};

const USERS: u32 = 20_000;
const ACCOUNTS: u32 = 31;
const STATES: [(&str, &str); 4] = [
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Away", "Away"),
    ("DoNotDisturb", "Presenting"),
];

async fn run_rate(rate: f64, secs: u64) -> (latency::Row, f64) {
    let nats = NatsServer::start();
    let simh = sim::start(
        "127.0.0.1:0".parse().unwrap(),
        GraphSimConfig {
            users: USERS + ACCOUNTS,
            ..GraphSimConfig::default()
        },
    )
    .await
    .unwrap();
    let d = GraphSimConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ids: Vec<String> = (1..=USERS)
        .map(|n| format!("\"{}\"", simh.user_id(n)))
        .collect();
    let accounts: Vec<String> = (USERS + 1..=USERS + ACCOUNTS)
        .map(|n| {
            format!(
                "{{ username = \"{}\", password = \"{}\" }}",
                simh.upn(n),
                d.user_password
            )
        })
        .collect();
    let text = format!(
        r#"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
[sinks.nats]
url = "{nats}"
[connectors.graph.bench]
tenant = "{tenant}"
client_id = "{cid}"
client_secret = "{secret}"
token_url = "{token}"
graph_url = "{graph}"
service_accounts = [{accounts}]
users = [{ids}]
notification_url = "http://127.0.0.1:{port}/graph/bench"
"#,
        data = dir.path().display(),
        nats = nats.url(),
        tenant = d.tenant,
        cid = d.client_id,
        secret = d.client_secret,
        token = simh.token_url(),
        graph = simh.base_url(),
        accounts = accounts.join(", "),
        ids = ids.join(", "),
    );
    let bridge = runtime::start(Config::from_toml(&text, "bench").unwrap())
        .await
        .unwrap();
    let matcher = latency::Matcher::subscribe(&nats.url(), "graph.availability").await;
    let startup = matcher.wait_snapshots(USERS as u64).await;
    let reads_before = simh.stats().reads;
    let total = matcher
        .drive(rate, secs, |rng| {
            let id = simh.user_id(rng.u32(1..=USERS));
            let cur = simh.presence_of(&id).map(|p| p.0).unwrap_or_default();
            let (a, act) = loop {
                let s = STATES[rng.usize(..STATES.len())];
                if s.0 != cur {
                    break s;
                }
            };
            simh.set_presence(&id, a, act);
            (id.to_lowercase(), a.to_string())
        })
        .await;
    let stats = simh.stats();
    let reads_per_change = (stats.reads - reads_before) as f64 / total as f64;
    eprintln!(
        "  rate {rate}/s: {} notification posts, {} presence reads during the run ({reads_per_change:.4} per change), {} throttled",
        stats.notification_posts,
        stats.reads - reads_before,
        stats.throttled
    );
    bridge.shutdown();
    let _ = bridge.wait().await;
    simh.shutdown().await;
    (matcher.row(rate, total, startup), reads_per_change)
}

fn main() {
    let rates = latency::env_list("GRAPH_RATES", &[100.0, 1000.0]);
    let secs = latency::env_secs("GRAPH_SECS", 15);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let mut per_change = Vec::new();
    for rate in rates {
        let (row, rpc) = rt.block_on(run_rate(rate, secs));
        per_change.push((rate, rpc));
        rows.push(row);
    }
    latency::print_table(
        &format!("Graph change → event on NATS, {USERS} users over {ACCOUNTS} subscriptions, {secs}s per rate"),
        &rows,
    );
    for (rate, rpc) in per_change {
        println!(
            "rate {rate}/s: {rpc:.4} getPresencesByUserId requests per change (1/650 = 0.0015)"
        );
    }
}
