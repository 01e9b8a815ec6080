//! A simulator of Microsoft Lync / Skype for Business UCWA 2.0 (HAL/JSON over HTTP), server
//! side, for presence.
//!
//! It follows the protocol reference (`ucwa.md`, §11 "What a faithful simulator must do"):
//! autodiscovery and the OAuth password grant (§2), applications and their idle lifetime
//! (§3), the event channel with pending GETs, acks, replay, resync, resume, `PGetReplaced`
//! and the medium-priority hold window that merges presence changes (§4), ad-hoc presence
//! subscriptions with extension and memberships (§5), contactPresence / contactNote (§6),
//! own presence with makeMeAvailable, reportMyActivity and idling (§7), and the error
//! bodies of §8. Clients are expected to follow links, never to build URLs.
//!
//! How the pieces fit:
//!
//! - [`engine`]: the state (users, tokens, applications with their event queues, pending
//!   GETs, subscriptions, deadlines) and every operation, synchronous, behind one
//!   `std::sync::Mutex`.
//! - [`events`]: the per-application event queue with its merge rules and the rendering of
//!   event responses.
//! - [`http`]: discovery, token, and the UCWA routes: parses requests, calls the core,
//!   renders replies ([`resources`]) and errors ([`error`]). A pending GET waits on a
//!   oneshot channel outside the lock.
//! - [`control`]: the test-only JSON control API under `/_sim/`.
//! - [`presence`]: availability, device and preferred-availability enums with their wire
//!   names.
//! - this module: configuration, [`start`], the [`UcwaSimHandle`], the timer task and the
//!   random change generator (seeded).
//!
//! Time: every deadline (token expiry, P-GET timeout, hold window, application idle expiry,
//! subscription warning and expiry, own-presence idling) is measured on the simulator's
//! clock, the real monotonic clock plus an offset that [`UcwaSimHandle::advance_clock`]
//! (or `POST /_sim/advance`) moves forward. Tests jump over 15-minute timeouts instead of
//! sleeping; due deadlines are handled before `advance_clock` returns, all at the new time
//! (a pending GET that timed out during a jump counts as answered at the end of the jump,
//! so a client that GETs again right away keeps its application). `lastActive` values
//! follow the same clock.
//!
//! Choices where the reference is silent or marked unconfirmed (each *decided*):
//!
//! - Hrefs: discovery links are absolute (`http://` + the request's Host); every href in
//!   UCWA resources and events is relative to the origin (`/ucwa/oauth/v1/applications/…`),
//!   as in the documentation samples. Contacts live at `…/people/{user@domain}` with
//!   `…/presence` and `…/note`. No HTTPS, no redirects, no XML.
//! - Ids: applications count from 101 and are never reused; subscription ids are 8 hex
//!   digits (seeded random); a membership is `…/presenceSubscriptionMemberships/{sid}~{contact}`.
//! - Tokens: `cwt=AAEB` + 64 random characters, valid `token_lifetime` on the simulator's
//!   clock. Only `grant_type=password` (`unsupported_grant_type` for the others,
//!   `invalid_request` for missing fields, `invalid_grant` for bad credentials); the
//!   username is a UPN or SIP URI, any case. A `401` has no body and two
//!   `WWW-Authenticate` headers (MsRtcOAuth, then Bearer).
//! - Applications: an identical create (same user, endpointId, userAgent and culture)
//!   answers `200` with the existing application (the docs' multi-tab rule); the same
//!   endpointId with other values is `409 AlreadyExists`; more than `max_apps_per_user` is
//!   `410 TooManyApplications`. The `events` link of a GET application carries the ack the
//!   server expects next. Applications end only by DELETE, P-GET idleness or the faults,
//!   never for missing reportMyActivity; a pending GET of an ended application gets
//!   `404 ApplicationNotFound`.
//! - Event channel: the response to `ack=K` has `self` K and `next` K+1; only the latest
//!   response can be replayed; a `resync` response is not numbered and links to the ack
//!   expected next, and events queued at the time stay queued for it. `timeout` applies per
//!   GET (default 180 s); `medium` and `low` persist per application until a resume; values
//!   outside the ranges of §4 are `400 ParameterValidationFailure`. The hold starts when
//!   the oldest undelivered event was queued; `medium_hold` is the starting `medium`.
//!   A new GET replaces a pending one (`409 PGetReplaced` to the older), except that a GET
//!   with the same ack and a lower `priority` is itself refused with that error. A client
//!   that went away while holding a GET consumes nothing.
//! - Subscriptions: `presenceSubscription updated` (with the subscription embedded) is
//!   queued `subscription_warning` (default 1 minute) before expiry; expiry itself sends no
//!   event. Extending answers `200` with the subscription; an expired or unknown one is
//!   `404 NotFound/ResourceNotFound`. URIs must be `sip:local@domain` (plain characters);
//!   URIs outside the directory are accepted and are Offline with deviceType Unknown.
//!   `max_subscriptions_per_app` → `403 LimitExceeded`, `max_contacts_per_app` →
//!   `403 TooManyContacts` (create) / `403 LimitExceeded` (add members).
//! - Presence: every change from a user's own client counts (a `contactPresence updated`
//!   even when the value is the same); `contactNote updated` only when the note text
//!   changes. The note type is `Personal` (the docs' sample; not `personal`). `lastActive`
//!   is the time of the last change, written as `"\/Date(ms)\/"`. deviceType is `Unknown`
//!   while Offline.
//! - Own presence: `Offwork` → availability Away with activity `off-work`; an empty POST
//!   resets to Online (IdleOnline / Away while idle). makeMeAvailable applies `signInAs`,
//!   else turns Offline into Online and keeps other states. Without reportMyActivity for
//!   `activity_idle_after` (default 4 min, or makeMeAvailable's `inactiveTimeout`) Online
//!   becomes IdleOnline and Busy IdleBusy; after `activity_away_after` (default 15 min)
//!   IdleOnline becomes Away; the next reportMyActivity restores the state idling
//!   replaced. Ending an application does not change its user's presence.
//! - Not simulated: batch (`400`), conversations, photos, groups and myContacts (empty
//!   collections); `search?query=` matches directory users by substring.
//! - Dropping every [`UcwaSimHandle`] does not stop the simulator; call
//!   [`UcwaSimHandle::shutdown`] (or end the runtime).

