//! A simulator of a SIP presence server (notifier and event state compositor), modelled on
//! Kamailio's `presence` + `presence_xml` + `presence_dialoginfo` + `presence_mwi`.
//!
//! It lets `presence-bridge demo` show SIP without Kamailio and drives the benchmarks; real
//! peers (Kamailio, sipp) stay the evidence in the tests, so it does what the reference
//! (`sip.md` §2, §5, §7.2, §12) says Kamailio does:
//!
//! - SUBSCRIBE for `presence`, `dialog` and `message-summary` to a known user: **200** (never
//!   202) with a To tag, `Expires` = min(requested, `max_expires`) and
//!   `Contact: <sip:ADDR>`, then at once a NOTIFY (its own CSeq space starting at 2,
//!   `Subscription-State: active;expires=<remaining s, rounded, counting down>`) with the
//!   full state:
//!   PIDF + RPID on `dm:person` (§3.6), dialog-info `state="full"` with a `version` per
//!   subscription starting at 1 (as Kamailio 5.6 does; RFC 4235 says 0), or a
//!   simple-message-summary. A user for whom nothing is published gets an empty NOTIFY
//!   (observed on Kamailio).
//! - Unknown user → 404. Unknown package → 489 with `Allow-Events`. `Expires` below
//!   `min_expires` → 423 with `Min-Expires`. In-dialog SUBSCRIBE for a dialog we don't have
//!   → 481; with an older CSeq → 500. Refresh → 200 and a NOTIFY with the current state.
//!   `Expires: 0` → 200 then `terminated;reason=timeout` **with** the last state.
//!   An initial SUBSCRIBE with `Expires: 0` is a fetch (one terminated NOTIFY).
//! - Subscriptions not refreshed expire; with `notify_on_expiry` (the default, like
//!   Kamailio) they get a final `terminated;reason=timeout` NOTIFY.
//! - NOTIFYs go to the subscriber's Contact (host:port; transport from `;transport=`, UDP
//!   when absent, as RFC 3263 resolves a URI), through the SUBSCRIBE's Record-Route, one
//!   at a time per dialog and never blocking other dialogs ([`notify`]). A 481 or 408
//!   answer, or an unreachable subscriber, drops the subscription (Kamailio's
//!   `timeout_rm_subs`).
//! - PUBLISH of `presence` (RFC 3903, §7.2): entity tags (new on every success), 412 for an
//!   unknown `SIP-If-Match`, 400 without body on an initial PUBLISH, 415 for another body
//!   type, 423, 489; watchers get the newest document.
//! - Digest (optional): every SUBSCRIBE and PUBLISH is challenged with **407**
//!   `Proxy-Authenticate` (qop=auth, MD5 or SHA-256), as Kamailio's `auth_check` does;
//!   wrong credentials get a new 407, an expired nonce `stale=true`.
//!
//! How the pieces fit:
//!
//! - [`engine`]: users, subscriptions, publications, nonces, faults and the change log
//!   behind one `std::sync::Mutex`; every decision, synchronous.
//! - [`notify`]: one subscription dialog's NOTIFY queue and how a NOTIFY is built.
//! - [`state`]: a user's presence / call / voicemail state and the bodies rendered from it.
//! - [`control`]: the JSON control API (`/_sim/…`) on its own HTTP port.
//! - this module: configuration, [`start`], the [`SipSimHandle`], the request loop, the
//!   NOTIFY drain tasks, the expiry sweeper and the random change generator.
//!
//! **Measuring latency.** Every change (API, HTTP, random, PUBLISH) gets a sequence number
//! and is kept in a change log ([`SipSimHandle::changes_since`]: user, package, summary,
//! wall-clock Unix ms and a monotonic [`std::time::Instant`]); the setters return the
//! number. The PIDF of a presence change carries the change time (ms precision) in the
//! tuple `<timestamp>` and `dm:timestamp`. With [`SipSimConfig::stamp_notes`] the random
//! generator also writes `[#<seq> @<unix ms>]` at the end of the note, so a consumer that
//! only sees the published events (a NATS subscriber in another process) can match each
//! event to its change by the note alone. In-process benchmarks do what the PWS/UCWA ones
//! do: drive changes themselves (`set_presence` with a note unique per change) and match
//! `(user, note)`.
//!
//! Choices where Kamailio's behaviour is not reproduced (each marked *decided*):
//!
//! - Composition: watchers see the newest document among the simulated client's state and
//!   the live PUBLISHes of that user, not a union of tuples. Only `presence` can be
//!   PUBLISHed.
//! - A NOTIFY queue holds at most [`notify::MAX_QUEUED`] states; beyond that the newest
//!   state replaces the last queued one (counted as `notifies_coalesced`). Kamailio would
//!   queue them all.
//! - The digest username is not tied to the From user; nonce counts are not checked
//!   (Kamailio's default). No TLS listener.
//! - Dropping every [`SipSimHandle`] does not stop the simulator; call
//!   [`SipSimHandle::shutdown`] (or end the runtime).

