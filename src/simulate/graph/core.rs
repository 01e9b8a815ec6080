//! The simulator state and every operation on it, synchronous, behind one mutex.
//! Outgoing webhook POSTs are queued on a channel for the notifier task.

use super::util::{floor_secs, graph_time, guid};
use super::GraphSimConfig;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc::UnboundedSender;

/// Maximum ids per getPresencesByUserId and per subscription.
pub const MAX_IDS: usize = 650;
/// Subscription lifetime bounds (§3.2).
pub const MIN_LIFETIME: Duration = Duration::from_secs(45 * 60);
pub const MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// `reauthorizationRequired` is sent this long before a subscription expires.
pub const REAUTH_LEAD: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub token_failures: AtomicU64,
    pub reads: AtomicU64,
    pub throttled: AtomicU64,
    pub subscriptions_created: AtomicU64,
    pub validations_ok: AtomicU64,
    pub validations_failed: AtomicU64,
    pub changes: AtomicU64,
    pub notifications_queued: AtomicU64,
    pub notifications_dropped: AtomicU64,
    pub notification_posts: AtomicU64,
    pub notification_acks: AtomicU64,
    pub notification_failures: AtomicU64,
    pub lifecycle_queued: AtomicU64,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A Graph error (§6): status, `error.code`, `error.message`, optional `Retry-After`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct GraphError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<String>,
}

pub fn gerr(status: u16, code: &'static str, message: impl Into<String>) -> GraphError {
    GraphError {
        status,
        code,
        message: message.into(),
        retry_after: None,
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub upn: String,
    pub availability: String,
    pub activity: String,
    pub seq: u64,
    /// The Teams client's own state (`set_presence`); `Offline` = no client session.
    pub teams: (String, String),
    /// App presence sessions (`setPresence`).
    pub sessions: Vec<AppSession>,
    /// `setUserPreferredPresence`: (availability, activity, expiry).
    pub preferred: Option<(String, String, SystemTime)>,
}

#[derive(Debug, Clone)]
pub struct AppSession {
    pub id: String,
    pub availability: String,
    pub activity: String,
    pub expires: SystemTime,
    /// When it was last posted (the idle fade counts from here).
    pub set_at: SystemTime,
}

/// An `Available` app session fades to `Available/AvailableInactive` after this long
/// without a new setPresence, and to `Away/Away` after twice this long (§2.3).
pub const IDLE_FADE: Duration = Duration::from_secs(5 * 60);

impl AppSession {
    /// The session's pair after the idle fade.
    pub fn state(&self, now: SystemTime) -> (String, String) {
        let idle = now.duration_since(self.set_at).unwrap_or_default();
        if self.availability == "Available" && idle >= 2 * IDLE_FADE {
            ("Away".into(), "Away".into())
        } else if self.availability == "Available" && idle >= IDLE_FADE {
            ("Available".into(), "AvailableInactive".into())
        } else {
            (self.availability.clone(), self.activity.clone())
        }
    }
}

/// Aggregation rank among sessions (§2.3): DoNotDisturb > Busy > Available > Away.
fn rank(availability: &str) -> u8 {
    match availability {
        "DoNotDisturb" => 5,
        "Busy" | "BusyIdle" => 4,
        "Available" | "AvailableIdle" => 3,
        "Away" | "BeRightBack" => 2,
        "Offline" => 0,
        _ => 1,
    }
}

impl User {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "availability": self.availability,
            "activity": self.activity,
            "statusMessage": null,
            "outOfOfficeSettings": {
                "message": null,
                "isOutOfOffice": self.activity == "OutOfOffice",
            },
            "sequenceNumber": format!("{:020}", self.seq),
        })
    }
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    App,
    /// Delegated, for this user index.
    User(usize),
}

