//! Commands flow the other way: command topic → decode → validate → route to the connector
//! that owns the user → apply → result on the results topic. Bad input never stops the
//! consumer: it goes to the dead-letter topic with the reason. A command id seen before is
//! not applied again (its recorded result is re-published with `duplicate = true`), and the
//! consumer position only moves after the result (or dead letter) is acknowledged, so a
//! crash re-delivers rather than loses a command.

use crate::codec::{self, Framing};
use crate::config::{KafkaCommandsConfig, NatsCommandsConfig};
use crate::connectors::{CommandOutcome, CommandTarget};
use crate::metrics::{labels, Metrics};
use crate::model::{
    canonical_user, now_millis, Availability, Command, CommandAction, CommandResult, CommandStatus,
};
use crate::shutdown::Shutdown;
use crate::sinks::{subject_token, SinkHealth};
use crate::state::Store;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("commands: setup: {0}")]
    Setup(String),
    #[error("commands: {0}")]
    Store(#[from] crate::state::StoreError),
}

/// What became of one message on the command topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    Result(CommandResult),
    /// Not a valid command; the reason goes with the original bytes to the dead-letter topic.
    DeadLetter(String),
}

/// Longest command id accepted (ids are stored to recognise repeats).
const MAX_COMMAND_ID: usize = 256;

/// Checks a decoded command. Pure: the reason is what the requester reads.
pub fn validate(cmd: &Command) -> Result<(), String> {
    if cmd.command_id.trim().is_empty() {
        return Err("command_id is empty".into());
    }
    if cmd.command_id.len() > MAX_COMMAND_ID {
        return Err(format!("command_id longer than {MAX_COMMAND_ID} bytes"));
    }
    if cmd.command_id.contains('\0') || cmd.user.contains('\0') {
        return Err("NUL characters are not allowed".into());
    }
    if cmd.user.trim().is_empty() {
        return Err("user is empty".into());
    }
    if cmd.action == CommandAction::SetPresence {
        match cmd.availability {
            None => return Err("SET_PRESENCE needs an availability".into()),
            Some(Availability::Unknown) => {
                return Err("availability UNKNOWN cannot be set; choose a real availability".into())
            }
            Some(_) => {}
        }
    }
    if let Some(e) = cmd.expiry_seconds {
        if e <= 0 {
            return Err(format!("expiry_seconds must be positive, got {e}"));
        }
    }
    if cmd.note.as_ref().is_some_and(|n| n.len() > 4096) {
        return Err("note longer than 4096 bytes".into());
    }
    Ok(())
}

/// Routes commands to connectors and remembers outcomes.
#[derive(Clone)]
pub struct CommandRouter {
    targets: Arc<Vec<Arc<dyn CommandTarget>>>,
    store: Store,
    metrics: Metrics,
}

impl CommandRouter {
    pub fn new(targets: Vec<Arc<dyn CommandTarget>>, store: Store, metrics: Metrics) -> Self {
        CommandRouter {
            targets: Arc::new(targets),
            store,
            metrics,
        }
    }

    /// Handles one raw message from the command topic.
    pub async fn handle(&self, bytes: &[u8]) -> Result<Handled, CommandError> {
        let mut cmd = match codec::decode_command(bytes) {
            Ok(c) => c,
            Err(e) => return Ok(self.dead("malformed", format!("malformed command: {e}"))),
        };
        if let Err(reason) = validate(&cmd) {
            return Ok(self.dead("invalid", format!("invalid command: {reason}")));
        }
        cmd.user = canonical_user(&cmd.user);
        let span = tracing::info_span!("command", command_id = %cmd.command_id, user = %cmd.user);
        let _e = span.enter();
        let store = self.store.clone();
        let id = cmd.command_id.clone();
        let seen = tokio::task::spawn_blocking(move || store.command_result(&id))
            .await
            .map_err(|e| CommandError::Setup(e.to_string()))??;
        if let Some(mut earlier) = seen {
            tracing::info!("command id seen before: not applied again");
            earlier.duplicate = true;
            self.count("duplicate");
            return Ok(Handled::Result(earlier));
        }
        let target = self.targets.iter().find(|t| {
            cmd.source
                .as_deref()
                .is_none_or(|s| s == t.name() || s == t.kind())
                && t.owns(&cmd.user)
        });
        let (connector, status, error) = match target {
            None => (
                None,
                CommandStatus::Rejected,
                Some(match &cmd.source {
                    Some(s) => format!("no connector `{s}` holds user {}", cmd.user),
                    None => format!("no connector holds user {}", cmd.user),
                }),
            ),
            Some(t) => {
                let outcome = t.apply(&cmd).await;
                let (status, error) = match outcome {
                    CommandOutcome::Applied => (CommandStatus::Applied, None),
                    CommandOutcome::Rejected(r) => (CommandStatus::Rejected, Some(r)),
                    CommandOutcome::Failed(r) => (CommandStatus::Failed, Some(r)),
                    CommandOutcome::Unsupported(r) => (CommandStatus::Unsupported, Some(r)),
                };
                (Some(t.name().to_string()), status, error)
            }
        };
        let result = CommandResult {
            command_id: cmd.command_id.clone(),
            user: cmd.user.clone(),
            connector,
            status,
            error,
            duplicate: false,
            completed_at: now_millis(),
        };
        tracing::info!(status = ?result.status, error = result.error.as_deref().unwrap_or(""), "command handled");
        // A FAILED attempt is not recorded: a re-delivery may succeed.
        if status != CommandStatus::Failed {
            let store = self.store.clone();
            let r = result.clone();
            tokio::task::spawn_blocking(move || store.record_command(&r))
                .await
                .map_err(|e| CommandError::Setup(e.to_string()))??;
        }
        self.count(match status {
            CommandStatus::Applied => "APPLIED",
            CommandStatus::Rejected => "REJECTED",
            CommandStatus::Failed => "FAILED",
            CommandStatus::Unsupported => "UNSUPPORTED",
            CommandStatus::Unknown => "UNKNOWN",
        });
        Ok(Handled::Result(result))
    }

