//! The `sip` connector task: starts the SIP stack, one [`Subscription`] task per
//! (presentity, package) and per resource list, and a dispatcher that answers every
//! incoming request at once — NOTIFY through the [`Router`], PUBLISH through the optional
//! inbound [`Compositor`], OPTIONS with our capabilities.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{with_scheme, Package, SipConfig};
use super::digest::Credentials;
use super::esc::Compositor;
use super::message::SipMessage;
use super::presentity::Presentities;
use super::publish::SipCommands;
use super::stack::{Incoming, RsipStack, SipStack, StackOptions, Target};
use super::subscription::{Router, Spec, Subscription, Update};
use crate::connectors::{
    CommandTarget, Connector, ConnectorContext, ConnectorError, ObservationSender,
};
use crate::metrics::{labels, Metrics};
use crate::model::{now_millis, Observation, PresenceState, SourceRef};
use crate::shutdown::Shutdown;

/// Spaces new subscriptions `1/rate` apart (Presence Provider
/// `MaxPresenceSubscriptionsPerSecond`): a restart of thousands of subscriptions must not
/// flood the presence server.
pub struct Throttle {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl Throttle {
    pub fn new(per_second: f64) -> Self {
        Throttle {
            interval: Duration::from_secs_f64(1.0 / per_second.max(0.001)),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// What every subscription task and the dispatcher share.
pub struct SipCore {
    pub name: String,
    pub config: SipConfig,
    pub stack: Arc<dyn SipStack>,
    pub router: Router,
    pub throttle: Throttle,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
    pub presentities: Presentities,
    observations: ObservationSender,
    password: Option<String>,
}

impl SipCore {
    pub fn new(
        name: String,
        config: SipConfig,
        stack: Arc<dyn SipStack>,
        shutdown: Shutdown,
        metrics: Metrics,
        observations: ObservationSender,
    ) -> Self {
        let password = config.password.as_ref().map(|p| p.expose().to_string());
        SipCore {
            throttle: Throttle::new(config.subscribe_rate),
            presentities: Presentities::new(&config),
            name,
            config,
            stack,
            router: Router::default(),
            shutdown,
            metrics,
            observations,
            password,
        }
    }

    /// Digest credentials (an empty password when none is configured: a challenge then
    /// fails cleanly as "credentials rejected").
    pub fn credentials(&self) -> Credentials {
        Credentials {
            username: self.config.digest_user(),
            password: self.password.clone().unwrap_or_default(),
        }
    }

    pub fn target(&self) -> Target {
        Target {
            addr: self.config.server,
            transport: self.config.transport,
        }
    }

    fn local(&self) -> SocketAddr {
        self.stack
            .local_addr(self.config.transport)
            .unwrap_or(self.config.bind)
    }

    /// Host for Call-IDs.
    pub fn local_host(&self) -> String {
        self.local().ip().to_string()
    }

    /// Our Contact header value.
    pub fn contact(&self) -> String {
        let user = self.config.digest_user();
        let user = if user.is_empty() {
            "presence-bridge".to_string()
        } else {
            user
        };
        format!(
            "<sip:{user}@{};transport={}>",
            self.local(),
            self.config.transport.param()
        )
    }

    pub fn source(&self) -> SourceRef {
        SourceRef {
            kind: "sip".into(),
            connector: self.name.clone(),
            server: Some(self.config.server.to_string()),
            server_time: None,
        }
    }

    pub fn error(&self, kind: &str) {
        self.metrics
            .connector_errors
            .get_or_create(&labels([("connector", &self.name), ("error_type", kind)]))
            .inc();
    }

    /// Counts a subscription leaving `old` (None: not counted) and entering `new`.
    pub fn set_sub_state(&self, spec: &Spec, state: Option<&'static str>) {
        self.presentities
            .set_sub_state(&self.metrics, &self.name, &spec.aor, spec.package, state);
    }

    /// Applies a NOTIFY (or the end of a subscription) to the user's state and hands the
    /// result to the pipeline. True when the subscription should refresh now to get a
    /// full document (a gap in partial dialog-info versions).
    pub async fn update(&self, spec: &Spec, update: Update<'_>) -> bool {
        let mut needs_full = false;
        let observed = match update {
            Update::Notify { msg, first } => {
                match self.presentities.on_notify(spec, msg, first) {
                    Ok((states, full)) => {
                        needs_full = full;
                        states
                            .into_iter()
                            .map(|(user, state)| (user, state, first))
                            .collect()
                    }
                    Err(e) => {
                        // Answered 200 already; the body is kept out, the error counted.
                        self.error("body_parse");
                        tracing::warn!(connector = %self.name, user = %spec.aor, event = spec.package.event(), error = %e, "sip NOTIFY body rejected");
                        Vec::new()
                    }
                }
            }
            Update::Gone { why } => self
                .presentities
                .on_gone(spec, why)
                .into_iter()
                .map(|(u, s)| (u, s, false))
                .collect::<Vec<_>>(),
        };
        for (user, state, resync) in observed {
            self.observe(user, state, resync).await;
        }
        needs_full
    }

    pub async fn observe(&self, user: String, state: PresenceState, resync: bool) {
        let obs = Observation {
            source: self.source(),
            user,
            state,
            observed_at: now_millis(),
            resync,
        };
        let _ = self.observations.send(obs).await;
    }

    fn count_request(&self, method: &str, outcome: &str) {
        self.metrics
            .sip_requests
            .get_or_create(&labels([
                ("connector", &self.name),
                ("method", method),
                ("outcome", outcome),
            ]))
            .inc();
    }
}

/// The `sip` connector.
pub struct SipConnector {
    name: String,
    config: SipConfig,
    commands: Arc<SipCommands>,
    core: Arc<OnceLock<Arc<SipCore>>>,
}

impl SipConnector {
    pub fn new(name: &str, config: SipConfig) -> Result<Self, ConnectorError> {
        let problems = config.validate(&format!("connectors.sip.{name}"));
        if !problems.is_empty() {
            return Err(ConnectorError::Config {
                connector: name.to_string(),
                reason: problems.join("; "),
            });
        }
        let presentities = config.presentities().map_err(|e| ConnectorError::Config {
            connector: name.to_string(),
            reason: format!("contacts_file: {e}"),
        })?;
        let core = Arc::new(OnceLock::new());
        let users = presentities.iter().map(|(a, _)| a.clone()).collect();
        Ok(SipConnector {
            name: name.to_string(),
            commands: Arc::new(SipCommands::new(name, users, core.clone())),
            config,
            core,
        })
    }

    /// Subscriptions to start: every presentity × package, then every list.
    fn specs(&self) -> Vec<Spec> {
        let mut specs = Vec::new();
        for (aor, packages) in self.config.presentities().unwrap_or_default() {
            for p in packages {
                specs.push(Spec {
                    uri: with_scheme(&aor),
                    aor: aor.clone(),
                    package: p,
                    list: false,
                });
            }
        }
        for l in &self.config.lists {
            specs.push(Spec {
                uri: with_scheme(l),
                aor: self.config.aor(l),
                package: Package::Presence,
                list: true,
            });
        }
        specs
    }
}

#[async_trait]
impl Connector for SipConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "sip"
    }

    fn command_target(&self) -> Option<Arc<dyn CommandTarget>> {
        Some(self.commands.clone())
    }

    async fn run(self: Arc<Self>, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let fatal = |reason: String| ConnectorError::Fatal {
            connector: self.name.clone(),
            reason,
        };
        let tls_ca_pem = match &self.config.tls_ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                fatal(format!(
                    "connectors.sip.{}.tls_ca_file {}: {e}",
                    self.name,
                    p.display()
                ))
            })?),
            None => None,
        };
        let cancel = CancellationToken::new();
        let (stack, incoming) = RsipStack::start(
            StackOptions {
                bind: self.config.bind,
                advertise: self.config.advertise,
                udp: true,
                tcp: true,
                t1: self.config.t1,
                tls_ca_pem,
            },
            cancel.clone(),
        )
        .await
        .map_err(|e| fatal(format!("{e} (connectors.sip.{}.bind)", self.name)))?;
        let core = Arc::new(SipCore::new(
            self.name.clone(),
            self.config.clone(),
            stack,
            ctx.shutdown.clone(),
            ctx.metrics.clone(),
            ctx.observations.clone(),
        ));
        let _ = self.core.set(core.clone());
        tracing::info!(connector = %self.name, local = %core.local(), server = %self.config.server, "sip connector started");

        let compositor = self
            .config
            .inbound_publish
            .enabled
            .then(|| Arc::new(Compositor::new(core.clone())));
        let dispatcher = tokio::spawn(dispatch(core.clone(), compositor.clone(), incoming));
        let sweeper = compositor.clone().map(|c| tokio::spawn(c.sweep_expired()));

        let specs = self.specs();
        let mut tasks = tokio::task::JoinSet::new();
        for spec in specs {
            tasks.spawn(Subscription::new(spec, core.clone()).run());
        }
        // Subscriptions end at shutdown (after un-SUBSCRIBE) or when given up.
        while tasks.join_next().await.is_some() {}
        let mut shutdown = ctx.shutdown.clone();
        shutdown.recv().await;
        // Publications we made for commands are removed (Expires: 0) before we go.
        let _ = tokio::time::timeout(
            self.config.shutdown_timeout,
            self.commands.remove_all(&core),
        )
        .await;
        if let Some(s) = sweeper {
            s.abort();
        }
        cancel.cancel();
        dispatcher.abort();
        Ok(())
    }
}

