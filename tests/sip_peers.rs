//! Self-test of the SIP peer harness (`tests/support/sip.rs`): Kamailio, SIPp and baresip behave
//! as `shared/reference/sip.md` §12 says, so the SIP connector tests can build on them.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::sip::{
    baresip_run, free_sip_port, require_sip_peers, run_digest_probe, sip_options, sipp_run,
    sipp_spawn, Baresip, BaresipOpts, Direction, Kamailio, KamailioOpts, SipMessage, SippOutcome,
    SippProcess, PASSWORD,
};

const MD5: KamailioOpts = KamailioOpts {
    auth: Some("MD5"),
    pua_usrloc: false,
};
const SHA256: KamailioOpts = KamailioOpts {
    auth: Some("SHA-256"),
    pua_usrloc: false,
};

/// `subscribe.xml` keys for PIDF presence of alice, 120 s.
const SUBSCRIBE_ARGS: [&str; 11] = [
    "-s",
    "alice",
    "-key",
    "event",
    "presence",
    "-key",
    "accept",
    "application/pidf+xml",
    "-key",
    "expires",
    "120",
];

/// `subscribe.xml` as watcher of `user` for PIDF presence.
fn subscribe(user: &str, target: &str, extra: &[&str]) -> SippOutcome {
    let mut args = SUBSCRIBE_ARGS.to_vec();
    args[1] = user;
    args.extend_from_slice(extra);
    sipp_run("subscribe.xml", &args, target)
}

/// `publish-pidf.xml` for `user`, left in place for 600 s.
fn publish_pidf(user: &str, target: &str, basic: &str, activity: &str, note: &str) -> SippOutcome {
    sipp_run(
        "publish-pidf.xml",
        &[
            "-s", user, "-key", "basic", basic, "-key", "activity", activity, "-key", "note", note,
            "-key", "expires", "600",
        ],
        target,
    )
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn subscription_state(m: &SipMessage) -> &str {
    m.header("Subscription-State").unwrap_or("")
}

#[test]
fn peers_are_installed() {
    require_sip_peers();
}

#[test]
fn publish_lifecycle_gets_200_200_200_412_200_with_a_new_etag_each_time() {
    let kam = Kamailio::start(KamailioOpts::default());
    let out = sipp_run("publish-lifecycle.xml", &["-s", "alice"], &kam.target());
    out.assert_success();
    assert_eq!(
        out.statuses("PUBLISH"),
        [200, 200, 200, 412, 200],
        "{}",
        out.report()
    );

    // Retransmissions (UDP under load) collapsed: one (request, answer) per CSeq.
    let (sent, answers): (Vec<SipMessage>, Vec<SipMessage>) = out
        .client_transactions("PUBLISH")
        .into_iter()
        .map(|(req, resp)| (req, resp.expect("every PUBLISH answered")))
        .unzip();
    let etags: Vec<&str> = answers[..3]
        .iter()
        .map(|m| m.header("SIP-ETag").expect("SIP-ETag on 200"))
        .collect();
    assert!(
        etags[0] != etags[1] && etags[1] != etags[2] && etags[0] != etags[2],
        "a new SIP-ETag each time: {etags:?}"
    );
    // Each conditional PUBLISH carried the previous answer's entity tag.
    assert_eq!(sent[0].header("SIP-If-Match"), None);
    assert_eq!(sent[1].header("SIP-If-Match"), Some(etags[0]));
    assert_eq!(sent[1].body(), "", "refresh has no body");
    assert_eq!(sent[2].header("SIP-If-Match"), Some(etags[1]));
    assert!(!etags.contains(&sent[3].header("SIP-If-Match").unwrap()));
    assert_eq!(sent[4].header("SIP-If-Match"), Some(etags[2]));
    assert_eq!(sent[4].header("Expires"), Some("0"));
    assert_eq!(
        answers[3].start_line(),
        "SIP/2.0 412 Conditional request failed"
    );
    // Expires: 0 removed the publication.
    assert_eq!(kam.presentity("alice", "presence"), Vec::<String>::new());
}

#[test]
fn published_activity_reaches_a_watcher_in_the_first_notify() {
    let kam = Kamailio::start(KamailioOpts::default());
    publish_pidf("alice", &kam.target(), "open", "meeting", "In a meeting").assert_success();
    let stored = kam.presentity("alice", "presence");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].contains("<rpid:meeting/>"), "{stored:?}");

    let sub = subscribe("alice", &kam.target(), &[]);
    sub.assert_success();
    assert_eq!(
        sub.statuses("SUBSCRIBE"),
        [200, 200, 200],
        "{}",
        sub.report()
    );
    let notifies = sub.requests("NOTIFY");
    assert!(notifies.len() >= 3, "{}", sub.report());
    let first = &notifies[0];
    assert!(
        subscription_state(first).starts_with("active"),
        "{}",
        first.text
    );
    assert_eq!(first.header("Event"), Some("presence"));
    assert_eq!(first.header("Content-Type"), Some("application/pidf+xml"));
    let body = squash(first.body());
    for want in ["<basic>open</basic>", "meeting/>", "Inameeting"] {
        assert!(body.contains(want), "{want} in {}", first.body());
    }
    let last = notifies.last().unwrap();
    assert!(
        subscription_state(last).starts_with("terminated"),
        "{}",
        last.text
    );
    // Kamailio's 2xx Contact is its server_address: refreshes went there.
    let refresh = &sub.client_transactions("SUBSCRIBE")[1].0;
    assert_eq!(
        refresh.start_line(),
        format!("SUBSCRIBE {} SIP/2.0", kam.server_uri())
    );
}

