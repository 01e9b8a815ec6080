//! NATS JetStream sink: stream created if missing, one subject per user
//! (`<prefix>.<kind>.<user token>`, so per-user order holds however the stream is consumed),
//! `Nats-Msg-Id` = event id so the server drops re-publishes inside its duplicate window,
//! acks pipelined up to `max_in_flight`, reconnecting forever.

use super::{subject_token, PublishFailure, Sink, SinkError, SinkHealth};
use crate::codec::Framing;
use crate::config::{NatsAuth, NatsSinkConfig};
use crate::state::OutboxEntry;
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

pub struct NatsSink {
    js: jetstream::Context,
    /// The headers every event of one connector shares (`source`, `schema_fingerprint`),
    /// built once: a clone is much cheaper than parsing and inserting them per event.
    templates: std::collections::HashMap<String, async_nats::HeaderMap>,
    config: NatsSinkConfig,
    /// Stream created lazily on first publish (a NATS outage at start-up only delays).
    stream_ready: bool,
    prefix: String,
    framing: Framing,
    fingerprint_hex: String,
    max_in_flight: usize,
    health: SinkHealth,
}

fn unavailable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable {
        sink: "nats".into(),
        reason: e.to_string(),
    }
}

/// Connects with the bridge's standard options: reconnect forever, health reported.
pub async fn connect(
    url: &str,
    auth: &NatsAuth,
    health: SinkHealth,
    name: &str,
) -> Result<async_nats::Client, SinkError> {
    crate::install_crypto_provider();
    let h = health.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |ev| {
            let h = h.clone();
            async move {
                match ev {
                    async_nats::Event::Disconnected => {
                        h.set(false);
                        tracing::warn!("nats: disconnected, reconnecting")
                    }
                    async_nats::Event::Connected => {
                        h.set(true);
                        tracing::info!("nats: connected")
                    }
                    other => tracing::debug!("nats: {other}"),
                }
            }
        });
    if let Some(t) = &auth.token {
        opts = opts.token(t.expose().to_string());
    }
    if let (Some(u), Some(p)) = (&auth.user, &auth.password) {
        opts = opts.user_and_password(u.clone(), p.expose().to_string());
    }
    if let Some(f) = &auth.credentials_file {
        opts = opts
            .credentials_file(f)
            .await
            .map_err(|e| SinkError::Setup {
                sink: "nats".into(),
                reason: format!("credentials file {}: {e}", f.display()),
            })?;
    }
    opts.connect(url).await.map_err(unavailable)
}

impl NatsSink {
    pub async fn new(
        config: &NatsSinkConfig,
        framing: Framing,
        fingerprint_hex: String,
        health: SinkHealth,
    ) -> Result<NatsSink, SinkError> {
        let client = connect(&config.url, &config.auth, health.clone(), "presence-bridge").await?;
        let js = jetstream::new(client);
        Ok(NatsSink {
            js,
            templates: Default::default(),
            config: config.clone(),
            stream_ready: false,
            prefix: config.subject_prefix.clone(),
            framing,
            fingerprint_hex,
            max_in_flight: config.max_in_flight,
            health,
        })
    }

    fn subject(&self, e: &OutboxEntry) -> String {
        format!("{}.{}.{}", self.prefix, e.kind, subject_token(&e.user))
    }
}

/// Creates the stream if missing (an existing one is used as configured by its owner).
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: Vec<String>,
    duplicate_window: Duration,
) -> Result<jetstream::stream::Stream, SinkError> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects,
        duplicate_window,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| SinkError::Setup {
        sink: "nats".into(),
        reason: format!("stream {name}: {e}"),
    })
}

async fn await_ack(f: PublishAckFuture) -> Result<(), SinkError> {
    f.await.map(|_| ()).map_err(unavailable)
}

#[async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        "nats"
    }

    async fn publish(&mut self, batch: &[OutboxEntry]) -> Result<(), PublishFailure> {
        if !self.stream_ready {
            let c = &self.config;
            ensure_stream(
                &self.js,
                &c.stream,
                vec![format!("{}.>", c.subject_prefix)],
                c.duplicate_window,
            )
            .await
            .map_err(|error| PublishFailure { acked: 0, error })?;
            self.stream_ready = true;
        }
        let mut in_flight: VecDeque<(usize, PublishAckFuture)> = VecDeque::new();
        let mut acked = 0usize;
        for (i, e) in batch.iter().enumerate() {
            if in_flight.len() >= self.max_in_flight {
                let (j, f) = in_flight.pop_front().expect("non-empty");
                await_ack(f)
                    .await
                    .map_err(|error| PublishFailure { acked, error })?;
                acked = j + 1;
            }
            let mut headers = match self.templates.get(&e.connector) {
                Some(t) => t.clone(),
                None => {
                    let mut t = async_nats::HeaderMap::new();
                    t.insert("source", format!("{}/{}", e.kind, e.connector).as_str());
                    t.insert("schema_fingerprint", self.fingerprint_hex.as_str());
                    self.templates.insert(e.connector.clone(), t.clone());
                    t
                }
            };
            // The event id travels as `Nats-Msg-Id` only: JetStream de-duplicates by it and
            // consumers read it from there (no second copy per message).
            headers.insert("Nats-Msg-Id", e.event_id.as_str());
            let payload = Bytes::from(self.framing.frame(&e.datum));
            let f = self
                .js
                .publish_with_headers(self.subject(e), headers, payload)
                .await
                .map_err(|err| PublishFailure {
                    acked,
                    error: unavailable(err),
                })?;
            in_flight.push_back((i, f));
        }
        while let Some((j, f)) = in_flight.pop_front() {
            await_ack(f)
                .await
                .map_err(|error| PublishFailure { acked, error })?;
            acked = j + 1;
        }
        self.health.set(true);
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.js.client().flush().await.map_err(unavailable)
    }
}
