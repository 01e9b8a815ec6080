//! End-to-end tests over real HTTP: the simulator on 127.0.0.1:0, a reqwest client, and an
//! axum callback receiver that forwards every notification into a channel. Tests wait on
//! that channel (with a timeout) instead of sleeping; "no notification" is checked with the
//! engine's synchronous `notifications` counter plus a short wait on the channel.

use super::xml::{self, Element};
use super::*;
use axum::extract::Query;
use axum::routing::get;
use reqwest::Method;
use std::collections::HashMap;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

struct Env {
    sim: PwsSimHandle,
    http: reqwest::Client,
    cb_url: String,
    cb: UnboundedReceiver<(u64, String)>,
}

struct Resp {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Resp {
    /// The PWS error code of an error body.
    fn code(&self) -> u16 {
        let d = xml::parse(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body));
        assert_eq!(d.name, "description", "{}", self.body);
        assert!(self.body.contains("xmlns=\"urn:cisco:cup:presence:soap\""));
        d.child_text("code").unwrap().parse().unwrap()
    }

    fn expect_error(&self, status: u16, code: u16) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "body: {}",
            self.body
        );
    }

    fn location_id(&self) -> u64 {
        let loc = self.location.as_deref().expect("Location header");
        loc.rsplit('/').next().unwrap().parse().unwrap()
    }
}

