//! End-to-end tests over real HTTP: the simulator on 127.0.0.1:0 and a reqwest client that
//! starts at autodiscovery and follows `_links` (it never builds a UCWA URL). Pending GETs run
//! as spawned tasks; timing is driven by [`UcwaSimHandle::advance_clock`], never by sleeping.
//! "Still pending" is a short timeout on the task; "the server has it" is a wait on the
//! `pgets` counter.

use super::*;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(200);

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: status {} body {:?}", self.status, self.body))
    }

    /// A UCWA error (§8): status, JSON content type, code and subcode.
    fn expect_error(&self, status: u16, code: &str, subcode: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.body);
        let ct = self.headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with("application/json"), "{ct}");
        let v = self.json();
        assert_eq!(v["code"], code, "{}", self.body);
        assert_eq!(v["subcode"].as_str(), subcode, "{}", self.body);
        assert!(v["message"].is_string());
    }

    fn expect_401(&self) {
        assert_eq!(self.status, 401, "{}", self.body);
        let challenges: Vec<&str> = self
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges[0].starts_with("MsRtcOAuth href=\"http://")
                && challenges[0].contains("/WebTicket/oauthtoken\",grant_type=\"urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password\""),
            "{challenges:?}"
        );
    }
}

#[derive(Clone)]
struct Env {
    sim: UcwaSimHandle,
    http: reqwest::Client,
}

/// One signed-in user with an application.
#[derive(Clone)]
struct Session {
    token: String,
    app: Value,
    /// The `next` href to GET (absolute).
    next: String,
}

fn cfg() -> UcwaSimConfig {
    UcwaSimConfig {
        users: 50,
        ..UcwaSimConfig::default()
    }
}

