//! Starts the bridge from a [`Config`] and stops it in order.
//!
//! Start: store → sinks → HTTP → pipeline thread → publishers → connectors → commands.
//! Stop (SIGTERM, Ctrl-C or [`BridgeHandle::shutdown`]): connectors and command consumers
//! stop taking input; the pipeline commits what it holds and ends when the last
//! observation sender is dropped; publishers drain the outbox until it is empty or
//! `outbox.shutdown_timeout` passes (what is left stays in the outbox for the next start);
//! the HTTP server stops last.

use crate::codec::{self, registry::RegistryClient, Framing};
use crate::commands::{self, CommandRouter};
use crate::config::Config;
use crate::connectors::graph::connector::GraphConnector;
use crate::connectors::pws::connector::PwsConnector;
use crate::connectors::sip::connector::SipConnector;
use crate::connectors::synthetic::SyntheticConnector;
use crate::connectors::ucwa::connector::UcwaConnector;
use crate::connectors::{CommandTarget, Connector, ConnectorContext, ObservationSender};
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::pipeline::{OutboxSignals, Pipeline, PipelineSettings};
use crate::publisher::Publisher;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::sinks::archive::ArchiveSink;
use crate::sinks::kafka::KafkaSink;
use crate::sinks::nats::NatsSink;
use crate::sinks::{Sink, SinkHealth};
use crate::state::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Store(#[from] crate::state::StoreError),
    #[error(transparent)]
    Sink(#[from] crate::sinks::SinkError),
    #[error(transparent)]
    Registry(#[from] codec::registry::RegistryError),
    #[error("http server on {addr}: {reason}")]
    Http { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Connector(#[from] crate::connectors::ConnectorError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error(transparent)]
    Commands(#[from] crate::commands::CommandError),
}

/// Builds the connectors named in the config. The one place that knows every kind.
pub fn build_connectors(
    config: &Config,
) -> Result<Vec<Arc<dyn Connector>>, crate::connectors::ConnectorError> {
    let mut out: Vec<Arc<dyn Connector>> = Vec::new();
    for (name, c) in &config.connectors.synthetic {
        out.push(Arc::new(SyntheticConnector::new(name, c.clone())));
    }
    for (name, c) in &config.connectors.pws {
        out.push(Arc::new(PwsConnector::new(name, c.clone())?));
    }
    for (name, c) in &config.connectors.ucwa {
        out.push(Arc::new(UcwaConnector::new(name, c.clone())?));
    }
    for (name, c) in &config.connectors.graph {
        out.push(Arc::new(GraphConnector::new(name, c.clone())?));
    }
    for (name, c) in &config.connectors.sip {
        out.push(Arc::new(SipConnector::new(name, c.clone())?));
    }
    Ok(out)
}

/// A running bridge.
pub struct BridgeHandle {
    pub http_addr: SocketAddr,
    pub metrics: Metrics,
    pub store: Store,
    pub archive_dir: Option<PathBuf>,
    signals: Arc<OutboxSignals>,
    trigger: ShutdownTrigger,
    main: tokio::task::JoinHandle<Result<(), BridgeError>>,
}

impl BridgeHandle {
    /// Asks the bridge to stop (same as SIGTERM).
    pub fn shutdown(&self) {
        self.trigger.trigger();
    }

    /// Outbox entries not yet acknowledged by every sink.
    pub fn outbox_depth(&self) -> u64 {
        self.signals.depth()
    }

    /// Waits until the bridge has stopped.
    pub async fn wait(self) -> Result<(), BridgeError> {
        match self.main.await {
            Ok(r) => r,
            Err(e) => Err(BridgeError::Http {
                addr: self.http_addr,
                reason: format!("bridge task: {e}"),
            }),
        }
    }
}

/// Registers schemas when a registry is configured and returns the framings for
/// (changes on kafka, changes on nats, command results).
async fn framings(config: &Config) -> Result<(Framing, Framing, Framing), BridgeError> {
    let change = codec::presence_change_schema();
    let result = codec::command_result_schema();
    let so = |s: &codec::SchemaInfo| Framing::SingleObject {
        fingerprint: s.fingerprint,
    };
    let Some(reg) = &config.schema_registry else {
        return Ok((so(change), so(change), so(result)));
    };
    let client = RegistryClient::new(&reg.url);
    let mut kafka = so(change);
    let mut nats = so(change);
    let mut res = so(result);
    if let Some(k) = &config.sinks.kafka {
        let id = client
            .register(&format!("{}-value", k.topic), change.json)
            .await?;
        kafka = Framing::Confluent { schema_id: id };
    }
    if let Some(n) = &config.sinks.nats {
        let id = client
            .register(&format!("{}-value", n.subject_prefix), change.json)
            .await?;
        nats = Framing::Confluent { schema_id: id };
    }
    let results_subject = config
        .commands
        .kafka
        .as_ref()
        .map(|k| k.results_topic.clone())
        .or_else(|| {
            config
                .commands
                .nats
                .as_ref()
                .map(|n| n.results_subject_prefix.clone())
        });
    if let Some(subject) = results_subject {
        let id = client
            .register(&format!("{subject}-value"), result.json)
            .await?;
        res = Framing::Confluent { schema_id: id };
    }
    Ok((kafka, nats, res))
}

/// Starts everything and returns at once; SIGTERM/Ctrl-C are NOT hooked here (see
/// [`run_until_signal`]), so tests can run several bridges in one process.
pub async fn start(config: Config) -> Result<BridgeHandle, BridgeError> {
    crate::install_crypto_provider();
    let metrics = Metrics::new();
    let (kafka_framing, nats_framing, result_framing) = framings(&config).await?;
    let fp_hex = codec::presence_change_schema().fingerprint_hex();

    let mut sinks: Vec<(Box<dyn Sink>, SinkHealth)> = Vec::new();
    let archive_dir = config.archive_dir();
    if let (Some(a), Some(dir)) = (&config.sinks.archive, &archive_dir) {
        sinks.push((
            Box::new(ArchiveSink::open(dir, a.clone())?),
            SinkHealth::new_up(),
        ));
    }
    if let Some(k) = &config.sinks.kafka {
        let h = SinkHealth::new_up();
        sinks.push((
            Box::new(KafkaSink::new(k, kafka_framing, fp_hex.clone(), h.clone())?),
            h,
        ));
    }
    if let Some(n) = &config.sinks.nats {
        let h = SinkHealth::new_up();
        sinks.push((
            Box::new(NatsSink::new(n, nats_framing, fp_hex.clone(), h.clone()).await?),
            h,
        ));
    }
    let names: Vec<String> = sinks.iter().map(|(s, _)| s.name().to_string()).collect();
    let store_path = config.store_path();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path, &names))
        .await
        .map_err(|e| crate::state::StoreError::Db(e.to_string()))??;
    let stats = store.outbox_stats()?;
    if stats.depth() > 0 {
        tracing::info!(
            depth = stats.depth(),
            "outbox holds events from before the restart; publishing them first"
        );
    }
    let signals = OutboxSignals::new(stats.head, stats.tail);
    metrics.outbox_depth.set(stats.depth() as i64);

    let (trigger, shutdown) = shutdown::channel();
    let (hard_trigger, hard_stop) = shutdown::channel();

    // HTTP
    let connectors = build_connectors(&config)?;
    let http_state = HttpState {
        metrics: metrics.clone(),
        sinks: Arc::new(
            sinks
                .iter()
                .map(|(s, h)| (s.name().to_string(), h.clone()))
                .collect(),
        ),
        signals: signals.clone(),
    };
    let mut app = http::router(http_state);
    for c in &connectors {
        if let Some(r) = c.routes() {
            app = app.merge(r);
        }
    }
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| BridgeError::Http {
            addr: config.http.listen,
            reason: format!("{e} (set http.listen to a free address)"),
        })?;
    let http_addr = listener.local_addr().map_err(|e| BridgeError::Http {
        addr: config.http.listen,
        reason: e.to_string(),
    })?;
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stop_rx.await;
            })
            .await
    });
    tracing::info!(%http_addr, "http: /health /ready /metrics");

    // Pipeline
    let (tx, rx) = tokio::sync::mpsc::channel(config.pipeline.channel_capacity);
    let pipeline = Pipeline::new(
        store.clone(),
        PipelineSettings {
            batch_size: config.pipeline.batch_size,
            max_entries: config.outbox.max_entries,
            when_full: config.outbox.when_full,
        },
        metrics.clone(),
        signals.clone(),
    );
    let pipeline_thread = pipeline.spawn(rx);

    // Publishers
    let mut publishers = JoinSet::new();
    for (sink, health) in sinks {
        let p = Publisher {
            sink,
            store: store.clone(),
            signals: signals.clone(),
            metrics: metrics.clone(),
            health,
            batch: config.outbox.publish_batch,
            retry_max_delay: config.outbox.retry_max_delay,
        };
        publishers.spawn(p.run(hard_stop.clone()));
    }

    // Connectors
    let sender = ObservationSender::new(tx);
    let mut connector_tasks = JoinSet::new();
    let targets: Vec<Arc<dyn CommandTarget>> = connectors
        .iter()
        .filter_map(|c| c.command_target())
        .collect();
    for c in connectors {
        let ctx = ConnectorContext {
            observations: sender.clone(),
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
        };
        tracing::info!(connector = c.name(), kind = c.kind(), "starting connector");
        connector_tasks.spawn(c.run(ctx));
    }
    drop(sender);

    // Commands
    let router = CommandRouter::new(targets, store.clone(), metrics.clone());
    let mut command_tasks = JoinSet::new();
    if let Some(k) = config.commands.kafka.clone() {
        command_tasks.spawn(commands::run_kafka(
            k,
            router.clone(),
            result_framing,
            shutdown.clone(),
        ));
    }
    if let Some(n) = config.commands.nats.clone() {
        command_tasks.spawn(commands::run_nats(
            n,
            router.clone(),
            result_framing,
            shutdown.clone(),
        ));
    }

    // Gauges that are cheaper to sample than to keep exact: store size and outbox depth.
    {
        let metrics = metrics.clone();
        let signals = signals.clone();
        let path = config.store_path();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.recv() => break,
                }
                if let Ok(m) = tokio::fs::metadata(&path).await {
                    metrics.spool_bytes.set(m.len() as i64);
                }
                metrics.outbox_depth.set(signals.depth() as i64);
            }
        });
    }

    let shutdown_timeout = config.outbox.shutdown_timeout;
    let sig = signals.clone();
    let mut shutdown_wait: Shutdown = shutdown.clone();
    let stop_all = trigger.clone();
    let main = tokio::spawn(async move {
        let mut first_error: Option<BridgeError> = None;
        // Run until asked to stop, or until a connector or command consumer fails.
        loop {
            tokio::select! {
                _ = shutdown_wait.recv() => break,
                Some(r) = connector_tasks.join_next(), if !connector_tasks.is_empty() => {
                    if let Ok(Err(e)) = r {
                        tracing::error!(error = %e, "connector failed; stopping");
                        first_error.get_or_insert(e.into());
                        break;
                    }
                }
                Some(r) = command_tasks.join_next(), if !command_tasks.is_empty() => {
                    if let Ok(Err(e)) = r {
                        tracing::error!(error = %e, "command consumer failed; stopping");
                        first_error.get_or_insert(e.into());
                        break;
                    }
                }
            }
        }
        tracing::info!("shutting down: stopping intake");
        // Also reached when a task failed: tell the others to stop.
        stop_all.trigger();
        sig.stopping.store(true, Ordering::Relaxed);
        sig.wake();
        while let Some(r) = connector_tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "connector ended with an error");
            }
        }
        while command_tasks.join_next().await.is_some() {}
        // All senders are gone once connectors ended: the pipeline commits and finishes.
        match tokio::task::spawn_blocking(move || pipeline_thread.join()).await {
            Ok(Ok(Err(e))) => {
                first_error.get_or_insert(e.into());
            }
            Ok(Err(_)) | Err(_) => tracing::error!("pipeline thread panicked"),
            Ok(Ok(Ok(()))) => {}
        }
        tracing::info!(depth = sig.depth(), "draining the outbox");
        let drained = tokio::time::timeout(shutdown_timeout, async {
            while let Some(r) = publishers.join_next().await {
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "publisher ended with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                depth = sig.depth(),
                "shutdown timeout: undelivered events stay in the outbox for the next start"
            );
            hard_trigger.trigger();
            while publishers.join_next().await.is_some() {}
        }
        let _ = http_stop_tx.send(());
        let _ = http_task.await;
        tracing::info!("stopped");
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });

    Ok(BridgeHandle {
        http_addr,
        metrics,
        store,
        archive_dir,
        signals,
        trigger,
        main,
    })
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run_until_signal(config: Config) -> Result<(), BridgeError> {
    let handle = start(config).await?;
    let stop = handle.trigger.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        stop.trigger();
    });
    handle.wait().await
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
