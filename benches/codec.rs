//! Per-event hot path: normalize + diff + encode (+ framing), and its parts.
//!
//! `cargo bench --bench codec` — criterion prints events/s (`Throughput::Elements`) for a
//! batch of `BATCH` synthetic-like events. Target: ≥ 2 M events/s/core for diff+encode.
//!
//! Benches:
//! - `hot_path/diff_encode_frame`: `diff(prev, &obs)` (borrowed, as in the pipeline) →
//!   `encode_change_ref` into a reused Vec → `Framing::SingleObject.frame` (what the
//!   pipeline + a broker sink do per event).
//! - `hot_path/diff_encode`: the same without framing (the pipeline's share).
//! - `parts/make_change`, `parts/encode_change`, `parts/frame`, `parts/event_id`,
//!   `parts/decode_change` (apache_avro, expected to be much slower).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presence_bridge::codec::{self, Framing};
use presence_bridge::model::{
    event_id, Activity, Availability, Observation, PresenceChange, PresenceState, SourceRef,
};
use presence_bridge::pipeline::{diff, make_change};
use presence_bridge::state::StoredState;
use std::hint::black_box;

const BATCH: usize = 1000;

const AVAIL: [Availability; 7] = [
    Availability::Available,
    Availability::AvailableIdle,
    Availability::Away,
    Availability::BeRightBack,
    Availability::Busy,
    Availability::DoNotDisturb,
    Availability::Offline,
];

/// Like the synthetic connector's `random_state`: availability + raw map entries, Busy gets
/// an activity, some get a note.
fn state(rng: &mut fastrand::Rng) -> PresenceState {
    let a = AVAIL[rng.usize(..AVAIL.len())];
    let mut s = PresenceState::new(a).with_raw("availability", format!("{a:?}"));
    if a == Availability::Busy {
        let act = [
            Activity::InACall,
            Activity::InAMeeting,
            Activity::Presenting,
        ][rng.usize(..3)];
        s.activity = Some(act);
        s.raw.insert("activity".into(), format!("{act:?}"));
    }
    if rng.u8(..10) == 0 {
        s.note = Some("Working from home".into());
    }
    s
}

/// (previous stored state, observation) pairs whose states always differ (every one is an event).
fn fixture() -> Vec<(StoredState, Observation)> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..BATCH)
        .map(|i| {
            let prev = StoredState {
                sequence: 1 + rng.i64(0..10_000),
                state: state(&mut rng),
            };
            let mut cur = state(&mut rng);
            while cur == prev.state {
                cur = state(&mut rng);
            }
            let now = 1_760_000_000_000 + i as i64;
            let obs = Observation {
                source: SourceRef {
                    kind: "synthetic".into(),
                    connector: "synth".into(),
                    server: Some("synthetic.local".into()),
                    server_time: Some(now),
                },
                user: format!("user{:05}@synthetic.example", i * 7),
                state: cur,
                observed_at: now,
                resync: false,
            };
            (prev, obs)
        })
        .collect()
}

fn framing() -> Framing {
    Framing::SingleObject {
        fingerprint: codec::presence_change_schema().fingerprint,
    }
}

fn hot_path(c: &mut Criterion) {
    let fx = fixture();
    let framing = framing();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("diff_encode_frame", |b| {
        let mut datum = Vec::with_capacity(512);
        b.iter(|| {
            let mut bytes = 0usize;
            for (prev, obs) in &fx {
                let change = diff(Some(prev), obs).expect("states differ");
                datum.clear();
                codec::encode_change_ref(&change, &mut datum).unwrap();
                let framed = framing.frame(&datum);
                bytes += framed.len();
                black_box(framed);
            }
            bytes
        })
    });
    g.bench_function("diff_encode", |b| {
        let mut datum = Vec::with_capacity(512);
        b.iter(|| {
            let mut bytes = 0usize;
            for (prev, obs) in &fx {
                let change = diff(Some(prev), obs).expect("states differ");
                datum.clear();
                codec::encode_change_ref(&change, &mut datum).unwrap();
                bytes += datum.len();
            }
            bytes
        })
    });
    // First sight (SNAPSHOT, no previous): what the initial full fetch costs.
    g.bench_function("diff_encode_snapshot", |b| {
        let mut datum = Vec::with_capacity(512);
        b.iter(|| {
            let mut bytes = 0usize;
            for (_, obs) in &fx {
                let change = diff(None, obs).expect("first sight");
                datum.clear();
                codec::encode_change_ref(&change, &mut datum).unwrap();
                bytes += datum.len();
            }
            bytes
        })
    });
    // Unchanged observation: the early-out compare (no event).
    g.bench_function("diff_unchanged", |b| {
        let same: Vec<(StoredState, Observation)> = fx
            .iter()
            .map(|(p, o)| {
                let mut p = p.clone();
                p.state = o.state.clone();
                (p, o.clone())
            })
            .collect();
        b.iter(|| {
            let mut n = 0usize;
            for (prev, obs) in &same {
                n += diff(Some(prev), obs).is_none() as usize;
            }
            n
        })
    });
    g.finish();
}

fn parts(c: &mut Criterion) {
    let fx = fixture();
    let framing = framing();
    let changes: Vec<PresenceChange> = fx
        .iter()
        .map(|(p, o)| make_change(Some(p), o).unwrap())
        .collect();
    let datums: Vec<Vec<u8>> = changes
        .iter()
        .map(|ch| {
            let mut v = Vec::new();
            codec::encode_change(ch, &mut v).unwrap();
            v
        })
        .collect();
    let avg = datums.iter().map(Vec::len).sum::<usize>() / datums.len();
    eprintln!("codec bench: {BATCH} events, average datum {avg} bytes (+10 framing)");

    let mut g = c.benchmark_group("parts");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("make_change", |b| {
        b.iter_batched(
            || Vec::with_capacity(BATCH),
            |mut out: Vec<PresenceChange>| {
                for (prev, obs) in &fx {
                    out.push(make_change(Some(prev), obs).unwrap());
                }
                out // dropped outside the timing
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("encode_change", |b| {
        let mut datum = Vec::with_capacity(512);
        b.iter(|| {
            let mut bytes = 0usize;
            for ch in &changes {
                datum.clear();
                codec::encode_change(ch, &mut datum).unwrap();
                bytes += datum.len();
            }
            bytes
        })
    });
    g.bench_function("frame", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for d in &datums {
                bytes += black_box(framing.frame(d)).len();
            }
            bytes
        })
    });
    g.bench_function("event_id", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (prev, obs) in &fx {
                n += event_id(&obs.source.connector, &obs.user, prev.sequence + 1).len();
            }
            n
        })
    });
    g.bench_function("decode_change", |b| {
        b.iter(|| {
            let mut n = 0i64;
            for d in &datums {
                n += codec::decode_change(d).unwrap().sequence;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path, parts);
criterion_main!(benches);
