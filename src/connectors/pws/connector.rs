//! The `pws` connector task: log in, register the callback endpoint, subscribe the
//! contacts through the watcher end users, fetch on every notification (coalesced: one
//! fetch in flight per subscription plus one pending), fetch every subscription as a
//! fail-safe, refresh before expiry, and start over from login when the server forgot us.

use super::client::{PwsClient, PwsError};
use super::config::{callback_path, PresenceKind, PwsConfig, PwsMode};
use super::normalize;
use crate::connectors::{
    CommandOutcome, CommandTarget, Connector, ConnectorContext, ConnectorError,
};
use crate::metrics::{labels, Metrics};
use crate::model::{
    canonical_user, now_millis, Availability, Command, CommandAction, Observation, SourceRef,
};
use crate::shutdown::Shutdown;
use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use backon::BackoffBuilder;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

/// Subscription id → wake-up of its fetch task. `Notify` keeps at most one permit, which
/// is exactly "one fetch in flight plus one pending": bursts of callbacks coalesce.
type Wakers = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

pub struct PwsConnector {
    name: String,
    config: PwsConfig,
    contacts: Arc<Vec<String>>,
    client: PwsClient,
    wakers: Wakers,
    metrics: Arc<Mutex<Option<Metrics>>>,
    commands: Arc<PwsCommands>,
}

impl PwsConnector {
    pub fn new(name: &str, config: PwsConfig) -> Result<Self, ConnectorError> {
        let contacts = config.all_contacts().map_err(|e| ConnectorError::Config {
            connector: name.to_string(),
            reason: format!("contacts_file: {e}"),
        })?;
        let client = PwsClient::new(
            &config.base_url,
            config.request_timeout,
            config.max_body_bytes,
        );
        let commands = Arc::new(PwsCommands {
            name: name.to_string(),
            client: client.clone(),
            config: config.clone(),
            contacts: contacts.iter().cloned().collect(),
            keys: Mutex::new(HashMap::new()),
        });
        Ok(PwsConnector {
            name: name.to_string(),
            config,
            contacts: Arc::new(contacts),
            client,
            wakers: Arc::default(),
            metrics: Arc::default(),
            commands,
        })
    }

    fn error(&self, ctx: &ConnectorContext, e: &PwsError, during: &str) {
        ctx.metrics
            .connector_errors
            .get_or_create(&labels([
                ("connector", &self.name),
                ("error_type", e.kind()),
            ]))
            .inc();
        tracing::warn!(connector = %self.name, error = %e, during, "pws");
    }
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    id: Option<String>,
    #[serde(rename = "eventType")]
    event_type: Option<String>,
    /// Older samples call it `etype`.
    etype: Option<String>,
}

#[derive(Clone)]
struct CallbackState {
    connector: String,
    wakers: Wakers,
    metrics: Arc<Mutex<Option<Metrics>>>,
}

/// `GET <callback path>?id=<subscription>&eventType=PRESENCE_NOTIFICATION`: answer at once,
/// wake that subscription's fetch task.
async fn callback(
    State(s): State<CallbackState>,
    Query(q): Query<CallbackQuery>,
) -> (StatusCode, &'static str) {
    let count = |what: &str| {
        if let Some(m) = s.metrics.lock().expect("metrics lock").as_ref() {
            m.connector_errors
                .get_or_create(&labels([("connector", &s.connector), ("error_type", what)]))
                .inc();
        }
    };
    let event = q.event_type.or(q.etype);
    if event.as_deref() != Some("PRESENCE_NOTIFICATION") {
        count("callback_event_type");
        return (
            StatusCode::BAD_REQUEST,
            "eventType must be PRESENCE_NOTIFICATION\n",
        );
    }
    let Some(id) = q.id else {
        count("callback_without_id");
        return (StatusCode::BAD_REQUEST, "id missing\n");
    };
    let waker = s.wakers.lock().expect("wakers lock").get(&id).cloned();
    match waker {
        Some(w) => w.notify_one(),
        // A stale id (from before a re-subscribe): nothing to fetch; the server must
        // still get a quick 200.
        None => count("callback_unknown_subscription"),
    }
    (StatusCode::OK, "OK\n")
}

