//! The notifier's state and every decision, synchronous, behind one lock: users and their
//! states, subscriptions, publications, digest nonces, faults and the change log.
//!
//! Requests are parsed (and their Contact resolved) *before* the lock is taken
//! ([`SubscribeReq`], [`PublishReq`]); the methods here only decide, update the state and
//! queue NOTIFYs on the affected dialogs. Starting a dialog's drain task is the caller's
//! job, after the lock is released: every method returns the dialogs to kick.

use super::notify::{Dialog, DialogKey, Job, Kick, Package, Termination};
use super::state::{self, Basic, Call, CallState, Presence, Snapshot};
use crate::connectors::sip::digest::{self, Algorithm};
use crate::connectors::sip::message::{new_tag, EventHeader, NameAddr, SipMessage};
use crate::connectors::sip::stack::Target;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// Changes kept in the change log (oldest dropped first).
pub const CHANGE_LOG: usize = 100_000;
/// How long a digest nonce is good for; an older one gets `stale=true`.
pub const NONCE_TTL: Duration = Duration::from_secs(300);
/// Nonces remembered at most (the oldest are forgotten first).
const MAX_NONCES: usize = 10_000;

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Counters since start.
#[derive(Default)]
pub(crate) struct Counters {
    pub subscribes_initial: AtomicU64,
    pub subscribes_refresh: AtomicU64,
    pub subscribes_unsubscribe: AtomicU64,
    pub subscribes_rejected: AtomicU64,
    pub auth_challenges: AtomicU64,
    pub auth_failures: AtomicU64,
    pub subscriptions_created: AtomicU64,
    pub subscriptions_expired: AtomicU64,
    pub subscriptions_dropped: AtomicU64,
    pub subscriptions_terminated: AtomicU64,
    pub notifies_sent: AtomicU64,
    pub notifies_failed: AtomicU64,
    pub notifies_coalesced: AtomicU64,
    pub changes: AtomicU64,
    pub publishes: AtomicU64,
    pub publishes_rejected: AtomicU64,
    pub other_requests: AtomicU64,
}

/// One state change, as the change log keeps it. A benchmark matches these with the
/// events the bridge publishes: by `(user, seq)` through the note stamp (see
/// [`super::SipSimConfig::stamp_notes`]) or by user and time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRecord {
    /// 1, 2, 3… over all users and packages.
    pub seq: u64,
    /// `user0001@example.com`.
    pub user: String,
    pub package: Package,
    /// `open busy "In a call"`, `ringing`, `published`, `mwi 2/8`.
    pub summary: String,
    /// When the change was made (wall clock, Unix milliseconds); also the PIDF
    /// `timestamp` of a presence change.
    pub unix_ms: u64,
    /// The same instant on the monotonic clock, for in-process latency measurement.
    #[serde(skip)]
    pub at: Instant,
}

/// A PUBLISHed presence document (reference §7.2).
pub(crate) struct Publication {
    pub etag: String,
    pub doc: Arc<str>,
    pub at: SystemTime,
    pub expires_at: Instant,
}

pub(crate) struct User {
    pub name: String,
    /// `name@domain`, lowercased.
    pub aor: String,
    /// The simulated client's own state (`None`: nothing published).
    pub presence: Option<Presence>,
    pub presence_at: SystemTime,
    /// `presence` rendered once per change, shared by every NOTIFY.
    own_doc: Option<Arc<str>>,
    pub call: Option<Call>,
    pub mwi: (u32, u32),
    pub publications: Vec<Publication>,
    pub watchers: Vec<DialogKey>,
}

impl User {
    /// The document watchers see: the newest of the simulated client's state and the live
    /// PUBLISHed documents. (Kamailio composes tuples and persons of all publications;
    /// "newest document wins" is the simplification, see the module docs.)
    fn presence_snapshot(&self) -> Snapshot {
        let own = self.own_doc.as_ref().map(|d| (self.presence_at, d));
        let newest = self
            .publications
            .iter()
            .map(|p| (p.at, &p.doc))
            .chain(own)
            .max_by_key(|(at, _)| *at);
        match newest {
            Some((_, doc)) => Snapshot::Pidf(doc.clone()),
            None => Snapshot::Empty,
        }
    }

