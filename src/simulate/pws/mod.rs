//! A simulator of the Cisco IM&P Presence Web Service (REST/XML), server side.
//!
//! It follows the protocol reference (`pws.md`, §9 "What a faithful simulator must do"):
//! the REST paths, headers, status codes, `Location` headers and XML bodies of §3 and §5,
//! the error codes of §7, and the notification behaviour of §4 — one
//! `GET {url}?id={sid}&eventType=PRESENCE_NOTIFICATION` per subscription, then silence until
//! the subscription is fetched.
//!
//! How the pieces fit:
//!
//! - [`engine`]: the state (users, sessions, endpoints, subscriptions with their changed sets)
//!   and every operation, synchronous, behind one `std::sync::Mutex`.
//! - [`http`]: the REST routes: parses headers and bodies (quick-xml, by local name), calls
//!   the core, renders replies and error bodies. Unknown paths are 404.
//! - [`control`]: the test-only JSON control API under `/_sim/`.
//! - [`presence`]: one user's presence layers and their basic / rich (PIDF) renderings.
//! - this module: configuration, [`start`], the [`PwsSimHandle`], the callback dispatcher
//!   (reqwest, bounded concurrency, failures counted and not retried) and the random change
//!   generator (seeded, so the sequence of changes is reproducible).
//!
//! Choices where the reference is silent or marked unconfirmed (each marked *decided*):
//!
//! - Ids: one global counter for endpoints and subscriptions, starting at 1 and never reset
//!   (a node restart keeps counting), so ids soon pass 9 → 10 → 11.
//! - Success codes: login, endpoint POST/PUT and subscription POST/PUT answer `201` (the
//!   latter two with `Location`); logout, unregister, unsubscribe and set presence `200`
//!   without a body. No 307 redirects (single node).
//! - A forced login issues a new key; older keys of the same user stay valid until logout.
//!   Session keys never time out on their own (use [`PwsSimHandle::expire_sessions`]).
//! - Endpoints belong to the app user, subscriptions to their end user (not to a session
//!   key): after `expire_sessions` and a re-login the old ids keep working. A logout removes
//!   what that session created. With a single app user, 136 cannot occur.
//! - A key of another end user on a `/users/{u}/…` path is an invalid key (101).
//! - A missing expiry means 3600 s on endpoint registration, subscribe and set presence; an
//!   endpoint refresh needs one (131). Set-presence expiry is validated, then ignored: a set
//!   state does not lapse.
//! - One changed set per subscription, shared by basic and rich fetches: whichever is made
//!   first drains it. A fetch returns every changed contact (no 100-contact paging); no
//!   changes → `<presenceList type="basic"/>`.
//! - Every state change counts as a change, even to the same value (a client re-publishing
//!   makes the server notify too); a subscription that is waiting is never re-notified.
//! - While callbacks are dropped, the CPU is throttled or the endpoint is gone, a
//!   subscription still becomes "waiting" (the notification is lost, not deferred): only a
//!   fetch unblocks it.
//! - Rich view of an unknown contact: an empty PIDF `<presence entity="…"/>`. The note is
//!   written inside the Cisco `person` element, as the set-presence samples send it.
//! - Logging in through PWS does not change the user's presence (§2.9 is unconfirmed).
//! - The basic value read back is the value set (no BUSY→AWAY translation).
//! - Never produced: 136 (one app user), 144 (REST has no partial unsubscribe), 160 (its
//!   trigger is undocumented), 211 and the 2xx server errors. SOAP (`/presence-service/soap`)
//!   is not simulated (404).
//! - Dropping every [`PwsSimHandle`] does not stop the simulator; call
//!   [`PwsSimHandle::shutdown`] (or end the runtime).

pub mod control;
pub mod engine;
pub mod error;
pub mod http;
pub mod presence;
pub mod xml;

#[cfg(test)]
mod tests;

use self::engine::{bump, Core, Counters, Notice};
use self::presence::{Basic, State};
use crate::shutdown::{self, ShutdownTrigger};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

pub use self::error::PwsError;