pub mod control;
pub mod engine;
pub mod notify;
pub mod state;

#[cfg(test)]
mod tests;

use self::engine::{bump, Auth, Core, Counters, Decision, Limits, PublishReq, SubscribeReq};
use self::notify::{Dialog, Kick, Outcome};
use crate::connectors::sip::digest::Algorithm;
use crate::connectors::sip::message::{uri_aor, uri_host_port, uri_param, SipMessage};
use crate::connectors::sip::stack::{
    Incoming, RsipStack, SipStack, StackError, StackOptions, Target, Transport,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::engine::ChangeRecord;
pub use self::notify::{Package, Termination};
pub use self::state::{Basic, CallState, Presence, StateError};

/// Simulator settings. Users are `user0001` … `user{users}` at `domain`, or `names`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSimConfig {
    /// Number of users (`user0001@domain` …); ignored when `names` is given.
    pub users: u32,
    /// Explicit user names (`alice`, `bob`) instead of numbered ones.
    pub names: Vec<String>,
    /// Domain of the presentities' AORs. `user@<our IP>` is accepted too.
    pub domain: String,
    pub udp: bool,
    pub tcp: bool,
    /// Address for Contact headers when binding a wildcard address.
    pub advertise: Option<SocketAddr>,
    /// Shortest subscription granted (shorter → 423). Kamailio's default is 0; 60 keeps
    /// the 423 path reachable.
    pub min_expires: u32,
    /// Longest subscription granted (Kamailio `max_expires`, 3600 in our config).
    pub max_expires: u32,
    /// Duration when a SUBSCRIBE/PUBLISH has no `Expires` (RFC 3856: 3600).
    pub default_expires: u32,
    /// Event packages served (others: 489).
    pub packages: Vec<Package>,
    /// Random changes per second over all users; 0 = none.
    pub change_rate: f64,
    /// Seed of the initial states and the random changes.
    pub seed: u64,
    /// The random generator appends `[#<seq> @<unix ms>]` to each presence note (see the
    /// module docs).
    pub stamp_notes: bool,
    /// Expired subscriptions get a final `terminated;reason=timeout` NOTIFY (Kamailio).
    pub notify_on_expiry: bool,
    /// Digest authentication of SUBSCRIBE and PUBLISH (407).
    pub auth: Option<SipSimAuth>,
    /// Address of the JSON control API (`/_sim/…`); none when absent.
    pub http: Option<SocketAddr>,
    /// RFC 3261 T1 for our NOTIFY transactions (Timer F = 64×T1).
    pub t1_ms: u64,
}

impl Default for SipSimConfig {
    fn default() -> Self {
        SipSimConfig {
            users: 100,
            names: Vec::new(),
            domain: "example.com".into(),
            udp: true,
            tcp: true,
            advertise: None,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            packages: vec![Package::Presence, Package::Dialog, Package::MessageSummary],
            change_rate: 0.0,
            seed: 1,
            stamp_notes: false,
            notify_on_expiry: true,
            auth: None,
            http: None,
            t1_ms: 500,
        }
    }
}

/// Digest settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSimAuth {
    pub realm: String,
    /// `MD5` or `SHA-256` (any RFC 8760 token our digest module knows).
    pub algorithm: String,
    /// username → password.
    pub accounts: BTreeMap<String, String>,
}

impl Default for SipSimAuth {
    fn default() -> Self {
        SipSimAuth {
            realm: "example.com".into(),
            algorithm: "MD5".into(),
            accounts: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SipSimError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("SIP simulator control API: cannot listen on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SIP simulator: {0}")]
    Config(String),
}

/// Counters since start, plus what is alive now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipSimStats {
    pub users: u64,
    pub subscriptions_active: u64,
    /// Initial SUBSCRIBEs received (no To tag), whatever the answer.
    pub subscribes_initial: u64,
    /// In-dialog SUBSCRIBEs with `Expires` ≠ 0.
    pub subscribes_refresh: u64,
    /// In-dialog SUBSCRIBEs with `Expires: 0`.
    pub subscribes_unsubscribe: u64,
    /// SUBSCRIBEs answered with a non-2xx (407 included).
    pub subscribes_rejected: u64,
    pub auth_challenges: u64,
    /// Credentials that did not verify (wrong password, user, algorithm).
    pub auth_failures: u64,
    pub subscriptions_created: u64,
    pub subscriptions_expired: u64,
    /// Dropped on a 481/408/unreachable answer to a NOTIFY.
    pub subscriptions_dropped: u64,
    /// Ended by [`SipSimHandle::terminate`].
    pub subscriptions_terminated: u64,
    /// NOTIFYs answered 2xx.
    pub notifies_sent: u64,
    /// NOTIFYs answered otherwise, timed out or not deliverable.
    pub notifies_failed: u64,
    /// States merged into a queued NOTIFY (slow subscriber).
    pub notifies_coalesced: u64,
    /// NOTIFYs waiting in dialog queues now.
    pub notifies_queued: u64,
    /// State changes (all sources); also the last change sequence number.
    pub changes: u64,
    pub publishes: u64,
    pub publishes_rejected: u64,
    /// Requests other than SUBSCRIBE/PUBLISH (OPTIONS, stray NOTIFY, …).
    pub other_requests: u64,
}

