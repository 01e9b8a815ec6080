//! Per-event hot path: normalize + diff + encode (+ framing), and its parts.
//!
//! `cargo bench --bench codec` — criterion prints events/s (`Throughput::Elements`) for a
//! batch of `BATCH` synthetic-like events. Target: ≥ 2 M events/s/core for diff+encode.
//!
//! Benches:
//! - `hot_path/diff_encode_frame`: `make_change(prev, &obs)` → `encode_change` into a reused
//!   Vec → `Framing::SingleObject.frame` (what the pipeline + a broker sink do per event).
//! - `hot_path/diff_encode`: the same without framing (the pipeline's share).
//! - `parts/make_change`, `parts/encode_change`, `parts/frame`, `parts/event_id`,
//!   `parts/decode_change` (apache_avro, expected to be much slower).
//! - `proposals/*`: the same diff+encode from borrowed data (no clones) and an allocation-free
//!   `event_id`, checked to produce identical bytes/ids — what a src/ change would gain.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presence_bridge::codec::{self, Framing};
use presence_bridge::model::{
    event_id, Activity, Availability, Observation, PresenceChange, PresenceState, SourceRef,
};
use presence_bridge::pipeline::make_change;
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
                let change = make_change(Some(prev), obs).expect("states differ");
                datum.clear();
                codec::encode_change(&change, &mut datum).unwrap();
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
                let change = make_change(Some(prev), obs).expect("states differ");
                datum.clear();
                codec::encode_change(&change, &mut datum).unwrap();
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
                let change = make_change(None, obs).expect("first sight");
                datum.clear();
                codec::encode_change(&change, &mut datum).unwrap();
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
                n += make_change(Some(prev), obs).is_none() as usize;
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

// ---------------------------------------------------------------------------------------------
// Proposals, measured here without touching src/: a borrowed twin of `PresenceChange` (no
// clones of source/user/states for encoding) and an `event_id` without temporary allocations.
// Both are checked to give the same bytes / ids as the real code.

/// Same fields, same order, same serde attributes as `model::PresenceChange`.
#[derive(serde::Serialize)]
struct PresenceChangeRef<'a> {
    event_id: &'a str,
    op: presence_bridge::model::ChangeOp,
    resync: bool,
    source: &'a SourceRef,
    user: &'a str,
    sequence: i64,
    observed_at: i64,
    previous: Option<&'a PresenceState>,
    current: &'a PresenceState,
}

/// Copy of the private namespace in src/model.rs (checked against `event_id` below).
const NS: uuid::Uuid = uuid::Uuid::from_bytes([
    0x6f, 0x1c, 0x0e, 0x4a, 0x52, 0x9b, 0x4d, 0x35, 0x9a, 0x1e, 0x2b, 0x70, 0x5d, 0x8e, 0x41, 0xc3,
]);

/// `event_id` with the name on the stack and the id encoded into a stack buffer.
fn event_id_stack(connector: &str, user: &str, sequence: i64) -> String {
    let mut name = [0u8; 256];
    if connector.len() + user.len() + 22 > name.len() {
        return event_id(connector, user, sequence);
    }
    let mut n = 0;
    for part in [connector.as_bytes(), &[0], user.as_bytes(), &[0]] {
        name[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = sequence.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if sequence < 0 {
        name[n] = b'-';
        n += 1;
    }
    name[n..n + digits.len() - i].copy_from_slice(&digits[i..]);
    n += digits.len() - i;
    let mut buf = [0u8; 36];
    uuid::Uuid::new_v5(&NS, &name[..n])
        .hyphenated()
        .encode_lower(&mut buf)
        .to_string()
}

fn borrowed_encode(
    prev: Option<&StoredState>,
    obs: &Observation,
    id: fn(&str, &str, i64) -> String,
    out: &mut Vec<u8>,
) -> bool {
    use presence_bridge::model::ChangeOp;
    if prev.is_some_and(|p| p.state == obs.state) {
        return false;
    }
    let sequence = prev.map(|p| p.sequence).unwrap_or(0) + 1;
    let event_id = id(&obs.source.connector, &obs.user, sequence);
    presence_bridge::codec::avro_ser::write_datum(
        out,
        &PresenceChangeRef {
            event_id: &event_id,
            op: if prev.is_some() {
                ChangeOp::Change
            } else {
                ChangeOp::Snapshot
            },
            resync: obs.resync,
            source: &obs.source,
            user: &obs.user,
            sequence,
            observed_at: obs.observed_at,
            previous: prev.map(|p| &p.state),
            current: &obs.state,
        },
    )
    .unwrap();
    true
}

fn proposals(c: &mut Criterion) {
    let fx = fixture();
    // Same bytes and ids as the real code.
    for (prev, obs) in &fx {
        let mut a = Vec::new();
        codec::encode_change(&make_change(Some(prev), obs).unwrap(), &mut a).unwrap();
        let mut b = Vec::new();
        assert!(borrowed_encode(Some(prev), obs, event_id_stack, &mut b));
        assert_eq!(a, b, "borrowed encoding differs");
        for seq in [1, prev.sequence, -3] {
            assert_eq!(
                event_id(&obs.source.connector, &obs.user, seq),
                event_id_stack(&obs.source.connector, &obs.user, seq)
            );
        }
    }
    let mut g = c.benchmark_group("proposals");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("diff_encode_borrowed", |b| {
        let mut datum = Vec::with_capacity(512);
        b.iter(|| {
            let mut bytes = 0usize;
            for (prev, obs) in &fx {
                datum.clear();
                borrowed_encode(Some(prev), obs, event_id, &mut datum);
                bytes += datum.len();
            }
            bytes
        })
    });
    g.bench_function("diff_encode_borrowed_fast_id", |b| {
        let mut datum = Vec::with_capacity(512);
        b.iter(|| {
            let mut bytes = 0usize;
            for (prev, obs) in &fx {
                datum.clear();
                borrowed_encode(Some(prev), obs, event_id_stack, &mut datum);
                bytes += datum.len();
            }
            bytes
        })
    });
    g.bench_function("event_id_stack", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (prev, obs) in &fx {
                n += event_id_stack(&obs.source.connector, &obs.user, prev.sequence + 1).len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path, parts, proposals);
criterion_main!(benches);