/// Simulator settings. Users are `user00001` … `user{users}` at `domain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PwsSimConfig {
    /// Number of end users (`user00001@domain` …).
    pub users: u32,
    /// Presence domain of the user URIs.
    pub domain: String,
    /// The application user (member of "Admin-3rd Party API") and its password.
    pub app_user: String,
    pub app_password: String,
    /// Random presence changes per second over all users; 0 = none.
    pub change_rate: f64,
    /// Seed of the initial states, the random changes and the session keys.
    pub seed: u64,
    /// Contacts per subscription (error 135 above it); the product limit is 5000.
    pub max_contacts_per_subscription: usize,
    /// Endpoint pool (error 138 when full). The real size is unconfirmed.
    pub max_endpoints: usize,
    /// Subscription pool (error 139 when full). The real size is unconfirmed.
    pub max_subscriptions: usize,
    /// Timeout of one notification GET; a timeout counts as a failed callback.
    pub callback_timeout_ms: u64,
}

impl Default for PwsSimConfig {
    fn default() -> Self {
        PwsSimConfig {
            users: 1000,
            domain: "example.com".into(),
            app_user: "pwsapp".into(),
            app_password: "pwsapp-secret".into(),
            change_rate: 0.0,
            seed: 1,
            max_contacts_per_subscription: 5000,
            max_endpoints: 100,
            max_subscriptions: 10_000,
            callback_timeout_ms: 2000,
        }
    }
}

/// Counters since start (totals), plus what is alive now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// PWS REST requests received (not counting `/_sim/`).
    pub requests: u64,
    /// Requests answered with a PWS error body.
    pub errors_returned: u64,
    /// Successful logins (forced or not, app or end user).
    pub logins: u64,
    /// Endpoints registered.
    pub endpoints: u64,
    /// Subscriptions created.
    pub subscriptions: u64,
    pub fetches: u64,
    pub polls: u64,
    /// Successful PWS set-presence calls.
    pub sets: u64,
    /// Presence changes (client side, PWS sets and random ones).
    pub changes: u64,
    /// Notifications decided and handed to the dispatcher.
    pub notifications: u64,
    /// Notification GETs issued.
    pub callbacks_sent: u64,
    /// Notification GETs without a 2xx answer (error, timeout, non-2xx).
    pub callbacks_failed: u64,
    /// Notifications not sent: endpoint gone, callbacks dropped or CPU throttled.
    pub callbacks_suppressed: u64,
    pub active_sessions: u64,
    pub active_endpoints: u64,
    pub active_subscriptions: u64,
}

/// One notification GET and how it went (the most recent ones are kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRecord {
    pub subscription_id: u64,
    pub url: String,
    /// HTTP status of the answer, if any.
    pub status: Option<u16>,
    pub error: Option<String>,
}

const RECENT_CALLBACKS: usize = 1024;
const MAX_CALLBACKS_IN_FLIGHT: usize = 256;

/// What the HTTP handlers, the dispatcher and the generator share.
pub(crate) struct Shared {
    core: Mutex<Core>,
    counters: Arc<Counters>,
    notices: mpsc::UnboundedSender<Notice>,
    addr: SocketAddr,
    domain: String,
    /// f64 bits.
    change_rate: AtomicU64,
    callback_delay_ms: AtomicU64,
    recent: Mutex<VecDeque<CallbackRecord>>,
}

impl Shared {
    /// The core lock. A panic while holding it cannot leave the state half-updated in a way
    /// that matters more than stopping the simulator would, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, notices: Vec<Notice>) {
        for n in notices {
            // Only fails after shutdown, when nobody listens any more.
            let _ = self.notices.send(n);
        }
    }

    fn stats(&self) -> SimStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (sessions, endpoints, subs) = self.lock().active();
        SimStats {
            requests: g(&c.requests),
            errors_returned: g(&c.errors_returned),
            logins: g(&c.logins),
            endpoints: g(&c.endpoints),
            subscriptions: g(&c.subscriptions),
            fetches: g(&c.fetches),
            polls: g(&c.polls),
            sets: g(&c.sets),
            changes: g(&c.changes),
            notifications: g(&c.notifications),
            callbacks_sent: g(&c.callbacks_sent),
            callbacks_failed: g(&c.callbacks_failed),
            callbacks_suppressed: g(&c.callbacks_suppressed),
            active_sessions: sessions,
            active_endpoints: endpoints,
            active_subscriptions: subs,
        }
    }

    fn set_client(&self, user_uri: &str, state: State) -> bool {
        let mut out = Vec::new();
        {
            let mut core = self.lock();
            let Some(u) = core.user_by_uri(user_uri) else {
                return false;
            };
            core.set_client(u, state, Instant::now(), &mut out);
        }
        self.send(out);
        true
    }

    fn change_rate(&self) -> f64 {
        f64::from_bits(self.change_rate.load(Ordering::Relaxed))
    }

    fn set_change_rate(&self, rate: f64) {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        self.change_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    fn set_faults(&self, cpu: Option<bool>, rate: Option<Option<u32>>, drop: Option<bool>) {
        let mut core = self.lock();
        if let Some(c) = cpu {
            core.cpu_throttle = c;
        }
        if let Some(r) = rate {
            core.set_rate_limit(r);
        }
        if let Some(d) = drop {
            core.drop_callbacks = d;
        }
    }

    fn recent_callbacks(&self) -> Vec<CallbackRecord> {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.iter().cloned().collect()
    }
}