/// One live subscription, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    pub user: String,
    pub package: Package,
    pub call_id: String,
    /// Our tag (the To tag of the subscriber's refreshes).
    pub tag: String,
    pub target: String,
    pub expires_in: u64,
    pub queued: usize,
}

/// A user's state, for the control API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserInfo {
    pub aor: String,
    pub presence: Option<Presence>,
    pub call: CallState,
    pub mwi: (u32, u32),
    pub publications: usize,
    pub watchers: usize,
    /// The body a presence NOTIFY would carry now (empty when nothing is published).
    pub pidf: String,
}

/// What the request loop, the drain tasks, the generator and the control API share.
pub(crate) struct Shared {
    core: Mutex<Core>,
    counters: Arc<Counters>,
    stack: Arc<dyn SipStack>,
    addr: SocketAddr,
    domain: String,
    notify_on_expiry: bool,
    stamp_notes: bool,
    /// f64 bits.
    change_rate: AtomicU64,
    notify_delay_ms: AtomicU64,
    http_addr: Mutex<Option<SocketAddr>>,
}

impl Shared {
    /// The core lock. Poisoning is ignored: a panic under the lock cannot leave a state
    /// worse than stopping the simulator would.
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts drain tasks for dialogs that need one.
    fn kick(self: &Arc<Self>, dialogs: Vec<Arc<Dialog>>) {
        for d in dialogs {
            tokio::spawn(drain(self.clone(), d));
        }
    }

    fn release(self: &Arc<Self>, dialog: Arc<Dialog>) {
        if let Kick::Start = dialog.release() {
            self.kick(vec![dialog]);
        }
    }

    /// Our Contact header value for a transport.
    fn contact(&self, transport: Transport) -> String {
        let addr = self.stack.local_addr(transport).unwrap_or(self.addr);
        match transport {
            Transport::Udp => format!("<sip:{addr}>"),
            t => format!("<sip:{addr};transport={}>", t.param()),
        }
    }

    fn stats(&self) -> SipSimStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (users, active, queued) = {
            let core = self.lock();
            let queued: usize = core.subs.values().map(|s| s.dialog.queued()).sum();
            (core.users.len(), core.subs.len(), queued)
        };
        SipSimStats {
            users: users as u64,
            subscriptions_active: active as u64,
            subscribes_initial: g(&c.subscribes_initial),
            subscribes_refresh: g(&c.subscribes_refresh),
            subscribes_unsubscribe: g(&c.subscribes_unsubscribe),
            subscribes_rejected: g(&c.subscribes_rejected),
            auth_challenges: g(&c.auth_challenges),
            auth_failures: g(&c.auth_failures),
            subscriptions_created: g(&c.subscriptions_created),
            subscriptions_expired: g(&c.subscriptions_expired),
            subscriptions_dropped: g(&c.subscriptions_dropped),
            subscriptions_terminated: g(&c.subscriptions_terminated),
            notifies_sent: g(&c.notifies_sent),
            notifies_failed: g(&c.notifies_failed),
            notifies_coalesced: g(&c.notifies_coalesced),
            notifies_queued: queued as u64,
            changes: g(&c.changes),
            publishes: g(&c.publishes),
            publishes_rejected: g(&c.publishes_rejected),
            other_requests: g(&c.other_requests),
        }
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

    // The operations below are shared by the handle and the control API.

    fn set_presence(
        self: &Arc<Self>,
        aor: &str,
        p: Option<Presence>,
    ) -> Result<Option<u64>, StateError> {
        let p = p.map(Presence::validated).transpose()?;
        let mut core = self.lock();
        let Some(u) = core.user(aor) else {
            return Ok(None);
        };
        let (seq, kicks) = core.set_presence(u, p);
        drop(core);
        self.kick(kicks);
        Ok(Some(seq))
    }

    /// `Some(None)`: known user, no change (already in that state).
    fn set_call(self: &Arc<Self>, aor: &str, to: CallState) -> Option<Option<u64>> {
        let mut core = self.lock();
        let u = core.user(aor)?;
        let r = core.set_call(u, to);
        drop(core);
        Some(r.map(|(seq, kicks)| {
            self.kick(kicks);
            seq
        }))
    }

