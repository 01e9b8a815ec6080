//! Shared harness of the per-source latency benches (`pws`, `ucwa`): a NATS subscriber
//! that matches every published change with the simulated change that caused it, a
//! steady-rate driver, and the report table.
#![allow(dead_code)]

use futures::StreamExt;
use presence_bridge::codec;
use presence_bridge::model::ChangeOp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn env_list(name: &str, default: &[f64]) -> Vec<f64> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

pub fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One row of the report.
pub struct Row {
    pub rate: f64,
    pub changes: usize,
    pub matched: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub snapshot_secs: f64,
}

/// Matches published changes (by user and the raw source value under `raw_key`) with the
/// changes the bench made, recording the delay in milliseconds.
pub struct Matcher {
    pending: Arc<Mutex<HashMap<(String, String), Instant>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
    snapshots: Arc<AtomicU64>,
}

impl Matcher {
    pub async fn subscribe(nats_url: &str, raw_key: &'static str) -> Matcher {
        let m = Matcher {
            pending: Arc::default(),
            latencies: Arc::default(),
            snapshots: Arc::default(),
        };
        let client = async_nats::connect(nats_url).await.expect("nats connect");
        let mut sub = client
            .subscribe("presence.changes.>")
            .await
            .expect("subscribe");
        let (pending, latencies, snapshots) =
            (m.pending.clone(), m.latencies.clone(), m.snapshots.clone());
        tokio::spawn(async move {
            let _client = client;
            while let Some(msg) = sub.next().await {
                let now = Instant::now();
                let Ok(c) = codec::decode_change(&msg.payload[10..]) else {
                    continue;
                };
                if c.op == ChangeOp::Snapshot {
                    snapshots.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let value = c.current.raw.get(raw_key).cloned().unwrap_or_default();
                if let Some(t0) = pending.lock().unwrap().remove(&(c.user, value)) {
                    latencies
                        .lock()
                        .unwrap()
                        .push(now.duration_since(t0).as_secs_f64() * 1000.0);
                }
            }
        });
        m
    }

    /// Waits for the start-up snapshot of `n` users; returns how long it took.
    pub async fn wait_snapshots(&self, n: u64) -> f64 {
        let t = Instant::now();
        while self.snapshots.load(Ordering::Relaxed) < n {
            assert!(t.elapsed() < Duration::from_secs(120), "start-up snapshot");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.elapsed().as_secs_f64()
    }

    /// Makes `rate × secs` changes at a steady rate; `change` applies one and returns the
    /// (canonical user, raw value) its event will carry.
    pub async fn drive(
        &self,
        rate: f64,
        secs: u64,
        mut change: impl FnMut(&mut fastrand::Rng) -> (String, String),
    ) -> usize {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let total = (rate * secs as f64) as usize;
        for _ in 0..total {
            tick.tick().await;
            // Record before applying, so a fast event never arrives unmatched.
            let at = Instant::now();
            let key = change(&mut rng);
            self.pending.lock().unwrap().insert(key, at);
        }
        // Let the last ones arrive (changes merged by the source never match).
        let t = Instant::now();
        while !self.pending.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        total
    }

    pub fn row(&self, rate: f64, changes: usize, snapshot_secs: f64) -> Row {
        let mut l = self.latencies.lock().unwrap().clone();
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Row {
            rate,
            changes,
            matched: l.len(),
            p50: pct(&l, 0.5),
            p99: pct(&l, 0.99),
            max: l.last().copied().unwrap_or(f64::NAN),
            snapshot_secs,
        }
    }
}

pub fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "rate/s", "changes", "matched", "p50 ms", "p99 ms", "max ms", "snapshot s"
    );
    for r in rows {
        println!(
            "{:>8} {:>8} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>12.2}",
            r.rate, r.changes, r.matched, r.p50, r.p99, r.max, r.snapshot_secs
        );
    }
    println!("(matched < changes: a user changed again before the first change was fetched; the source merges them)");
}
