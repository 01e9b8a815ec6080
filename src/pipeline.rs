//! Observation → change → encode → outbox, in one place and one direction.
//!
//! The pipeline runs on its own OS thread because its work is CPU (diff, encode) and
//! blocking disk I/O (the store's group commit): it takes every observation waiting in the
//! channel (up to `batch_size`), computes the changes against the last known states, and
//! commits states and outbox entries in ONE transaction. Publishers ([`crate::publisher`])
//! are woken through [`OutboxSignals`] and drain the outbox independently per sink.

use crate::codec;
use crate::config::WhenFull;
use crate::metrics::{labels, Metrics};
use crate::model::{event_id, ChangeOp, Observation, PresenceChange, PresenceChangeRef};
use crate::state::{state_key, OutboxEntry, PendingChange, Store, StoreError, StoredState};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

/// The pure step: given the last stored state, does this observation make an event?
/// `None` when the state is unchanged. Sequences start at 1 and never skip. Borrows from
/// its inputs so the hot path encodes without cloning.
pub fn diff<'a>(
    prev: Option<&'a StoredState>,
    obs: &'a Observation,
) -> Option<PresenceChangeRef<'a>> {
    if let Some(p) = prev {
        if p.state == obs.state {
            return None;
        }
    }
    let sequence = prev.map(|p| p.sequence).unwrap_or(0) + 1;
    Some(PresenceChangeRef {
        event_id: event_id(&obs.source.connector, &obs.user, sequence),
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
    })
}

/// [`diff`] as an owned [`PresenceChange`].
pub fn make_change(prev: Option<&StoredState>, obs: &Observation) -> Option<PresenceChange> {
    diff(prev, obs).map(|c| c.to_owned())
}

/// Shared between the pipeline and the publishers.
pub struct OutboxSignals {
    /// Next outbox id (one past the newest committed entry). Publishers wait on changes.
    pub head: watch::Sender<u64>,
    /// Oldest entry some sink still needs; the pipeline waits on it when the outbox is full.
    tail: Mutex<u64>,
    tail_moved: Condvar,
    /// True while intake is stopped because the outbox is full (reported by `/ready`).
    pub blocked: AtomicBool,
    /// Set when the pipeline has committed its last batch (publishers may then finish).
    pub done: watch::Sender<bool>,
    /// Set on shutdown: stop waiting for space, commit what is in hand.
    pub stopping: AtomicBool,
}

impl OutboxSignals {
    pub fn new(head: u64, tail: u64) -> Arc<Self> {
        Arc::new(OutboxSignals {
            head: watch::channel(head).0,
            tail: Mutex::new(tail),
            tail_moved: Condvar::new(),
            blocked: AtomicBool::new(false),
            done: watch::channel(false).0,
            stopping: AtomicBool::new(false),
        })
    }

    pub fn set_tail(&self, tail: u64) {
        let mut t = self.tail.lock().expect("tail lock");
        if tail > *t {
            *t = tail;
            self.tail_moved.notify_all();
        }
    }

    pub fn tail(&self) -> u64 {
        *self.tail.lock().expect("tail lock")
    }

    pub fn depth(&self) -> u64 {
        self.head.borrow().saturating_sub(self.tail())
    }

    /// Wakes a pipeline waiting for space so it sees `stopping`.
    pub fn wake(&self) {
        self.tail_moved.notify_all();
    }
}

pub struct PipelineSettings {
    pub batch_size: usize,
    pub max_entries: u64,
    pub when_full: WhenFull,
}

pub struct Pipeline {
    store: Store,
    settings: PipelineSettings,
    metrics: Metrics,
    signals: Arc<OutboxSignals>,
    /// Last state per key; a cache over the store (the store is the truth after restart).
    cache: HashMap<String, StoredState>,
    /// Largest datum seen, to size the next one's buffer in one allocation.
    datum_hint: usize,
}

