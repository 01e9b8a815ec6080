//! Prometheus metrics. One `Metrics` value is shared by every component; label sets are
//! small (connector, sink, status), never user ids, so cardinality stays bounded.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

type Labels = Vec<(&'static str, String)>;

fn hist() -> Histogram {
    // 0.5 ms .. ~65 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

pub struct Inner {
    registry: Registry,
    pub observations: Family<Labels, Counter>,
    pub changes: Family<Labels, Counter>,
    pub unchanged: Family<Labels, Counter>,
    pub published: Family<Labels, Counter>,
    pub sink_errors: Family<Labels, Counter>,
    pub sink_up: Family<Labels, Gauge>,
    pub publish_latency: Family<Labels, Histogram, fn() -> Histogram>,
    pub outbox_depth: Gauge,
    pub outbox_dropped: Counter,
    pub spool_bytes: Gauge,
    pub subscriptions: Family<Labels, Gauge>,
    pub connector_errors: Family<Labels, Counter>,
    pub commands: Family<Labels, Counter>,
    pub dead_letters: Family<Labels, Counter>,
    pub sip_requests: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("presence");
        let observations = Family::<Labels, Counter>::default();
        let changes = Family::<Labels, Counter>::default();
        let unchanged = Family::<Labels, Counter>::default();
        let published = Family::<Labels, Counter>::default();
        let sink_errors = Family::<Labels, Counter>::default();
        let sink_up = Family::<Labels, Gauge>::default();
        let publish_latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            hist as fn() -> Histogram,
        );
        let outbox_depth = Gauge::default();
        let outbox_dropped = Counter::default();
        let spool_bytes = Gauge::default();
        let subscriptions = Family::<Labels, Gauge>::default();
        let connector_errors = Family::<Labels, Counter>::default();
        let commands = Family::<Labels, Counter>::default();
        let dead_letters = Family::<Labels, Counter>::default();
        let sip_requests = Family::<Labels, Counter>::default();
        registry.register(
            "observations",
            "States fetched from sources, before the unchanged check",
            observations.clone(),
        );
        registry.register(
            "changes",
            "Change events written to the outbox, by connector and op",
            changes.clone(),
        );
        registry.register(
            "unchanged_dropped",
            "Observations identical to the last state (no event)",
            unchanged.clone(),
        );
        registry.register(
            "events_published",
            "Events acknowledged by a sink, by connector and sink",
            published.clone(),
        );
        registry.register(
            "sink_errors",
            "Publish failures, by sink and error kind",
            sink_errors.clone(),
        );
        registry.register(
            "sink_up",
            "1 when the sink's last publish succeeded",
            sink_up.clone(),
        );
        registry.register(
            "publish_latency_seconds",
            "From observation to sink acknowledgement",
            publish_latency.clone(),
        );
        registry.register(
            "outbox_depth",
            "Entries not yet acknowledged by every sink",
            outbox_depth.clone(),
        );
        registry.register(
            "outbox_dropped",
            "Entries dropped because the outbox was full (policy drop_oldest)",
            outbox_dropped.clone(),
        );
        registry.register(
            "spool_bytes",
            "Size of the state and outbox store on disk",
            spool_bytes.clone(),
        );
        registry.register(
            "subscriptions",
            "Subscriptions per connector and state",
            subscriptions.clone(),
        );
        registry.register(
            "connector_errors",
            "Connector failures, by connector and error type",
            connector_errors.clone(),
        );
        registry.register("commands", "Commands handled, by status", commands.clone());
        registry.register(
            "dead_letters",
            "Commands sent to the dead-letter topic, by reason",
            dead_letters.clone(),
        );
        registry.register(
            "sip_requests",
            "Incoming SIP requests (NOTIFY, PUBLISH, OPTIONS), by connector, method and outcome",
            sip_requests.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                observations,
                changes,
                unchanged,
                published,
                sink_errors,
                sink_up,
                publish_latency,
                outbox_depth,
                outbox_dropped,
                spool_bytes,
                subscriptions,
                connector_errors,
                commands,
                dead_letters,
                sip_requests,
            }),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// Shorthand for a label set.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.published
            .get_or_create(&labels([("connector", "synth"), ("sink", "kafka")]))
            .inc_by(3);
        m.outbox_depth.set(7);
        let text = m.render();
        assert!(
            text.contains("presence_events_published_total{connector=\"synth\",sink=\"kafka\"} 3"),
            "{text}"
        );
        assert!(text.contains("presence_outbox_depth 7"), "{text}");
    }
}
