//! presence-bridge: presence sources → normalized change events (previous and current
//! state) → Avro → Kafka, NATS JetStream and a local archive; commands back to the sources.
//!
//! How the pieces fit, in the order data flows:
//!
//! - [`connectors`]: one protocol adapter per source. Each turns notification-triggered
//!   fetches into [`model::Observation`]s and may be a [`connectors::CommandTarget`].
//! - [`pipeline`]: diffs each observation against the last state ([`state`]), and for a
//!   change writes the new state and an outbox entry in one transaction (group commit).
//! - [`codec`]: Avro datums straight from serde; single-object / Confluent framing; OCF.
//! - [`publisher`] + [`sinks`]: one publisher per sink drains the outbox in order and moves
//!   its cursor only past what the broker acknowledged.
//! - [`commands`]: command topic → validate → route → apply → result / dead letter.
//! - [`http`] and [`metrics`]: `/health`, `/ready`, `/metrics`, connector callbacks.
//! - [`runtime`]: starts all of the above from a [`config::Config`] and stops it in order.

pub mod codec;
pub mod commands;
pub mod config;
pub mod connectors;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod publisher;
pub mod replay;
pub mod runtime;
pub mod shutdown;
pub mod simulate;
pub mod sinks;
pub mod state;

/// rustls needs one process-wide crypto provider; ring is already in the tree (async-nats).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