/// Starts simulators; the free function [`start`] does the same.
pub struct PwsSimulator;

impl PwsSimulator {
    pub async fn start(addr: SocketAddr, cfg: PwsSimConfig) -> std::io::Result<PwsSimHandle> {
        start(addr, cfg).await
    }
}

struct Tasks {
    trigger: ShutdownTrigger,
    server: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

/// Controls a running simulator. Cheap to clone; [`PwsSimHandle::shutdown`] stops it.
#[derive(Clone)]
pub struct PwsSimHandle {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

/// Binds `addr` (use port 0 for a free port) and serves the simulator until
/// [`PwsSimHandle::shutdown`].
pub async fn start(addr: SocketAddr, cfg: PwsSimConfig) -> std::io::Result<PwsSimHandle> {
    crate::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.callback_timeout_ms.max(1)))
        .no_proxy()
        .pool_max_idle_per_host(MAX_CALLBACKS_IN_FLIGHT)
        .build()
        .map_err(std::io::Error::other)?;
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        core: Mutex::new(Core::new(&cfg, counters.clone())),
        counters,
        notices: tx,
        addr,
        domain: cfg.domain.clone(),
        change_rate: AtomicU64::new(0),
        callback_delay_ms: AtomicU64::new(0),
        recent: Mutex::new(VecDeque::with_capacity(RECENT_CALLBACKS)),
    });
    shared.set_change_rate(cfg.change_rate);

    let (trigger, mut stop) = shutdown::channel();
    let app = axum::Router::new()
        .fallback(http::handle)
        .with_state(shared.clone());
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop.recv().await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "PWS simulator server stopped");
        }
    });
    let workers = vec![
        tokio::spawn(dispatch(shared.clone(), rx, client)),
        tokio::spawn(generate(shared.clone(), cfg.seed)),
    ];
    tracing::info!(%addr, users = cfg.users, "PWS simulator listening");
    Ok(PwsSimHandle {
        shared,
        tasks: Arc::new(Mutex::new(Some(Tasks {
            trigger,
            server,
            workers,
        }))),
    })
}