#[test]
fn subscribe_over_tcp_gets_notifies() {
    let kam = Kamailio::start(KamailioOpts::default());
    publish_pidf("bob", &kam.target(), "open", "busy", "Busy").assert_success();
    let sub = subscribe("bob", &kam.target(), &["-t", "t1"]);
    sub.assert_success();
    let notifies = sub.requests("NOTIFY");
    assert!(
        notifies.iter().all(|m| m.transport == "TCP"),
        "{}",
        sub.report()
    );
    assert!(
        squash(notifies[0].body()).contains("busy/>"),
        "{}",
        notifies[0].text
    );
}

#[test]
fn with_auth_publish_succeeds_with_the_right_password_only() {
    let kam = Kamailio::start(MD5);
    let ok = sipp_run(
        "publish-auth.xml",
        &["-s", "alice", "-au", "alice", "-ap", PASSWORD],
        &kam.target(),
    );
    ok.assert_success();
    assert_eq!(ok.statuses("PUBLISH"), [407, 200], "{}", ok.report());
    let publishes = ok.client_transactions("PUBLISH");
    let challenge = publishes[0]
        .1
        .as_ref()
        .unwrap()
        .header("Proxy-Authenticate")
        .expect("407 has Proxy-Authenticate")
        .to_string();
    assert!(challenge.starts_with("Digest "), "{challenge}");
    assert!(challenge.contains("qop=\"auth\""), "{challenge}");
    assert!(!challenge.contains("SHA-256"), "{challenge}");
    let retry = &publishes[1].0;
    assert!(
        retry
            .header("Proxy-Authorization")
            .is_some_and(|a| a.contains("username=\"alice\"")),
        "{}",
        retry.text
    );
    assert_eq!(kam.presentity("alice", "presence").len(), 1);

    let bad = sipp_run(
        "publish-auth.xml",
        &["-s", "bob", "-au", "bob", "-ap", "not-the-password"],
        &kam.target(),
    );
    assert!(!bad.success(), "wrong password accepted:\n{}", bad.report());
    // Challenged again: the 407 to the second PUBLISH aborts the scenario (so it is only in
    // the error log; what the message log holds after the abort depends on timing).
    let codes = bad.statuses("PUBLISH");
    assert_eq!(codes.first(), Some(&407), "{}", bad.report());
    assert!(!codes.contains(&200), "{}", bad.report());
    let again = bad.unexpected();
    assert!(
        again
            .iter()
            .any(|m| m.status() == Some(407) && m.header("CSeq") == Some("2 PUBLISH")),
        "{}",
        bad.report()
    );
    assert!(kam.presentity("bob", "presence").is_empty());

    // No credentials at all: challenged, never stored.
    let none = publish_pidf("bob", &kam.target(), "open", "away", "Away");
    assert!(!none.success(), "{}", none.report());
    assert_eq!(
        none.unexpected()[0].status(),
        Some(407),
        "{}",
        none.report()
    );
    assert!(kam.presentity("bob", "presence").is_empty());
}

