//! The simulated server's state and every operation on it, free of HTTP.
//!
//! One [`Core`] sits behind a `std::sync::Mutex`; every operation is synchronous and short.
//! Time is passed in (`now`), never read here, so the simulator's clock can be moved forward
//! in tests ([`super::UcwaSimHandle::advance_clock`]).
//!
//! Event channel (reference §4): each application has a queue of undelivered events (see
//! [`super::events`]) and at most one pending GET, held as a oneshot sender. Queuing an event
//! releases the pending GET once the oldest queued event has waited `medium` (the hold
//! window; 0 releases at once). Responses are numbered by their `ack`: the response to
//! `events?ack=K` has `self` = K and `next` = K + 1; the last response is kept and a GET
//! with its ack gets it again (the client did not see it); a GET with the next ack
//! acknowledges it; any other ack gets only a `resync` link.
//!
//! Timers: every application has one deadline that matters next (pending GET timeout, end
//! of the hold window, idle expiry, subscription warning or expiry, own-presence idling);
//! `Timers` keeps at most one live entry per application, earlier entries replacing later
//! ones lazily, and [`Core::run_due`] re-examines an application when its entry is due.
//!
//! Presence fan-out: every user keeps the list of applications watching it (through any of
//! their subscriptions), so a change costs O(watching applications).

use super::error::UcwaError;
use super::events::{self, Ev, Kind, Queue};
use super::presence::{self, Availability, DeviceType, Preferred, Presence};
use super::UcwaSimConfig;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Counters shared with the HTTP layer (lock-free).
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub token_failures: AtomicU64,
    pub apps_created: AtomicU64,
    pub apps_expired: AtomicU64,
    pub pgets: AtomicU64,
    pub event_responses: AtomicU64,
    pub events_sent: AtomicU64,
    pub replays: AtomicU64,
    pub resyncs: AtomicU64,
    pub resumes: AtomicU64,
    pub pget_replaced: AtomicU64,
    pub presence_gets: AtomicU64,
    pub subscriptions_created: AtomicU64,
    pub changes: AtomicU64,
    pub own_presence_sets: AtomicU64,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a pending GET is eventually answered with.
pub type PgetReply = Result<Arc<str>, UcwaError>;

/// The start of an event GET: answered at once, or wait for the release.
#[derive(Debug)]
pub enum PgetStart {
    Ready(Arc<str>),
    Wait(oneshot::Receiver<PgetReply>),
}

/// Query parameters of an event GET (§4); `None` = not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgetReq {
    pub ack: Option<u64>,
    pub timeout: Option<u64>,
    pub medium: Option<u64>,
    pub low: Option<u64>,
    pub priority: Option<u64>,
}

/// A parsed application-create body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppReq {
    pub user_agent: String,
    pub endpoint_id: String,
    pub culture: String,
    pub instance_id: Option<String>,
}

/// A parsed makeMeAvailable body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AvailableReq {
    pub sign_in_as: Option<Preferred>,
    /// `inactiveTimeout` (minutes), overriding the configured idle time.
    pub inactive_timeout: Option<Duration>,
}

/// Default P-GET timeout (§4).
pub const DEFAULT_TIMEOUT: u64 = 180;
/// Default low-priority hold (§4); no low-priority events are produced.
pub const DEFAULT_LOW: Duration = Duration::from_secs(15);
/// Unknown contacts kept (watching arbitrary URIs must not grow memory without bound).
const MAX_FOREIGN: usize = 100_000;

struct Pget {
    ack: u64,
    priority: u64,
    deadline: Instant,
    tx: oneshot::Sender<PgetReply>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    Resync,
    Resume,
}

struct Delivered {
    ack: u64,
    body: Arc<str>,
}

/// An ad-hoc presence subscription (§5).
pub struct Sub {
    pub members: Vec<u32>,
    set: HashSet<u32>,
    pub expires: Instant,
    /// The `presenceSubscription updated` warning was queued.
    warned: bool,
}

/// An application (§3): the session of one user agent of one user.
pub struct App {
    pub id: u64,
    pub user: u32,
    /// `/ucwa/oauth/v1/applications/{id}`, the prefix of every href of this application.
    pub base: String,
    pub user_agent: String,
    pub endpoint_id: String,
    pub culture: String,
    pub instance_id: Option<String>,
    /// makeMeAvailable was called.
    pub available: bool,
    idle_timeout: Duration,
    next_ack: u64,
    last: Option<Delivered>,
    queue: Queue,
    pget: Option<Pget>,
    /// When the last event GET was answered (or the app created): the idle clock.
    released_at: Instant,
    medium: Duration,
    low: Duration,
    forced: Option<Forced>,
    pub subs: BTreeMap<u32, Sub>,
    /// Contact → number of memberships over this app's subscriptions.
    contacts: HashMap<u32, u32>,
    memberships: usize,
    timer_at: Option<Instant>,
}

