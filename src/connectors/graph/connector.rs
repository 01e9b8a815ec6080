//! The `graph` connector.
//!
//! - Tokens: app-only (client credentials) for reads and commands; one delegated token per
//!   service account for its presence subscription (presence subscriptions are
//!   delegated-only). Both refreshed at 80 % of their lifetime and on a 401.
//! - Shards: the watched users split in ≤650 per service account, one subscription each
//!   (`/communications/presences?$filter=id in ('…')`) with a random `clientState`.
//!   Renewed by PATCH every `renew_interval`; 404 → created again; 409 on create (a
//!   leftover from a previous run) → the old one is deleted first. Every (re)creation is
//!   followed by a full fetch of the shard (flagged resync).
//! - Webhook on the bridge's HTTP server: the validation handshake answered with the
//!   decoded token as text/plain; notifications answered 202 at once, `clientState`
//!   checked, user ids queued; lifecycle notifications handled (`reauthorizationRequired`
//!   → renew, `subscriptionRemoved` → recreate, `missed` → resync).
//! - A fetcher drains queued ids after `coalesce_window` and reads them with
//!   `getPresencesByUserId` in batches of ≤650, under a client-side budget of
//!   `reads_per_30s`, honouring `429 Retry-After` (fractional seconds too).

use super::config::GraphConfig;
use super::json::{self, GraphPresence};
use super::normalize;
use crate::connectors::{
    CommandOutcome, CommandTarget, Connector, ConnectorContext, ConnectorError, ObservationSender,
};
use crate::metrics::{labels, Metrics};
use crate::model::{now_millis, Command, CommandAction, Observation, SourceRef};
use async_trait::async_trait;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use backon::BackoffBuilder;
use reqwest::Method;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const MAX_IDS: usize = 650;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("throttled, retry after {0:?}")]
    Throttled(Duration),
    #[error("HTTP {status}: {code:?}: {message}")]
    Rejected {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("token: {0}")]
    Token(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("response: {0}")]
    Parse(#[from] json::GraphJsonError),
}

impl GraphError {
    pub fn kind(&self) -> &'static str {
        match self {
            GraphError::Unauthorized => "unauthorized",
            GraphError::NotFound(_) => "not_found",
            GraphError::Conflict(_) => "conflict",
            GraphError::Throttled(_) => "throttled",
            GraphError::Rejected { .. } => "rejected",
            GraphError::Token(_) => "token",
            GraphError::Transport(_) => "transport",
            GraphError::Parse(_) => "parse",
        }
    }
}

struct Token {
    value: String,
    refresh: Option<String>,
    renew_at: Instant,
}

/// Credentials of one token: the app itself or a delegated service account.
#[derive(Clone)]
enum Grant {
    App,
    Password { username: String, password: String },
}

struct Tokens {
    grant: Grant,
    current: tokio::sync::Mutex<Option<Token>>,
}

pub struct GraphClient {
    http: reqwest::Client,
    config: GraphConfig,
    timeout: Duration,
    /// Sliding 30 s window of read timestamps (client-side budget).
    reads: Mutex<VecDeque<Instant>>,
}

impl GraphClient {
    fn new(config: &GraphConfig) -> GraphClient {
        crate::install_crypto_provider();
        GraphClient {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("reqwest client with static settings"),
            config: config.clone(),
            timeout: config.request_timeout,
            reads: Mutex::new(VecDeque::new()),
        }
    }