fn assert_digest_probe(opts: KamailioOpts, algorithm: &str) {
    let kam = Kamailio::start(opts);
    let (code, out) = run_digest_probe(kam.port(), "alice", "watcher", PASSWORD);
    assert_eq!(code, 0, "probe failed:\n{out}");
    assert!(out.contains("SIP/2.0 407"), "{out}");
    let challenge = out
        .lines()
        .find(|l| l.starts_with("Proxy-Authenticate: Digest"))
        .unwrap_or_else(|| panic!("no challenge:\n{out}"));
    assert!(
        challenge.contains(&format!("algorithm={algorithm}"))
            || (algorithm == "MD5" && !challenge.contains("algorithm=")),
        "{challenge}"
    );
    assert!(
        out.contains(&format!("algorithm={algorithm}, qop=auth, nc=00000001")),
        "{out}"
    );
    assert!(out.contains("final: SIP/2.0 200"), "{out}");
    assert!(out.contains("NOTIFY: Subscription-State: active"), "{out}");

    let (code, out) = run_digest_probe(kam.port(), "alice", "watcher", "wrong");
    assert_eq!(
        code, 2,
        "wrong password must get a non-2xx final answer:\n{out}"
    );
    assert!(out.contains("final: SIP/2.0 407"), "{out}");
}

#[test]
fn digest_probe_md5() {
    assert_digest_probe(MD5, "MD5");
}

#[test]
fn digest_probe_sha256() {
    assert_digest_probe(SHA256, "SHA-256");
}

#[test]
fn restart_keeps_the_port_and_the_users() {
    let mut kam = Kamailio::start(MD5);
    let port = kam.port();
    kam.add_user("carol", "carol-pw");
    let publish_as = |kam: &Kamailio, user: &str, pw: &str| {
        sipp_run(
            "publish-auth.xml",
            &["-s", user, "-au", user, "-ap", pw],
            &kam.target(),
        )
    };
    publish_as(&kam, "carol", "carol-pw").assert_success();

    kam.restart();
    assert_eq!(kam.port(), port);
    assert_eq!(kam.uri("alice"), format!("sip:alice@127.0.0.1:{port}"));
    assert!(kam.is_running());
    assert_eq!(sip_options(port), Some(200));
    assert_eq!(kam.log().matches("===== kamailio start").count(), 2);
    for (user, pw) in [("carol", "carol-pw"), ("alice", PASSWORD)] {
        let out = publish_as(&kam, user, pw);
        out.assert_success();
        assert_eq!(out.statuses("PUBLISH"), [407, 200]);
    }
    // The publication from before the restart is still stored (sqlite).
    assert_eq!(kam.presentity("carol", "presence").len(), 2);

    kam.stop();
    assert!(!kam.is_running());
    assert_eq!(sip_options(port), None, "nothing answers after stop()");
    kam.stop(); // idempotent
}

/// Minimal UDP SIP exchange for the restart test (our own subscriber stand-in).
struct RawUa {
    sock: UdpSocket,
    port: u16,
    server: u16,
    call_id: String,
}

impl RawUa {
    fn new(server: u16) -> RawUa {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        RawUa {
            sock,
            port,
            server,
            call_id: format!("raw-{}@127.0.0.1", fastrand::u64(..)),
        }
    }

    fn subscribe(&self, ruri: &str, cseq: u32, to_tag: Option<&str>) {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let msg = format!(
            "SUBSCRIBE {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-raw-{b:x};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:watcher@127.0.0.1>;tag=rawwatcher\r\n\
             To: <sip:alice@127.0.0.1>{to_tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:watcher@127.0.0.1:{p}>\r\n\
             Event: presence\r\n\
             Accept: application/pidf+xml\r\n\
             Expires: 600\r\n\
             Content-Length: 0\r\n\r\n",
            p = self.port,
            b = fastrand::u64(..),
            cid = self.call_id,
        );
        self.sock
            .send_to(msg.as_bytes(), ("127.0.0.1", self.server))
            .unwrap();
    }

    /// Receives until `want` matches (answering every NOTIFY with 200), up to 10 s.
    fn recv_until(&self, what: &str, mut want: impl FnMut(&SipMessage) -> bool) -> SipMessage {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 65535];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let m = SipMessage {
                direction: Direction::Received,
                transport: "UDP".into(),
                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            };
            if m.method() == Some("NOTIFY") {
                let copy: Vec<String> = ["Via", "From", "To", "Call-ID", "CSeq"]
                    .iter()
                    .flat_map(|h| {
                        m.headers(h)
                            .into_iter()
                            .map(move |v| format!("{h}: {v}\r\n"))
                    })
                    .collect();
                let ok = format!(
                    "SIP/2.0 200 OK\r\n{}Content-Length: 0\r\n\r\n",
                    copy.concat()
                );
                self.sock.send_to(ok.as_bytes(), from).unwrap();
            }
            if want(&m) {
                return m;
            }
            seen.push(m.start_line().to_string());
        }
        panic!("timed out waiting for {what}; got {seen:?}");
    }
}

