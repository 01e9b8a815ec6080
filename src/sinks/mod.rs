//! Where events go. A sink publishes a batch of outbox entries **in order** and reports how
//! many leading entries were acknowledged; the publisher moves the sink's cursor only past
//! acknowledged entries, so nothing leaves the outbox unacknowledged.

pub mod archive;
pub mod kafka;
pub mod nats;

use crate::state::OutboxEntry;
use async_trait::async_trait;
use std::sync::Arc;

/// Shared "is the sink reachable" flag, set from client callbacks (librdkafka's error
/// callback, NATS connection events) and from publish results; `/ready` reads it. Every
/// `set` is an event (even when the value does not change), so a publish in progress can
/// react to "the broker just went away" from [`SinkHealth::watch_down`].
#[derive(Clone)]
pub struct SinkHealth(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for SinkHealth {
    fn default() -> Self {
        Self::new_up()
    }
}

impl SinkHealth {
    pub fn new_up() -> Self {
        SinkHealth(Arc::new(tokio::sync::watch::channel(true).0))
    }
    pub fn set(&self, up: bool) {
        self.0.send_replace(up);
    }
    pub fn is_up(&self) -> bool {
        *self.0.borrow()
    }
    /// A watcher that completes on the next "down" report after this call.
    pub fn watch_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        rx.borrow_and_update();
        async move {
            loop {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if !*rx.borrow_and_update() {
                    return;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: broker unavailable: {reason}")]
    Unavailable { sink: String, reason: String },
    #[error("{sink}: rejected: {reason}")]
    Rejected { sink: String, reason: String },
    #[error("{sink}: io: {reason}")]
    Io { sink: String, reason: String },
    #[error("{sink}: setup: {reason}")]
    Setup { sink: String, reason: String },
}

impl SinkError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Unavailable { .. } => "unavailable",
            SinkError::Rejected { .. } => "rejected",
            SinkError::Io { .. } => "io",
            SinkError::Setup { .. } => "setup",
        }
    }
}

/// A batch was only partly acknowledged.
#[derive(Debug)]
pub struct PublishFailure {
    /// Leading entries of the batch that were acknowledged.
    pub acked: usize,
    pub error: SinkError,
}

#[async_trait]
pub trait Sink: Send {
    /// Stable name; also the outbox cursor name (`archive`, `kafka`, `nats`).
    fn name(&self) -> &str;
    /// Publishes `batch` in order; `Ok` means every entry was acknowledged.
    async fn publish(&mut self, batch: &[OutboxEntry]) -> Result<(), PublishFailure>;
    /// Flushes and releases resources at shutdown.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The NATS subject token for a user: subject-safe and reversible enough to read.
/// Characters NATS treats specially (`.`, `*`, `>`, whitespace) become `_`, so
/// `alice.smith@example.com` → `alice_smith@example_com`.
pub fn subject_token(user: &str) -> String {
    let t: String = user
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' | '\t' | '\r' | '\n' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_tokens_are_single_tokens() {
        for (u, want) in [
            ("alice.smith@example.com", "alice_smith@example_com"),
            ("a*b>c d", "a_b_c_d"),
            ("", "_"),
            ("+4930123", "+4930123"),
        ] {
            assert_eq!(super::subject_token(u), want);
        }
    }
}
