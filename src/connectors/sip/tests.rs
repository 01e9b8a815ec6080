//! Deterministic unit tests of the subscriber, the publisher and the inbound compositor
//! against a scripted [`SipStack`] (reference `sip.md` §2, §7, §9, §14): what real peers
//! (Kamailio, SIPp; see `tests/sip.rs`) cannot easily provoke — NOTIFY before the 2xx,
//! forks, out-of-order CSeq, refresh failures, Timer N, stale nonces, backoff timing.
//!
//! Time is tokio's paused clock: timers (refresh, Timer N, backoff, throttle) fire at
//! exact virtual instants and the tests take no wall-clock time.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};

use super::config::{Package, SipConfig};
use super::connector::SipCore;
use super::digest::verify_request;
use super::esc::Compositor;
use super::message::SipMessage;
use super::publish::SipCommands;
use super::stack::{SipStack, StackError, Target, Transport};
use super::subscription::{NotifyVerdict, Spec, Subscription};
use crate::connectors::{CommandOutcome, CommandTarget, ObservationSender};
use crate::metrics::{labels, Metrics};
use crate::model::{Availability, Command, CommandAction, Observation};
use crate::shutdown::ShutdownTrigger;

// ---------------------------------------------------------------------------------------
// The fake stack

/// One step of the scripted answer to a request.
enum Act {
    /// Hand a NOTIFY to the router now (before the response: NOTIFY overtakes the 2xx).
    Notify(SipMessage),
    /// Hand a NOTIFY to the router from another task, after the response went back (it
    /// runs once the caller has the response and waits again).
    NotifyAfter(Duration, SipMessage),
    /// Let virtual time pass before the next step.
    Wait(Duration),
    /// The final response; only `NotifyAfter` may follow it.
    Reply(SipMessage),
    /// A transport error instead of a response.
    Fail,
}

type Script = Box<dyn FnMut(&SipMessage, usize) -> Vec<Act> + Send>;

#[derive(Clone, Debug)]
struct Sent {
    at: Instant,
    msg: SipMessage,
}

#[derive(Default)]
struct Log {
    sent: Vec<Sent>,
    notifies: Vec<(u32, NotifyVerdict)>,
}

/// Records every request and answers it by the script; NOTIFYs go through the core's
/// [`super::subscription::Router`], exactly as the dispatcher hands them over.
struct FakeStack {
    core: OnceLock<Weak<SipCore>>,
    script: Mutex<Script>,
    log: Arc<Mutex<Log>>,
}

fn inject(core: &SipCore, log: &Mutex<Log>, msg: &SipMessage) -> NotifyVerdict {
    let verdict = core.router.on_notify(msg);
    let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
    log.lock().unwrap().notifies.push((cseq, verdict));
    verdict
}

#[async_trait]
impl SipStack for FakeStack {
    async fn request(&self, request: SipMessage, target: Target) -> Result<SipMessage, StackError> {
        assert_eq!(target.addr, "192.0.2.1:5060".parse().unwrap());
        let n = {
            let mut log = self.log.lock().unwrap();
            log.sent.push(Sent {
                at: Instant::now(),
                msg: request.clone(),
            });
            log.sent.len() - 1
        };
        let acts = {
            let mut script = self.script.lock().unwrap();
            (*script)(&request, n)
        };
        let mut outcome = None;
        for act in acts {
            assert!(
                outcome.is_none() || matches!(act, Act::NotifyAfter(..)),
                "only NotifyAfter may follow the answer"
            );
            match act {
                Act::Notify(m) => {
                    let core = self.core.get().and_then(Weak::upgrade).expect("core");
                    inject(&core, &self.log, &m);
                }
                Act::NotifyAfter(d, m) => {
                    let core = self.core.get().cloned().expect("core");
                    let log = self.log.clone();
                    tokio::spawn(async move {
                        sleep(d).await;
                        if let Some(core) = core.upgrade() {
                            inject(&core, &log, &m);
                        }
                    });
                }
                Act::Wait(d) => sleep(d).await,
                Act::Reply(r) => outcome = Some(Ok(r)),
                Act::Fail => {
                    outcome = Some(Err(StackError::Send("scripted transport error".into())))
                }
            }
        }
        outcome.unwrap_or_else(|| panic!("the script gave no answer to request #{n}"))
    }

    fn local_addr(&self, _transport: Transport) -> Option<std::net::SocketAddr> {
        Some("10.0.0.1:5070".parse().unwrap())
    }
}

// ---------------------------------------------------------------------------------------
// The rig

struct Rig {
    core: Arc<SipCore>,
    log: Arc<Mutex<Log>>,
    trigger: ShutdownTrigger,
    obs: mpsc::Receiver<Observation>,
    t0: Instant,
}

const BASE: &str = r#"
server = "192.0.2.1:5060"
domain = "example.com"
watcher = "sip:watcher@example.com"
password = "secret"
contacts = ["alice"]
"#;

fn rig(extra: &str, script: impl FnMut(&SipMessage, usize) -> Vec<Act> + Send + 'static) -> Rig {
    let config: SipConfig = toml::from_str(&format!("{BASE}{extra}")).expect("config");
    assert!(
        config.validate("t").is_empty(),
        "{:?}",
        config.validate("t")
    );
    let log = Arc::new(Mutex::new(Log::default()));
    let fake = Arc::new(FakeStack {
        core: OnceLock::new(),
        script: Mutex::new(Box::new(script)),
        log: log.clone(),
    });
    let (trigger, shutdown) = crate::shutdown::channel();
    let (tx, obs) = mpsc::channel(1024);
    let core = Arc::new(SipCore::new(
        "t".into(),
        config,
        fake.clone(),
        shutdown,
        Metrics::new(),
        ObservationSender::new(tx),
    ));
    fake.core.set(Arc::downgrade(&core)).expect("set once");
    Rig {
        core,
        log,
        trigger,
        obs,
        t0: Instant::now(),
    }
}

fn spec(user: &str) -> Spec {
    Spec {
        aor: format!("{user}@example.com"),
        uri: format!("sip:{user}@example.com"),
        package: Package::Presence,
        list: false,
    }
}

impl Rig {
    fn spawn(&self, spec: Spec) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Subscription::new(spec, self.core.clone()).run())
    }

    fn sent(&self) -> Vec<Sent> {
        self.log.lock().unwrap().sent.clone()
    }

    fn subscribes(&self) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.msg.method() == Some("SUBSCRIBE"))
            .collect()
    }

    fn verdicts(&self) -> Vec<NotifyVerdict> {
        self.log
            .lock()
            .unwrap()
            .notifies
            .iter()
            .map(|(_, v)| *v)
            .collect()
    }

    /// A NOTIFY from the test itself (between requests).
    fn inject(&self, msg: &SipMessage) -> NotifyVerdict {
        inject(&self.core, &self.log, msg)
    }

    fn observations(&mut self) -> Vec<Observation> {
        let mut out = Vec::new();
        while let Ok(o) = self.obs.try_recv() {
            out.push(o);
        }
        out
    }

    fn availabilities(&mut self) -> Vec<Availability> {
        self.observations()
            .into_iter()
            .map(|o| o.state.availability)
            .collect()
    }

    /// Virtual time since the rig was built.
    fn at(&self, s: &Sent) -> Duration {
        s.at - self.t0
    }

    fn errors(&self, kind: &str) -> u64 {
        self.core
            .metrics
            .connector_errors
            .get_or_create(&labels([("connector", "t"), ("error_type", kind)]))
            .get()
    }

    fn gauge(&self, state: &str) -> i64 {
        self.core
            .metrics
            .subscriptions
            .get_or_create(&labels([("connector", "t"), ("state", state)]))
            .get()
    }
}

/// `at` is `want` give or take a timer tick.
#[track_caller]
fn assert_near(at: Duration, want: Duration) {
    let diff = at.abs_diff(want);
    assert!(
        diff <= Duration::from_millis(20),
        "at {at:?}, expected about {want:?}"
    );
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------
// Messages the scripts answer with

const NOTIFIER_CONTACT: &str = "<sip:alice@192.0.2.20:5062;transport=udp>";
const NOTIFIER_TARGET: &str = "sip:alice@192.0.2.20:5062;transport=udp";

fn pidf(basic: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com"><tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>"#
    )
}

