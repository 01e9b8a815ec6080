//! Drains the outbox into one sink, in order, forever: read a batch at the sink's cursor,
//! publish it, move the cursor past what was acknowledged, repeat. While the sink is down
//! the cursor stays put and the outbox grows; retries back off exponentially up to
//! `outbox.retry_max_delay`. One publisher per sink, so a slow Kafka never holds the
//! archive back (the outbox keeps entries until the slowest sink has them).

use crate::metrics::{labels, Metrics};
use crate::model::now_millis;
use crate::pipeline::OutboxSignals;
use crate::shutdown::Shutdown;
use crate::sinks::{Sink, SinkHealth};
use crate::state::{OutboxEntry, Store, StoreError};
use backon::BackoffBuilder;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Publisher {
    pub sink: Box<dyn Sink>,
    pub store: Store,
    pub signals: Arc<OutboxSignals>,
    pub metrics: Metrics,
    pub health: SinkHealth,
    pub batch: usize,
    pub retry_max_delay: Duration,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Db(format!("store task: {e}")))?
}

impl Publisher {
    /// Runs until the pipeline is done and everything is published, or `stop` fires.
    pub async fn run(mut self, mut stop: Shutdown) -> Result<(), StoreError> {
        let name = self.sink.name().to_string();
        let span = tracing::info_span!("publisher", sink = %name);
        let _e = span.enter();
        let store = self.store.clone();
        let n = name.clone();
        let mut cursor = blocking(move || store.cursor(&n)).await?;
        let mut head_rx = self.signals.head.subscribe();
        let mut done_rx = self.signals.done.subscribe();
        let up = self
            .metrics
            .sink_up
            .get_or_create(&labels([("sink", &name)]))
            .clone();
        let latency = self
            .metrics
            .publish_latency
            .get_or_create(&labels([("sink", &name)]))
            .clone();
        up.set(1);
        let mut backoff = self.new_backoff();
        loop {
            if stop.is_triggered() {
                break;
            }
            let head = *head_rx.borrow_and_update();
            let entries = if cursor < head {
                let store = self.store.clone();
                let batch = self.batch;
                blocking(move || store.read_outbox(cursor, batch)).await?
            } else {
                Vec::new()
            };
            if entries.is_empty() {
                if *done_rx.borrow_and_update() && cursor >= *head_rx.borrow() {
                    break;
                }
                tokio::select! {
                    _ = head_rx.changed() => {}
                    _ = done_rx.changed() => {}
                    _ = stop.recv() => break,
                }
                continue;
            }
            // A publish may wait for a broker that is down; shutdown must not wait for it.
            // Dropping the future mid-way is safe: the entries stay in the outbox.
            let result = tokio::select! {
                r = self.sink.publish(&entries) => r,
                _ = stop.recv() => break,
            };
            let acked = match &result {
                Ok(()) => entries.len(),
                Err(f) => f.acked.min(entries.len()),
            };
            if acked > 0 {
                cursor = entries[acked - 1].id + 1;
                self.record_published(&entries[..acked], &name, &latency);
                let store = self.store.clone();
                let n = name.clone();
                let stats = blocking(move || store.ack(&n, cursor)).await?;
                self.signals.set_tail(stats.tail);
                self.metrics.outbox_depth.set(self.signals.depth() as i64);
            }
            match result {
                Ok(()) => {
                    if !self.health.is_up() || up.get() == 0 {
                        tracing::info!("sink is back; draining the outbox in order");
                    }
                    self.health.set(true);
                    up.set(1);
                    backoff = self.new_backoff();
                }
                Err(f) => {
                    self.health.set(false);
                    up.set(0);
                    self.metrics
                        .sink_errors
                        .get_or_create(&labels([("sink", &name), ("kind", f.error.kind())]))
                        .inc();
                    let wait = backoff.next().unwrap_or(self.retry_max_delay);
                    tracing::warn!(
                        error = %f.error,
                        acked,
                        depth = self.signals.depth(),
                        retry_in = ?wait,
                        "publish failed; events stay in the outbox"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.recv() => break,
                    }
                }
            }
        }
        if let Err(e) = self.sink.close().await {
            tracing::warn!(error = %e, "sink close");
        }
        Ok(())
    }

    fn new_backoff(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(self.retry_max_delay)
            .with_jitter()
            .without_max_times()
            .build()
    }

    fn record_published(
        &self,
        entries: &[OutboxEntry],
        sink: &str,
        latency: &prometheus_client::metrics::histogram::Histogram,
    ) {
        let now = now_millis();
        let mut per: HashMap<&str, u64> = HashMap::new();
        for e in entries {
            *per.entry(e.connector.as_str()).or_default() += 1;
            latency.observe((now - e.observed_at).max(0) as f64 / 1000.0);
        }
        for (c, n) in per {
            self.metrics
                .published
                .get_or_create(&labels([("connector", c), ("sink", sink)]))
                .inc_by(n);
        }
    }
}