    fn dead(&self, kind: &str, reason: String) -> Handled {
        tracing::warn!(reason = %reason, "command dead-lettered");
        self.metrics
            .dead_letters
            .get_or_create(&labels([("reason", kind)]))
            .inc();
        Handled::DeadLetter(reason)
    }

    fn count(&self, status: &str) {
        self.metrics
            .commands
            .get_or_create(&labels([("status", status)]))
            .inc();
    }
}

fn encode_result(r: &CommandResult, framing: Framing) -> Vec<u8> {
    let mut datum = Vec::with_capacity(128);
    // The result types are fixed and encodable; an error here would be a bug in the model.
    codec::encode_result(r, &mut datum).expect("command result encodes");
    framing.frame(&datum)
}

/// Retries `f` with backoff until it succeeds or shutdown: a result must be published
/// before the command's offset moves, so giving up is not an option.
async fn until_ok<F, Fut, T, E>(what: &str, shutdown: &mut Shutdown, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    use backon::BackoffBuilder;
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .build();
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %e, retry_in = ?wait, "{what} failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.recv() => return None,
                }
            }
        }
    }
}

/// Kafka command consumer: consumer group, offsets stored only after the outcome is
/// published (`enable.auto.offset.store=false`), auto-committed in the background.
pub async fn run_kafka(
    config: KafkaCommandsConfig,
    router: CommandRouter,
    result_framing: Framing,
    mut shutdown: Shutdown,
) -> Result<(), CommandError> {
    use crate::sinks::kafka::{client_config, ensure_topic, BridgeKafkaContext};
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Header, Message, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    for t in [
        &config.topic,
        &config.results_topic,
        &config.dead_letter_topic,
    ] {
        if let Err(e) = ensure_topic(&config.brokers, &config.properties, t, 6, 1, false).await {
            tracing::warn!(topic = %t, error = %e, "could not create topic (it may be managed elsewhere)");
        }
    }
    let health = SinkHealth::new_up();
    let ctx = BridgeKafkaContext {
        health: health.clone(),
        label: "commands",
    };
    let consumer: StreamConsumer<BridgeKafkaContext> =
        client_config(&config.brokers, &config.properties)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create_with_context(ctx.clone())
            .map_err(|e| CommandError::Setup(e.to_string()))?;
    consumer
        .subscribe(&[&config.topic])
        .map_err(|e| CommandError::Setup(e.to_string()))?;
    let producer: FutureProducer<BridgeKafkaContext> =
        client_config(&config.brokers, &config.properties)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .create_with_context(ctx)
            .map_err(|e| CommandError::Setup(e.to_string()))?;
    tracing::info!(topic = %config.topic, group = %config.group_id, "kafka command consumer started");
    loop {
        let msg = tokio::select! {
            _ = shutdown.recv() => break,
            m = consumer.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "command consumer");
                continue;
            }
        };
        let payload = msg.payload().unwrap_or_default().to_vec();
        let handled = router.handle(&payload).await?;
        let sent = match &handled {
            Handled::Result(r) => {
                let bytes = encode_result(r, result_framing);
                until_ok("publish command result", &mut shutdown, || {
                    let rec = FutureRecord::to(&config.results_topic)
                        .key(r.user.as_bytes())
                        .payload(&bytes)
                        .headers(OwnedHeaders::new().insert(Header {
                            key: "command_id",
                            value: Some(r.command_id.as_bytes()),
                        }));
                    let f = producer.send(rec, Duration::from_secs(30));
                    async move { f.await.map_err(|(e, _)| e) }
                })
                .await
            }
            Handled::DeadLetter(reason) => {
                let origin = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
                until_ok("publish dead letter", &mut shutdown, || {
                    let mut rec = FutureRecord::to(&config.dead_letter_topic)
                        .payload(&payload)
                        .headers(
                            OwnedHeaders::new()
                                .insert(Header {
                                    key: "dead_letter_reason",
                                    value: Some(reason.as_bytes()),
                                })
                                .insert(Header {
                                    key: "dead_letter_origin",
                                    value: Some(origin.as_bytes()),
                                }),
                        );
                    if let Some(k) = msg.key() {
                        rec = rec.key(k);
                    }
                    let f = producer.send(rec, Duration::from_secs(30));
                    async move { f.await.map_err(|(e, _)| e) }
                })
                .await
            }
        };
        if sent.is_none() {
            break; // shutdown while retrying: offset not stored, the command is re-delivered
        }
        if let Err(e) = consumer.store_offset_from_message(&msg) {
            tracing::warn!(error = %e, "store command offset");
        }
    }
    // Commit what was stored before leaving the group.
    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
    Ok(())
}

