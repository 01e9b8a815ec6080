//! The subscriber side of RFC 6665: one dialog per (presentity, event package), refreshed
//! inside the dialog before the granted expiry, re-created on 481, and ended by reason when
//! the notifier terminates it (reference §2).
//!
//! Two parts:
//! - [`Router`]: answers every incoming NOTIFY at once (pitfall 3: no broker I/O before the
//!   200), matching it by Call-ID + our tag so a NOTIFY that beats the 2xx, or comes from a
//!   second fork, is recognised (pitfall 9). Accepted NOTIFYs go to the dialog's task.
//! - [`Subscription::run`]: one task per subscription: SUBSCRIBE with digest and 423
//!   handling, Timer N, refresh scheduling from the latest `Subscription-State;expires`,
//!   the terminated-reason policy (§2.5), backoff with a cap and a per-URI failure limit
//!   (the Presence Provider settings), and un-SUBSCRIBE on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::Package;
use super::digest::DigestClient;
use super::message::{new_call_id, new_tag, NameAddr, SipMessage, SubState};
use super::stack::Target;
use super::SipCore;

/// Queue of accepted NOTIFYs per dialog. The NOTIFY is already answered when it is queued;
/// if a dialog falls this far behind, newer state is fetched by a refresh instead (a
/// refresh makes the notifier send the full state again), so nothing is lost and memory
/// stays bounded.
const NOTIFY_QUEUE: usize = 64;

/// A NOTIFY accepted for a dialog.
#[derive(Debug)]
pub struct Notification {
    pub msg: SipMessage,
}

/// What the router must know about a dialog to answer its NOTIFYs without waiting for the
/// dialog's task.
#[derive(Debug)]
struct DialogShared {
    package: &'static str,
    /// The notifier's tag: set by the 2xx or by the first NOTIFY, whichever comes first.
    remote_tag: Option<String>,
    last_cseq: Option<u32>,
    /// A NOTIFY was answered but could not be queued: refresh to get the full state again.
    overflowed: bool,
}

struct Route {
    shared: Arc<Mutex<DialogShared>>,
    tx: mpsc::Sender<Notification>,
    wake: Arc<tokio::sync::Notify>,
}

/// How a NOTIFY was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyVerdict {
    /// 200, queued for the dialog.
    Accepted,
    /// 200, a retransmission or stale duplicate (not applied again).
    Duplicate,
    /// 200, but the dialog's queue was full: it will refresh.
    Overflow,
    /// 481: no such subscription (stale, or a second fork).
    NoDialog,
    /// 489: the Event does not match the subscription.
    BadEvent,
    /// 500: CSeq lower than the last applied (out of order; RFC 3261 §12.2.2).
    OutOfOrder,
    /// 400: required headers missing.
    Malformed,
}

impl NotifyVerdict {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            NotifyVerdict::Accepted | NotifyVerdict::Duplicate | NotifyVerdict::Overflow => {
                (200, "OK")
            }
            NotifyVerdict::NoDialog => (481, "Subscription Does Not Exist"),
            NotifyVerdict::BadEvent => (489, "Bad Event"),
            NotifyVerdict::OutOfOrder => (500, "Out Of Order"),
            NotifyVerdict::Malformed => (400, "Bad Request"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyVerdict::Accepted => "accepted",
            NotifyVerdict::Duplicate => "duplicate",
            NotifyVerdict::Overflow => "overflow",
            NotifyVerdict::NoDialog => "no_dialog",
            NotifyVerdict::BadEvent => "bad_event",
            NotifyVerdict::OutOfOrder => "out_of_order",
            NotifyVerdict::Malformed => "malformed",
        }
    }
}

/// Dialogs by (Call-ID, our tag).
#[derive(Default)]
pub struct Router {
    routes: Mutex<HashMap<(String, String), Route>>,
}