    async fn fetch_token(&self, grant: &Grant, refresh: Option<&str>) -> Result<Token, GraphError> {
        let c = &self.config;
        let enc = |s: &str| form(s);
        let body = match (grant, refresh) {
            (Grant::App, _) => format!(
                "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
                enc(&c.client_id),
                enc(c.client_secret.expose()),
                enc("https://graph.microsoft.com/.default")
            ),
            (Grant::Password { .. }, Some(r)) => format!(
                "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}&scope={}",
                enc(&c.client_id),
                enc(c.client_secret.expose()),
                enc(r),
                enc("https://graph.microsoft.com/Presence.Read.All offline_access")
            ),
            (Grant::Password { username, password }, None) => format!(
                "grant_type=password&client_id={}&client_secret={}&username={}&password={}&scope={}",
                enc(&c.client_id),
                enc(c.client_secret.expose()),
                enc(username),
                enc(password),
                enc("https://graph.microsoft.com/Presence.Read.All offline_access")
            ),
        };
        let resp = self
            .http
            .post(c.token_url())
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| GraphError::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| GraphError::Transport(e.without_url().to_string()))?;
        if !status.is_success() {
            // The AAD error text names the problem; the request (secrets) is never echoed.
            let err = json::parse_error(&bytes);
            return Err(GraphError::Token(format!(
                "{status}: {}",
                err.code.or(err.message).unwrap_or_default()
            )));
        }
        let t = json::parse_token(&bytes)?;
        Ok(Token {
            value: t.access_token,
            refresh: t.refresh_token,
            renew_at: Instant::now() + Duration::from_secs(t.expires_in).mul_f64(0.8),
        })
    }

    async fn token(&self, tokens: &Tokens, force: bool) -> Result<String, GraphError> {
        let mut cur = tokens.current.lock().await;
        let due = force || cur.as_ref().is_none_or(|t| Instant::now() >= t.renew_at);
        if due {
            let refresh = cur.as_ref().and_then(|t| t.refresh.clone());
            let t = match self.fetch_token(&tokens.grant, refresh.as_deref()).await {
                Ok(t) => t,
                // A refresh token can be revoked: fall back to the password grant.
                Err(_) if refresh.is_some() => self.fetch_token(&tokens.grant, None).await?,
                Err(e) => return Err(e),
            };
            *cur = Some(t);
        }
        Ok(cur.as_ref().expect("set above").value.clone())
    }

    /// A Graph request with `tokens`; one new token and a retry on 401.
    async fn call(
        &self,
        tokens: &Tokens,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Vec<u8>, GraphError> {
        let url = format!("{}{}", self.config.graph_url.trim_end_matches('/'), path);
        for attempt in 0..2 {
            let token = self.token(tokens, attempt > 0).await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout)
                .bearer_auth(token);
            if let Some(b) = &body {
                req = req
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| GraphError::Transport(e.without_url().to_string()))?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(json::parse_retry_after);
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| GraphError::Transport(e.without_url().to_string()))?;
            if status.is_success() {
                return Ok(bytes.to_vec());
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                continue;
            }
            let err = json::parse_error(&bytes);
            let message = err.message.clone().unwrap_or_default();
            return Err(match status.as_u16() {
                401 => GraphError::Unauthorized,
                404 => GraphError::NotFound(message),
                409 => GraphError::Conflict(message),
                429 | 503 => GraphError::Throttled(retry_after.unwrap_or(Duration::from_secs(1))),
                s => GraphError::Rejected {
                    status: s,
                    code: err.code,
                    message,
                },
            });
        }
        Err(GraphError::Unauthorized)
    }

    /// Waits until one more read fits the client-side budget.
    async fn budget(&self) {
        loop {
            let wait = {
                let mut r = self.reads.lock().expect("lock");
                let window = Duration::from_secs(30);
                while r.front().is_some_and(|t| t.elapsed() >= window) {
                    r.pop_front();
                }
                if r.len() < self.config.reads_per_30s as usize {
                    r.push_back(Instant::now());
                    None
                } else {
                    r.front().map(|t| window.saturating_sub(t.elapsed()))
                }
            };
            match wait {
                None => return,
                Some(w) => tokio::time::sleep(w).await,
            }
        }
    }

    /// `getPresencesByUserId` for up to 650 ids, honouring 429 Retry-After.
    async fn presences(
        &self,
        app: &Tokens,
        ids: &[String],
    ) -> Result<Vec<GraphPresence>, GraphError> {
        let body = json::get_presences_body(ids)?;
        for _ in 0..5 {
            self.budget().await;
            match self
                .call(
                    app,
                    Method::POST,
                    "/communications/getPresencesByUserId",
                    Some(body.clone()),
                )
                .await
            {
                Ok(b) => return Ok(json::parse_presences(&b)?),
                Err(GraphError::Throttled(wait)) => {
                    tracing::warn!(retry_after = ?wait, "graph: throttled; waiting as asked");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(GraphError::Throttled(Duration::ZERO))
    }
}

fn form(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What the webhook shares with the connector task.
#[derive(Default)]
struct Shared {
    /// subscription id → (clientState, shard index)
    subscriptions: Mutex<HashMap<String, (String, usize)>>,
    /// user ids notified and not yet fetched
    pending: Mutex<HashSet<String>>,
    wake: Notify,
    /// lifecycle events: (shard, event)
    lifecycle: Mutex<Vec<(usize, String)>>,
    lifecycle_wake: Notify,
    metrics: Mutex<Option<Metrics>>,
    /// Private key for rich (encrypted) notifications.
    key: Option<rsa::RsaPrivateKey>,
    /// Presences decrypted from rich notifications, waiting to be sent on.
    decrypted: Mutex<Vec<GraphPresence>>,
    /// shard → expiration the server gave (ms since the epoch), to schedule renewals.
    expires: Mutex<HashMap<usize, i64>>,
}

impl Shared {
    fn count(&self, connector: &str, what: &str) {
        if let Some(m) = self.metrics.lock().expect("lock").as_ref() {
            m.connector_errors
                .get_or_create(&labels([("connector", connector), ("error_type", what)]))
                .inc();
        }
    }
}

#[derive(Clone)]
struct WebhookState {
    name: String,
    shared: Arc<Shared>,
}

#[derive(serde::Deserialize)]
struct ValidationQuery {
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

/// Graph's webhook: the validation handshake (echo the decoded token as text/plain at
/// once), or notifications (202 at once; the work happens in the fetcher).
async fn webhook(
    State(s): State<WebhookState>,
    Query(q): Query<ValidationQuery>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    if let Some(token) = q.validation_token {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            token,
        )
            .into_response();
    }
    let parsed = match json::parse_notifications(&body) {
        Ok(n) => n,
        Err(_) => {
            s.shared.count(&s.name, "notification_parse");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    for _ in 0..parsed.skipped {
        s.shared.count(&s.name, "notification_item");
    }
    let subs = s.shared.subscriptions.lock().expect("lock").clone();
    let mut any = false;
    for item in parsed.items {
        let Some((secret, shard)) = subs.get(&item.subscription_id) else {
            s.shared.count(&s.name, "unknown_subscription");
            continue;
        };
        if item.client_state.as_deref() != Some(secret.as_str()) {
            // Not from Graph, or not for us: never acted upon.
            s.shared.count(&s.name, "client_state_mismatch");
            continue;
        }
        if let Some(ev) = item.lifecycle_event {
            s.shared.lifecycle.lock().expect("lock").push((*shard, ev));
            s.shared.lifecycle_wake.notify_one();
            continue;
        }
        // A rich notification carries the presence: decrypt it instead of fetching.
        if let (Some(content), Some(key)) = (&item.encrypted_content, &s.shared.key) {
            let presence =
                serde_json::from_value::<super::crypto::EncryptedContent>(content.clone())
                    .map_err(|_| ())
                    .and_then(|c| super::crypto::decrypt(&c, key).map_err(|_| ()))
                    .and_then(|plain| json::parse_presences(&plain).map_err(|_| ()));
            match presence {
                Ok(p) if !p.is_empty() => {
                    s.shared.decrypted.lock().expect("lock").extend(p);
                    any = true;
                    continue;
                }
                // Not decryptable (wrong key, altered): counted, and fetched instead.
                _ => s.shared.count(&s.name, "decrypt"),
            }
        }
        if let Some(id) = item.resource_id {
            s.shared
                .pending
                .lock()
                .expect("lock")
                .insert(id.to_lowercase());
            any = true;
        }
    }
    if any {
        s.shared.wake.notify_one();
    }
    StatusCode::ACCEPTED.into_response()
}

pub struct GraphConnector {
    name: String,
    config: GraphConfig,
    shards: Vec<Vec<String>>,
    client: Arc<GraphClient>,
    app: Arc<Tokens>,
    delegated: Vec<Arc<Tokens>>,
    shared: Arc<Shared>,
    users: Arc<HashSet<String>>,
}

impl GraphConnector {
    pub fn new(name: &str, config: GraphConfig) -> Result<Self, ConnectorError> {
        let users = config.all_users().map_err(|e| ConnectorError::Config {
            connector: name.to_string(),
            reason: format!("users_file: {e}"),
        })?;
        let shards: Vec<Vec<String>> = users.chunks(MAX_IDS).map(|c| c.to_vec()).collect();
        if shards.len() > config.service_accounts.len() {
            return Err(ConnectorError::Config {
                connector: name.to_string(),
                reason: format!(
                    "{} users need {} service accounts (650 users each), {} configured",
                    users.len(),
                    shards.len(),
                    config.service_accounts.len()
                ),
            });
        }
        let delegated = config
            .service_accounts
            .iter()
            .map(|a| {
                Arc::new(Tokens {
                    grant: Grant::Password {
                        username: a.username.clone(),
                        password: a.password.expose().to_string(),
                    },
                    current: tokio::sync::Mutex::new(None),
                })
            })
            .collect();
        let key = match &config.encryption {
            Some(e) => Some(
                super::crypto::private_key_from_pem(e.private_key.expose()).map_err(|reason| {
                    ConnectorError::Config {
                        connector: name.to_string(),
                        reason: format!("encryption.private_key: {reason}"),
                    }
                })?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            key,
            ..Shared::default()
        });
        Ok(GraphConnector {
            name: name.to_string(),
            client: Arc::new(GraphClient::new(&config)),
            config,
            shards,
            app: Arc::new(Tokens {
                grant: Grant::App,
                current: tokio::sync::Mutex::new(None),
            }),
            delegated,
            shared,
            users: Arc::new(users.into_iter().collect()),
        })
    }

    fn error(&self, m: &Metrics, e: &GraphError, during: &str) {
        m.connector_errors
            .get_or_create(&labels([
                ("connector", &self.name),
                ("error_type", e.kind()),
            ]))
            .inc();
        tracing::warn!(connector = %self.name, error = %e, during, "graph");
    }

    fn expiry(&self) -> String {
        json::format_rfc3339_ms(now_millis() + self.config.subscription_lifetime.as_millis() as i64)
    }

    /// Creates shard `i`'s subscription (deleting a leftover on 409) and records it.
    async fn subscribe(&self, i: usize) -> Result<String, GraphError> {
        let tokens = &self.delegated[i];
        let secret = format!("{:032x}", fastrand::u128(..));
        let mut body = json::subscription_body(
            &json::presence_filter_resource(&self.shards[i]),
            &self.config.notification_url,
            Some(&self.config.notification_url),
            &secret,
            &self.expiry(),
        );
        if let Some(e) = &self.config.encryption {
            let mut v: serde_json::Value =
                serde_json::from_str(&body).expect("subscription_body is JSON");
            v["includeResourceData"] = serde_json::Value::Bool(true);
            v["encryptionCertificate"] = serde_json::Value::from(e.certificate.as_str());
            v["encryptionCertificateId"] = serde_json::Value::from(e.certificate_id.as_str());
            body = v.to_string();
        }
        let created = match self
            .client
            .call(tokens, Method::POST, "/subscriptions", Some(body.clone()))
            .await
        {
            Err(GraphError::Conflict(_)) => {
                // A subscription of ours from before a restart: remove it, create anew.
                let list = self
                    .client
                    .call(tokens, Method::GET, "/subscriptions", None)
                    .await?;
                let v: serde_json::Value = serde_json::from_slice(&list)
                    .map_err(|e| GraphError::Transport(e.to_string()))?;
                for s in v["value"].as_array().into_iter().flatten() {
                    let res = s["resource"].as_str().unwrap_or_default();
                    if res.contains("communications/presences") {
                        if let Some(id) = s["id"].as_str() {
                            let _ = self
                                .client
                                .call(
                                    tokens,
                                    Method::DELETE,
                                    &format!("/subscriptions/{id}"),
                                    None,
                                )
                                .await;
                        }
                    }
                }
                self.client
                    .call(tokens, Method::POST, "/subscriptions", Some(body))
                    .await?
            }
            other => other?,
        };
        let sub = json::parse_subscription(&created)?;
        self.note_expiry(i, &sub.expiration_date_time);
        self.shared
            .subscriptions
            .lock()
            .expect("lock")
            .retain(|_, (_, shard)| *shard != i);
        self.shared
            .subscriptions
            .lock()
            .expect("lock")
            .insert(sub.id.clone(), (secret, i));
        tracing::info!(connector = %self.name, shard = i, subscription = %sub.id, users = self.shards[i].len(), "graph: subscribed");
        Ok(sub.id)
    }

    /// Remembers when the server will drop shard `i`'s subscription.
    fn note_expiry(&self, i: usize, expiration: &str) {
        if let Some(ms) = json::parse_rfc3339_ms(expiration) {
            self.shared.expires.lock().expect("lock").insert(i, ms);
        }
    }

    /// When to renew next: `renew_interval` at the latest, and never later than halfway
    /// to the earliest expiration the server returned (it may grant less than asked).
    fn next_renewal(&self) -> tokio::time::Instant {
        let now = now_millis();
        let soonest = self
            .shared
            .expires
            .lock()
            .expect("lock")
            .values()
            .min()
            .copied();
        let mut wait = self.config.renew_interval;
        if let Some(exp) = soonest {
            let half = Duration::from_millis(((exp - now).max(0) / 2) as u64);
            wait = wait.min(half.max(Duration::from_secs(1)));
        }
        tokio::time::Instant::now() + wait
    }

    /// Renews shard `i` (PATCH); a missing subscription is created again (`Ok(true)`:
    /// re-created, the shard needs a resync).
    async fn renew(&self, i: usize) -> Result<bool, GraphError> {
        let id = self
            .shared
            .subscriptions
            .lock()
            .expect("lock")
            .iter()
            .find(|(_, (_, s))| *s == i)
            .map(|(id, _)| id.clone());
        let Some(id) = id else {
            self.subscribe(i).await?;
            return Ok(true);
        };
        match self
            .client
            .call(
                &self.delegated[i],
                Method::PATCH,
                &format!("/subscriptions/{id}"),
                Some(json::renew_body(&self.expiry())),
            )
            .await
        {
            Ok(body) => {
                if let Ok(sub) = json::parse_subscription(&body) {
                    self.note_expiry(i, &sub.expiration_date_time);
                }
                Ok(false)
            }
            Err(GraphError::NotFound(_)) => {
                tracing::warn!(connector = %self.name, shard = i, "graph: subscription gone; creating it again");
                self.subscribe(i).await?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches `ids` and sends them on. `Ok(false)`: pipeline closed.
    async fn fetch(
        &self,
        ids: &[String],
        resync: bool,
        tx: &ObservationSender,
    ) -> Result<bool, GraphError> {
        for chunk in ids.chunks(MAX_IDS) {
            let presences = self.client.presences(&self.app, chunk).await?;
            if !self.send(presences, resync, tx).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends presences on as observations; `false` when the pipeline is closed.
    async fn send(
        &self,
        presences: Vec<GraphPresence>,
        resync: bool,
        tx: &ObservationSender,
    ) -> bool {
        let now = now_millis();
        for p in presences {
            let obs = Observation {
                source: SourceRef {
                    kind: "graph".into(),
                    connector: self.name.clone(),
                    server: Some(self.config.tenant.clone()),
                    server_time: None,
                },
                user: p.id.to_lowercase(),
                state: normalize::normalize(&p),
                observed_at: now,
                resync,
            };
            if tx.send(obs).await.is_err() {
                return false;
            }
        }
        true
    }
}

fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

#[async_trait]
impl Connector for GraphConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "graph"
    }

    fn routes(&self) -> Option<axum::Router> {
        let path = super::super::pws::config::callback_path(&self.config.notification_url)?;
        Some(
            axum::Router::new()
                .route(&path, post(webhook))
                // Notifications are small; a hostile sender cannot make us buffer more.
                .layer(DefaultBodyLimit::max(1024 * 1024))
                .with_state(WebhookState {
                    name: self.name.clone(),
                    shared: self.shared.clone(),
                }),
        )
    }

    fn command_target(&self) -> Option<Arc<dyn CommandTarget>> {
        Some(Arc::new(GraphCommands {
            api: self.config.command_api,
            session_id: self.config.client_id.clone(),
            name: self.name.clone(),
            client: self.client.clone(),
            app: self.app.clone(),
            users: self.users.clone(),
        }))
    }

    async fn run(self: Arc<Self>, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        *self.shared.metrics.lock().expect("lock") = Some(ctx.metrics.clone());
        let mut shutdown = ctx.shutdown.clone();
        let tx = ctx.observations.clone();
        let m = &ctx.metrics;
        // Subscribe every shard (retrying each until it works), each followed by a resync.
        let mut resync_now: HashSet<usize> = HashSet::new();
        for i in 0..self.shards.len() {
            let mut b = backoff();
            loop {
                match self.subscribe(i).await {
                    Ok(_) => break,
                    Err(e) => {
                        self.error(m, &e, "subscribe");
                        tokio::select! {
                            _ = shutdown.recv() => return Ok(()),
                            _ = tokio::time::sleep(b.next().unwrap_or(Duration::from_secs(60))) => {}
                        }
                    }
                }
            }
            resync_now.insert(i);
        }
        ctx.metrics
            .subscriptions
            .get_or_create(&labels([("connector", &self.name), ("state", "active")]))
            .set(self.users.len() as i64);
        let mut renew_at = self.next_renewal();
        let mut resync = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.resync_interval,
            self.config.resync_interval,
        );
        loop {
            for i in std::mem::take(&mut resync_now) {
                match self.fetch(&self.shards[i], true, &tx).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(e) => {
                        self.error(m, &e, "resync");
                        resync_now.insert(i);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = self.shared.wake.notified() => {
                    // Decrypted rich notifications need no fetch.
                    let decrypted: Vec<GraphPresence> =
                        std::mem::take(&mut *self.shared.decrypted.lock().expect("lock"));
                    if !decrypted.is_empty() && !self.send(decrypted, false, &tx).await {
                        return Ok(());
                    }
                    if self.shared.pending.lock().expect("lock").is_empty() {
                        continue;
                    }
                    // Let notifications that arrive together be fetched together.
                    tokio::time::sleep(self.config.coalesce_window).await;
                    let ids: Vec<String> = self.shared.pending.lock().expect("lock").drain().collect();
                    match self.fetch(&ids, false, &tx).await {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(e) => {
                            self.error(m, &e, "fetch");
                            // Put them back for the next round.
                            self.shared.pending.lock().expect("lock").extend(ids);
                            self.shared.wake.notify_one();
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                _ = self.shared.lifecycle_wake.notified() => {
                    let events: Vec<(usize, String)> = std::mem::take(&mut *self.shared.lifecycle.lock().expect("lock"));
                    for (i, ev) in events {
                        tracing::info!(connector = %self.name, shard = i, event = %ev, "graph: lifecycle notification");
                        let r = match ev.as_str() {
                            "reauthorizationRequired" => self.renew(i).await,
                            "subscriptionRemoved" => {
                                self.shared.subscriptions.lock().expect("lock").retain(|_, (_, s)| *s != i);
                                self.renew(i).await.map(|_| true)
                            }
                            // Notifications were lost: fetch everything of that shard.
                            _ => Ok(true),
                        };
                        match r {
                            Ok(true) => { resync_now.insert(i); }
                            Ok(false) => {}
                            Err(e) => { self.error(m, &e, "lifecycle"); resync_now.insert(i); }
                        }
                    }
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    for i in 0..self.shards.len() {
                        match self.renew(i).await {
                            Ok(true) => { resync_now.insert(i); }
                            Ok(false) => {}
                            Err(e) => self.error(m, &e, "renew"),
                        }
                    }
                    renew_at = self.next_renewal();
                }
                _ = resync.tick() => resync_now.extend(0..self.shards.len()),
            }
        }
        // Best effort: remove our subscriptions.
        let subs: Vec<(String, usize)> = self
            .shared
            .subscriptions
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, (_, s))| (id.clone(), *s))
            .collect();
        for (id, i) in subs {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.client.call(
                    &self.delegated[i],
                    Method::DELETE,
                    &format!("/subscriptions/{id}"),
                    None,
                ),
            )
            .await;
        }
        Ok(())
    }
}

/// Commands: `setUserPreferredPresence` (the user-visible status, with its own expiry) and
/// `clearUserPreferredPresence`, with the app-only token. The change comes back through
/// the subscription like any other.
pub struct GraphCommands {
    api: super::config::CommandApi,
    /// `sessionId` of the session API: the app's client id, as Graph requires.
    session_id: String,
    name: String,
    client: Arc<GraphClient>,
    app: Arc<Tokens>,
    users: Arc<HashSet<String>>,
}

#[async_trait]
impl CommandTarget for GraphCommands {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "graph"
    }

    fn owns(&self, user: &str) -> bool {
        self.users.contains(user)
    }

    async fn apply(&self, cmd: &Command) -> CommandOutcome {
        use super::config::CommandApi;
        let user = &cmd.user;
        let (path, body) = match (self.api, cmd.action) {
            (CommandApi::Preferred, CommandAction::ClearPresence) => (
                format!("/users/{user}/presence/clearUserPreferredPresence"),
                "{}".to_string(),
            ),
            (CommandApi::Session, CommandAction::ClearPresence) => (
                format!("/users/{user}/presence/clearPresence"),
                json::clear_presence_body(&self.session_id),
            ),
            (api, CommandAction::SetPresence) => {
                let a = cmd
                    .availability
                    .unwrap_or(crate::model::Availability::Unknown);
                let pair = match api {
                    CommandApi::Preferred => normalize::preferred_pair(a, cmd.activity),
                    CommandApi::Session => normalize::set_presence_pair(a, cmd.activity),
                };
                let (av, act) = match pair {
                    Ok(p) => p,
                    Err(reason) => return CommandOutcome::Rejected(reason),
                };
                if api == CommandApi::Session {
                    if let Some(secs) = cmd.expiry_seconds {
                        if let Err(reason) = normalize::expiration_bounds(secs as u64) {
                            return CommandOutcome::Rejected(reason);
                        }
                    }
                }
                let expiration = cmd.expiry_seconds.map(|s| json::iso8601_duration(s as u64));
                match api {
                    CommandApi::Preferred => (
                        format!("/users/{user}/presence/setUserPreferredPresence"),
                        json::set_preferred_presence_body(av, act, expiration.as_deref()),
                    ),
                    CommandApi::Session => (
                        format!("/users/{user}/presence/setPresence"),
                        json::set_presence_body(&self.session_id, av, act, expiration.as_deref()),
                    ),
                }
            }
        };
        match self
            .client
            .call(&self.app, Method::POST, &path, Some(body))
            .await
        {
            Ok(_) => CommandOutcome::Applied,
            Err(GraphError::Rejected {
                status, message, ..
            }) if status < 500 => CommandOutcome::Rejected(message),
            Err(GraphError::NotFound(m)) => CommandOutcome::Rejected(m),
            Err(e) => CommandOutcome::Failed(e.to_string()),
        }
    }
}