impl Pipeline {
    pub fn new(
        store: Store,
        settings: PipelineSettings,
        metrics: Metrics,
        signals: Arc<OutboxSignals>,
    ) -> Self {
        Pipeline {
            store,
            settings,
            metrics,
            signals,
            cache: HashMap::new(),
            datum_hint: 256,
        }
    }

    /// Starts the pipeline thread. It ends when every `ObservationSender` is dropped.
    pub fn spawn(
        self,
        rx: mpsc::Receiver<Observation>,
    ) -> std::thread::JoinHandle<Result<(), PipelineError>> {
        std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || self.run(rx))
            .expect("spawn pipeline thread")
    }

    fn run(mut self, mut rx: mpsc::Receiver<Observation>) -> Result<(), PipelineError> {
        let mut buf = Vec::with_capacity(self.settings.batch_size);
        let result = loop {
            buf.clear();
            match rx.blocking_recv() {
                None => break Ok(()),
                Some(o) => buf.push(o),
            }
            while buf.len() < self.settings.batch_size {
                match rx.try_recv() {
                    Ok(o) => buf.push(o),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.handle_batch(&buf) {
                tracing::error!(error = %e, "pipeline stopped");
                break Err(e);
            }
        };
        let _ = self.signals.done.send(true);
        result
    }

    /// Diffs, encodes and commits one batch. Public for benches and tests.
    ///
    /// The cache is updated in place before the commit: safe because a commit is retried
    /// until it succeeds (see [`Self::commit_with_retry`]), so the cache never runs ahead of
    /// the store for long, and nothing else reads it.
    pub fn handle_batch(&mut self, batch: &[Observation]) -> Result<usize, PipelineError> {
        let mut pending: Vec<PendingChange> = Vec::new();
        let mut counts: HashMap<(&str, bool), (u64, u64, u64)> = HashMap::new();
        for obs in batch {
            let key = state_key(&obs.source.connector, &obs.user);
            if !self.cache.contains_key(&key) {
                if let Some(stored) = self.store.get_state(&key)? {
                    self.cache.insert(key.clone(), stored);
                }
            }
            let prev = self.cache.get(&key);
            let c = counts
                .entry((obs.source.connector.as_str(), false))
                .or_default();
            c.0 += 1;
            let Some(change) = diff(prev, obs) else {
                c.1 += 1;
                continue;
            };
            let snapshot = change.op == ChangeOp::Snapshot;
            counts
                .entry((obs.source.connector.as_str(), snapshot))
                .or_default()
                .2 += 1;
            let mut datum = Vec::with_capacity(self.datum_hint);
            codec::encode_change_ref(&change, &mut datum)?;
            self.datum_hint = self.datum_hint.max(datum.len());
            let mut state = Vec::with_capacity(96);
            StoredState::encode_into(change.sequence, &obs.state, &mut state);
            let sequence = change.sequence;
            let entry = OutboxEntry {
                id: 0,
                event_id: change.event_id,
                kind: obs.source.kind.clone(),
                connector: obs.source.connector.clone(),
                user: obs.user.clone(),
                sequence,
                observed_at: obs.observed_at,
                datum,
            };
            match self.cache.get_mut(&key) {
                Some(s) => {
                    s.sequence = sequence;
                    s.state.clone_from(&obs.state);
                }
                None => {
                    self.cache.insert(
                        key.clone(),
                        StoredState {
                            sequence,
                            state: obs.state.clone(),
                        },
                    );
                }
            }
            pending.push(PendingChange { key, state, entry });
        }
        for ((connector, snapshot), (obs, unchanged, changes)) in counts {
            let l = labels([("connector", connector)]);
            if obs > 0 {
                self.metrics.observations.get_or_create(&l).inc_by(obs);
            }
            if unchanged > 0 {
                self.metrics.unchanged.get_or_create(&l).inc_by(unchanged);
            }
            if changes > 0 {
                let op = if snapshot { "SNAPSHOT" } else { "CHANGE" };
                self.metrics
                    .changes
                    .get_or_create(&labels([("connector", connector), ("op", op)]))
                    .inc_by(changes);
            }
        }
        if pending.is_empty() {
            return Ok(0);
        }
        self.make_room(pending.len() as u64)?;
        let head = self.commit_with_retry(&mut pending);
        self.signals.head.send_replace(head);
        self.metrics.outbox_depth.set(self.signals.depth() as i64);
        Ok(pending.len())
    }

    /// Applies the outbox-full policy before `n` more entries are added.
    fn make_room(&self, n: u64) -> Result<(), PipelineError> {
        let max = self.settings.max_entries;
        if self.signals.depth() + n <= max {
            return Ok(());
        }
        match self.settings.when_full {
            WhenFull::DropOldest => {
                let excess = self.signals.depth() + n - max;
                let dropped = self.store.drop_oldest(excess)?;
                let stats = self.store.outbox_stats()?;
                self.signals.set_tail(stats.tail);
                self.metrics.outbox_dropped.inc_by(dropped);
                tracing::warn!(
                    dropped,
                    "outbox full: dropped the oldest unpublished events (when_full = drop_oldest)"
                );
            }
            WhenFull::Block => {
                self.signals.blocked.store(true, Ordering::Relaxed);
                tracing::warn!(
                    depth = self.signals.depth(),
                    max,
                    "outbox full: intake paused until sinks catch up (when_full = block)"
                );
                let mut tail = self.signals.tail.lock().expect("tail lock");
                while self.signals.head.borrow().saturating_sub(*tail) + n > max
                    && !self.signals.stopping.load(Ordering::Relaxed)
                {
                    tail = self
                        .signals
                        .tail_moved
                        .wait_timeout(tail, Duration::from_millis(500))
                        .expect("tail lock")
                        .0;
                }
                self.signals.blocked.store(false, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// A failing commit (disk full, I/O error) is retried with backoff rather than dropped:
    /// meanwhile intake stops, which is the backpressure we want.
    fn commit_with_retry(&self, pending: &mut [PendingChange]) -> u64 {
        use backon::BackoffBuilder;
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        loop {
            match self.store.commit_changes(pending) {
                Ok(head) => return head,
                Err(e) => {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::error!(error = %e, retry_in = ?wait, "state store commit failed");
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Availability, PresenceState, SourceRef};

    fn obs(user: &str, a: Availability) -> Observation {
        Observation {
            source: SourceRef {
                kind: "synthetic".into(),
                connector: "s".into(),
                server: None,
                server_time: None,
            },
            user: user.into(),
            state: PresenceState::new(a),
            observed_at: 1,
            resync: false,
        }
    }

    #[test]
    fn make_change_table() {
        let busy = StoredState {
            sequence: 4,
            state: PresenceState::new(Availability::Busy),
        };
        // first sight → SNAPSHOT seq 1, no previous
        let c = make_change(None, &obs("u", Availability::Away)).unwrap();
        assert_eq!(
            (c.op, c.sequence, c.previous),
            (ChangeOp::Snapshot, 1, None)
        );
        // same state → nothing
        assert!(make_change(Some(&busy), &obs("u", Availability::Busy)).is_none());
        // different → CHANGE seq+1 with previous
        let c = make_change(Some(&busy), &obs("u", Availability::Away)).unwrap();
        assert_eq!(c.op, ChangeOp::Change);
        assert_eq!(c.sequence, 5);
        assert_eq!(c.previous.unwrap().availability, Availability::Busy);
        assert_eq!(c.event_id, event_id("s", "u", 5));
        // a difference only in raw values is still a change
        let mut o = obs("u", Availability::Busy);
        o.state.raw.insert("availability".into(), "IdleBusy".into());
        assert!(make_change(Some(&busy), &o).is_some());
    }

    #[test]
    fn batch_chains_previous_within_and_across_batches_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let m = Metrics::new();
        let settings = || PipelineSettings {
            batch_size: 100,
            max_entries: 1000,
            when_full: WhenFull::Block,
        };
        {
            let store = Store::open(&path, &["x".into()]).unwrap();
            let mut p = Pipeline::new(
                store.clone(),
                settings(),
                m.clone(),
                OutboxSignals::new(1, 1),
            );
            let n = p
                .handle_batch(&[
                    obs("a", Availability::Busy),
                    obs("a", Availability::Busy),
                    obs("a", Availability::Away),
                    obs("b", Availability::Offline),
                ])
                .unwrap();
            assert_eq!(n, 3);
        }
        let store = Store::open(&path, &["x".into()]).unwrap();
        let mut p = Pipeline::new(
            store.clone(),
            settings(),
            m.clone(),
            OutboxSignals::new(4, 1),
        );
        assert_eq!(p.handle_batch(&[obs("a", Availability::Away)]).unwrap(), 0);
        assert_eq!(
            p.handle_batch(&[obs("a", Availability::Available)])
                .unwrap(),
            1
        );
        let entries = store.read_outbox(1, 100).unwrap();
        let changes: Vec<PresenceChange> = entries
            .iter()
            .map(|e| codec::decode_change(&e.datum).unwrap())
            .collect();
        let a: Vec<_> = changes.iter().filter(|c| c.user == "a").collect();
        assert_eq!(a.iter().map(|c| c.sequence).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a[0].op, ChangeOp::Snapshot);
        for w in a.windows(2) {
            assert_eq!(w[1].previous.as_ref(), Some(&w[0].current));
        }
        let text = m.render();
        assert!(
            text.contains("presence_unchanged_dropped_total{connector=\"s\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn full_outbox_drop_oldest_counts_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &["x".into()]).unwrap();
        let m = Metrics::new();
        let signals = OutboxSignals::new(1, 1);
        let mut p = Pipeline::new(
            store.clone(),
            PipelineSettings {
                batch_size: 10,
                max_entries: 5,
                when_full: WhenFull::DropOldest,
            },
            m.clone(),
            signals.clone(),
        );
        for i in 0..8 {
            p.handle_batch(&[obs(&format!("u{i}"), Availability::Busy)])
                .unwrap();
        }
        assert_eq!(signals.depth(), 5);
        let left: Vec<String> = store
            .read_outbox(0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.user)
            .collect();
        assert_eq!(left, ["u3", "u4", "u5", "u6", "u7"]);
        assert!(m.render().contains("presence_outbox_dropped_total 3"));
    }

    #[test]
    fn full_outbox_block_waits_until_a_sink_acks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &["x".into()]).unwrap();
        let signals = OutboxSignals::new(1, 1);
        let mut p = Pipeline::new(
            store.clone(),
            PipelineSettings {
                batch_size: 10,
                max_entries: 2,
                when_full: WhenFull::Block,
            },
            Metrics::new(),
            signals.clone(),
        );
        p.handle_batch(&[obs("a", Availability::Busy), obs("b", Availability::Busy)])
            .unwrap();
        // The third change must wait for room: run it on another thread and ack from here.
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            p.handle_batch(&[obs("c", Availability::Busy)]).unwrap();
            tx.send(()).unwrap();
        });
        let blocked = |s: &OutboxSignals| s.blocked.load(Ordering::Relaxed);
        while !blocked(&signals) {
            std::thread::yield_now();
        }
        assert!(
            rx.try_recv().is_err(),
            "intake is paused while the outbox is full"
        );
        let stats = store.ack("x", 2).unwrap();
        signals.set_tail(stats.tail);
        rx.recv().unwrap();
        t.join().unwrap();
        assert!(!blocked(&signals));
        assert_eq!(store.read_outbox(0, 10).unwrap().len(), 2, "b and c");
    }
}