impl Router {
    pub fn len(&self) -> usize {
        self.routes.lock().expect("router lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn register(&self, call_id: &str, tag: &str, route: Route) {
        self.routes
            .lock()
            .expect("router lock")
            .insert((call_id.to_string(), tag.to_string()), route);
    }

    fn unregister(&self, call_id: &str, tag: &str) {
        self.routes
            .lock()
            .expect("router lock")
            .remove(&(call_id.to_string(), tag.to_string()));
    }

    /// Decides the answer to a NOTIFY and queues it for its dialog. Cheap and synchronous:
    /// the caller answers right after.
    pub fn on_notify(&self, msg: &SipMessage) -> NotifyVerdict {
        let (Some(call_id), Some(to), Some(from), Some((cseq, _))) =
            (msg.call_id(), msg.to_hdr(), msg.from_hdr(), msg.cseq())
        else {
            return NotifyVerdict::Malformed;
        };
        let Some(our_tag) = to.tag() else {
            return NotifyVerdict::NoDialog;
        };
        let routes = self.routes.lock().expect("router lock");
        let Some(route) = routes.get(&(call_id.to_string(), our_tag.to_string())) else {
            return NotifyVerdict::NoDialog;
        };
        let mut shared = route.shared.lock().expect("dialog lock");
        match msg.event() {
            Some(ev) if ev.package == shared.package => {}
            _ => return NotifyVerdict::BadEvent,
        }
        let their_tag = from.tag().unwrap_or_default();
        match &shared.remote_tag {
            // A second fork: keep the dialog that delivered first (reference §2.7).
            Some(t) if t != their_tag => return NotifyVerdict::NoDialog,
            Some(_) => {}
            None => shared.remote_tag = Some(their_tag.to_string()),
        }
        match shared.last_cseq {
            Some(last) if cseq == last => return NotifyVerdict::Duplicate,
            Some(last) if cseq < last => return NotifyVerdict::OutOfOrder,
            _ => shared.last_cseq = Some(cseq),
        }
        match route.tx.try_send(Notification { msg: msg.clone() }) {
            Ok(()) => NotifyVerdict::Accepted,
            Err(_) => {
                shared.overflowed = true;
                route.wake.notify_one();
                NotifyVerdict::Overflow
            }
        }
    }
}

/// Removes a dialog's route when the dialog ends, however it ends.
struct RouteGuard<'a> {
    router: &'a Router,
    call_id: String,
    tag: String,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.router.unregister(&self.call_id, &self.tag);
    }
}

/// What one subscription watches.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `alice@example.com` (the user id of events), or the list URI's AOR.
    pub aor: String,
    /// Request-URI and To: `sip:alice@example.com`.
    pub uri: String,
    pub package: Package,
    /// A resource list (RFC 4662): `Supported: eventlist`, multipart bodies.
    pub list: bool,
}

/// How one dialog ended, and what to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Shutdown,
    /// Start a new subscription after `after`; `failure` counts towards the per-URI limit
    /// and the backoff.
    Again {
        after: Duration,
        failure: bool,
        why: String,
    },
    /// Do not retry (489, rejected, noresource, invariant, credentials refused).
    GiveUp {
        why: String,
        unknown: bool,
    },
}

