//! A simulator of Microsoft Graph presence (Teams), server side: the Entra token endpoint,
//! presence reads, subscriptions with the validation handshake, basic change notifications
//! and lifecycle notifications, per the protocol reference (`graph.md` §1–§7).
//!
//! Out of scope for now (a later session adds them): encrypted rich notifications (§4.5 —
//! `includeResourceData:true` is accepted when a certificate is given, but notifications are
//! sent basic, without `encryptedContent`/`validationTokens`), `setStatusMessage` and the location actions, the subscription-API write limits, slow/drop endpoint states, and a JSON
//! control API (the Rust [`GraphSimHandle`] is the only control surface).
//!
//! - [`core`]: state and operations behind one mutex; webhook items are queued on a channel.
//! - [`writes`]: setPresence / clearPresence / setUserPreferredPresence /
//!   clearUserPreferredPresence with pair and `expirationDuration` validation.
//! - [`http`]: the routes, the validation handshake and the Graph/AAD error bodies.
//! - this module: configuration, [`start`], the handle, the timer task, the notifier and
//!   the random change generator.
//!
//! Time: token lifetimes, the read budget, subscription expiry and lifecycle deadlines run on
//! the simulator's wall clock (system time plus an offset moved by
//! [`GraphSimHandle::advance_clock`]); due deadlines are handled before `advance_clock`
//! returns. Webhook retries and `notify_latency` use real time.
//!
//! Choices where the reference is silent or unconfirmed (each decided):
//!
//! - Users `n = 1..=users`: object id = uuid v5 (OID namespace) of
//!   `presence-bridge/graph-sim/user/{n}`, UPN `user{n:05}@{tenant}.onmicrosoft.com`, one
//!   password for all (password grant). `tenantId` in payloads = uuid v5 (DNS) of `tenant`.
//!   The token path accepts `tenant`, that GUID or `organizations`.
//! - Tokens are opaque; client_credentials needs a scope ending `/.default`; delegated tokens
//!   get a refresh token only with `offline_access`. Bad secret → `401 invalid_client`
//!   (AADSTS7000215), unknown client → `400 unauthorized_client`, bad password / refresh
//!   token → `400 invalid_grant`, other grants → `400 unsupported_grant_type`.
//! - Reads: unknown ids are omitted from getPresencesByUserId; single GETs answer
//!   `404 ResourceNotFound`. `sequenceNumber` is a 20-digit zero-padded counter, bumped on
//!   every change. The read budget is one sliding window for the app; `Retry-After` is the
//!   time until the oldest read leaves it (3 decimals); `throttle_next` answers `1.5`; `fail_next` answers `503 ServiceNotAvailable` with
//!   `Retry-After: 2` (neither is charged to the budget).
//! - Subscriptions: all operations need a delegated token except GET and DELETE (any token of
//!   the app; `403` for app-only on POST/PATCH/reauthorize). Expiry < now+45 min is raised
//!   to now+45 min; > now+60 min is `400` (the reference leaves reject/clamp open: we reject);
//!   stored in whole seconds. Unknown ids in the filter are accepted (never notify).
//!   PATCH may change `expirationDateTime` and `notificationUrl` (a new URL is validated first). The
//!   handshake token is `Validation: Testing client application reachability for
//!   subscription Request-Id: {guid}`; both URLs are validated (10 s each).
//! - Notifications: one item per (subscription, change); only real changes notify; items
//!   due together for one URL go in one POST. `resource` and `@odata.id` are
//!   `communications/presences('{id}')`. 2xx = ack; otherwise up to 3 retries after 1, 2
//!   and 4 s (the 4 h policy compressed), first timeout 3 s, retries 10 s; then discarded.
//! - Writes: `200` with an empty body. Delegated callers may write only their own presence
//!   (`403` otherwise); app-only may write anyone's. setPresence's `sessionId` must equal
//!   the client id (`400`), durations PT5M..PT4H; preferred presence PT5M..P7D (defaults
//!   1 day for DoNotDisturb/Busy, else 7 days). The aggregate is: preferred while any
//!   session exists (the Teams client counts unless Offline), else the highest of
//!   DoNotDisturb > Busy > Available > Away/BeRightBack over the Teams state and the app
//!   sessions, else the Teams client's Offline pair (`Offline/Offline` when it was cleared
//!   that way). Expired sessions and preferences are removed on the clock. An `Available`
//!   app session fades to `Available/AvailableInactive` 5 min after its last setPresence
//!   and to `Away/Away` after 10 min (a re-post resets it).
//! - Lifecycle: `reauthorizationRequired` once per subscription, 10 min before expiry
//!   (re-armed by PATCH or reauthorize), only when `lifecycleNotificationUrl` was given.
//!   [`GraphSimHandle::emit_lifecycle`] sends any kind; `subscriptionRemoved` also deletes.