    fn set_mwi(self: &Arc<Self>, aor: &str, new: u32, old: u32) -> Option<u64> {
        let mut core = self.lock();
        let u = core.user(aor)?;
        let (seq, kicks) = core.set_mwi(u, new, old);
        drop(core);
        self.kick(kicks);
        Some(seq)
    }

    fn terminate(
        self: &Arc<Self>,
        aor: &str,
        package: Option<Package>,
        end: &Termination,
    ) -> Option<usize> {
        let mut core = self.lock();
        let u = core.user(aor)?;
        let (n, kicks) = core.terminate_user(u, package, end);
        drop(core);
        self.kick(kicks);
        Some(n)
    }

    fn set_unavailable(&self, for_: Option<Duration>, retry_after: u32) {
        let mut core = self.lock();
        core.faults.unavailable_until = for_.map(|d| Instant::now() + d);
        core.faults.retry_after = retry_after;
    }

    fn user_info(&self, aor: &str) -> Option<UserInfo> {
        let core = self.lock();
        let u = core.user(aor)?;
        let user = &core.users[u];
        let pidf = match core.presence_snapshot(u) {
            state::Snapshot::Pidf(d) => d.to_string(),
            _ => String::new(),
        };
        Some(UserInfo {
            aor: user.aor.clone(),
            presence: user.presence.clone(),
            call: user.call.as_ref().map_or(CallState::Idle, |c| c.state),
            mwi: user.mwi,
            publications: user.publications.len(),
            watchers: user.watchers.len(),
            pidf,
        })
    }

    fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let core = self.lock();
        let now = Instant::now();
        let mut out: Vec<SubscriptionInfo> = core
            .subs
            .iter()
            .map(|((call_id, tag), s)| SubscriptionInfo {
                user: core.users[s.user].aor.clone(),
                package: s.dialog.package,
                call_id: call_id.clone(),
                tag: tag.clone(),
                target: s.dialog.target_uri(),
                expires_in: s.expires_at.saturating_duration_since(now).as_secs(),
                queued: s.dialog.queued(),
            })
            .collect();
        out.sort_by(|a, b| (&a.user, &a.call_id).cmp(&(&b.user, &b.call_id)));
        out
    }
}

/// Starts simulators; the free function [`start`] does the same.
pub struct SipSimulator;

impl SipSimulator {
    pub async fn start(bind: SocketAddr, cfg: SipSimConfig) -> Result<SipSimHandle, SipSimError> {
        start(bind, cfg).await
    }
}

struct Tasks {
    cancel: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

/// Controls a running simulator. Cheap to clone; [`SipSimHandle::shutdown`] stops it.
#[derive(Clone)]
pub struct SipSimHandle {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

/// `user0001` for `n = 1`: four digits at least, more when needed.
pub fn user_name(n: u32) -> String {
    format!("user{n:04}")
}

/// Binds `bind` (UDP and TCP on one port; port 0 picks a free one) and serves until
/// [`SipSimHandle::shutdown`]. With `cfg.http`, the control API listens there too.
pub async fn start(bind: SocketAddr, cfg: SipSimConfig) -> Result<SipSimHandle, SipSimError> {
    if !cfg.udp && !cfg.tcp {
        return Err(SipSimError::Config("enable UDP, TCP or both".into()));
    }
    if cfg.min_expires > cfg.max_expires {
        return Err(SipSimError::Config(format!(
            "min_expires {} is above max_expires {}",
            cfg.min_expires, cfg.max_expires
        )));
    }
    let auth = match &cfg.auth {
        None => None,
        Some(a) => {
            let alg = Algorithm::parse(&a.algorithm).ok_or_else(|| {
                SipSimError::Config(format!("unknown digest algorithm {:?}", a.algorithm))
            })?;
            Some(Auth::new(
                a.realm.clone(),
                alg,
                a.accounts.clone().into_iter().collect(),
            ))
        }
    };
    let names: Vec<String> = if cfg.names.is_empty() {
        (1..=cfg.users).map(user_name).collect()
    } else {
        cfg.names.clone()
    };
    if names.is_empty() {
        return Err(SipSimError::Config("no users".into()));
    }
    let cancel = CancellationToken::new();
    let (stack, incoming) = RsipStack::start(
        StackOptions {
            bind,
            advertise: cfg.advertise,
            udp: cfg.udp,
            tcp: cfg.tcp,
            t1: Duration::from_millis(cfg.t1_ms.max(1)),
            tls_ca_pem: None,
        },
        cancel.child_token(),
    )
    .await?;
    let addr = stack
        .local_addr(if cfg.udp {
            Transport::Udp
        } else {
            Transport::Tcp
        })
        .expect("a transport is open");
    let counters = Arc::new(Counters::default());
    let limits = Limits {
        min: cfg.min_expires,
        max: cfg.max_expires,
        default: cfg.default_expires,
    };
    let core = Core::new(
        names,
        &cfg.domain,
        &addr.ip().to_string(),
        limits,
        cfg.packages.clone(),
        auth,
        cfg.seed,
        counters.clone(),
    );
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        counters,
        stack,
        addr,
        domain: cfg.domain.trim().to_ascii_lowercase(),
        notify_on_expiry: cfg.notify_on_expiry,
        stamp_notes: cfg.stamp_notes,
        change_rate: AtomicU64::new(0),
        notify_delay_ms: AtomicU64::new(0),
        http_addr: Mutex::new(None),
    });
    shared.set_change_rate(cfg.change_rate);
    let mut workers = vec![
        tokio::spawn(serve(shared.clone(), incoming, cancel.clone())),
        tokio::spawn(sweep(shared.clone(), cancel.clone())),
        tokio::spawn(generate(shared.clone(), cfg.seed, cancel.clone())),
    ];
    if let Some(http) = cfg.http {
        let (bound, task) = control::serve(shared.clone(), http, cancel.clone())
            .await
            .map_err(|source| SipSimError::Http { addr: http, source })?;
        *shared.http_addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(bound);
        workers.push(task);
    }
    tracing::info!(%addr, users = shared.lock().users.len(), "SIP simulator listening");
    Ok(SipSimHandle {
        shared,
        tasks: Arc::new(Mutex::new(Some(Tasks { cancel, workers }))),
    })
}

