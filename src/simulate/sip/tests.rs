//! End-to-end tests over real sockets: the simulator on 127.0.0.1:0 and a minimal
//! subscriber written with [`SipMessage`] + [`RsipStack`]. The subscriber answers every
//! NOTIFY (200 unless told otherwise) and forwards it into a channel; tests await that
//! channel with a timeout instead of sleeping. "No NOTIFY" is a short wait on the channel.

use super::*;
use crate::connectors::sip::digest::{Credentials, DigestClient, DigestError};
use crate::connectors::sip::message::{new_call_id, new_tag, SubState};
use std::sync::atomic::AtomicU16;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

fn cfg() -> SipSimConfig {
    SipSimConfig {
        users: 5,
        min_expires: 10,
        ..SipSimConfig::default()
    }
}

async fn sim(cfg: SipSimConfig) -> SipSimHandle {
    start("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap()
}

/// A NOTIFY as received, and when.
struct Received {
    msg: SipMessage,
    at: Instant,
}

/// The test's subscriber.
struct Watcher {
    stack: Arc<RsipStack>,
    transport: Transport,
    contact: String,
    notifies: UnboundedReceiver<Received>,
    /// Status code NOTIFYs are answered with.
    answer: Arc<AtomicU16>,
    _cancel: tokio_util::sync::DropGuard,
}

/// One subscription dialog, subscriber side.
struct Sub {
    aor: String,
    event: String,
    call_id: String,
    from: String,
    to: String,
    cseq: u32,
    remote_target: String,
}

impl Sub {
    fn our_tag(&self) -> String {
        NameAddr::parse(&self.from)
            .unwrap()
            .tag()
            .unwrap()
            .to_string()
    }

    fn their_tag(&self) -> String {
        NameAddr::parse(&self.to)
            .unwrap()
            .tag()
            .unwrap()
            .to_string()
    }
}

use crate::connectors::sip::message::NameAddr;

impl Watcher {
    async fn new(transport: Transport) -> Watcher {
        let cancel = CancellationToken::new();
        let (stack, mut rx) = RsipStack::start(StackOptions::default(), cancel.clone())
            .await
            .unwrap();
        let (tx, notifies) = unbounded_channel();
        let answer = Arc::new(AtomicU16::new(200));
        let code = answer.clone();
        tokio::spawn(async move {
            while let Some(inc) = rx.recv().await {
                let at = Instant::now();
                let msg = inc.request.clone();
                if msg.method() == Some("NOTIFY") {
                    let c = code.load(Ordering::Relaxed);
                    let reason = if c == 200 { "OK" } else { "Nope" };
                    let _ = inc.respond(SipMessage::response_to(&msg, c, reason)).await;
                    let _ = tx.send(Received { msg, at });
                } else {
                    let _ = inc
                        .respond(SipMessage::response_to(&msg, 405, "Method Not Allowed"))
                        .await;
                }
            }
        });
        let addr = stack.local_addr(transport).unwrap();
        let contact = match transport {
            Transport::Udp => format!("<sip:watcher@{addr}>"),
            t => format!("<sip:watcher@{addr};transport={}>", t.param()),
        };
        Watcher {
            stack,
            transport,
            contact,
            notifies,
            answer,
            _cancel: cancel.drop_guard(),
        }
    }

    fn target(&self, sim: &SipSimHandle) -> Target {
        Target {
            addr: sim.addr(),
            transport: self.transport,
        }
    }

    fn initial(&self, aor: &str, event: &str, expires: Option<u32>) -> SipMessage {
        let mut m = SipMessage::request("SUBSCRIBE", &format!("sip:{aor}"));
        m.add("Max-Forwards", "70")
            .add(
                "From",
                format!("<sip:watcher@example.com>;tag={}", new_tag()),
            )
            .add("To", format!("<sip:{aor}>"))
            .add("Call-ID", new_call_id("watcher"))
            .add("CSeq", "1 SUBSCRIBE")
            .add("Contact", self.contact.as_str())
            .add("Event", event)
            .add(
                "Accept",
                "application/pidf+xml, application/dialog-info+xml",
            );
        if let Some(e) = expires {
            m.add("Expires", e.to_string());
        }
        m
    }

    async fn send(&self, sim: &SipSimHandle, req: SipMessage) -> SipMessage {
        self.stack.request(req, self.target(sim)).await.unwrap()
    }

    /// Initial SUBSCRIBE; the dialog when it was accepted.
    async fn subscribe(
        &self,
        sim: &SipSimHandle,
        aor: &str,
        event: &str,
        expires: Option<u32>,
    ) -> (SipMessage, Option<Sub>) {
        let req = self.initial(aor, event, expires);
        let resp = self.send(sim, req.clone()).await;
        let sub = (resp.code() == Some(200)).then(|| Sub {
            aor: aor.to_string(),
            event: event.to_string(),
            call_id: req.call_id().unwrap().to_string(),
            from: req.header("From").unwrap().to_string(),
            to: resp.header("To").unwrap().to_string(),
            cseq: 1,
            remote_target: resp.contact().unwrap().uri,
        });
        (resp, sub)
    }

    /// In-dialog SUBSCRIBE (refresh, or un-SUBSCRIBE with 0).
    fn in_dialog(&self, sub: &mut Sub, expires: u32) -> SipMessage {
        sub.cseq += 1;
        let mut m = SipMessage::request("SUBSCRIBE", &sub.remote_target);
        m.add("Max-Forwards", "70")
            .add("From", sub.from.as_str())
            .add("To", sub.to.as_str())
            .add("Call-ID", sub.call_id.as_str())
            .add("CSeq", format!("{} SUBSCRIBE", sub.cseq))
            .add("Contact", self.contact.as_str())
            .add("Event", sub.event.as_str())
            .add("Expires", expires.to_string());
        m
    }

    async fn refresh(&self, sim: &SipSimHandle, sub: &mut Sub, expires: u32) -> SipMessage {
        let req = self.in_dialog(sub, expires);
        self.send(sim, req).await
    }

    async fn notify(&mut self) -> SipMessage {
        self.notify_at().await.msg
    }

    async fn notify_at(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.notifies.recv())
            .await
            .expect("a NOTIFY within 5 s")
            .expect("watcher running")
    }

    async fn no_notify(&mut self) {
        if let Ok(Some(r)) = tokio::time::timeout(QUIET, self.notifies.recv()).await {
            panic!(
                "unexpected NOTIFY:\n{}",
                String::from_utf8_lossy(&r.msg.to_bytes())
            );
        }
    }
}