async fn env(cfg: UcwaSimConfig) -> Env {
    crate::install_crypto_provider();
    let sim = start("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Env { sim, http }
}

/// `href` made absolute against the simulator's origin (UCWA hrefs are relative).
fn abs(env: &Env, href: &str) -> String {
    if href.starts_with("http") {
        href.to_owned()
    } else {
        format!("http://{}{href}", env.sim.addr())
    }
}

fn href(v: &Value) -> &str {
    v["href"]
        .as_str()
        .unwrap_or_else(|| panic!("no href in {v}"))
}

/// `ack=N` of an events href.
fn ack_of(href: &str) -> u64 {
    href.rsplit("ack=").next().unwrap().parse().unwrap()
}

/// The events of a response, flattened: (sender rel, link rel, link href, type, in rel).
fn events(v: &Value) -> Vec<(String, String, String, String, String)> {
    let mut out = Vec::new();
    for s in v["sender"].as_array().into_iter().flatten() {
        for e in s["events"].as_array().unwrap() {
            out.push((
                s["rel"].as_str().unwrap().to_owned(),
                e["link"]["rel"].as_str().unwrap().to_owned(),
                e["link"]["href"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
                e["in"]["rel"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}

/// `POST url` with an `application/x-www-form-urlencoded` body.
fn form_post(http: &reqwest::Client, url: &str, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let body = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    http.post(url)
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded;charset=UTF-8",
        )
        .body(body)
}

/// Waits (bounded) for a condition on the simulator's synchronous state.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl Env {
    async fn send(&self, r: reqwest::RequestBuilder) -> Resp {
        let resp = tokio::time::timeout(WAIT, r.send())
            .await
            .expect("an answer in time")
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    fn req(&self, m: reqwest::Method, url: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(m, abs(self, url))
            .header("Accept", "application/json");
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r
    }

    async fn get(&self, url: &str, token: Option<&str>) -> Resp {
        self.send(self.req(reqwest::Method::GET, url, token)).await
    }

    async fn post(&self, url: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut r = self.req(reqwest::Method::POST, url, token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }

    async fn delete(&self, url: &str, token: Option<&str>) -> Resp {
        self.send(self.req(reqwest::Method::DELETE, url, token))
            .await
    }

    /// Autodiscover → user (401 + challenge) → token → user → applications href.
    async fn sign_in(&self, n: u32) -> (String, String) {
        let root = self.get(&self.sim.autodiscover_url(), None).await;
        assert_eq!(root.status, 200);
        let user_href = href(&root.json()["_links"]["user"]).to_owned();
        let challenge = self.get(&user_href, None).await;
        challenge.expect_401();
        let h = challenge.headers["www-authenticate"].to_str().unwrap();
        let token_url = h
            .split("href=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let r = self
            .send(form_post(
                &self.http,
                token_url,
                &[
                    ("grant_type", "password"),
                    ("username", &self.sim.upn(n)),
                    ("password", "ucwa-secret"),
                ],
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let t = r.json();
        assert_eq!(t["token_type"], "Bearer");
        let token = t["access_token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("cwt="));
        let user = self.get(&user_href, Some(&token)).await;
        assert_eq!(user.status, 200, "{}", user.body);
        let apps = href(&user.json()["_links"]["applications"]).to_owned();
        (token, apps)
    }

    /// A signed-in user with a new application.
    async fn session(&self, n: u32) -> Session {
        let (token, apps) = self.sign_in(n).await;
        let body =
            json!({"userAgent": "tests/1.0", "endpointId": format!("ep-{n}"), "culture": "en-US"});
        let r = self.post(&apps, Some(&token), Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let app = r.json();
        let next = abs(self, href(&app["_links"]["events"]));
        Session { token, app, next }
    }

    /// An event GET answered at once (or within the wait).
    async fn pget(&self, s: &mut Session) -> Value {
        let r = self.get(&s.next.clone(), Some(&s.token)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        s.next = abs(self, href(&v["_links"]["next"]));
        v
    }

    /// An event GET left pending in a task.
    fn spawn_get(&self, url: &str, token: &str) -> JoinHandle<Resp> {
        let env = self.clone();
        let (url, token) = (url.to_owned(), token.to_owned());
        tokio::spawn(async move { env.get(&url, Some(&token)).await })
    }

    /// An event GET left pending, once the server has it.
    async fn pending(&self, url: &str, token: &str) -> JoinHandle<Resp> {
        let before = self.sim.stats().pgets;
        let h = self.spawn_get(url, token);
        eventually("the P-GET to arrive", || self.sim.stats().pgets > before).await;
        h
    }

    /// Subscribes the session to users `ns` for `minutes`; returns the subscription.
    async fn subscribe(&self, s: &Session, ns: &[u32], minutes: u64) -> Value {
        let uris: Vec<String> = ns.iter().map(|n| self.sim.user_uri(*n)).collect();
        let url = href(&s.app["_embedded"]["people"]["_links"]["presenceSubscriptions"]);
        let r = self
            .post(
                url,
                Some(&s.token),
                Some(json!({"duration": minutes, "uris": uris})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()
    }

    /// Subscribes and drains the initial events.
    async fn watching(&self, watcher: u32, ns: &[u32]) -> (Session, Value) {
        let mut s = self.session(watcher).await;
        let sub = self.subscribe(&s, ns, 30).await;
        let first = self.pget(&mut s).await;
        assert_eq!(events(&first).len(), 2 * ns.len() + 1);
        (s, sub)
    }
}

async fn still_pending(h: &mut JoinHandle<Resp>) {
    if let Ok(r) = tokio::time::timeout(QUIET, h).await {
        let r = r.unwrap();
        panic!("the GET should still be pending: {} {}", r.status, r.body);
    }
}

async fn done(h: JoinHandle<Resp>) -> Resp {
    tokio::time::timeout(WAIT, h)
        .await
        .expect("released in time")
        .unwrap()
}

#[tokio::test]
async fn sign_in_follows_links_and_creates_applications() {
    let e = env(cfg()).await;
    let root = e.get(&e.sim.autodiscover_url(), None).await;
    assert!(root.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let links = &root.json()["_links"];
    assert!(href(&links["user"]).contains("/Autodiscover/AutodiscoverService.svc/root/oauth/user"));
    assert!(links["xframe"].is_object());
    let user_href = href(&links["user"]).to_owned();

    // Token failures: OAuth error bodies.
    let challenge = e.get(&user_href, None).await;
    challenge.expect_401();
    let h = challenge.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let token_url = h
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    for (form, error) in [
        (
            vec![
                ("grant_type", "password"),
                ("username", "user00001@example.com"),
                ("password", "nope"),
            ],
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("username", "nobody@example.com"),
                ("password", "ucwa-secret"),
            ],
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "urn:microsoft.rtc:windows"),
                ("username", "user00001@example.com"),
                ("password", "x"),
            ],
            "unsupported_grant_type",
        ),
        (vec![("grant_type", "password")], "invalid_request"),
    ] {
        let r = e.send(form_post(&e.http, token_url, &form)).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some(error)),
            "{form:?}"
        );
    }
    // A SIP URI works as the username too.
    let r = e
        .send(form_post(
            &e.http,
            token_url,
            &[
                ("grant_type", "password"),
                ("username", "sip:USER00001@example.com"),
                ("password", "ucwa-secret"),
            ],
        ))
        .await;
    assert_eq!(r.json()["expires_in"], 8 * 3600);

    let (token, apps) = e.sign_in(1).await;
    assert!(apps.ends_with("/ucwa/oauth/v1/applications"), "{apps}");
    e.post(&apps, None, Some(json!({}))).await.expect_401();
    e.post(&apps, Some("cwt=forged"), Some(json!({})))
        .await
        .expect_401();

    // Property names in either casing.
    let body = json!({"UserAgent": "tests/1.0", "EndpointId": "ep-a", "Culture": "en-US"});
    let r = e.post(&apps, Some(&token), Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("cwt_ucwa="));
    let app = r.json();
    assert_eq!(app["rel"], "application");
    assert_eq!(app["userAgent"], "tests/1.0");
    let self_href = href(&app["_links"]["self"]).to_owned();
    assert!(
        self_href.starts_with("/ucwa/oauth/v1/applications/"),
        "relative hrefs"
    );
    assert!(href(&app["_links"]["events"]).ends_with("/events?ack=1"));
    let me = &app["_embedded"]["me"];
    assert_eq!(me["uri"], e.sim.user_uri(1));
    assert!(me["_links"]["makeMeAvailable"].is_object());
    assert!(me["_links"]["presence"].is_null(), "lurker mode");
    assert!(app["_embedded"]["people"]["_links"]["presenceSubscriptions"].is_object());
    assert!(app["_embedded"]["communication"].is_object());

    // Identical create → the same application; same endpointId otherwise → 409.
    let again = e.post(&apps, Some(&token), Some(body)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], app["id"]);
    e.post(
        &apps,
        Some(&token),
        Some(json!({"userAgent": "other", "endpointId": "ep-a", "culture": "en-US"})),
    )
    .await
    .expect_error(409, "Conflict", Some("AlreadyExists"));
    e.post(
        &apps,
        Some(&token),
        Some(json!({"userAgent": "x", "endpointId": "ep-b"})),
    )
    .await
    .expect_error(400, "BadRequest", Some("ParameterValidationFailure"));
    e.post(
        &apps,
        Some(&token),
        Some(json!({"userAgent": "x".repeat(101), "endpointId": "ep-b", "culture": "en-US"})),
    )
    .await
    .expect_error(400, "BadRequest", Some("ParameterValidationFailure"));

    // Another user's token: 403. GET, DELETE, then 404.
    let (other, _) = e.sign_in(2).await;
    e.get(&self_href, Some(&other))
        .await
        .expect_error(403, "Forbidden", None);
    let r = e.get(&self_href, Some(&token)).await;
    assert_eq!((r.status, r.json()["id"].clone()), (200, app["id"].clone()));
    assert_eq!(e.delete(&self_href, Some(&token)).await.status, 204);
    e.get(&self_href, Some(&token)).await.expect_error(
        404,
        "NotFound",
        Some("ApplicationNotFound"),
    );
    let s = e.sim.stats();
    assert_eq!((s.apps_created, s.apps_alive), (1, 0));
    assert!(s.tokens_issued >= 3 && s.token_failures == 4);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn subscription_sends_initial_events_then_presence_is_read() {
    let e = env(cfg()).await;
    let mut s = e.session(1).await;
    let url = href(&s.app["_embedded"]["people"]["_links"]["presenceSubscriptions"]).to_owned();
    // `Uris` capitalised, as in the seed sample.
    let r = e
        .post(
            &url,
            Some(&s.token),
            Some(json!({"duration": 11, "Uris": [e.sim.user_uri(2), e.sim.user_uri(3)]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sub = r.json();
    assert_eq!(sub["rel"], "presenceSubscription");
    let sid = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(sid.len(), 8);
    assert!(href(&sub["_links"]["self"]).ends_with(&format!("/people/presenceSubscriptions/{sid}")));
    assert!(
        href(&sub["_links"]["memberships"]).ends_with(&format!("?presenceSubscriptionId={sid}"))
    );
    assert_eq!(
        sub["_links"]["addToPresenceSubscription"],
        sub["_links"]["memberships"]
    );

    let v = e.pget(&mut s).await;
    assert!(href(&v["_links"]["self"]).ends_with("events?ack=1"));
    assert_eq!(ack_of(&s.next), 2);
    let evs = events(&v);
    let shape: Vec<(&str, &str, &str, &str)> = evs
        .iter()
        .map(|(s, l, _, t, i)| (s.as_str(), l.as_str(), t.as_str(), i.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("people", "contact", "added", "subscribedContacts"),
            ("people", "contact", "added", "subscribedContacts"),
            ("people", "presenceSubscription", "added", ""),
            ("people", "contactPresence", "updated", "contact"),
            ("people", "contactPresence", "updated", "contact"),
        ]
    );
    assert_eq!(evs[2].2, href(&sub["_links"]["self"]));

    // Follow the contactPresence link: state without the user's URI.
    let presence_href = &evs[3].2;
    let r = e.get(presence_href, Some(&s.token)).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("\"\\/Date("),
        "server-style dates: {}",
        r.body
    );
    let p = r.json();
    assert_eq!(p["rel"], "contactPresence");
    let (avail, activity) = e.sim.presence_of(&e.sim.user_uri(2)).unwrap();
    assert_eq!(p["availability"], avail.as_str());
    assert_eq!(p["activity"].as_str(), activity.as_deref());
    assert!(p.get("uri").is_none(), "no URI in contactPresence");
    assert!(p["deviceType"].is_string());
    let la = p["lastActive"].as_str().unwrap();
    assert!(la.starts_with("/Date(") && la.ends_with(")/"), "{la}");
    assert_eq!(href(&p["_links"]["self"]), presence_href.as_str());
    // The `in` link names the contact.
    let contact = e
        .get(href(&v["sender"][0]["events"][3]["in"]), Some(&s.token))
        .await
        .json();
    assert_eq!(contact["uri"], e.sim.user_uri(2));
    assert_eq!(
        href(&contact["_links"]["contactPresence"]),
        presence_href.as_str()
    );
    let note = e
        .get(href(&contact["_links"]["contactNote"]), Some(&s.token))
        .await
        .json();
    assert_eq!(note["rel"], "contactNote");

    let members = e
        .get(href(&sub["_links"]["memberships"]), Some(&s.token))
        .await
        .json();
    assert_eq!(
        members["_embedded"]["presenceSubscriptionMembership"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let s2 = e.sim.stats();
    assert_eq!(
        (
            s2.subscriptions_alive,
            s2.subscribed_contacts,
            s2.presence_gets
        ),
        (1, 2, 1)
    );
    e.sim.shutdown().await;
}

#[tokio::test]
async fn one_change_gives_one_event_and_a_note_its_own() {
    let e = env(cfg()).await;
    let (mut s, _) = e.watching(1, &[2, 3]).await;
    let mut h = e.spawn_get(&s.next, &s.token);
    still_pending(&mut h).await;
    assert!(e
        .sim
        .set_presence(&e.sim.user_uri(2), "Busy", Some("on-the-phone"), None));
    let v = done(h).await.json();
    s.next = abs(&e, href(&v["_links"]["next"]));
    let evs = events(&v);
    assert_eq!(evs.len(), 1, "{v}");
    assert_eq!(evs[0].1, "contactPresence");
    assert!(evs[0].2.contains("/people/user00002@example.com/presence"));
    let p = e.get(&evs[0].2, Some(&s.token)).await.json();
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("Busy"), Some("on-the-phone"))
    );

    // A changed note: contactPresence and contactNote in one response.
    assert!(e
        .sim
        .set_presence("user00002@example.com", "Busy", None, Some("heads down")));
    let v = e.pget(&mut s).await;
    let rels: Vec<String> = events(&v).into_iter().map(|x| x.1).collect();
    assert_eq!(rels, ["contactPresence", "contactNote"]);
    let note_href = events(&v)[1].2.clone();
    let n = e.get(&note_href, Some(&s.token)).await.json();
    assert_eq!(
        (n["message"].as_str(), n["type"].as_str()),
        (Some("heads down"), Some("Personal"))
    );
    // Unknown users and values are refused.
    assert!(!e
        .sim
        .set_presence("sip:nobody@example.com", "Busy", None, None));
    assert!(!e
        .sim
        .set_presence(&e.sim.user_uri(2), "Inactive", None, None));
    e.sim.shutdown().await;
}

#[tokio::test]
async fn changes_within_the_hold_window_merge_into_one_event() {
    let e = env(UcwaSimConfig {
        medium_hold: Duration::from_secs(5),
        ..cfg()
    })
    .await;
    let mut s = e.session(1).await;
    e.subscribe(&s, &[2, 3], 30).await;
    // Even the initial events are held for the window.
    let mut h = e.pending(&s.next, &s.token).await;
    still_pending(&mut h).await;
    e.sim.advance_clock(Duration::from_secs(5));
    let v = done(h).await.json();
    assert_eq!(events(&v).len(), 5);
    s.next = abs(&e, href(&v["_links"]["next"]));

    let before = e.sim.stats().events_sent;
    let mut h = e.spawn_get(&s.next, &s.token);
    let u2 = e.sim.user_uri(2);
    assert!(e.sim.set_presence(&u2, "Busy", Some("in-a-meeting"), None));
    assert!(e.sim.set_presence(&u2, "Away", None, None));
    assert!(e.sim.set_presence(&u2, "DoNotDisturb", None, None));
    e.sim.advance_clock(Duration::from_secs(4));
    still_pending(&mut h).await;
    e.sim.advance_clock(Duration::from_secs(1));
    let v = done(h).await.json();
    s.next = abs(&e, href(&v["_links"]["next"]));
    let evs = events(&v);
    assert_eq!(evs.len(), 1, "three changes, one event: {v}");
    assert_eq!(evs[0].1, "contactPresence");
    let p = e.get(&evs[0].2, Some(&s.token)).await.json();
    assert_eq!(p["availability"], "DoNotDisturb", "the latest state");
    assert!(p.get("activity").is_none());
    assert_eq!(e.sim.stats().events_sent, before + 1);

    // A P-GET `medium` parameter changes the window for this application.
    let next = format!("{}&medium=10", s.next);
    let mut h = e.pending(&next, &s.token).await;
    assert!(e.sim.set_presence(&e.sim.user_uri(3), "Away", None, None));
    e.sim.advance_clock(Duration::from_secs(5));
    still_pending(&mut h).await;
    e.sim.advance_clock(Duration::from_secs(5));
    assert_eq!(events(&done(h).await.json()).len(), 1);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn ack_replay_redelivers_and_a_stale_ack_gets_resync() {
    let e = env(cfg()).await;
    let mut s = e.session(1).await;
    e.subscribe(&s, &[2], 30).await;
    let first_url = s.next.clone();
    let first = e.get(&first_url, Some(&s.token)).await;
    let v1 = first.json();
    s.next = abs(&e, href(&v1["_links"]["next"]));
    // The same ack again: the same response (the client lost it).
    let again = e.get(&first_url, Some(&s.token)).await;
    assert_eq!(again.body, first.body);
    assert_eq!(e.sim.stats().replays, 1);

    // Next acknowledges; afterwards the old ack is out of range.
    assert!(e.sim.set_presence(&e.sim.user_uri(2), "Away", None, None));
    let v2 = e.pget(&mut s).await;
    assert_eq!(ack_of(href(&v2["_links"]["self"])), 2);
    assert_eq!(ack_of(&s.next), 3);
    let mut resync = String::new();
    for stale in [first_url.clone(), first_url.replace("ack=1", "ack=99")] {
        let r = e.get(&stale, Some(&s.token)).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(
            v["_links"].as_object().unwrap().len(),
            1,
            "only resync: {v}"
        );
        assert!(v.get("sender").is_none());
        resync = abs(&e, href(&v["_links"]["resync"]));
        assert_eq!(ack_of(&resync), 3);
    }
    // Following the resync link continues the channel.
    assert!(e.sim.set_presence(&e.sim.user_uri(2), "Online", None, None));
    let v3 = e.get(&resync, Some(&s.token)).await.json();
    assert_eq!(events(&v3).len(), 1);
    assert_eq!(e.sim.stats().resyncs, 2);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn a_second_pget_replaces_the_first() {
    let e = env(cfg()).await;
    let (s, _) = e.watching(1, &[2]).await;
    let first = e.pending(&s.next, &s.token).await;
    let with_priority = format!("{}&priority=5", s.next);
    let mut second = e.pending(&with_priority, &s.token).await;
    done(first)
        .await
        .expect_error(409, "Conflict", Some("PGetReplaced"));
    // A lower priority with the same ack loses at once; the pending one stays.
    e.get(&s.next, Some(&s.token))
        .await
        .expect_error(409, "Conflict", Some("PGetReplaced"));
    still_pending(&mut second).await;
    assert!(e.sim.set_presence(&e.sim.user_uri(2), "Busy", None, None));
    let v = done(second).await.json();
    assert_eq!(events(&v).len(), 1);
    assert_eq!(e.sim.stats().pget_replaced, 2);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn pget_times_out_with_links_only_and_parameters_are_checked() {
    let e = env(cfg()).await;
    let mut s = e.session(1).await;
    let url = format!("{}&timeout=180", s.next);
    let mut h = e.pending(&url, &s.token).await;
    still_pending(&mut h).await;
    e.sim.advance_clock(Duration::from_secs(179));
    still_pending(&mut h).await;
    e.sim.advance_clock(Duration::from_secs(1));
    let v = done(h).await.json();
    assert_eq!(v.as_object().unwrap().len(), 1, "only _links: {v}");
    assert_eq!(ack_of(href(&v["_links"]["self"])), 1);
    assert_eq!(ack_of(href(&v["_links"]["next"])), 2);
    s.next = abs(&e, href(&v["_links"]["next"]));
    for bad in [
        "timeout=60",
        "timeout=1801",
        "medium=1",
        "low=4000",
        "ack=x",
    ] {
        e.get(&format!("{}&{bad}", s.next), Some(&s.token))
            .await
            .expect_error(400, "BadRequest", Some("ParameterValidationFailure"));
    }
    e.sim.shutdown().await;
}

#[tokio::test]
async fn expired_tokens_get_the_challenge_and_a_new_token_works() {
    let e = env(UcwaSimConfig {
        token_lifetime: Duration::from_secs(3600),
        app_idle_timeout: Duration::from_secs(24 * 3600),
        ..cfg()
    })
    .await;
    let s = e.session(1).await;
    let self_href = href(&s.app["_links"]["self"]).to_owned();
    e.sim.advance_clock(Duration::from_secs(3599));
    assert_eq!(e.get(&self_href, Some(&s.token)).await.status, 200);
    e.sim.advance_clock(Duration::from_secs(1));
    e.get(&self_href, Some(&s.token)).await.expect_401();
    e.get(&s.next, Some(&s.token)).await.expect_401();
    let (token, _) = e.sign_in(1).await;
    assert_eq!(e.get(&self_href, Some(&token)).await.status, 200);

    e.sim.expire_tokens();
    e.get(&self_href, Some(&token)).await.expect_401();
    let (token, _) = e.sign_in(1).await;
    assert_eq!(e.get(&self_href, Some(&token)).await.status, 200);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn expired_applications_answer_application_not_found() {
    let e = env(cfg()).await;
    let (s, sub) = e.watching(1, &[2]).await;
    let h = e.pending(&s.next, &s.token).await;
    e.sim.expire_applications();
    done(h)
        .await
        .expect_error(404, "NotFound", Some("ApplicationNotFound"));
    for url in [
        href(&s.app["_links"]["self"]),
        &s.next,
        href(&sub["_links"]["self"]),
    ] {
        e.get(url, Some(&s.token))
            .await
            .expect_error(404, "NotFound", Some("ApplicationNotFound"));
    }
    e.post(
        href(&sub["_links"]["self"]),
        Some(&s.token),
        Some(json!({"duration": 30})),
    )
    .await
    .expect_error(404, "NotFound", Some("ApplicationNotFound"));
    assert_eq!(e.sim.stats().apps_alive, 0);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn idle_applications_are_terminated() {
    let e = env(cfg()).await;
    let a = e.session(1).await;
    let b = e.session(2).await;
    let a_self = href(&a.app["_links"]["self"]).to_owned();
    let b_self = href(&b.app["_links"]["self"]).to_owned();
    // b holds a P-GET (30 min timeout); a has none.
    let url = format!("{}&timeout=1800", b.next);
    let mut h = e.pending(&url, &b.token).await;
    e.sim.advance_clock(Duration::from_secs(14 * 60));
    assert_eq!(
        e.get(&a_self, Some(&a.token)).await.status,
        200,
        "other requests do not count"
    );
    e.sim.advance_clock(Duration::from_secs(60));
    e.get(&a_self, Some(&a.token))
        .await
        .expect_error(404, "NotFound", Some("ApplicationNotFound"));
    assert_eq!(e.sim.stats().apps_expired, 1);
    e.sim.advance_clock(Duration::from_secs(10 * 60));
    still_pending(&mut h).await;
    assert_eq!(
        e.get(&b_self, Some(&b.token)).await.status,
        200,
        "a pending GET keeps it"
    );
    e.sim.advance_clock(Duration::from_secs(6 * 60));
    assert_eq!(done(h).await.status, 200, "timeout after 30 min");
    e.sim.advance_clock(Duration::from_secs(15 * 60));
    e.get(&b_self, Some(&b.token))
        .await
        .expect_error(404, "NotFound", Some("ApplicationNotFound"));
    assert_eq!(e.sim.stats().apps_expired, 2);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn extend_adds_minutes_caps_at_thirty_and_warns_before_expiry() {
    let e = env(cfg()).await;
    let mut s = e.session(1).await;
    let a = e.subscribe(&s, &[2], 10).await;
    let b = e.subscribe(&s, &[3], 30).await;
    e.pget(&mut s).await;
    let (a_self, b_self) = (
        href(&a["_links"]["self"]).to_owned(),
        href(&b["_links"]["self"]).to_owned(),
    );
    let r = e
        .post(&format!("{a_self}?duration=10"), Some(&s.token), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], a["id"]);
    // The body form works too; 30 + 30 is capped at 30.
    let r = e
        .post(&b_self, Some(&s.token), Some(json!({"duration": 30})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    e.post(&format!("{b_self}?duration=31"), Some(&s.token), None)
        .await
        .expect_error(400, "BadRequest", Some("ParameterValidationFailure"));

    // a now ends at 20 min: warned at 19.
    let url = format!("{}&timeout=1800", s.next);
    let mut h = e.pending(&url, &s.token).await;
    e.sim.advance_clock(Duration::from_secs(18 * 60));
    still_pending(&mut h).await;
    e.sim.advance_clock(Duration::from_secs(60));
    let v = done(h).await.json();
    s.next = abs(&e, href(&v["_links"]["next"]));
    let ev = &v["sender"][0]["events"][0];
    assert_eq!(
        (ev["link"]["rel"].as_str(), ev["type"].as_str()),
        (Some("presenceSubscription"), Some("updated"))
    );
    assert_eq!(ev["_embedded"]["presenceSubscription"]["id"], a["id"]);
    assert_eq!(events(&v).len(), 1);

    e.sim.advance_clock(Duration::from_secs(60));
    e.get(&a_self, Some(&s.token))
        .await
        .expect_error(404, "NotFound", Some("ResourceNotFound"));
    e.post(&format!("{a_self}?duration=30"), Some(&s.token), None)
        .await
        .expect_error(404, "NotFound", Some("ResourceNotFound"));
    // b (capped at 30) is alive at 29:59 and gone at 30.
    e.sim.advance_clock(Duration::from_secs(9 * 60 + 59));
    assert_eq!(e.get(&b_self, Some(&s.token)).await.status, 200);
    e.sim.advance_clock(Duration::from_secs(1));
    assert_eq!(e.get(&b_self, Some(&s.token)).await.status, 404);
    // Expired silently: no contact changes reach the application any more.
    assert_eq!(e.sim.stats().subscriptions_alive, 0);

    // Durations outside 10–30 minutes.
    let url = href(&s.app["_embedded"]["people"]["_links"]["presenceSubscriptions"]);
    for d in [5, 31] {
        e.post(
            url,
            Some(&s.token),
            Some(json!({"duration": d, "uris": [e.sim.user_uri(2)]})),
        )
        .await
        .expect_error(400, "BadRequest", Some("ParameterValidationFailure"));
    }
    e.sim.shutdown().await;
}

#[tokio::test]
async fn own_presence_after_make_me_available_reaches_watchers() {
    let e = env(cfg()).await;
    let (mut w, _) = e.watching(1, &[2]).await;
    let mut me = e.session(2).await;
    let me_links = me.app["_embedded"]["me"]["_links"].clone();
    let app_self = href(&me.app["_links"]["self"]).to_owned();

    let mma = href(&me_links["makeMeAvailable"]).to_owned();
    let r = e
        .post(
            &mma,
            Some(&me.token),
            Some(json!({"signInAs": "Online", "supportedModalities": ["Messaging"], "supportedMessageFormats": ["Plain"]})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    e.post(&mma, Some(&me.token), Some(json!({})))
        .await
        .expect_error(409, "Conflict", Some("AlreadyExists"));
    // GET the application again: the me links after makeMeAvailable.
    let app = e.get(&app_self, Some(&me.token)).await.json();
    let links = &app["_embedded"]["me"]["_links"];
    for l in ["presence", "note", "reportMyActivity", "location"] {
        assert!(links[l].is_object(), "{l}: {links}");
    }
    assert!(links["makeMeAvailable"].is_null());
    let presence = href(&links["presence"]).to_owned();
    let report = href(&links["reportMyActivity"]).to_owned();
    let note = href(&links["note"]).to_owned();

    let v = e.pget(&mut me).await;
    let evs = events(&v);
    assert_eq!(
        (evs[0].0.as_str(), evs[0].1.as_str(), evs[0].3.as_str()),
        ("me", "presence", "added")
    );
    e.pget(&mut w).await; // the sign-in as Online

    let r = e
        .post(
            &presence,
            Some(&me.token),
            Some(json!({"availability": "Busy"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let v = e.pget(&mut w).await;
    let evs = events(&v);
    assert_eq!(evs.len(), 1);
    let p = e.get(&evs[0].2, Some(&w.token)).await.json();
    assert_eq!(p["availability"], "Busy");
    let v = e.pget(&mut me).await;
    assert_eq!(events(&v)[0].1, "presence");
    assert_eq!(events(&v)[0].3, "updated");
    assert_eq!(
        e.get(&presence, Some(&me.token)).await.json()["availability"],
        "Busy"
    );

    e.post(
        &presence,
        Some(&me.token),
        Some(json!({"availability": "Offwork"})),
    )
    .await;
    assert_eq!(
        e.sim.presence_of(&e.sim.user_uri(2)),
        Some(("Away".into(), Some("off-work".into())))
    );
    let r = e.post(&presence, Some(&me.token), None).await;
    assert_eq!(r.status, 204, "empty body resets");
    assert_eq!(
        e.sim.presence_of(&e.sim.user_uri(2)),
        Some(("Online".into(), None))
    );
    e.post(
        &presence,
        Some(&me.token),
        Some(json!({"availability": "Offline"})),
    )
    .await
    .expect_error(400, "BadRequest", Some("ParameterValidationFailure"));
    e.pget(&mut w).await;

    assert_eq!(
        e.post(&note, Some(&me.token), Some(json!({"message": "at lunch"})))
            .await
            .status,
        204
    );
    let v = e.pget(&mut w).await;
    assert_eq!(
        events(&v).into_iter().map(|x| x.1).collect::<Vec<_>>(),
        ["contactNote"]
    );
    assert_eq!(
        e.sim.note_of("user00002@example.com").as_deref(),
        Some("at lunch")
    );

    // No reportMyActivity for 4 minutes: idle; reporting restores.
    assert_eq!(e.post(&report, Some(&me.token), None).await.status, 204);
    e.sim.advance_clock(Duration::from_secs(4 * 60));
    assert_eq!(
        e.sim.presence_of(&e.sim.user_uri(2)),
        Some(("IdleOnline".into(), None))
    );
    assert_eq!(events(&e.pget(&mut w).await).len(), 1);
    assert_eq!(e.post(&report, Some(&me.token), None).await.status, 204);
    assert_eq!(
        e.sim.presence_of(&e.sim.user_uri(2)),
        Some(("Online".into(), None))
    );
    assert_eq!(e.sim.stats().own_presence_sets, 3);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn lurker_mode_refuses_own_presence() {
    let e = env(cfg()).await;
    let s = e.session(1).await;
    let me = href(&s.app["_embedded"]["me"]["_links"]["self"]).to_owned();
    for path in ["/presence", "/reportMyActivity", "/note"] {
        e.post(
            &format!("{me}{path}"),
            Some(&s.token),
            Some(json!({"availability": "Busy"})),
        )
        .await
        .expect_error(409, "Conflict", Some("MakeMeAvailableRequired"));
    }
    e.get(&format!("{me}/presence"), Some(&s.token))
        .await
        .expect_error(409, "Conflict", Some("MakeMeAvailableRequired"));
    let mma = href(&s.app["_embedded"]["me"]["_links"]["makeMeAvailable"]).to_owned();
    e.post(
        &mma,
        Some(&s.token),
        Some(json!({"supportedModalities": ["Video"]})),
    )
    .await
    .expect_error(403, "Forbidden", None);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn hostile_requests_get_errors_never_a_crash() {
    let e = env(cfg()).await;
    let (token, apps) = e.sign_in(1).await;
    let raw = |body: Vec<u8>, ct: &str| {
        e.http
            .post(&apps)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", ct.to_owned())
            .body(body)
    };
    for body in [
        &b"{not json"[..],
        b"[1,2]",
        b"\"x\"",
        b"{\"userAgent\":5,\"endpointId\":\"e\",\"culture\":\"c\"}",
    ] {
        e.send(raw(body.to_vec(), "application/json"))
            .await
            .expect_error(400, "BadRequest", Some("DeserializationFailure"));
    }
    e.send(raw(b"{}".to_vec(), "text/plain"))
        .await
        .expect_error(415, "UnsupportedMediaType", None);
    e.send(raw(vec![b' '; 2 << 20], "application/json"))
        .await
        .expect_error(413, "EntityTooLarge", None);
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..200 {
        let len = rng.usize(1..300);
        let body: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        let r = e.send(raw(body, "application/json")).await;
        assert!((400..500).contains(&r.status), "{} {}", r.status, r.body);
    }

    let s = e.session(2).await;
    let subs = href(&s.app["_embedded"]["people"]["_links"]["presenceSubscriptions"]).to_owned();
    for (body, sub) in [
        (
            json!({"duration": 30, "uris": ["user00003@example.com"]}),
            "ParameterValidationFailure",
        ),
        (
            json!({"duration": 30, "uris": ["sip:a b@example.com"]}),
            "ParameterValidationFailure",
        ),
        (
            json!({"duration": 30, "uris": []}),
            "ParameterValidationFailure",
        ),
        (json!({"duration": 30}), "ParameterValidationFailure"),
        (
            json!({"duration": "30", "uris": ["sip:a@b.c"]}),
            "DeserializationFailure",
        ),
        (
            json!({"duration": 30, "uris": "sip:a@b.c"}),
            "DeserializationFailure",
        ),
        (
            json!({"duration": -1, "uris": ["sip:a@b.c"]}),
            "ParameterValidationFailure",
        ),
    ] {
        e.post(&subs, Some(&s.token), Some(body))
            .await
            .expect_error(400, "BadRequest", Some(sub));
    }
    let app_self = href(&s.app["_links"]["self"]).to_owned();
    e.get(&format!("{app_self}/no/such/thing"), Some(&s.token))
        .await
        .expect_error(404, "NotFound", Some("ResourceNotFound"));
    e.send(e.req(reqwest::Method::PUT, &app_self, Some(&s.token)))
        .await
        .expect_error(405, "MethodNotAllowed", None);
    e.get(
        &format!("{app_self}/people/sip%3Anobody%40x.org/presence"),
        Some(&s.token),
    )
    .await
    .expect_error(404, "NotFound", Some("ResourceNotFound"));
    assert_eq!(
        e.get(&app_self, Some(&s.token)).await.status,
        200,
        "still serving"
    );
    e.sim.shutdown().await;
}

#[tokio::test]
async fn resync_and_resume_faults() {
    let e = env(cfg()).await;
    let (mut s, sub) = e.watching(1, &[2]).await;

    // resync: only the link; queued events come with the GET that follows it.
    let h = e.pending(&s.next, &s.token).await;
    e.sim.force_resync();
    let v = done(h).await.json();
    assert_eq!(v["_links"].as_object().unwrap().len(), 1, "{v}");
    let resync = abs(&e, href(&v["_links"]["resync"]));
    assert_eq!(resync, s.next);
    assert!(e.sim.set_presence(&e.sim.user_uri(2), "Away", None, None));
    let v = e.get(&resync, Some(&s.token)).await.json();
    assert_eq!(events(&v).len(), 1);
    s.next = abs(&e, href(&v["_links"]["next"]));

    // resume: subscriptions gone, `resume` instead of `next`, no events.
    let h = e.pending(&s.next, &s.token).await;
    e.sim.force_resume();
    let v = done(h).await.json();
    assert!(
        v["_links"]["next"].is_null() && v.get("sender").is_none(),
        "{v}"
    );
    s.next = abs(&e, href(&v["_links"]["resume"]));
    e.get(href(&sub["_links"]["self"]), Some(&s.token))
        .await
        .expect_error(404, "NotFound", Some("ResourceNotFound"));
    assert!(e.sim.set_presence(&e.sim.user_uri(2), "Busy", None, None));
    let mut h = e.spawn_get(&s.next, &s.token);
    still_pending(&mut h).await;
    // Re-subscribing brings the events back.
    e.subscribe(&s, &[2], 30).await;
    let v = done(h).await.json();
    assert_eq!(events(&v).len(), 3);
    s.next = abs(&e, href(&v["_links"]["next"]));

    // expire_subscriptions: silent; extend → 404; changes no longer arrive.
    e.sim.expire_subscriptions();
    assert!(e.sim.set_presence(&e.sim.user_uri(2), "Online", None, None));
    let mut h = e.spawn_get(&s.next, &s.token);
    still_pending(&mut h).await;
    h.abort();
    let st = e.sim.stats();
    assert_eq!((st.resumes, st.subscriptions_alive), (1, 0));

    // A resume nobody is waiting for: a re-subscription made before the client sees it
    // comes with the GET on the resume link.
    e.sim.force_resume();
    e.subscribe(&s, &[2], 30).await;
    let v = e.get(&s.next, Some(&s.token)).await.json();
    assert!(v.get("sender").is_none(), "{v}");
    let v = e
        .get(&abs(&e, href(&v["_links"]["resume"])), Some(&s.token))
        .await
        .json();
    assert_eq!(events(&v).len(), 3, "{v}");
    e.sim.shutdown().await;
}

#[tokio::test]
async fn memberships_add_list_remove_and_delete() {
    let e = env(cfg()).await;
    let (mut s, sub) = e.watching(1, &[2]).await;
    let add = href(&sub["_links"]["addToPresenceSubscription"]).to_owned();
    let r = e
        .post(
            &add,
            Some(&s.token),
            Some(json!({"ContactUris": [e.sim.user_uri(3), e.sim.user_uri(4), e.sim.user_uri(2)]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let list = r.json()["_embedded"]["presenceSubscriptionMembership"].clone();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let v = e.pget(&mut s).await;
    let shape: Vec<(String, String)> = events(&v).into_iter().map(|x| (x.1, x.3)).collect();
    assert_eq!(shape.len(), 4, "{shape:?}");
    assert_eq!(
        (shape[0].0.as_str(), shape[0].1.as_str()),
        ("contact", "added")
    );
    assert_eq!(shape[1].0, "contactPresence");

    // Remove user 3's membership.
    let m3 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| href(&m["_links"]["contact"]).ends_with("user00003@example.com"))
        .unwrap();
    assert_eq!(
        e.get(href(&m3["_links"]["self"]), Some(&s.token))
            .await
            .status,
        200
    );
    assert_eq!(
        e.delete(href(&m3["_links"]["self"]), Some(&s.token))
            .await
            .status,
        204
    );
    let v = e.pget(&mut s).await;
    assert_eq!(events(&v)[0].3, "deleted");
    assert!(events(&v)[0].2.ends_with("user00003@example.com"));
    let contacts = e
        .get(
            href(&s.app["_embedded"]["people"]["_links"]["subscribedContacts"]),
            Some(&s.token),
        )
        .await
        .json();
    assert_eq!(
        contacts["_embedded"]["contact"].as_array().unwrap().len(),
        2
    );

    // Delete the subscription: contacts deleted, then the subscription.
    assert_eq!(
        e.delete(href(&sub["_links"]["self"]), Some(&s.token))
            .await
            .status,
        204
    );
    let v = e.pget(&mut s).await;
    let shape: Vec<(String, String)> = events(&v).into_iter().map(|x| (x.1, x.3)).collect();
    assert_eq!(
        shape,
        [
            ("contact".into(), "deleted".into()),
            ("contact".into(), "deleted".into()),
            ("presenceSubscription".into(), "deleted".into())
        ]
    );
    assert_eq!(
        e.delete(href(&sub["_links"]["self"]), Some(&s.token))
            .await
            .status,
        404
    );
    e.sim.shutdown().await;
}

#[tokio::test]
async fn control_api_over_http() {
    let e = env(cfg()).await;
    let (mut s, _) = e.watching(1, &[2]).await;
    let c = e.sim.control_url();
    let u2 = e.sim.user_uri(2);
    let r = e
        .send(
            e.http
                .post(format!("{c}/users/{u2}/presence"))
                .json(&json!({"availability": "Busy", "activity": "in-a-conference", "note": "n"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(events(&e.pget(&mut s).await).len(), 2);
    let v = e.send(e.http.get(format!("{c}/users/{u2}"))).await.json();
    assert_eq!(
        (
            v["availability"].as_str(),
            v["activity"].as_str(),
            v["note"].as_str()
        ),
        (Some("Busy"), Some("in-a-conference"), Some("n"))
    );
    let r = e
        .send(
            e.http
                .post(format!("{c}/users/{u2}/presence"))
                .json(&json!({"availability": "Sleeping"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = e
        .send(
            e.http
                .post(format!("{c}/users/sip:nobody@example.com/presence"))
                .json(&json!({"availability": "Busy"})),
        )
        .await;
    assert_eq!(r.status, 404);
    let st: UcwaSimStats =
        serde_json::from_str(&e.send(e.http.get(format!("{c}/stats"))).await.body).unwrap();
    assert_eq!(st.subscriptions_alive, 1);
    for (call, body) in [
        ("expire-tokens", json!({})),
        ("advance", json!({"seconds": 1})),
    ] {
        assert_eq!(
            e.send(e.http.post(format!("{c}/{call}")).json(&body))
                .await
                .status,
            200
        );
    }
    e.get(&s.next, Some(&s.token)).await.expect_401();
    for call in [
        "resync",
        "resume",
        "expire-subscriptions",
        "expire-applications",
    ] {
        assert_eq!(e.send(e.http.post(format!("{c}/{call}"))).await.status, 200);
    }
    assert_eq!(e.sim.stats().apps_alive, 0);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn random_changes_reach_subscribers() {
    let e = env(UcwaSimConfig {
        users: 5,
        change_rate: 200.0,
        ..cfg()
    })
    .await;
    let (mut s, _) = e.watching(1, &[1, 2, 3, 4, 5]).await;
    let v = e.pget(&mut s).await;
    assert!(!events(&v).is_empty());
    assert!(events(&v)
        .iter()
        .all(|x| x.1 == "contactPresence" || x.1 == "presence"));
    e.sim.set_change_rate(0.0);
    e.sim.shutdown().await;
}

/// 5 000 watched contacts, thousands of changes per second, every change seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_contacts_under_load() {
    const N: u32 = 5000;
    const CHANGES: usize = 20_000;
    let e = env(UcwaSimConfig {
        users: N + 1,
        ..cfg()
    })
    .await;
    let mut s = e.session(N + 1).await;
    for chunk in (1..=N).collect::<Vec<_>>().chunks(1000) {
        e.subscribe(&s, chunk, 30).await;
    }
    let v = e.pget(&mut s).await;
    assert_eq!(events(&v).len(), 2 * N as usize + 5);

    let sim = e.sim.clone();
    let t0 = std::time::Instant::now();
    let writer = tokio::task::spawn_blocking(move || {
        let mut rng = fastrand::Rng::with_seed(3);
        let states = [
            "Online",
            "Busy",
            "Away",
            "DoNotDisturb",
            "BeRightBack",
            "Offline",
        ];
        let mut changed = std::collections::HashSet::new();
        for _ in 0..CHANGES {
            let n = rng.u32(1..=N);
            assert!(sim.set_presence(&sim.upn(n), states[rng.usize(..states.len())], None, None));
            changed.insert(sim.upn(n));
        }
        changed
    });
    // contact key → contactPresence href, from the events.
    let mut seen = HashMap::new();
    let key = |h: &str| {
        h.split("/people/")
            .nth(1)
            .unwrap()
            .trim_end_matches("/presence")
            .to_owned()
    };
    let mut received = 0usize;
    let changed = loop {
        let v = e.pget(&mut s).await;
        for (_, rel, h, _, _) in events(&v) {
            assert_eq!(rel, "contactPresence");
            seen.insert(key(&h), h);
            received += 1;
        }
        if writer.is_finished() {
            break writer.await.unwrap();
        }
    };
    let rate = CHANGES as f64 / t0.elapsed().as_secs_f64();
    // Drain what is left: the first empty answer (timeout) ends it.
    loop {
        let mut h = e.pending(&s.next, &s.token).await;
        let r = match tokio::time::timeout(QUIET, &mut h).await {
            Ok(r) => r.unwrap(),
            Err(_) => {
                e.sim.advance_clock(Duration::from_secs(180));
                done(h).await
            }
        };
        let v = r.json();
        s.next = abs(&e, href(&v["_links"]["next"]));
        let evs = events(&v);
        if evs.is_empty() {
            break;
        }
        for (_, _, h, _, _) in evs {
            seen.insert(key(&h), h);
            received += 1;
        }
    }
    eprintln!(
        "{CHANGES} changes at {rate:.0}/s, {received} events after merging, {} users",
        changed.len()
    );
    assert!(
        changed.iter().all(|c| seen.contains_key(c)),
        "every changed contact got an event"
    );
    assert!(received <= CHANGES);
    assert!(
        rate > 1000.0,
        "thousands of changes per second: {rate:.0}/s"
    );
    // The contactPresence resource shows the latest state.
    for n in [1, 777, 2500, N] {
        let Some(url) = seen.get(&e.sim.upn(n)) else {
            continue;
        };
        let p = e.get(url, Some(&s.token)).await.json();
        let (a, _) = e.sim.presence_of(&e.sim.upn(n)).unwrap();
        assert_eq!(p["availability"], a.as_str());
    }
    e.sim.shutdown().await;
}