impl SipSimHandle {
    /// The SIP address (UDP and TCP share the port).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://ADDR/_sim`, when the control API runs.
    pub fn control_url(&self) -> Option<String> {
        let a = *self
            .shared
            .http_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        a.map(|a| format!("http://{a}/_sim"))
    }

    pub fn domain(&self) -> &str {
        &self.shared.domain
    }

    /// `user0001@example.com` for `n = 1` (numbered users).
    pub fn user_aor(&self, n: u32) -> String {
        format!("{}@{}", user_name(n), self.shared.domain)
    }

    /// `sip:user0001@example.com`.
    pub fn user_uri(&self, n: u32) -> String {
        format!("sip:{}", self.user_aor(n))
    }

    /// Every user's AOR, in order.
    pub fn users(&self) -> Vec<String> {
        self.shared
            .lock()
            .users
            .iter()
            .map(|u| u.aor.clone())
            .collect()
    }

    /// The user's client publishes `p`; watchers get NOTIFYs. `Ok(Some(seq))` with the
    /// change's sequence number, `Ok(None)` for an unknown user, `Err` for an invalid
    /// activity or note.
    pub fn set_presence(&self, aor: &str, p: Presence) -> Result<Option<u64>, StateError> {
        self.shared.set_presence(aor, Some(p))
    }

    /// Shorthand for [`SipSimHandle::set_presence`] with `open`.
    pub fn set_activity(
        &self,
        aor: &str,
        activity: Option<&str>,
        note: Option<&str>,
    ) -> Result<Option<u64>, StateError> {
        self.set_presence(aor, Presence::new(Basic::Open, activity, note))
    }

    /// The user's client removes its publication: watchers get an empty NOTIFY (unless a
    /// PUBLISHed document remains). `None` for an unknown user.
    pub fn clear_presence(&self, aor: &str) -> Option<u64> {
        self.shared.set_presence(aor, None).ok().flatten()
    }

    /// The user's telephony state (dialog package). `None` for an unknown user or when the
    /// user is already in that state.
    pub fn set_call(&self, aor: &str, state: CallState) -> Option<u64> {
        self.shared.set_call(aor, state).flatten()
    }

    /// Voicemail counts (message-summary package).
    pub fn set_mwi(&self, aor: &str, new: u32, old: u32) -> Option<u64> {
        self.shared.set_mwi(aor, new, old)
    }

    pub fn user_info(&self, aor: &str) -> Option<UserInfo> {
        self.shared.user_info(aor)
    }

    pub fn presence_of(&self, aor: &str) -> Option<Presence> {
        self.user_info(aor)?.presence
    }