async fn callback_receiver() -> (String, UnboundedReceiver<(u64, String)>) {
    let (tx, rx) = unbounded_channel();
    let app = axum::Router::new().route(
        "/pws",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let tx = tx.clone();
            async move {
                let id = q.get("id").and_then(|v| v.parse().ok()).unwrap_or(0);
                let _ = tx.send((id, q.get("eventType").cloned().unwrap_or_default()));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/pws"), rx)
}

fn small_cfg() -> PwsSimConfig {
    PwsSimConfig {
        users: 50,
        ..PwsSimConfig::default()
    }
}

async fn env(cfg: PwsSimConfig) -> Env {
    let sim = start("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap();
    let (cb_url, cb) = callback_receiver().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Env {
        sim,
        http,
        cb_url,
        cb,
    }
}

fn basic_list(body: &str) -> Vec<(String, String)> {
    let d = xml::parse(body).unwrap();
    assert_eq!(d.name, "presenceList");
    assert_eq!(d.attr("type"), Some("basic"));
    d.children
        .iter()
        .map(|c| {
            assert_eq!(c.name, "contact");
            (
                c.attr("contactURI").unwrap().to_owned(),
                c.attr("presenceStatus").unwrap().to_owned(),
            )
        })
        .collect()
}

impl Env {
    async fn req(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Resp {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.sim.base_url()));
        if let Some(k) = key {
            r = r.header("Presence-Session-Key", k);
        }
        for (h, v) in headers {
            r = r.header(*h, *v);
        }
        if let Some(b) = body {
            r = r.header("Content-Type", "text/xml").body(b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        Resp {
            status,
            location,
            body,
        }
    }

    fn session_key(r: &Resp) -> String {
        assert_eq!(r.status, 201, "{}", r.body);
        let d = xml::parse(&r.body).unwrap();
        assert_eq!(d.name, "session");
        let k = d.child_text("sessionKey").unwrap().to_owned();
        assert_eq!(
            k.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        k
    }

    async fn login_app(&self, force: bool) -> String {
        let (m, p) = if force {
            (Method::PUT, "session")
        } else {
            (Method::POST, "sessions")
        };
        let body = "<session><password>pwsapp-secret</password></session>".to_owned();
        let r = self
            .req(m, &format!("/users/pwsapp/{p}"), None, &[], Some(body))
            .await;
        Self::session_key(&r)
    }

    async fn login_user(&self, app_key: &str, user: &str, force: bool) -> String {
        let (m, p) = if force {
            (Method::PUT, "session")
        } else {
            (Method::POST, "sessions")
        };
        let r = self
            .req(m, &format!("/users/{user}/{p}"), Some(app_key), &[], None)
            .await;
        Self::session_key(&r)
    }

    async fn register(&self, app_key: &str) -> u64 {
        let body = format!("<endpoint><url>{}</url></endpoint>", self.cb_url);
        let r = self
            .req(
                Method::POST,
                "/endpoints",
                Some(app_key),
                &[("Presence-Expiry", "3600")],
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.location_id()
    }

    fn sub_body(contacts: &[String], ep: u64) -> String {
        let list: String = contacts
            .iter()
            .map(|c| format!("<contact contactURI=\"{c}\"/>"))
            .collect();
        format!(
            "<subscription><contactsList>{list}</contactsList>\
             <subscriptionType>PRESENCE_NOTIFICATION</subscriptionType>\
             <endPointID>{ep}</endPointID></subscription>"
        )
    }

    async fn subscribe_raw(&self, key: &str, user: &str, contacts: &[String], ep: u64) -> Resp {
        self.req(
            Method::POST,
            &format!("/users/{user}/subscriptions"),
            Some(key),
            &[("Presence-Expiry", "3600")],
            Some(Self::sub_body(contacts, ep)),
        )
        .await
    }

    async fn subscribe(&self, key: &str, user: &str, contacts: &[String], ep: u64) -> u64 {
        let r = self.subscribe_raw(key, user, contacts, ep).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let loc = r.location.as_deref().unwrap();
        assert!(
            loc.starts_with(&format!(
                "http://{}/presence-service/users/{user}/subscriptions/",
                self.sim.addr()
            )),
            "{loc}"
        );
        r.location_id()
    }

    async fn fetch(&self, key: &str, user: &str, sid: u64, kind: &str) -> Resp {
        self.req(
            Method::GET,
            &format!("/users/{user}/presence/{kind}/subscriptions/{sid}"),
            Some(key),
            &[],
            None,
        )
        .await
    }

    async fn fetch_basic(&self, key: &str, user: &str, sid: u64) -> Vec<(String, String)> {
        let r = self.fetch(key, user, sid, "basic").await;
        assert_eq!(r.status, 200, "{}", r.body);
        basic_list(&r.body)
    }

    async fn next_callback(&mut self) -> u64 {
        let (id, event) = tokio::time::timeout(WAIT, self.cb.recv())
            .await
            .expect("a notification within 5 s")
            .expect("receiver alive");
        assert_eq!(event, "PRESENCE_NOTIFICATION");
        id
    }

    async fn no_callback(&mut self) {
        if let Ok(got) = tokio::time::timeout(QUIET, self.cb.recv()).await {
            panic!("unexpected notification {got:?}");
        }
    }

    /// A watcher (user 1) with an endpoint and a subscription to `contacts`, its first
    /// notification received and fetched. Returns (user key, sid).
    async fn watching(&mut self, contacts: &[String]) -> (String, u64) {
        let app = self.login_app(false).await;
        let ep = self.register(&app).await;
        let key = self.login_user(&app, "user00001", false).await;
        let sid = self.subscribe(&key, "user00001", contacts, ep).await;
        assert_eq!(self.next_callback().await, sid);
        let all = self.fetch_basic(&key, "user00001", sid).await;
        assert_eq!(all.len(), contacts.len());
        (key, sid)
    }

    async fn set_basic_rest(&self, key: &str, user: &str, value: &str, over: &str) -> Resp {
        self.req(
            Method::PUT,
            &format!("/users/{user}/presence/basic"),
            Some(key),
            &[("Presence-Override", over), ("Presence-Expiry", "3600")],
            Some(format!("<presence>{value}</presence>")),
        )
        .await
    }
}

#[tokio::test]
async fn login_non_forced_same_key_forced_new_key() {
    let e = env(small_cfg()).await;
    let a1 = e.login_app(false).await;
    let a2 = e.login_app(false).await;
    assert_eq!(a1, a2, "non-forced login returns the same key");
    let a3 = e.login_app(true).await;
    assert_ne!(a1, a3, "forced login returns a new key");
    assert_eq!(e.login_app(false).await, a3);
    // A stale key sent along with the password does not matter.
    let body = "<session><password>pwsapp-secret</password></session>".to_owned();
    let r = e
        .req(
            Method::POST,
            "/users/pwsapp/sessions",
            Some("stale"),
            &[],
            Some(body),
        )
        .await;
    assert_eq!(Env::session_key(&r), a3);

    let u1 = e.login_user(&a1, "user00002", false).await;
    assert_eq!(e.login_user(&a1, "user00002", false).await, u1);
    let u2 = e.login_user(&a1, "user00002", true).await;
    assert_ne!(u1, u2);
    assert_ne!(u1, a1);

    // Wrong password, unknown user, end user without app key, wrong key kind.
    let bad = "<session><password>nope</password></session>".to_owned();
    e.req(Method::POST, "/users/pwsapp/sessions", None, &[], Some(bad))
        .await
        .expect_error(400, 114);
    let empty = "<session><password></password></session>".to_owned();
    e.req(
        Method::POST,
        "/users/pwsapp/sessions",
        None,
        &[],
        Some(empty),
    )
    .await
    .expect_error(400, 111);
    e.req(Method::POST, "/users/nobody/sessions", Some(&a1), &[], None)
        .await
        .expect_error(404, 113);
    e.req(Method::POST, "/users/user00003/sessions", None, &[], None)
        .await
        .expect_error(401, 100);
    e.req(
        Method::POST,
        "/users/user00003/sessions",
        Some(&u1),
        &[],
        None,
    )
    .await
    .expect_error(400, 141);
    assert!(e.sim.stats().logins >= 4);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn endpoint_ids_are_whole_segments_and_lifetimes_are_checked() {
    let e = env(small_cfg()).await;
    let app = e.login_app(false).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        let body = format!("<endpoint><url>{}</url></endpoint>", e.cb_url);
        let r = e
            .req(
                Method::POST,
                "/endpoints",
                Some(&app),
                &[("Presence-Expiry", "3600")],
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201);
        let loc = r.location.clone().unwrap();
        let prefix = format!("http://{}/presence-service/endpoints/", e.sim.addr());
        assert!(loc.starts_with(&prefix), "{loc}");
        ids.push(r.location_id());
    }
    assert_eq!(
        ids,
        (1..=12).collect::<Vec<u64>>(),
        "10 and 11 are whole segments"
    );

    // Refresh with header, then with the old body form; a URL in an update is 123.
    let r = e
        .req(
            Method::PUT,
            "/endpoints/10",
            Some(&app),
            &[("Presence-Expiry", "7200")],
            None,
        )
        .await;
    assert_eq!((r.status, r.location_id()), (201, 10));
    let r = e
        .req(
            Method::PUT,
            "/endpoints/11",
            Some(&app),
            &[],
            Some("<endpoint><expiration>86400</expiration></endpoint>".into()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    e.req(
        Method::PUT,
        "/endpoints/11",
        Some(&app),
        &[("Presence-Expiry", "3600")],
        Some("<endpoint><url>http://x/</url></endpoint>".into()),
    )
    .await
    .expect_error(400, 123);

    // Expiry out of range, in the header or in the body.
    for (hdr, body) in [
        (Some("60"), "<endpoint><url>http://x/</url></endpoint>"),
        (Some("86401"), "<endpoint><url>http://x/</url></endpoint>"),
        (
            None,
            "<endpoint><url>http://x/</url><expiration>100</expiration></endpoint>",
        ),
        (Some("soon"), "<endpoint><url>http://x/</url></endpoint>"),
    ] {
        let h: Vec<(&str, &str)> = hdr.map(|v| ("Presence-Expiry", v)).into_iter().collect();
        e.req(
            Method::POST,
            "/endpoints",
            Some(&app),
            &h,
            Some(body.into()),
        )
        .await
        .expect_error(400, 131);
    }
    e.req(
        Method::POST,
        "/endpoints",
        Some(&app),
        &[],
        Some("<endpoint><url></url></endpoint>".into()),
    )
    .await
    .expect_error(400, 130);
    e.req(
        Method::POST,
        "/endpoints",
        Some(&app),
        &[],
        Some("<endpoint><url>http://a b/</url></endpoint>".into()),
    )
    .await
    .expect_error(400, 142);

    let r = e
        .req(Method::DELETE, "/endpoints/12", Some(&app), &[], None)
        .await;
    assert_eq!(r.status, 200);
    e.req(Method::DELETE, "/endpoints/12", Some(&app), &[], None)
        .await
        .expect_error(400, 132);
    e.req(Method::DELETE, "/endpoints/x", Some(&app), &[], None)
        .await
        .expect_error(400, 132);
    // Endpoints need the app user's key.
    let u = e.login_user(&app, "user00001", false).await;
    e.req(Method::DELETE, "/endpoints/11", Some(&u), &[], None)
        .await
        .expect_error(400, 141);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn change_tracking_notifies_once_per_fetch() {
    let mut e = env(small_cfg()).await;
    let contacts: Vec<String> = (2..=6).map(|n| e.sim.user_uri(n)).collect();
    let (a, b) = (contacts[0].clone(), contacts[1].clone());
    let app = e.login_app(false).await;
    let ep = e.register(&app).await;
    let key = e.login_user(&app, "user00001", false).await;

    // Subscribe → immediate notification → first fetch lists every contact.
    let sid = e.subscribe(&key, "user00001", &contacts, ep).await;
    assert_eq!(e.next_callback().await, sid);
    let all = e.fetch_basic(&key, "user00001", sid).await;
    assert_eq!(
        all.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>(),
        contacts
    );
    for (c, s) in &all {
        assert_eq!(Some(s.clone()), e.sim.basic_of(c));
    }
    // Nothing changed since: an empty list.
    let r = e.fetch(&key, "user00001", sid, "basic").await;
    assert_eq!(
        r.body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presenceList type=\"basic\"/>"
    );

    // One change → exactly one notification.
    assert!(e.sim.set_basic(&a, "BUSY"));
    assert_eq!(e.next_callback().await, sid);
    // More changes before the fetch → no further notification.
    let before = e.sim.stats().notifications;
    assert!(e.sim.set_basic(&b, "AWAY"));
    assert!(e.sim.set_basic(&a, "VACATION"));
    assert_eq!(e.sim.stats().notifications, before);
    e.no_callback().await;
    // The fetch returns both contacts once, with their latest state.
    let got = e.fetch_basic(&key, "user00001", sid).await;
    assert_eq!(
        got,
        vec![(a.clone(), "VACATION".into()), (b.clone(), "AWAY".into())]
    );
    assert_eq!(e.sim.basic_of(&a).as_deref(), Some("VACATION"));

    // After the fetch a change notifies again.
    assert!(e.sim.set_basic(&b, "AVAILABLE"));
    assert_eq!(e.next_callback().await, sid);
    assert_eq!(
        e.fetch_basic(&key, "user00001", sid).await,
        vec![(b.clone(), "AVAILABLE".into())]
    );
    // A user nobody watches changes nothing here.
    assert!(e.sim.set_basic(&e.sim.user_uri(40), "DND"));
    e.no_callback().await;

    let s = e.sim.stats();
    assert_eq!(s.callbacks_sent, 3);
    assert_eq!(s.callbacks_failed, 0);
    assert_eq!(s.active_subscriptions, 1);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn add_contacts_refresh_and_unsubscribe() {
    let mut e = env(small_cfg()).await;
    let first = vec![e.sim.user_uri(2)];
    let (key, sid) = e.watching(&first).await;
    let path = format!("/users/user00001/subscriptions/{sid}");
    // Add two contacts (one unknown to the server) with expiry 0 = keep.
    let body = format!(
        "<subscription><contactsList><contact contactURI=\"{}\"/><contact contactURI=\"ghost@example.com\"/></contactsList><expiration>0</expiration></subscription>",
        e.sim.user_uri(3)
    );
    let r = e.req(Method::PUT, &path, Some(&key), &[], Some(body)).await;
    assert_eq!((r.status, r.location_id()), (201, sid), "{}", r.body);
    assert_eq!(e.next_callback().await, sid);
    let got = e.fetch_basic(&key, "user00001", sid).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], ("ghost@example.com".into(), "UNKNOWN".into()));
    // Refresh only.
    let r = e
        .req(
            Method::PUT,
            &path,
            Some(&key),
            &[("Presence-Expiry", "7200")],
            None,
        )
        .await;
    assert_eq!(r.status, 201);
    e.req(
        Method::PUT,
        &path,
        Some(&key),
        &[],
        Some("<subscription/>".into()),
    )
    .await
    .expect_error(400, 145);
    // Unsubscribe, then it is gone.
    assert_eq!(
        e.req(Method::DELETE, &path, Some(&key), &[], None)
            .await
            .status,
        200
    );
    e.fetch(&key, "user00001", sid, "basic")
        .await
        .expect_error(400, 133);
    e.req(Method::DELETE, &path, Some(&key), &[], None)
        .await
        .expect_error(400, 133);
    assert!(e.sim.set_basic(&first[0], "AWAY"));
    e.no_callback().await;
    e.sim.shutdown().await;
}

#[tokio::test]
async fn error_codes() {
    let e = env(PwsSimConfig {
        max_contacts_per_subscription: 3,
        ..small_cfg()
    })
    .await;
    let app = e.login_app(false).await;
    let ep = e.register(&app).await;
    let key = e.login_user(&app, "user00001", false).await;
    let other = e.login_user(&app, "user00002", false).await;
    let c = |n| e.sim.user_uri(n);

    // Keys: missing 100, invalid 101, wrong kind 140 / 141, another user's key 101.
    e.fetch("", "user00001", 1, "basic")
        .await
        .expect_error(401, 100);
    e.fetch("not-a-key", "user00001", 1, "basic")
        .await
        .expect_error(401, 101);
    e.fetch(&app, "user00001", 1, "basic")
        .await
        .expect_error(400, 140);
    e.fetch(&other, "user00001", 1, "basic")
        .await
        .expect_error(401, 101);
    // Unknown subscription 133; somebody else's 137; bad presence type 110.
    e.fetch(&key, "user00001", 999, "basic")
        .await
        .expect_error(400, 133);
    let sid = e.subscribe(&other, "user00002", &[c(3)], ep).await;
    e.fetch(&key, "user00001", sid, "basic")
        .await
        .expect_error(400, 137);
    e.fetch(&key, "user00001", sid, "fancy")
        .await
        .expect_error(400, 110);

    // Set presence rules.
    e.set_basic_rest(&key, "user00001", "AVAILABLE", "true")
        .await
        .expect_error(400, 121);
    e.set_basic_rest(&key, "user00001", "DND", "false")
        .await
        .expect_error(400, 122);
    e.set_basic_rest(&key, "user00001", "AWAY", "yes")
        .await
        .expect_error(400, 125);
    e.set_basic_rest(&key, "user00001", "", "false")
        .await
        .expect_error(400, 115);
    e.set_basic_rest(&key, "user00001", "UNKNOWN", "false")
        .await
        .expect_error(400, 120);
    e.set_basic_rest(&key, "user00001", "SLEEPING", "false")
        .await
        .expect_error(400, 120);
    let r = e
        .req(
            Method::PUT,
            "/users/user00001/presence/basic",
            Some(&key),
            &[("Presence-Expiry", "10")],
            Some("<presence>AWAY</presence>".into()),
        )
        .await;
    r.expect_error(400, 131);

    // Subscriptions: contact counts 135, body shape 102/103/134/146/147/148/143/124, endpoint 132.
    e.subscribe_raw(&key, "user00001", &[], ep)
        .await
        .expect_error(400, 135);
    let four: Vec<String> = (2..=5).map(c).collect();
    e.subscribe_raw(&key, "user00001", &four, ep)
        .await
        .expect_error(400, 135);
    e.subscribe_raw(&key, "user00001", &[c(2)], 424242)
        .await
        .expect_error(400, 132);
    e.subscribe_raw(&key, "user00001", &["no-at-sign".into()], ep)
        .await
        .expect_error(400, 124);
    let sub = |body: &str| {
        e.req(
            Method::POST,
            "/users/user00001/subscriptions",
            Some(&key),
            &[],
            Some(body.to_owned()),
        )
    };
    let t = "<subscriptionType>PRESENCE_NOTIFICATION</subscriptionType>";
    sub("<subscription><contactsList>")
        .await
        .expect_error(400, 102);
    sub("<subscribe/>").await.expect_error(400, 103);
    sub(&format!("<subscription><contactsList><contact contactURI=\"{}\"/></contactsList><subscriptionType>X</subscriptionType><endPointID>{ep}</endPointID></subscription>", c(2)))
        .await
        .expect_error(400, 134);
    sub(&format!(
        "<subscription>{t}<endPointID>{ep}</endPointID></subscription>"
    ))
    .await
    .expect_error(400, 146);
    sub(&format!("<subscription><contactsList><buddy/></contactsList>{t}<endPointID>{ep}</endPointID></subscription>"))
        .await
        .expect_error(400, 147);
    sub(&format!("<subscription><contactsList><contact uri=\"x@y\"/></contactsList>{t}<endPointID>{ep}</endPointID></subscription>"))
        .await
        .expect_error(400, 148);
    sub(&format!("<subscription><contactsList><contact contactURI=\" \"/></contactsList>{t}<endPointID>{ep}</endPointID></subscription>"))
        .await
        .expect_error(400, 143);

    // Hostile bodies: not UTF-8 / too large 150, garbage 102; never a panic.
    e.req(
        Method::POST,
        "/endpoints",
        Some(&app),
        &[],
        Some("\u{0}<<<&&&".into()),
    )
    .await
    .expect_error(400, 102);
    let huge = format!(
        "<endpoint><url>{}</url></endpoint>",
        "a".repeat(super::http::MAX_BODY)
    );
    e.req(Method::POST, "/endpoints", Some(&app), &[], Some(huge))
        .await
        .expect_error(400, 150);
    let r = e
        .http
        .post(format!("{}/endpoints", e.sim.base_url()))
        .header("Presence-Session-Key", &app)
        .body(vec![0xff, 0xfe, 0x3c])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Unknown paths and methods.
    assert_eq!(
        e.req(Method::GET, "/nothing/here", Some(&key), &[], None)
            .await
            .status,
        404
    );
    assert_eq!(
        e.req(Method::GET, "/soap", None, &[], None).await.status,
        404
    );
    let r = e
        .http
        .get(format!("http://{}/elsewhere", e.sim.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        e.req(Method::GET, "/endpoints", Some(&app), &[], None)
            .await
            .status,
        405
    );
    assert_eq!(e.sim.stats().errors_returned, 28);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn cpu_throttle_answers_210_and_sends_no_callbacks() {
    let mut e = env(small_cfg()).await;
    let contact = e.sim.user_uri(2);
    let (key, sid) = e.watching(std::slice::from_ref(&contact)).await;

    e.sim.set_cpu_throttle(true);
    let sent = e.sim.stats().callbacks_sent;
    assert!(e.sim.set_basic(&contact, "BUSY"));
    e.no_callback().await;
    let s = e.sim.stats();
    assert_eq!(s.callbacks_sent, sent);
    assert_eq!(s.callbacks_suppressed, 1);
    let r = e.fetch(&key, "user00001", sid, "basic").await;
    r.expect_error(503, 210);
    e.subscribe_raw(&key, "user00001", std::slice::from_ref(&contact), 1)
        .await
        .expect_error(503, 210);

    // Throttle over: the lost notification is not replayed, but a fetch gets the change,
    // and after it notifications flow again.
    e.sim.set_cpu_throttle(false);
    assert_eq!(
        e.fetch_basic(&key, "user00001", sid).await,
        vec![(contact.clone(), "BUSY".into())]
    );
    assert!(e.sim.set_basic(&contact, "AWAY"));
    assert_eq!(e.next_callback().await, sid);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn dropped_callbacks_block_the_queue_until_a_fetch() {
    let mut e = env(small_cfg()).await;
    let contact = e.sim.user_uri(2);
    let (key, sid) = e.watching(std::slice::from_ref(&contact)).await;
    e.sim.drop_callbacks(true);
    assert!(e.sim.set_basic(&contact, "BUSY"));
    e.sim.drop_callbacks(false);
    // Still waiting for a fetch: this change is not notified either.
    assert!(e.sim.set_basic(&contact, "DND"));
    e.no_callback().await;
    assert_eq!(
        e.fetch_basic(&key, "user00001", sid).await,
        vec![(contact.clone(), "DND".into())]
    );
    assert!(e.sim.set_basic(&contact, "AVAILABLE"));
    assert_eq!(e.next_callback().await, sid);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn restart_node_drops_everything_but_ids_keep_growing() {
    let mut e = env(small_cfg()).await;
    let contact = e.sim.user_uri(2);
    let (key, sid) = e.watching(std::slice::from_ref(&contact)).await;
    e.sim.restart_node();
    e.fetch(&key, "user00001", sid, "basic")
        .await
        .expect_error(401, 101);
    let app = e.login_app(false).await;
    let key = e.login_user(&app, "user00001", false).await;
    e.fetch(&key, "user00001", sid, "basic")
        .await
        .expect_error(400, 133);
    // The old endpoint is gone too; new ids continue after the old ones.
    e.subscribe_raw(&key, "user00001", std::slice::from_ref(&contact), 1)
        .await
        .expect_error(400, 132);
    let ep = e.register(&app).await;
    assert!(ep > sid);
    let sid2 = e
        .subscribe(&key, "user00001", std::slice::from_ref(&contact), ep)
        .await;
    assert!(sid2 > ep);
    assert_eq!(e.next_callback().await, sid2);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn expired_sessions_and_subscriptions() {
    let mut e = env(small_cfg()).await;
    let contact = e.sim.user_uri(2);
    let (key, sid) = e.watching(std::slice::from_ref(&contact)).await;
    e.sim.expire_sessions();
    e.fetch(&key, "user00001", sid, "basic")
        .await
        .expect_error(401, 101);
    // Re-login: the subscription (owned by the user) is still there and still notifies.
    let app = e.login_app(false).await;
    let key = e.login_user(&app, "user00001", false).await;
    assert!(e.fetch_basic(&key, "user00001", sid).await.is_empty());
    assert!(e.sim.set_basic(&contact, "BUSY"));
    assert_eq!(e.next_callback().await, sid);

    e.sim.expire_subscriptions();
    e.fetch(&key, "user00001", sid, "basic")
        .await
        .expect_error(400, 133);
    assert!(e.sim.set_basic(&contact, "AWAY"));
    e.no_callback().await;
    e.sim.shutdown().await;
}

#[tokio::test]
async fn logout_of_app_user_logs_out_its_end_users() {
    let e = env(small_cfg()).await;
    let app = e.login_app(false).await;
    let ep = e.register(&app).await;
    let key = e.login_user(&app, "user00001", false).await;
    let sid = e
        .subscribe(&key, "user00001", &[e.sim.user_uri(3)], ep)
        .await;
    // A key of another user cannot log this one out.
    e.req(
        Method::DELETE,
        "/users/user00001/session",
        Some(&app),
        &[],
        None,
    )
    .await
    .expect_error(401, 101);
    let r = e
        .req(
            Method::DELETE,
            "/users/pwsapp/session",
            Some(&app),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    e.fetch(&key, "user00001", sid, "basic")
        .await
        .expect_error(401, 101);
    let s = e.sim.stats();
    assert_eq!(
        (
            s.active_sessions,
            s.active_endpoints,
            s.active_subscriptions
        ),
        (0, 0, 0)
    );
    e.sim.shutdown().await;
}

#[tokio::test]
async fn set_presence_through_pws_feeds_notifications() {
    let mut e = env(small_cfg()).await;
    let contact = e.sim.user_uri(2);
    let (_key, sid) = e.watching(std::slice::from_ref(&contact)).await;
    let app = e.login_app(false).await;
    let ck = e.login_user(&app, "user00002", false).await;

    let r = e.set_basic_rest(&ck, "user00002", "BUSY", "false").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(e.sim.basic_of(&contact).as_deref(), Some("BUSY"));
    assert_eq!(e.next_callback().await, sid);
    let rich = e.sim.rich_of(&contact).unwrap();
    assert!(rich.contains("<tuple id=\"cisco-pws\">"), "{rich}");

    // Override DND masks client changes.
    assert_eq!(
        e.set_basic_rest(&ck, "user00002", "DND", "true")
            .await
            .status,
        200
    );
    e.sim.set_basic(&contact, "AVAILABLE");
    assert_eq!(e.sim.basic_of(&contact).as_deref(), Some("DND"));
    assert!(e
        .sim
        .rich_of(&contact)
        .unwrap()
        .contains("<tuple id=\"pws-override\">"));

    // Rich set: 161 / 162, then a valid override and a clear.
    let pidf = |tuple: &str, act: &str, source: bool| {
        let src = if source {
            "<source xmlns=\"urn:cisco:params:xml:ns:pidf:source\">Human</source>"
        } else {
            ""
        };
        format!(
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:{contact}\">\
             <tuple id=\"{tuple}\"><status><basic>open</basic></status>{src}</tuple>\
             <person xmlns=\"urn:cisco:params:xml:ns:pidf:rpid\" id=\"user00002\">\
             <activities>{act}</activities><class>manual</class><note>Back at 3</note></person></presence>"
        )
    };
    let put = |over: &'static str, body: String| {
        let h: &'static [(&str, &str)] = if over == "true" {
            &[("Presence-Override", "true")]
        } else {
            &[("Presence-Override", "false")]
        };
        e.req(
            Method::PUT,
            "/users/user00002/presence/rich",
            Some(&ck),
            h,
            Some(body),
        )
    };
    put("true", pidf("mine", "<away/>", true))
        .await
        .expect_error(400, 161);
    put("true", pidf("pws-override", "<away/>", false))
        .await
        .expect_error(400, 162);
    assert_eq!(
        put("true", pidf("pws-override", "<away/>", true))
            .await
            .status,
        200
    );
    assert_eq!(e.sim.basic_of(&contact).as_deref(), Some("AWAY"));
    assert!(e
        .sim
        .rich_of(&contact)
        .unwrap()
        .contains("<note>Back at 3</note>"));
    assert_eq!(
        put("false", pidf("cisco-pws", "<clear/>", true))
            .await
            .status,
        200
    );
    assert_eq!(e.sim.basic_of(&contact).as_deref(), Some("AVAILABLE"));
    assert!(e.sim.stats().sets >= 4);
    e.sim.shutdown().await;
}

fn pidf_of_contact<'a>(list: &'a Element, uri: &str) -> &'a Element {
    list.children
        .iter()
        .find(|p| p.attr("entity") == Some(&format!("sip:{uri}")))
        .unwrap_or_else(|| panic!("no PIDF for {uri}"))
}

#[tokio::test]
async fn rich_fetch_carries_cisco_person_and_activity() {
    let mut e = env(small_cfg()).await;
    let (a, b) = (e.sim.user_uri(2), e.sim.user_uri(3));
    let (key, sid) = e
        .watching(&[a.clone(), b.clone(), "ghost@example.com".into()])
        .await;
    assert!(e.sim.set_rich(&a, "on-the-phone", Some("In a call")));
    assert!(e.sim.set_basic(&b, "UNAVAILABLE"));
    assert_eq!(e.next_callback().await, sid);
    assert_eq!(e.sim.basic_of(&a).as_deref(), Some("BUSY"));

    let r = e.fetch(&key, "user00001", sid, "rich").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("xmlns=\"urn:cisco:params:xml:ns:pidf:rpid\""),
        "{}",
        r.body
    );
    let list = xml::parse(&r.body).unwrap();
    assert_eq!(
        (list.name.as_str(), list.attr("type")),
        ("presenceList", Some("rich"))
    );
    assert_eq!(list.children.len(), 2);

    let pa = pidf_of_contact(&list, &a);
    let acts: Vec<&str> = pa
        .descendant("activities")
        .unwrap()
        .children
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(acts[..2], ["busy", "on-the-phone"]);
    assert_eq!(pa.descendant("phone-status").unwrap().text, "busy");
    assert_eq!(
        pa.child("person").unwrap().child_text("note"),
        Some("In a call")
    );
    assert_eq!(pa.child("tuple").unwrap().attr("id"), Some("cisco-upc"));

    let pb = pidf_of_contact(&list, &b);
    let acts = &pb.descendant("activities").unwrap().children;
    assert!(
        acts.iter().all(|c| c.name.ends_with("-status")),
        "no activity when offline"
    );
    for t in pb.children.iter().filter(|c| c.name == "tuple") {
        assert_eq!(
            t.child("status").unwrap().child_text("basic"),
            Some("closed")
        );
    }

    // Polled presence, basic and rich, with an escaped URI in the path.
    let p = format!(
        "/users/user00001/presence/basic/contacts/{}",
        a.replace('@', "%40")
    );
    let r = e.req(Method::GET, &p, Some(&key), &[], None).await;
    assert_eq!(basic_list(&r.body), vec![(a.clone(), "BUSY".into())]);
    let p = "/users/user00001/presence/rich/contacts/ghost@example.com";
    let r = e.req(Method::GET, p, Some(&key), &[], None).await;
    assert!(
        r.body.contains(
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:ghost@example.com\"/>"
        ),
        "{}",
        r.body
    );
    e.sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_answers_212() {
    let e = env(small_cfg()).await;
    let app = e.login_app(false).await;
    e.sim.set_rate_limit(Some(3));
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = e
            .req(
                Method::POST,
                "/users/user00001/sessions",
                Some(&app),
                &[],
                None,
            )
            .await;
        codes.push(if r.status == 201 { 0 } else { r.code() });
    }
    assert!(codes.contains(&212), "{codes:?}");
    let r = e
        .req(
            Method::POST,
            "/users/user00001/sessions",
            Some(&app),
            &[],
            None,
        )
        .await;
    if r.status != 201 {
        r.expect_error(503, 212);
    }
    e.sim.set_rate_limit(None);
    e.login_user(&app, "user00001", false).await;
    e.sim.shutdown().await;
}

#[tokio::test]
async fn random_changes_reach_subscribers() {
    let mut e = env(PwsSimConfig {
        users: 20,
        change_rate: 500.0,
        seed: 7,
        ..PwsSimConfig::default()
    })
    .await;
    let contacts: Vec<String> = (1..=20).map(|n| e.sim.user_uri(n)).collect();
    let (key, sid) = e.watching(&contacts).await;
    assert_eq!(e.next_callback().await, sid);
    let got = e.fetch_basic(&key, "user00001", sid).await;
    assert!(!got.is_empty());
    for (c, _) in &got {
        assert!(contacts.contains(c));
    }
    e.sim.set_change_rate(0.0);
    assert!(e.sim.stats().changes > 0);
    e.sim.shutdown().await;
}

#[test]
fn the_same_seed_gives_the_same_users_and_changes() {
    let cfg = PwsSimConfig {
        users: 100,
        seed: 42,
        ..PwsSimConfig::default()
    };
    let run = || {
        let mut core = engine::Core::new(&cfg, Arc::new(Counters::default()));
        let mut rng = fastrand::Rng::with_seed(9);
        let now = Instant::now();
        let mut out = Vec::new();
        for _ in 0..500 {
            core.random_change(&mut rng, now, &mut out);
        }
        (1..=100).map(|u| core.pidf_of(u - 1)).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[tokio::test]
async fn control_api_over_http() {
    let mut e = env(small_cfg()).await;
    let contact = e.sim.user_uri(2);
    let (_key, sid) = e.watching(std::slice::from_ref(&contact)).await;
    let ctl = e.sim.control_url();
    let http = e.http.clone();
    let post = |path: String, body: &'static str| {
        http.post(format!("{ctl}{path}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let r = post(format!("/users/{contact}/basic"), r#"{"status":"BUSY"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(e.next_callback().await, sid);
    assert_eq!(e.sim.basic_of(&contact).as_deref(), Some("BUSY"));
    let r = post(
        "/users/nobody@example.com/basic".into(),
        r#"{"status":"BUSY"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = post(format!("/users/{contact}/basic"), r#"{"status":"UNKNOWN"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(
        format!("/users/{contact}/rich"),
        r#"{"activity":"meeting","note":"Standup"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(e.sim.rich_of(&contact).unwrap().contains("<meeting/>"));
    let user: serde_json::Value = http
        .get(format!("{ctl}/users/{contact}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["basic"], "BUSY");
    assert!(user["rich"].as_str().unwrap().contains("<busy/><meeting/>"));

    let r = post(
        "/faults".into(),
        r#"{"cpu_throttle":true,"rate_limit":null,"drop_callbacks":false}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    e.fetch(&_key, "user00001", sid, "basic")
        .await
        .expect_error(503, 210);
    post("/faults".into(), r#"{"cpu_throttle":false}"#)
        .await
        .unwrap();
    assert_eq!(e.fetch(&_key, "user00001", sid, "basic").await.status, 200);

    let stats: SimStats = e
        .http
        .get(format!("{ctl}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.subscriptions, 1);
    assert!(stats.callbacks_sent >= 2);
    let cbs: Vec<CallbackRecord> = e
        .http
        .get(format!("{ctl}/callbacks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(cbs
        .iter()
        .all(|c| c.subscription_id == sid && c.status == Some(200)));
    assert!(cbs[0]
        .url
        .ends_with(&format!("?id={sid}&eventType=PRESENCE_NOTIFICATION")));

    for p in ["/expire-sessions", "/expire-subscriptions", "/restart"] {
        assert_eq!(post(p.into(), "").await.unwrap().status(), 200);
    }
    assert_eq!(e.sim.stats().active_sessions, 0);
    assert_eq!(post("/nope".into(), "").await.unwrap().status(), 404);
    e.sim.shutdown().await;
}

/// 10 000 users, two 5000-contact subscriptions, thousands of random changes per second,
/// and a watcher that fetches on every notification, as a connector would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_under_load() {
    let mut e = env(PwsSimConfig {
        users: 10_000,
        seed: 3,
        ..PwsSimConfig::default()
    })
    .await;
    let app = e.login_app(false).await;
    let ep = e.register(&app).await;
    let key = e.login_user(&app, "user00001", false).await;
    let halves: Vec<Vec<String>> = [1..=5000, 5001..=10_000]
        .into_iter()
        .map(|r| r.map(|n| e.sim.user_uri(n)).collect())
        .collect();
    let t0 = Instant::now();
    let mut sids = Vec::new();
    for h in &halves {
        let sid = e.subscribe(&key, "user00001", h, ep).await;
        sids.push(sid);
    }
    for _ in 0..2 {
        let sid = e.next_callback().await;
        assert!(sids.contains(&sid));
    }
    for &sid in &sids {
        assert_eq!(e.fetch_basic(&key, "user00001", sid).await.len(), 5000);
        let r = e.fetch(&key, "user00001", sid, "rich").await;
        assert_eq!(
            r.body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presenceList type=\"rich\"/>"
        );
    }
    let setup = t0.elapsed();

    e.sim.set_change_rate(5000.0);
    let t1 = Instant::now();
    let mut fetched = 0usize;
    let mut rounds = 0;
    while fetched < 5000 {
        let sid = e.next_callback().await;
        let r = e.fetch(&key, "user00001", sid, "rich").await;
        assert_eq!(r.status, 200);
        fetched += xml::parse(&r.body).unwrap().children.len();
        rounds += 1;
    }
    e.sim.set_change_rate(0.0);
    let elapsed = t1.elapsed();
    let s = e.sim.stats();
    eprintln!(
        "setup {setup:?}; {} changes, {fetched} contacts fetched in {rounds} fetches, {elapsed:?}",
        s.changes
    );
    assert!(s.changes >= 5000);
    assert_eq!(s.callbacks_failed, 0);
    e.sim.shutdown().await;
}