pub mod core;
pub mod http;
pub mod util;
pub mod writes;

#[cfg(test)]
mod tests;

use self::core::{bump, Core, Counters, Outgoing};
use crate::shutdown::{self, ShutdownTrigger};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use self::core::GraphError;

/// Simulator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSimConfig {
    /// Number of users (`user_id(1)` …).
    pub users: u32,
    /// Tenant name in the token URL and UPNs.
    pub tenant: String,
    /// The one registered application.
    pub client_id: String,
    pub client_secret: String,
    /// Password of every user (ROPC grant).
    pub user_password: String,
    /// `expires_in` of access tokens (3599 s).
    pub token_lifetime: Duration,
    /// Delay before a change notification is posted (0: at once).
    pub notify_latency: Duration,
    /// Accept `http://` webhook URLs (real Graph requires HTTPS).
    pub allow_http_webhooks: bool,
    /// Presence reads per window per app (1500 per 30 s).
    pub read_budget: (u32, Duration),
    /// Seed of the initial states, tokens, ids and random changes.
    pub seed: u64,
    /// Random presence changes per second over all users; 0 = none.
    pub change_rate: f64,
}

impl Default for GraphSimConfig {
    fn default() -> Self {
        GraphSimConfig {
            users: 1000,
            tenant: "contoso".into(),
            client_id: "6731de76-14a6-49ae-97bc-6eba6914391e".into(),
            client_secret: "graph-sim-secret".into(),
            user_password: "graph-user-password".into(),
            token_lifetime: Duration::from_secs(3599),
            notify_latency: Duration::ZERO,
            allow_http_webhooks: true,
            read_budget: (1500, Duration::from_secs(30)),
            seed: 1,
            change_rate: 0.0,
        }
    }
}

/// Counters since start, plus live subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSimStats {
    pub requests: u64,
    pub errors: u64,
    pub tokens_issued: u64,
    pub token_failures: u64,
    /// Presence reads charged to the budget.
    pub reads: u64,
    /// `429` answers.
    pub throttled: u64,
    pub subscriptions_created: u64,
    pub subscriptions_alive: u64,
    pub validations_ok: u64,
    pub validations_failed: u64,
    pub changes: u64,
    /// Change-notification items queued (and lifecycle items).
    pub notifications_queued: u64,
    pub lifecycle_queued: u64,
    /// Items not sent because of `drop_notifications`.
    pub notifications_dropped: u64,
    /// Webhook POSTs (retries included).
    pub notification_posts: u64,
    /// POSTs answered 2xx.
    pub notification_acks: u64,
    /// POSTs that failed (non-2xx, timeout, connection error).
    pub notification_failures: u64,
}

#[derive(Debug, Default)]
struct Clock {
    offset_ns: AtomicU64,
}

impl Clock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_nanos(self.offset_ns.load(Ordering::Relaxed))
    }
}