    fn snapshot(&self, package: Package) -> Snapshot {
        match package {
            Package::Presence => self.presence_snapshot(),
            Package::Dialog => Snapshot::Dialog {
                entity: format!("sip:{}", self.aor).into(),
                call: self.call.clone(),
            },
            Package::MessageSummary => {
                Snapshot::Mwi(state::message_summary(&self.aor, self.mwi.0, self.mwi.1).into())
            }
        }
    }
}

pub(crate) struct Sub {
    pub user: usize,
    pub dialog: Arc<Dialog>,
    /// The subscriber's tag (From of its SUBSCRIBEs).
    pub from_tag: String,
    /// CSeq of the last SUBSCRIBE in the dialog.
    pub last_cseq: u32,
    pub expires_at: Instant,
}

/// Digest settings and the nonces issued.
pub(crate) struct Auth {
    pub realm: String,
    pub algorithm: Algorithm,
    pub accounts: HashMap<String, String>,
    nonces: HashMap<String, Instant>,
}

impl Auth {
    pub fn new(realm: String, algorithm: Algorithm, accounts: HashMap<String, String>) -> Self {
        Auth {
            realm,
            algorithm,
            accounts,
            nonces: HashMap::new(),
        }
    }
}

/// Faults that change how requests are answered.
#[derive(Default)]
pub(crate) struct Faults {
    /// SUBSCRIBE and PUBLISH get 503 until then.
    pub unavailable_until: Option<Instant>,
    /// `Retry-After` of those 503s.
    pub retry_after: u32,
    /// The initial NOTIFY goes out (and is answered) before the 200.
    pub notify_before_ok: bool,
}

/// Expires limits (seconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub min: u32,
    pub max: u32,
    pub default: u32,
}

/// A SUBSCRIBE, parsed.
pub(crate) struct SubscribeReq {
    pub call_id: String,
    /// The From header value as sent (our NOTIFYs' To).
    pub from_raw: String,
    pub from_tag: String,
    pub to: NameAddr,
    pub to_tag: Option<String>,
    pub cseq: u32,
    pub event: EventHeader,
    pub package: Package,
    pub expires: Option<u32>,
    /// The presentity from the Request-URI, then the To URI.
    pub aors: Vec<String>,
    /// The subscriber's Contact URI and where NOTIFYs for it go.
    pub contact: Option<(String, Target)>,
    pub record_route: Vec<String>,
    /// Our Contact header value for the transport the request came on.
    pub our_contact: String,
}

/// What the SUBSCRIBE handler does next.
pub(crate) struct Decision {
    pub response: SipMessage,
    /// Held dialog to release once the response is out (or before, with `early`).
    pub dialog: Option<Arc<Dialog>>,
    /// NOTIFY before the 200 (fault): fires when that NOTIFY's transaction is over.
    pub early: Option<oneshot::Receiver<()>>,
}

impl Decision {
    fn reply(response: SipMessage) -> Decision {
        Decision {
            response,
            dialog: None,
            early: None,
        }
    }
}

