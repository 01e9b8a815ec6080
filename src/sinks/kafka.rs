//! Kafka sink (librdkafka through rdkafka's `FutureProducer`): idempotent, `acks=all`,
//! key = canonical user id so every user's events stay in order on one partition, headers
//! with the event id, source and schema fingerprint. A full local queue is backpressure
//! (wait for the oldest delivery), never an error.

use super::{PublishFailure, Sink, SinkError, SinkHealth};
use crate::codec::Framing;
use crate::config::KafkaSinkConfig;
use crate::state::OutboxEntry;
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, ProducerContext};
use std::collections::VecDeque;
use std::time::Duration;

/// librdkafka context: routes its logs to `tracing` and its broker-down errors to health.
#[derive(Clone)]
pub struct BridgeKafkaContext {
    pub health: SinkHealth,
    pub label: &'static str,
}

impl ClientContext for BridgeKafkaContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(client = self.label, facility = fac, "librdkafka: {msg}")
            }
            L::Warning => tracing::warn!(client = self.label, facility = fac, "librdkafka: {msg}"),
            _ => tracing::debug!(client = self.label, facility = fac, "librdkafka: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Only "all brokers down": one closed connection (idle reaping, a leader moving)
        // is librdkafka's business, not an outage.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set(false);
        }
        tracing::warn!(client = self.label, error = %error, "kafka: {reason}");
    }
}

impl ProducerContext for BridgeKafkaContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Base librdkafka settings shared by producers and consumers, plus the user's extras.
pub fn client_config(
    brokers: &str,
    extra: &std::collections::BTreeMap<String, crate::config::Secret>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    // Keep reconnect attempts frequent: a returning broker should be used within a second.
    c.set("reconnect.backoff.max.ms", "1000");
    for (k, v) in extra {
        c.set(k, v.expose());
    }
    c
}

/// Why the producer is re-created after an outage or a failed delivery: the outbox is the
/// retry queue, so nothing is lost by dropping librdkafka's queue, and a fresh producer id
/// means no broker ever sees a bumped epoch or an old sequence after it restarted (a Kafka
/// broker copes with those; tansu 0.6 does not).
pub struct KafkaSink {
    producer: Option<FutureProducer<BridgeKafkaContext>>,
    needs_reset: bool,
    config: KafkaSinkConfig,
    /// The topic is created lazily on the first publish, so a broker that is down at
    /// start-up only delays publishing instead of failing the bridge.
    topic_ready: bool,
    topic: String,
    framing: Framing,
    fingerprint_hex: String,
    health: SinkHealth,
}

fn unavailable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable {
        sink: "kafka".into(),
        reason: e.to_string(),
    }
}

impl KafkaSink {
    pub fn new(
        config: &KafkaSinkConfig,
        framing: Framing,
        fingerprint_hex: String,
        health: SinkHealth,
    ) -> Result<KafkaSink, SinkError> {
        let producer = make_producer(config, &health)?;
        Ok(KafkaSink {
            producer: Some(producer),
            needs_reset: false,
            config: config.clone(),
            topic_ready: !config.create_topic,
            topic: config.topic.clone(),
            framing,
            fingerprint_hex,
            health,
        })
    }

    /// Drops the producer (purging its queue; the entries are still in the outbox) and
    /// makes a new one.
    async fn reset(&mut self) -> Result<(), SinkError> {
        if let Some(old) = self.producer.take() {
            // Dropping purges and waits up to 500 ms: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        }
        self.producer = Some(make_producer(&self.config, &self.health)?);
        self.needs_reset = false;
        tracing::info!("kafka: producer re-created; re-sending from the outbox");
        Ok(())
    }
}

fn make_producer(
    config: &KafkaSinkConfig,
    health: &SinkHealth,
) -> Result<FutureProducer<BridgeKafkaContext>, SinkError> {
    {
        let mut c = client_config(&config.brokers, &config.properties);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &config.compression)
            .set("linger.ms", config.linger_ms.to_string())
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            .set("queue.buffering.max.messages", "200000")
            .set("batch.num.messages", "10000");
        c.create_with_context(BridgeKafkaContext {
            health: health.clone(),
            label: "producer",
        })
        .map_err(|e| SinkError::Setup {
            sink: "kafka".into(),
            reason: e.to_string(),
        })
    }
}

impl KafkaSink {
    fn headers(&self, e: &OutboxEntry) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "event_id",
                value: Some(e.event_id.as_bytes()),
            })
            .insert(Header {
                key: "source",
                value: Some(format!("{}/{}", e.kind, e.connector).as_bytes()),
            })
            .insert(Header {
                key: "schema_fingerprint",
                value: Some(self.fingerprint_hex.as_bytes()),
            })
    }
}

