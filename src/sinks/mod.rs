//! Where events go. A sink publishes a batch of outbox entries **in order** and reports how
//! many leading entries were acknowledged; the publisher moves the sink's cursor only past
//! acknowledged entries, so nothing leaves the outbox unacknowledged.

pub mod archive;
pub mod kafka;
pub mod nats;

use crate::state::OutboxEntry;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared "is the sink reachable" flag, set from librdkafka's error callback and from
/// delivery results; `/ready` reads it.
#[derive(Clone, Default)]
pub struct SinkHealth(Arc<AtomicBool>);

impl SinkHealth {
    pub fn new_up() -> Self {
        SinkHealth(Arc::new(AtomicBool::new(true)))
    }
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
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
