//! End-to-end load bench on REAL brokers: `nats-server -js` and the Kafka-protocol broker
//! `tansu`, started on free loopback ports by the test support module.
//!
//! ```text
//! cargo bench --bench e2e                       # 200k changes + 10k snapshots per sink
//! E2E_EVENTS=500000 E2E_SINKS=nats cargo bench --bench e2e
//! ```
//!
//! Per sink (NATS first, then Kafka):
//! a. the whole bridge (`runtime::start`) with an unlimited synthetic connector
//!    (`users` snapshots + `E2E_EVENTS` changes), timed from start until every event is
//!    acknowledged by the sink (`presence_events_published_total` == users + events);
//! b. raw broker ingest of the same number of pre-encoded, pre-framed records with the same
//!    key/subject and headers, published directly (rdkafka / async-nats, many in flight).
//!
//! Prints a table (bridge events/s, raw events/s, ratio, p50/p99 of
//! `presence_publish_latency_seconds`) and a CPU breakdown per thread group (pipeline thread,
//! tokio workers, tokio blocking pool, librdkafka threads, broker process) for each run.
//!
//! Environment: `E2E_EVENTS` (default 200000), `E2E_USERS` (10000), `E2E_SINKS`
//! (`nats,kafka`), `E2E_SKIP_RAW=1`, `E2E_TIMEOUT_SECS` (600 per run), `RUST_LOG` (bridge logs
//! to stderr), plus the support module's `NATS_SERVER_BIN` / `TANSU_BIN`.

#[path = "../tests/support/mod.rs"]
mod support;

use async_nats::jetstream;
use bytes::Bytes;
use presence_bridge::codec::{self, Framing};
use presence_bridge::config::{demo_config, KafkaSinkConfig, NatsAuth, NatsSinkConfig};
use presence_bridge::connectors::synthetic::SyntheticConfig;
use presence_bridge::model::{Activity, Availability, Observation, PresenceState, SourceRef};
use presence_bridge::pipeline::make_change;
use presence_bridge::sinks::subject_token;
use presence_bridge::state::StoredState;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{KafkaBroker, NatsServer};

const CONNECTOR: &str = "bench";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc (clock ticks, 100 per second on Linux)

const TICKS_PER_SEC: f64 = 100.0;

/// Per-thread (tid → (name, ticks)) of this process.
fn thread_ticks() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((name, t)) = stat_ticks(&e.path().join("stat")) {
            out.insert(tid, (name, t));
        }
    }
    out
}

/// (comm, utime + stime) of a /proc stat file.
fn stat_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s[open + 1..close].to_string();
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // After "pid (comm) ": state=0 … utime=11 stime=12 cutime=13 cstime=14
    let t = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((name, t))
}

/// Child processes of this process (the brokers): pid → (name, ticks incl. reaped children).
fn child_ticks() -> HashMap<u32, (String, u64)> {
    let me = std::process::id().to_string();
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = s.rfind(')') else { continue };
        let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
        if f.get(1) != Some(&me.as_str()) {
            continue;
        }
        if let Some(t) = stat_ticks(&e.path().join("stat")) {
            out.insert(pid, t);
        }
    }
    out
}

struct CpuSnapshot {
    threads: HashMap<u32, (String, u64)>,
    children: HashMap<u32, (String, u64)>,
    at: Instant,
}

fn cpu_snapshot() -> CpuSnapshot {
    CpuSnapshot {
        threads: thread_ticks(),
        children: child_ticks(),
        at: Instant::now(),
    }
}

