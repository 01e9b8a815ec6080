//! The simulated server's state and every operation on it, free of HTTP.
//!
//! One `Core` sits behind a `std::sync::Mutex`; every operation is synchronous and short, and
//! returns the notifications it decided to send as [`Notice`]s, which the caller hands to the
//! callback dispatcher after releasing the lock (no `.await` while holding it).
//!
//! Change tracking (reference §9.5–9.6): each subscription keeps a *changed* set (a flag per
//! contact position plus the positions in change order) and a *waiting* flag meaning
//! "notified, no fetch since". A change to a watched user flags it in every subscription
//! containing it (found through the user's `watchers` index, so a change costs
//! O(subscriptions watching that user), not O(all subscriptions)); a subscription that is not
//! waiting becomes waiting and gets one notification. A fetch drains the set and clears
//! waiting, so the next change notifies again. While waiting, nothing is sent, even when the
//! notification never arrived (endpoint gone, callbacks dropped, CPU throttle): the queue
//! stays blocked until a fetch, exactly the failure mode the reference warns about.

use super::error::PwsError;
use super::presence::{self, Basic, PwsLayer, RichSet, State, UserPresence};
use super::PwsSimConfig;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A notification to send: `GET {url}` where `url` already carries `id` and `eventType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub sid: u64,
    pub url: String,
}

/// Counters shared with the HTTP layer and the callback dispatcher (lock-free).
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub errors_returned: AtomicU64,
    pub logins: AtomicU64,
    pub endpoints: AtomicU64,
    pub subscriptions: AtomicU64,
    pub fetches: AtomicU64,
    pub polls: AtomicU64,
    pub sets: AtomicU64,
    pub changes: AtomicU64,
    pub notifications: AtomicU64,
    pub callbacks_sent: AtomicU64,
    pub callbacks_failed: AtomicU64,
    pub callbacks_suppressed: AtomicU64,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Principal {
    App,
    End(u32),
}

struct Session {
    principal: Principal,
    /// For an end user: the app-user key that logged it in (logging that out logs this out).
    parent: Option<String>,
}

struct Endpoint {
    url: String,
    expires: Instant,
    /// The session that registered it; its logout unregisters it.
    creator: String,
}

struct Contact {
    /// As the client sent it; fetches echo it back.
    uri: String,
    user: Option<u32>,
}

struct Subscription {
    owner: u32,
    creator: String,
    endpoint: u64,
    expires: Instant,
    contacts: Vec<Contact>,
    /// Normalised URIs, to ignore duplicates.
    keys: HashSet<String>,
    changed_flag: Vec<bool>,
    changed: Vec<u32>,
    waiting: bool,
}

struct User {
    name: String,
    uri: String,
    presence: UserPresence,
    /// (subscription id, contact position) of every subscription containing this user.
    watchers: Vec<(u64, u32)>,
}

/// A parsed, validated subscription body (the HTTP layer checks syntax and URIs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeReq {
    /// `None`: no `<contactsList>` element.
    pub contacts: Option<Vec<String>>,
    pub endpoint: Option<u64>,
    /// Seconds; `None` when neither header nor body gave one.
    pub expiry: Option<u64>,
}

/// A parsed set-presence body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetReq {
    Basic { basic: Basic, override_: bool },
    Rich(RichSet),
}

pub const DEFAULT_EXPIRY: u64 = 3600;

pub fn check_expiry(secs: u64) -> Result<u64, PwsError> {
    if (3600..=86400).contains(&secs) {
        Ok(secs)
    } else {
        Err(PwsError(131))
    }
}

/// `sip:Alice@Example.com` → `alice@example.com`.
pub fn normalise_uri(uri: &str) -> String {
    let u = uri.trim();
    let u = u
        .strip_prefix("sip:")
        .or_else(|| u.strip_prefix("SIP:"))
        .unwrap_or(u);
    u.to_ascii_lowercase()
}

pub struct Core {
    domain: String,
    app_user: String,
    app_password: String,
    max_contacts: usize,
    max_endpoints: usize,
    max_subscriptions: usize,
    users: Vec<User>,
    by_name: HashMap<String, u32>,
    by_uri: HashMap<String, u32>,
    sessions: HashMap<String, Session>,
    /// The key a non-forced login returns while it is valid.
    current: HashMap<Principal, String>,
    endpoints: HashMap<u64, Endpoint>,
    subs: HashMap<u64, Subscription>,
    /// One counter for endpoint and subscription ids; never reset (not even by a restart).
    next_id: u64,
    rng: fastrand::Rng,
    rate_limit: Option<u32>,
    window_start: Instant,
    window_count: u32,
    pub cpu_throttle: bool,
    pub drop_callbacks: bool,
    counters: Arc<Counters>,
}

impl Core {
    pub fn new(cfg: &PwsSimConfig, counters: Arc<Counters>) -> Core {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let n = cfg.users as usize;
        let mut users = Vec::with_capacity(n);
        let mut by_name = HashMap::with_capacity(n);
        let mut by_uri = HashMap::with_capacity(n);
        for i in 1..=cfg.users {
            let name = user_name(i);
            let uri = format!("{name}@{}", cfg.domain);
            by_name.insert(name.clone(), users.len() as u32);
            by_uri.insert(uri.to_ascii_lowercase(), users.len() as u32);
            users.push(User {
                name,
                uri,
                presence: UserPresence::new(presence::random_state(&mut rng)),
                watchers: Vec::new(),
            });
        }
        Core {
            domain: cfg.domain.clone(),
            app_user: cfg.app_user.clone(),
            app_password: cfg.app_password.clone(),
            max_contacts: cfg.max_contacts_per_subscription,
            max_endpoints: cfg.max_endpoints,
            max_subscriptions: cfg.max_subscriptions,
            users,
            by_name,
            by_uri,
            sessions: HashMap::new(),
            current: HashMap::new(),
            endpoints: HashMap::new(),
            subs: HashMap::new(),
            next_id: 1,
            rng: fastrand::Rng::with_seed(cfg.seed ^ 0x5eed_4b65_7973),
            rate_limit: None,
            window_start: Instant::now(),
            window_count: 0,
            cpu_throttle: false,
            drop_callbacks: false,
            counters,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn user_count(&self) -> u32 {
        self.users.len() as u32
    }

    pub fn active(&self) -> (u64, u64, u64) {
        (
            self.sessions.len() as u64,
            self.endpoints.len() as u64,
            self.subs.len() as u64,
        )
    }

    // ---------------------------------------------------------------- faults and limits

    pub fn set_rate_limit(&mut self, per_second: Option<u32>) {
        self.rate_limit = per_second;
        self.window_start = Instant::now();
        self.window_count = 0;
    }

    /// Error 212 above the configured requests per second (a fixed one-second window).
    pub fn check_rate(&mut self, now: Instant) -> Result<(), PwsError> {
        let Some(limit) = self.rate_limit else {
            return Ok(());
        };
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count += 1;
        if self.window_count > limit {
            return Err(PwsError(212));
        }
        Ok(())
    }

    /// Error 210 for the calls a throttled server refuses (fetch, subscribe).
    pub fn check_cpu(&self) -> Result<(), PwsError> {
        if self.cpu_throttle {
            Err(PwsError(210))
        } else {
            Ok(())
        }
    }

    pub fn expire_sessions(&mut self) {
        self.sessions.clear();
        self.current.clear();
    }

    pub fn expire_subscriptions(&mut self) {
        self.subs.clear();
        for u in &mut self.users {
            u.watchers.clear();
        }
    }

    /// A node restart: sessions, endpoints, subscriptions and PWS-set states are gone; user
    /// client states and the id counter survive.
    pub fn restart(&mut self) {
        self.expire_sessions();
        self.expire_subscriptions();
        self.endpoints.clear();
        for u in &mut self.users {
            u.presence.clear_pws();
        }
    }

    // ---------------------------------------------------------------- sessions

    fn new_key(&mut self) -> String {
        loop {
            let r = &mut self.rng;
            let key = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                r.u32(..),
                r.u16(..),
                0x4000 | (r.u16(..) & 0x0fff),
                0x8000 | (r.u16(..) & 0x3fff),
                r.u64(..) & 0xffff_ffff_ffff
            );
            if !self.sessions.contains_key(&key) {
                return key;
            }
        }
    }

    fn login(&mut self, principal: Principal, parent: Option<String>, force: bool) -> String {
        bump(&self.counters.logins);
        if !force {
            if let Some(k) = self.current.get(&principal) {
                if self.sessions.contains_key(k) {
                    return k.clone();
                }
            }
        }
        // A forced login issues a new key; earlier keys stay valid until logout.
        let key = self.new_key();
        self.sessions
            .insert(key.clone(), Session { principal, parent });
        self.current.insert(principal, key.clone());
        key
    }

    pub fn is_app_user(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(&self.app_user)
    }

    fn end_user(&self, name: &str) -> Option<u32> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    /// Application-user login with a password (§3.1). `password` is the parse result of the
    /// body, checked only once the user name is known to be the app user.
    pub fn login_app(
        &mut self,
        name: &str,
        password: Result<String, PwsError>,
        force: bool,
    ) -> Result<String, PwsError> {
        if !self.is_app_user(name) {
            // An end user needs the app user's key, not a password.
            return Err(PwsError(if self.end_user(name).is_some() {
                100
            } else {
                113
            }));
        }
        let password = password?;
        if password.is_empty() {
            return Err(PwsError(111));
        }
        if password != self.app_password {
            return Err(PwsError(114));
        }
        Ok(self.login(Principal::App, None, force))
    }

    /// End-user login by proxy with the app user's key (§3.2).
    pub fn login_end(
        &mut self,
        app_key: &str,
        name: &str,
        force: bool,
    ) -> Result<String, PwsError> {
        match self.sessions.get(app_key) {
            None => return Err(PwsError(101)),
            Some(s) if s.principal != Principal::App => return Err(PwsError(141)),
            Some(_) => {}
        }
        let u = self.end_user(name).ok_or(PwsError(113))?;
        Ok(self.login(Principal::End(u), Some(app_key.to_owned()), force))
    }

    fn principal_name(&self, p: Principal) -> &str {
        match p {
            Principal::App => &self.app_user,
            Principal::End(u) => &self.users[u as usize].name,
        }
    }

    /// Logout (§3.4): the key must belong to the user in the path. Destroys what the session
    /// created; an app user's logout also logs out the end users it logged in.
    pub fn logout(&mut self, key: Option<&str>, name: &str) -> Result<(), PwsError> {
        let key = key.ok_or(PwsError(100))?;
        let s = self.sessions.get(key).ok_or(PwsError(101))?;
        if !self.principal_name(s.principal).eq_ignore_ascii_case(name) {
            return Err(PwsError(101));
        }
        let mut doomed = vec![key.to_owned()];
        if s.principal == Principal::App {
            doomed.extend(
                self.sessions
                    .iter()
                    .filter(|(_, c)| c.parent.as_deref() == Some(key))
                    .map(|(k, _)| k.clone()),
            );
        }
        for k in doomed {
            if let Some(s) = self.sessions.remove(&k) {
                if self.current.get(&s.principal) == Some(&k) {
                    self.current.remove(&s.principal);
                }
            }
            self.endpoints.retain(|_, e| e.creator != k);
            let subs: Vec<u64> = self
                .subs
                .iter()
                .filter(|(_, s)| s.creator == k)
                .map(|(id, _)| *id)
                .collect();
            for sid in subs {
                self.remove_sub(sid);
            }
        }
        Ok(())
    }

    /// An app-user key is required (100 / 101 / 141).
    pub fn app_session(&self, key: Option<&str>) -> Result<(), PwsError> {
        let key = key.ok_or(PwsError(100))?;
        match self.sessions.get(key) {
            None => Err(PwsError(101)),
            Some(s) if s.principal != Principal::App => Err(PwsError(141)),
            Some(_) => Ok(()),
        }
    }

    /// An end-user key of the user in the path is required (100 / 101 / 140). A valid key of
    /// another end user counts as invalid for this path (101).
    pub fn end_session(&self, key: Option<&str>, name: &str) -> Result<u32, PwsError> {
        let key = key.ok_or(PwsError(100))?;
        match self.sessions.get(key).map(|s| s.principal) {
            None => Err(PwsError(101)),
            Some(Principal::App) => Err(PwsError(140)),
            Some(Principal::End(u)) if self.users[u as usize].name.eq_ignore_ascii_case(name) => {
                Ok(u)
            }
            Some(Principal::End(_)) => Err(PwsError(101)),
        }
    }

    // ---------------------------------------------------------------- endpoints

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn live_endpoint(&mut self, id: u64, now: Instant) -> Option<&mut Endpoint> {
        if self.endpoints.get(&id).is_some_and(|e| e.expires <= now) {
            self.endpoints.remove(&id);
        }
        self.endpoints.get_mut(&id)
    }

    pub fn register_endpoint(
        &mut self,
        key: Option<&str>,
        req: Result<(String, u64), PwsError>,
        now: Instant,
    ) -> Result<u64, PwsError> {
        self.app_session(key)?;
        let (url, expiry) = req?;
        if self.endpoints.len() >= self.max_endpoints {
            self.endpoints.retain(|_, e| e.expires > now);
            if self.endpoints.len() >= self.max_endpoints {
                return Err(PwsError(138));
            }
        }
        let id = self.next_id();
        self.endpoints.insert(
            id,
            Endpoint {
                url,
                expires: now + Duration::from_secs(expiry),
                creator: key.unwrap_or_default().to_owned(),
            },
        );
        bump(&self.counters.endpoints);
        Ok(id)
    }

    pub fn refresh_endpoint(
        &mut self,
        key: Option<&str>,
        id: u64,
        expiry: Result<u64, PwsError>,
        now: Instant,
    ) -> Result<(), PwsError> {
        self.app_session(key)?;
        let expiry = expiry?;
        let e = self.live_endpoint(id, now).ok_or(PwsError(132))?;
        e.expires = now + Duration::from_secs(expiry);
        Ok(())
    }

    pub fn unregister_endpoint(
        &mut self,
        key: Option<&str>,
        id: u64,
        now: Instant,
    ) -> Result<(), PwsError> {
        self.app_session(key)?;
        self.live_endpoint(id, now).ok_or(PwsError(132))?;
        self.endpoints.remove(&id);
        Ok(())
    }

    // ---------------------------------------------------------------- subscriptions

    fn remove_sub(&mut self, sid: u64) {
        if let Some(sub) = self.subs.remove(&sid) {
            for c in &sub.contacts {
                if let Some(u) = c.user {
                    self.users[u as usize].watchers.retain(|(s, _)| *s != sid);
                }
            }
        }
    }

    /// The subscription if it exists, has not expired and belongs to `owner` (133 / 137).
    fn owned_sub(
        &mut self,
        sid: u64,
        owner: u32,
        now: Instant,
    ) -> Result<&mut Subscription, PwsError> {
        match self.subs.get(&sid) {
            None => return Err(PwsError(133)),
            Some(s) if s.expires <= now => {
                self.remove_sub(sid);
                return Err(PwsError(133));
            }
            Some(s) if s.owner != owner => return Err(PwsError(137)),
            Some(_) => {}
        }
        Ok(self.subs.get_mut(&sid).expect("checked above"))
    }

    /// Adds contacts not yet in the subscription, flags them changed; returns how many.
    fn add_contacts(&mut self, sid: u64, contacts: Vec<String>) -> usize {
        let mut added = 0;
        let Some(sub) = self.subs.get_mut(&sid) else {
            return 0;
        };
        for uri in contacts {
            let norm = normalise_uri(&uri);
            if !sub.keys.insert(norm.clone()) {
                continue;
            }
            let user = self.by_uri.get(&norm).copied();
            let pos = sub.contacts.len() as u32;
            sub.contacts.push(Contact { uri, user });
            sub.changed_flag.push(true);
            sub.changed.push(pos);
            if let Some(u) = user {
                self.users[u as usize].watchers.push((sid, pos));
            }
            added += 1;
        }
        added
    }

    fn distinct(contacts: &[String]) -> usize {
        contacts
            .iter()
            .map(|c| normalise_uri(c))
            .collect::<HashSet<_>>()
            .len()
    }

    /// Subscribe (§3.8): all contacts start changed and a notification goes out at once.
    pub fn subscribe(
        &mut self,
        key: Option<&str>,
        name: &str,
        req: Result<SubscribeReq, PwsError>,
        now: Instant,
        out: &mut Vec<Notice>,
    ) -> Result<u64, PwsError> {
        let owner = self.end_session(key, name)?;
        let req = req?;
        let contacts = req.contacts.ok_or(PwsError(146))?;
        let n = Self::distinct(&contacts);
        if n == 0 || n > self.max_contacts {
            return Err(PwsError(135));
        }
        let ep = req.endpoint.ok_or(PwsError(132))?;
        self.live_endpoint(ep, now).ok_or(PwsError(132))?;
        let expiry = check_expiry(req.expiry.unwrap_or(DEFAULT_EXPIRY))?;
        if self.subs.len() >= self.max_subscriptions {
            let expired: Vec<u64> = self
                .subs
                .iter()
                .filter(|(_, s)| s.expires <= now)
                .map(|(id, _)| *id)
                .collect();
            for sid in expired {
                self.remove_sub(sid);
            }
            if self.subs.len() >= self.max_subscriptions {
                return Err(PwsError(139));
            }
        }
        let sid = self.next_id();
        self.subs.insert(
            sid,
            Subscription {
                owner,
                creator: key.unwrap_or_default().to_owned(),
                endpoint: ep,
                expires: now + Duration::from_secs(expiry),
                contacts: Vec::with_capacity(n),
                keys: HashSet::with_capacity(n),
                changed_flag: Vec::with_capacity(n),
                changed: Vec::with_capacity(n),
                waiting: false,
            },
        );
        self.add_contacts(sid, contacts);
        bump(&self.counters.subscriptions);
        self.notify_if_idle(sid, now, out);
        Ok(sid)
    }

    /// Add contacts and/or refresh the expiry (§3.9). Expiry 0 or absent keeps the old one.
    pub fn update_subscription(
        &mut self,
        key: Option<&str>,
        name: &str,
        sid: u64,
        req: Result<SubscribeReq, PwsError>,
        now: Instant,
        out: &mut Vec<Notice>,
    ) -> Result<(), PwsError> {
        let owner = self.end_session(key, name)?;
        let req = req?;
        let max = self.max_contacts;
        self.owned_sub(sid, owner, now)?;
        let expiry = req.expiry.filter(|e| *e != 0);
        let contacts = req.contacts.unwrap_or_default();
        if expiry.is_none() && contacts.is_empty() {
            return Err(PwsError(145));
        }
        let expiry = expiry.map(check_expiry).transpose()?;
        if let Some(ep) = req.endpoint {
            self.live_endpoint(ep, now).ok_or(PwsError(132))?;
        }
        let sub = self.subs.get_mut(&sid).expect("checked by owned_sub");
        let new = contacts
            .iter()
            .map(|c| normalise_uri(c))
            .filter(|k| !sub.keys.contains(k))
            .collect::<HashSet<_>>()
            .len();
        if sub.contacts.len() + new > max {
            return Err(PwsError(135));
        }
        if let Some(ep) = req.endpoint {
            sub.endpoint = ep;
        }
        if let Some(e) = expiry {
            sub.expires = now + Duration::from_secs(e);
        }
        if self.add_contacts(sid, contacts) > 0 {
            self.notify_if_idle(sid, now, out);
        }
        Ok(())
    }

    pub fn unsubscribe(
        &mut self,
        key: Option<&str>,
        name: &str,
        sid: u64,
        now: Instant,
    ) -> Result<(), PwsError> {
        let owner = self.end_session(key, name)?;
        self.owned_sub(sid, owner, now)?;
        self.remove_sub(sid);
        Ok(())
    }

    /// If the subscription has changes and is not waiting: mark it waiting and send (or,
    /// when the endpoint is gone or callbacks are off, count a suppressed notification).
    fn notify_if_idle(&mut self, sid: u64, now: Instant, out: &mut Vec<Notice>) {
        let Some(sub) = self.subs.get_mut(&sid) else {
            return;
        };
        if sub.waiting || sub.changed.is_empty() {
            return;
        }
        sub.waiting = true;
        let ep = sub.endpoint;
        if let Some(n) = notice(
            &self.endpoints,
            &self.counters,
            self.cpu_throttle || self.drop_callbacks,
            sid,
            ep,
            now,
        ) {
            out.push(n);
        }
    }

    /// getSubscribedPresence (§3.11): the changed contacts, then the set is empty and the
    /// subscription may notify again.
    pub fn fetch(
        &mut self,
        key: Option<&str>,
        name: &str,
        sid: u64,
        rich: bool,
        now: Instant,
    ) -> Result<String, PwsError> {
        let owner = self.end_session(key, name)?;
        self.check_cpu()?;
        self.owned_sub(sid, owner, now)?;
        let sub = self.subs.get_mut(&sid).expect("checked by owned_sub");
        let changed = std::mem::take(&mut sub.changed);
        sub.waiting = false;
        let mut out = list_open(rich, changed.len());
        for &pos in &changed {
            sub.changed_flag[pos as usize] = false;
            let c = &sub.contacts[pos as usize];
            write_contact(&mut out, &self.users, &c.uri, c.user, rich);
        }
        // Give the (now empty) buffer back to avoid reallocating on the next change burst.
        let mut changed = changed;
        changed.clear();
        sub.changed = changed;
        bump(&self.counters.fetches);
        Ok(list_close(out, rich))
    }

    /// Polled presence of one contact (§3.12).
    pub fn poll(
        &mut self,
        key: Option<&str>,
        name: &str,
        contact: &str,
        rich: bool,
    ) -> Result<String, PwsError> {
        self.end_session(key, name)?;
        if !valid_uri(contact) {
            return Err(PwsError(124));
        }
        let user = self.by_uri.get(&normalise_uri(contact)).copied();
        let mut out = list_open(rich, 1);
        write_contact(&mut out, &self.users, contact, user, rich);
        bump(&self.counters.polls);
        Ok(list_close(out, rich))
    }

    // ---------------------------------------------------------------- presence changes

    /// A watched user's state changed: flag it everywhere and notify idle subscriptions.
    fn changed(&mut self, user: u32, now: Instant, out: &mut Vec<Notice>) {
        bump(&self.counters.changes);
        let watchers = std::mem::take(&mut self.users[user as usize].watchers);
        let suppress = self.cpu_throttle || self.drop_callbacks;
        let mut expired = Vec::new();
        for &(sid, pos) in &watchers {
            let Some(sub) = self.subs.get_mut(&sid) else {
                continue;
            };
            if sub.expires <= now {
                expired.push(sid);
                continue;
            }
            let flag = &mut sub.changed_flag[pos as usize];
            if !*flag {
                *flag = true;
                sub.changed.push(pos);
            }
            if !sub.waiting {
                sub.waiting = true;
                if let Some(n) = notice(
                    &self.endpoints,
                    &self.counters,
                    suppress,
                    sid,
                    sub.endpoint,
                    now,
                ) {
                    out.push(n);
                }
            }
        }
        self.users[user as usize].watchers = watchers;
        for sid in expired {
            self.remove_sub(sid);
        }
    }

    /// A change from the user's own client (handle, control API, random generator).
    pub fn set_client(&mut self, user: u32, state: State, now: Instant, out: &mut Vec<Notice>) {
        self.users[user as usize].presence.set_client(state);
        self.changed(user, now, out);
    }

    pub fn user_by_uri(&self, uri: &str) -> Option<u32> {
        self.by_uri.get(&normalise_uri(uri)).copied()
    }

    pub fn basic_of(&self, user: u32) -> Basic {
        self.users[user as usize].presence.effective().basic
    }

    pub fn pidf_of(&self, user: u32) -> String {
        let u = &self.users[user as usize];
        let mut s = String::new();
        presence::write_pidf(&mut s, &u.uri, &u.name, Some(&u.presence));
        s
    }

    /// Set presence through PWS (§3.13, §3.14) for the user owning the key.
    pub fn set_presence(
        &mut self,
        key: Option<&str>,
        name: &str,
        req: Result<SetReq, PwsError>,
        now: Instant,
        out: &mut Vec<Notice>,
    ) -> Result<(), PwsError> {
        let user = self.end_session(key, name)?;
        let req = req?;
        let p = &mut self.users[user as usize].presence;
        match req {
            SetReq::Basic { basic, override_ } => p.set_pws(PwsLayer {
                state: State::basic(basic),
                override_,
                tuple_id: if override_ {
                    "pws-override"
                } else {
                    "cisco-pws"
                }
                .into(),
            }),
            SetReq::Rich(RichSet::Set(layer)) => p.set_pws(layer),
            SetReq::Rich(RichSet::Clear) => p.clear_pws(),
        }
        bump(&self.counters.sets);
        self.changed(user, now, out);
        Ok(())
    }

    /// Picks a random user and a random client state (the change generator).
    pub fn random_change(&mut self, rng: &mut fastrand::Rng, now: Instant, out: &mut Vec<Notice>) {
        if self.users.is_empty() {
            return;
        }
        let user = rng.u32(..self.users.len() as u32);
        let state = presence::random_state(rng);
        self.set_client(user, state, now, out);
    }
}

pub fn user_name(n: u32) -> String {
    format!("user{n:05}")
}

/// `user@domain` without spaces or angle brackets; a `sip:` prefix is tolerated.
pub fn valid_uri(uri: &str) -> bool {
    let u = uri.strip_prefix("sip:").unwrap_or(uri);
    let mut parts = u.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !u
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

fn notice(
    endpoints: &HashMap<u64, Endpoint>,
    counters: &Counters,
    suppress: bool,
    sid: u64,
    ep: u64,
    now: Instant,
) -> Option<Notice> {
    let e = endpoints.get(&ep).filter(|e| e.expires > now);
    match e {
        Some(e) if !suppress => {
            bump(&counters.notifications);
            let sep = if e.url.contains('?') { '&' } else { '?' };
            Some(Notice {
                sid,
                url: format!("{}{sep}id={sid}&eventType=PRESENCE_NOTIFICATION", e.url),
            })
        }
        _ => {
            bump(&counters.callbacks_suppressed);
            None
        }
    }
}

const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

fn list_open(rich: bool, n: usize) -> String {
    let mut s = String::with_capacity(96 + n * if rich { 900 } else { 80 });
    s.push_str(XML_DECL);
    s.push_str(if rich {
        "<presenceList type=\"rich\">"
    } else {
        "<presenceList type=\"basic\">"
    });
    s
}

fn list_close(mut s: String, rich: bool) -> String {
    let open_len = XML_DECL.len()
        + if rich {
            "<presenceList type=\"rich\">".len()
        } else {
            "<presenceList type=\"basic\">".len()
        };
    if s.len() == open_len {
        // No changes: an empty list element.
        s.truncate(s.len() - 1);
        s.push_str("/>");
    } else {
        s.push_str("</presenceList>");
    }
    s
}

fn write_contact(out: &mut String, users: &[User], uri: &str, user: Option<u32>, rich: bool) {
    let u = user.map(|u| &users[u as usize]);
    if rich {
        let id = u.map_or("", |u| u.name.as_str());
        presence::write_pidf(out, uri, id, u.map(|u| &u.presence));
    } else {
        let basic = u.map_or(Basic::Unknown, |u| u.presence.effective().basic);
        presence::write_basic_contact(out, uri, basic);
    }
}