/// What the subscription task reports per NOTIFY to the connector core.
#[derive(Debug)]
pub enum Update<'a> {
    /// A NOTIFY with its body (possibly empty) and subscription state.
    Notify { msg: &'a SipMessage, first: bool },
    /// The subscription is over for good: the user's state is unknown now.
    Gone { why: &'a str },
}

/// One subscription's task.
pub struct Subscription {
    pub spec: Spec,
    core: Arc<SipCore>,
    digest: DigestClient,
    /// The server's Min-Expires from a 423, remembered so refreshes do not ask too little
    /// again.
    min_expires: u32,
    /// Retry-After of the last 503 to a refresh: the next try waits at least that long.
    retry_after: Option<Duration>,
    /// Request-URI from a 3xx Contact (reference §2.2), and how many redirects in a row.
    redirect: Option<String>,
    redirects: u32,
}

/// Refresh time for a granted duration: `min(80 %, granted − 32 s)`, at least 2 s
/// (reference §2.6: a refresh that times out after Timer F still lands before expiry).
pub fn refresh_after(granted: Duration, timer_f: Duration) -> Duration {
    let eighty = granted.mul_f64(0.8);
    let before_f = granted.saturating_sub(timer_f);
    eighty
        .min(before_f)
        .max(Duration::from_secs(2))
        .min(granted)
}

/// `retry_delay × 2^(failures−1)`, capped.
pub fn backoff(first: Duration, cap: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    first.saturating_mul(1u32 << exp).min(cap)
}

/// The §2.5 policy for `Subscription-State: terminated;reason=…`.
pub fn on_terminated(reason: Option<&str>, retry_after: Option<u32>, backoff: Duration) -> End {
    let wait = |d: Duration| {
        retry_after
            .map(|s| Duration::from_secs(s.into()))
            .unwrap_or(d)
    };
    let why = format!("terminated;reason={}", reason.unwrap_or("none"));
    match reason.map(str::to_ascii_lowercase).as_deref() {
        Some("deactivated") | Some("timeout") => End::Again {
            after: wait(Duration::ZERO),
            failure: false,
            why,
        },
        Some("rejected") | Some("noresource") | Some("invariant") => {
            End::GiveUp { why, unknown: true }
        }
        Some("probation") | Some("giveup") => End::Again {
            after: wait(backoff),
            failure: true,
            why,
        },
        _ => End::Again {
            after: wait(backoff),
            failure: true,
            why,
        },
    }
}

/// Dialog state of an established subscription.
struct Dialog {
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    /// Request-URI of in-dialog requests: the notifier's Contact.
    remote_target: String,
    route_set: Vec<String>,
    cseq: u32,
    expires_at: Instant,
}

impl Subscription {
    pub fn new(spec: Spec, core: Arc<SipCore>) -> Self {
        let digest = DigestClient::new(core.credentials());
        Subscription {
            spec,
            core,
            digest,
            min_expires: 0,
            retry_after: None,
            redirect: None,
            redirects: 0,
        }
    }

    /// Runs until shutdown or until the URI is given up.
    pub async fn run(mut self) {
        let mut failures = 0u32;
        let mut shutdown = self.core.shutdown.clone();
        loop {
            tokio::select! {
                _ = self.core.throttle.acquire() => {}
                _ = shutdown.recv() => return,
            }
            let end = self.one_dialog(&mut failures).await;
            self.core.set_sub_state(&self.spec, None);
            match end {
                End::Shutdown => return,
                End::GiveUp { why, unknown } => {
                    tracing::warn!(connector = %self.core.name, user = %self.spec.aor, event = self.spec.package.event(), %why, "sip subscription given up");
                    self.core.error("subscription_given_up");
                    self.core.set_sub_state(&self.spec, Some("given_up"));
                    if unknown {
                        self.core
                            .update(&self.spec, Update::Gone { why: &why })
                            .await;
                    }
                    return;
                }
                End::Again {
                    after,
                    failure,
                    why,
                } => {
                    let after = if failure {
                        failures += 1;
                        let limit = self.core.config.max_failures_per_uri;
                        if limit > 0 && failures >= limit {
                            tracing::warn!(connector = %self.core.name, user = %self.spec.aor, event = self.spec.package.event(), failures, %why, "sip subscription failed too often; giving up on this URI");
                            self.core.error("subscription_given_up");
                            self.core.set_sub_state(&self.spec, Some("given_up"));
                            return;
                        }
                        self.core.error("subscription_failed");
                        tracing::info!(connector = %self.core.name, user = %self.spec.aor, event = self.spec.package.event(), failures, %why, retry_in = ?after, "sip subscription failed");
                        after
                    } else {
                        failures = 0;
                        tracing::debug!(connector = %self.core.name, user = %self.spec.aor, %why, "sip resubscribe");
                        after
                    };
                    if !after.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(after) => {}
                            _ = shutdown.recv() => return,
                        }
                    }
                }
            }
        }
    }

    fn target(&self) -> Target {
        self.core.target()
    }

    fn failure_delay(&self, failures: u32) -> Duration {
        backoff(
            self.core.config.retry_delay,
            self.core.config.retry_max,
            failures + 1,
        )
    }

    /// One subscription from the initial SUBSCRIBE to its end. `failures` (consecutive
    /// failed attempts) is reset once the dialog delivers a non-terminating NOTIFY.
    async fn one_dialog(&mut self, failures: &mut u32) -> End {
        let core = self.core.clone();
        let call_id = new_call_id(&core.local_host());
        let local_tag = new_tag();
        let (tx, mut rx) = mpsc::channel(NOTIFY_QUEUE);
        let wake = Arc::new(tokio::sync::Notify::new());
        let shared = Arc::new(Mutex::new(DialogShared {
            package: self.spec.package.event(),
            remote_tag: None,
            last_cseq: None,
            overflowed: false,
        }));
        // Registered before the SUBSCRIBE leaves, so a NOTIFY that overtakes the 2xx is
        // matched (reference §2.7).
        core.router.register(
            &call_id,
            &local_tag,
            Route {
                shared: shared.clone(),
                tx,
                wake: wake.clone(),
            },
        );
        let _guard = RouteGuard {
            router: &core.router,
            call_id: call_id.clone(),
            tag: local_tag.clone(),
        };
        let expires = core.config.expires.as_secs() as u32;
        let mut dialog = Dialog {
            call_id,
            local_tag,
            remote_tag: None,
            remote_target: self
                .redirect
                .clone()
                .unwrap_or_else(|| self.spec.uri.clone()),
            route_set: Vec::new(),
            cseq: 0,
            expires_at: Instant::now() + core.config.expires,
        };
        let timer_f = core.config.t1 * 64;
        let timer_n = Instant::now() + timer_f;
        let mut shutdown = core.shutdown.clone();

        // Initial SUBSCRIBE (with digest and 423 retries inside `send`).
        let resp = tokio::select! {
            r = self.send_subscribe(&mut dialog, expires) => r,
            _ = shutdown.recv() => return End::Shutdown,
        };
        let resp = match resp {
            Ok(r) => r,
            // Transport and digest failures back off like any failed attempt.
            Err(End::Again {
                failure: true, why, ..
            }) => {
                return End::Again {
                    after: self.failure_delay(*failures),
                    failure: true,
                    why,
                }
            }
            Err(end) => return end,
        };
        let code = resp.code().unwrap_or(0);
        if (300..400).contains(&code) {
            // Redirect: the same SUBSCRIBE to the Contact, through the same next hop
            // (our `server` stays the outbound proxy). A loop of redirects is a failure.
            match resp.contact() {
                Some(c) if self.redirects < 3 => {
                    self.redirects += 1;
                    self.redirect = Some(c.uri.clone());
                    return End::Again {
                        after: Duration::ZERO,
                        failure: false,
                        why: format!("redirected ({code}) to {}", c.uri),
                    };
                }
                _ => {
                    self.redirects = 0;
                    self.redirect = None;
                }
            }
        }
        if !(200..300).contains(&code) {
            // The next attempt starts from the presentity's own URI again.
            self.redirect = None;
            self.redirects = 0;
            return self.failed_response(&resp, *failures);
        }
        self.redirects = 0;
        self.confirm(&mut dialog, &resp, &shared, true);

        let mut got_notify = false;
        // From the granted Expires, not the requested one (pitfall 4).
        let granted = resp
            .expires()
            .map(|e| Duration::from_secs(e.into()))
            .unwrap_or(core.config.expires);
        let mut refresh_at = Instant::now() + refresh_after(granted, timer_f);
        let mut refresh_failures = 0u32;
        loop {
            let overflowed = std::mem::take(&mut shared.lock().expect("dialog lock").overflowed);
            if overflowed {
                // Missed state: a refresh brings the full state in a fresh NOTIFY.
                core.error("notify_overflow");
                refresh_at = Instant::now();
            }
            tokio::select! {
                n = rx.recv() => {
                    let Some(n) = n else { return End::Again { after: Duration::ZERO, failure: false, why: "router closed".into() } };
                    let first = !got_notify;
                    got_notify = true;
                    if dialog.remote_tag.is_none() {
                        // NOTIFY before the 2xx: it creates the dialog; its Record-Route
                        // is taken in order (§1).
                        dialog.remote_tag = shared.lock().expect("dialog lock").remote_tag.clone();
                        dialog.route_set = n.msg.header_list("Record-Route").into_iter().map(str::to_string).collect();
                    }
                    if let Some(c) = n.msg.contact() {
                        dialog.remote_target = c.uri.clone();
                    }
                    let ss = n.msg.subscription_state();
                    if ss.as_ref().is_none_or(|s| s.state != SubState::Terminated) {
                        // The subscription works: failures counted so far are not consecutive.
                        *failures = 0;
                    }
                    let needs_full = core.update(&self.spec, Update::Notify { msg: &n.msg, first }).await;
                    match ss {
                        Some(s) if s.state == SubState::Terminated => {
                            core.set_sub_state(&self.spec, None);
                            return on_terminated(s.reason.as_deref(), s.retry_after, self.failure_delay(*failures));
                        }
                        Some(s) => {
                            core.set_sub_state(&self.spec, Some(if s.state == SubState::Active { "active" } else { "pending" }));
                            if let Some(e) = s.expires {
                                let granted = Duration::from_secs(e.into());
                                dialog.expires_at = Instant::now() + granted;
                                refresh_at = Instant::now() + refresh_after(granted, timer_f);
                            }
                        }
                        None => {}
                    }
                    if needs_full {
                        // A gap in partial dialog-info versions: a refresh brings a full
                        // document (§5 rule 1).
                        core.error("dialog_version_gap");
                        refresh_at = Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(timer_n), if !got_notify => {
                    return End::Again { after: self.failure_delay(*failures), failure: true, why: "no NOTIFY within Timer N".into() };
                }
                _ = tokio::time::sleep_until(refresh_at) => {
                    match self.refresh(&mut dialog, expires, &shared).await {
                        Ok(granted) => {
                            refresh_failures = 0;
                            dialog.expires_at = Instant::now() + granted;
                            refresh_at = Instant::now() + refresh_after(granted, timer_f);
                        }
                        Err(Some(end)) => return end,
                        Err(None) => {
                            // Transient: the subscription is valid until its expiry.
                            refresh_failures += 1;
                            let now = Instant::now();
                            if now >= dialog.expires_at {
                                return End::Again { after: Duration::ZERO, failure: false, why: "expired while refresh failed".into() };
                            }
                            let wait = backoff(Duration::from_secs(2), Duration::from_secs(60), refresh_failures)
                                .max(self.retry_after.take().unwrap_or_default());
                            refresh_at = (now + wait).min(dialog.expires_at);
                        }
                    }
                }
                _ = wake.notified() => {}
                _ = shutdown.recv() => {
                    self.unsubscribe(&mut dialog).await;
                    // The notifier confirms with a final `terminated` NOTIFY; keep the
                    // route a moment so it gets its 200 rather than a 481.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(n) = rx.recv().await {
                            if n.msg.subscription_state().is_some_and(|s| s.state == SubState::Terminated) {
                                break;
                            }
                        }
                    })
                    .await;
                    return End::Shutdown;
                }
            }
        }
    }

    /// Takes the dialog facts from a 2xx.
    fn confirm(
        &self,
        dialog: &mut Dialog,
        resp: &SipMessage,
        shared: &Arc<Mutex<DialogShared>>,
        initial: bool,
    ) {
        let tag = resp.to_hdr().and_then(|t| t.tag().map(str::to_string));
        let mut s = shared.lock().expect("dialog lock");
        // A NOTIFY that overtook the 2xx created the dialog (§2.7): its tag and its own
        // Record-Route are taken when it is dequeued, not this (maybe other fork's) 2xx's.
        let created_by_notify = initial && s.remote_tag.is_some();
        if s.remote_tag.is_none() {
            s.remote_tag = tag.clone();
        }
        if dialog.remote_tag.is_none() && !created_by_notify {
            dialog.remote_tag = s.remote_tag.clone();
            if initial {
                // A dialog created by a response takes its Record-Route reversed (§1).
                let mut rr: Vec<String> = resp
                    .header_list("Record-Route")
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                rr.reverse();
                dialog.route_set = rr;
            }
        }
        if let Some(c) = resp.contact() {
            dialog.remote_target = c.uri.clone();
        }
        if let Some(e) = resp.expires() {
            dialog.expires_at = Instant::now() + Duration::from_secs(e.into());
        }
    }

    /// Maps a final non-2xx answer to the initial SUBSCRIBE (reference §2.2).
    fn failed_response(&self, resp: &SipMessage, failures: u32) -> End {
        let code = resp.code().unwrap_or(0);
        let why = format!(
            "SUBSCRIBE answered {code} {}",
            match &resp.start {
                super::message::StartLine::Response { reason, .. } => reason.as_str(),
                _ => "",
            }
        );
        let delay = self.failure_delay(failures);
        match code {
            489 => End::GiveUp {
                why: format!(
                    "{why}: the server does not support event `{}` (Allow-Events: {})",
                    self.spec.package.event(),
                    resp.header("Allow-Events").unwrap_or("-")
                ),
                unknown: false,
            },
            503 => End::Again {
                after: resp
                    .retry_after()
                    .map(|s| Duration::from_secs(s.into()).max(delay))
                    .unwrap_or(delay),
                failure: true,
                why,
            },
            _ => End::Again {
                after: delay,
                failure: true,
                why,
            },
        }
    }

    fn build_subscribe(&self, dialog: &Dialog, expires: u32) -> SipMessage {
        let core = &self.core;
        let spec = &self.spec;
        let mut req = SipMessage::request("SUBSCRIBE", &dialog.remote_target);
        req.add("Max-Forwards", "70");
        req.add(
            "From",
            format!("<{}>;tag={}", core.config.watcher, dialog.local_tag),
        );
        match &dialog.remote_tag {
            Some(t) => req.add("To", format!("<{}>;tag={t}", spec.uri)),
            None => req.add("To", format!("<{}>", spec.uri)),
        };
        req.add("Call-ID", dialog.call_id.clone());
        req.add("CSeq", format!("{} SUBSCRIBE", dialog.cseq));
        for r in &dialog.route_set {
            req.add("Route", r.clone());
        }
        req.add("Contact", core.contact());
        req.add("Event", spec.package.event());
        req.add("Accept", spec.package.accept(spec.list));
        req.add("Expires", expires.to_string());
        req.add("Allow", "NOTIFY, PUBLISH, OPTIONS");
        req.add("Allow-Events", "presence, dialog, message-summary");
        if spec.list {
            req.add("Supported", "eventlist");
        }
        req
    }

    /// Sends a SUBSCRIBE (initial or in-dialog), answering digest challenges and 423 with
    /// CSeq+1 each time. Err(End) for outcomes that end the subscription attempt.
    async fn send_subscribe(
        &mut self,
        dialog: &mut Dialog,
        mut expires: u32,
    ) -> Result<SipMessage, End> {
        let mut interval_retries = 0;
        if expires != 0 {
            expires = expires.max(self.min_expires);
        }
        loop {
            dialog.cseq += 1;
            let mut req = self.build_subscribe(dialog, expires);
            self.digest.authorize(&mut req);
            let resp = match self.core.stack.request(req.clone(), self.target()).await {
                Ok(r) => r,
                Err(e) => {
                    self.core.error("transport");
                    return Err(End::Again {
                        after: self.failure_delay(0),
                        failure: true,
                        why: e.to_string(),
                    });
                }
            };
            match resp.code().unwrap_or(0) {
                401 | 407 => {
                    if let Err(e) = self.digest.on_challenge(&req, &resp) {
                        self.core.error("auth");
                        tracing::warn!(connector = %self.core.name, user = %self.spec.aor, error = %e, "sip digest authentication failed");
                        return Err(End::Again {
                            after: self.failure_delay(0),
                            failure: true,
                            why: e.to_string(),
                        });
                    }
                }
                423 if interval_retries < 2 => {
                    interval_retries += 1;
                    match resp.min_expires() {
                        Some(min) if min > expires => {
                            expires = min;
                            self.min_expires = min;
                        }
                        _ => return Ok(resp),
                    }
                }
                c if (200..300).contains(&c) => {
                    self.digest.on_success();
                    return Ok(resp);
                }
                _ => return Ok(resp),
            }
        }
    }

    /// In-dialog refresh. Ok(granted); Err(Some(end)) when the subscription is gone;
    /// Err(None) for a transient failure (retry the refresh).
    async fn refresh(
        &mut self,
        dialog: &mut Dialog,
        expires: u32,
        shared: &Arc<Mutex<DialogShared>>,
    ) -> Result<Duration, Option<End>> {
        let resp = match self.send_subscribe(dialog, expires).await {
            Ok(r) => r,
            Err(End::Again { failure: true, .. }) => return Err(None),
            Err(e) => return Err(Some(e)),
        };
        let code = resp.code().unwrap_or(0);
        match code {
            200..=299 => {
                self.confirm(dialog, &resp, shared, false);
                let granted = resp
                    .expires()
                    .map(|e| Duration::from_secs(e.into()))
                    .unwrap_or(self.core.config.expires);
                Ok(granted)
            }
            // Dialog-killing answers (RFC 5057): start a new subscription now.
            404 | 410 | 416 | 480..=485 | 489 | 501 | 604 => {
                self.core.error(if code == 481 {
                    "refresh_481"
                } else {
                    "refresh_rejected"
                });
                Err(Some(End::Again {
                    after: Duration::ZERO,
                    failure: false,
                    why: format!("refresh answered {code}"),
                }))
            }
            _ => {
                // 503 Retry-After is honoured (reference §2.2); the dialog stays valid.
                self.retry_after = resp.retry_after().map(|s| Duration::from_secs(s.into()));
                Err(None)
            }
        }
    }

    async fn unsubscribe(&mut self, dialog: &mut Dialog) {
        if dialog.remote_tag.is_none() {
            return;
        }
        let deadline = self.core.config.shutdown_timeout;
        let _ = tokio::time::timeout(deadline, self.send_subscribe(dialog, 0)).await;
    }
}