fn body(m: &SipMessage) -> String {
    String::from_utf8(m.body.clone()).unwrap()
}

fn sub_state(m: &SipMessage) -> crate::connectors::sip::message::SubscriptionState {
    m.subscription_state().expect("Subscription-State")
}

/// Polls a condition on the simulator (for effects that have no message of their own).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_gets_200_then_notify_with_the_state() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(1);
    assert_eq!(aor, "user0001@example.com");
    sim.set_activity(&aor, Some("busy"), Some("On a call"))
        .unwrap()
        .unwrap();

    let (resp, sub) = w.subscribe(&sim, &aor, "presence", Some(600)).await;
    let sub = sub.unwrap_or_else(|| panic!("{resp:?}"));
    assert_eq!(resp.expires(), Some(600));
    assert_eq!(
        resp.header("Contact"),
        Some(format!("<sip:{}>", sim.addr()).as_str())
    );
    let our_tag = sub.their_tag();

    let n = w.notify().await;
    assert_eq!(n.method(), Some("NOTIFY"));
    assert_eq!(
        n.request_uri(),
        Some(
            format!(
                "sip:watcher@{}",
                w.stack.local_addr(Transport::Udp).unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(n.cseq(), Some((2, "NOTIFY".into())));
    assert_eq!(n.call_id(), Some(sub.call_id.as_str()));
    assert_eq!(n.from_hdr().unwrap().tag(), Some(our_tag.as_str()));
    assert_eq!(n.to_hdr().unwrap().tag(), Some(sub.our_tag().as_str()));
    assert_eq!(n.event().unwrap().package, "presence");
    let st = sub_state(&n);
    assert_eq!(st.state, SubState::Active);
    assert_eq!(
        st.expires,
        Some(600),
        "the granted time, as Kamailio reports it"
    );
    assert_eq!(n.content_type().unwrap().essence, "application/pidf+xml");
    let b = body(&n);
    assert!(b.contains("entity=\"sip:user0001@example.com\""), "{b}");
    assert!(b.contains("<basic>open</basic>"));
    assert!(b.contains("<rpid:busy/>"));
    assert!(b.contains("<dm:note>On a call</dm:note>"));

    let s = sim.stats();
    assert_eq!((s.subscriptions_active, s.subscribes_initial), (1, 1));
    let subs = sim.subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (subs[0].user.as_str(), subs[0].package),
        (aor.as_str(), Package::Presence)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_change_notifies_with_higher_cseq_and_is_logged() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(2);
    let (_, sub) = w.subscribe(&sim, &aor, "presence", Some(300)).await;
    sub.unwrap();
    let first = w.notify().await;

    let seq = sim
        .set_presence(
            &aor,
            Presence::new(Basic::Open, Some("meeting"), Some("Weekly sync")),
        )
        .unwrap()
        .unwrap();
    let n = w.notify().await;
    assert!(n.cseq().unwrap().0 > first.cseq().unwrap().0);
    let b = body(&n);
    assert!(
        b.contains("<rpid:meeting/>") && b.contains("Weekly sync"),
        "{b}"
    );
    assert_eq!(sub_state(&n).state, SubState::Active);

    let seq2 = sim
        .set_presence(&aor, Presence::new(Basic::Closed, None, None))
        .unwrap()
        .unwrap();
    assert_eq!(seq2, seq + 1);
    let n2 = w.notify().await;
    assert_eq!(n2.cseq().unwrap().0, n.cseq().unwrap().0 + 1);
    assert!(body(&n2).contains("<basic>closed</basic>"));
    assert!(
        sim.stats().notifies_sent >= 2,
        "each NOTIFY waits for the previous answer"
    );

    let log = sim.changes_since(seq - 1);
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].seq, log[0].user.as_str()), (seq, aor.as_str()));
    assert!(log[0].summary.contains("meeting"));
    assert!(log[0].unix_ms > 0);
    assert_eq!(sim.last_seq(), seq2);
    // Another user's change does not reach this watcher.
    sim.set_activity(&sim.user_aor(3), Some("away"), None)
        .unwrap()
        .unwrap();
    w.no_notify().await;
    // An unknown user or activity is refused.
    assert_eq!(sim.set_activity("nobody@example.com", None, None), Ok(None));
    assert!(sim.set_activity(&aor, Some("dnd"), None).is_err());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_gets_200_and_a_fresh_notify_then_unsubscribe_terminates_with_body() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(1);
    sim.set_activity(&aor, Some("away"), None).unwrap().unwrap();
    let (_, sub) = w.subscribe(&sim, &aor, "presence", Some(100)).await;
    let mut sub = sub.unwrap();
    let n1 = w.notify().await;

    let r = w.refresh(&sim, &mut sub, 7200).await;
    assert_eq!(r.code(), Some(200));
    assert_eq!(r.expires(), Some(3600), "clamped to max_expires");
    assert_eq!(r.to_hdr().unwrap().tag(), Some(sub.their_tag().as_str()));
    let n2 = w.notify().await;
    assert!(n2.cseq().unwrap().0 > n1.cseq().unwrap().0);
    assert!(sub_state(&n2).expires.unwrap() > 3500);
    assert!(body(&n2).contains("<rpid:away/>"));

    let r = w.refresh(&sim, &mut sub, 0).await;
    assert_eq!((r.code(), r.expires()), (Some(200), Some(0)));
    let n3 = w.notify().await;
    let st = sub_state(&n3);
    assert_eq!(
        (st.state, st.reason.as_deref()),
        (SubState::Terminated, Some("timeout"))
    );
    assert!(
        body(&n3).contains("<rpid:away/>"),
        "final NOTIFY carries the last state"
    );
    assert_eq!(sim.stats().subscriptions_active, 0);
    let s = sim.stats();
    assert_eq!((s.subscribes_refresh, s.subscribes_unsubscribe), (1, 1));

    // The dialog is gone now.
    assert_eq!(w.refresh(&sim, &mut sub, 600).await.code(), Some(481));
    w.no_notify().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_subscriptions_answer_refresh_with_481() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let (_, sub) = w.subscribe(&sim, &sim.user_aor(1), "presence", None).await;
    let mut sub = sub.unwrap();
    // No Expires: the package default (3600 s).
    assert_eq!(sub_state(&w.notify().await).expires, Some(3600));
    assert_eq!(sim.drop_subscriptions(), 1);
    assert_eq!(sim.stats().subscriptions_active, 0);
    // No NOTIFY for a change any more, and a refresh is refused.
    sim.set_activity(&sub.aor, Some("busy"), None)
        .unwrap()
        .unwrap();
    w.no_notify().await;
    assert_eq!(w.refresh(&sim, &mut sub, 600).await.code(), Some(481));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_checks_unknown_user_and_bad_event() {
    let sim = sim(cfg()).await;
    let w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(1);
    let (r, _) = w.subscribe(&sim, &aor, "presence", Some(5)).await;
    assert_eq!((r.code(), r.min_expires()), (Some(423), Some(10)));
    assert!(r.to_hdr().unwrap().tag().is_some());
    let (r, _) = w
        .subscribe(&sim, "nobody@example.com", "presence", Some(600))
        .await;
    assert_eq!(r.code(), Some(404));
    let (r, _) = w.subscribe(&sim, &aor, "conference", Some(600)).await;
    assert_eq!(r.code(), Some(489));
    assert_eq!(
        r.header("Allow-Events"),
        Some("presence, dialog, message-summary")
    );
    let mut req = w.initial(&aor, "presence", Some(600));
    req.remove("Event");
    assert_eq!(w.send(&sim, req).await.code(), Some(400));
    let mut req = w.initial(&aor, "presence", Some(600));
    req.remove("Contact");
    assert_eq!(w.send(&sim, req).await.code(), Some(400));
    // The presentity may be addressed at the simulator's IP.
    let (r, _) = w
        .subscribe(
            &sim,
            &format!("user0001@{}", sim.addr().ip()),
            "presence",
            Some(600),
        )
        .await;
    assert_eq!(r.code(), Some(200));
    let s = sim.stats();
    assert_eq!((s.subscribes_initial, s.subscribes_rejected), (6, 5));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dialog_checks_tags_and_cseq_order() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let (_, sub) = w
        .subscribe(&sim, &sim.user_aor(1), "presence", Some(600))
        .await;
    let mut sub = sub.unwrap();
    w.notify().await;
    // Unknown To tag.
    let mut req = w.in_dialog(&mut sub, 600);
    req.set("To", format!("<sip:{}>;tag=deadbeef", sub.aor));
    assert_eq!(w.send(&sim, req).await.code(), Some(481));
    // Wrong From tag.
    let mut req = w.in_dialog(&mut sub, 600);
    req.set("From", "<sip:watcher@example.com>;tag=other");
    assert_eq!(w.send(&sim, req).await.code(), Some(481));
    // A CSeq not above the last one.
    let mut req = w.in_dialog(&mut sub, 600);
    req.set("CSeq", "1 SUBSCRIBE");
    assert_eq!(w.send(&sim, req).await.code(), Some(500));
    // Another package inside the dialog.
    let mut req = w.in_dialog(&mut sub, 600);
    req.set("Event", "dialog");
    assert_eq!(w.send(&sim, req).await.code(), Some(489));
    w.no_notify().await;
    assert_eq!(w.refresh(&sim, &mut sub, 600).await.code(), Some(200));
    w.notify().await;
    sim.shutdown().await;
}