    pub fn stats(&self) -> SipSimStats {
        self.shared.stats()
    }

    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.shared.subscriptions()
    }

    /// Changes with a sequence number above `after`, oldest first (the log keeps the last
    /// [`engine::CHANGE_LOG`]).
    pub fn changes_since(&self, after: u64) -> Vec<ChangeRecord> {
        self.shared.lock().changes_since(after)
    }

    /// The sequence number of the last change (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.shared.lock().last_seq()
    }

    /// Random changes per second from now on (0 stops them).
    pub fn set_change_rate(&self, per_second: f64) {
        self.shared.set_change_rate(per_second);
    }

    // Faults

    /// Forgets every subscription without a NOTIFY (notifier restart): the next refresh
    /// gets 481. Returns how many there were.
    pub fn drop_subscriptions(&self) -> usize {
        self.shared.lock().drop_all()
    }

    /// Ends every subscription to `aor` (of `package`, or all) with
    /// `terminated;reason=…`. Returns how many, `None` for an unknown user.
    pub fn terminate(
        &self,
        aor: &str,
        package: Option<Package>,
        end: Termination,
    ) -> Option<usize> {
        self.shared.terminate(aor, package, &end)
    }

    /// SUBSCRIBE and PUBLISH get `503` with `Retry-After: retry_after` for `duration`
    /// (`None` ends it).
    pub fn set_unavailable(&self, duration: Option<Duration>, retry_after: u32) {
        self.shared.set_unavailable(duration, retry_after);
    }

    /// The initial NOTIFY is sent, and its answer awaited (at most 2 s), before the 200.
    pub fn set_notify_before_ok(&self, on: bool) {
        self.shared.lock().faults.notify_before_ok = on;
    }

    /// Delays every NOTIFY (slow notifier).
    pub fn set_notify_delay(&self, delay: Option<Duration>) {
        let ms = delay.map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64);
        self.shared.notify_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Turns digest on (or off with `None`) from now on.
    pub fn set_auth(&self, auth: Option<SipSimAuth>) -> Result<(), SipSimError> {
        let auth = match auth {
            None => None,
            Some(a) => {
                let alg = Algorithm::parse(&a.algorithm).ok_or_else(|| {
                    SipSimError::Config(format!("unknown digest algorithm {:?}", a.algorithm))
                })?;
                Some(Auth::new(a.realm, alg, a.accounts.into_iter().collect()))
            }
        };
        self.shared.lock().auth = auth;
        Ok(())
    }

    /// Stops the request loop, the NOTIFY senders, the generator, the control API and the
    /// SIP transports.
    pub async fn shutdown(self) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(t) = tasks else {
            return;
        };
        t.cancel.cancel();
        for w in t.workers {
            let abort = w.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// The TOML of a `[connectors.sip.NAME]` section watching `users` numbered users of a
/// simulator at `addr` (for `presence-bridge demo`; keys of
/// `connectors::sip::config::SipConfig`).
pub fn demo_sip_snippet(addr: SocketAddr, users: u32, domain: &str) -> String {
    let contacts: Vec<String> = (1..=users)
        .map(|n| format!("\"sip:{}@{domain}\"", user_name(n)))
        .collect();
    format!(
        "server = \"{addr}\"\ntransport = \"udp\"\ndomain = \"{domain}\"\nbind = \"127.0.0.1:0\"\nwatcher = \"sip:presence-bridge@{domain}\"\ncontacts = [{}]\nevents = [\"presence\", \"dialog\"]\nsubscribe_rate = 200.0\nexpires = \"600s\"\n",
        contacts.join(", ")
    )
}

// ---------------------------------------------------------------------------------------
// Requests

/// Receives requests; each is handled in its own task (a slow handler — NOTIFY-before-200,
/// a DNS lookup — never holds up the others).
async fn serve(
    shared: Arc<Shared>,
    mut incoming: mpsc::Receiver<Incoming>,
    cancel: CancellationToken,
) {
    loop {
        let inc = tokio::select! {
            i = incoming.recv() => match i { Some(i) => i, None => return },
            _ = cancel.cancelled() => return,
        };
        tokio::spawn(handle(shared.clone(), inc));
    }
}

async fn handle(shared: Arc<Shared>, inc: Incoming) {
    let method = inc.request.method().unwrap_or_default().to_string();
    match method.as_str() {
        "SUBSCRIBE" => on_subscribe(shared, inc).await,
        "PUBLISH" => on_publish(shared, inc).await,
        // No response to an ACK.
        "ACK" => {}
        other => {
            bump(&shared.counters.other_requests);
            let req = &inc.request;
            let mut r = if other == "OPTIONS" {
                engine::reply(req, 200, "OK")
            } else {
                engine::reply(req, 405, "Method Not Allowed")
            };
            r.add("Allow", "SUBSCRIBE, PUBLISH, OPTIONS");
            let events: Vec<&str> = shared.lock().packages.iter().map(|p| p.as_str()).collect();
            r.add("Allow-Events", events.join(", "));
            respond(inc, r).await;
        }
    }
}

async fn respond(inc: Incoming, resp: SipMessage) {
    if let Err(e) = inc.respond(resp).await {
        tracing::debug!(error = %e, "SIP simulator: response not sent");
    }
}

/// The transport a request came on, from its top Via (`SIP/2.0/TCP host:port;…`).
fn arrival_transport(msg: &SipMessage) -> Transport {
    let via = msg.header_list("Via").first().copied().unwrap_or_default();
    let proto = via.split_whitespace().next().unwrap_or_default();
    match proto
        .rsplit('/')
        .next()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("TCP") => Transport::Tcp,
        Some("TLS") => Transport::Tls,
        _ => Transport::Udp,
    }
}