/// The AOR of a NameAddr's URI.
pub fn aor_of(n: &NameAddr) -> Option<String> {
    super::message::uri_aor(&n.uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_before_expiry_by_timer_f() {
        let f = Duration::from_secs(32);
        assert_eq!(
            refresh_after(Duration::from_secs(3600), f),
            Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(120), f),
            Duration::from_secs(88)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(30), f),
            Duration::from_secs(2)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(1), f),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let f = Duration::from_secs(10);
        let cap = Duration::from_secs(100);
        let got: Vec<u64> = (1..=6).map(|n| backoff(f, cap, n).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 100, 100]);
        assert_eq!(backoff(f, cap, 1000), cap);
    }

    #[test]
    fn terminated_reasons_follow_the_policy() {
        let b = Duration::from_secs(30);
        assert!(matches!(
            on_terminated(Some("deactivated"), None, b),
            End::Again { after, failure: false, .. } if after.is_zero()
        ));
        assert!(matches!(
            on_terminated(Some("timeout"), None, b),
            End::Again { failure: false, .. }
        ));
        for r in ["rejected", "noresource", "invariant"] {
            assert!(matches!(
                on_terminated(Some(r), None, b),
                End::GiveUp { unknown: true, .. }
            ));
        }
        assert!(matches!(
            on_terminated(Some("probation"), Some(90), b),
            End::Again { after, failure: true, .. } if after == Duration::from_secs(90)
        ));
        assert!(matches!(
            on_terminated(Some("giveup"), None, b),
            End::Again { after, .. } if after == b
        ));
        assert!(matches!(
            on_terminated(None, None, b),
            End::Again { failure: true, .. }
        ));
        // retry-after is never undercut, even for an immediate reason.
        assert!(matches!(
            on_terminated(Some("deactivated"), Some(5), b),
            End::Again { after, .. } if after == Duration::from_secs(5)
        ));
    }
}