/// NATS command consumer: a JetStream durable pull consumer; a message is acked only after
/// its result (or dead letter) is acknowledged by JetStream.
pub async fn run_nats(
    config: NatsCommandsConfig,
    router: CommandRouter,
    result_framing: Framing,
    mut shutdown: Shutdown,
) -> Result<(), CommandError> {
    use async_nats::jetstream::{self, consumer::pull};
    use futures::StreamExt;

    let client = crate::sinks::nats::connect(
        &config.url,
        &config.auth,
        SinkHealth::new_up(),
        "presence-bridge-commands",
    )
    .await
    .map_err(|e| CommandError::Setup(e.to_string()))?;
    let js = jetstream::new(client);
    let stream = crate::sinks::nats::ensure_stream(
        &js,
        &config.stream,
        vec![config.subject.clone()],
        Duration::from_secs(120),
    )
    .await
    .map_err(|e| CommandError::Setup(e.to_string()))?;
    crate::sinks::nats::ensure_stream(
        &js,
        &format!("{}_RESULTS", config.stream),
        vec![
            format!("{}.>", config.results_subject_prefix),
            config.dead_letter_subject.clone(),
        ],
        Duration::from_secs(120),
    )
    .await
    .map_err(|e| CommandError::Setup(e.to_string()))?;
    let consumer = stream
        .get_or_create_consumer(
            &config.durable,
            pull::Config {
                durable_name: Some(config.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| CommandError::Setup(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| CommandError::Setup(e.to_string()))?;
    tracing::info!(subject = %config.subject, durable = %config.durable, "nats command consumer started");
    loop {
        let next = tokio::select! {
            _ = shutdown.recv() => break,
            m = messages.next() => m,
        };
        let msg = match next {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "command consumer");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let handled = router.handle(&msg.payload).await?;
        let sent = match &handled {
            Handled::Result(r) => {
                let subject = format!(
                    "{}.{}",
                    config.results_subject_prefix,
                    subject_token(&r.user)
                );
                let bytes = bytes::Bytes::from(encode_result(r, result_framing));
                until_ok("publish command result", &mut shutdown, || {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("command_id", r.command_id.as_str());
                    let js = js.clone();
                    let subject = subject.clone();
                    let bytes = bytes.clone();
                    async move {
                        js.publish_with_headers(subject, h, bytes)
                            .await
                            .map_err(|e| e.to_string())?
                            .await
                            .map_err(|e| e.to_string())
                    }
                })
                .await
                .map(|_| ())
            }
            Handled::DeadLetter(reason) => until_ok("publish dead letter", &mut shutdown, || {
                let mut h = async_nats::HeaderMap::new();
                h.insert(
                    "dead_letter_reason",
                    reason.replace(['\r', '\n'], " ").as_str(),
                );
                h.insert("dead_letter_origin", msg.subject.as_str());
                let js = js.clone();
                let payload = msg.payload.clone();
                let subject = config.dead_letter_subject.clone();
                async move {
                    js.publish_with_headers(subject, h, payload)
                        .await
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await
            .map(|_| ()),
        };
        if sent.is_none() {
            break;
        }
        if let Err(e) = msg.ack().await {
            tracing::warn!(error = %e, "ack command");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command {
            command_id: "c1".into(),
            action: CommandAction::SetPresence,
            user: "a@x".into(),
            source: None,
            availability: Some(Availability::Busy),
            activity: None,
            note: None,
            expiry_seconds: None,
            issued_at: None,
        }
    }

    #[test]
    fn validation_table() {
        assert_eq!(validate(&cmd()), Ok(()));
        type Mutation = Box<dyn Fn(&mut Command)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|c| c.command_id = " ".into()),
                "command_id is empty",
            ),
            (Box::new(|c| c.user = "".into()), "user is empty"),
            (Box::new(|c| c.availability = None), "needs an availability"),
            (
                Box::new(|c| c.availability = Some(Availability::Unknown)),
                "UNKNOWN cannot be set",
            ),
            (Box::new(|c| c.expiry_seconds = Some(0)), "expiry_seconds"),
            (Box::new(|c| c.command_id = "x".repeat(300)), "longer than"),
        ];
        for (mutate, want) in cases {
            let mut c = cmd();
            mutate(&mut c);
            let err = validate(&c).unwrap_err();
            assert!(err.contains(want), "{err} vs {want}");
        }
        let mut c = cmd();
        c.action = CommandAction::ClearPresence;
        c.availability = None;
        assert_eq!(validate(&c), Ok(()));
    }
}
