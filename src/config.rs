//! Configuration: one TOML file, unknown keys rejected, `${ENV}` and `${file:/path}`
//! substitution in string values (for secrets), and a validation pass that names every bad
//! key and how to fix it. The field docs here are the user-facing reference.

use crate::connectors::graph::config::GraphConfig;
use crate::connectors::pws::config::PwsConfig;
use crate::connectors::sip::config::SipConfig;
use crate::connectors::synthetic::SyntheticConfig;
use crate::connectors::ucwa::config::UcwaConfig;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: TOML syntax: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Key {
        path: String,
        key: String,
        message: String,
    },
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Durations as humantime strings: `"250ms"`, `"30s"`, `"10m"`, `"1h"`.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"10m\""
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the state store (and the archive, unless `sinks.archive.dir` is set).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    #[serde(default)]
    pub sinks: SinksConfig,
    #[serde(default)]
    pub commands: CommandsConfig,
    #[serde(default)]
    pub connectors: ConnectorsConfig,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./presence-data")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP server (`/health`, `/ready`, `/metrics`, connector callbacks).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Observations buffered between connectors and the pipeline.
    #[serde(default = "default_channel")]
    pub channel_capacity: usize,
    /// Most observations handled in one store transaction (group commit).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_channel() -> usize {
    16_384
}
fn default_batch() -> usize {
    4096
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            channel_capacity: default_channel(),
            batch_size: default_batch(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Stop taking observations until sinks catch up (connectors slow down). Nothing lost.
    Block,
    /// Drop the oldest unpublished events, counted in `presence_outbox_dropped_total`.
    DropOldest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most entries waiting for sinks before `when_full` applies.
    #[serde(default = "default_outbox_max")]
    pub max_entries: u64,
    #[serde(default = "default_when_full")]
    pub when_full: WhenFull,
    /// Most entries a sink publishes per round.
    #[serde(default = "default_publish_batch")]
    pub publish_batch: usize,
    /// How long shutdown waits for sinks to drain; the rest stays in the outbox.
    #[serde(default = "default_shutdown_timeout", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Longest wait between publish retries while a sink is down.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max_delay: Duration,
}

fn default_outbox_max() -> u64 {
    1_000_000
}
fn default_when_full() -> WhenFull {
    WhenFull::Block
}
fn default_publish_batch() -> usize {
    5000
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(10)
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_entries: default_outbox_max(),
            when_full: default_when_full(),
            publish_batch: default_publish_batch(),
            shutdown_timeout: default_shutdown_timeout(),
            retry_max_delay: default_retry_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Confluent-compatible registry; when set, brokers get the Confluent wire format.
    pub url: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    pub archive: Option<ArchiveConfig>,
    pub kafka: Option<KafkaSinkConfig>,
    pub nats: Option<NatsSinkConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveCompression {
    Deflate,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Directory of the Avro container files (default: `<data_dir>/archive`).
    pub dir: Option<PathBuf>,
    /// Start a new file after this many bytes.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Start a new file after this long.
    #[serde(default = "default_rotate_interval", deserialize_with = "de_duration")]
    pub rotate_interval: Duration,
    #[serde(default = "default_archive_compression")]
    pub compression: ArchiveCompression,
}

fn default_rotate_bytes() -> u64 {
    128 * 1024 * 1024
}
fn default_rotate_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_archive_compression() -> ArchiveCompression {
    ArchiveCompression::Deflate
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            dir: None,
            rotate_bytes: default_rotate_bytes(),
            rotate_interval: default_rotate_interval(),
            compression: default_archive_compression(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    #[serde(default = "default_changes_topic")]
    pub topic: String,
    /// `lz4` (default), `none`, or what librdkafka was built with.
    #[serde(default = "default_kafka_compression")]
    pub compression: String,
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// How long librdkafka keeps trying one message before the bridge re-sends it.
    /// `"0s"` (default): forever. While the broker is down messages wait in librdkafka and
    /// the outbox; nothing times out, so the idempotent producer never has to bump its
    /// epoch (some brokers, tansu among them, mishandle that).
    #[serde(default = "default_kafka_timeout", deserialize_with = "de_duration")]
    pub message_timeout: Duration,
    /// Create the topic on first use if it does not exist.
    #[serde(default = "default_true")]
    pub create_topic: bool,
    /// Partitions of a topic the bridge creates (per-user order holds on any count).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of a topic the bridge creates; use 3 on a production cluster.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Extra librdkafka properties (security.protocol, sasl.*, …). Values may use `${ENV}`.
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}

fn default_changes_topic() -> String {
    "presence.changes".into()
}
fn default_kafka_compression() -> String {
    "lz4".into()
}
fn default_linger_ms() -> u32 {
    5
}
fn default_kafka_timeout() -> Duration {
    Duration::ZERO
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    pub url: String,
    /// JetStream stream, created if missing, capturing `<subject_prefix>.>`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Events go to `<subject_prefix>.<connector kind>.<user token>`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Publishes awaiting their JetStream ack at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// JetStream de-duplication window (re-publishes inside it are dropped by the server).
    #[serde(default = "default_dedupe", deserialize_with = "de_duration")]
    pub duplicate_window: Duration,
    #[serde(default)]
    pub auth: NatsAuth,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsAuth {
    pub token: Option<Secret>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub credentials_file: Option<PathBuf>,
}

fn default_stream() -> String {
    "PRESENCE".into()
}
fn default_subject_prefix() -> String {
    "presence.changes".into()
}
fn default_in_flight() -> usize {
    4096
}
fn default_dedupe() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    pub kafka: Option<KafkaCommandsConfig>,
    pub nats: Option<NatsCommandsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaCommandsConfig {
    pub brokers: String,
    #[serde(default = "default_cmd_topic")]
    pub topic: String,
    #[serde(default = "default_results_topic")]
    pub results_topic: String,
    #[serde(default = "default_dlq_topic")]
    pub dead_letter_topic: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

fn default_cmd_topic() -> String {
    "presence.commands".into()
}
fn default_results_topic() -> String {
    "presence.command-results".into()
}
fn default_dlq_topic() -> String {
    "presence.commands.dlq".into()
}
fn default_group() -> String {
    "presence-bridge".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsCommandsConfig {
    pub url: String,
    #[serde(default = "default_cmd_stream")]
    pub stream: String,
    #[serde(default = "default_cmd_topic")]
    pub subject: String,
    /// Results go to `<results_subject_prefix>.<user token>`.
    #[serde(default = "default_results_topic")]
    pub results_subject_prefix: String,
    #[serde(default = "default_dlq_topic")]
    pub dead_letter_subject: String,
    #[serde(default = "default_group")]
    pub durable: String,
    #[serde(default)]
    pub auth: NatsAuth,
}

fn default_cmd_stream() -> String {
    "PRESENCE_COMMANDS".into()
}

/// One map per connector kind: `[connectors.<kind>.<name>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    #[serde(default)]
    pub synthetic: BTreeMap<String, SyntheticConfig>,
    /// Cisco IM&P Presence Web Service.
    #[serde(default)]
    pub pws: BTreeMap<String, PwsConfig>,
    /// Lync / Skype for Business UCWA.
    #[serde(default)]
    pub ucwa: BTreeMap<String, UcwaConfig>,
    /// Microsoft Teams presence through Microsoft Graph.
    #[serde(default)]
    pub graph: BTreeMap<String, GraphConfig>,
    /// SIP presence servers and phones (SUBSCRIBE/NOTIFY, PUBLISH).
    #[serde(default)]
    pub sip: BTreeMap<String, SipConfig>,
}

impl ConnectorsConfig {
    pub fn names(&self) -> Vec<String> {
        self.synthetic
            .keys()
            .chain(self.pws.keys())
            .chain(self.ucwa.keys())
            .chain(self.graph.keys())
            .chain(self.sip.keys())
            .cloned()
            .collect()
    }
}

impl Config {
    /// Loads, substitutes, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Parses `text` (named `origin` in messages).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_string(),
            message: e.message().to_string(),
        })?;
        let mut problems = Vec::new();
        substitute(&mut table, "", &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems,
            });
        }
        let value = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            ConfigError::Key {
                path: origin.to_string(),
                message: explain(&inner),
                key,
            }
        })?;
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems,
            });
        }
        Ok(config)
    }

    /// Checks what serde cannot: names each bad key and the fix.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.sinks.archive.is_none() && self.sinks.kafka.is_none() && self.sinks.nats.is_none() {
            p.push(
                "no sink configured: add [sinks.archive] (local files), [sinks.kafka] or [sinks.nats]"
                    .to_string(),
            );
        }
        if self.pipeline.batch_size == 0 {
            p.push("pipeline.batch_size is 0: set it to at least 1 (default 4096)".into());
        }
        if self.pipeline.channel_capacity == 0 {
            p.push("pipeline.channel_capacity is 0: set it to at least 1 (default 16384)".into());
        }
        if self.outbox.max_entries < self.pipeline.batch_size as u64 {
            p.push(format!(
                "outbox.max_entries ({}) is below pipeline.batch_size ({}): raise outbox.max_entries",
                self.outbox.max_entries, self.pipeline.batch_size
            ));
        }
        if self.outbox.publish_batch == 0 {
            p.push("outbox.publish_batch is 0: set it to at least 1 (default 5000)".into());
        }
        if let Some(k) = &self.sinks.kafka {
            if k.brokers.trim().is_empty() {
                p.push("sinks.kafka.brokers is empty: set it to host:port[,host:port]".into());
            }
            if k.topic.trim().is_empty() {
                p.push(
                    "sinks.kafka.topic is empty: name a topic, e.g. \"presence.changes\"".into(),
                );
            }
        }
        if let Some(n) = &self.sinks.nats {
            if !(n.url.starts_with("nats://") || n.url.starts_with("tls://")) {
                p.push(format!(
                    "sinks.nats.url `{}` is not a NATS URL: write nats://host:4222",
                    n.url
                ));
            }
            if n.subject_prefix.contains(['*', '>', ' ']) || n.subject_prefix.ends_with('.') {
                p.push("sinks.nats.subject_prefix must be plain tokens like \"presence.changes\" (no wildcards, no trailing dot)".into());
            }
            if n.max_in_flight == 0 {
                p.push("sinks.nats.max_in_flight is 0: set it to at least 1".into());
            }
        }
        if let Some(r) = &self.schema_registry {
            if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                p.push(format!(
                    "schema_registry.url `{}` is not an http(s) URL",
                    r.url
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in self.connectors.names() {
            if !seen.insert(name.clone()) {
                p.push(format!(
                    "connector name `{name}` is used twice: names are unique across kinds"
                ));
            }
            if name.is_empty() || name.contains(['\0', '.', '*', '>', ' ']) {
                p.push(format!(
                    "connector name `{name}`: use letters, digits, - and _"
                ));
            }
        }
        for (name, c) in &self.connectors.synthetic {
            p.extend(c.validate(&format!("connectors.synthetic.{name}")));
        }
        for (name, c) in &self.connectors.pws {
            p.extend(c.validate(&format!("connectors.pws.{name}")));
        }
        for (name, c) in &self.connectors.ucwa {
            p.extend(c.validate(&format!("connectors.ucwa.{name}")));
        }
        for (name, c) in &self.connectors.graph {
            p.extend(c.validate(&format!("connectors.graph.{name}")));
        }
        for (name, c) in &self.connectors.sip {
            p.extend(c.validate(&format!("connectors.sip.{name}")));
        }
        p
    }

    pub fn archive_dir(&self) -> Option<PathBuf> {
        self.sinks.archive.as_ref().map(|a| {
            a.dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("archive"))
        })
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("state.redb")
    }
}