#[derive(Debug, Clone)]
struct Token {
    who: Principal,
    expires: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Sub {
    pub id: String,
    pub creator: usize,
    pub resource: String,
    pub users: Vec<usize>,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expires: SystemTime,
    pub include_resource_data: bool,
    pub encryption_certificate_id: Option<String>,
    /// Public key the rich notifications are encrypted to.
    pub encryption_key: Option<rsa::RsaPublicKey>,
    pub tls: String,
    reauth_sent: bool,
}

/// One queued webhook item.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub url: String,
    pub item: Value,
}

pub struct Core {
    pub users: Vec<User>,
    by_id: HashMap<String, usize>,
    tokens: HashMap<String, Token>,
    refresh: HashMap<String, usize>,
    pub subs: HashMap<String, Sub>,
    reads: VecDeque<SystemTime>,
    pub throttle_next: u32,
    /// Next reads answered `503` with `Retry-After: 2`.
    pub fail_next: u32,
    pub drop_notifications: bool,
    /// Users with app sessions or a preferred presence (they have expiries).
    timed: std::collections::HashSet<usize>,
    seq: u64,
    pub rng: fastrand::Rng,
    pub tenant_id: String,
    pub client_id: String,
    budget: (u32, Duration),
    token_lifetime: Duration,
    out: UnboundedSender<Outgoing>,
    pub counters: std::sync::Arc<Counters>,
}

pub const AVAILABILITIES: [&str; 6] = [
    "Available",
    "Busy",
    "DoNotDisturb",
    "Away",
    "BeRightBack",
    "Offline",
];

/// The Teams pairs a random change picks from (§2.1).
const TEAMS_STATES: [(&str, &str); 10] = [
    ("Available", "Available"),
    ("Busy", "Busy"),
    ("Busy", "InACall"),
    ("Busy", "InAMeeting"),
    ("DoNotDisturb", "DoNotDisturb"),
    ("DoNotDisturb", "Presenting"),
    ("Away", "Away"),
    ("BeRightBack", "BeRightBack"),
    ("Offline", "OffWork"),
    ("Available", "OutOfOffice"),
];

pub fn user_id(n: u32) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("presence-bridge/graph-sim/user/{n}").as_bytes(),
    )
    .to_string()
}

pub fn upn(n: u32, tenant: &str) -> String {
    format!("user{n:05}@{tenant}.onmicrosoft.com")
}