fn in_dialog(req: &SipMessage) -> bool {
    req.to_hdr().is_some_and(|t| t.tag().is_some())
}

fn header(m: &SipMessage, name: &str) -> Option<String> {
    m.header(name).map(str::to_string)
}

fn from_tag(m: &SipMessage) -> String {
    m.from_hdr().unwrap().tag().unwrap().to_string()
}

fn to_tag(m: &SipMessage) -> Option<String> {
    m.to_hdr().unwrap().tag().map(str::to_string)
}

fn cseq(m: &SipMessage) -> u32 {
    m.cseq().unwrap().0
}

fn expires(m: &SipMessage) -> u32 {
    m.expires().unwrap()
}

/// A final response (the To tag added when the request had none).
fn answer(req: &SipMessage, code: u16, reason: &str, tag: &str) -> SipMessage {
    let mut r = SipMessage::response_to(req, code, reason);
    if !in_dialog(req) {
        r.set("To", format!("{};tag={tag}", req.header("To").unwrap()));
    }
    r
}

/// 200 to a SUBSCRIBE, granting `granted` seconds.
fn ok(req: &SipMessage, tag: &str, granted: u32) -> SipMessage {
    answer(req, 200, "OK", tag)
        .with("Contact", NOTIFIER_CONTACT)
        .with("Expires", granted.to_string())
}

/// A NOTIFY for the dialog `sub` opened (or refreshed), from the notifier tagged `tag`.
fn notify(sub: &SipMessage, tag: &str, cseq: u32, state: &str, body: Option<&str>) -> SipMessage {
    let presentity = sub.to_hdr().unwrap().uri;
    let mut n = SipMessage::request("NOTIFY", "sip:watcher@10.0.0.1:5070;transport=udp");
    n.add("Via", "SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKnotify");
    n.add("From", format!("<{presentity}>;tag={tag}"));
    n.add("To", sub.header("From").unwrap());
    n.add("Call-ID", sub.call_id().unwrap());
    n.add("CSeq", format!("{cseq} NOTIFY"));
    n.add("Contact", NOTIFIER_CONTACT);
    n.add("Event", sub.header("Event").unwrap());
    n.add("Subscription-State", state);
    if let Some(b) = body {
        n.set_body("application/pidf+xml", b.as_bytes().to_vec());
    }
    n
}