/// Turns serde's wording into advice.
fn explain(msg: &str) -> String {
    if msg.starts_with("unknown field") {
        format!("{msg}; remove it or fix its spelling")
    } else if msg.starts_with("missing field") {
        format!("{msg}; add it")
    } else {
        msg.to_string()
    }
}

/// Replaces `${VAR}` by the environment variable and `${file:/path}` by the file's content
/// (trailing newline trimmed) in every string value. Problems name the key, never the value.
fn substitute(table: &mut toml::Table, prefix: &str, problems: &mut Vec<String>) {
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        substitute_value(v, &key, problems);
    }
}

fn substitute_value(v: &mut toml::Value, key: &str, problems: &mut Vec<String>) {
    match v {
        toml::Value::String(s) if s.contains("${") => match expand(s) {
            Ok(new) => *s = new,
            Err(e) => problems.push(format!("{key}: {e}")),
        },
        toml::Value::Table(t) => substitute(t, key, problems),
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                substitute_value(item, &format!("{key}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

fn expand(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${`: write ${NAME} or ${file:/path}".to_string())?;
        let name = &after[..end];
        if let Some(path) = name.strip_prefix("file:") {
            let content = std::fs::read_to_string(path)
                .map_err(|e| format!("secret file {path} cannot be read ({e})"))?;
            out.push_str(content.trim_end_matches(['\n', '\r']));
        } else {
            let val = std::env::var(name).map_err(|_| {
                format!("environment variable {name} is not set: export it or remove ${{{name}}}")
            })?;
            out.push_str(&val);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The embedded default used by `presence-bridge demo`: a synthetic source into the
/// archive under `./presence-data`.
pub fn demo_config(data_dir: &Path, listen: SocketAddr, users: u32, rate: f64) -> Config {
    let mut synthetic = BTreeMap::new();
    synthetic.insert(
        "demo".to_string(),
        SyntheticConfig {
            users,
            rate,
            ..SyntheticConfig::default()
        },
    );
    Config {
        data_dir: data_dir.to_path_buf(),
        http: HttpConfig { listen },
        pipeline: PipelineConfig::default(),
        outbox: OutboxConfig::default(),
        schema_registry: None,
        sinks: SinksConfig {
            archive: Some(ArchiveConfig {
                rotate_interval: Duration::from_secs(600),
                ..ArchiveConfig::default()
            }),
            kafka: None,
            nats: None,
        },
        commands: CommandsConfig::default(),
        connectors: ConnectorsConfig {
            synthetic,
            ..ConnectorsConfig::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_path_and_fix() {
        let err = Config::from_toml(
            "[sinks.kafka]\nbrokers = \"x:1\"\ntopik = \"t\"\n",
            "bridge.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sinks.kafka"), "{err}");
        assert!(err.contains("topik"), "{err}");
        assert!(err.contains("remove it or fix its spelling"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_listed() {
        let err = Config::from_toml(
            "[pipeline]\nbatch_size = 0\n[sinks.nats]\nurl = \"http://x\"\n",
            "b.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pipeline.batch_size"), "{err}");
        assert!(err.contains("sinks.nats.url"), "{err}");
    }

    #[test]
    fn env_and_file_substitution_without_leaking_values() {
        std::env::set_var("PB_TEST_SECRET_X", "s3cret-value");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let text = format!(
            "[sinks.kafka]\nbrokers = \"h:1\"\n[sinks.kafka.properties]\n\"sasl.password\" = \"${{PB_TEST_SECRET_X}}\"\n\"sasl.username\" = \"${{file:{}}}\"\n",
            f.display()
        );
        let c = Config::from_toml(&text, "t").unwrap();
        let k = c.sinks.kafka.unwrap();
        assert_eq!(k.properties["sasl.password"].expose(), "s3cret-value");
        assert_eq!(k.properties["sasl.username"].expose(), "from-file");
        assert!(!format!("{:?}", k.properties).contains("s3cret"));

        let err = Config::from_toml(
            "[sinks.nats]\nurl = \"nats://h\"\n[sinks.nats.auth]\ntoken = \"${PB_TEST_UNSET_Y}\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sinks.nats.auth.token"), "{err}");
        assert!(err.contains("PB_TEST_UNSET_Y is not set"), "{err}");
    }

    #[test]
    fn bad_duration_names_key_and_format() {
        let err = Config::from_toml(
            "[outbox]\nshutdown_timeout = \"soon\"\n[sinks.archive]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("outbox.shutdown_timeout"), "{err}");
        assert!(err.contains("\"30s\""), "{err}");
    }

    #[test]
    fn example_configs_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                std::env::set_var("KAFKA_SASL_PASSWORD", "x");
                std::env::set_var("PWS_APP_PASSWORD", "x");
                std::env::set_var("UCWA_PASSWORD", "x");
                std::env::set_var("GRAPH_CLIENT_SECRET", "x");
                std::env::set_var("GRAPH_SVC_PASSWORD", "x");
                Config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}