pub mod control;
pub mod engine;
pub mod error;
pub mod events;
pub mod http;
pub mod presence;
pub mod resources;

#[cfg(test)]
mod tests;

use self::engine::{Core, Counters};
use self::presence::Availability;
use crate::shutdown::{self, ShutdownTrigger};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use self::error::UcwaError;

/// Simulator settings. Users are `user00001` … `user{users}` at `domain`.
#[derive(Debug, Clone, PartialEq)]
pub struct UcwaSimConfig {
    /// Number of directory users (`sip:user00001@domain` …).
    pub users: u32,
    /// SIP domain of the users.
    pub domain: String,
    /// The one password of every user (password grant).
    pub password: String,
    /// Lifetime of a token (`expires_in`); 8 h for authenticated users.
    pub token_lifetime: Duration,
    /// An application is terminated when no new event GET arrives this long after the
    /// previous one was answered (15 min).
    pub app_idle_timeout: Duration,
    /// Random presence changes per second over all users; 0 = none.
    pub change_rate: f64,
    /// Seed of the initial states, the random changes, tokens and subscription ids.
    pub seed: u64,
    /// Starting hold window for medium-priority events (the P-GET `medium` parameter
    /// overrides it per application). 0 answers at once; the reference default is 5 s.
    pub medium_hold: Duration,
    /// How long before expiry `presenceSubscription updated` is sent (1 min).
    pub subscription_warning: Duration,
    /// Without reportMyActivity this long after makeMeAvailable, the user idles (4 min).
    pub activity_idle_after: Duration,
    /// … and this long after the last activity, IdleOnline becomes Away (15 min).
    pub activity_away_after: Duration,
    /// Applications per user (`410 TooManyApplications` above). Real value unconfirmed.
    pub max_apps_per_user: usize,
    /// Subscriptions per application (`403 LimitExceeded` above). Real value unconfirmed.
    pub max_subscriptions_per_app: usize,
    /// Memberships over all subscriptions of an application. Real value unconfirmed.
    pub max_contacts_per_app: usize,
}

impl Default for UcwaSimConfig {
    fn default() -> Self {
        UcwaSimConfig {
            users: 1000,
            domain: "example.com".into(),
            password: "ucwa-secret".into(),
            token_lifetime: Duration::from_secs(8 * 3600),
            app_idle_timeout: Duration::from_secs(15 * 60),
            change_rate: 0.0,
            seed: 1,
            medium_hold: Duration::ZERO,
            subscription_warning: Duration::from_secs(60),
            activity_idle_after: Duration::from_secs(4 * 60),
            activity_away_after: Duration::from_secs(15 * 60),
            max_apps_per_user: 10,
            max_subscriptions_per_app: 100,
            max_contacts_per_app: 10_000,
        }
    }
}