impl Core {
    pub fn new(
        cfg: &GraphSimConfig,
        out: UnboundedSender<Outgoing>,
        counters: std::sync::Arc<Counters>,
    ) -> Core {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let mut users = Vec::new();
        let mut by_id = HashMap::new();
        for n in 1..=cfg.users {
            let (a, act) = TEAMS_STATES[rng.usize(..TEAMS_STATES.len())];
            let u = User {
                id: user_id(n),
                upn: upn(n, &cfg.tenant),
                availability: a.into(),
                activity: act.into(),
                seq: u64::from(n),
                teams: (a.into(), act.into()),
                sessions: Vec::new(),
                preferred: None,
            };
            by_id.insert(u.id.clone(), users.len());
            users.push(u);
        }
        Core {
            seq: u64::from(cfg.users) + 1,
            users,
            by_id,
            tokens: HashMap::new(),
            refresh: HashMap::new(),
            subs: HashMap::new(),
            reads: VecDeque::new(),
            throttle_next: 0,
            fail_next: 0,
            drop_notifications: false,
            timed: Default::default(),
            rng,
            tenant_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, cfg.tenant.as_bytes())
                .to_string(),
            client_id: cfg.client_id.clone(),
            budget: cfg.read_budget,
            token_lifetime: cfg.token_lifetime,
            out,
            counters,
        }
    }

    pub fn user_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(&id.to_ascii_lowercase()).copied()
    }

    pub fn user_by_upn(&self, upn: &str) -> Option<usize> {
        self.users
            .iter()
            .position(|u| u.upn.eq_ignore_ascii_case(upn))
    }

    // ---- tokens ----

    /// Issues an access token (and a refresh token for `refresh`).
    pub fn issue(
        &mut self,
        who: Principal,
        refresh: bool,
        now: SystemTime,
    ) -> (String, Option<String>) {
        if self.tokens.len() > 10_000 {
            self.tokens.retain(|_, t| t.expires > now);
        }
        let tok = format!("eyJ0eXAiOiJKV1QiLCJzaW0iOiJncmFwaCJ9.{}", self.rand_str(64));
        self.tokens.insert(
            tok.clone(),
            Token {
                who: who.clone(),
                expires: now + self.token_lifetime,
            },
        );
        let rt = match (refresh, who) {
            (true, Principal::User(u)) => {
                let rt = format!("0.ARsim.{}", self.rand_str(96));
                self.refresh.insert(rt.clone(), u);
                Some(rt)
            }
            _ => None,
        };
        bump(&self.counters.tokens_issued);
        (tok, rt)
    }

    pub fn redeem_refresh(&mut self, rt: &str) -> Option<usize> {
        self.refresh.get(rt).copied()
    }

    fn rand_str(&mut self, n: usize) -> String {
        (0..n).map(|_| self.rng.alphanumeric()).collect()
    }

    pub fn auth(&self, bearer: Option<&str>, now: SystemTime) -> Result<Principal, GraphError> {
        let Some(b) = bearer else {
            return Err(gerr(
                401,
                "InvalidAuthenticationToken",
                "Access token is empty.",
            ));
        };
        match self.tokens.get(b) {
            Some(t) if t.expires > now => Ok(t.who.clone()),
            Some(_) => Err(gerr(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )),
            None => Err(gerr(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed.",
            )),
        }
    }

    pub fn expire_tokens(&mut self) {
        self.tokens.clear();
    }

    // ---- reads ----

    /// Counts one presence read against the budget (§6); `429` with a fractional
    /// `Retry-After` when it is spent or a throttle was injected.
    pub fn charge_read(&mut self, now: SystemTime) -> Result<(), GraphError> {
        let throttled = |after: String| GraphError {
            retry_after: Some(after),
            ..gerr(
                429,
                "TooManyRequests",
                "Too many requests: the application exceeded its presence read budget.",
            )
        };
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(GraphError {
                retry_after: Some("2".into()),
                ..gerr(
                    503,
                    "ServiceNotAvailable",
                    "The service is temporarily unavailable.",
                )
            });
        }
        if self.throttle_next > 0 {
            self.throttle_next -= 1;
            bump(&self.counters.throttled);
            return Err(throttled("1.5".into()));
        }
        let (limit, window) = self.budget;
        while let Some(&t) = self.reads.front() {
            if now.duration_since(t).unwrap_or_default() >= window {
                self.reads.pop_front();
            } else {
                break;
            }
        }
        if self.reads.len() >= limit as usize {
            let oldest = self.reads.front().copied().unwrap_or(now);
            let wait = (oldest + window)
                .duration_since(now)
                .unwrap_or_default()
                .max(Duration::from_millis(1));
            bump(&self.counters.throttled);
            return Err(throttled(format!("{:.3}", wait.as_secs_f64())));
        }
        self.reads.push_back(now);
        bump(&self.counters.reads);
        Ok(())
    }

    // ---- presence changes ----

    /// Sets a user's state as Teams would; notifies subscribers when the aggregate changed.
    pub fn set_presence(&mut self, u: usize, availability: &str, activity: &str, now: SystemTime) {
        self.users[u].teams = (availability.to_owned(), activity.to_owned());
        self.recompute(u, now);
    }

    /// Recomputes the aggregate (§2.3): preferred presence while any session exists, else
    /// the highest-ranked session (Teams client or app), else `Offline/Offline`.
    pub fn recompute(&mut self, u: usize, now: SystemTime) {
        let user = &mut self.users[u];
        user.sessions.retain(|s| s.expires > now);
        if user.preferred.as_ref().is_some_and(|p| p.2 <= now) {
            user.preferred = None;
        }
        let mut best: Option<(String, String)> = None;
        if user.teams.0 != "Offline" {
            best = Some(user.teams.clone());
        }
        for s in &user.sessions {
            let st = s.state(now);
            if best.as_ref().is_none_or(|b| rank(&st.0) > rank(&b.0)) {
                best = Some(st);
            }
        }
        let (a, act) = match (&user.preferred, best) {
            (Some(p), Some(_)) => (p.0.clone(), p.1.clone()),
            (_, Some(b)) => b,
            (_, None) if user.teams.0 == "Offline" && user.sessions.is_empty() => {
                user.teams.clone()
            }
            _ => ("Offline".to_owned(), "Offline".to_owned()),
        };
        if user.sessions.is_empty() && user.preferred.is_none() {
            self.timed.remove(&u);
        } else {
            self.timed.insert(u);
        }
        if user.availability == a && user.activity == act {
            return;
        }
        user.availability = a;
        user.activity = act;
        user.seq = self.seq;
        self.seq += 1;
        bump(&self.counters.changes);
        self.notify_change(u, now);
    }

    pub fn random_change(&mut self, now: SystemTime) {
        if self.users.is_empty() {
            return;
        }
        let u = self.rng.usize(..self.users.len());
        let (a, act) = TEAMS_STATES[self.rng.usize(..TEAMS_STATES.len())];
        self.set_presence(u, a, act, now);
    }

    fn notify_change(&mut self, u: usize, now: SystemTime) {
        let id = self.users[u].id.clone();
        let mut items = Vec::new();
        for s in self.subs.values() {
            if s.expires <= now || !s.users.contains(&u) {
                continue;
            }
            let res = format!("communications/presences('{id}')");
            // Rich notification: the presence itself, encrypted to the subscriber's key.
            let encrypted = match (&s.encryption_key, s.include_resource_data) {
                (Some(key), true) => {
                    let plain = serde_json::to_vec(&self.users[u].to_json()).unwrap_or_default();
                    crate::connectors::graph::crypto::encrypt(
                        &plain,
                        key,
                        s.encryption_certificate_id.as_deref().unwrap_or(""),
                    )
                    .ok()
                    .and_then(|c| serde_json::to_value(c).ok())
                }
                _ => None,
            };
            let mut item = json!({
                    "subscriptionId": s.id,
                    "clientState": s.client_state,
                    "changeType": "updated",
                    "resource": res,
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.presence",
                        "@odata.id": res,
                        "id": id,
                    },
                    "subscriptionExpirationDateTime": graph_time(s.expires),
                    "tenantId": self.tenant_id,
                    "organizationId": self.tenant_id,
            });
            if let Some(e) = encrypted {
                item["encryptedContent"] = e;
            }
            items.push(Outgoing {
                url: s.notification_url.clone(),
                item,
            });
        }
        for o in items {
            self.send(o, false);
        }
    }

    fn send(&mut self, o: Outgoing, lifecycle: bool) {
        if self.drop_notifications {
            bump(&self.counters.notifications_dropped);
            return;
        }
        bump(if lifecycle {
            &self.counters.lifecycle_queued
        } else {
            &self.counters.notifications_queued
        });
        let _ = self.out.send(o);
    }

    // ---- subscriptions ----

    pub fn new_sub_id(&mut self) -> String {
        guid(&mut self.rng)
    }

    /// The (app, delegated user) already has a live presence subscription.
    pub fn has_sub(&self, creator: usize, now: SystemTime) -> bool {
        self.subs
            .values()
            .any(|s| s.creator == creator && s.expires > now)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn insert_sub(
        &mut self,
        id: String,
        creator: usize,
        resource: String,
        users: Vec<usize>,
        notification_url: String,
        lifecycle_url: Option<String>,
        client_state: Option<String>,
        expires: SystemTime,
        include_resource_data: bool,
        encryption_certificate_id: Option<String>,
        encryption_key: Option<rsa::RsaPublicKey>,
        tls: String,
    ) -> Value {
        let s = Sub {
            encryption_key,
            id: id.clone(),
            creator,
            resource,
            users,
            notification_url,
            lifecycle_url,
            client_state,
            expires: floor_secs(expires),
            include_resource_data,
            encryption_certificate_id,
            tls,
            reauth_sent: false,
        };
        self.subs.insert(id.clone(), s);
        bump(&self.counters.subscriptions_created);
        self.sub_json(&id)
    }

    pub fn sub_json(&self, id: &str) -> Value {
        let s = &self.subs[id];
        json!({
            "id": s.id,
            "resource": s.resource,
            "applicationId": self.client_id,
            "changeType": "updated",
            "clientState": s.client_state,
            "notificationUrl": s.notification_url,
            "notificationQueryOptions": null,
            "lifecycleNotificationUrl": s.lifecycle_url,
            "expirationDateTime": graph_time(s.expires),
            "creatorId": self.users[s.creator].id,
            "includeResourceData": s.include_resource_data,
            "latestSupportedTlsVersion": s.tls,
            "encryptionCertificate": null,
            "encryptionCertificateId": s.encryption_certificate_id,
            "notificationUrlAppId": null,
            "notificationContentType": "application/json",
        })
    }

    /// A live subscription, else `404`.
    pub fn live_sub(&mut self, id: &str, now: SystemTime) -> Result<&mut Sub, GraphError> {
        match self.subs.get_mut(id) {
            Some(s) if s.expires > now => Ok(s),
            _ => Err(gerr(
                404,
                "ResourceNotFound",
                format!("The object was not found. Subscription '{id}' does not exist."),
            )),
        }
    }

    pub fn renew(
        &mut self,
        id: &str,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<Value, GraphError> {
        let s = self.live_sub(id, now)?;
        s.expires = floor_secs(expires);
        s.reauth_sent = false;
        Ok(self.sub_json(id))
    }

    pub fn reauthorize(&mut self, id: &str, now: SystemTime) -> Result<(), GraphError> {
        self.live_sub(id, now)?.reauth_sent = false;
        Ok(())
    }

    pub fn expire_subscriptions(&mut self) {
        self.subs.clear();
    }

    /// Lifecycle item for a subscription.
    fn lifecycle(&mut self, id: &str, kind: &str) {
        let s = &self.subs[id];
        let Some(url) = s.lifecycle_url.clone() else {
            return;
        };
        let item = json!({
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": graph_time(s.expires),
            "tenantId": self.tenant_id,
            "organizationId": self.tenant_id,
            "clientState": s.client_state,
            "lifecycleEvent": kind,
        });
        self.send(Outgoing { url, item }, true);
    }

    /// Emits `kind` for every live subscription; `subscriptionRemoved` also deletes them.
    pub fn emit_lifecycle(&mut self, kind: &str, now: SystemTime) {
        let ids: Vec<String> = self
            .subs
            .values()
            .filter(|s| s.expires > now)
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            self.lifecycle(&id, kind);
            if kind == "subscriptionRemoved" {
                self.subs.remove(&id);
            }
        }
    }

    /// Expires subscriptions and sends `reauthorizationRequired` `REAUTH_LEAD` ahead.
    pub fn run_due(&mut self, now: SystemTime) {
        let timed: Vec<usize> = self.timed.iter().copied().collect();
        for u in timed {
            // Cheap, and only notifies on a real change (expiry or idle fade).
            self.recompute(u, now);
        }
        self.subs.retain(|_, s| s.expires > now);
        let due: Vec<String> = self
            .subs
            .values()
            .filter(|s| !s.reauth_sent && s.expires <= now + REAUTH_LEAD)
            .map(|s| s.id.clone())
            .collect();
        for id in due {
            if let Some(s) = self.subs.get_mut(&id) {
                s.reauth_sent = true;
            }
            self.lifecycle(&id, "reauthorizationRequired");
        }
    }
}