pub(crate) struct Shared {
    core: Mutex<Core>,
    counters: Arc<Counters>,
    clock: Clock,
    addr: SocketAddr,
    cfg: GraphSimConfig,
    http: reqwest::Client,
    change_rate: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` at the simulator's time after handling due deadlines.
    fn with<R>(&self, f: impl FnOnce(&mut Core, SystemTime) -> R) -> R {
        let mut core = self.lock();
        let now = self.clock.now();
        core.run_due(now);
        f(&mut core, now)
    }
}

struct Tasks {
    trigger: ShutdownTrigger,
    server: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

/// Controls a running simulator. Cheap to clone; [`GraphSimHandle::shutdown`] stops it.
#[derive(Clone)]
pub struct GraphSimHandle {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

/// Binds `addr` (port 0 for a free port) and serves until [`GraphSimHandle::shutdown`].
pub async fn start(addr: SocketAddr, cfg: GraphSimConfig) -> std::io::Result<GraphSimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::unbounded_channel();
    crate::install_crypto_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(std::io::Error::other)?;
    let shared = Arc::new(Shared {
        core: Mutex::new(Core::new(&cfg, tx, counters.clone())),
        counters,
        clock: Clock::default(),
        addr,
        change_rate: AtomicU64::new(cfg.change_rate.max(0.0).to_bits()),
        cfg: cfg.clone(),
        http,
    });
    let (trigger, mut stop) = shutdown::channel();
    let app = axum::Router::new()
        .fallback(http::handle)
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop.recv().await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "Graph simulator server stopped");
        }
    });
    let workers = vec![
        tokio::spawn(run_timers(shared.clone())),
        tokio::spawn(notifier(shared.clone(), rx)),
        tokio::spawn(generate(shared.clone())),
    ];
    tracing::info!(%addr, users = cfg.users, "Graph simulator listening");
    Ok(GraphSimHandle {
        shared,
        tasks: Arc::new(Mutex::new(Some(Tasks {
            trigger,
            server,
            workers,
        }))),
    })
}

impl GraphSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://ADDR/v1.0`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1.0", self.shared.addr)
    }

    /// `http://ADDR/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!(
            "http://{}/{}/oauth2/v2.0/token",
            self.shared.addr, self.shared.cfg.tenant
        )
    }

    /// The object id (GUID) of user `n` (from 1).
    pub fn user_id(&self, n: u32) -> String {
        core::user_id(n)
    }

    pub fn upn(&self, n: u32) -> String {
        core::upn(n, &self.shared.cfg.tenant)
    }

    /// The tenant GUID sent as `tenantId`.
    pub fn tenant_id(&self) -> String {
        self.shared.lock().tenant_id.clone()
    }

    /// Sets a user's presence as if from Teams (any strings; PascalCase expected). Drives
    /// notifications when the pair changed. False for an unknown user.
    pub fn set_presence(&self, user_id: &str, availability: &str, activity: &str) -> bool {
        self.shared
            .with(|core, now| match core.user_index(user_id) {
                Some(u) => {
                    core.set_presence(u, availability, activity, now);
                    true
                }
                None => false,
            })
    }

    /// (availability, activity) of a user.
    pub fn presence_of(&self, user_id: &str) -> Option<(String, String)> {
        let core = self.shared.lock();
        let u = &core.users[core.user_index(user_id)?];
        Some((u.availability.clone(), u.activity.clone()))
    }

    pub fn stats(&self) -> GraphSimStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let alive = self.shared.with(|core, _| core.subs.len() as u64);
        GraphSimStats {
            requests: g(&c.requests),
            errors: g(&c.errors),
            tokens_issued: g(&c.tokens_issued),
            token_failures: g(&c.token_failures),
            reads: g(&c.reads),
            throttled: g(&c.throttled),
            subscriptions_created: g(&c.subscriptions_created),
            subscriptions_alive: alive,
            validations_ok: g(&c.validations_ok),
            validations_failed: g(&c.validations_failed),
            changes: g(&c.changes),
            notifications_queued: g(&c.notifications_queued),
            lifecycle_queued: g(&c.lifecycle_queued),
            notifications_dropped: g(&c.notifications_dropped),
            notification_posts: g(&c.notification_posts),
            notification_acks: g(&c.notification_acks),
            notification_failures: g(&c.notification_failures),
        }
    }

    /// Every access token becomes invalid (`401` until a new one is fetched).
    pub fn expire_tokens(&self) {
        self.shared.with(|core, _| core.expire_tokens());
    }

    /// Every subscription ends silently (`404` afterwards).
    pub fn expire_subscriptions(&self) {
        self.shared.with(|core, _| core.expire_subscriptions());
    }

    /// While true, notifications (and lifecycle items) are silently lost.
    pub fn drop_notifications(&self, on: bool) {
        self.shared.with(|core, _| core.drop_notifications = on);
    }

    /// The next `n` presence reads get `429` with `Retry-After: 1.5`.
    pub fn throttle_next(&self, n: u32) {
        self.shared.with(|core, _| core.throttle_next = n);
    }

    /// The next `n` presence reads get `503 ServiceNotAvailable` with `Retry-After: 2`.
    pub fn fail_next(&self, n: u32) {
        self.shared.with(|core, _| core.fail_next = n);
    }

    /// Sends a lifecycle event (`reauthorizationRequired`, `subscriptionRemoved`, `missed`)
    /// for every live subscription with a lifecycle URL; `subscriptionRemoved` deletes them.
    pub fn emit_lifecycle(&self, kind: &str) {
        self.shared.with(|core, now| core.emit_lifecycle(kind, now));
    }

    /// Moves the simulator's clock forward; due deadlines are handled before returning.
    pub fn advance_clock(&self, by: Duration) {
        let ns = by.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.shared.clock.offset_ns.fetch_add(ns, Ordering::Relaxed);
        self.shared.with(|_, _| ());
    }

    /// Random changes per second from now on (0 stops them).
    pub fn set_change_rate(&self, per_second: f64) {
        let r = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            0.0
        };
        self.shared
            .change_rate
            .store(r.to_bits(), Ordering::Relaxed);
    }

    /// Stops the server and the background tasks.
    pub async fn shutdown(self) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(t) = tasks else {
            return;
        };
        for w in &t.workers {
            w.abort();
        }
        t.trigger.trigger();
        let abort = t.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), t.server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// Expiry and lifecycle deadlines on the simulator clock, checked every 250 ms.