/// Where requests for a Contact URI go: host:port resolved, transport from `;transport=`
/// (`sips:` → TLS, else UDP).
async fn resolve(uri: &str) -> Option<Target> {
    let (host, port) = uri_host_port(uri)?;
    let transport = match uri_param(uri, "transport").map(|t| t.to_ascii_lowercase()) {
        Some(t) if t == "tcp" => Transport::Tcp,
        Some(t) if t == "tls" => Transport::Tls,
        _ if uri.trim_start().to_ascii_lowercase().starts_with("sips:") => Transport::Tls,
        _ => Transport::Udp,
    };
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()?
            .next()?,
    };
    Some(Target { addr, transport })
}

/// Parses a SUBSCRIBE; `Err` is the response to send.
async fn parse_subscribe(shared: &Shared, msg: &SipMessage) -> Result<SubscribeReq, SipMessage> {
    let bad = |why: &str| engine::reply(msg, 400, why);
    let call_id = msg
        .call_id()
        .ok_or_else(|| bad("Missing Call-ID"))?
        .to_string();
    let from = msg.from_hdr().ok_or_else(|| bad("Bad From"))?;
    let from_tag = from
        .tag()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("Missing From Tag"))?;
    let to = msg.to_hdr().ok_or_else(|| bad("Bad To"))?;
    let (cseq, method) = msg.cseq().ok_or_else(|| bad("Bad CSeq"))?;
    if method != "SUBSCRIBE" {
        return Err(bad("CSeq Method Mismatch"));
    }
    let event = match msg.header("Event") {
        None => return Err(bad("Missing Event")),
        Some(v) => msg
            .event()
            .ok_or_else(|| bad(&format!("Bad Event Header {v:?}")))?,
    };
    let Some(package) = Package::parse(&event.package) else {
        return Err(shared.lock().bad_event(msg));
    };
    let expires = match msg.header("Expires") {
        None => None,
        Some(_) => Some(msg.expires().ok_or_else(|| bad("Bad Expires"))?),
    };
    let aors = msg
        .request_uri()
        .and_then(uri_aor)
        .into_iter()
        .chain(uri_aor(&to.uri))
        .collect();
    let contact = match msg.contact() {
        None => None,
        Some(c) => {
            let target = resolve(&c.uri)
                .await
                .ok_or_else(|| bad("Unusable Contact"))?;
            Some((c.uri.clone(), target))
        }
    };
    let to_tag = to.tag().filter(|t| !t.is_empty()).map(str::to_string);
    Ok(SubscribeReq {
        call_id,
        from_raw: msg.header("From").unwrap_or_default().to_string(),
        from_tag: from_tag.to_string(),
        to,
        to_tag,
        cseq,
        event,
        package,
        expires,
        aors,
        contact,
        record_route: msg
            .header_list("Record-Route")
            .into_iter()
            .map(str::to_string)
            .collect(),
        our_contact: shared.contact(arrival_transport(msg)),
    })
}

/// 503 while the unavailable fault is on.
fn unavailable(shared: &Shared, msg: &SipMessage) -> Option<SipMessage> {
    let core = shared.lock();
    let until = core.faults.unavailable_until?;
    if Instant::now() >= until {
        return None;
    }
    let mut r = engine::reply(msg, 503, "Service Unavailable");
    r.add("Retry-After", core.faults.retry_after.to_string());
    Some(r)
}

async fn on_subscribe(shared: Arc<Shared>, inc: Incoming) {
    let msg = &inc.request;
    let in_dialog = msg.to_hdr().is_some_and(|t| t.tag().is_some());
    let counter = match (in_dialog, msg.expires()) {
        (false, _) => &shared.counters.subscribes_initial,
        (true, Some(0)) => &shared.counters.subscribes_unsubscribe,
        (true, _) => &shared.counters.subscribes_refresh,
    };
    bump(counter);
    let decision = decide(&shared, msg).await;
    if !decision
        .response
        .code()
        .is_some_and(|c| (200..300).contains(&c))
    {
        bump(&shared.counters.subscribes_rejected);
    }
    let Decision {
        response,
        dialog,
        early,
    } = decision;
    match (dialog, early) {
        (Some(d), Some(done)) => {
            // Fault: NOTIFY first; the 200 follows its answer (or 2 s).
            shared.release(d);
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
            respond(inc, response).await;
        }
        (Some(d), None) => {
            respond(inc, response).await;
            shared.release(d);
        }
        (None, _) => respond(inc, response).await,
    }
}