/// Groups threads: the runtime's worker threads exist before the bench spawns anything, so
/// any later `tokio-runtime-w` thread is from the blocking pool.
fn cpu_report(before: &CpuSnapshot, workers: &HashSet<u32>) -> String {
    let after = cpu_snapshot();
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let mut groups: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for (tid, (name, t)) in &after.threads {
        let prev = before.threads.get(tid).map(|x| x.1).unwrap_or(0);
        let d = t.saturating_sub(prev);
        let g = if name.starts_with("tokio") {
            if workers.contains(tid) {
                "tokio workers".to_string()
            } else {
                "tokio blocking pool".to_string()
            }
        } else if name.starts_with("rdk:") {
            "librdkafka threads".to_string()
        } else if name.starts_with("e2e") {
            "main (bench driver)".to_string()
        } else {
            name.clone()
        };
        let e = groups.entry(g).or_default();
        e.0 += d;
        e.1 += 1;
    }
    for (pid, (name, t)) in &after.children {
        let prev = before.children.get(pid).map(|x| x.1).unwrap_or(0);
        let e = groups.entry(format!("[broker] {name}")).or_default();
        e.0 += t.saturating_sub(prev);
        e.1 += 1;
    }
    let total: u64 = groups.values().map(|v| v.0).sum();
    let mut rows: Vec<_> = groups.into_iter().filter(|(_, v)| v.0 > 0).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let mut s = format!(
        "    CPU over {wall:.2}s wall: {:.2} core-s total ({:.0}% of {} cores)\n",
        total as f64 / TICKS_PER_SEC,
        100.0 * total as f64 / TICKS_PER_SEC / wall / cores() as f64,
        cores()
    );
    for (g, (t, n)) in rows {
        s += &format!(
            "      {:<24} {:>7.2} core-s  {:>5.1}% of one core  ({n} thread(s))\n",
            g,
            t as f64 / TICKS_PER_SEC,
            100.0 * t as f64 / TICKS_PER_SEC / wall
        );
    }
    s
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------------------------
// Metrics text parsing

/// Sum of the samples of `name` (exact metric name, any labels) whose labels contain `filter`.
fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Quantile upper bound from a cumulative Prometheus histogram (`<name>_bucket{le=..}`).
fn histogram_quantile(text: &str, name: &str, filter: &str, q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&bucket) && l.contains(filter))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

// ---------------------------------------------------------------------------------------------
// a. the bridge

#[derive(Clone, Copy)]
enum SinkKind {
    Nats,
    Kafka,
}

impl SinkKind {
    fn name(self) -> &'static str {
        match self {
            SinkKind::Nats => "nats",
            SinkKind::Kafka => "kafka",
        }
    }
}

struct BridgeResult {
    events: u64,
    secs: f64,
    pipeline_secs: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    complete: bool,
}

