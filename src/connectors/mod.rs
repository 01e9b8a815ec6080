//! The connector boundary. Everything source-specific lives behind these two traits; the
//! pipeline only ever sees [`Observation`]s and the command router only [`CommandTarget`]s,
//! so a new source is a new folder here plus a config section, and nothing else.
//!
//! A connector is a protocol adapter: it owns its sessions, subscriptions, resubscribe loop
//! and normalization table, and turns every notification-triggered fetch into Observations.

pub mod graph;
pub mod pws;
pub mod sip;
pub mod synthetic;
pub mod ucwa;

use crate::metrics::Metrics;
use crate::model::{Command, Observation};
use crate::shutdown::Shutdown;
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Contacts from a config list plus an optional file (one per line, `#` comments),
/// canonical ([`crate::model::canonical_user`]) and de-duplicated, in configuration order.
pub fn load_contacts(
    listed: &[String],
    file: Option<&std::path::Path>,
) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |c: &str| {
        let c = crate::model::canonical_user(c);
        if !c.is_empty() && seen.insert(c.clone()) {
            out.push(c);
        }
    };
    for c in listed {
        add(c);
    }
    if let Some(f) = file {
        for line in std::fs::read_to_string(f)?.lines() {
            add(line.split('#').next().unwrap_or("").trim());
        }
    }
    Ok(out)
}

/// Why a JSON response body was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonBodyProblem {
    TooLarge { len: usize, max: usize },
    NotAnObject,
}

/// The common first step of every JSON connector's parsers: refuse oversized bodies before
/// serde sees them, drop a UTF-8 BOM, and require an object (serde derives would also read
/// structs from arrays).
pub fn json_object_body(body: &[u8], max: usize) -> Result<&[u8], JsonBodyProblem> {
    if body.len() > max {
        return Err(JsonBodyProblem::TooLarge {
            len: body.len(),
            max,
        });
    }
    let body = strip_bom(body);
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(JsonBodyProblem::NotAnObject);
    }
    Ok(body)
}

/// The body without a leading UTF-8 byte-order mark.
pub fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

/// `None` for a missing or blank string.
pub fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Errors that end a connector task. Transient failures (a server down, a session expired)
/// are handled inside the connector and only counted; these are the fatal ones.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector {connector}: configuration: {reason}")]
    Config { connector: String, reason: String },
    #[error("connector {connector}: {reason}")]
    Fatal { connector: String, reason: String },
}

/// Sends observations to the pipeline. Bounded: when the outbox is full (policy `block`)
/// sends wait, so connectors slow their fetches instead of buffering without bound.
#[derive(Clone)]
pub struct ObservationSender {
    tx: mpsc::Sender<Observation>,
}

/// The pipeline has stopped; no more observations are accepted.
#[derive(Debug, thiserror::Error)]
#[error("pipeline closed")]
pub struct PipelineClosed;

impl ObservationSender {
    pub fn new(tx: mpsc::Sender<Observation>) -> Self {
        ObservationSender { tx }
    }

    pub async fn send(&self, obs: Observation) -> Result<(), PipelineClosed> {
        self.tx.send(obs).await.map_err(|_| PipelineClosed)
    }
}

/// What a connector task gets from the runtime.
pub struct ConnectorContext {
    pub observations: ObservationSender,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
}

/// One configured source.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The configured name (unique across connectors; part of state keys and event ids).
    fn name(&self) -> &str;
    /// `pws`, `ucwa`, `graph`, `sip`, `synthetic`.
    fn kind(&self) -> &'static str;
    /// HTTP routes to mount on the bridge's server (PWS callbacks, Graph webhooks).
    fn routes(&self) -> Option<axum::Router> {
        None
    }
    /// The command target for set-presence commands, if this source supports them.
    fn command_target(&self) -> Option<Arc<dyn CommandTarget>> {
        None
    }
    /// Runs until `ctx.shutdown` fires (then returns `Ok`) or a fatal error.
    async fn run(self: Arc<Self>, ctx: ConnectorContext) -> Result<(), ConnectorError>;
}

/// Outcome of applying a command at a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Applied,
    /// The source refused it, or it is invalid for this source (reason for the requester).
    Rejected(String),
    /// Trying failed (network, server error).
    Failed(String),
    /// The source cannot do this at all (e.g. UCWA setting someone else's presence).
    Unsupported(String),
}

/// Applies set-presence commands at one source.
#[async_trait]
pub trait CommandTarget: Send + Sync {
    /// Connector name.
    fn name(&self) -> &str;
    fn kind(&self) -> &'static str;
    /// Does this connector hold this (canonical) user?
    fn owns(&self, user: &str) -> bool;
    async fn apply(&self, command: &Command) -> CommandOutcome;
}

#[cfg(test)]
mod tests {
    #[test]
    fn contacts_from_list_and_file_are_canonical_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.txt");
        std::fs::write(
            &f,
            "# team\nsip:Bob@x.org\n\ncarol@x.org  # lead\nalice@x.org\n",
        )
        .unwrap();
        let got =
            super::load_contacts(&["Alice@X.org".into(), "bob@x.org".into()], Some(&f)).unwrap();
        assert_eq!(got, ["alice@x.org", "bob@x.org", "carol@x.org"]);
        assert!(super::load_contacts(&[], Some(&dir.path().join("missing"))).is_err());
    }
}