/// Counters since start (totals), plus what is alive now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UcwaSimStats {
    /// Requests received (not counting `/_sim/`).
    pub requests: u64,
    /// Answers with a 4xx or 5xx status.
    pub errors: u64,
    pub tokens_issued: u64,
    pub token_failures: u64,
    pub apps_created: u64,
    pub apps_alive: u64,
    /// Applications terminated for P-GET idleness.
    pub apps_expired: u64,
    /// Event-channel GETs received.
    pub pgets: u64,
    /// Numbered event responses produced (with events, timeouts, resumes).
    pub event_responses: u64,
    /// Events delivered (replays not counted).
    pub events_sent: u64,
    pub replays: u64,
    pub resyncs: u64,
    pub resumes: u64,
    /// Pending GETs answered with `409 PGetReplaced`.
    pub pget_replaced: u64,
    /// contactPresence GETs.
    pub presence_gets: u64,
    pub subscriptions_created: u64,
    pub subscriptions_alive: u64,
    /// Memberships over all live subscriptions.
    pub subscribed_contacts: u64,
    /// Presence changes (clients, own presence, idling, random).
    pub changes: u64,
    /// Successful `POST me/presence`.
    pub own_presence_sets: u64,
}

/// The simulator's clock: the monotonic clock plus a forward offset.
#[derive(Debug, Default)]
struct Clock {
    offset_ns: AtomicU64,
}

