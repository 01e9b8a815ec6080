//! PWS end-to-end latency: a contact's presence changes on the (simulated) IM&P server →
//! notification → fetch → normalize → outbox → published on a real NATS JetStream → seen
//! by a subscriber. 10 000 contacts over two 5 000-contact subscriptions, a steady change
//! rate driven by this bench (so every change has a start time), p50/p99/max per rate.
//!
//! ```text
//! cargo bench --bench pws                     # rates 100/s and 1000/s, 20 s each
//! PWS_RATES=50,500,2000 PWS_SECS=30 cargo bench --bench pws
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use presence_bridge::codec;
use presence_bridge::config::Config;
use presence_bridge::runtime;
use presence_bridge::simulate::pws::{self as sim, PwsSimConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{free_port, NatsServer};

const CONTACTS: u32 = 10_000;
const STATUSES: [&str; 4] = ["AVAILABLE", "BUSY", "AWAY", "DND"];

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
                let status = c.current.raw.get("pws.basic").cloned().unwrap_or_default();
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
        let user = simh.user_uri(rng.u32(1..=CONTACTS));
        let cur = simh.basic_of(&user).unwrap_or_default();
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
        simh.set_basic(&user, next);
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
        "  rate {rate}/s: startup snapshot of {CONTACTS} in {startup:.2}s; {} callbacks, {} fetches",
        stats.callbacks_sent, stats.fetches
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
    let rates = env_list("PWS_RATES", &[100.0, 1000.0]);
    let secs: u64 = std::env::var("PWS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for rate in rates {
        rows.push((rate, rt.block_on(run_rate(rate, secs))));
    }
    println!("\nPWS change → event on NATS, {CONTACTS} contacts, {secs}s per rate, 2 cores");
    println!(
        "{:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "rate/s", "changes", "matched", "p50 ms", "p99 ms", "max ms", "snapshot s"
    );
    for (rate, (total, matched, p50, p99, max, startup)) in rows {
        println!(
            "{rate:>8} {total:>8} {matched:>8} {p50:>10.1} {p99:>10.1} {max:>10.1} {startup:>12.2}"
        );
    }
}