/// A PUBLISH, parsed.
pub(crate) struct PublishReq {
    pub aors: Vec<String>,
    pub event: Option<EventHeader>,
    pub expires: Option<u32>,
    pub if_match: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A response to `req` with a To tag (RFC 3261 §8.2.6.2: every final response to a
/// request outside a dialog carries one).
pub(crate) fn reply(req: &SipMessage, code: u16, reason: &str) -> SipMessage {
    let mut r = SipMessage::response_to(req, code, reason);
    if let Some(to) = req.to_hdr() {
        if to.tag().is_none() {
            r.set("To", to.to_string_with_tag(&new_tag()));
        }
    }
    r
}

pub(crate) struct Core {
    pub users: Vec<User>,
    by_aor: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    pub subs: HashMap<DialogKey, Sub>,
    pub domain: String,
    /// Our SIP address's host, also accepted as the domain of a presentity.
    local_host: String,
    pub limits: Limits,
    pub packages: Vec<Package>,
    pub faults: Faults,
    pub auth: Option<Auth>,
    counters: Arc<Counters>,
    seq: u64,
    log: VecDeque<ChangeRecord>,
    etags: u64,
    peers: fastrand::Rng,
}

/// The state pool the random generator and the initial states draw from:
/// `(basic, activity, note)`.
pub(crate) const RANDOM_STATES: &[(Basic, Option<&str>, Option<&str>)] = &[
    (Basic::Open, None, None),
    (Basic::Open, Some("busy"), None),
    (Basic::Open, Some("away"), None),
    (Basic::Open, Some("on-the-phone"), None),
    (Basic::Open, Some("meeting"), Some("In a meeting")),
    (Basic::Open, Some("lunch"), None),
    (Basic::Open, Some("busy"), Some("Do Not Disturb")),
    (Basic::Open, Some("away"), Some("Be Right Back")),
    (Basic::Open, Some("vacation"), Some("Out of office")),
    (Basic::Closed, None, None),
];

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        names: Vec<String>,
        domain: &str,
        local_host: &str,
        limits: Limits,
        packages: Vec<Package>,
        auth: Option<Auth>,
        seed: u64,
        counters: Arc<Counters>,
    ) -> Core {
        let domain = domain.trim().to_ascii_lowercase();
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5349_5053_494d);
        let now = SystemTime::now();
        let mut users = Vec::with_capacity(names.len());
        let mut by_aor = HashMap::new();
        let mut by_name = HashMap::new();
        for name in names {
            let lname = name.to_ascii_lowercase();
            if by_name.contains_key(&lname) {
                continue;
            }
            let aor = format!("{lname}@{domain}");
            let (b, a, n) = RANDOM_STATES[rng.usize(..RANDOM_STATES.len())];
            let presence = Presence::new(b, a, n);
            let doc = state::pidf(&name, &domain, &presence, now);
            by_aor.insert(aor.clone(), users.len());
            by_name.insert(lname, users.len());
            users.push(User {
                name,
                aor,
                presence: Some(presence),
                presence_at: now,
                own_doc: Some(doc.into()),
                call: None,
                mwi: (0, 0),
                publications: Vec::new(),
                watchers: Vec::new(),
            });
        }
        Core {
            users,
            by_aor,
            by_name,
            subs: HashMap::new(),
            domain,
            local_host: local_host.to_ascii_lowercase(),
            limits,
            packages,
            faults: Faults::default(),
            auth,
            counters,
            seq: 0,
            log: VecDeque::new(),
            etags: 0,
            peers: fastrand::Rng::with_seed(seed.wrapping_add(17)),
        }
    }

    /// A user by `user@host` (any case); the host must be the domain or our own address.
    pub fn user(&self, aor: &str) -> Option<usize> {
        let aor = aor.trim().to_ascii_lowercase();
        let aor = aor.strip_prefix("sip:").unwrap_or(&aor);
        if let Some(&u) = self.by_aor.get(aor) {
            return Some(u);
        }
        let (name, host) = aor.split_once('@')?;
        (host == self.local_host).then(|| self.by_name.get(name).copied())?
    }

    /// The document a presence NOTIFY for user `u` would carry now.
    pub fn presence_snapshot(&self, u: usize) -> Snapshot {
        self.users[u].presence_snapshot()
    }

    // -----------------------------------------------------------------------------------
    // State changes

    fn record(&mut self, u: usize, package: Package, summary: String, at: SystemTime) -> u64 {
        self.seq += 1;
        bump(&self.counters.changes);
        if self.log.len() == CHANGE_LOG {
            self.log.pop_front();
        }
        self.log.push_back(ChangeRecord {
            seq: self.seq,
            user: self.users[u].aor.clone(),
            package,
            summary,
            unix_ms: unix_ms(at),
            at: Instant::now(),
        });
        self.seq
    }

    /// The sequence number the next change will get.
    pub fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    /// Queues the current state of `package` on every watcher of user `u`.
    fn notify_watchers(&mut self, u: usize, package: Package, kicks: &mut Vec<Arc<Dialog>>) {
        let snapshot = self.users[u].snapshot(package);
        for key in &self.users[u].watchers {
            let Some(sub) = self.subs.get(key) else {
                continue;
            };
            if sub.dialog.package != package {
                continue;
            }
            let (_, coalesced, kick) = sub.dialog.push(Job::active(snapshot.clone()));
            if coalesced {
                bump(&self.counters.notifies_coalesced);
            }
            if let Kick::Start = kick {
                kicks.push(sub.dialog.clone());
            }
        }
    }

    /// The simulated client publishes `p` (`None`: removes its publication, watchers get
    /// an empty NOTIFY unless a PUBLISHed document remains).
    pub fn set_presence(&mut self, u: usize, p: Option<Presence>) -> (u64, Vec<Arc<Dialog>>) {
        let now = SystemTime::now();
        let user = &mut self.users[u];
        user.own_doc = p
            .as_ref()
            .map(|p| state::pidf(&user.name, &self.domain, p, now).into());
        let summary = p
            .as_ref()
            .map_or_else(|| "unpublished".to_string(), Presence::summary);
        user.presence = p;
        user.presence_at = now;
        let seq = self.record(u, Package::Presence, summary, now);
        let mut kicks = Vec::new();
        self.notify_watchers(u, Package::Presence, &mut kicks);
        (seq, kicks)
    }

    /// The user's telephony state becomes `to`. `None` when nothing changed.
    pub fn set_call(&mut self, u: usize, to: CallState) -> Option<(u64, Vec<Arc<Dialog>>)> {
        let peers = &mut self.peers;
        let domain = &self.domain;
        let call = Call::transition(self.users[u].call.as_ref(), to, || {
            format!("sip:ext{}@{domain}", peers.u32(100..1000))
        })?;
        self.users[u].call = Some(call);
        let seq = self.record(
            u,
            Package::Dialog,
            to.as_str().to_string(),
            SystemTime::now(),
        );
        let mut kicks = Vec::new();
        self.notify_watchers(u, Package::Dialog, &mut kicks);
        Some((seq, kicks))
    }

    pub fn set_mwi(&mut self, u: usize, new: u32, old: u32) -> (u64, Vec<Arc<Dialog>>) {
        self.users[u].mwi = (new, old);
        let seq = self.record(
            u,
            Package::MessageSummary,
            format!("mwi {new}/{old}"),
            SystemTime::now(),
        );
        let mut kicks = Vec::new();
        self.notify_watchers(u, Package::MessageSummary, &mut kicks);
        (seq, kicks)
    }

    /// One random change: a presence change (3 in 4) or the next step of a call.
    /// With `stamp`, the note carries the change's sequence number and time.
    pub fn random_change(
        &mut self,
        rng: &mut fastrand::Rng,
        stamp: bool,
    ) -> (u64, Vec<Arc<Dialog>>) {
        let u = rng.usize(..self.users.len());
        if rng.u8(..4) == 0 {
            let live = self.users[u]
                .call
                .as_ref()
                .map_or(CallState::Idle, |c| c.state);
            let to = match live {
                CallState::Idle if rng.bool() => CallState::Ringing,
                CallState::Idle => CallState::Dialing,
                CallState::Ringing | CallState::Dialing if rng.u8(..3) > 0 => CallState::InCall,
                CallState::Ringing | CallState::Dialing | CallState::InCall => CallState::Idle,
            };
            if let Some(r) = self.set_call(u, to) {
                return r;
            }
        }
        let current = self.users[u].presence.clone();
        let mut p = loop {
            let (b, a, n) = RANDOM_STATES[rng.usize(..RANDOM_STATES.len())];
            let p = Presence::new(b, a, n);
            if Some(&p) != current.as_ref() || stamp {
                break p;
            }
        };
        if stamp {
            let tag = format!("[#{} @{}]", self.next_seq(), unix_ms(SystemTime::now()));
            p.note = Some(match p.note {
                Some(n) => format!("{n} {tag}"),
                None => tag,
            });
        }
        self.set_presence(u, Some(p))
    }

    /// Changes with `seq > after`, oldest first (at most what the log still holds).
    pub fn changes_since(&self, after: u64) -> Vec<ChangeRecord> {
        let start = self.log.partition_point(|c| c.seq <= after);
        self.log.range(start..).cloned().collect()
    }

    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    // -----------------------------------------------------------------------------------
    // Subscriptions

    /// Removes a subscription (no NOTIFY); returns its dialog.
    fn unlink(&mut self, key: &DialogKey) -> Option<Sub> {
        let sub = self.subs.remove(key)?;
        self.users[sub.user].watchers.retain(|k| k != key);
        Some(sub)
    }

    /// Ends a subscription with a final NOTIFY.
    fn terminate_sub(&mut self, key: &DialogKey, end: Termination, kicks: &mut Vec<Arc<Dialog>>) {
        let Some(sub) = self.unlink(key) else {
            return;
        };
        let snapshot = self.users[sub.user].snapshot(sub.dialog.package);
        if let (_, _, Kick::Start) = sub.dialog.push(Job::terminated(snapshot, end)) {
            kicks.push(sub.dialog);
        }
    }

    pub fn subscribe(&mut self, msg: &SipMessage, req: SubscribeReq, now: Instant) -> Decision {
        if !self.packages.contains(&req.package) {
            return Decision::reply(self.bad_event(msg));
        }
        match req.to_tag.clone() {
            None => self.initial(msg, req, now),
            Some(tag) => self.in_dialog(msg, req, tag, now),
        }
    }

    /// 489 with the packages we serve.
    pub fn bad_event(&self, msg: &SipMessage) -> SipMessage {
        let mut r = reply(msg, 489, "Bad Event");
        let allow: Vec<&str> = self.packages.iter().map(|p| p.as_str()).collect();
        r.add("Allow-Events", allow.join(", "));
        r
    }

    /// Granted duration, or the 423 to send.
    fn granted(&self, msg: &SipMessage, requested: Option<u32>) -> Result<u32, SipMessage> {
        let e = requested.unwrap_or(self.limits.default);
        if e != 0 && e < self.limits.min {
            let mut r = reply(msg, 423, "Interval Too Brief");
            r.add("Min-Expires", self.limits.min.to_string());
            return Err(r);
        }
        Ok(e.min(self.limits.max))
    }

    fn ok(&self, msg: &SipMessage, req: &SubscribeReq, to: String, granted: u32) -> SipMessage {
        let mut r = SipMessage::response_to(msg, 200, "OK");
        r.set("To", to);
        for rr in &req.record_route {
            r.add("Record-Route", rr.as_str());
        }
        r.add("Contact", req.our_contact.as_str());
        r.add("Expires", granted.to_string());
        r
    }

    fn initial(&mut self, msg: &SipMessage, req: SubscribeReq, now: Instant) -> Decision {
        let Some(u) = req.aors.iter().find_map(|a| self.user(a)) else {
            return Decision::reply(reply(msg, 404, "Not Found"));
        };
        let granted = match self.granted(msg, req.expires) {
            Ok(g) => g,
            Err(r) => return Decision::reply(r),
        };
        let Some((target_uri, target)) = req.contact.clone() else {
            return Decision::reply(reply(msg, 400, "Missing Contact"));
        };
        let tag = new_tag();
        let key: DialogKey = (req.call_id.clone(), tag.clone());
        let to = req.to.to_string_with_tag(&tag);
        let event = match &req.event.id {
            Some(id) => format!("{};id={id}", req.package.as_str()),
            None => req.package.as_str().to_string(),
        };
        let expires_at = now + Duration::from_secs(granted.into());
        let dialog = Arc::new(Dialog::new(
            key.clone(),
            req.package,
            self.users[u].aor.clone(),
            event,
            to.clone(),
            req.from_raw.clone(),
            req.record_route.clone(),
            target_uri,
            target,
            expires_at,
        ));
        let snapshot = self.users[u].snapshot(req.package);
        let job = if granted == 0 {
            // A fetch (RFC 6665 §4.4.3): one NOTIFY with the state, then it is over.
            Job::terminated(snapshot, Termination::timeout())
        } else {
            bump(&self.counters.subscriptions_created);
            self.subs.insert(
                key.clone(),
                Sub {
                    user: u,
                    dialog: dialog.clone(),
                    from_tag: req.from_tag.clone(),
                    last_cseq: req.cseq,
                    expires_at,
                },
            );
            self.users[u].watchers.push(key);
            Job::active(snapshot)
        };
        let mut job = job;
        let early = self.faults.notify_before_ok.then(|| {
            let (tx, rx) = oneshot::channel();
            job.done = Some(tx);
            rx
        });
        let _ = dialog.push(job);
        Decision {
            response: self.ok(msg, &req, to, granted),
            dialog: Some(dialog),
            early,
        }
    }

    fn in_dialog(
        &mut self,
        msg: &SipMessage,
        req: SubscribeReq,
        tag: String,
        now: Instant,
    ) -> Decision {
        let key: DialogKey = (req.call_id.clone(), tag);
        let no_dialog = || {
            Decision::reply(SipMessage::response_to(
                msg,
                481,
                "Subscription Does Not Exist",
            ))
        };
        let Some(sub) = self.subs.get(&key) else {
            return no_dialog();
        };
        if sub.from_tag != req.from_tag {
            return no_dialog();
        }
        if sub.dialog.package != req.package {
            let mut r = SipMessage::response_to(msg, 489, "Bad Event");
            r.add("Allow-Events", sub.dialog.package.as_str());
            return Decision::reply(r);
        }
        if req.cseq <= sub.last_cseq {
            // RFC 3261 §12.2.2: a lower CSeq inside a dialog is out of order.
            return Decision::reply(SipMessage::response_to(msg, 500, "CSeq Out of Order"));
        }
        let granted = match self.granted(msg, req.expires) {
            Ok(g) => g,
            Err(r) => return Decision::reply(r),
        };
        let to = msg.header("To").unwrap_or_default().to_string();
        let response = self.ok(msg, &req, to, granted);
        let sub = self.subs.get_mut(&key).expect("checked above");
        sub.last_cseq = req.cseq;
        let dialog = sub.dialog.clone();
        dialog.hold();
        if granted == 0 {
            // Un-SUBSCRIBE: 200, then the final NOTIFY with the last state (observed).
            let mut kicks = Vec::new();
            self.terminate_sub(&key, Termination::timeout(), &mut kicks);
        } else {
            let expires_at = now + Duration::from_secs(granted.into());
            sub.expires_at = expires_at;
            dialog.refresh(expires_at, req.contact.clone());
            // Kamailio answers every refresh with a NOTIFY of the current state (§2.6).
            let snapshot = self.users[sub.user].snapshot(dialog.package);
            let (_, coalesced, _) = dialog.push(Job::active(snapshot));
            if coalesced {
                bump(&self.counters.notifies_coalesced);
            }
        }
        Decision {
            response,
            dialog: Some(dialog),
            early: None,
        }
    }

    /// Subscriptions whose time is up are removed; with `notify`, each gets a final
    /// `terminated;reason=timeout` NOTIFY with the last state (Kamailio does this).
    pub fn expire(&mut self, now: Instant, notify: bool) -> Vec<Arc<Dialog>> {
        let due: Vec<DialogKey> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut kicks = Vec::new();
        for key in due {
            bump(&self.counters.subscriptions_expired);
            if notify {
                self.terminate_sub(&key, Termination::timeout(), &mut kicks);
            } else if let Some(sub) = self.unlink(&key) {
                sub.dialog.close();
            }
        }
        // Publications expire too.
        for u in 0..self.users.len() {
            let before = self.users[u].publications.len();
            self.users[u].publications.retain(|p| p.expires_at > now);
            if self.users[u].publications.len() != before {
                self.record(
                    u,
                    Package::Presence,
                    "publication expired".into(),
                    SystemTime::now(),
                );
                self.notify_watchers(u, Package::Presence, &mut kicks);
            }
        }
        kicks
    }

    /// The subscriber answered a NOTIFY with 481/408 (or could not be reached): forget the
    /// subscription, if it is still this dialog's.
    pub fn drop_dialog(&mut self, dialog: &Arc<Dialog>) {
        let same = self
            .subs
            .get(&dialog.key)
            .is_some_and(|s| Arc::ptr_eq(&s.dialog, dialog));
        if same {
            self.unlink(&dialog.key);
            bump(&self.counters.subscriptions_dropped);
        }
        dialog.close();
    }

    /// Fault: every subscription is forgotten without a NOTIFY (a notifier restart with
    /// subscriptions in memory): the next refresh gets 481.
    pub fn drop_all(&mut self) -> usize {
        let n = self.subs.len();
        for (_, sub) in self.subs.drain() {
            sub.dialog.close();
        }
        for u in &mut self.users {
            u.watchers.clear();
        }
        n
    }

    /// Ends every subscription to user `u` (of `package`, or all) with `end`.
    pub fn terminate_user(
        &mut self,
        u: usize,
        package: Option<Package>,
        end: &Termination,
    ) -> (usize, Vec<Arc<Dialog>>) {
        let keys: Vec<DialogKey> = self.users[u]
            .watchers
            .iter()
            .filter(|k| {
                package.is_none_or(|p| self.subs.get(*k).is_some_and(|s| s.dialog.package == p))
            })
            .cloned()
            .collect();
        let mut kicks = Vec::new();
        for key in &keys {
            bump(&self.counters.subscriptions_terminated);
            self.terminate_sub(key, end.clone(), &mut kicks);
        }
        (keys.len(), kicks)
    }

    // -----------------------------------------------------------------------------------
    // Digest

    /// `Ok` when digest is off or the request carries valid credentials; else the 407.
    pub fn check_auth(&mut self, msg: &SipMessage, now: Instant) -> Result<(), SipMessage> {
        let Some(auth) = self.auth.as_mut() else {
            return Ok(());
        };
        let mut stale = false;
        let values = msg
            .headers("Proxy-Authorization")
            .chain(msg.headers("Authorization"));
        for value in values {
            let Some(c) = digest::parse_credentials(value) else {
                continue;
            };
            if c.realm != auth.realm {
                continue;
            }
            let Some(&issued) = auth.nonces.get(&c.nonce) else {
                // Not our nonce (or forgotten): a fresh challenge.
                continue;
            };
            let good = c.algorithm == auth.algorithm
                && auth.accounts.get(&c.username).is_some_and(|pw| {
                    digest::verify_request(value, msg, pw, &auth.realm, &c.nonce)
                });
            if !good {
                bump(&self.counters.auth_failures);
                break;
            }
            if now.duration_since(issued) > NONCE_TTL {
                stale = true;
                break;
            }
            return Ok(());
        }
        bump(&self.counters.auth_challenges);
        if auth.nonces.len() >= MAX_NONCES {
            auth.nonces
                .retain(|_, t| now.duration_since(*t) <= NONCE_TTL);
            if auth.nonces.len() >= MAX_NONCES {
                auth.nonces.clear();
            }
        }
        let nonce = format!("{:032x}", fastrand::u128(..));
        auth.nonces.insert(nonce.clone(), now);
        let mut r = reply(msg, 407, "Proxy Authentication Required");
        r.add(
            "Proxy-Authenticate",
            format!(
                "Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm={}{}",
                auth.realm,
                auth.algorithm.as_str(),
                if stale { ", stale=true" } else { "" }
            ),
        );
        Err(r)
    }

    // -----------------------------------------------------------------------------------
    // PUBLISH (reference §7.2)

    pub fn publish(
        &mut self,
        msg: &SipMessage,
        req: PublishReq,
        now: Instant,
    ) -> (SipMessage, Vec<Arc<Dialog>>) {
        let mut kicks = Vec::new();
        let fail = |r: SipMessage| (r, Vec::new());
        match &req.event {
            Some(e) if e.package == "presence" => {}
            Some(_) => {
                let mut r = reply(msg, 489, "Bad Event");
                r.add("Allow-Events", "presence");
                return fail(r);
            }
            None => return fail(reply(msg, 400, "Missing Event")),
        }
        let Some(u) = req.aors.iter().find_map(|a| self.user(a)) else {
            return fail(reply(msg, 404, "Not Found"));
        };
        let requested = req.expires.unwrap_or(self.limits.default);
        if requested != 0 && requested < self.limits.min {
            let mut r = reply(msg, 423, "Interval Too Brief");
            r.add("Min-Expires", self.limits.min.to_string());
            return fail(r);
        }
        let granted = requested.min(self.limits.max);
        let has_body = !req.body.is_empty();
        if has_body {
            let ok = req
                .content_type
                .as_deref()
                .is_some_and(|c| c == "application/pidf+xml");
            if !ok {
                let mut r = reply(msg, 415, "Unsupported Media Type");
                r.add("Accept", "application/pidf+xml");
                return fail(r);
            }
            if std::str::from_utf8(&req.body).is_err() {
                return fail(reply(msg, 400, "Body Not UTF-8"));
            }
        }
        let index = match &req.if_match {
            None => None,
            Some(tag) => match self.users[u]
                .publications
                .iter()
                .position(|p| &p.etag == tag)
            {
                Some(i) => Some(i),
                None => return fail(reply(msg, 412, "Conditional Request Failed")),
            },
        };
        if index.is_none() && !has_body {
            return fail(reply(msg, 400, "Missing Body"));
        }
        self.etags += 1;
        let etag = format!(
            "a.{}.{}.{}.1",
            unix_ms(SystemTime::now()) / 1000,
            std::process::id(),
            self.etags
        );
        let wall = SystemTime::now();
        let expires_at = now + Duration::from_secs(granted.into());
        let pubs = &mut self.users[u].publications;
        let changed = match (index, granted) {
            (Some(i), 0) => {
                pubs.remove(i);
                true
            }
            (None, 0) => false,
            (Some(i), _) => {
                let p = &mut pubs[i];
                p.etag = etag.clone();
                p.expires_at = expires_at;
                if has_body {
                    p.doc = String::from_utf8_lossy(&req.body).into();
                    p.at = wall;
                }
                has_body
            }
            (None, _) => {
                pubs.push(Publication {
                    etag: etag.clone(),
                    doc: String::from_utf8_lossy(&req.body).into(),
                    at: wall,
                    expires_at,
                });
                true
            }
        };
        if changed {
            let what = if granted == 0 {
                "unpublished"
            } else {
                "published"
            };
            self.record(u, Package::Presence, what.into(), wall);
            self.notify_watchers(u, Package::Presence, &mut kicks);
        }
        let mut r = SipMessage::response_to(msg, 200, "OK");
        if let Some(to) = msg.to_hdr().filter(|t| t.tag().is_none()) {
            r.set("To", to.to_string_with_tag(&new_tag()));
        }
        if granted > 0 {
            r.add("SIP-ETag", etag);
        }
        r.add("Expires", granted.to_string());
        (r, kicks)
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}