#[test]
fn restart_forgets_subscriptions_so_in_dialog_refresh_gets_481() {
    let mut kam = Kamailio::start(KamailioOpts::default());
    let ua = RawUa::new(kam.port());
    ua.subscribe(&kam.uri("alice"), 1, None);
    let ok = ua.recv_until("2xx to SUBSCRIBE", |m| {
        m.cseq_method() == Some("SUBSCRIBE") && m.status().is_some_and(|s| s / 100 == 2)
    });
    let to = ok.header("To").unwrap();
    let to_tag = to.split(";tag=").nth(1).expect("To-tag").to_string();
    let contact = ok.header("Contact").unwrap();
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(target, kam.server_uri());
    ua.recv_until("first NOTIFY", |m| m.method() == Some("NOTIFY"));

    // Refresh works before the restart...
    ua.subscribe(&target, 2, Some(&to_tag));
    let r = ua.recv_until("answer to refresh", |m| {
        m.header("CSeq") == Some("2 SUBSCRIBE")
    });
    assert_eq!(r.status(), Some(200), "{}", r.text);

    kam.restart();
    // ...and after it the dialog is unknown.
    ua.subscribe(&target, 3, Some(&to_tag));
    let r = ua.recv_until("answer to refresh after restart", |m| {
        m.header("CSeq") == Some("3 SUBSCRIBE")
    });
    assert_eq!(r.status(), Some(481), "{}", r.text);
    assert!(kam.log().contains(&format!("REQ SUBSCRIBE {target}")));
}

#[test]
fn two_kamailios_run_side_by_side() {
    let a = Kamailio::start(KamailioOpts::default());
    let b = Kamailio::start(MD5);
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    assert_eq!(sip_options(a.port()), Some(200));
    assert_eq!(sip_options(b.port()), Some(200));
    publish_pidf("alice", &a.target(), "open", "away", "Away").assert_success();
    assert_eq!(a.presentity("alice", "presence").len(), 1);
    assert!(b.presentity("alice", "presence").is_empty());
}

#[test]
fn sipp_notifier_serves_subscribe_xml() {
    let mut notifier = sipp_spawn("notifier.xml", &[]);
    assert_eq!(
        notifier.uri("alice"),
        format!("sip:alice@127.0.0.1:{}", notifier.port())
    );
    assert!(notifier.messages_so_far().is_empty());
    // The watcher runs in the background, as the code under test will: the notifier's message
    // log can be followed while both run.
    let mut watcher = SippProcess::spawn_on(
        free_sip_port(),
        "subscribe.xml",
        &SUBSCRIBE_ARGS,
        Some(&notifier.target()),
    );
    let first = notifier.wait_for_message("the initial SUBSCRIBE", Duration::from_secs(10), |m| {
        m.method() == Some("SUBSCRIBE")
    });
    assert_eq!(first.header("Event"), Some("presence"));
    assert_eq!(
        first.header("Contact"),
        Some(format!("<sip:watcher@127.0.0.1:{};transport=UDP>", watcher.port()).as_str())
    );
    notifier.wait_for_message(
        "the 200 to the third NOTIFY",
        Duration::from_secs(10),
        |m| m.status() == Some(200) && m.header("CSeq") == Some("103 NOTIFY"),
    );
    let sub = watcher.wait();
    sub.assert_success();
    let served = notifier.wait();
    served.assert_success();

    let notifies = sub.requests("NOTIFY");
    let bodies: Vec<String> = notifies.iter().map(|m| squash(m.body())).collect();
    assert_eq!(notifies.len(), 5, "{}", sub.report());
    assert!(bodies[0].contains("<basic>open</basic>") && !bodies[0].contains("on-the-phone"));
    assert!(
        bodies[1].contains("<basic>open</basic>") && bodies[1].contains("<rpid:on-the-phone/>")
    );
    assert!(bodies[2].contains("<basic>closed</basic>"));
    assert!(
        bodies[3].contains("<basic>closed</basic>"),
        "NOTIFY after refresh"
    );
    for n in &notifies[..4] {
        assert_eq!(subscription_state(n), "active;expires=120");
    }
    assert_eq!(
        subscription_state(&notifies[4]),
        "terminated;reason=timeout"
    );
    assert_eq!(notifies[4].body(), "");

    let subscribes = served.requests("SUBSCRIBE");
    let expires: Vec<&str> = subscribes
        .iter()
        .map(|m| m.header("Expires").unwrap())
        .collect();
    assert_eq!(expires, ["120", "120", "0"]);
    // The NOTIFYs were answered 200.
    assert_eq!(served.statuses("NOTIFY"), [200, 200, 200, 200, 200]);
}