impl Clock {
    fn now(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.offset_ns.load(Ordering::Relaxed))
    }

    fn advance(&self, by: Duration) {
        let ns = by.as_nanos().min(u64::MAX as u128) as u64;
        self.offset_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// What the HTTP handlers, the timer task and the generator share.
pub(crate) struct Shared {
    core: Mutex<Core>,
    counters: Arc<Counters>,
    clock: Clock,
    /// Wakes the timer task when an earlier deadline was armed or the clock moved.
    wake: Notify,
    addr: SocketAddr,
    domain: String,
    /// f64 bits.
    change_rate: AtomicU64,
}

impl Shared {
    /// The core lock. A panic while holding it cannot leave the state half-updated in a way
    /// that matters more than stopping the simulator would, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core at the simulator's time, after handling due deadlines; wakes the
    /// timer task when `f` armed a new deadline.
    fn with<R>(&self, f: impl FnOnce(&mut Core, Instant) -> R) -> R {
        let mut core = self.lock();
        let now = self.clock.now();
        core.run_due(now);
        let r = f(&mut core, now);
        let dirty = core.take_timers_dirty();
        drop(core);
        if dirty {
            self.wake.notify_one();
        }
        r
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.with(|_, _| ());
        self.wake.notify_one();
    }

    fn stats(&self) -> UcwaSimStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (apps, subs, members) = self.lock().alive();
        UcwaSimStats {
            requests: g(&c.requests),
            errors: g(&c.errors),
            tokens_issued: g(&c.tokens_issued),
            token_failures: g(&c.token_failures),
            apps_created: g(&c.apps_created),
            apps_alive: apps,
            apps_expired: g(&c.apps_expired),
            pgets: g(&c.pgets),
            event_responses: g(&c.event_responses),
            events_sent: g(&c.events_sent),
            replays: g(&c.replays),
            resyncs: g(&c.resyncs),
            resumes: g(&c.resumes),
            pget_replaced: g(&c.pget_replaced),
            presence_gets: g(&c.presence_gets),
            subscriptions_created: g(&c.subscriptions_created),
            subscriptions_alive: subs,
            subscribed_contacts: members,
            changes: g(&c.changes),
            own_presence_sets: g(&c.own_presence_sets),
        }
    }

    /// A change from the user's own client. `note`: `None` unchanged, `Some("")` cleared.
    fn set_presence(
        &self,
        user: &str,
        availability: Availability,
        activity: Option<&str>,
        note: Option<&str>,
    ) -> bool {
        self.with(|core, now| {
            let Some(u) = core.user_by_name(user) else {
                return false;
            };
            let note = note.map(|n| Some(n.to_owned()).filter(|n| !n.is_empty()));
            core.set_client(u, availability, activity.map(str::to_owned), note, now);
            true
        })
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
}

struct Tasks {
    trigger: ShutdownTrigger,
    server: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

/// Controls a running simulator. Cheap to clone; [`UcwaSimHandle::shutdown`] stops it.
#[derive(Clone)]
pub struct UcwaSimHandle {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

/// Binds `addr` (use port 0 for a free port) and serves the simulator until
/// [`UcwaSimHandle::shutdown`].
pub async fn start(addr: SocketAddr, cfg: UcwaSimConfig) -> std::io::Result<UcwaSimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let shared = Arc::new(Shared {
        core: Mutex::new(Core::new(&cfg, counters.clone(), Instant::now(), wall_ms)),
        counters,
        clock: Clock::default(),
        wake: Notify::new(),
        addr,
        domain: cfg.domain.clone(),
        change_rate: AtomicU64::new(0),
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
            tracing::warn!(error = %e, "UCWA simulator server stopped");
        }
    });
    let workers = vec![
        tokio::spawn(run_timers(shared.clone())),
        tokio::spawn(generate(shared.clone(), cfg.seed)),
    ];
    tracing::info!(%addr, users = cfg.users, "UCWA simulator listening");
    Ok(UcwaSimHandle {
        shared,
        tasks: Arc::new(Mutex::new(Some(Tasks {
            trigger,
            server,
            workers,
        }))),
    })
}

impl UcwaSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://ADDR/autodiscover`, where a client starts (a real deployment:
    /// `https://lyncdiscover.<domain>/`).
    pub fn autodiscover_url(&self) -> String {
        format!("http://{}/autodiscover", self.shared.addr)
    }

    /// `http://ADDR/_sim`, the control API.
    pub fn control_url(&self) -> String {
        format!("http://{}/_sim", self.shared.addr)
    }

    /// `sip:user00001@example.com` for `n = 1`; users are numbered from 1.
    pub fn user_uri(&self, n: u32) -> String {
        format!("sip:{}", self.upn(n))
    }

    /// `user00001@example.com`, the token username.
    pub fn upn(&self, n: u32) -> String {
        engine::user_key(n, &self.shared.domain)
    }

    /// Changes a user's presence as if their own client published it: `availability` one of
    /// `Online Busy DoNotDisturb BeRightBack Away Offline IdleOnline IdleBusy` (any case),
    /// `activity` as given (`None` = none), `note` `None` = unchanged, `Some("")` = cleared.
    /// Drives events. False for an unknown user or availability.
    pub fn set_presence(
        &self,
        user: &str,
        availability: &str,
        activity: Option<&str>,
        note: Option<&str>,
    ) -> bool {
        match Availability::parse(availability) {
            Some(a) => self.shared.set_presence(user, a, activity, note),
            None => false,
        }
    }

    /// (availability, activity) of a user (SIP URI or UPN).
    pub fn presence_of(&self, user: &str) -> Option<(String, Option<String>)> {
        let core = self.shared.lock();
        let p = &core.user(core.user_by_name(user)?).presence;
        Some((p.availability.as_str().to_owned(), p.activity.clone()))
    }

    /// The user's personal note.
    pub fn note_of(&self, user: &str) -> Option<String> {
        let core = self.shared.lock();
        core.user(core.user_by_name(user)?).presence.note.clone()
    }

    pub fn stats(&self) -> UcwaSimStats {
        self.shared.stats()
    }

    /// Every token becomes invalid: `401` with the challenge until the client gets a new one.
    pub fn expire_tokens(&self) {
        self.shared.with(|core, _| core.expire_tokens());
    }

    /// Every application is gone: `404 ApplicationNotFound` on any request (pending GETs
    /// too).
    pub fn expire_applications(&self) {
        self.shared.with(|core, _| core.expire_applications());
    }

    /// Server cleanup: every subscription is dropped and each application's next event
    /// response carries `resume` instead of `next` (pending GETs get it at once).
    pub fn force_resume(&self) {
        self.shared.with(|core, now| core.force_resume(now));
    }

    /// Each application's next event response is only a `resync` link.
    pub fn force_resync(&self) {
        self.shared.with(|core, now| core.force_resync(now));
    }

    /// Every pending GET is answered `409 PGetReplaced` (as if another client took over).
    pub fn replace_pending_gets(&self) {
        self.shared.with(|core, now| core.replace_pending_gets(now));
    }

    /// Every subscription ends (silently; extending answers 404).
    pub fn expire_subscriptions(&self) {
        self.shared.with(|core, now| core.expire_subscriptions(now));
    }

    /// Moves the simulator's clock forward; every deadline that falls due is handled before
    /// this returns (held GETs released, applications expired, …).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.advance(by);
    }

    /// Random changes per second from now on (0 stops them).
    pub fn set_change_rate(&self, per_second: f64) {
        self.shared.set_change_rate(per_second);
    }

    /// Stops the server (pending GETs are answered 503; graceful, at most 5 s) and the
    /// background tasks.
    pub async fn shutdown(self) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(t) = tasks else {
            return;
        };
        for w in &t.workers {
            w.abort();
        }
        self.shared.lock().close_channels();
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

/// Sleeps until the earliest deadline (or a wake-up), then handles what is due.
async fn run_timers(shared: Arc<Shared>) {
    loop {
        let wait =
            shared.with(|core, now| core.next_timer().map(|t| t.saturating_duration_since(now)));
        let wait = wait
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(1));
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Random client changes at the configured rate, in batches per tick (one lock per batch).
/// The sequence of (user, state) is fixed by the seed; only its timing varies.
async fn generate(shared: Arc<Shared>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7563);
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
        shared.with(|core, now| {
            for _ in 0..n as u64 {
                core.random_change(&mut rng, now);
            }
        });
    }
}