/// One watcher's subscription as created on the server.
#[derive(Clone)]
struct Sub {
    sid: String,
    watcher: String,
    key: String,
    client: PwsClient,
    endpoint: String,
}

/// What a session set-up created, for refresh and tear-down.
struct Session {
    /// node base → (app key, endpoint id)
    nodes: HashMap<String, (PwsClient, String, String)>,
    /// watcher → (client, key)
    watchers: Vec<(String, PwsClient, String)>,
    subs: Vec<Sub>,
}

/// Why `serve` returned.
enum Served {
    Shutdown,
    Restart(PwsError),
}

impl PwsConnector {
    fn callback_url(&self) -> String {
        match (self.config.mode, &self.config.callback_url) {
            (PwsMode::Notify, Some(url)) => url.clone(),
            // Poll mode still needs an endpoint id for subscriptions; a callback to nowhere
            // is harmless because the changes stay queued on the server until fetched.
            _ => "http://127.0.0.1:9/presence-bridge-poll-mode".into(),
        }
    }

    /// Logs in on `base` (following a 307 to the home node) and registers an endpoint there.
    async fn node(
        &self,
        session: &mut Session,
        base: &str,
    ) -> Result<(PwsClient, String, String), PwsError> {
        if let Some(n) = session.nodes.get(base) {
            return Ok(n.clone());
        }
        let client = self.client.for_base(base);
        let c = &self.config;
        let app_key = client
            .login_app(&c.app_user, c.app_password.expose(), c.forced_login)
            .await?;
        let endpoint = client
            .register_endpoint(&app_key, &self.callback_url(), c.expiry.as_secs())
            .await?;
        tracing::info!(connector = %self.name, node = %base, endpoint = %endpoint, "pws: endpoint registered");
        let n = (client, app_key, endpoint);
        session.nodes.insert(base.to_string(), n.clone());
        Ok(n)
    }

    /// Log in → endpoint → watchers → subscriptions (contacts split over watchers).
    async fn setup(&self) -> Result<Session, PwsError> {
        let c = &self.config;
        let mut session = Session {
            nodes: HashMap::new(),
            watchers: Vec::new(),
            subs: Vec::new(),
        };
        let chunks: Vec<&[String]> = self
            .contacts
            .chunks(c.max_contacts_per_subscription)
            .collect();
        // Spread subscriptions round-robin over the watchers.
        for (i, chunk) in chunks.iter().enumerate() {
            let watcher = &c.watchers[i % c.watchers.len()];
            let (client, key) = match session.watchers.iter().find(|w| &w.0 == watcher) {
                Some((_, client, key)) => (client.clone(), key.clone()),
                None => {
                    let mut base = self.client.base().to_string();
                    let mut hops = 0;
                    let (client, key) = loop {
                        let (client, app_key, _) = self.node(&mut session, &base).await?;
                        match client.login_user(&app_key, watcher, c.forced_login).await {
                            Ok(k) => break (client, k),
                            Err(PwsError::Redirect { base: home }) if hops < 3 => {
                                tracing::info!(connector = %self.name, watcher, node = %home, "pws: watcher homed on another node");
                                base = home;
                                hops += 1;
                            }
                            Err(e) => return Err(e),
                        }
                    };
                    session
                        .watchers
                        .push((watcher.clone(), client.clone(), key.clone()));
                    (client, key)
                }
            };
            let endpoint = session
                .nodes
                .get(client.base())
                .map(|n| n.2.clone())
                .expect("node registered above");
            let first = &chunk[..chunk.len().min(c.contacts_per_request)];
            let sid = client
                .subscribe(&key, watcher, first, &endpoint, c.expiry.as_secs())
                .await?;
            for more in chunk[first.len()..].chunks(c.contacts_per_request) {
                client
                    .update_subscription(&key, watcher, &sid, more, &endpoint, 0)
                    .await?;
            }
            tracing::info!(connector = %self.name, watcher, subscription = %sid, contacts = chunk.len(), "pws: subscribed");
            session.subs.push(Sub {
                sid,
                watcher: watcher.clone(),
                key,
                client,
                endpoint,
            });
        }
        Ok(session)
    }