/// A notifier that answers every SUBSCRIBE 200 (`granted` s) and sends a NOTIFY (open,
/// `Subscription-State: active;expires=granted`) after it; `Expires: 0` gets the final
/// `terminated;reason=timeout`.
fn notifier(granted: u32) -> impl FnMut(&SipMessage, usize) -> Vec<Act> + Send + 'static {
    let mut notify_cseq = 0;
    move |req, _| {
        if !in_dialog(req) {
            notify_cseq = 0;
        }
        notify_cseq += 1;
        let state = if expires(req) == 0 {
            "terminated;reason=timeout".to_string()
        } else {
            format!("active;expires={granted}")
        };
        vec![
            Act::Reply(ok(req, "n1", granted)),
            Act::NotifyAfter(
                Duration::ZERO,
                notify(req, "n1", notify_cseq, &state, Some(&pidf("open"))),
            ),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// Subscriber: NOTIFY matching (§2.3, §2.7)

#[tokio::test(start_paused = true)]
async fn notify_before_the_2xx_creates_the_dialog_and_the_2xx_only_confirms() {
    let mut r = rig("", |req, n| {
        let mut acts = Vec::new();
        if n == 0 {
            acts.push(Act::Notify(notify(
                req,
                "n1",
                1,
                "active;expires=3600",
                Some(&pidf("open")),
            )));
            // The 2xx takes a slower path.
            acts.push(Act::Wait(Duration::from_millis(100)));
        }
        acts.push(Act::Reply(ok(req, "n1", 3600)));
        acts
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(1)).await;
    assert_eq!(r.verdicts(), [NotifyVerdict::Accepted]);
    let obs = r.observations();
    assert_eq!(obs.len(), 1);
    assert_eq!(obs[0].user, "alice@example.com");
    assert_eq!(obs[0].state.availability, Availability::Available);
    // One dialog: one route, one SUBSCRIBE, and the notifier's next NOTIFY belongs to it.
    assert_eq!(r.core.router.len(), 1);
    assert_eq!(r.subscribes().len(), 1);
    assert_eq!(r.gauge("active"), 1);
    let sub = r.subscribes()[0].msg.clone();
    let next = notify(&sub, "n1", 2, "active;expires=3599", Some(&pidf("closed")));
    assert_eq!(r.inject(&next), NotifyVerdict::Accepted);
    sleep(secs(1)).await;
    assert_eq!(r.availabilities(), [Availability::Offline]);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn notify_from_a_fork_before_the_2xx_of_another_fork_owns_the_dialog_and_its_route() {
    // Fork A's NOTIFY arrives first and creates the dialog (§2.7); fork B's 2xx comes
    // back through the proxy later. In-dialog requests must follow fork A: its tag, its
    // Contact, and the Record-Route of its NOTIFY taken in order (§1).
    let r = rig("", |req, n| {
        if n == 0 {
            let a = notify(req, "fork-a", 1, "active;expires=120", Some(&pidf("open")))
                .with("Record-Route", "<sip:edge.example.com;lr>")
                .with("Record-Route", "<sip:fork-a-proxy.example.com;lr>");
            let mut b = ok(req, "fork-b", 120)
                .with("Record-Route", "<sip:fork-b-proxy.example.com;lr>")
                .with("Record-Route", "<sip:edge.example.com;lr>");
            b.set("Contact", "<sip:alice@192.0.2.99:5060>");
            vec![Act::Notify(a), Act::Reply(b)]
        } else {
            vec![Act::Reply(ok(req, "x", 120))]
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(100)).await;
    let subs = r.subscribes();
    assert!(subs.len() >= 2, "no refresh");
    let refresh = &subs[1].msg;
    assert_eq!(to_tag(refresh).as_deref(), Some("fork-a"));
    assert_eq!(refresh.request_uri(), Some(NOTIFIER_TARGET));
    assert_eq!(
        refresh.header_list("Route"),
        [
            "<sip:edge.example.com;lr>",
            "<sip:fork-a-proxy.example.com;lr>"
        ]
    );
    // Fork B's NOTIFYs are refused: one dialog per subscription.
    let b = notify(&subs[0].msg, "fork-b", 1, "active", Some(&pidf("closed")));
    assert_eq!(r.inject(&b), NotifyVerdict::NoDialog);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_second_fork_after_the_first_delivered_gets_481_and_is_not_applied() {
    let mut r = rig("", notifier(3600));
    let task = r.spawn(spec("alice"));
    sleep(secs(1)).await;
    assert_eq!(r.availabilities(), [Availability::Available]);
    let sub = r.subscribes()[0].msg.clone();
    let fork = notify(&sub, "n2", 1, "active", Some(&pidf("closed")));
    assert_eq!(r.inject(&fork), NotifyVerdict::NoDialog);
    assert_eq!(NotifyVerdict::NoDialog.status().0, 481);
    sleep(secs(1)).await;
    assert!(r.observations().is_empty());
    // The first fork still works.
    let again = notify(&sub, "n1", 2, "active", Some(&pidf("closed")));
    assert_eq!(r.inject(&again), NotifyVerdict::Accepted);
    sleep(secs(1)).await;
    assert_eq!(r.availabilities(), [Availability::Offline]);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn notify_cseq_duplicate_and_out_of_order_are_not_applied() {
    let mut r = rig("", notifier(3600));
    let task = r.spawn(spec("alice"));
    sleep(secs(1)).await;
    r.observations();
    let sub = r.subscribes()[0].msg.clone();
    let n5 = notify(&sub, "n1", 5, "active", Some(&pidf("closed")));
    assert_eq!(r.inject(&n5), NotifyVerdict::Accepted);
    sleep(secs(1)).await;
    assert_eq!(r.availabilities(), [Availability::Offline]);
    // A retransmission: 200 again, not applied again.
    assert_eq!(r.inject(&n5), NotifyVerdict::Duplicate);
    assert_eq!(NotifyVerdict::Duplicate.status().0, 200);
    // Lower: out of order, 500, never applied.
    let n3 = notify(&sub, "n1", 3, "active", Some(&pidf("open")));
    assert_eq!(r.inject(&n3), NotifyVerdict::OutOfOrder);
    assert_eq!(NotifyVerdict::OutOfOrder.status().0, 500);
    sleep(secs(1)).await;
    assert!(r.observations().is_empty());
    let n6 = notify(&sub, "n1", 6, "active", Some(&pidf("open")));
    assert_eq!(r.inject(&n6), NotifyVerdict::Accepted);
    sleep(secs(1)).await;
    assert_eq!(r.availabilities(), [Availability::Available]);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn notify_with_another_event_gets_489() {
    let mut r = rig("", notifier(3600));
    let task = r.spawn(spec("alice"));
    sleep(secs(1)).await;
    r.observations();
    let sub = r.subscribes()[0].msg.clone();
    let mut n = notify(&sub, "n1", 2, "active", Some(&pidf("closed")));
    n.set("Event", "dialog");
    assert_eq!(r.inject(&n), NotifyVerdict::BadEvent);
    assert_eq!(NotifyVerdict::BadEvent.status().0, 489);
    // Unknown dialog, no To tag, missing Call-ID.
    let mut stray = notify(&sub, "n1", 3, "active", None);
    stray.set("Call-ID", "nobody@10.0.0.9");
    assert_eq!(r.inject(&stray), NotifyVerdict::NoDialog);
    let mut untagged = notify(&sub, "n1", 3, "active", None);
    untagged.set("To", "<sip:watcher@example.com>");
    assert_eq!(r.inject(&untagged), NotifyVerdict::NoDialog);
    let mut broken = notify(&sub, "n1", 3, "active", None);
    broken.remove("Call-ID");
    assert_eq!(r.inject(&broken), NotifyVerdict::Malformed);
    sleep(secs(1)).await;
    assert!(r.observations().is_empty());
    r.trigger.trigger();
    task.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Subscriber: refresh (§2.6, pitfall 4)

#[tokio::test(start_paused = true)]
async fn refresh_is_in_dialog_and_scheduled_from_the_granted_expires() {
    // Asked 3600, granted 120; the first NOTIFY gives no `expires` parameter, so the 2xx's
    // Expires is the only grant: refresh at min(96, 120 − 32) = 88 s.
    let r = rig("", |req, n| {
        let rr = |m: SipMessage| {
            m.with("Record-Route", "<sip:p2.example.com;lr>")
                .with("Record-Route", "<sip:p1.example.com;lr>")
        };
        match n {
            0 => vec![
                Act::Reply(rr(ok(req, "n1", 120))),
                Act::NotifyAfter(
                    Duration::ZERO,
                    notify(req, "n1", 1, "active", Some(&pidf("open"))),
                ),
            ],
            // The refresh's NOTIFY shortens the grant to 60 s: next refresh 28 s later.
            1 => vec![
                Act::Reply(ok(req, "n1", 120)),
                Act::NotifyAfter(
                    Duration::ZERO,
                    notify(req, "n1", 2, "active;expires=60", Some(&pidf("open"))),
                ),
            ],
            _ => vec![Act::Reply(ok(req, "n1", 120))],
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(130)).await;
    let subs = r.subscribes();
    assert!(subs.len() >= 3, "{} SUBSCRIBEs", subs.len());
    let (first, refresh) = (&subs[0].msg, &subs[1].msg);
    assert_eq!(expires(first), 3600);
    assert_eq!(to_tag(first), None);
    assert_eq!(cseq(first), 1);
    assert_eq!(first.request_uri(), Some("sip:alice@example.com"));

    assert_near(r.at(&subs[1]), secs(88));
    assert_eq!(refresh.call_id(), first.call_id());
    assert_eq!(from_tag(refresh), from_tag(first));
    assert_eq!(to_tag(refresh).as_deref(), Some("n1"));
    assert_eq!(cseq(refresh), 2);
    assert_eq!(refresh.request_uri(), Some(NOTIFIER_TARGET));
    assert_eq!(
        refresh.header_list("Route"),
        ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    assert_eq!(header(refresh, "Event").as_deref(), Some("presence"));
    assert_eq!(expires(refresh), 3600);

    // Re-computed from `Subscription-State: active;expires=60`: 88 + min(48, 28).
    assert_near(r.at(&subs[2]), secs(88 + 28));
    assert_eq!(cseq(&subs[2].msg), 3);
    assert_eq!(subs[2].msg.call_id(), first.call_id());
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn refresh_answered_481_starts_a_new_subscription_not_counted_as_failure() {
    // With a limit of one failure, a 481 counted as failure would give the URI up.
    let mut inner = notifier(120);
    let r = rig("max_failures_per_uri = 1\n", move |req, n| {
        if n == 1 {
            vec![Act::Reply(answer(
                req,
                481,
                "Subscription Does Not Exist",
                "",
            ))]
        } else {
            inner(req, n)
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(100)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 3);
    let (old, new) = (&subs[0].msg, &subs[2].msg);
    assert_near(r.at(&subs[1]), secs(88));
    assert_near(r.at(&subs[2]), secs(88));
    assert_ne!(new.call_id(), old.call_id());
    assert_ne!(from_tag(new), from_tag(old));
    assert_eq!(to_tag(new), None);
    assert_eq!(cseq(new), 1);
    assert_eq!(new.request_uri(), Some("sip:alice@example.com"));
    assert!(new.header("Route").is_none());
    assert_eq!(r.errors("subscription_failed"), 0);
    assert_eq!(r.errors("refresh_481"), 1);
    assert_eq!(r.gauge("given_up"), 0);
    assert_eq!(r.gauge("active"), 1);
    // The old dialog is gone.
    let stale = notify(old, "n1", 9, "active", None);
    assert_eq!(r.inject(&stale), NotifyVerdict::NoDialog);
    assert_eq!(r.core.router.len(), 1);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn refresh_answered_408_or_503_is_retried_with_backoff_until_expiry() {
    let mut r = rig("", |req, n| {
        if n == 0 || !in_dialog(req) {
            return vec![
                Act::Reply(ok(req, "n1", 120)),
                Act::NotifyAfter(
                    Duration::ZERO,
                    notify(req, "n1", 1, "active;expires=120", Some(&pidf("open"))),
                ),
            ];
        }
        if n % 2 == 1 {
            vec![Act::Reply(
                answer(req, 503, "Service Unavailable", "").with("Retry-After", "1"),
            )]
        } else {
            vec![Act::Reply(answer(req, 408, "Request Timeout", ""))]
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(100)).await;
    // Meanwhile the old dialog is alive: its NOTIFYs are taken.
    let first = r.subscribes()[0].msg.clone();
    r.observations();
    let n = notify(&first, "n1", 2, "active", Some(&pidf("closed")));
    assert_eq!(r.inject(&n), NotifyVerdict::Accepted);
    sleep(secs(1)).await;
    assert_eq!(r.availabilities(), [Availability::Offline]);
    sleep(secs(30)).await;

    let subs = r.subscribes();
    let refreshes: Vec<Duration> = subs
        .iter()
        .filter(|s| s.msg.call_id() == first.call_id() && cseq(&s.msg) > 1)
        .map(|s| r.at(s))
        .collect();
    // 88 s, then +2, +4, +8, +16, then capped at the expiry (120 s).
    let want = [88, 90, 94, 102, 118, 120];
    assert_eq!(refreshes.len(), want.len(), "{refreshes:?}");
    for (at, w) in refreshes.iter().zip(want) {
        assert_near(*at, secs(w));
    }
    // Expired: a brand-new subscription, at once, not a failure.
    let new: Vec<&Sent> = subs
        .iter()
        .filter(|s| s.msg.call_id() != first.call_id())
        .collect();
    assert_eq!(new.len(), 1);
    assert_near(r.at(new[0]), secs(120));
    assert_eq!(to_tag(&new[0].msg), None);
    assert_eq!(r.errors("subscription_failed"), 0);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn timer_n_without_notify_tears_down_and_resubscribes_after_backoff() {
    let mut r = rig("retry_delay = \"10s\"\n", |req, n| {
        let mut acts = vec![Act::Reply(ok(req, "n1", 3600))];
        if n > 0 {
            acts.push(Act::NotifyAfter(
                Duration::ZERO,
                notify(req, "n1", 1, "active", Some(&pidf("open"))),
            ));
        }
        acts
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(60)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    // Timer N = 64 × T1 = 32 s, then retry_delay.
    assert_near(r.at(&subs[1]), secs(32 + 10));
    assert_ne!(subs[1].msg.call_id(), subs[0].msg.call_id());
    assert_eq!(to_tag(&subs[1].msg), None);
    assert_eq!(r.errors("subscription_failed"), 1);
    let late = notify(&subs[0].msg, "n1", 1, "active", None);
    assert_eq!(r.inject(&late), NotifyVerdict::NoDialog);
    assert_eq!(r.availabilities(), [Availability::Available]);
    r.trigger.trigger();
    task.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Subscriber: terminated reasons (§2.5, pitfall 2)

/// Subscribes, lets the first NOTIFY through, then at 10 s terminates with `state`
/// (optionally with a body). Returns the rig and the task.
async fn terminated_at_10s(
    extra: &str,
    state: &str,
    body: Option<&str>,
) -> (Rig, tokio::task::JoinHandle<()>) {
    let mut r = rig(extra, notifier(3600));
    let task = r.spawn(spec("alice"));
    sleep(secs(10)).await;
    assert_eq!(r.availabilities(), [Availability::Available]);
    let sub = r.subscribes()[0].msg.clone();
    let n = notify(&sub, "n1", 2, state, body);
    assert_eq!(r.inject(&n), NotifyVerdict::Accepted);
    (r, task)
}

#[tokio::test(start_paused = true)]
async fn terminated_deactivated_resubscribes_at_once() {
    let (r, task) = terminated_at_10s("", "terminated;reason=deactivated", None).await;
    sleep(secs(1)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    assert!(r.at(&subs[1]) - secs(10) < Duration::from_millis(100));
    assert_ne!(subs[1].msg.call_id(), subs[0].msg.call_id());
    assert_eq!(r.errors("subscription_failed"), 0);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn terminated_timeout_not_asked_for_resubscribes_at_once() {
    let (r, task) = terminated_at_10s("", "terminated;reason=timeout", None).await;
    sleep(secs(1)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    assert!(r.at(&subs[1]) - secs(10) < Duration::from_millis(100));
    assert_eq!(to_tag(&subs[1].msg), None);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn terminated_probation_waits_for_retry_after() {
    let (r, task) = terminated_at_10s(
        "retry_delay = \"5s\"\n",
        "terminated;reason=probation;retry-after=90",
        None,
    )
    .await;
    sleep(secs(89)).await;
    assert_eq!(r.subscribes().len(), 1, "re-subscribed before retry-after");
    sleep(secs(2)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    assert_near(r.at(&subs[1]), secs(100));
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn terminated_rejected_or_noresource_gives_up_with_unknown() {
    for reason in ["rejected", "noresource"] {
        let (mut r, task) =
            terminated_at_10s("", &format!("terminated;reason={reason}"), None).await;
        // No retry, ever; the task ends; the user is unknown now.
        tokio::time::timeout(secs(60), task)
            .await
            .expect("task ended")
            .unwrap();
        sleep(secs(86_400)).await;
        assert_eq!(r.subscribes().len(), 1, "{reason}: retried");
        let obs = r.observations();
        assert_eq!(obs.len(), 1, "{reason}");
        assert_eq!(obs[0].state.availability, Availability::Unknown);
        assert_eq!(
            obs[0].state.raw.get("sip.subscription").map(String::as_str),
            Some(format!("terminated;reason={reason}").as_str())
        );
        assert_eq!(r.gauge("given_up"), 1);
        assert_eq!(r.gauge("active"), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn terminated_notify_with_a_body_applies_the_last_state_not_offline() {
    let mut r = rig("", |req, n| {
        // Closed at first; whoever subscribes later finds the user open.
        let basic = if n == 0 { "closed" } else { "open" };
        vec![
            Act::Reply(ok(req, "n1", 3600)),
            Act::NotifyAfter(
                Duration::ZERO,
                notify(req, "n1", 1, "active", Some(&pidf(basic))),
            ),
        ]
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(10)).await;
    assert_eq!(r.availabilities(), [Availability::Offline]);
    let sub = r.subscribes()[0].msg.clone();
    let last = notify(
        &sub,
        "n1",
        2,
        "terminated;reason=timeout",
        Some(&pidf("open")),
    );
    assert_eq!(r.inject(&last), NotifyVerdict::Accepted);
    sleep(Duration::from_millis(10)).await;
    // The final body is the last known state; "terminated" is not "offline".
    let obs = r.observations();
    assert_eq!(obs[0].state.availability, Availability::Available);
    assert!(obs
        .iter()
        .all(|o| o.state.availability != Availability::Offline));
    r.trigger.trigger();
    task.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Subscriber: digest (§9), 423 (§2.2)

fn challenge(req: &SipMessage, code: u16, nonce: &str, stale: bool) -> SipMessage {
    let (name, reason) = if code == 407 {
        ("Proxy-Authenticate", "Proxy Authentication Required")
    } else {
        ("WWW-Authenticate", "Unauthorized")
    };
    let stale = if stale { ", stale=true" } else { "" };
    answer(req, code, reason, "srv").with(
        name,
        format!(r#"Digest realm="example.com", nonce="{nonce}", qop="auth", algorithm=MD5{stale}"#),
    )
}

#[tokio::test(start_paused = true)]
async fn digest_407_is_answered_with_proxy_authorization_and_cseq_plus_one() {
    let mut ok_notifier = notifier(120);
    let r = rig("", move |req, n| {
        if n == 0 {
            vec![Act::Reply(challenge(req, 407, "nonce-1", false))]
        } else {
            ok_notifier(req, n)
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(100)).await;
    let subs = r.subscribes();
    assert!(subs.len() >= 3);
    let (a, b) = (&subs[0].msg, &subs[1].msg);
    assert!(a.header("Proxy-Authorization").is_none());
    assert_eq!(cseq(b), cseq(a) + 1);
    assert_eq!(b.call_id(), a.call_id());
    assert_eq!(from_tag(b), from_tag(a));
    assert_eq!(to_tag(b), None);
    assert!(b.header("Authorization").is_none());
    let creds = b
        .header("Proxy-Authorization")
        .expect("Proxy-Authorization");
    assert!(verify_request(creds, b, "secret", "example.com", "nonce-1"));
    assert!(creds.contains("nc=00000001"), "{creds}");
    // The refresh answers the cached challenge pre-emptively, nc + 1.
    let refresh = &subs[2].msg;
    assert_eq!(to_tag(refresh).as_deref(), Some("n1"));
    let creds = refresh.header("Proxy-Authorization").expect("pre-emptive");
    assert!(verify_request(
        creds,
        refresh,
        "secret",
        "example.com",
        "nonce-1"
    ));
    assert!(creds.contains("nc=00000002"), "{creds}");
    assert_eq!(r.errors("auth"), 0);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn digest_401_is_answered_with_authorization() {
    let mut ok_notifier = notifier(3600);
    let r = rig("", move |req, n| {
        if n == 0 {
            vec![Act::Reply(challenge(req, 401, "nonce-1", false))]
        } else {
            ok_notifier(req, n)
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(1)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    let b = &subs[1].msg;
    assert_eq!(cseq(b), 2);
    assert_eq!(b.call_id(), subs[0].msg.call_id());
    assert!(b.header("Proxy-Authorization").is_none());
    let creds = b.header("Authorization").expect("Authorization");
    assert!(verify_request(creds, b, "secret", "example.com", "nonce-1"));
    assert_eq!(r.gauge("active"), 1);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn digest_same_realm_challenged_again_is_an_auth_failure_not_a_loop() {
    let mut nonce = 0;
    let r = rig("retry_delay = \"10s\"\n", move |req, _| {
        nonce += 1;
        vec![Act::Reply(challenge(
            req,
            407,
            &format!("nonce-{nonce}"),
            false,
        ))]
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(9)).await;
    // Without credentials, with credentials refused: stop.
    assert_eq!(r.subscribes().len(), 2);
    assert_eq!(r.errors("auth"), 1);
    assert_eq!(r.errors("subscription_failed"), 1);
    // The next attempt, after the backoff, starts over from a fresh challenge.
    sleep(secs(2)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 4);
    assert_near(r.at(&subs[2]), secs(10));
    assert!(subs[2].msg.header("Proxy-Authorization").is_none());
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn digest_stale_nonce_is_retried_once_silently() {
    let mut ok_notifier = notifier(3600);
    let r = rig("", move |req, n| match n {
        0 => vec![Act::Reply(challenge(req, 407, "nonce-1", false))],
        1 => vec![Act::Reply(challenge(req, 407, "nonce-2", true))],
        _ => ok_notifier(req, n),
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(1)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 3);
    let c = &subs[2].msg;
    assert_eq!(cseq(c), 3);
    assert_eq!(c.call_id(), subs[0].msg.call_id());
    let creds = c.header("Proxy-Authorization").unwrap();
    assert!(verify_request(creds, c, "secret", "example.com", "nonce-2"));
    assert!(
        creds.contains("nc=00000001"),
        "new nonce restarts nc: {creds}"
    );
    assert_eq!(r.errors("auth"), 0);
    assert_eq!(r.gauge("active"), 1);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn interval_too_brief_is_resent_with_min_expires() {
    let mut ok_notifier = notifier(7200);
    let r = rig("", move |req, n| {
        if n == 0 {
            vec![Act::Reply(
                answer(req, 423, "Interval Too Brief", "srv").with("Min-Expires", "7200"),
            )]
        } else {
            ok_notifier(req, n)
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(1)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    assert_eq!(expires(&subs[0].msg), 3600);
    assert_eq!(expires(&subs[1].msg), 7200);
    assert_eq!(cseq(&subs[1].msg), 2);
    assert_eq!(subs[1].msg.call_id(), subs[0].msg.call_id());
    assert_eq!(r.gauge("active"), 1);
    r.trigger.trigger();
    task.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Subscriber: failure limit, backoff, throttle, shutdown

#[tokio::test(start_paused = true)]
async fn per_uri_failure_limit_gives_up_after_doubling_delays() {
    let r = rig(
        "max_failures_per_uri = 3\nretry_delay = \"10s\"\nretry_max = \"1h\"\n",
        |req, _| vec![Act::Reply(answer(req, 404, "Not Found", "srv"))],
    );
    let task = r.spawn(spec("alice"));
    tokio::time::timeout(secs(3600), task)
        .await
        .expect("given up")
        .unwrap();
    sleep(secs(86_400)).await;
    let subs = r.subscribes();
    let at: Vec<Duration> = subs.iter().map(|s| r.at(s)).collect();
    assert_eq!(at.len(), 3, "{at:?}");
    assert_near(at[0], secs(0));
    assert_near(at[1], secs(10));
    assert_near(at[2], secs(30));
    assert_eq!(r.gauge("given_up"), 1);
    assert_eq!(r.errors("subscription_given_up"), 1);
}

#[tokio::test(start_paused = true)]
async fn no_failure_limit_keeps_trying_with_capped_backoff() {
    let r = rig(
        "max_failures_per_uri = 0\nretry_delay = \"10s\"\nretry_max = \"60s\"\n",
        |req, _| vec![Act::Reply(answer(req, 404, "Not Found", "srv"))],
    );
    let task = r.spawn(spec("alice"));
    sleep(secs(400)).await;
    let at: Vec<u64> = r
        .subscribes()
        .iter()
        .map(|s| r.at(s).as_secs_f64().round() as u64)
        .collect();
    // Delays 10, 20, 40, 60, 60, 60, ...
    assert_eq!(at, [0, 10, 30, 70, 130, 190, 250, 310, 370]);
    assert_eq!(r.gauge("given_up"), 0);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn initial_503_honours_retry_after() {
    let mut ok_notifier = notifier(3600);
    let r = rig("retry_delay = \"10s\"\n", move |req, n| {
        if n == 0 {
            vec![Act::Reply(
                answer(req, 503, "Service Unavailable", "srv").with("Retry-After", "120"),
            )]
        } else {
            ok_notifier(req, n)
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(119)).await;
    assert_eq!(r.subscribes().len(), 1, "retried before Retry-After");
    sleep(secs(2)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    assert_near(r.at(&subs[1]), secs(120));
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn transport_errors_back_off_by_doubling_too() {
    let r = rig(
        "max_failures_per_uri = 0\nretry_delay = \"10s\"\nretry_max = \"1h\"\n",
        |_, _| vec![Act::Fail],
    );
    let task = r.spawn(spec("alice"));
    sleep(secs(100)).await;
    let at: Vec<u64> = r
        .subscribes()
        .iter()
        .map(|s| r.at(s).as_secs_f64().round() as u64)
        .collect();
    assert_eq!(at, [0, 10, 30, 70]);
    assert_eq!(r.errors("transport"), 4);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failures_are_consecutive_a_subscription_that_delivered_resets_them() {
    // Every subscription works (2xx + NOTIFY) and is ended by `probation` a minute later.
    // None of them failed to subscribe, so a limit of 2 must never give the URI up.
    let r = rig(
        "max_failures_per_uri = 2\nretry_delay = \"10s\"\n",
        notifier(3600),
    );
    let task = r.spawn(spec("alice"));
    for round in 0..4 {
        sleep(secs(60)).await;
        let subs = r.subscribes();
        assert_eq!(subs.len(), round + 1, "round {round}");
        let sub = subs[round].msg.clone();
        let end = notify(&sub, "n1", 2, "terminated;reason=probation", None);
        assert_eq!(r.inject(&end), NotifyVerdict::Accepted);
    }
    sleep(secs(60)).await;
    assert_eq!(r.subscribes().len(), 5);
    assert_eq!(r.gauge("given_up"), 0);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn throttle_spaces_initial_subscribes() {
    let r = rig("subscribe_rate = 10.0\n", notifier(3600));
    let tasks: Vec<_> = (0..30).map(|i| r.spawn(spec(&format!("u{i}")))).collect();
    sleep(secs(10)).await;
    let mut at: Vec<Duration> = r.subscribes().iter().map(|s| r.at(s)).collect();
    assert_eq!(at.len(), 30);
    at.sort();
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(100),
            "{:?} then {:?}",
            w[0],
            w[1]
        );
    }
    assert!(at[29] < secs(3));
    assert_eq!(r.gauge("active"), 30);
    r.trigger.trigger();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_unsubscribes_in_dialog_with_expires_0() {
    let r = rig("", notifier(3600));
    let task = r.spawn(spec("alice"));
    sleep(secs(10)).await;
    r.trigger.trigger();
    tokio::time::timeout(secs(10), task)
        .await
        .expect("ended")
        .unwrap();
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    let (first, bye) = (&subs[0].msg, &subs[1].msg);
    assert_eq!(expires(bye), 0);
    assert_eq!(bye.call_id(), first.call_id());
    assert_eq!(from_tag(bye), from_tag(first));
    assert_eq!(to_tag(bye).as_deref(), Some("n1"));
    assert_eq!(cseq(bye), 2);
    assert_eq!(bye.request_uri(), Some(NOTIFIER_TARGET));
    // The final `terminated;reason=timeout` NOTIFY still found its dialog.
    assert_eq!(
        r.verdicts(),
        [NotifyVerdict::Accepted, NotifyVerdict::Accepted]
    );
    assert!(r.core.router.is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_481_to_the_unsubscribe_still_ends() {
    let mut inner = notifier(3600);
    let r = rig("", move |req, n| {
        if expires(req) == 0 {
            vec![Act::Reply(answer(
                req,
                481,
                "Subscription Does Not Exist",
                "",
            ))]
        } else {
            inner(req, n)
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(10)).await;
    r.trigger.trigger();
    tokio::time::timeout(secs(10), task)
        .await
        .expect("ended")
        .unwrap();
    assert_eq!(r.subscribes().len(), 2);
    assert!(r.core.router.is_empty());
}

#[tokio::test(start_paused = true)]
async fn notify_queue_overflow_answers_200_and_refreshes_for_the_full_state() {
    let mut r = rig("", |req, _| {
        // The refresh brings the full state in the notifier's next NOTIFY.
        let (c, basic) = if in_dialog(req) {
            (100, "open")
        } else {
            (1, "closed")
        };
        vec![
            Act::Reply(ok(req, "n1", 3600)),
            Act::NotifyAfter(
                Duration::ZERO,
                notify(req, "n1", c, "active", Some(&pidf(basic))),
            ),
        ]
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(10)).await;
    r.observations();
    let sub = r.subscribes()[0].msg.clone();
    // The dialog's task cannot run between these: the queue (64) fills up.
    let verdicts: Vec<NotifyVerdict> = (2..72)
        .map(|c| r.inject(&notify(&sub, "n1", c, "active", Some(&pidf("closed")))))
        .collect();
    assert!(verdicts[..64].iter().all(|v| *v == NotifyVerdict::Accepted));
    assert!(verdicts[64..].iter().all(|v| *v == NotifyVerdict::Overflow));
    assert_eq!(NotifyVerdict::Overflow.status().0, 200);
    sleep(secs(1)).await;
    assert_eq!(r.errors("notify_overflow"), 1);
    // A refresh at once: the notifier sends the full state again.
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    assert_near(r.at(&subs[1]), secs(10));
    assert_eq!(to_tag(&subs[1].msg).as_deref(), Some("n1"));
    let got = r.availabilities();
    assert_eq!(got.len(), 64 + 1);
    assert_eq!(got.last(), Some(&Availability::Available));
    r.trigger.trigger();
    task.await.unwrap();
}

fn dialog_info(version: u32, state: &str, dialogs: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="{state}" entity="sip:alice@example.com">{dialogs}</dialog-info>"#
    )
}

#[tokio::test(start_paused = true)]
async fn redirect_3xx_resubscribes_to_the_contact_at_once() {
    let mut r = rig("", |req, n| {
        if n == 0 {
            vec![Act::Reply(
                answer(req, 302, "Moved Temporarily", "r1")
                    .with("Contact", "<sip:alice@pres2.example.com>"),
            )]
        } else {
            vec![
                Act::Reply(ok(req, "n1", 3600)),
                Act::NotifyAfter(
                    Duration::ZERO,
                    notify(req, "n1", 1, "active;expires=3600", Some(&pidf("open"))),
                ),
            ]
        }
    });
    let task = r.spawn(spec("alice"));
    sleep(secs(2)).await;
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2);
    assert_eq!(
        subs[1].msg.request_uri(),
        Some("sip:alice@pres2.example.com")
    );
    assert_eq!(
        subs[1].msg.to_hdr().unwrap().uri,
        "sip:alice@example.com",
        "To stays the presentity"
    );
    // At once: only the subscribe throttle (15/s by default) spaces the two.
    assert!(
        r.at(&subs[1]) <= Duration::from_millis(70),
        "{:?}",
        r.at(&subs[1])
    );
    assert_eq!(r.availabilities(), [Availability::Available]);
    assert_eq!(r.errors("subscription_failed"), 0);
    r.trigger.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dialog_info_version_gap_refreshes_for_a_full_document() {
    let mut r = rig("", |req, _| {
        let (c, body) = if in_dialog(req) {
            // The refresh's NOTIFY: a full document, version 9, in a call.
            (
                10,
                dialog_info(
                    9,
                    "full",
                    r#"<dialog id="d1" direction="recipient"><state>confirmed</state></dialog>"#,
                ),
            )
        } else {
            (1, dialog_info(0, "full", ""))
        };
        let mut n = notify(req, "n1", c, "active;expires=3600", None);
        n.set_body("application/dialog-info+xml", body.into_bytes());
        vec![
            Act::Reply(ok(req, "n1", 3600)),
            Act::NotifyAfter(Duration::ZERO, n),
        ]
    });
    let mut sp = spec("alice");
    sp.package = Package::Dialog;
    let task = r.spawn(sp);
    sleep(secs(5)).await;
    assert_eq!(r.observations().len(), 1, "the first full document");
    let sub = r.subscribes()[0].msg.clone();
    // Version 3 after 0: versions 1 and 2 were lost, so this partial document cannot be
    // applied; the subscriber asks for a full one with an in-dialog refresh.
    let mut gap = notify(&sub, "n1", 2, "active;expires=3595", None);
    gap.set_body(
        "application/dialog-info+xml",
        dialog_info(
            3,
            "partial",
            r#"<dialog id="d1" direction="recipient"><state>early</state></dialog>"#,
        )
        .into_bytes(),
    );
    assert_eq!(r.inject(&gap), NotifyVerdict::Accepted);
    sleep(secs(1)).await;
    assert_eq!(r.errors("dialog_version_gap"), 1);
    let subs = r.subscribes();
    assert_eq!(subs.len(), 2, "one refresh");
    assert_near(r.at(&subs[1]), secs(5));
    assert_eq!(to_tag(&subs[1].msg).as_deref(), Some("n1"));
    let obs = r.observations();
    assert_eq!(obs.len(), 1, "only the full document's state: {obs:?}");
    assert_eq!(
        obs[0].state.raw.get("sip.dialog").map(String::as_str),
        Some("in-a-call")
    );
    r.trigger.trigger();
    task.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Publisher (§7.1, pitfall 5)

struct Pub {
    rig: Rig,
    commands: SipCommands,
}

fn publisher(
    extra: &str,
    script: impl FnMut(&SipMessage, usize) -> Vec<Act> + Send + 'static,
) -> Pub {
    let rig = rig(extra, script);
    let cell = Arc::new(OnceLock::new());
    cell.set(rig.core.clone()).map_err(|_| "set twice").unwrap();
    let commands = SipCommands::new("t", vec!["alice@example.com".into()], cell);
    Pub { rig, commands }
}

impl Pub {
    fn publishes(&self) -> Vec<Sent> {
        self.rig
            .sent()
            .into_iter()
            .filter(|s| s.msg.method() == Some("PUBLISH"))
            .collect()
    }
}

fn command(action: CommandAction, availability: Option<Availability>) -> Command {
    Command {
        command_id: "c1".into(),
        action,
        user: "alice@example.com".into(),
        source: None,
        availability,
        activity: None,
        note: None,
        expiry_seconds: None,
        issued_at: None,
    }
}

fn set(a: Availability) -> Command {
    command(CommandAction::SetPresence, Some(a))
}

fn clear() -> Command {
    command(CommandAction::ClearPresence, None)
}

/// 200 to a PUBLISH with entity-tag `e<n>` (n = request number) and the asked Expires.
fn published(req: &SipMessage, n: usize) -> SipMessage {
    answer(req, 200, "OK", "esc")
        .with("SIP-ETag", format!("e{n}"))
        .with("Expires", expires(req).to_string())
}

fn esc_ok() -> impl FnMut(&SipMessage, usize) -> Vec<Act> + Send + 'static {
    |req, n| vec![Act::Reply(published(req, n))]
}

#[tokio::test(start_paused = true)]
async fn publish_initial_then_modify_with_the_latest_etag() {
    let p = publisher("", esc_ok());
    assert_eq!(
        p.commands.apply(&set(Availability::Busy)).await,
        CommandOutcome::Applied
    );
    let first = p.publishes()[0].msg.clone();
    assert_eq!(first.request_uri(), Some("sip:alice@example.com"));
    assert!(first.header("SIP-If-Match").is_none());
    assert_eq!(
        header(&first, "Content-Type").as_deref(),
        Some("application/pidf+xml")
    );
    assert_eq!(header(&first, "Event").as_deref(), Some("presence"));
    assert_eq!(expires(&first), 3600);
    let body = String::from_utf8(first.body.clone()).unwrap();
    assert!(body.contains("urn:ietf:params:xml:ns:pidf"), "{body}");
    assert!(body.contains("<basic>open</basic>"), "{body}");

    assert_eq!(
        p.commands.apply(&set(Availability::Away)).await,
        CommandOutcome::Applied
    );
    assert_eq!(
        p.commands.apply(&set(Availability::Available)).await,
        CommandOutcome::Applied
    );
    let pubs = p.publishes();
    assert_eq!(pubs.len(), 3);
    assert_eq!(header(&pubs[1].msg, "SIP-If-Match").as_deref(), Some("e0"));
    assert_eq!(header(&pubs[2].msg, "SIP-If-Match").as_deref(), Some("e1"));
    for s in &pubs[1..] {
        assert!(!s.msg.body.is_empty(), "a modify carries the full body");
    }
}

#[tokio::test(start_paused = true)]
async fn publish_refresh_is_bodyless_with_the_latest_etag_before_expiry() {
    let p = publisher("publish_expires = \"120s\"\n", esc_ok());
    assert_eq!(
        p.commands.apply(&set(Availability::Busy)).await,
        CommandOutcome::Applied
    );
    sleep(secs(200)).await;
    let pubs = p.publishes();
    assert_eq!(pubs.len(), 3, "initial + refreshes at 88 s and 176 s");
    assert_near(p.rig.at(&pubs[1]), secs(88));
    assert_near(p.rig.at(&pubs[2]), secs(176));
    for (i, s) in pubs[1..].iter().enumerate() {
        assert!(s.msg.body.is_empty());
        assert!(s.msg.header("Content-Type").is_none());
        assert_eq!(
            header(&s.msg, "SIP-If-Match"),
            Some(format!("e{i}")),
            "refresh {i} uses the tag of the answer before it"
        );
        assert_eq!(expires(&s.msg), 120);
    }
    // A modify after refreshes uses the refresh's tag.
    p.commands.apply(&set(Availability::Away)).await;
    let pubs = p.publishes();
    assert_eq!(header(&pubs[3].msg, "SIP-If-Match").as_deref(), Some("e2"));
}

#[tokio::test(start_paused = true)]
async fn publish_412_on_modify_republishes_from_scratch() {
    let p = publisher("", |req, n| {
        if n == 1 {
            vec![Act::Reply(answer(
                req,
                412,
                "Conditional Request Failed",
                "esc",
            ))]
        } else {
            vec![Act::Reply(published(req, n))]
        }
    });
    p.commands.apply(&set(Availability::Busy)).await;
    assert_eq!(
        p.commands.apply(&set(Availability::Away)).await,
        CommandOutcome::Applied
    );
    let pubs = p.publishes();
    assert_eq!(pubs.len(), 3);
    assert_eq!(header(&pubs[1].msg, "SIP-If-Match").as_deref(), Some("e0"));
    assert!(pubs[2].msg.header("SIP-If-Match").is_none());
    assert_eq!(pubs[2].msg.body, pubs[1].msg.body, "the full new body");
    assert!(!pubs[2].msg.body.is_empty());
    p.commands.apply(&set(Availability::Busy)).await;
    assert_eq!(
        header(&p.publishes()[3].msg, "SIP-If-Match").as_deref(),
        Some("e2")
    );
}

#[tokio::test(start_paused = true)]
async fn publish_500_to_a_conditional_publish_is_treated_like_412_once() {
    let p = publisher("", |req, n| {
        if n >= 1 {
            vec![Act::Reply(answer(req, 500, "wrong etag", "esc"))]
        } else {
            vec![Act::Reply(published(req, n))]
        }
    });
    p.commands.apply(&set(Availability::Busy)).await;
    // 500 to the modify → one initial PUBLISH; 500 to that one is a plain failure.
    let out = p.commands.apply(&set(Availability::Away)).await;
    assert!(matches!(out, CommandOutcome::Failed(_)), "{out:?}");
    let pubs = p.publishes();
    assert_eq!(pubs.len(), 3);
    assert!(pubs[1].msg.header("SIP-If-Match").is_some());
    assert!(pubs[2].msg.header("SIP-If-Match").is_none());
    assert!(!pubs[2].msg.body.is_empty());
}

#[tokio::test(start_paused = true)]
async fn publish_412_on_refresh_republishes_the_full_body() {
    let p = publisher("publish_expires = \"120s\"\n", |req, n| {
        if n == 1 {
            vec![Act::Reply(answer(
                req,
                412,
                "Conditional Request Failed",
                "esc",
            ))]
        } else {
            vec![Act::Reply(published(req, n))]
        }
    });
    p.commands.apply(&set(Availability::Busy)).await;
    sleep(secs(100)).await;
    let pubs = p.publishes();
    assert_eq!(pubs.len(), 3);
    assert!(pubs[1].msg.body.is_empty());
    assert!(pubs[2].msg.header("SIP-If-Match").is_none());
    assert_eq!(pubs[2].msg.body, pubs[0].msg.body);
    assert_near(p.rig.at(&pubs[2]), secs(88));
}

#[tokio::test(start_paused = true)]
async fn publish_clear_removes_with_expires_0_and_stops_refreshing() {
    let p = publisher("publish_expires = \"120s\"\n", esc_ok());
    p.commands.apply(&set(Availability::Busy)).await;
    sleep(secs(90)).await;
    assert_eq!(p.publishes().len(), 2);
    assert_eq!(p.commands.apply(&clear()).await, CommandOutcome::Applied);
    let pubs = p.publishes();
    let rm = &pubs[2].msg;
    assert_eq!(expires(rm), 0);
    assert_eq!(header(rm, "SIP-If-Match").as_deref(), Some("e1"));
    assert!(rm.body.is_empty());
    sleep(secs(36_000)).await;
    assert_eq!(p.publishes().len(), 3, "refreshed after CLEAR");
    // Nothing to clear any more.
    assert_eq!(p.commands.apply(&clear()).await, CommandOutcome::Applied);
    assert_eq!(p.publishes().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn publish_clear_answered_without_etag_is_applied() {
    // A removal leaves no event state, so an ESC may answer it without SIP-ETag (our own
    // compositor does: esc.rs answers `200 OK, Expires: 0`).
    let p = publisher("", |req, n| {
        if expires(req) == 0 {
            vec![Act::Reply(
                answer(req, 200, "OK", "esc").with("Expires", "0"),
            )]
        } else {
            vec![Act::Reply(published(req, n))]
        }
    });
    p.commands.apply(&set(Availability::Busy)).await;
    assert_eq!(p.commands.apply(&clear()).await, CommandOutcome::Applied);
}

#[tokio::test(start_paused = true)]
async fn publish_403_is_rejected_and_503_failed() {
    let p = publisher("", |req, n| {
        if n == 0 {
            vec![Act::Reply(answer(req, 403, "Forbidden", "esc"))]
        } else {
            vec![Act::Reply(answer(req, 503, "Service Unavailable", "esc"))]
        }
    });
    let out = p.commands.apply(&set(Availability::Busy)).await;
    assert!(matches!(out, CommandOutcome::Rejected(_)), "{out:?}");
    let out = p.commands.apply(&set(Availability::Busy)).await;
    assert!(matches!(out, CommandOutcome::Failed(_)), "{out:?}");
    // Nothing was published: no refresher.
    sleep(secs(36_000)).await;
    assert_eq!(p.publishes().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn publish_407_is_answered_with_credentials() {
    let p = publisher("", |req, n| {
        if n == 0 {
            vec![Act::Reply(challenge(req, 407, "nonce-p", false))]
        } else {
            vec![Act::Reply(published(req, n))]
        }
    });
    assert_eq!(
        p.commands.apply(&set(Availability::Busy)).await,
        CommandOutcome::Applied
    );
    let pubs = p.publishes();
    assert_eq!(pubs.len(), 2);
    let b = &pubs[1].msg;
    assert_eq!(cseq(b), cseq(&pubs[0].msg) + 1);
    assert_eq!(b.call_id(), pubs[0].msg.call_id());
    let creds = b.header("Proxy-Authorization").unwrap();
    assert!(verify_request(creds, b, "secret", "example.com", "nonce-p"));
}

#[tokio::test(start_paused = true)]
async fn publish_refresh_and_modify_carry_credentials_pre_emptively() {
    // Only the very first request is challenged; a server that keeps the nonce accepts
    // later requests with nc + 1 and no new round trip.
    let p = publisher("publish_expires = \"120s\"", |req, n| {
        if n == 0 {
            vec![Act::Reply(challenge(req, 407, "nonce-p", false))]
        } else {
            vec![Act::Reply(published(req, n))]
        }
    });
    assert_eq!(
        p.commands.apply(&set(Availability::Busy)).await,
        CommandOutcome::Applied
    );
    sleep(secs(100)).await; // past the refresh at min(96 s, 120 − 32 s) = 88 s
    assert_eq!(
        p.commands.apply(&set(Availability::Away)).await,
        CommandOutcome::Applied
    );
    let pubs = p.publishes();
    assert_eq!(pubs.len(), 4, "challenge, answer, refresh, modify");
    for (i, s) in pubs.iter().enumerate().skip(1) {
        let creds = s
            .msg
            .header("Proxy-Authorization")
            .unwrap_or_else(|| panic!("request {i} has no credentials"));
        assert!(verify_request(
            creds,
            &s.msg,
            "secret",
            "example.com",
            "nonce-p"
        ));
        assert!(creds.contains(&format!("nc={:08x}", i)), "{creds}");
    }
    assert!(pubs[2].msg.body.is_empty(), "the refresh has no body");
}

// ---------------------------------------------------------------------------------------
// Inbound PUBLISH compositor (§7.2)

fn esc_rig(extra: &str) -> (Rig, Compositor) {
    let r = rig(
        &format!("[inbound_publish]\nenabled = true\nmin_expires = \"60s\"\n{extra}"),
        |_, _| panic!("the compositor sends nothing"),
    );
    let c = Compositor::new(r.core.clone());
    (r, c)
}

fn inbound(
    user: &str,
    event: &str,
    if_match: Option<&str>,
    expires: Option<u32>,
    body: Option<(&str, &str)>,
) -> SipMessage {
    let uri = format!("sip:{user}@example.com");
    let mut m = SipMessage::request("PUBLISH", &uri);
    m.add("Via", "SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKpub");
    m.add("From", format!("<{uri}>;tag=ph"));
    m.add("To", format!("<{uri}>"));
    m.add("Call-ID", "pub@192.0.2.30");
    m.add("CSeq", "1 PUBLISH");
    m.add("Event", event);
    if let Some(t) = if_match {
        m.add("SIP-If-Match", t);
    }
    if let Some(e) = expires {
        m.add("Expires", e.to_string());
    }
    if let Some((ct, b)) = body {
        m.set_body(ct, b.as_bytes().to_vec());
    }
    m
}

const PIDF_CT: &str = "application/pidf+xml";

fn etag_of(resp: &SipMessage) -> String {
    resp.header("SIP-ETag").expect("SIP-ETag").to_string()
}

#[tokio::test(start_paused = true)]
async fn compositor_refuses_bad_publishes() {
    let (_r, c) = esc_rig("");
    let open = pidf("open");
    // Initial without body.
    let (resp, changed) = c.on_publish(&inbound("alice", "presence", None, Some(600), None));
    assert_eq!(resp.code(), Some(400));
    assert!(changed.is_empty());
    // Unknown entity-tag.
    let (resp, _) = c.on_publish(&inbound("alice", "presence", Some("nope"), Some(600), None));
    assert_eq!(resp.code(), Some(412));
    // Too brief.
    let (resp, _) = c.on_publish(&inbound(
        "alice",
        "presence",
        None,
        Some(30),
        Some((PIDF_CT, &open)),
    ));
    assert_eq!(resp.code(), Some(423));
    assert_eq!(resp.min_expires(), Some(60));
    // Unsupported event.
    let (resp, _) = c.on_publish(&inbound(
        "alice",
        "conference",
        None,
        Some(600),
        Some((PIDF_CT, &open)),
    ));
    assert_eq!(resp.code(), Some(489));
    assert!(resp.header("Allow-Events").unwrap().contains("presence"));
    // Body type not for this event.
    let (resp, _) = c.on_publish(&inbound(
        "alice",
        "presence",
        None,
        Some(600),
        Some(("text/plain", "hello")),
    ));
    assert_eq!(resp.code(), Some(415));
    assert!(resp.header("Accept").unwrap().contains(PIDF_CT));
}

#[tokio::test(start_paused = true)]
async fn compositor_new_etag_on_every_success_refresh_keeps_state_remove_is_nobody() {
    let (mut r, c) = esc_rig("");
    let (resp, changed) = c.on_publish(&inbound(
        "alice",
        "presence",
        None,
        Some(600),
        Some((PIDF_CT, &pidf("open"))),
    ));
    assert_eq!(resp.code(), Some(200));
    assert_eq!(resp.expires(), Some(600));
    assert_eq!(changed, ["alice@example.com"]);
    let e1 = etag_of(&resp);
    c.emit("alice@example.com").await;
    assert_eq!(r.availabilities(), [Availability::Available]);

    // Refresh: no body, a new tag, the state unchanged.
    let (resp, changed) = c.on_publish(&inbound(
        "alice",
        "presence",
        Some(e1.as_str()),
        Some(600),
        None,
    ));
    assert_eq!(resp.code(), Some(200));
    let e2 = etag_of(&resp);
    assert_ne!(e2, e1);
    assert!(changed.is_empty());
    c.emit("alice@example.com").await;
    assert_eq!(r.availabilities(), [Availability::Available]);
    // The old tag is spent.
    let (resp, _) = c.on_publish(&inbound(
        "alice",
        "presence",
        Some(e1.as_str()),
        Some(600),
        None,
    ));
    assert_eq!(resp.code(), Some(412));

    // Modify.
    let (resp, changed) = c.on_publish(&inbound(
        "alice",
        "presence",
        Some(e2.as_str()),
        Some(600),
        Some((PIDF_CT, &pidf("closed"))),
    ));
    assert_eq!(resp.code(), Some(200));
    let e3 = etag_of(&resp);
    assert!(e3 != e1 && e3 != e2);
    assert_eq!(changed, ["alice@example.com"]);
    c.emit("alice@example.com").await;
    assert_eq!(r.availabilities(), [Availability::Offline]);

    // Remove: the user is "nobody published".
    let (resp, changed) = c.on_publish(&inbound(
        "alice",
        "presence",
        Some(e3.as_str()),
        Some(0),
        None,
    ));
    assert_eq!(resp.code(), Some(200));
    assert_eq!(resp.expires(), Some(0));
    assert_eq!(changed, ["alice@example.com"]);
    c.emit("alice@example.com").await;
    let obs = r.observations();
    assert_eq!(obs.len(), 1);
    assert_eq!(
        obs[0].state.raw.get("sip.subscription").map(String::as_str),
        Some("no-state")
    );
    assert_eq!(obs[0].state.availability, Availability::Offline);
    let (resp, _) = c.on_publish(&inbound(
        "alice",
        "presence",
        Some(e3.as_str()),
        Some(600),
        None,
    ));
    assert_eq!(resp.code(), Some(412));
}

#[tokio::test(start_paused = true)]
async fn compositor_table_full_is_503() {
    let (_r, c) = esc_rig("max_publications = 2\n");
    let open = pidf("open");
    let mut tags = Vec::new();
    for user in ["alice", "bob"] {
        let (resp, _) = c.on_publish(&inbound(
            user,
            "presence",
            None,
            Some(600),
            Some((PIDF_CT, &open)),
        ));
        assert_eq!(resp.code(), Some(200));
        tags.push(etag_of(&resp));
    }
    let (resp, _) = c.on_publish(&inbound(
        "carol",
        "presence",
        None,
        Some(600),
        Some((PIDF_CT, &open)),
    ));
    assert_eq!(resp.code(), Some(503));
    assert!(resp.header("Retry-After").is_some());
    // Refreshing an existing publication still works; removing one frees a slot.
    let (resp, _) = c.on_publish(&inbound(
        "alice",
        "presence",
        Some(tags[0].as_str()),
        Some(600),
        None,
    ));
    assert_eq!(resp.code(), Some(200));
    let (resp, _) = c.on_publish(&inbound(
        "bob",
        "presence",
        Some(tags[1].as_str()),
        Some(0),
        None,
    ));
    assert_eq!(resp.code(), Some(200));
    let (resp, _) = c.on_publish(&inbound(
        "carol",
        "presence",
        None,
        Some(600),
        Some((PIDF_CT, &open)),
    ));
    assert_eq!(resp.code(), Some(200));
}