async fn run_timers(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        shared.with(|_, _| ());
    }
}

/// Posts queued items, batched per URL, each batch in its own task.
async fn notifier(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(first) = rx.recv().await {
        if !shared.cfg.notify_latency.is_zero() {
            tokio::time::sleep(shared.cfg.notify_latency).await;
        }
        let mut batches: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        let mut next = Some(first);
        while let Some(o) = next {
            batches.entry(o.url).or_default().push(o.item);
            next = rx.try_recv().ok();
        }
        for (url, items) in batches {
            tokio::spawn(deliver(shared.clone(), url, items));
        }
    }
}

async fn deliver(shared: Arc<Shared>, url: String, items: Vec<serde_json::Value>) {
    let body = serde_json::json!({ "value": items }).to_string();
    let c = &shared.counters;
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        let timeout = Duration::from_secs(if attempt == 0 { 3 } else { 10 });
        bump(&c.notification_posts);
        let r = shared
            .http
            .post(&url)
            .header("content-type", "application/json")
            .timeout(timeout)
            .body(body.clone())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                bump(&c.notification_acks);
                return;
            }
            Ok(resp) => {
                tracing::debug!(%url, status = %resp.status(), "notification refused");
            }
            Err(e) => tracing::debug!(%url, error = %e, "notification failed"),
        }
        bump(&c.notification_failures);
    }
    tracing::warn!(%url, "notification discarded after retries");
}

async fn generate(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rate = f64::from_bits(shared.change_rate.load(Ordering::Relaxed));
        if rate <= 0.0 {
            continue;
        }
        let mut n = rate * 0.05;
        shared.with(|core, now| {
            while n >= 1.0 || core.rng.f64() < n {
                core.random_change(now);
                n -= 1.0;
            }
        });
    }
}