    /// Best effort: unsubscribe, log watchers out, unregister endpoints, log out.
    async fn teardown(&self, session: &Session) {
        for s in &session.subs {
            let _ = s.client.unsubscribe(&s.key, &s.watcher, &s.sid).await;
        }
        for (w, client, key) in &session.watchers {
            let _ = client.logout(key, w).await;
        }
        for (client, app_key, endpoint) in session.nodes.values() {
            let _ = client.unregister_endpoint(app_key, endpoint).await;
            let _ = client.logout(app_key, &self.config.app_user).await;
        }
    }

    /// Extends every endpoint and subscription (their lifetimes are absolute).
    async fn refresh(&self, session: &Session) -> Result<(), PwsError> {
        let expiry = self.config.expiry.as_secs();
        for (client, app_key, endpoint) in session.nodes.values() {
            client.refresh_endpoint(app_key, endpoint, expiry).await?;
        }
        for s in &session.subs {
            s.client
                .update_subscription(&s.key, &s.watcher, &s.sid, &[], &s.endpoint, expiry)
                .await?;
        }
        Ok(())
    }

    /// Runs the fetch tasks and the refresh timer until shutdown or a fatal server answer.
    async fn serve(
        self: &Arc<Self>,
        session: &Session,
        ctx: &ConnectorContext,
        shutdown: &mut Shutdown,
    ) -> Served {
        let (restart_tx, mut restart_rx) = mpsc::channel::<PwsError>(1);
        let mut tasks = JoinSet::new();
        {
            let mut wakers = self.wakers.lock().expect("wakers lock");
            wakers.clear();
            for s in &session.subs {
                let w = Arc::new(Notify::new());
                wakers.insert(s.sid.clone(), w.clone());
                let me = self.clone();
                let sub = s.clone();
                let tx = ctx.observations.clone();
                let metrics = ctx.metrics.clone();
                let restart = restart_tx.clone();
                tasks.spawn(async move { me.fetch_loop(sub, w, tx, metrics, restart).await });
            }
        }
        ctx.metrics
            .subscriptions
            .get_or_create(&labels([("connector", &self.name), ("state", "active")]))
            .set(self.contacts.len() as i64);
        // Refresh at 80 % of the lifetime.
        let period = self.config.expiry.mul_f64(0.8);
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let result = loop {
            tokio::select! {
                _ = shutdown.recv() => break Served::Shutdown,
                Some(e) = restart_rx.recv() => break Served::Restart(e),
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh(session).await {
                        self.error(ctx, &e, "refresh");
                        if matches!(e, PwsError::Session { .. } | PwsError::Gone { .. }) {
                            break Served::Restart(e);
                        }
                    }
                }
            }
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        self.wakers.lock().expect("wakers lock").clear();
        ctx.metrics
            .subscriptions
            .get_or_create(&labels([("connector", &self.name), ("state", "active")]))
            .set(0);
        result
    }