/// Creates `topic` if it does not exist (an existing topic is fine). Errors are returned
/// for the caller to log: a topic managed by operations may be creatable only by them.
pub async fn ensure_topic(
    brokers: &str,
    extra: &std::collections::BTreeMap<String, crate::config::Secret>,
    topic: &str,
    partitions: i32,
    replication: i32,
    compact: bool,
) -> Result<(), SinkError> {
    let admin: AdminClient<BridgeKafkaContext> = client_config(brokers, extra)
        .create_with_context(BridgeKafkaContext {
            health: SinkHealth::new_up(),
            label: "admin",
        })
        .map_err(|e| SinkError::Setup {
            sink: "kafka".into(),
            reason: e.to_string(),
        })?;
    let mut nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    if compact {
        nt = nt.set("cleanup.policy", "compact");
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let res = admin
        .create_topics([&nt], &opts)
        .await
        .map_err(unavailable)?;
    for r in res {
        match r {
            Ok(_) => tracing::info!(topic, "kafka: created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(SinkError::Setup {
                    sink: "kafka".into(),
                    reason: format!("create topic {t}: {code}"),
                })
            }
        }
    }
    Ok(())
}

async fn await_delivery(f: DeliveryFuture) -> Result<(), SinkError> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageTimedOut)
            | Some(RDKafkaErrorCode::AllBrokersDown)
            | Some(RDKafkaErrorCode::BrokerTransportFailure) => unavailable(e),
            _ => SinkError::Rejected {
                sink: "kafka".into(),
                reason: e.to_string(),
            },
        }),
        Err(_) => Err(unavailable("producer dropped the delivery")),
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        "kafka"
    }

    async fn publish(&mut self, batch: &[OutboxEntry]) -> Result<(), PublishFailure> {
        let fail0 = |error| PublishFailure { acked: 0, error };
        if self.needs_reset || self.producer.is_none() {
            self.reset().await.map_err(fail0)?;
        }
        if !self.topic_ready {
            let c = &self.config;
            ensure_topic(
                &c.brokers,
                &c.properties,
                &c.topic,
                c.partitions,
                c.replication_factor,
                false,
            )
            .await
            .map_err(fail0)?;
            self.topic_ready = true;
        }
        let producer = self.producer.clone().expect("created above");
        // Abandon the batch as soon as librdkafka reports every broker down, instead of
        // waiting in its queue; the outbox keeps the entries.
        let mut down: DownSignal = Box::pin(self.health.watch_down());
        let result = self.send_all(&producer, batch, &mut down).await;
        match &result {
            Ok(()) => self.health.set(true),
            Err(_) => self.needs_reset = true,
        }
        result
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let Some(p) = self.producer.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10)))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }
}

type DownSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn deliver(f: DeliveryFuture, down: &mut DownSignal) -> Result<(), SinkError> {
    tokio::select! {
        r = await_delivery(f) => r,
        _ = down.as_mut() => Err(unavailable("all brokers are down")),
    }
}

impl KafkaSink {
    async fn send_all(
        &self,
        producer: &FutureProducer<BridgeKafkaContext>,
        batch: &[OutboxEntry],
        down: &mut DownSignal,
    ) -> Result<(), PublishFailure> {
        let mut in_flight: VecDeque<(usize, DeliveryFuture)> = VecDeque::new();
        let mut acked = 0usize;
        for (i, e) in batch.iter().enumerate() {
            let payload = self.framing.frame(&e.datum);
            let headers = self.headers(e);
            loop {
                let record = FutureRecord::to(&self.topic)
                    .key(e.user.as_bytes())
                    .payload(&payload)
                    .headers(headers.clone());
                match producer.send_result(record) {
                    Ok(f) => {
                        in_flight.push_back((i, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // Backpressure: wait for the oldest delivery, then try again.
                        match in_flight.pop_front() {
                            Some((j, f)) => {
                                deliver(f, down)
                                    .await
                                    .map_err(|error| PublishFailure { acked, error })?;
                                acked = j + 1;
                            }
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((err, _)) => {
                        return Err(PublishFailure {
                            acked,
                            error: SinkError::Rejected {
                                sink: "kafka".into(),
                                reason: err.to_string(),
                            },
                        })
                    }
                }
            }
        }
        while let Some((j, f)) = in_flight.pop_front() {
            deliver(f, down)
                .await
                .map_err(|error| PublishFailure { acked, error })?;
            acked = j + 1;
        }
        Ok(())
    }
}

impl rdkafka::consumer::ConsumerContext for BridgeKafkaContext {}