/// Answers every incoming request. Nothing here waits on the pipeline or a broker: the
/// notifier gets its 200 at once (pitfall 3) and the dialog's task does the rest.
async fn dispatch(
    core: Arc<SipCore>,
    compositor: Option<Arc<Compositor>>,
    mut incoming: mpsc::Receiver<Incoming>,
) {
    while let Some(inc) = incoming.recv().await {
        let method = inc.request.method().unwrap_or("").to_ascii_uppercase();
        match method.as_str() {
            "NOTIFY" => {
                let verdict = core.router.on_notify(&inc.request);
                let (code, reason) = verdict.status();
                let mut resp = SipMessage::response_to(&inc.request, code, reason);
                if code == 200 {
                    resp.add("Contact", core.contact());
                }
                core.count_request("NOTIFY", verdict.as_str());
                let _ = inc.respond(resp).await;
            }
            "PUBLISH" => match &compositor {
                Some(c) => {
                    let (resp, changed) = c.on_publish(&inc.request);
                    let code = resp.code().unwrap_or(0);
                    core.count_request("PUBLISH", &code.to_string());
                    let _ = inc.respond(resp).await;
                    for aor in changed {
                        c.emit(&aor).await;
                    }
                }
                None => {
                    core.count_request("PUBLISH", "not_enabled");
                    let resp = SipMessage::response_to(&inc.request, 405, "Method Not Allowed")
                        .with("Allow", "NOTIFY, OPTIONS");
                    let _ = inc.respond(resp).await;
                }
            },
            "OPTIONS" => {
                core.count_request("OPTIONS", "200");
                let resp = SipMessage::response_to(&inc.request, 200, "OK")
                    .with("Allow", "NOTIFY, PUBLISH, OPTIONS")
                    .with(
                        "Accept",
                        "application/pidf+xml, application/xpidf+xml, application/dialog-info+xml, application/simple-message-summary, multipart/related, application/rlmi+xml",
                    )
                    .with("Allow-Events", "presence, dialog, message-summary")
                    .with("Supported", "eventlist");
                let _ = inc.respond(resp).await;
            }
            _ => {
                core.count_request("other", "405");
                let resp = SipMessage::response_to(&inc.request, 405, "Method Not Allowed")
                    .with("Allow", "NOTIFY, PUBLISH, OPTIONS");
                let _ = inc.respond(resp).await;
            }
        }
    }
}