impl App {
    /// The ack the next new event response gets (the `events` link of the application).
    pub fn next_ack(&self) -> u64 {
        self.next_ack
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    Active,
    Inactive,
    Away,
}

/// A user of the directory, or an unknown contact somebody subscribed to (always Offline).
pub struct User {
    /// `user00001@example.com` (lower case): the `people/{key}` path segment and the UPN.
    pub key: String,
    /// `sip:user00001@example.com`.
    pub uri: String,
    pub name: String,
    pub directory: bool,
    pub presence: Presence,
    /// Applications with this user in a subscription.
    watchers: Vec<u64>,
    /// This user's own applications.
    apps: Vec<u64>,
    /// Last makeMeAvailable / reportMyActivity of any of the user's applications.
    last_activity: Option<Instant>,
    inactive_timeout: Duration,
    idle: Idle,
    /// The state idling replaced and the availability idling set: restored on activity if
    /// the availability is still the one idling set.
    idle_restore: Option<(Availability, Option<String>, Availability)>,
}

struct Token {
    user: u32,
    expires: Instant,
}

/// Deadlines, at most one live entry per application (`App::timer_at`); later entries that
/// an earlier one superseded stay in the map and are harmless when they fire.
#[derive(Default)]
struct Timers {
    map: BTreeMap<(Instant, u64), u64>,
    seq: u64,
    /// An entry was added: the timer task must recompute its sleep.
    dirty: bool,
}

impl Timers {
    fn arm(&mut self, app: &mut App, at: Instant) {
        if app.timer_at.is_none_or(|t| at < t) {
            self.seq += 1;
            self.map.insert((at, self.seq), app.id);
            app.timer_at = Some(at);
            self.dirty = true;
        }
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Instant, u64)> {
        let (&(at, seq), _) = self.map.first_key_value()?;
        if at > now {
            return None;
        }
        let id = self.map.remove(&(at, seq))?;
        Some((at, id))
    }
}

pub struct Core {
    cfg: UcwaSimConfig,
    users: Vec<User>,
    by_key: HashMap<String, u32>,
    tokens: HashMap<String, Token>,
    apps: HashMap<u64, App>,
    timers: Timers,
    next_app: u64,
    rng: fastrand::Rng,
    counters: Arc<Counters>,
    /// (instant, wall-clock ms) at start: `lastActive` values follow the simulator's clock.
    epoch: (Instant, i64),
}

/// `sip:Alice@Example.com` or `alice@example.com` → `alice@example.com`.
pub fn normalise(uri: &str) -> String {
    let u = uri.trim();
    let u = match u.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("sip:") => &u[4..],
        _ => u,
    };
    u.to_ascii_lowercase()
}

/// A SIP URI as subscriptions take it: `sip:local@domain`, letters, digits and `._+-` in the
/// local part, letters, digits, `.` and `-` in the domain (*decided*: stricter than SIP, so
/// every key is a safe path segment).
pub fn valid_sip_uri(uri: &str) -> bool {
    let Some(p) = uri.get(..4) else {
        return false;
    };
    if !p.eq_ignore_ascii_case("sip:") || uri.len() > 256 {
        return false;
    }
    let mut parts = uri[4..].split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
}

pub fn user_key(n: u32, domain: &str) -> String {
    format!("user{n:05}@{}", domain.to_ascii_lowercase())
}

fn check_duration(minutes: u64) -> Result<Duration, UcwaError> {
    if (10..=30).contains(&minutes) {
        Ok(Duration::from_secs(minutes * 60))
    } else {
        Err(UcwaError::parameter(
            "duration must be between 10 and 30 minutes",
        ))
    }
}

fn owned(apps: &mut HashMap<u64, App>, user: u32, id: u64) -> Result<&mut App, UcwaError> {
    match apps.get_mut(&id) {
        None => Err(UcwaError::application_not_found()),
        Some(a) if a.user != user => Err(UcwaError::forbidden(
            None,
            "The application belongs to another user.",
        )),
        Some(a) => Ok(a),
    }
}

fn watch(app: &mut App, users: &mut [User], c: u32) -> bool {
    let n = app.contacts.entry(c).or_insert(0);
    *n += 1;
    if *n == 1 {
        users[c as usize].watchers.push(app.id);
        true
    } else {
        false
    }
}

fn unwatch(app: &mut App, users: &mut [User], c: u32) -> bool {
    match app.contacts.get_mut(&c) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            app.contacts.remove(&c);
            let id = app.id;
            users[c as usize].watchers.retain(|a| *a != id);
            true
        }
        None => false,
    }
}

/// Renders the next response and makes it the replayable one.
fn deliver(app: &mut App, users: &[User], counters: &Counters) -> Arc<str> {
    let ack = app.next_ack;
    let body = match app.forced.take() {
        Some(Forced::Resync) => {
            // Not a numbered response: the client follows the link to the same ack.
            bump(&counters.resyncs);
            return Arc::from(events::render_resync(&app.base, ack));
        }
        Some(Forced::Resume) => {
            // What was queued before the cleanup is gone already (force_resume); events of
            // a re-subscription made since then wait for the GET on the resume link.
            bump(&counters.resumes);
            events::render(&app.base, ack, "resume", &[], &|_| "")
        }
        None => {
            let evs = app.queue.take();
            counters
                .events_sent
                .fetch_add(evs.len() as u64, Ordering::Relaxed);
            events::render(&app.base, ack, "next", &evs, &|c| {
                users[c as usize].key.as_str()
            })
        }
    };
    let body: Arc<str> = Arc::from(body);
    app.next_ack += 1;
    app.last = Some(Delivered {
        ack,
        body: body.clone(),
    });
    bump(&counters.event_responses);
    body
}

/// Answers the pending GET if it is due (forced answer, events held long enough, timeout);
/// otherwise makes sure a timer is armed for when it will be.
fn release_if_due(
    app: &mut App,
    users: &[User],
    timers: &mut Timers,
    counters: &Counters,
    now: Instant,
) {
    let Some(p) = &app.pget else {
        return;
    };
    if p.tx.is_closed() {
        // The client went away: nothing is consumed, the events wait for its next GET.
        app.pget = None;
        app.released_at = now;
        timers.arm(app, now + app.idle_timeout);
        return;
    }
    let hold_end = app.queue.first_at.map(|f| f + app.medium);
    let due = app.forced.is_some() || p.deadline <= now || hold_end.is_some_and(|h| h <= now);
    if !due {
        let at = hold_end.map_or(p.deadline, |h| h.min(p.deadline));
        timers.arm(app, at);
        return;
    }
    let p = app.pget.take().expect("checked above");
    let body = deliver(app, users, counters);
    // A send failure means the client left in between; the response stays replayable.
    let _ = p.tx.send(Ok(body));
    app.released_at = now;
    timers.arm(app, now + app.idle_timeout);
}

