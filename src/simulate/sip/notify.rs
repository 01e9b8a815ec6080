//! The notifier side of one subscription dialog: its queue of NOTIFYs and the task that
//! sends them.
//!
//! Every dialog has its own FIFO of [`Job`]s. At most one NOTIFY per dialog is in flight
//! (the next waits for the final response to the previous one, so the subscriber sees
//! CSeqs and dialog-info versions in order), and dialogs never wait for each other: a
//! drain task is spawned when a dialog's queue goes from empty to non-empty and ends when
//! it is empty again, so idle subscriptions cost no task.
//!
//! A dialog can be *held*: jobs queue up but are not sent. The SUBSCRIBE handler holds the
//! dialog while it decides, queues the NOTIFY the SUBSCRIBE triggers, sends the 200 and
//! only then releases it — so the 200 always goes out before that NOTIFY, and a state
//! change racing with the SUBSCRIBE is queued behind it, as Kamailio orders them (§2.8).

use super::state::Snapshot;
use crate::connectors::sip::message::SipMessage;
use crate::connectors::sip::stack::{StackError, Target, Transport};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Dialog identity on our side: Call-ID and our (To) tag. Our tag is random per dialog, so
/// the subscriber's From tag is checked, not needed for lookup.
pub type DialogKey = (String, String);

/// Event packages the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Package {
    Presence,
    Dialog,
    MessageSummary,
}

impl Package {
    pub fn as_str(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::Dialog => "dialog",
            Package::MessageSummary => "message-summary",
        }
    }

    /// The lowercased package name of an Event header.
    pub fn parse(name: &str) -> Option<Package> {
        match name {
            "presence" => Some(Package::Presence),
            "dialog" => Some(Package::Dialog),
            "message-summary" => Some(Package::MessageSummary),
            _ => None,
        }
    }
}

/// How a subscription ends: `Subscription-State: terminated;reason=…[;retry-after=…]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// `timeout`, `deactivated`, `probation`, `rejected`, `noresource`, `giveup`,
    /// `invariant` (RFC 6665 §4.1.3) or any other token.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
}

impl Termination {
    pub fn new(reason: &str, retry_after: Option<u32>) -> Self {
        Termination {
            reason: reason.trim().to_ascii_lowercase(),
            retry_after,
        }
    }

    pub fn timeout() -> Self {
        Termination::new("timeout", None)
    }

    /// `probation;retry-after=30` (the Subscription-State parameter syntax).
    pub fn parse(s: &str) -> Option<Termination> {
        let mut parts = s.split(';').map(str::trim);
        let reason = parts.next().filter(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        })?;
        let mut retry_after = None;
        for p in parts {
            let (name, value) = p.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("retry-after") {
                return None;
            }
            retry_after = Some(value.trim().parse().ok()?);
        }
        Some(Termination::new(reason, retry_after))
    }

    /// Whether the final NOTIFY still carries the state. Kamailio sends the last state
    /// with `timeout` (§2.5, observed); when authorization is refused or the resource is
    /// gone there is no state to show.
    pub fn with_body(&self) -> bool {
        !matches!(self.reason.as_str(), "rejected" | "noresource")
    }

    /// The Subscription-State value.
    pub fn header(&self) -> String {
        match self.retry_after {
            Some(s) => format!("terminated;reason={};retry-after={s}", self.reason),
            None => format!("terminated;reason={}", self.reason),
        }
    }
}

/// One NOTIFY to send.
pub(crate) struct Job {
    pub snapshot: Snapshot,
    /// `Some` for the final NOTIFY of the subscription.
    pub end: Option<Termination>,
    /// Fired when the NOTIFY's transaction is over (NOTIFY-before-200 fault).
    pub done: Option<oneshot::Sender<()>>,
}

impl Job {
    pub fn active(snapshot: Snapshot) -> Job {
        Job {
            snapshot,
            end: None,
            done: None,
        }
    }

    pub fn terminated(snapshot: Snapshot, end: Termination) -> Job {
        let snapshot = if end.with_body() {
            snapshot
        } else {
            Snapshot::Empty
        };
        Job {
            snapshot,
            end: Some(end),
            done: None,
        }
    }
}

/// Queued NOTIFYs per dialog above which a new state replaces the last queued one
/// instead of queueing behind it (a subscriber that answers slower than the state changes
/// gets the latest state, not an ever-growing backlog). Counted in the stats.
pub const MAX_QUEUED: usize = 64;