async fn run_bridge(
    sink: SinkKind,
    url: &str,
    users: u32,
    changes: u64,
    timeout: Duration,
    workers: &HashSet<u32>,
) -> BridgeResult {
    let dir = tempfile::Builder::new()
        .prefix("pb-e2e-bridge-")
        .tempdir()
        .expect("tempdir");
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = demo_config(dir.path(), listen, users, 0.0);
    config.sinks.archive = None;
    config.connectors.synthetic.clear();
    config.connectors.synthetic.insert(
        CONNECTOR.to_string(),
        SyntheticConfig {
            users,
            rate: 0.0,
            repeat_ratio: 0.0,
            max_changes: Some(changes),
            ..SyntheticConfig::default()
        },
    );
    match sink {
        SinkKind::Nats => {
            config.sinks.nats = Some(NatsSinkConfig {
                url: url.to_string(),
                stream: "PRESENCE_BRIDGE_BENCH".into(),
                subject_prefix: "bridge.changes".into(),
                max_in_flight: 4096,
                duplicate_window: Duration::from_secs(600),
                auth: NatsAuth::default(),
            })
        }
        SinkKind::Kafka => {
            config.sinks.kafka = Some(KafkaSinkConfig {
                brokers: url.to_string(),
                topic: "bridge.changes".into(),
                compression: "lz4".into(),
                linger_ms: 5,
                message_timeout: Duration::from_secs(30),
                create_topic: true,
                partitions: 1,
                replication_factor: 1,
                properties: BTreeMap::new(),
            })
        }
    }
    let problems = config.validate();
    assert!(problems.is_empty(), "bench config: {problems:?}");
    let expected = users as u64 + changes;
    let filter = format!("sink=\"{}\"", sink.name());

    let cpu = cpu_snapshot();
    let t0 = Instant::now();
    let handle = presence_bridge::runtime::start(config)
        .await
        .expect("start bridge");
    let mut pipeline_secs = None;
    let mut last_report = Instant::now();
    let complete = loop {
        let text = handle.metrics.render();
        if pipeline_secs.is_none()
            && metric_sum(&text, "presence_changes_total", "") as u64 >= expected
        {
            pipeline_secs = Some(t0.elapsed().as_secs_f64());
        }
        let published = metric_sum(&text, "presence_events_published_total", &filter) as u64;
        if published >= expected {
            break true;
        }
        if t0.elapsed() > timeout {
            eprintln!(
                "  {}: TIMEOUT after {timeout:?}: {published}/{expected} acknowledged",
                sink.name()
            );
            break false;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {}: {:>6.1}s committed {:>8} published {:>8} / {expected} (outbox depth {})",
                sink.name(),
                t0.elapsed().as_secs_f64(),
                metric_sum(&text, "presence_changes_total", "") as u64,
                published,
                handle.outbox_depth()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = t0.elapsed().as_secs_f64();
    let cpu_text = cpu_report(&cpu, workers);
    let text = handle.metrics.render();
    let published = metric_sum(&text, "presence_events_published_total", &filter) as u64;
    let p50 = histogram_quantile(&text, "presence_publish_latency_seconds", &filter, 0.50);
    let p99 = histogram_quantile(&text, "presence_publish_latency_seconds", &filter, 0.99);
    eprint!(
        "  bridge → {}: {published} events in {secs:.2}s",
        sink.name()
    );
    if let Some(p) = pipeline_secs {
        eprint!(" (pipeline committed all after {p:.2}s)");
    }
    eprintln!("\n{cpu_text}");
    handle.shutdown();
    if let Err(e) = tokio::time::timeout(Duration::from_secs(60), handle.wait()).await {
        eprintln!("  bridge did not stop within 60s: {e}");
    }
    BridgeResult {
        events: published,
        secs,
        pipeline_secs,
        p50,
        p99,
        complete,
    }
}

// ---------------------------------------------------------------------------------------------
// b. raw broker ingest

/// One pre-encoded record with everything a sink would send.
struct RawRecord {
    user: String,
    event_id: String,
    payload: Bytes,
}

const AVAIL: [Availability; 8] = [
    Availability::Available,
    Availability::Available,
    Availability::AvailableIdle,
    Availability::Away,
    Availability::BeRightBack,
    Availability::Busy,
    Availability::DoNotDisturb,
    Availability::Offline,
];

/// Same shape as the synthetic connector's states.
fn random_state(rng: &mut fastrand::Rng) -> PresenceState {
    let a = AVAIL[rng.usize(..AVAIL.len())];
    let mut s = PresenceState::new(a).with_raw("availability", format!("{a:?}"));
    if a == Availability::Busy {
        let act = [
            Activity::InACall,
            Activity::InAMeeting,
            Activity::Presenting,
            Activity::InAConferenceCall,
        ][rng.usize(..4)];
        s.activity = Some(act);
        s.raw.insert("activity".into(), format!("{act:?}"));
    }
    if rng.u8(..10) == 0 {
        s.note = Some(["Back at 3", "Working from home", "On site"][rng.usize(..3)].into());
    }
    s
}

/// `users` snapshots then `changes` real changes, diffed, encoded and framed like the bridge.
fn raw_records(users: u32, changes: u64, framing: Framing) -> Vec<RawRecord> {
    let cfg = SyntheticConfig {
        users,
        ..SyntheticConfig::default()
    };
    let user_ids: Vec<String> = (0..users).map(|n| cfg.user(n)).collect();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut last: Vec<Option<StoredState>> = vec![None; users as usize];
    let mut out = Vec::with_capacity(users as usize + changes as usize);
    let mut datum = Vec::with_capacity(512);
    let now = presence_bridge::model::now_millis();
    let mut emit = |i: usize, state: PresenceState, last: &mut Vec<Option<StoredState>>| {
        let obs = Observation {
            source: SourceRef {
                kind: "synthetic".into(),
                connector: CONNECTOR.into(),
                server: Some("synthetic.local".into()),
                server_time: Some(now),
            },
            user: user_ids[i].clone(),
            state,
            observed_at: now,
            resync: false,
        };
        let change = make_change(last[i].as_ref(), &obs).expect("a real change");
        datum.clear();
        codec::encode_change(&change, &mut datum).expect("encode");
        last[i] = Some(StoredState {
            sequence: change.sequence,
            state: change.current,
        });
        RawRecord {
            user: change.user,
            event_id: change.event_id,
            payload: Bytes::from(framing.frame(&datum)),
        }
    };
    for i in 0..users as usize {
        let s = random_state(&mut rng);
        out.push(emit(i, s, &mut last));
    }
    for _ in 0..changes {
        let i = rng.usize(..users as usize);
        let mut s = random_state(&mut rng);
        while Some(&s) == last[i].as_ref().map(|l| &l.state) {
            s = random_state(&mut rng);
        }
        out.push(emit(i, s, &mut last));
    }
    out
}

async fn raw_kafka(
    brokers: &str,
    records: &[RawRecord],
    fp_hex: &str,
    workers: &HashSet<u32>,
) -> (f64, String) {
    let topic = "raw.changes";
    presence_bridge::sinks::kafka::ensure_topic(brokers, &BTreeMap::new(), topic, 1, 1, false)
        .await
        .expect("create raw topic");
    // The settings of src/sinks/kafka.rs.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("reconnect.backoff.max.ms", "1000")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "200000")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    let source = format!("synthetic/{CONNECTOR}");
    let cpu = cpu_snapshot();
    let t0 = Instant::now();
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::with_capacity(200_000);
    for r in records {
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: "event_id",
                value: Some(r.event_id.as_bytes()),
            })
            .insert(Header {
                key: "source",
                value: Some(source.as_bytes()),
            })
            .insert(Header {
                key: "schema_fingerprint",
                value: Some(fp_hex.as_bytes()),
            });
        loop {
            let rec = FutureRecord::to(topic)
                .key(r.user.as_bytes())
                .payload(&r.payload[..])
                .headers(headers.clone());
            match producer.send_result(rec) {
                Ok(f) => {
                    in_flight.push_back(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    match in_flight.pop_front() {
                        Some(f) => check_delivery(f).await,
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => panic!("raw kafka produce: {e}"),
            }
        }
    }
    while let Some(f) = in_flight.pop_front() {
        check_delivery(f).await;
    }
    (t0.elapsed().as_secs_f64(), cpu_report(&cpu, workers))
}

async fn check_delivery(f: DeliveryFuture) {
    match f.await {
        Ok(Ok(_)) => {}
        Ok(Err((e, _))) => panic!("raw kafka delivery: {e}"),
        Err(_) => panic!("raw kafka delivery cancelled"),
    }
}

async fn raw_nats(
    url: &str,
    records: &[RawRecord],
    fp_hex: &str,
    workers: &HashSet<u32>,
) -> (f64, String) {
    let client = async_nats::connect(url).await.expect("nats connect");
    let js = jetstream::new(client);
    presence_bridge::sinks::nats::ensure_stream(
        &js,
        "RAW_BENCH",
        vec!["raw.changes.>".into()],
        Duration::from_secs(600),
    )
    .await
    .expect("raw stream");
    let source = format!("synthetic/{CONNECTOR}");
    const WINDOW: usize = 4096;
    let cpu = cpu_snapshot();
    let t0 = Instant::now();
    let mut in_flight = VecDeque::with_capacity(WINDOW);
    for r in records {
        if in_flight.len() >= WINDOW {
            let f: jetstream::context::PublishAckFuture = in_flight.pop_front().unwrap();
            f.await.expect("raw nats ack");
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", r.event_id.as_str());
        headers.insert("event_id", r.event_id.as_str());
        headers.insert("source", source.as_str());
        headers.insert("schema_fingerprint", fp_hex);
        let subject = format!("raw.changes.synthetic.{}", subject_token(&r.user));
        let f = js
            .publish_with_headers(subject, headers, r.payload.clone())
            .await
            .expect("raw nats publish");
        in_flight.push_back(f);
    }
    while let Some(f) = in_flight.pop_front() {
        f.await.expect("raw nats ack");
    }
    let secs = t0.elapsed().as_secs_f64();
    let report = cpu_report(&cpu, workers);
    js.client().flush().await.ok();
    (secs, report)
}

// ---------------------------------------------------------------------------------------------
// 0. the pipeline thread alone (no connector, no sink, no broker)

/// The connector's observations for `users` snapshots then `changes` real changes.
fn observations(users: u32, changes: u64) -> Vec<Observation> {
    let cfg = SyntheticConfig {
        users,
        ..SyntheticConfig::default()
    };
    let user_ids: Vec<String> = (0..users).map(|n| cfg.user(n)).collect();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut last: Vec<Option<PresenceState>> = vec![None; users as usize];
    let now = presence_bridge::model::now_millis();
    let obs = |i: usize, state: PresenceState| Observation {
        source: SourceRef {
            kind: "synthetic".into(),
            connector: CONNECTOR.into(),
            server: Some("synthetic.local".into()),
            server_time: Some(now),
        },
        user: user_ids[i].clone(),
        state,
        observed_at: now,
        resync: false,
    };
    let mut out = Vec::with_capacity(users as usize + changes as usize);
    for (i, l) in last.iter_mut().enumerate() {
        let s = random_state(&mut rng);
        *l = Some(s.clone());
        out.push(obs(i, s));
    }
    for _ in 0..changes {
        let i = rng.usize(..users as usize);
        let mut s = random_state(&mut rng);
        while Some(&s) == last[i].as_ref() {
            s = random_state(&mut rng);
        }
        last[i] = Some(s.clone());
        out.push(obs(i, s));
    }
    out
}

/// Feeds every observation through `Pipeline::handle_batch` (batches of the default
/// `pipeline.batch_size`) on this thread, then times `Store::commit_changes` alone on the
/// same changes and an empty commit (≈ the fsync), so the pipeline's time can be split.
fn pipeline_only(users: u32, changes: u64) {
    use presence_bridge::pipeline::{OutboxSignals, Pipeline, PipelineSettings};
    use presence_bridge::state::{state_key, OutboxEntry, PendingChange, Store};
    let batch = presence_bridge::config::PipelineConfig::default().batch_size;
    let obs = observations(users, changes);
    let total = obs.len();
    let dir = tempfile::Builder::new()
        .prefix("pb-e2e-pipeline-")
        .tempdir()
        .expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb"), &["bench".into()]).expect("store");
    let stats = store.outbox_stats().expect("stats");
    let mut p = Pipeline::new(
        store,
        PipelineSettings {
            batch_size: batch,
            max_entries: u64::MAX / 2,
            when_full: presence_bridge::config::WhenFull::Block,
        },
        presence_bridge::metrics::Metrics::new(),
        OutboxSignals::new(stats.head, stats.tail),
    );
    let t = Instant::now();
    let mut n = 0;
    for chunk in obs.chunks(batch) {
        n += p.handle_batch(chunk).expect("handle_batch");
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, total, "every observation is a change");
    println!(
        "pipeline alone: handle_batch × {} batches of {batch}: {total} events in {secs:.2}s = {:.0} events/s",
        total.div_ceil(batch),
        total as f64 / secs
    );
    drop(p);

    // commit_changes alone, on a fresh store, with what handle_batch would pass it.
    let store =
        Store::open(&dir.path().join("commit-only.redb"), &["bench".into()]).expect("store");
    let mut seq: HashMap<&str, i64> = HashMap::new();
    let mut pending: Vec<Vec<PendingChange>> = obs
        .chunks(batch)
        .map(|chunk| {
            chunk
                .iter()
                .map(|o| {
                    let s = seq.entry(o.user.as_str()).or_insert(0);
                    *s += 1;
                    PendingChange {
                        key: state_key(&o.source.connector, &o.user),
                        state: StoredState {
                            sequence: *s,
                            state: o.state.clone(),
                        }
                        .encode(),
                        entry: OutboxEntry {
                            id: 0,
                            event_id: presence_bridge::model::event_id(CONNECTOR, &o.user, *s),
                            kind: "synthetic".into(),
                            connector: CONNECTOR.into(),
                            user: o.user.clone(),
                            sequence: *s,
                            observed_at: o.observed_at,
                            datum: vec![0u8; 187],
                        },
                    }
                })
                .collect()
        })
        .collect();
    let t = Instant::now();
    for b in pending.iter_mut() {
        store.commit_changes(b).expect("commit");
    }
    let commit_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let empties = 50;
    for _ in 0..empties {
        store.commit_changes(&mut []).expect("empty commit");
    }
    let empty_ms = t.elapsed().as_secs_f64() * 1000.0 / empties as f64;
    println!(
        "  of which Store::commit_changes alone: {commit_secs:.2}s ({:.0} events/s, {:.1} µs/event); an empty durable commit (≈ fsync) takes {empty_ms:.2} ms",
        total as f64 / commit_secs,
        commit_secs * 1e6 / total as f64
    );
    // read_outbox + decode, as a publisher does (5000 per read).
    let t = Instant::now();
    let mut from = 1;
    let mut read = 0;
    loop {
        let e = store.read_outbox(from, 5000).expect("read");
        if e.is_empty() {
            break;
        }
        from = e.last().unwrap().id + 1;
        read += e.len();
    }
    let rs = t.elapsed().as_secs_f64();
    println!(
        "  publisher side: read_outbox(·, 5000): {read} entries in {rs:.2}s ({:.0} events/s)",
        read as f64 / rs
    );
    let t = Instant::now();
    let mut acks = 0;
    for next in (1..=read as u64 + 1)
        .step_by(5000)
        .skip(1)
        .chain([read as u64 + 1])
    {
        store.ack("bench", next).expect("ack");
        acks += 1;
    }
    println!(
        "  publisher side: ack (cursor + compaction) × {acks}: {:.2}s",
        t.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------

/// `tansu broker` with its in-memory storage engine (`E2E_TANSU_STORAGE=memory`): a broker
/// ceiling that is not bound by SQLite. The support module's broker always uses SQLite.
struct MemoryTansu {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl MemoryTansu {
    fn start() -> MemoryTansu {
        let bin = std::env::var_os("TANSU_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                std::path::PathBuf::from(home).join(".cargo/bin/tansu")
            });
        let dir = tempfile::Builder::new()
            .prefix("pb-e2e-tansu-")
            .tempdir()
            .expect("tempdir");
        let port = support::free_port();
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log).expect("tansu log");
        let listener = format!("tcp://127.0.0.1:{port}");
        let mut child = std::process::Command::new(&bin)
            .arg("broker")
            .args(["--cluster-id", "pb-e2e-bench"])
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        support::wait_until(
            "tansu (memory) ApiVersions",
            support::READY_TIMEOUT,
            Some(&log),
            || {
                assert!(child.try_wait().ok().flatten().is_none(), "tansu exited");
                support::kafka_api_versions_ok(port)
            },
        );
        MemoryTansu {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for MemoryTansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    sink: &'static str,
    bridge: Option<BridgeResult>,
    raw: Option<(u64, f64)>,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful. Only run
    // the (minutes-long) load when invoked as a bench or explicitly.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("E2E_FORCE").is_none() {
        eprintln!("e2e: skipped (run with `cargo bench --bench e2e`)");
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let changes = env_u64("E2E_EVENTS", 200_000);
    let users = env_u64("E2E_USERS", 10_000) as u32;
    let timeout = Duration::from_secs(env_u64("E2E_TIMEOUT_SECS", 600));
    let skip_raw = std::env::var_os("E2E_SKIP_RAW").is_some();
    let sinks: Vec<SinkKind> = std::env::var("E2E_SINKS")
        .unwrap_or_else(|_| "nats,kafka".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "nats" => Some(SinkKind::Nats),
            "kafka" => Some(SinkKind::Kafka),
            "" => None,
            other => panic!("E2E_SINKS: unknown sink {other}"),
        })
        .collect();
    let total = users as u64 + changes;
    println!(
        "e2e bench: {} cores, {users} users, {changes} changes → {total} events per run",
        cores()
    );

    let before_rt: HashSet<u32> = thread_ticks().keys().copied().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Give the workers a moment to exist, then remember their thread ids.
    rt.block_on(async { tokio::task::yield_now().await });
    std::thread::sleep(Duration::from_millis(50));
    let workers: HashSet<u32> = thread_ticks()
        .into_iter()
        .filter(|(tid, (name, _))| !before_rt.contains(tid) && name.starts_with("tokio"))
        .map(|(tid, _)| tid)
        .collect();

    presence_bridge::install_crypto_provider();
    let framing = Framing::SingleObject {
        fingerprint: codec::presence_change_schema().fingerprint,
    };
    let fp_hex = codec::presence_change_schema().fingerprint_hex();
    let records = if skip_raw {
        Vec::new()
    } else {
        let t = Instant::now();
        let r = raw_records(users, changes, framing);
        let bytes: usize = r.iter().map(|x| x.payload.len()).sum();
        println!(
            "pre-encoded {} records ({} bytes avg framed) in {:.2}s ({:.0} events/s, 1 thread)",
            r.len(),
            bytes / r.len().max(1),
            t.elapsed().as_secs_f64(),
            r.len() as f64 / t.elapsed().as_secs_f64()
        );
        r
    };

    if std::env::var_os("E2E_SKIP_PIPELINE").is_none() {
        pipeline_only(users, changes);
    }

    let mut rows = Vec::new();
    for sink in sinks {
        let memory_tansu = std::env::var("E2E_TANSU_STORAGE").is_ok_and(|v| v == "memory");
        let (url, _nats, _kafka, _mem) = match sink {
            SinkKind::Nats => {
                let s = NatsServer::start();
                (s.url(), Some(s), None, None)
            }
            SinkKind::Kafka if memory_tansu => {
                let k = MemoryTansu::start();
                (format!("127.0.0.1:{}", k.port), None, None, Some(k))
            }
            SinkKind::Kafka => {
                let k = KafkaBroker::start();
                (k.bootstrap(), None, Some(k), None)
            }
        };
        println!("--- {} at {url}", sink.name());
        let bridge = rt.block_on(run_bridge(sink, &url, users, changes, timeout, &workers));
        let raw = if skip_raw {
            None
        } else {
            let (secs, report) = rt.block_on(async {
                match sink {
                    SinkKind::Nats => raw_nats(&url, &records, &fp_hex, &workers).await,
                    SinkKind::Kafka => raw_kafka(&url, &records, &fp_hex, &workers).await,
                }
            });
            eprintln!(
                "  raw → {}: {} events in {secs:.2}s\n{report}",
                sink.name(),
                records.len(),
            );
            Some((records.len() as u64, secs))
        };
        rows.push(Row {
            sink: sink.name(),
            bridge: Some(bridge),
            raw,
        });
    }

    println!();
    println!("machine cores: {}", cores());
    println!(
        "{:<6} {:>10} {:>14} {:>14} {:>7} {:>10} {:>10} {:>14}",
        "sink", "events", "bridge ev/s", "raw ev/s", "ratio", "lat p50", "lat p99", "pipeline ev/s"
    );
    let fmt_s = |v: Option<f64>| match v {
        Some(x) if x.is_finite() => format!("≤{:.3}s", x),
        Some(_) => "+Inf".into(),
        None => "-".into(),
    };
    for r in rows {
        let b = r.bridge.as_ref();
        let bridge_rate = b.map(|b| b.events as f64 / b.secs);
        let raw_rate = r.raw.map(|(n, s)| n as f64 / s);
        let ratio = match (bridge_rate, raw_rate) {
            (Some(b), Some(r)) if r > 0.0 => format!("{:.2}", b / r),
            _ => "-".into(),
        };
        println!(
            "{:<6} {:>10} {:>14} {:>14} {:>7} {:>10} {:>10} {:>14}",
            r.sink,
            b.map(|b| b.events).unwrap_or(0),
            bridge_rate
                .map(|x| format!(
                    "{x:.0}{}",
                    if b.is_some_and(|b| !b.complete) {
                        "*"
                    } else {
                        ""
                    }
                ))
                .unwrap_or("-".into()),
            raw_rate.map(|x| format!("{x:.0}")).unwrap_or("-".into()),
            ratio,
            fmt_s(b.and_then(|b| b.p50)),
            fmt_s(b.and_then(|b| b.p99)),
            b.and_then(|b| b.pipeline_secs)
                .map(|p| format!("{:.0}", total as f64 / p))
                .unwrap_or("-".into()),
        );
    }
    println!("(* = timed out before every event was acknowledged; latency = observation → ack, upper bucket bound; pipeline ev/s = users+changes / time until all were committed to the outbox)");
}