impl PwsSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://ADDR/presence-service`, the REST base of reference §1.
    pub fn base_url(&self) -> String {
        format!("http://{}/presence-service", self.shared.addr)
    }

    /// `http://ADDR/_sim`, the control API.
    pub fn control_url(&self) -> String {
        format!("http://{}/_sim", self.shared.addr)
    }

    /// `user00001@example.com` for `n = 1`; users are numbered from 1.
    pub fn user_uri(&self, n: u32) -> String {
        format!("{}@{}", engine::user_name(n), self.shared.domain)
    }

    /// The bare username (`user00001`), as REST paths use it.
    pub fn user_name(&self, n: u32) -> String {
        engine::user_name(n)
    }

    pub fn users(&self) -> u32 {
        self.shared.lock().user_count()
    }

    /// Changes a user's state as if their own client published it (`AVAILABLE`, `AWAY`,
    /// `BUSY`, `DND`, `VACATION`, `UNAVAILABLE`; any case). Drives notifications. Returns
    /// false for an unknown user or value.
    pub fn set_basic(&self, user_uri: &str, status: &str) -> bool {
        match Basic::from_wire(&status.trim().to_ascii_uppercase()) {
            Some(Basic::Unknown) | None => false,
            Some(b) => self.shared.set_client(user_uri, State::basic(b)),
        }
    }

    /// Changes a user's client state from PIDF activity names, e.g. `"busy"`,
    /// `"on-the-phone"` (busy, on a call), `"busy+meeting"`, `"away"`, `"dnd"`,
    /// `"vacation"`, `"available"`, `"unavailable"`, with an optional note. Returns false
    /// for an unknown user or activity.
    pub fn set_rich(&self, user_uri: &str, pidf_activity: &str, note: Option<&str>) -> bool {
        match State::from_activities(pidf_activity, note) {
            Some(s) => self.shared.set_client(user_uri, s),
            None => false,
        }
    }

    /// The user's overall basic state (`None` for an unknown user).
    pub fn basic_of(&self, user_uri: &str) -> Option<String> {
        let core = self.shared.lock();
        let u = core.user_by_uri(user_uri)?;
        Some(core.basic_of(u).as_str().to_owned())
    }

    /// The user's rich presence, one PIDF document as a fetch would return it.
    pub fn rich_of(&self, user_uri: &str) -> Option<String> {
        let core = self.shared.lock();
        let u = core.user_by_uri(user_uri)?;
        Some(core.pidf_of(u))
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// CPU-throttle mode: no callbacks (notifications are lost, subscriptions stay
    /// waiting), fetches and subscribes answer 503 with code 210.
    pub fn set_cpu_throttle(&self, on: bool) {
        self.shared.set_faults(Some(on), None, None);
    }

    /// Requests per second above which every REST call answers 503 with code 212.
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.shared.set_faults(None, Some(per_second), None);
    }

    /// Notifications are lost (subscriptions still become waiting until fetched).
    pub fn drop_callbacks(&self, on: bool) {
        self.shared.set_faults(None, None, Some(on));
    }

    /// Delays every notification GET (slow network / slow server).
    pub fn set_callback_delay(&self, delay: Option<Duration>) {
        let ms = delay.map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64);
        self.shared.callback_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Random changes per second from now on (0 stops them).
    pub fn set_change_rate(&self, per_second: f64) {
        self.shared.set_change_rate(per_second);
    }

    /// Every session key becomes invalid (101); endpoints and subscriptions stay.
    pub fn expire_sessions(&self) {
        self.shared.lock().expire_sessions();
    }

    /// Every subscription is gone (133 on fetch).
    pub fn expire_subscriptions(&self) {
        self.shared.lock().expire_subscriptions();
    }

    /// Node restart: sessions, endpoints, subscriptions and PWS-set states are gone; ids
    /// keep growing.
    pub fn restart_node(&self) {
        self.shared.lock().restart();
    }

    /// The most recent notification GETs (up to 1024), oldest first.
    pub fn recent_callbacks(&self) -> Vec<CallbackRecord> {
        self.shared.recent_callbacks()
    }

    /// Stops the server (gracefully, at most 5 s) and the background tasks.
    pub async fn shutdown(self) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(t) = tasks else {
            return;
        };
        t.trigger.trigger();
        for w in &t.workers {
            w.abort();
        }
        let abort = t.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), t.server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// Sends notifications, at most [`MAX_CALLBACKS_IN_FLIGHT`] at a time. A failure is counted
/// and recorded, never retried (the subscription stays waiting until someone fetches).
async fn dispatch(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Notice>,
    client: reqwest::Client,
) {
    let slots = Arc::new(Semaphore::new(MAX_CALLBACKS_IN_FLIGHT));
    while let Some(n) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let delay = shared.callback_delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            bump(&shared.counters.callbacks_sent);
            let (status, error) = match client.get(&n.url).send().await {
                Ok(r) => (Some(r.status().as_u16()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            if !status.is_some_and(|s| (200..300).contains(&s)) {
                bump(&shared.counters.callbacks_failed);
                tracing::debug!(url = %n.url, ?status, ?error, "PWS simulator callback failed");
            }
            let mut recent = shared.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT_CALLBACKS {
                recent.pop_front();
            }
            recent.push_back(CallbackRecord {
                subscription_id: n.sid,
                url: n.url,
                status,
                error,
            });
        });
    }
}

/// Random client changes at the configured rate, in batches per tick (one lock per batch).
/// The sequence of (user, state) is fixed by the seed; only its timing varies.
async fn generate(shared: Arc<Shared>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x6368);
    let mut budget = 0.0f64;
    let mut last = Instant::now();
    loop {
        let rate = shared.change_rate();
        if rate <= 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            budget = 0.0;
            last = Instant::now();
            continue;
        }
        let period = (1.0 / rate).clamp(0.005, 0.05);
        tokio::time::sleep(Duration::from_secs_f64(period)).await;
        let now = Instant::now();
        budget += rate * now.duration_since(last).as_secs_f64();
        last = now;
        // After a stall, catch up at most one second's worth.
        budget = budget.min(rate.max(1.0));
        let n = budget.floor();
        budget -= n;
        if n < 1.0 {
            continue;
        }
        let mut out = Vec::new();
        {
            let mut core = shared.lock();
            for _ in 0..n as u64 {
                core.random_change(&mut rng, now, &mut out);
            }
        }
        shared.send(out);
    }
}