/// The notifier's view of one subscription dialog.
pub(crate) struct Dialog {
    pub key: DialogKey,
    pub package: Package,
    /// The presentity, `user@domain` (logs, listings).
    pub aor: String,
    /// Event header value of our NOTIFYs (package and the subscriber's `id`).
    pub event: String,
    /// NOTIFY From: the SUBSCRIBE's To with our tag.
    pub from: String,
    /// NOTIFY To: the SUBSCRIBE's From.
    pub to: String,
    /// Route headers (the SUBSCRIBE's Record-Route, in order: we are the UAS).
    pub route: Vec<String>,
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    /// Remote target (the subscriber's Contact URI) and where it resolves to.
    pub target_uri: String,
    pub target: Target,
    pub expires_at: Instant,
    /// CSeq of the last NOTIFY sent.
    cseq: u32,
    /// dialog-info `version` of the next document.
    version: u32,
    jobs: VecDeque<Job>,
    running: bool,
    held: u32,
    closed: bool,
}

/// What a push asked of the caller.
#[must_use]
pub(crate) enum Kick {
    /// Nothing to do (a drain is running, the dialog is held or closed).
    None,
    /// Spawn a drain task for this dialog.
    Start,
}

impl Dialog {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: DialogKey,
        package: Package,
        aor: String,
        event: String,
        from: String,
        to: String,
        route: Vec<String>,
        target_uri: String,
        target: Target,
        expires_at: Instant,
    ) -> Dialog {
        Dialog {
            key,
            package,
            aor,
            event,
            from,
            to,
            route,
            inner: Mutex::new(Inner {
                target_uri,
                target,
                expires_at,
                // Kamailio's first NOTIFY has CSeq 2 in its own space (§2.8, observed).
                cseq: 1,
                // +1 per document sent. Kamailio's first is 1 (checked against 5.6.3);
                // RFC 4235 starts at 0, which our sipp notifier fixture covers.
                version: 1,
                jobs: VecDeque::new(),
                running: false,
                // Created held: the SUBSCRIBE handler releases it after the 200.
                held: 1,
                closed: false,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a NOTIFY. Returns `(queued, coalesced, kick)`; a closed dialog takes nothing.
    /// A terminating job closes the dialog: nothing is queued after it.
    pub fn push(&self, job: Job) -> (bool, bool, Kick) {
        let mut g = self.lock();
        if g.closed {
            return (false, false, Kick::None);
        }
        if job.end.is_some() {
            g.closed = true;
        } else if g.jobs.len() >= MAX_QUEUED {
            if let Some(last) = g
                .jobs
                .back_mut()
                .filter(|j| j.end.is_none() && j.done.is_none())
            {
                last.snapshot = job.snapshot;
                return (true, true, Kick::None);
            }
        }
        g.jobs.push_back(job);
        (true, false, g.kick())
    }

    /// Stops sending until [`Dialog::release`] (a NOTIFY already in flight completes).
    pub fn hold(&self) {
        self.lock().held += 1;
    }

    pub fn release(&self) -> Kick {
        let mut g = self.lock();
        g.held = g.held.saturating_sub(1);
        g.kick()
    }

    /// Ends the dialog without a NOTIFY: queued jobs are discarded.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.jobs.clear();
    }

    /// A refresh: new expiry, maybe a new remote target.
    pub fn refresh(&self, expires_at: Instant, target: Option<(String, Target)>) {
        let mut g = self.lock();
        g.expires_at = expires_at;
        if let Some((uri, t)) = target {
            g.target_uri = uri;
            g.target = t;
        }
    }

    /// The next NOTIFY to send, or `None` when the drain task should end (it clears
    /// `running` then, under the same lock as the check).
    pub fn next(&self, contact: impl Fn(Transport) -> String) -> Option<(SipMessage, Target, Job)> {
        let mut g = self.lock();
        if g.held > 0 || g.jobs.is_empty() {
            g.running = false;
            return None;
        }
        let job = g.jobs.pop_front()?;
        g.cseq += 1;
        let version = g.version;
        if self.package == Package::Dialog {
            g.version += 1;
        }
        let now = Instant::now();
        let state = match &job.end {
            Some(t) => t.header(),
            None => {
                // Remaining time in whole seconds, counting down like Kamailio's: the
                // granted value right after granting (observed: `expires=120` for 120), 59
                // a second after granting 60. At least 1 while active.
                let left = g.expires_at.saturating_duration_since(now);
                let left = ((left.as_millis() + 500) / 1000).max(1);
                format!("active;expires={left}")
            }
        };
        let mut m = SipMessage::request("NOTIFY", &g.target_uri);
        m.add("Max-Forwards", "70");
        for r in &self.route {
            m.add("Route", r.as_str());
        }
        m.add("From", self.from.as_str())
            .add("To", self.to.as_str())
            .add("Call-ID", self.key.0.as_str())
            .add("CSeq", format!("{} NOTIFY", g.cseq))
            .add("Contact", contact(g.target.transport))
            .add("Event", self.event.as_str())
            .add("Subscription-State", state);
        let (ctype, body) = job.snapshot.render(version);
        m.set_body(ctype, body);
        Some((m, g.target, job))
    }

    pub fn target_uri(&self) -> String {
        self.lock().target_uri.clone()
    }

    pub fn queued(&self) -> usize {
        self.lock().jobs.len()
    }
}

impl Inner {
    fn kick(&mut self) -> Kick {
        if self.running || self.held > 0 || self.jobs.is_empty() {
            return Kick::None;
        }
        self.running = true;
        Kick::Start
    }
}

/// How the subscriber answered one NOTIFY.
pub(crate) enum Outcome {
    Delivered,
    /// A non-2xx that leaves the subscription in place.
    Failed,
    /// 481, 408 or a transport failure: the subscription is dropped (Kamailio removes it on
    /// 481, and on a timeout with `timeout_rm_subs`, its default — reference §2.3 rule 1).
    Gone,
    Stopped,
}

pub(crate) fn outcome(r: &Result<SipMessage, StackError>) -> Outcome {
    match r {
        Ok(resp) => match resp.code() {
            Some(200..=299) => Outcome::Delivered,
            Some(481 | 408) => Outcome::Gone,
            _ => Outcome::Failed,
        },
        Err(StackError::Stopped) => Outcome::Stopped,
        Err(_) => Outcome::Gone,
    }
}

/// The delay a fault adds before each NOTIFY (0 = none).
pub(crate) fn delay(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog(package: Package) -> Dialog {
        Dialog::new(
            ("cid".into(), "ours".into()),
            package,
            "alice@example.com".into(),
            package.as_str().into(),
            "<sip:alice@example.com>;tag=ours".into(),
            "<sip:w@example.com>;tag=theirs".into(),
            vec!["<sip:10.0.0.1;lr>".into()],
            "sip:w@127.0.0.1:5999".into(),
            Target {
                addr: "127.0.0.1:5999".parse().unwrap(),
                transport: Transport::Udp,
            },
            Instant::now() + Duration::from_secs(600),
        )
    }

    #[test]
    fn termination_parse_and_header() {
        let t = Termination::parse("Probation; retry-after=30").unwrap();
        assert_eq!(t, Termination::new("probation", Some(30)));
        assert_eq!(t.header(), "terminated;reason=probation;retry-after=30");
        assert!(t.with_body());
        assert!(!Termination::parse("rejected").unwrap().with_body());
        assert!(Termination::parse("").is_none());
        assert!(Termination::parse("x;foo=1").is_none());
        assert!(Termination::parse("bad reason").is_none());
    }

    #[test]
    fn held_dialog_queues_then_sends_in_order_with_cseq_and_version() {
        let d = dialog(Package::Dialog);
        let (q, _, k) = d.push(Job::active(Snapshot::Empty));
        assert!(q);
        assert!(matches!(k, Kick::None), "created held");
        assert!(matches!(d.release(), Kick::Start));
        let (m, target, _) = d.next(|_| "<sip:127.0.0.1:5080>".into()).unwrap();
        assert_eq!(m.cseq(), Some((2, "NOTIFY".into())));
        assert_eq!(m.request_uri(), Some("sip:w@127.0.0.1:5999"));
        assert_eq!(m.header("Route"), Some("<sip:10.0.0.1;lr>"));
        assert_eq!(target.addr.port(), 5999);
        let st = m.subscription_state().unwrap();
        assert_eq!(st.expires, Some(600));
        // Running: further pushes don't start a second drain.
        let snap = Snapshot::Dialog {
            entity: "sip:alice@example.com".into(),
            call: None,
        };
        assert!(matches!(d.push(Job::active(snap.clone())).2, Kick::None));
        let (m2, _, _) = d.next(|_| "<sip:127.0.0.1:5080>".into()).unwrap();
        assert_eq!(m2.cseq(), Some((3, "NOTIFY".into())));
        assert!(String::from_utf8_lossy(&m2.body).contains("version=\"2\""));
        assert!(d.next(|_| "c".into()).is_none(), "empty: drain ends");
        // Terminated closes the dialog.
        assert!(matches!(
            d.push(Job::terminated(snap.clone(), Termination::timeout()))
                .2,
            Kick::Start
        ));
        assert!(!d.push(Job::active(snap)).0);
        let (m3, _, job) = d.next(|_| "c".into()).unwrap();
        assert!(job.end.is_some());
        assert_eq!(
            m3.header("Subscription-State"),
            Some("terminated;reason=timeout")
        );
    }

    #[test]
    fn full_queue_coalesces_into_the_last_job() {
        let d = dialog(Package::Presence);
        for i in 0..MAX_QUEUED + 5 {
            let (q, _, _) = d.push(Job::active(Snapshot::Pidf(format!("{i}").into())));
            assert!(q);
        }
        assert_eq!(d.queued(), MAX_QUEUED);
        let _ = d.release();
        let mut last = None;
        while let Some((m, _, _)) = d.next(|_| "c".into()) {
            last = Some(String::from_utf8(m.body).unwrap());
        }
        assert_eq!(
            last.as_deref(),
            Some(format!("{}", MAX_QUEUED + 4).as_str())
        );
    }
}