async fn decide(shared: &Shared, msg: &SipMessage) -> Decision {
    let reply = |response| Decision {
        response,
        dialog: None,
        early: None,
    };
    if let Some(r) = unavailable(shared, msg) {
        return reply(r);
    }
    let auth = shared.lock().check_auth(msg, Instant::now());
    if let Err(r) = auth {
        return reply(r);
    }
    match parse_subscribe(shared, msg).await {
        Ok(req) => shared.lock().subscribe(msg, req, Instant::now()),
        Err(r) => reply(r),
    }
}

async fn on_publish(shared: Arc<Shared>, inc: Incoming) {
    bump(&shared.counters.publishes);
    let msg = &inc.request;
    // (Each check takes the lock in its own statement: a guard in an `if let` scrutinee
    // would live through the `else` branches.)
    let refused = match unavailable(&shared, msg) {
        Some(r) => Some(r),
        None => shared.lock().check_auth(msg, Instant::now()).err(),
    };
    let (resp, kicks) = if let Some(r) = refused {
        (r, Vec::new())
    } else {
        let expires = match msg.header("Expires") {
            None => Ok(None),
            Some(_) => msg.expires().map(Some).ok_or(()),
        };
        match expires {
            Err(()) => (engine::reply(msg, 400, "Bad Expires"), Vec::new()),
            Ok(expires) => {
                let req = PublishReq {
                    aors: msg
                        .request_uri()
                        .and_then(uri_aor)
                        .into_iter()
                        .chain(msg.to_hdr().and_then(|t| uri_aor(&t.uri)))
                        .collect(),
                    event: msg.event(),
                    expires,
                    if_match: msg.header("SIP-If-Match").map(str::to_string),
                    content_type: msg.content_type().map(|c| c.essence),
                    body: msg.body.clone(),
                };
                shared.lock().publish(msg, req, Instant::now())
            }
        }
    };
    if !resp.code().is_some_and(|c| (200..300).contains(&c)) {
        bump(&shared.counters.publishes_rejected);
    }
    respond(inc, resp).await;
    shared.kick(kicks);
}

// ---------------------------------------------------------------------------------------
// Background tasks

/// Sends one dialog's queued NOTIFYs in order, one at a time, until the queue is empty.
async fn drain(shared: Arc<Shared>, dialog: Arc<Dialog>) {
    loop {
        let Some((msg, target, job)) = dialog.next(|t| shared.contact(t)) else {
            return;
        };
        if let Some(d) = notify::delay(shared.notify_delay_ms.load(Ordering::Relaxed)) {
            tokio::time::sleep(d).await;
        }
        let r = shared.stack.request(msg, target).await;
        if let Some(done) = job.done {
            let _ = done.send(());
        }
        match notify::outcome(&r) {
            Outcome::Delivered => bump(&shared.counters.notifies_sent),
            Outcome::Failed => {
                bump(&shared.counters.notifies_failed);
                tracing::debug!(user = %dialog.aor, code = ?r.ok().and_then(|m| m.code()), "NOTIFY refused");
            }
            Outcome::Gone => {
                bump(&shared.counters.notifies_failed);
                tracing::debug!(user = %dialog.aor, "NOTIFY: subscriber gone, subscription dropped");
                shared.lock().drop_dialog(&dialog);
                return;
            }
            Outcome::Stopped => return,
        }
        if job.end.is_some() {
            return;
        }
    }
}

/// Expires subscriptions and publications (4 times a second).
async fn sweep(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let kicks = shared
            .lock()
            .expire(Instant::now(), shared.notify_on_expiry);
        shared.kick(kicks);
    }
}

/// Random changes at the configured rate, in batches per tick (one lock per batch). The
/// sequence of (user, state) is fixed by the seed; only its timing varies.
async fn generate(shared: Arc<Shared>, seed: u64, cancel: CancellationToken) {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x0053_4950);
    let mut budget = 0.0f64;
    let mut last = Instant::now();
    loop {
        let rate = shared.change_rate();
        let period = if rate > 0.0 {
            (1.0 / rate).clamp(0.005, 0.05)
        } else {
            0.05
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(period)) => {}
            _ = cancel.cancelled() => return,
        }
        let now = Instant::now();
        if rate <= 0.0 {
            budget = 0.0;
            last = now;
            continue;
        }
        budget += rate * now.duration_since(last).as_secs_f64();
        last = now;
        // After a stall, catch up at most one second's worth.
        budget = budget.min(rate.max(1.0));
        let n = budget.floor();
        budget -= n;
        let mut kicks = Vec::new();
        {
            let mut core = shared.lock();
            for _ in 0..n as u64 {
                kicks.extend(core.random_change(&mut rng, shared.stamp_notes).1);
            }
        }
        shared.kick(kicks);
    }
}