async fn digest_round(algorithm: &str) {
    let mut c = cfg();
    c.auth = Some(SipSimAuth {
        realm: "sim.example.com".into(),
        algorithm: algorithm.into(),
        accounts: [("watcher".to_string(), "secret".to_string())]
            .into_iter()
            .collect(),
    });
    let sim = sim(c).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(1);

    let req = w.initial(&aor, "presence", Some(600));
    let challenge = w.send(&sim, req.clone()).await;
    assert_eq!(challenge.code(), Some(407));
    let pa = challenge.header("Proxy-Authenticate").unwrap();
    assert!(
        pa.contains("realm=\"sim.example.com\"") && pa.contains("qop=\"auth\""),
        "{pa}"
    );
    assert!(pa.contains(&format!("algorithm={algorithm}")), "{pa}");

    // Right credentials: accepted.
    let mut client = DigestClient::new(Credentials {
        username: "watcher".into(),
        password: "secret".into(),
    });
    client.on_challenge(&req, &challenge).unwrap();
    let mut retry = req.clone();
    retry.set("CSeq", "2 SUBSCRIBE");
    client.authorize(&mut retry);
    let ok = w.send(&sim, retry).await;
    assert_eq!(ok.code(), Some(200), "{ok:?}");
    client.on_success();
    w.notify().await;

    // Refresh with pre-emptive credentials (nc+1) passes too.
    let mut sub = Sub {
        aor: aor.clone(),
        event: "presence".into(),
        call_id: req.call_id().unwrap().into(),
        from: req.header("From").unwrap().into(),
        to: ok.header("To").unwrap().into(),
        cseq: 2,
        remote_target: ok.contact().unwrap().uri,
    };
    let mut refresh = w.in_dialog(&mut sub, 600);
    client.authorize(&mut refresh);
    assert_eq!(w.send(&sim, refresh).await.code(), Some(200));
    w.notify().await;
    // Without credentials it is challenged.
    assert_eq!(w.refresh(&sim, &mut sub, 600).await.code(), Some(407));

    // Wrong password: challenged again, and the client's loop guard trips.
    let mut bad = DigestClient::new(Credentials {
        username: "watcher".into(),
        password: "wrong".into(),
    });
    let req = w.initial(&aor, "presence", Some(600));
    let ch = w.send(&sim, req.clone()).await;
    bad.on_challenge(&req, &ch).unwrap();
    let mut retry = req.clone();
    retry.set("CSeq", "2 SUBSCRIBE");
    bad.authorize(&mut retry);
    let again = w.send(&sim, retry.clone()).await;
    assert_eq!(again.code(), Some(407));
    assert!(matches!(
        bad.on_challenge(&retry, &again),
        Err(DigestError::Rejected { .. })
    ));
    let s = sim.stats();
    assert_eq!(s.auth_failures, 1);
    assert_eq!(s.subscriptions_active, 1);
    w.no_notify().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_md5_407_then_accepted_wrong_password_rejected() {
    digest_round("MD5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_sha256_407_then_accepted_wrong_password_rejected() {
    digest_round("SHA-256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialog_package_versions_increase_with_each_notify() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(4);
    let (r, sub) = w.subscribe(&sim, &aor, "dialog", Some(600)).await;
    let mut sub = sub.unwrap_or_else(|| panic!("{r:?}"));
    let version = |m: &SipMessage| -> u32 {
        let b = body(m);
        let b = &b[b.find("<dialog-info").unwrap()..];
        let at = b.find("version=\"").unwrap() + 9;
        b[at..at + b[at..].find('"').unwrap()].parse().unwrap()
    };
    let n0 = w.notify().await;
    assert_eq!(n0.event().unwrap().package, "dialog");
    assert_eq!(
        n0.content_type().unwrap().essence,
        "application/dialog-info+xml"
    );
    assert_eq!(version(&n0), 1, "Kamailio starts at 1");
    assert!(body(&n0).contains("state=\"full\""));
    assert!(!body(&n0).contains("<dialog "), "idle: no dialog");

    sim.set_call(&aor, CallState::Ringing).unwrap();
    let n1 = w.notify().await;
    assert_eq!(version(&n1), 2);
    assert!(
        body(&n1).contains("direction=\"recipient\"") && body(&n1).contains("<state>early</state>")
    );
    sim.set_call(&aor, CallState::InCall).unwrap();
    let n2 = w.notify().await;
    assert_eq!(version(&n2), 3);
    assert!(body(&n2).contains("<state>confirmed</state>"));
    assert_eq!(
        sim.set_call(&aor, CallState::InCall),
        None,
        "no change, no NOTIFY"
    );
    sim.set_call(&aor, CallState::Idle).unwrap();
    let n3 = w.notify().await;
    assert_eq!(version(&n3), 4);
    assert!(body(&n3).contains("terminated"));
    // A presence change does not notify a dialog subscription.
    sim.set_activity(&aor, Some("busy"), None).unwrap().unwrap();
    w.no_notify().await;
    // A refresh gets the full state with the next version.
    assert_eq!(w.refresh(&sim, &mut sub, 600).await.code(), Some(200));
    assert_eq!(version(&w.notify().await), 5);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_subscription_and_notifies() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Tcp).await;
    let aor = sim.user_aor(1);
    let (r, sub) = w.subscribe(&sim, &aor, "presence", Some(600)).await;
    let mut sub = sub.unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(
        r.header("Contact"),
        Some(format!("<sip:{};transport=tcp>", sim.addr()).as_str())
    );
    let n = w.notify().await;
    assert!(n.header("Via").unwrap().starts_with("SIP/2.0/TCP"), "{n:?}");
    sim.set_activity(&aor, Some("on-the-phone"), None)
        .unwrap()
        .unwrap();
    assert!(body(&w.notify().await).contains("<rpid:on-the-phone/>"));
    assert_eq!(w.refresh(&sim, &mut sub, 0).await.code(), Some(200));
    assert_eq!(sub_state(&w.notify().await).state, SubState::Terminated);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_with_reasons() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(1);
    let (_, sub) = w.subscribe(&sim, &aor, "presence", Some(600)).await;
    let mut sub = sub.unwrap();
    w.notify().await;
    let n = sim.terminate(
        &aor,
        None,
        Termination::parse("probation;retry-after=30").unwrap(),
    );
    assert_eq!(n, Some(1));
    let t = w.notify().await;
    let st = sub_state(&t);
    assert_eq!(
        (st.state, st.reason.as_deref(), st.retry_after),
        (SubState::Terminated, Some("probation"), Some(30))
    );
    assert!(!t.body.is_empty(), "probation keeps the state");
    assert_eq!(w.refresh(&sim, &mut sub, 600).await.code(), Some(481));

    // rejected: no body. Only the presence subscription is hit when a package is named.
    let (_, s1) = w.subscribe(&sim, &aor, "presence", Some(600)).await;
    s1.unwrap();
    w.notify().await;
    let (_, s2) = w.subscribe(&sim, &aor, "dialog", Some(600)).await;
    s2.unwrap();
    w.notify().await;
    assert_eq!(
        sim.terminate(
            &aor,
            Some(Package::Presence),
            Termination::new("rejected", None)
        ),
        Some(1)
    );
    let t = w.notify().await;
    assert_eq!(sub_state(&t).reason.as_deref(), Some("rejected"));
    assert!(t.body.is_empty() && t.header("Content-Type").is_none());
    w.no_notify().await;
    assert_eq!(sim.stats().subscriptions_active, 1);
    assert_eq!(
        sim.terminate("nobody@example.com", None, Termination::timeout()),
        None
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_fault_answers_503_with_retry_after() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    sim.set_unavailable(Some(Duration::from_secs(60)), 7);
    let (r, _) = w
        .subscribe(&sim, &sim.user_aor(1), "presence", Some(600))
        .await;
    assert_eq!((r.code(), r.retry_after()), (Some(503), Some(7)));
    sim.set_unavailable(None, 0);
    let (r, _) = w
        .subscribe(&sim, &sim.user_aor(1), "presence", Some(600))
        .await;
    assert_eq!(r.code(), Some(200));
    w.notify().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_answered_481_drops_the_subscription() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    w.answer.store(481, Ordering::Relaxed);
    let (_, sub) = w
        .subscribe(&sim, &sim.user_aor(1), "presence", Some(600))
        .await;
    let mut sub = sub.unwrap();
    w.notify().await;
    until("the subscription to be dropped", || {
        sim.stats().subscriptions_active == 0
    })
    .await;
    let s = sim.stats();
    assert_eq!((s.subscriptions_dropped, s.notifies_failed), (1, 1));
    w.answer.store(200, Ordering::Relaxed);
    sim.set_activity(&sub.aor, Some("busy"), None)
        .unwrap()
        .unwrap();
    w.no_notify().await;
    assert_eq!(w.refresh(&sim, &mut sub, 600).await.code(), Some(481));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrefreshed_subscription_expires_with_a_timeout_notify() {
    let mut c = cfg();
    c.min_expires = 1;
    let sim = sim(c).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let (_, sub) = w
        .subscribe(&sim, &sim.user_aor(1), "presence", Some(1))
        .await;
    sub.unwrap();
    let n = w.notify().await;
    assert_eq!(sub_state(&n).expires, Some(1));
    let t = w.notify().await;
    let st = sub_state(&t);
    assert_eq!(
        (st.state, st.reason.as_deref()),
        (SubState::Terminated, Some("timeout"))
    );
    assert!(!t.body.is_empty());
    let s = sim.stats();
    assert_eq!((s.subscriptions_active, s.subscriptions_expired), (0, 1));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_before_ok_fault() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    sim.set_notify_before_ok(true);
    let (r, sub) = w
        .subscribe(&sim, &sim.user_aor(1), "presence", Some(600))
        .await;
    let answered = Instant::now();
    assert_eq!(r.code(), Some(200));
    let n = w.notify_at().await;
    assert!(n.at < answered, "the NOTIFY came first");
    assert_eq!(
        n.msg.from_hdr().unwrap().tag(),
        Some(sub.unwrap().their_tag().as_str())
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_published_gives_an_empty_notify_and_fetch_terminates() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(1);
    sim.clear_presence(&aor).unwrap();
    let (_, sub) = w.subscribe(&sim, &aor, "presence", Some(600)).await;
    sub.unwrap();
    let n = w.notify().await;
    assert_eq!(sub_state(&n).state, SubState::Active);
    assert!(n.body.is_empty() && n.header("Content-Type").is_none());
    assert_eq!(n.header("Content-Length"), Some("0"));

    // Expires 0 on an initial SUBSCRIBE: a fetch.
    sim.set_activity(&aor, None, None).unwrap().unwrap();
    w.notify().await;
    let (r, _) = w.subscribe(&sim, &aor, "presence", Some(0)).await;
    assert_eq!((r.code(), r.expires()), (Some(200), Some(0)));
    let f = w.notify().await;
    assert_eq!(sub_state(&f).reason.as_deref(), Some("timeout"));
    assert!(body(&f).contains("<basic>open</basic>"));
    assert_eq!(sim.stats().subscriptions_active, 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_summary_and_options() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(5);
    let (_, sub) = w.subscribe(&sim, &aor, "message-summary", Some(600)).await;
    sub.unwrap();
    assert!(body(&w.notify().await).starts_with("Messages-Waiting: no"));
    sim.set_mwi(&aor, 2, 3).unwrap();
    let n = w.notify().await;
    assert_eq!(
        n.content_type().unwrap().essence,
        "application/simple-message-summary"
    );
    assert!(body(&n).contains("Voice-Message: 2/3"));

    let mut opt = SipMessage::request("OPTIONS", &format!("sip:{}", sim.addr()));
    opt.add("Max-Forwards", "70")
        .add(
            "From",
            format!("<sip:watcher@example.com>;tag={}", new_tag()),
        )
        .add("To", format!("<sip:{}>", sim.addr()))
        .add("Call-ID", new_call_id(""))
        .add("CSeq", "1 OPTIONS");
    let r = w.send(&sim, opt).await;
    assert_eq!(r.code(), Some(200));
    assert!(r.header("Allow").unwrap().contains("SUBSCRIBE"));
    sim.shutdown().await;
}

fn publish(aor: &str, etag: Option<&str>, expires: u32, body: Option<&str>) -> SipMessage {
    let mut m = SipMessage::request("PUBLISH", &format!("sip:{aor}"));
    m.add("Max-Forwards", "70")
        .add("From", format!("<sip:{aor}>;tag={}", new_tag()))
        .add("To", format!("<sip:{aor}>"))
        .add("Call-ID", new_call_id("pub"))
        .add("CSeq", "1 PUBLISH")
        .add("Event", "presence")
        .add("Expires", expires.to_string());
    if let Some(e) = etag {
        m.add("SIP-If-Match", e);
    }
    if let Some(b) = body {
        m.set_body("application/pidf+xml", b.as_bytes().to_vec());
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_lifecycle_notifies_watchers() {
    let sim = sim(cfg()).await;
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(1);
    sim.set_activity(&aor, Some("away"), None).unwrap().unwrap();
    let (_, sub) = w.subscribe(&sim, &aor, "presence", Some(600)).await;
    sub.unwrap();
    w.notify().await;

    let doc = |act: &str| {
        format!("<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"sip:{aor}\"><tuple id=\"bridge-t1\"><status><basic>open</basic></status></tuple><dm:person id=\"bridge-p1\"><rpid:activities><rpid:{act}/></rpid:activities></dm:person></presence>")
    };
    let r = w
        .send(&sim, publish(&aor, None, 600, Some(&doc("meeting"))))
        .await;
    assert_eq!((r.code(), r.expires()), (Some(200), Some(600)));
    let tag1 = r.header("SIP-ETag").unwrap().to_string();
    assert!(
        body(&w.notify().await).contains("bridge-p1"),
        "watchers see the published document"
    );

    // Refresh: no body, new tag, no NOTIFY.
    let r = w.send(&sim, publish(&aor, Some(&tag1), 600, None)).await;
    assert_eq!(r.code(), Some(200));
    let tag2 = r.header("SIP-ETag").unwrap().to_string();
    assert_ne!(tag1, tag2);
    w.no_notify().await;
    // The old tag is gone.
    assert_eq!(
        w.send(&sim, publish(&aor, Some(&tag1), 600, None))
            .await
            .code(),
        Some(412)
    );
    // Modify.
    let r = w
        .send(&sim, publish(&aor, Some(&tag2), 600, Some(&doc("busy"))))
        .await;
    let tag3 = r.header("SIP-ETag").unwrap().to_string();
    assert!(body(&w.notify().await).contains("<rpid:busy/>"));
    // Remove: the simulated client's (older) state shows again.
    let r = w.send(&sim, publish(&aor, Some(&tag3), 0, None)).await;
    assert_eq!((r.code(), r.expires()), (Some(200), Some(0)));
    assert!(body(&w.notify().await).contains("<rpid:away/>"));

    // Errors.
    assert_eq!(
        w.send(&sim, publish(&aor, None, 600, None)).await.code(),
        Some(400)
    );
    let mut xml = publish(&aor, None, 600, None);
    xml.set_body("text/plain", b"hi".to_vec());
    let r = w.send(&sim, xml).await;
    assert_eq!(
        (r.code(), r.header("Accept")),
        (Some(415), Some("application/pidf+xml"))
    );
    assert_eq!(
        w.send(&sim, publish(&aor, None, 5, Some(&doc("busy"))))
            .await
            .code(),
        Some(423)
    );
    assert_eq!(
        w.send(
            &sim,
            publish("nobody@example.com", None, 600, Some(&doc("busy")))
        )
        .await
        .code(),
        Some(404)
    );
    let mut ev = publish(&aor, None, 600, Some(&doc("busy")));
    ev.set("Event", "dialog");
    assert_eq!(w.send(&sim, ev).await.code(), Some(489));
    let s = sim.stats();
    assert_eq!((s.publishes, s.publishes_rejected), (10, 6));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_control_api_drives_the_simulator() {
    let mut c = cfg();
    c.http = Some("127.0.0.1:0".parse().unwrap());
    let sim = sim(c).await;
    let base = sim.control_url().unwrap();
    crate::install_crypto_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut w = Watcher::new(Transport::Udp).await;
    let aor = sim.user_aor(1);
    let (_, sub) = w.subscribe(&sim, &aor, "presence", Some(600)).await;
    sub.unwrap();
    w.notify().await;

    let r = http
        .post(format!("{base}/users/{aor}/presence"))
        .json(&serde_json::json!({"activity": "on-the-phone", "note": "Call"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seq = r.json::<serde_json::Value>().await.unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(body(&w.notify().await).contains("<rpid:on-the-phone/>"));

    let info: serde_json::Value = http
        .get(format!("{base}/users/{aor}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["presence"]["activity"], "on-the-phone");
    assert_eq!(info["watchers"], 1);
    let changes: serde_json::Value = http
        .get(format!("{base}/changes?since={}", seq - 1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changes[0]["seq"].as_u64(), Some(seq));
    assert_eq!(changes[0]["user"], aor.as_str());

    let bad = http
        .post(format!("{base}/users/{aor}/presence"))
        .json(&serde_json::json!({"activity": "dnd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = http
        .post(format!("{base}/users/nobody@example.com/call"))
        .json(&serde_json::json!({"state": "ringing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let r = http
        .post(format!("{base}/users/{aor}/terminate"))
        .json(&serde_json::json!({"reason": "deactivated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        sub_state(&w.notify().await).reason.as_deref(),
        Some("deactivated")
    );

    let r = http
        .post(format!("{base}/faults"))
        .json(&serde_json::json!({"unavailable_secs": 30, "retry_after": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (r, _) = w.subscribe(&sim, &aor, "presence", Some(600)).await;
    assert_eq!((r.code(), r.retry_after()), (Some(503), Some(4)));

    let stats: SipSimStats = http
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.subscribes_initial, 2);
    assert_eq!(stats.subscriptions_terminated, 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_changes_are_stamped_and_logged() {
    let mut c = cfg();
    c.names = vec!["alice".into()];
    c.change_rate = 50.0;
    c.stamp_notes = true;
    let sim = sim(c).await;
    assert_eq!(sim.users(), vec!["alice@example.com".to_string()]);
    let mut w = Watcher::new(Transport::Udp).await;
    let (_, sub) = w
        .subscribe(&sim, "alice@example.com", "presence", Some(600))
        .await;
    sub.unwrap();
    let (seq, ms) = loop {
        let b = body(&w.notify().await);
        let Some(at) = b.find("[#") else { continue };
        let stamp = &b[at + 2..at + b[at..].find(']').unwrap()];
        let (seq, ms) = stamp.split_once(" @").unwrap();
        break (seq.parse::<u64>().unwrap(), ms.parse::<u64>().unwrap());
    };
    sim.set_change_rate(0.0);
    let rec = sim
        .changes_since(seq - 1)
        .into_iter()
        .find(|r| r.seq == seq)
        .expect("the stamped change is in the log");
    assert_eq!(rec.user, "alice@example.com");
    assert_eq!(rec.package, Package::Presence);
    assert!(rec.unix_ms.abs_diff(ms) < 1000);
    assert!(sim.stats().changes >= seq);
    sim.shutdown().await;
}

#[test]
fn demo_snippet_is_the_sip_connector_toml() {
    let s = demo_sip_snippet("127.0.0.1:5080".parse().unwrap(), 3, "example.com");
    let v: toml::Value = toml::from_str(&s).unwrap();
    assert_eq!(v["server"].as_str(), Some("127.0.0.1:5080"));
    assert_eq!(v["transport"].as_str(), Some("udp"));
    assert_eq!(v["domain"].as_str(), Some("example.com"));
    assert_eq!(
        v["watcher"].as_str(),
        Some("sip:presence-bridge@example.com")
    );
    let contacts = v["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 3);
    assert_eq!(contacts[2].as_str(), Some("sip:user0003@example.com"));
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(v["expires"].as_str(), Some("600s"));
}

#[test]
fn config_round_trips_and_rejects_unknown_fields() {
    let c: SipSimConfig =
        toml::from_str("users = 3\nchange_rate = 2.5\npackages = [\"presence\"]\n").unwrap();
    assert_eq!(
        (c.users, c.change_rate, c.packages.clone()),
        (3, 2.5, vec![Package::Presence])
    );
    assert!(toml::from_str::<SipSimConfig>("userz = 3").is_err());
    assert_eq!(user_name(7), "user0007");
    assert_eq!(user_name(12345), "user12345");
}