    /// One subscription: fetch now (the first fetch returns every contact), then on every
    /// notification and on the fail-safe / poll timer.
    async fn fetch_loop(
        self: Arc<Self>,
        sub: Sub,
        waker: Arc<Notify>,
        tx: crate::connectors::ObservationSender,
        metrics: Metrics,
        restart: mpsc::Sender<PwsError>,
    ) {
        let every = match self.config.mode {
            PwsMode::Notify => self.config.failsafe_interval,
            PwsMode::Poll => self.config.poll_interval,
        };
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = new_backoff();
        // The first fetch counts as a resync: nothing notified us of these states.
        let mut resync = true;
        loop {
            match self.fetch_once(&sub, resync, &tx).await {
                Ok(true) => backoff = new_backoff(),
                Ok(false) => return, // pipeline closed: shutting down
                Err(e) => {
                    let kind = e.kind();
                    metrics
                        .connector_errors
                        .get_or_create(&labels([("connector", &self.name), ("error_type", kind)]))
                        .inc();
                    tracing::warn!(connector = %self.name, subscription = %sub.sid, watcher = %sub.watcher, error = %e, "pws: fetch failed");
                    match e {
                        PwsError::Session { .. } | PwsError::Gone { .. } => {
                            let _ = restart.send(e).await;
                            return;
                        }
                        // Throttled or transport trouble: wait, then fetch again (the
                        // server keeps the changes until we do).
                        _ => {
                            tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(60)))
                                .await;
                            resync = true;
                            continue;
                        }
                    }
                }
            }
            tokio::select! {
                _ = waker.notified() => resync = false,
                _ = timer.tick() => resync = true,
            }
        }
    }

    /// Fetches one subscription's changes and sends them as observations. `Ok(false)` when
    /// the pipeline is closed.
    async fn fetch_once(
        &self,
        sub: &Sub,
        resync: bool,
        tx: &crate::connectors::ObservationSender,
    ) -> Result<bool, PwsError> {
        let now = now_millis();
        let source = SourceRef {
            kind: "pws".into(),
            connector: self.name.clone(),
            server: Some(sub.client.host()),
            server_time: None,
        };
        let states: Vec<(String, crate::model::PresenceState)> = match self.config.presence {
            PresenceKind::Basic => sub
                .client
                .fetch_basic(&sub.key, &sub.watcher, &sub.sid)
                .await?
                .into_iter()
                .map(|c| {
                    (
                        canonical_user(&c.uri),
                        normalize::normalize_basic(&c.status),
                    )
                })
                .collect(),
            PresenceKind::Rich => sub
                .client
                .fetch_rich(&sub.key, &sub.watcher, &sub.sid)
                .await?
                .iter()
                .map(|p| (canonical_user(&p.entity), normalize::normalize_rich(p)))
                .collect(),
        };
        let span = tracing::debug_span!("pws_fetch", connector = %self.name, subscription = %sub.sid, n = states.len(), resync);
        let _e = span.enter();
        for (user, state) in states {
            let obs = Observation {
                source: source.clone(),
                user,
                state,
                observed_at: now,
                resync,
            };
            if tx.send(obs).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn new_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

#[async_trait]
impl Connector for PwsConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pws"
    }

    fn routes(&self) -> Option<axum::Router> {
        if self.config.mode == PwsMode::Poll {
            return None;
        }
        let path = callback_path(self.config.callback_url.as_deref()?)?;
        Some(
            axum::Router::new()
                .route(&path, get(callback))
                .with_state(CallbackState {
                    connector: self.name.clone(),
                    wakers: self.wakers.clone(),
                    metrics: self.metrics.clone(),
                }),
        )
    }

    fn command_target(&self) -> Option<Arc<dyn CommandTarget>> {
        Some(self.commands.clone())
    }

    async fn run(self: Arc<Self>, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        *self.metrics.lock().expect("metrics lock") = Some(ctx.metrics.clone());
        let mut shutdown = ctx.shutdown.clone();
        let mut backoff = new_backoff();
        loop {
            let session = tokio::select! {
                _ = shutdown.recv() => return Ok(()),
                s = self.setup() => s,
            };
            match session {
                Ok(session) => {
                    backoff = new_backoff();
                    match self.serve(&session, &ctx, &mut shutdown).await {
                        Served::Shutdown => {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(10),
                                self.teardown(&session),
                            )
                            .await;
                            return Ok(());
                        }
                        Served::Restart(e) => {
                            tracing::warn!(connector = %self.name, error = %e, "pws: server lost our session or subscription; logging in again");
                        }
                    }
                }
                Err(e) => {
                    self.error(&ctx, &e, "setup");
                    let wait = backoff.next().unwrap_or(Duration::from_secs(60));
                    tokio::select! {
                        _ = shutdown.recv() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// Set presence through PWS: the app user logs the target user in by proxy, then sets
/// basic presence (or rich, when the command carries an activity or a note).
pub struct PwsCommands {
    name: String,
    client: PwsClient,
    config: PwsConfig,
    contacts: HashSet<String>,
    /// user → session key (non-forced logins return the same key, so this is a cache).
    keys: Mutex<HashMap<String, String>>,
}

impl PwsCommands {
    /// The user part PWS expects in paths (`alice` of `alice@example.com`).
    fn username(user: &str) -> &str {
        user.split('@').next().unwrap_or(user)
    }

    async fn key_for(&self, user: &str, fresh: bool) -> Result<String, PwsError> {
        if !fresh {
            if let Some(k) = self.keys.lock().expect("keys lock").get(user) {
                return Ok(k.clone());
            }
        }
        let c = &self.config;
        let app = self
            .client
            .login_app(&c.app_user, c.app_password.expose(), c.forced_login)
            .await?;
        let key = self
            .client
            .login_user(&app, Self::username(user), c.forced_login)
            .await?;
        self.keys
            .lock()
            .expect("keys lock")
            .insert(user.to_string(), key.clone());
        Ok(key)
    }

    async fn set(&self, cmd: &Command, key: &str) -> Result<(), PwsError> {
        let user = Self::username(&cmd.user);
        let expiry = cmd
            .expiry_seconds
            .map(|e| e as u64)
            .unwrap_or(self.config.set_expiry.as_secs());
        match cmd.action {
            CommandAction::ClearPresence => {
                let body = super::xml::rich_presence_body(&cmd.user, "clear", None, false)?;
                self.client.set_rich(key, user, body, false, expiry).await
            }
            CommandAction::SetPresence => {
                let a = cmd.availability.unwrap_or(Availability::Unknown);
                let status =
                    normalize::basic_for_command(a).map_err(|reason| PwsError::Rejected {
                        status: 400,
                        code: None,
                        message: reason,
                    })?;
                if cmd.activity.is_some() || cmd.note.is_some() {
                    let activity = match status {
                        "AVAILABLE" => "available",
                        "BUSY" => "busy",
                        "DND" => "dnd",
                        "AWAY" => "away",
                        "VACATION" => "vacation",
                        _ => "unavailable",
                    };
                    let body = super::xml::rich_presence_body(
                        &cmd.user,
                        activity,
                        cmd.note.as_deref(),
                        true,
                    )?;
                    self.client.set_rich(key, user, body, true, expiry).await
                } else {
                    let override_ = normalize::override_for(status);
                    self.client
                        .set_basic(key, user, status, override_, expiry)
                        .await
                }
            }
        }
    }
}

#[async_trait]
impl CommandTarget for PwsCommands {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pws"
    }

    fn owns(&self, user: &str) -> bool {
        self.contacts.contains(user)
    }

    async fn apply(&self, cmd: &Command) -> CommandOutcome {
        if let Some(e) = cmd.expiry_seconds {
            if !(3600..=86400).contains(&e) {
                return CommandOutcome::Rejected(format!(
                    "expiry_seconds {e}: PWS accepts 3600–86400"
                ));
            }
        }
        if cmd.action == CommandAction::SetPresence {
            if let Err(reason) =
                normalize::basic_for_command(cmd.availability.unwrap_or(Availability::Unknown))
            {
                return CommandOutcome::Rejected(reason);
            }
        }
        let mut fresh = false;
        for _ in 0..2 {
            let key = match self.key_for(&cmd.user, fresh).await {
                Ok(k) => k,
                Err(e) => return outcome(e),
            };
            match self.set(cmd, &key).await {
                Ok(()) => return CommandOutcome::Applied,
                // The cached session expired: log in again once.
                Err(PwsError::Session { .. }) if !fresh => fresh = true,
                Err(e) => return outcome(e),
            }
        }
        CommandOutcome::Failed("session keeps expiring".into())
    }
}

fn outcome(e: PwsError) -> CommandOutcome {
    match e {
        PwsError::Rejected {
            status,
            code,
            message,
        } if status < 500 => CommandOutcome::Rejected(match code {
            Some(c) => format!("PWS error {c}: {message}"),
            None => message,
        }),
        other => CommandOutcome::Failed(other.to_string()),
    }
}
