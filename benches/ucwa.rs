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

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use presence_bridge::codec;
use presence_bridge::config::Config;
use presence_bridge::runtime;
use presence_bridge::simulate::ucwa::{self as sim, UcwaSimConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{free_port, NatsServer};

const CONTACTS: u32 = 5_000;
const STATUSES: [&str; 4] = ["Online", "Busy", "Away", "DoNotDisturb"];

fn env_list(name: &str, default: &[f64]) -> Vec<f64> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run_rate(rate: f64, secs: u64) -> (usize, usize, f64, f64, f64, f64) {
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
    let cfg = Config::from_toml(&text, "bench").unwrap();
    let bridge = runtime::start(cfg).await.unwrap();

    // Subscriber: decode each event, match it with the change that caused it.
    let pending: Arc<Mutex<HashMap<(String, String), Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("presence.changes.>").await.unwrap();
    let snapshot_seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let pending = pending.clone();
        let latencies = latencies.clone();
        let snapshot_seen = snapshot_seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let now = Instant::now();
                let Ok(c) = codec::decode_change(&msg.payload[10..]) else {
                    continue;
                };
                if c.op == presence_bridge::model::ChangeOp::Snapshot {
                    snapshot_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                let status = c
                    .current
                    .raw
                    .get("ucwa.availability")
                    .cloned()
                    .unwrap_or_default();
                if let Some(t0) = pending.lock().unwrap().remove(&(c.user, status)) {
                    latencies
                        .lock()
                        .unwrap()
                        .push(now.duration_since(t0).as_secs_f64() * 1000.0);
                }
            }
        });
    }
    let t = Instant::now();
    while snapshot_seen.load(std::sync::atomic::Ordering::Relaxed) < CONTACTS as u64 {
        assert!(t.elapsed() < Duration::from_secs(120), "startup snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let startup = t.elapsed().as_secs_f64();

    // Steady changes: one every 1/rate seconds, each to a different status.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (rate * secs as f64) as usize;
    for _ in 0..total {
        tick.tick().await;
        let uri = simh.user_uri(rng.u32(1..=CONTACTS));
        let user = presence_bridge::model::canonical_user(&uri);
        let cur = simh.presence_of(&uri).map(|p| p.0).unwrap_or_default();
        let next = loop {
            let s = STATUSES[rng.usize(..STATUSES.len())];
            if s != cur {
                break s;
            }
        };
        pending
            .lock()
            .unwrap()
            .insert((user.clone(), next.to_string()), Instant::now());
        simh.set_presence(&uri, next, None, None);
    }
    // Let the last ones arrive.
    let t = Instant::now();
    while !pending.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let stats = simh.stats();
    eprintln!(
        "  rate {rate}/s: startup snapshot of {CONTACTS} in {startup:.2}s; {} event responses, {} events, {} presence GETs",
        stats.event_responses, stats.events_sent, stats.presence_gets
    );
    bridge.shutdown();
    let _ = bridge.wait().await;
    simh.shutdown().await;
    (
        total,
        l.len(),
        pct(&l, 0.5),
        pct(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
        startup,
    )
}

fn main() {
    let rates = env_list("UCWA_RATES", &[100.0, 1000.0, 4000.0]);
    let secs: u64 = std::env::var("UCWA_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for rate in rates {
        rows.push((rate, rt.block_on(run_rate(rate, secs))));
    }
    println!("\nUCWA change → event on NATS, {CONTACTS} contacts, {secs}s per rate, 2 cores");
    println!(
        "{:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "rate/s", "changes", "matched", "p50 ms", "p99 ms", "max ms", "snapshot s"
    );
    for (rate, (total, matched, p50, p99, max, startup)) in rows {
        println!(
            "{rate:>8} {total:>8} {matched:>8} {p50:>10.1} {p99:>10.1} {max:>10.1} {startup:>12.2}"
        );
    }
    println!("(matched < changes: a contact changed again before its first change was fetched; UCWA merges them)");
}