impl Core {
    pub fn new(cfg: &UcwaSimConfig, counters: Arc<Counters>, now: Instant, wall_ms: i64) -> Core {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let n = cfg.users as usize;
        let mut users = Vec::with_capacity(n);
        let mut by_key = HashMap::with_capacity(n);
        for i in 1..=cfg.users {
            let key = user_key(i, &cfg.domain);
            let (availability, activity) = presence::random_state(&mut rng);
            let device = presence::random_device(&mut rng);
            let ago = rng.i64(0..8 * 3_600_000);
            by_key.insert(key.clone(), users.len() as u32);
            users.push(User {
                uri: format!("sip:{key}"),
                name: format!("User {i:05}"),
                key,
                directory: true,
                presence: Presence {
                    availability,
                    activity: activity.map(str::to_owned),
                    device,
                    last_active_ms: wall_ms - ago,
                    note: None,
                },
                watchers: Vec::new(),
                apps: Vec::new(),
                last_activity: None,
                inactive_timeout: cfg.activity_idle_after,
                idle: Idle::Active,
                idle_restore: None,
            });
        }
        Core {
            cfg: cfg.clone(),
            users,
            by_key,
            tokens: HashMap::new(),
            apps: HashMap::new(),
            timers: Timers::default(),
            next_app: 101,
            rng: fastrand::Rng::with_seed(cfg.seed ^ 0x7563_7761_746f_6b6e),
            counters,
            epoch: (now, wall_ms),
        }
    }

    fn wall_ms(&self, now: Instant) -> i64 {
        let d = now.saturating_duration_since(self.epoch.0);
        self.epoch.1 + d.as_millis().min(i64::MAX as u128) as i64
    }

    pub fn domain(&self) -> &str {
        &self.cfg.domain
    }

    // ---------------------------------------------------------------- lookups

    /// A directory user by SIP URI or UPN, any case.
    pub fn user_by_name(&self, name: &str) -> Option<u32> {
        self.by_key
            .get(&normalise(name))
            .copied()
            .filter(|&u| self.users[u as usize].directory)
    }

    /// A directory user or a known unknown contact by path key.
    pub fn contact_by_key(&self, key: &str) -> Option<u32> {
        self.by_key.get(&normalise(key)).copied()
    }

    pub fn user(&self, u: u32) -> &User {
        &self.users[u as usize]
    }

    pub fn users(&self) -> &[User] {
        &self.users
    }

    pub fn directory_users(&self) -> impl Iterator<Item = &User> {
        self.users.iter().filter(|u| u.directory)
    }

    /// The application if it exists and belongs to `user` (404 / 403).
    pub fn app(&self, user: u32, id: u64) -> Result<&App, UcwaError> {
        match self.apps.get(&id) {
            None => Err(UcwaError::application_not_found()),
            Some(a) if a.user != user => Err(UcwaError::forbidden(
                None,
                "The application belongs to another user.",
            )),
            Some(a) => Ok(a),
        }
    }

    /// A live subscription of the application (404 when unknown or expired).
    pub fn sub(&self, user: u32, id: u64, sid: u32, now: Instant) -> Result<&Sub, UcwaError> {
        self.app(user, id)?
            .subs
            .get(&sid)
            .filter(|s| s.expires > now)
            .ok_or_else(|| UcwaError::resource_not_found("The presence subscription"))
    }

    /// (apps alive, subscriptions alive, memberships alive).
    pub fn alive(&self) -> (u64, u64, u64) {
        let subs = self.apps.values().map(|a| a.subs.len() as u64).sum();
        let members = self.apps.values().map(|a| a.memberships as u64).sum();
        (self.apps.len() as u64, subs, members)
    }

    // ---------------------------------------------------------------- tokens (§2)