#[test]
fn baresip_publishes_open_and_a_sipp_watcher_sees_it() {
    let kam = Kamailio::start(KamailioOpts::default());
    let mut ua = Baresip::spawn(
        kam.port(),
        &BaresipOpts {
            commands: vec!["/presence_online".into()],
            ..BaresipOpts::default()
        },
    );
    let is_open = |b: &String| squash(b).contains("<basic>open</basic>");
    kam.wait_for_presentity(
        "alice",
        "presence",
        "baresip's `open` publication",
        Duration::from_secs(20),
        |bodies| bodies.iter().any(is_open),
    );

    let sub = subscribe("alice", &kam.target(), &[]);
    sub.assert_success();
    let first = &sub.requests("NOTIFY")[0];
    assert!(
        squash(first.body()).contains("<basic>open</basic>"),
        "{}",
        first.text
    );
    assert!(
        first.body().contains("entity=\"sip:alice@127.0.0.1"),
        "{}",
        first.text
    );

    // A graceful stop removes its (last) publication: Expires 0 with SIP-If-Match. baresip 1.0
    // sends a status change as a new initial PUBLISH, so an earlier `unknown` one (if it was
    // sent before /presence_online ran) stays until it expires.
    let out = ua.stop();
    assert!(out.output.contains("Expires: 0"), "{}", out.output);
    assert!(out.output.contains("SIP-If-Match: "), "{}", out.output);
    kam.wait_for_presentity(
        "alice",
        "presence",
        "baresip's `open` publication to be removed",
        Duration::from_secs(10),
        |bodies| !bodies.iter().any(is_open),
    );
}

#[test]
fn pua_usrloc_publishes_open_when_baresip_registers() {
    let kam = Kamailio::start(KamailioOpts {
        auth: None,
        pua_usrloc: true,
    });
    let ua = Baresip::spawn(
        kam.port(),
        &BaresipOpts {
            regint: 60,
            pubint: 0,
            ..BaresipOpts::default()
        },
    );
    kam.wait_for_presentity(
        "alice",
        "presence",
        "Kamailio's own `open` publication for the registered AOR",
        Duration::from_secs(20),
        |bodies| {
            bodies
                .iter()
                .any(|b| squash(b).contains("<basic>open</basic>"))
        },
    );
    assert!(kam.log().contains("REQ REGISTER sip:127.0.0.1"));
    // It is Kamailio's document (pua_usrloc: scheme-less entity), baresip publishes nothing
    // with pubint=0.
    let stored = kam.presentity("alice", "presence");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].contains("entity=\"alice@127.0.0.1\""),
        "{stored:?}"
    );
    assert!(!ua.output().contains("PUBLISH sip:"), "{}", ua.output());
}

#[test]
fn baresip_run_quits_after_t_seconds_and_removes_its_publication() {
    let kam = Kamailio::start(KamailioOpts::default());
    let out = baresip_run(
        kam.port(),
        &BaresipOpts {
            commands: vec!["/presence_online".into()],
            quit_after: Some(2),
            ..BaresipOpts::default()
        },
    );
    assert!(
        out.status.is_some_and(|s| s.success()),
        "{:?}\n{}",
        out.status,
        out.output
    );
    assert!(
        out.output.contains("PUBLISH sip:alice@127.0.0.1"),
        "{}",
        out.output
    );
    assert!(out.output.contains("<basic>open</basic>"), "{}", out.output);
    assert!(out.output.contains("Expires: 0"), "{}", out.output);
    // Its open publication is gone (a first `unknown` one may remain, see above).
    kam.wait_for_presentity(
        "alice",
        "presence",
        "no `open` publication left",
        Duration::from_secs(10),
        |bodies| {
            !bodies
                .iter()
                .any(|b| squash(b).contains("<basic>open</basic>"))
        },
    );
}