    /// The password grant. Errors are the OAuth `error` values.
    pub fn issue_token(
        &mut self,
        grant_type: Option<&str>,
        username: Option<&str>,
        password: Option<&str>,
        now: Instant,
    ) -> Result<(String, u64), &'static str> {
        let r = self.check_grant(grant_type, username, password);
        let u = match r {
            Ok(u) => u,
            Err(e) => {
                bump(&self.counters.token_failures);
                return Err(e);
            }
        };
        if self.tokens.len() >= 4096 && self.tokens.len().is_power_of_two() {
            self.tokens.retain(|_, t| t.expires > now);
        }
        let token = loop {
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            let s: String = (0..64)
                .map(|_| ALPHABET[self.rng.usize(..ALPHABET.len())] as char)
                .collect();
            let t = format!("cwt=AAEB{s}");
            if !self.tokens.contains_key(&t) {
                break t;
            }
        };
        self.tokens.insert(
            token.clone(),
            Token {
                user: u,
                expires: now + self.cfg.token_lifetime,
            },
        );
        bump(&self.counters.tokens_issued);
        Ok((token, self.cfg.token_lifetime.as_secs()))
    }

    fn check_grant(
        &self,
        grant_type: Option<&str>,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<u32, &'static str> {
        match grant_type {
            None | Some("") => return Err("invalid_request"),
            Some("password") => {}
            Some(_) => return Err("unsupported_grant_type"),
        }
        let (Some(username), Some(password)) = (
            username.filter(|s| !s.is_empty()),
            password.filter(|s| !s.is_empty()),
        ) else {
            return Err("invalid_request");
        };
        let u = self.user_by_name(username).ok_or("invalid_grant")?;
        if password != self.cfg.password {
            return Err("invalid_grant");
        }
        Ok(u)
    }

    /// The user of a Bearer token (401 when missing, unknown or expired).
    pub fn auth(&mut self, token: Option<&str>, now: Instant) -> Result<u32, UcwaError> {
        let token = token.ok_or_else(UcwaError::unauthorized)?;
        match self.tokens.get(token) {
            Some(t) if t.expires > now => Ok(t.user),
            Some(_) => {
                self.tokens.remove(token);
                Err(UcwaError::unauthorized())
            }
            None => Err(UcwaError::unauthorized()),
        }
    }

    pub fn expire_tokens(&mut self) {
        self.tokens.clear();
    }

    // ---------------------------------------------------------------- applications (§3)

    /// Creates an application; an identical one (same endpointId, userAgent and culture) of
    /// the same user is returned instead (`false`), as for the multi-tab case of the docs.
    pub fn create_app(
        &mut self,
        user: u32,
        req: AppReq,
        now: Instant,
    ) -> Result<(u64, bool), UcwaError> {
        for id in &self.users[user as usize].apps {
            let a = &self.apps[id];
            if a.endpoint_id == req.endpoint_id {
                if a.user_agent == req.user_agent && a.culture.eq_ignore_ascii_case(&req.culture) {
                    return Ok((*id, false));
                }
                return Err(UcwaError::conflict(
                    "AlreadyExists",
                    "Another application of this user uses this endpointId.",
                ));
            }
        }
        if self.users[user as usize].apps.len() >= self.cfg.max_apps_per_user {
            return Err(UcwaError::new(
                410,
                "Gone",
                Some("TooManyApplications"),
                "The user has too many applications.",
            ));
        }
        let id = self.next_app;
        self.next_app += 1;
        self.apps.insert(
            id,
            App {
                id,
                user,
                base: format!("/ucwa/oauth/v1/applications/{id}"),
                user_agent: req.user_agent,
                endpoint_id: req.endpoint_id,
                culture: req.culture,
                instance_id: req.instance_id,
                available: false,
                idle_timeout: self.cfg.app_idle_timeout,
                next_ack: 1,
                last: None,
                queue: Queue::default(),
                pget: None,
                released_at: now,
                medium: self.cfg.medium_hold,
                low: DEFAULT_LOW,
                forced: None,
                subs: BTreeMap::new(),
                contacts: HashMap::new(),
                memberships: 0,
                timer_at: None,
            },
        );
        self.users[user as usize].apps.push(id);
        bump(&self.counters.apps_created);
        self.rearm(id, now);
        Ok((id, true))
    }

    /// Removes an application with everything it holds; a pending GET gets
    /// `404 ApplicationNotFound`.
    fn remove_app(&mut self, id: u64) {
        let Some(mut app) = self.apps.remove(&id) else {
            return;
        };
        for &c in app.contacts.keys() {
            self.users[c as usize].watchers.retain(|a| *a != id);
        }
        self.users[app.user as usize].apps.retain(|a| *a != id);
        if let Some(p) = app.pget.take() {
            let _ = p.tx.send(Err(UcwaError::application_not_found()));
        }
    }

    pub fn delete_app(&mut self, user: u32, id: u64) -> Result<(), UcwaError> {
        owned(&mut self.apps, user, id)?;
        self.remove_app(id);
        Ok(())
    }

    /// Shutdown: pending GETs are dropped (their handlers answer 503) so the server can stop.
    pub fn close_channels(&mut self) {
        for app in self.apps.values_mut() {
            app.pget = None;
        }
    }

    pub fn expire_applications(&mut self) {
        let ids: Vec<u64> = self.apps.keys().copied().collect();
        for id in ids {
            self.remove_app(id);
        }
    }

    /// Fault injection: every pending GET is released with `409 PGetReplaced`, as if
    /// another client had sent a GET with the same ack.
    pub fn replace_pending_gets(&mut self, now: Instant) {
        for app in self.apps.values_mut() {
            if let Some(old) = app.pget.take() {
                if old.tx.send(Err(UcwaError::pget_replaced())).is_ok() {
                    bump(&self.counters.pget_replaced);
                }
                app.released_at = now;
            }
        }
    }

    // ---------------------------------------------------------------- event channel (§4)

    pub fn pget(
        &mut self,
        user: u32,
        id: u64,
        req: PgetReq,
        now: Instant,
    ) -> Result<PgetStart, UcwaError> {
        let range = |v: Option<u64>, lo: u64, hi: u64, name: &str| match v {
            Some(x) if !(lo..=hi).contains(&x) => Err(UcwaError::parameter(format!(
                "{name} must be between {lo} and {hi} seconds"
            ))),
            _ => Ok(()),
        };
        range(req.timeout, 180, 1800, "timeout")?;
        range(req.medium, 5, 1800, "medium")?;
        range(req.low, 5, 1800, "low")?;
        let app = owned(&mut self.apps, user, id)?;
        bump(&self.counters.pgets);
        if let Some(m) = req.medium {
            app.medium = Duration::from_secs(m);
        }
        if let Some(l) = req.low {
            app.low = Duration::from_secs(l);
        }
        let priority = req.priority.unwrap_or(0);
        if let Some(old) = &app.pget {
            if req.ack == Some(old.ack) && priority < old.priority {
                bump(&self.counters.pget_replaced);
                return Err(UcwaError::pget_replaced());
            }
            let old = app.pget.take().expect("checked above");
            if old.tx.send(Err(UcwaError::pget_replaced())).is_ok() {
                bump(&self.counters.pget_replaced);
            }
            app.released_at = now;
        }
        let timeout = Duration::from_secs(req.timeout.unwrap_or(DEFAULT_TIMEOUT));
        let start = match (req.ack, &app.last) {
            (Some(a), Some(last)) if last.ack == a => {
                bump(&self.counters.replays);
                app.released_at = now;
                PgetStart::Ready(last.body.clone())
            }
            (Some(a), _) if a == app.next_ack => {
                let (tx, rx) = oneshot::channel();
                app.pget = Some(Pget {
                    ack: a,
                    priority,
                    deadline: now + timeout,
                    tx,
                });
                release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
                PgetStart::Wait(rx)
            }
            _ => {
                bump(&self.counters.resyncs);
                app.released_at = now;
                PgetStart::Ready(Arc::from(events::render_resync(&app.base, app.next_ack)))
            }
        };
        self.rearm(id, now);
        Ok(start)
    }

    /// Cleanup: every application's subscriptions are gone and its next event response
    /// carries `resume` instead of `next`; aggregation settings go back to the defaults.
    pub fn force_resume(&mut self, now: Instant) {
        let ids: Vec<u64> = self.apps.keys().copied().collect();
        for id in ids {
            self.drop_all_subs(id, now);
            let Some(app) = self.apps.get_mut(&id) else {
                continue;
            };
            app.queue.clear();
            app.forced = Some(Forced::Resume);
            app.medium = self.cfg.medium_hold;
            app.low = DEFAULT_LOW;
            release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        }
    }

    /// Every application's next event response is only a `resync` link (events stay queued
    /// and come with the GET that follows the link).
    pub fn force_resync(&mut self, now: Instant) {
        for app in self.apps.values_mut() {
            if app.forced.is_none() {
                app.forced = Some(Forced::Resync);
            }
            release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        }
    }

    // ---------------------------------------------------------------- timers

    fn next_deadline(&self, app: &App) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        match &app.pget {
            Some(p) => {
                at(p.deadline);
                if let Some(f) = app.queue.first_at {
                    at(f + app.medium);
                }
            }
            None => at(app.released_at + app.idle_timeout),
        }
        let lead = self.cfg.subscription_warning;
        for s in app.subs.values() {
            at(s.expires);
            if !s.warned {
                at(s.expires.checked_sub(lead).unwrap_or(s.expires));
            }
        }
        if app.available {
            let u = &self.users[app.user as usize];
            if let Some(la) = u.last_activity {
                match u.idle {
                    Idle::Active => at(la + u.inactive_timeout),
                    Idle::Inactive => at(la + self.cfg.activity_away_after),
                    Idle::Away => {}
                }
            }
        }
        d
    }

    fn rearm(&mut self, id: u64, _now: Instant) {
        let Some(app) = self.apps.get(&id) else {
            return;
        };
        if let Some(at) = self.next_deadline(app) {
            let app = self.apps.get_mut(&id).expect("checked above");
            self.timers.arm(app, at);
        }
    }

    /// The earliest armed deadline (for the timer task's sleep).
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.map.first_key_value().map(|(k, _)| k.0)
    }

    /// Whether a deadline was added since the last call (the timer task must wake up).
    pub fn take_timers_dirty(&mut self) -> bool {
        std::mem::take(&mut self.timers.dirty)
    }

    /// Handles every deadline that is due.
    pub fn run_due(&mut self, now: Instant) {
        let mut guard = 0u32;
        while let Some((at, id)) = self.timers.pop_due(now) {
            let Some(app) = self.apps.get_mut(&id) else {
                continue;
            };
            if app.timer_at == Some(at) {
                app.timer_at = None;
            }
            self.check_app(id, now);
            guard += 1;
            if guard > 1_000_000 {
                tracing::warn!("UCWA simulator: timer loop did not settle");
                break;
            }
        }
    }

    /// Re-examines one application at `now`: pending GET, idle expiry, subscription
    /// warnings and expiry, own-presence idling; then arms its next deadline.
    fn check_app(&mut self, id: u64, now: Instant) {
        let lead = self.cfg.subscription_warning;
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        if app.pget.is_none() && app.released_at + app.idle_timeout <= now {
            bump(&self.counters.apps_expired);
            tracing::debug!(app = id, "UCWA simulator: application idle, terminated");
            self.remove_app(id);
            return;
        }
        let mut expired = Vec::new();
        let mut warned = false;
        for (&sid, s) in app.subs.iter_mut() {
            if s.expires <= now {
                expired.push(sid);
            } else if !s.warned && s.expires.checked_sub(lead).is_none_or(|w| w <= now) {
                s.warned = true;
                app.queue.push(Ev::Subscription(Kind::Updated, sid), now);
                warned = true;
            }
        }
        if warned {
            release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        }
        let (user, available) = (app.user, app.available);
        for sid in expired {
            // *Decided*: expiry is silent (no deleted events); clients renew ahead of it.
            self.drop_sub(id, sid, false, now);
        }
        if available {
            self.check_activity(user, now);
        }
        self.rearm(id, now);
    }

    // ---------------------------------------------------------------- presence fan-out

    /// Queues `contactPresence` / `contactNote` updated for every application watching `u`
    /// and `presence` / `note` updated for `u`'s own available applications.
    fn fan_out(&mut self, u: u32, presence: bool, note: bool, now: Instant) {
        if presence {
            bump(&self.counters.changes);
        }
        let watchers = std::mem::take(&mut self.users[u as usize].watchers);
        for id in &watchers {
            if let Some(app) = self.apps.get_mut(id) {
                if presence {
                    app.queue.push(Ev::ContactPresence(u), now);
                }
                if note {
                    app.queue.push(Ev::ContactNote(u), now);
                }
                release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
            }
        }
        self.users[u as usize].watchers = watchers;
        let own = std::mem::take(&mut self.users[u as usize].apps);
        for id in &own {
            if let Some(app) = self.apps.get_mut(id).filter(|a| a.available) {
                if presence {
                    app.queue.push(Ev::MePresence(Kind::Updated), now);
                }
                if note {
                    app.queue.push(Ev::MeNote, now);
                }
                release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
            }
        }
        self.users[u as usize].apps = own;
    }

    /// Publishes a new state for `u`. `note`: `None` keeps the note, `Some(None)` clears it.
    fn set_state(
        &mut self,
        u: u32,
        availability: Availability,
        activity: Option<String>,
        note: Option<Option<String>>,
        now: Instant,
    ) {
        let wall = self.wall_ms(now);
        let p = &mut self.users[u as usize].presence;
        p.availability = availability;
        p.activity = activity;
        p.last_active_ms = wall;
        let note_changed = match note {
            Some(n) if n != p.note => {
                p.note = n;
                true
            }
            _ => false,
        };
        self.fan_out(u, true, note_changed, now);
    }

    /// A change from the user's own (other) client: the handle, the control API, the random
    /// generator. Every call counts as a change, even to the same value.
    pub fn set_client(
        &mut self,
        u: u32,
        availability: Availability,
        activity: Option<String>,
        note: Option<Option<String>>,
        now: Instant,
    ) {
        self.users[u as usize].idle_restore = None;
        self.set_state(u, availability, activity, note, now);
    }

    /// The change generator: a random directory user gets a random state.
    pub fn random_change(&mut self, rng: &mut fastrand::Rng, now: Instant) {
        let n = self.cfg.users;
        if n == 0 {
            return;
        }
        let u = rng.u32(..n);
        let (a, act) = presence::random_state(rng);
        self.set_client(u, a, act.map(str::to_owned), None, now);
    }

    // ---------------------------------------------------------------- subscriptions (§5)

    /// Directory users or (interned) unknown contacts for valid SIP URIs, without duplicates.
    fn resolve(&mut self, uris: &[String]) -> Result<Vec<u32>, UcwaError> {
        let mut seen = HashSet::with_capacity(uris.len());
        let mut out = Vec::with_capacity(uris.len());
        for uri in uris {
            if !valid_sip_uri(uri) {
                return Err(UcwaError::parameter(format!(
                    "not a SIP URI: {}",
                    uri.chars().take(64).collect::<String>()
                )));
            }
            let key = normalise(uri);
            let c = match self.by_key.get(&key) {
                Some(&c) => c,
                None => {
                    if self.users.len() - self.cfg.users as usize >= MAX_FOREIGN {
                        return Err(UcwaError::forbidden(
                            Some("LimitExceeded"),
                            "Too many unknown contacts.",
                        ));
                    }
                    let c = self.users.len() as u32;
                    self.users.push(User {
                        uri: format!("sip:{key}"),
                        name: key.clone(),
                        key: key.clone(),
                        directory: false,
                        presence: Presence {
                            availability: Availability::Offline,
                            activity: None,
                            device: DeviceType::Unknown,
                            last_active_ms: 0,
                            note: None,
                        },
                        watchers: Vec::new(),
                        apps: Vec::new(),
                        last_activity: None,
                        inactive_timeout: self.cfg.activity_idle_after,
                        idle: Idle::Active,
                        idle_restore: None,
                    });
                    self.by_key.insert(key, c);
                    c
                }
            };
            if seen.insert(c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Creates a subscription; queues `contact` added (new to this application),
    /// `presenceSubscription` added and `contactPresence` updated per member.
    pub fn subscribe(
        &mut self,
        user: u32,
        id: u64,
        duration: u64,
        uris: &[String],
        now: Instant,
    ) -> Result<u32, UcwaError> {
        let d = check_duration(duration)?;
        self.app(user, id)?;
        if uris.is_empty() {
            return Err(UcwaError::parameter("uris must not be empty"));
        }
        let contacts = self.resolve(uris)?;
        let (max_subs, max_contacts) = (
            self.cfg.max_subscriptions_per_app,
            self.cfg.max_contacts_per_app,
        );
        let app = owned(&mut self.apps, user, id)?;
        if app.subs.len() >= max_subs {
            return Err(UcwaError::forbidden(
                Some("LimitExceeded"),
                "The maximum number of presence subscriptions is reached.",
            ));
        }
        if app.memberships + contacts.len() > max_contacts {
            return Err(UcwaError::forbidden(
                Some("TooManyContacts"),
                "The maximum number of subscribed contacts is reached.",
            ));
        }
        let sid = loop {
            let s = self.rng.u32(1..);
            if !app.subs.contains_key(&s) {
                break s;
            }
        };
        for &c in &contacts {
            if watch(app, &mut self.users, c) {
                app.queue.push(Ev::Contact(Kind::Added, c), now);
            }
        }
        app.queue.push(Ev::Subscription(Kind::Added, sid), now);
        for &c in &contacts {
            app.queue.push(Ev::ContactPresence(c), now);
        }
        app.memberships += contacts.len();
        app.subs.insert(
            sid,
            Sub {
                set: contacts.iter().copied().collect(),
                members: contacts,
                expires: now + d,
                warned: false,
            },
        );
        release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        bump(&self.counters.subscriptions_created);
        self.rearm(id, now);
        Ok(sid)
    }

    /// Extend (§5): adds `duration` minutes to the remaining time, capped at 30 minutes.
    pub fn extend(
        &mut self,
        user: u32,
        id: u64,
        sid: u32,
        duration: u64,
        now: Instant,
    ) -> Result<(), UcwaError> {
        let d = check_duration(duration)?;
        let lead = self.cfg.subscription_warning;
        let app = owned(&mut self.apps, user, id)?;
        let sub = app
            .subs
            .get_mut(&sid)
            .ok_or_else(|| UcwaError::resource_not_found("The presence subscription"))?;
        if sub.expires <= now {
            self.drop_sub(id, sid, false, now);
            return Err(UcwaError::resource_not_found("The presence subscription"));
        }
        sub.expires = (sub.expires + d).min(now + Duration::from_secs(30 * 60));
        if sub.expires.checked_sub(lead).is_some_and(|w| w > now) {
            sub.warned = false;
        }
        self.rearm(id, now);
        Ok(())
    }

    /// Removes a subscription; with `events`, queues `contact` deleted for contacts no
    /// longer watched by the application and `presenceSubscription` deleted.
    fn drop_sub(&mut self, id: u64, sid: u32, events: bool, now: Instant) {
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        let Some(sub) = app.subs.remove(&sid) else {
            return;
        };
        app.memberships -= sub.members.len();
        for &c in &sub.members {
            if unwatch(app, &mut self.users, c) && events {
                app.queue.push(Ev::Contact(Kind::Deleted, c), now);
            }
        }
        if events {
            app.queue.push(Ev::Subscription(Kind::Deleted, sid), now);
            release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        }
    }

    fn drop_all_subs(&mut self, id: u64, now: Instant) {
        let Some(app) = self.apps.get(&id) else {
            return;
        };
        let sids: Vec<u32> = app.subs.keys().copied().collect();
        for sid in sids {
            self.drop_sub(id, sid, false, now);
        }
    }

    pub fn delete_sub(
        &mut self,
        user: u32,
        id: u64,
        sid: u32,
        now: Instant,
    ) -> Result<(), UcwaError> {
        self.sub(user, id, sid, now)?;
        self.drop_sub(id, sid, true, now);
        Ok(())
    }

    /// Every subscription ends, silently (extending one answers 404).
    pub fn expire_subscriptions(&mut self, now: Instant) {
        let ids: Vec<u64> = self.apps.keys().copied().collect();
        for id in ids {
            self.drop_all_subs(id, now);
        }
    }

    /// Adds members (`contactUris`); new ones get `contact` added (if new to the
    /// application) and `contactPresence` updated.
    pub fn add_members(
        &mut self,
        user: u32,
        id: u64,
        sid: u32,
        uris: &[String],
        now: Instant,
    ) -> Result<(), UcwaError> {
        self.sub(user, id, sid, now)?;
        if uris.is_empty() {
            return Err(UcwaError::parameter("contactUris must not be empty"));
        }
        let contacts = self.resolve(uris)?;
        let max_contacts = self.cfg.max_contacts_per_app;
        let app = owned(&mut self.apps, user, id)?;
        let sub = app.subs.get_mut(&sid).expect("checked by sub()");
        let new: Vec<u32> = contacts
            .into_iter()
            .filter(|c| !sub.set.contains(c))
            .collect();
        if app.memberships + new.len() > max_contacts {
            return Err(UcwaError::forbidden(
                Some("LimitExceeded"),
                "The maximum number of subscribed contacts is reached.",
            ));
        }
        sub.members.extend_from_slice(&new);
        sub.set.extend(new.iter().copied());
        app.memberships += new.len();
        for &c in &new {
            if watch(app, &mut self.users, c) {
                app.queue.push(Ev::Contact(Kind::Added, c), now);
            }
            app.queue.push(Ev::ContactPresence(c), now);
        }
        release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        Ok(())
    }

    pub fn remove_member(
        &mut self,
        user: u32,
        id: u64,
        sid: u32,
        contact: u32,
        now: Instant,
    ) -> Result<(), UcwaError> {
        self.sub(user, id, sid, now)?;
        let app = owned(&mut self.apps, user, id)?;
        let sub = app.subs.get_mut(&sid).expect("checked by sub()");
        if !sub.set.remove(&contact) {
            return Err(UcwaError::resource_not_found("The membership"));
        }
        sub.members.retain(|c| *c != contact);
        app.memberships -= 1;
        if unwatch(app, &mut self.users, contact) {
            app.queue.push(Ev::Contact(Kind::Deleted, contact), now);
            release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        }
        Ok(())
    }

    pub fn count_presence_get(&self) {
        bump(&self.counters.presence_gets);
    }

    // ---------------------------------------------------------------- own presence (§7)

    fn available_app(&mut self, user: u32, id: u64) -> Result<&mut App, UcwaError> {
        let app = owned(&mut self.apps, user, id)?;
        if !app.available {
            return Err(UcwaError::make_me_available_required());
        }
        Ok(app)
    }

    /// makeMeAvailable: `presence` added to this application; the user signs in as
    /// `signInAs`, or Online when Offline, else keeps the state.
    pub fn make_me_available(
        &mut self,
        user: u32,
        id: u64,
        req: AvailableReq,
        now: Instant,
    ) -> Result<(), UcwaError> {
        let app = owned(&mut self.apps, user, id)?;
        if app.available {
            return Err(UcwaError::conflict(
                "AlreadyExists",
                "makeMeAvailable was already called.",
            ));
        }
        app.available = true;
        app.queue.push(Ev::MePresence(Kind::Added), now);
        self.users[user as usize].inactive_timeout =
            req.inactive_timeout.unwrap_or(self.cfg.activity_idle_after);
        self.activity(user, now);
        let current = self.users[user as usize].presence.availability;
        let target = match req.sign_in_as {
            Some(p) => Some(p.apply()),
            None if current == Availability::Offline => Some((Availability::Online, None)),
            None => None,
        };
        if let Some((a, act)) = target {
            self.users[user as usize].idle_restore = None;
            self.set_state(user, a, act.map(str::to_owned), None, now);
        }
        if let Some(app) = self.apps.get_mut(&id) {
            release_if_due(app, &self.users, &mut self.timers, &self.counters, now);
        }
        self.rearm(id, now);
        Ok(())
    }

    /// `POST me/presence`: a preferred availability, or `None` (empty body) to reset to the
    /// automatic state: Online, IdleOnline or Away depending on the reported activity.
    pub fn set_own_presence(
        &mut self,
        user: u32,
        id: u64,
        preferred: Option<Preferred>,
        now: Instant,
    ) -> Result<(), UcwaError> {
        self.available_app(user, id)?;
        bump(&self.counters.own_presence_sets);
        let u = &mut self.users[user as usize];
        u.idle_restore = None;
        let (a, act) = match preferred {
            Some(p) => p.apply(),
            None => match u.idle {
                Idle::Active => (Availability::Online, None),
                Idle::Inactive => {
                    u.idle_restore = Some((Availability::Online, None, Availability::IdleOnline));
                    (Availability::IdleOnline, None)
                }
                Idle::Away => {
                    u.idle_restore = Some((Availability::Online, None, Availability::Away));
                    (Availability::Away, None)
                }
            },
        };
        self.set_state(user, a, act.map(str::to_owned), None, now);
        Ok(())
    }

    pub fn own_presence(&mut self, user: u32, id: u64) -> Result<&Presence, UcwaError> {
        self.available_app(user, id)?;
        Ok(&self.users[user as usize].presence)
    }

    /// `POST me/note`: the personal note (empty or absent clears it).
    pub fn set_own_note(
        &mut self,
        user: u32,
        id: u64,
        message: Option<String>,
        now: Instant,
    ) -> Result<(), UcwaError> {
        self.available_app(user, id)?;
        let message = message.filter(|m| !m.is_empty());
        let p = &mut self.users[user as usize].presence;
        if p.note != message {
            p.note = message;
            self.fan_out(user, false, true, now);
        }
        Ok(())
    }

    /// The location resource exists only after makeMeAvailable.
    pub fn check_available(&mut self, user: u32, id: u64) -> Result<(), UcwaError> {
        self.available_app(user, id).map(|_| ())
    }

    pub fn report_activity(&mut self, user: u32, id: u64, now: Instant) -> Result<(), UcwaError> {
        self.available_app(user, id)?;
        self.activity(user, now);
        self.rearm(id, now);
        Ok(())
    }

    /// The user is active now: leaves idle, restoring the state idling replaced.
    fn activity(&mut self, u: u32, now: Instant) {
        let usr = &mut self.users[u as usize];
        usr.last_activity = Some(now);
        if usr.idle == Idle::Active {
            return;
        }
        usr.idle = Idle::Active;
        if let Some((a, act, set)) = usr.idle_restore.take() {
            if usr.presence.availability == set {
                self.set_state(u, a, act, None, now);
            }
        }
    }

    /// Idling (*decided*): `activity_idle_after` (or makeMeAvailable's `inactiveTimeout`)
    /// without reportMyActivity turns Online into IdleOnline and Busy into IdleBusy;
    /// `activity_away_after` turns IdleOnline into Away. Other states are left alone.
    fn check_activity(&mut self, u: u32, now: Instant) {
        let usr = &mut self.users[u as usize];
        let Some(la) = usr.last_activity else {
            return;
        };
        match usr.idle {
            Idle::Active if la + usr.inactive_timeout <= now => {
                usr.idle = Idle::Inactive;
                let a = usr.presence.availability;
                let to = match a {
                    Availability::Online => Availability::IdleOnline,
                    Availability::Busy => Availability::IdleBusy,
                    _ => return,
                };
                let act = usr.presence.activity.clone();
                usr.idle_restore = Some((a, act.clone(), to));
                self.set_state(u, to, act, None, now);
            }
            Idle::Inactive if la + self.cfg.activity_away_after <= now => {
                usr.idle = Idle::Away;
                if usr.presence.availability != Availability::IdleOnline {
                    return;
                }
                if let Some(r) = usr.idle_restore.as_mut() {
                    r.2 = Availability::Away;
                    self.set_state(u, Availability::Away, None, None, now);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_validation() {
        for ok in [
            "sip:user00001@example.com",
            "SIP:Alice.B+x-y@Sub.Example.com",
        ] {
            assert!(valid_sip_uri(ok), "{ok}");
        }
        for bad in [
            "user00001@example.com",
            "sip:",
            "sip:@example.com",
            "sip:a@",
            "sip:a@b@c",
            "sip:a b@example.com",
            "sip:a\"@example.com",
            "sip:a@exa/mple.com",
            "sip:é@example.com",
            "tel:+123",
        ] {
            assert!(!valid_sip_uri(bad), "{bad}");
        }
        assert_eq!(normalise("SIP:Alice@Example.COM"), "alice@example.com");
        assert_eq!(normalise(" bob@x.org "), "bob@x.org");
    }

    #[test]
    fn durations() {
        assert!(check_duration(9).is_err());
        assert!(check_duration(10).is_ok());
        assert!(check_duration(30).is_ok());
        assert_eq!(
            check_duration(31).unwrap_err().subcode,
            Some("ParameterValidationFailure")
        );
    }
}
