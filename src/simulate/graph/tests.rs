//! End-to-end tests over real HTTP: the simulator on 127.0.0.1:0, a reqwest client, and an
//! axum webhook receiver that answers the validation handshake and forwards every
//! notification body to a channel. Waits are channel receives bounded by a timeout; time
//! jumps use `advance_clock`.

use super::*;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const WAIT: Duration = Duration::from_secs(10);

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: status {} body {:?}", self.status, self.body))
    }

    /// A Graph error envelope with this status and code.
    fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{}", self.body);
        assert!(v["error"]["message"].is_string());
        assert!(v["error"]["innerError"]["request-id"].is_string());
    }
}

struct Env {
    sim: GraphSimHandle,
    http: reqwest::Client,
    hook: String,
    rx: UnboundedReceiver<(String, Value)>,
}

/// Webhook receiver: `/good…` answers the handshake correctly, `/bad…` echoes the token
/// still encoded; notifications are forwarded as (path+query, body) and answered 202.
async fn receiver() -> (String, UnboundedReceiver<(String, Value)>) {
    let (tx, rx) = unbounded_channel::<(String, Value)>();
    let flaky = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().fallback(move |req: Request| {
        let tx: UnboundedSender<(String, Value)> = tx.clone();
        let flaky = flaky.clone();
        async move { hook(req, tx, flaky).await }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    (format!("http://{addr}"), rx)
}

/// `/flaky…` answers the first notification POST with `500`.
async fn hook(
    req: Request,
    tx: UnboundedSender<(String, Value)>,
    flaky: Arc<AtomicU64>,
) -> Response {
    let uri = req.uri().clone();
    let query = uri.query().unwrap_or("");
    if let Some(raw) = util::parse_form_raw(query, "validationToken") {
        let body = if uri.path().starts_with("/bad") {
            raw
        } else {
            util::pct_decode(&raw)
        };
        return ([("content-type", "text/plain")], body).into_response();
    }
    if uri.path().starts_with("/flaky") && flaky.fetch_add(1, Ordering::SeqCst) == 0 {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    let _ = tx.send((uri.to_string(), v));
    StatusCode::ACCEPTED.into_response()
}

fn cfg() -> GraphSimConfig {
    GraphSimConfig {
        users: 20,
        ..GraphSimConfig::default()
    }
}

async fn env(cfg: GraphSimConfig) -> Env {
    crate::install_crypto_provider();
    let sim = start("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let (hook, rx) = receiver().await;
    Env {
        sim,
        http,
        hook,
        rx,
    }
}

impl Env {
    async fn send(&self, r: reqwest::RequestBuilder) -> Resp {
        let r = r.send().await.unwrap();
        Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    async fn token_form(&self, form: &str) -> Resp {
        self.send(
            self.http
                .post(self.sim.token_url())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.to_owned()),
        )
        .await
    }

    async fn app_token(&self) -> String {
        let r = self
            .token_form("client_id=6731de76-14a6-49ae-97bc-6eba6914391e&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&client_secret=graph-sim-secret&grant_type=client_credentials")
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    async fn user_token(&self, n: u32) -> Value {
        let r = self
            .token_form(&format!(
                "grant_type=password&client_id=6731de76-14a6-49ae-97bc-6eba6914391e&client_secret=graph-sim-secret&username={}&password=graph-user-password&scope=https%3A%2F%2Fgraph.microsoft.com%2FPresence.Read.All%20offline_access",
                util::pct_encode(&self.sim.upn(n))
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    async fn get(&self, tok: &str, path: &str) -> Resp {
        self.send(
            self.http
                .get(format!("{}{path}", self.sim.base_url()))
                .bearer_auth(tok),
        )
        .await
    }

    async fn post(&self, tok: &str, path: &str, body: Value) -> Resp {
        self.send(
            self.http
                .post(format!("{}{path}", self.sim.base_url()))
                .bearer_auth(tok)
                .json(&body),
        )
        .await
    }

    fn sub_body(&self, ids: &[String], minutes: u64) -> Value {
        let list: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
        let exp = SystemTime::now() + Duration::from_secs(minutes * 60);
        json!({
            "changeType": "updated",
            "notificationUrl": format!("{}/good/notify?tenant=t1", self.hook),
            "lifecycleNotificationUrl": format!("{}/good/lifecycle", self.hook),
            "resource": format!("/communications/presences?$filter=id in ({})", list.join(",")),
            "expirationDateTime": util::graph_time(exp),
            "clientState": "s3cret",
        })
    }

    async fn next_hook(&mut self) -> (String, Value) {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("no notification")
            .unwrap()
    }
}

#[tokio::test]
async fn token_grants() {
    let e = env(cfg()).await;
    let t = e.user_token(1).await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3599);
    assert!(t["ext_expires_in"].is_u64());
    let rt = t["refresh_token"].as_str().unwrap();
    let r = e
        .token_form(&format!("grant_type=refresh_token&client_id=6731de76-14a6-49ae-97bc-6eba6914391e&client_secret=graph-sim-secret&refresh_token={}&scope=offline_access", util::pct_encode(rt)))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["access_token"].is_string());
    // Without offline_access: no refresh token.
    let r = e.token_form(&format!("grant_type=password&client_id=6731de76-14a6-49ae-97bc-6eba6914391e&username={}&password=graph-user-password&scope=Presence.Read.All", e.sim.upn(2))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("refresh_token").is_none());
    // App-only: no refresh token.
    let app = e.app_token().await;
    assert!(!app.is_empty());
    // Bad secret → 401 invalid_client.
    let r = e.token_form("client_id=6731de76-14a6-49ae-97bc-6eba6914391e&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&client_secret=wrong&grant_type=client_credentials").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));
    // Bad password → 400 invalid_grant.
    let r = e.token_form(&format!("grant_type=password&client_id=6731de76-14a6-49ae-97bc-6eba6914391e&username={}&password=nope&scope=offline_access", e.sim.upn(1))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = e
        .token_form("grant_type=device_code&client_id=6731de76-14a6-49ae-97bc-6eba6914391e")
        .await;
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    e.sim.shutdown().await;
}

#[tokio::test]
async fn reads_and_auth() {
    let e = env(cfg()).await;
    let id = e.sim.user_id(3);
    let r = e
        .send(
            e.http
                .get(format!("{}/users/{id}/presence", e.sim.base_url())),
        )
        .await;
    r.expect_error(401, "InvalidAuthenticationToken");
    let tok = e.app_token().await;
    assert!(e.sim.set_presence(&id, "Busy", "InAMeeting"));
    let r = e.get(&tok, &format!("/users/{id}/presence")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (
            v["id"].as_str(),
            v["availability"].as_str(),
            v["activity"].as_str()
        ),
        (Some(id.as_str()), Some("Busy"), Some("InAMeeting"))
    );
    assert_eq!(v["outOfOfficeSettings"]["isOutOfOffice"], false);
    let s1 = v["sequenceNumber"].as_str().unwrap().to_owned();
    e.sim.set_presence(&id, "Away", "Away");
    let v = e
        .get(&tok, &format!("/communications/presences/{id}"))
        .await
        .json();
    assert_eq!(v["availability"], "Away");
    assert!(v["sequenceNumber"].as_str().unwrap() > s1.as_str());

    let ids: Vec<String> = (1..=5).map(|n| e.sim.user_id(n)).collect();
    let r = e
        .post(
            &tok,
            "/communications/getPresencesByUserId",
            json!({ "ids": ids }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["value"].as_array().unwrap().len(), 5);
    assert_eq!(v["value"][2]["id"], json!(id));
    let many: Vec<String> = (0..651).map(|n| format!("{n}")).collect();
    e.post(
        &tok,
        "/communications/getPresencesByUserId",
        json!({ "ids": many }),
    )
    .await
    .expect_error(400, "BadRequest");

    // Delegated: /me/presence and reads of others; app-only /me → 400.
    let t7 = e.user_token(7).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = e.get(&t7, "/me/presence").await.json();
    assert_eq!(v["id"], json!(e.sim.user_id(7)));
    assert_eq!(
        e.get(&t7, &format!("/users/{id}/presence")).await.status,
        200
    );
    e.get(&tok, "/me/presence")
        .await
        .expect_error(400, "BadRequest");
    e.get(&tok, "/users/nobody/presence")
        .await
        .expect_error(404, "ResourceNotFound");
    e.sim.expire_tokens();
    e.get(&tok, &format!("/users/{id}/presence"))
        .await
        .expect_error(401, "InvalidAuthenticationToken");
    let tok = e.app_token().await;
    e.sim.advance_clock(Duration::from_secs(3600));
    e.get(&tok, &format!("/users/{id}/presence"))
        .await
        .expect_error(401, "InvalidAuthenticationToken");
    e.sim.shutdown().await;
}

#[tokio::test]
async fn throttling_retry_after() {
    let e = env(GraphSimConfig {
        read_budget: (3, Duration::from_secs(30)),
        ..cfg()
    })
    .await;
    let tok = e.app_token().await;
    let id = e.sim.user_id(1);
    e.sim.throttle_next(1);
    let r = e.get(&tok, &format!("/users/{id}/presence")).await;
    r.expect_error(429, "TooManyRequests");
    assert_eq!(r.headers["retry-after"], "1.5");
    for _ in 0..3 {
        assert_eq!(
            e.get(&tok, &format!("/users/{id}/presence")).await.status,
            200
        );
    }
    let r = e.get(&tok, &format!("/users/{id}/presence")).await;
    r.expect_error(429, "TooManyRequests");
    let ra: f64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(ra > 0.0 && ra <= 30.0, "{ra}");
    e.sim.advance_clock(Duration::from_secs(31));
    e.sim.fail_next(1);
    let r = e.get(&tok, &format!("/users/{id}/presence")).await;
    r.expect_error(503, "ServiceNotAvailable");
    assert_eq!(r.headers["retry-after"], "2");
    assert_eq!(
        e.get(&tok, &format!("/users/{id}/presence")).await.status,
        200
    );
    assert_eq!(e.sim.stats().throttled, 2);
    e.sim.shutdown().await;
}

#[tokio::test]
async fn subscription_lifecycle_and_notification() {
    let mut e = env(cfg()).await;
    let t1 = e.user_token(1).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids: Vec<String> = (2..=4).map(|n| e.sim.user_id(n)).collect();

    // Unquoted ids → 400.
    let mut bad = e.sub_body(&ids, 50);
    bad["resource"] = json!(format!(
        "/communications/presences?$filter=id in ({})",
        ids.join(",")
    ));
    e.post(&t1, "/subscriptions", bad)
        .await
        .expect_error(400, "InvalidRequest");
    // App-only → 403.
    let app = e.app_token().await;
    e.post(&app, "/subscriptions", e.sub_body(&ids, 50))
        .await
        .expect_error(403, "ExtensionError");
    // > 60 min → 400.
    e.post(&t1, "/subscriptions", e.sub_body(&ids, 90))
        .await
        .expect_error(400, "InvalidRequest");
    // Handshake answered wrongly → 400, nothing created.
    let mut wrong = e.sub_body(&ids, 50);
    wrong["notificationUrl"] = json!(format!("{}/bad/notify", e.hook));
    e.post(&t1, "/subscriptions", wrong)
        .await
        .expect_error(400, "ValidationError");
    assert_eq!(e.sim.stats().subscriptions_alive, 0);

    // 10 minutes requested → raised to 45.
    let before = e.sim.shared.clock.now();
    let r = e.post(&t1, "/subscriptions", e.sub_body(&ids, 10)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sub = r.json();
    let exp = util::parse_time(sub["expirationDateTime"].as_str().unwrap()).unwrap();
    let life = exp.duration_since(before).unwrap();
    assert!(
        life >= Duration::from_secs(45 * 60 - 2) && life <= Duration::from_secs(45 * 60 + 2),
        "{life:?}"
    );
    assert_eq!(sub["creatorId"], json!(e.sim.user_id(1)));
    assert_eq!(sub["clientState"], "s3cret");
    let sid = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(e.sim.stats().validations_ok, 2);

    // Second for the same (app, user) → 409.
    e.post(&t1, "/subscriptions", e.sub_body(&ids, 50))
        .await
        .expect_error(409, "ExtensionError");

    // A change → one notification, query string kept.
    assert!(e.sim.set_presence(&ids[1], "DoNotDisturb", "Presenting"));
    let (uri, body) = e.next_hook().await;
    assert_eq!(uri, "/good/notify?tenant=t1");
    let items = body["value"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let it = &items[0];
    assert_eq!(it["subscriptionId"], json!(sid));
    assert_eq!(it["clientState"], "s3cret");
    assert_eq!(it["changeType"], "updated");
    assert_eq!(it["resourceData"]["id"], json!(ids[1]));
    assert_eq!(
        it["resource"],
        json!(format!("communications/presences('{}')", ids[1]))
    );
    assert_eq!(it["tenantId"], json!(e.sim.tenant_id()));
    // An unsubscribed user does not notify; the same state does not either.
    e.sim.set_presence(&e.sim.user_id(9), "Busy", "InACall");
    e.sim.set_presence(&ids[1], "DoNotDisturb", "Presenting");
    e.sim.set_presence(&ids[0], "Busy", "InACall");
    let (_, body) = e.next_hook().await;
    assert_eq!(body["value"][0]["resourceData"]["id"], json!(ids[0]));

    // GET, PATCH renew (full object).
    let r = e.get(&t1, &format!("/subscriptions/{sid}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_exp = util::graph_time(e.sim.shared.clock.now() + Duration::from_secs(55 * 60));
    let r = e
        .send(
            e.http
                .patch(format!("{}/subscriptions/{sid}", e.sim.base_url()))
                .bearer_auth(&t1)
                .json(&json!({"expirationDateTime": new_exp})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["expirationDateTime"], json!(new_exp));
    assert_eq!(r.json()["resource"], sub["resource"]);

    // reauthorizationRequired 10 min before expiry, then expiry → 404.
    e.sim.advance_clock(Duration::from_secs(46 * 60));
    let (uri, body) = e.next_hook().await;
    assert_eq!(uri, "/good/lifecycle");
    assert_eq!(
        body["value"][0]["lifecycleEvent"],
        "reauthorizationRequired"
    );
    assert_eq!(body["value"][0]["clientState"], "s3cret");
    e.sim.advance_clock(Duration::from_secs(10 * 60));
    e.get(&t1, &format!("/subscriptions/{sid}"))
        .await
        .expect_error(404, "ResourceNotFound");
    let r = e
        .send(
            e.http
                .patch(format!("{}/subscriptions/{sid}", e.sim.base_url()))
                .bearer_auth(&t1)
                .json(&json!({"expirationDateTime": new_exp})),
        )
        .await;
    r.expect_error(404, "ResourceNotFound");
    assert_eq!(e.sim.stats().subscriptions_alive, 0);
    // A new one can be made now; DELETE → 204.
    let r = e.post(&t1, "/subscriptions", e.sub_body(&ids, 50)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sid = r.json()["id"].as_str().unwrap().to_owned();
    e.sim.emit_lifecycle("missed");
    let (_, body) = e.next_hook().await;
    assert_eq!(body["value"][0]["lifecycleEvent"], "missed");
    let r = e
        .send(
            e.http
                .delete(format!("{}/subscriptions/{sid}", e.sim.base_url()))
                .bearer_auth(&t1),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(e.sim.stats().notification_acks >= 4);
    e.sim.shutdown().await;
}

#[test]
fn resource_forms() {
    let a = "fa8bf3dc-eca7-46b7-bad1-db199b62afc3";
    assert_eq!(
        http::parse_resource(&format!("communications/presences/{a}")).unwrap(),
        vec![a]
    );
    assert_eq!(
        http::parse_resource(&format!(
            "/communications/presences?$filter=id in ('{a}', 'b')"
        ))
        .unwrap(),
        vec![a, "b"]
    );
    assert_eq!(
        http::parse_resource("/communications/presences?$filter=id%20in%20('x')").unwrap(),
        vec!["x"]
    );
    assert!(http::parse_resource("/communications/presences?$filter=id in (x)").is_err());
    assert!(http::parse_resource("/communications/presences?$filter=id in ('x',y)").is_err());
    assert!(http::parse_resource("/users/x").is_err());
    let many: Vec<String> = (0..651).map(|n| format!("'{n}'")).collect();
    assert!(http::parse_resource(&format!(
        "/communications/presences?$filter=id in ({})",
        many.join(",")
    ))
    .is_err());
}

#[tokio::test]
async fn writes_and_aggregation() {
    let e = env(cfg()).await;
    let app = e.app_token().await;
    let id = e.sim.user_id(5);
    let path = |a: &str| format!("/users/{id}/presence/{a}");
    let cid = GraphSimConfig::default().client_id;
    e.sim.set_presence(&id, "Offline", "Offline");
    // Invalid pair, bad duration, wrong session → 400.
    e.post(
        &app,
        &path("setPresence"),
        json!({"sessionId": cid, "availability": "Busy", "activity": "InAMeeting"}),
    )
    .await
    .expect_error(400, "BadRequest");
    e.post(&app, &path("setPresence"), json!({"sessionId": cid, "availability": "Busy", "activity": "InACall", "expirationDuration": "PT5H"})).await.expect_error(400, "BadRequest");
    e.post(
        &app,
        &path("setPresence"),
        json!({"sessionId": "other", "availability": "Busy", "activity": "InACall"}),
    )
    .await
    .expect_error(400, "BadRequest");
    e.post(&app, &path("clearPresence"), json!({"sessionId": cid}))
        .await
        .expect_error(404, "NotFound");
    // A session shows; preferred wins while it exists.
    let r = e.post(&app, &path("setPresence"), json!({"sessionId": cid, "availability": "Busy", "activity": "InACall", "expirationDuration": "PT10M"})).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(
        e.sim.presence_of(&id),
        Some(("Busy".into(), "InACall".into()))
    );
    let r = e
        .post(
            &app,
            &path("setUserPreferredPresence"),
            json!({"availability": "DoNotDisturb", "activity": "DoNotDisturb"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        e.sim.presence_of(&id),
        Some(("DoNotDisturb".into(), "DoNotDisturb".into()))
    );
    e.post(
        &app,
        &path("setUserPreferredPresence"),
        json!({"availability": "Busy", "activity": "InACall"}),
    )
    .await
    .expect_error(400, "BadRequest");
    assert_eq!(
        e.post(&app, &path("clearUserPreferredPresence"), json!({}))
            .await
            .status,
        200
    );
    // Teams client Available and the app session Busy: Busy wins.
    e.sim.set_presence(&id, "Available", "Available");
    assert_eq!(
        e.sim.presence_of(&id),
        Some(("Busy".into(), "InACall".into()))
    );
    // The session expires on the clock → the Teams state.
    e.sim.advance_clock(Duration::from_secs(11 * 60));
    assert_eq!(
        e.sim.presence_of(&id),
        Some(("Available".into(), "Available".into()))
    );
    // Idle fade of an Available session: 5 min → AvailableInactive, 10 min → Away.
    e.sim.set_presence(&id, "Offline", "Offline");
    let avail = json!({"sessionId": cid, "availability": "Available", "activity": "Available", "expirationDuration": "PT1H"});
    assert_eq!(
        e.post(&app, &path("setPresence"), avail.clone())
            .await
            .status,
        200
    );
    assert_eq!(
        e.sim.presence_of(&id),
        Some(("Available".into(), "Available".into()))
    );
    e.sim.advance_clock(Duration::from_secs(5 * 60));
    assert_eq!(
        e.sim.presence_of(&id),
        Some(("Available".into(), "AvailableInactive".into()))
    );
    e.sim.advance_clock(Duration::from_secs(5 * 60));
    assert_eq!(e.sim.presence_of(&id), Some(("Away".into(), "Away".into())));
    assert_eq!(e.post(&app, &path("setPresence"), avail).await.status, 200);
    assert_eq!(
        e.sim.presence_of(&id),
        Some(("Available".into(), "Available".into()))
    );
    assert_eq!(
        e.post(&app, &path("clearPresence"), json!({"sessionId": cid}))
            .await
            .status,
        200
    );
    // Only session cleared → Offline.
    e.sim.set_presence(&id, "Offline", "Offline");
    e.post(
        &app,
        &path("setPresence"),
        json!({"sessionId": cid, "availability": "Away", "activity": "Away"}),
    )
    .await;
    assert_eq!(e.sim.presence_of(&id).unwrap().0, "Away");
    assert_eq!(
        e.post(&app, &path("clearPresence"), json!({"sessionId": cid}))
            .await
            .status,
        200
    );
    assert_eq!(
        e.sim.presence_of(&id),
        Some(("Offline".into(), "Offline".into()))
    );
    // Delegated tokens may only set their own presence.
    let t1 = e.user_token(1).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    e.post(&t1, &path("clearUserPreferredPresence"), json!({}))
        .await
        .expect_error(403, "Forbidden");
    e.sim.shutdown().await;
}

#[tokio::test]
async fn single_user_resource_drop_and_failures() {
    let mut e = env(cfg()).await;
    let t2 = e.user_token(2).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = e.sim.user_id(7);
    let mut b = e.sub_body(std::slice::from_ref(&id), 50);
    b["resource"] = json!(format!("communications/presences/{id}"));
    b.as_object_mut()
        .unwrap()
        .remove("lifecycleNotificationUrl");
    let r = e.post(&t2, "/subscriptions", b).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sid = r.json()["id"].as_str().unwrap().to_owned();
    let r = e
        .send(
            e.http
                .post(format!(
                    "{}/subscriptions/{sid}/reauthorize",
                    e.sim.base_url()
                ))
                .bearer_auth(&t2),
        )
        .await;
    assert_eq!(r.status, 204);
    // PATCH notificationUrl: validated again (a wrong echo → 400, unchanged).
    let patch = |url: String| {
        e.http
            .patch(format!("{}/subscriptions/{sid}", e.sim.base_url()))
            .bearer_auth(&t2)
            .json(&json!({ "notificationUrl": url }))
    };
    e.send(patch(format!("{}/bad/x", e.hook)))
        .await
        .expect_error(400, "ValidationError");
    let r = e.send(patch(format!("{}/good/moved", e.hook))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["notificationUrl"],
        json!(format!("{}/good/moved", e.hook))
    );
    // Dropped notifications never arrive; the next change does.
    e.sim.set_presence(&id, "Offline", "OffWork");
    e.sim.drop_notifications(true);
    e.sim.set_presence(&id, "Busy", "InACall");
    e.sim.drop_notifications(false);
    e.sim.set_presence(&id, "Away", "Away");
    let (uri, body) = e.next_hook().await;
    assert_eq!(uri, "/good/moved");
    assert_eq!(body["value"][0]["subscriptionId"], json!(sid));
    let s = e.sim.stats();
    assert_eq!(s.notifications_dropped, 1);
    // GET list shows it.
    let r = e.get(&t2, "/subscriptions").await;
    assert_eq!(r.json()["value"].as_array().unwrap().len(), 1);
    e.sim.expire_subscriptions();
    e.get(&t2, &format!("/subscriptions/{sid}"))
        .await
        .expect_error(404, "ResourceNotFound");
    e.sim.shutdown().await;
}

#[tokio::test]
async fn batching_retry_and_https() {
    let mut e = env(GraphSimConfig {
        notify_latency: Duration::from_millis(200),
        ..cfg()
    })
    .await;
    let t3 = e.user_token(3).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids: Vec<String> = (10..=12).map(|n| e.sim.user_id(n)).collect();
    let mut b = e.sub_body(&ids, 50);
    b["notificationUrl"] = json!(format!("{}/flaky/notify", e.hook));
    let r = e.post(&t3, "/subscriptions", b).await;
    assert_eq!(r.status, 201, "{}", r.body);
    for id in &ids {
        e.sim.set_presence(id, "Offline", "OffWork");
        e.sim.set_presence(id, "Busy", "InACall");
    }
    // Due together → one POST; the first attempt fails (500) and is retried.
    let (uri, body) = e.next_hook().await;
    assert_eq!(uri, "/flaky/notify");
    let n = body["value"].as_array().unwrap().len();
    assert!(n >= 3, "{body}");
    let s = e.sim.stats();
    assert_eq!(s.notification_failures, 1);
    assert!(s.notification_posts >= 2);
    e.sim.shutdown().await;

    // HTTPS required unless allowed.
    let e = env(GraphSimConfig {
        allow_http_webhooks: false,
        ..cfg()
    })
    .await;
    let t4 = e.user_token(4).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    e.post(&t4, "/subscriptions", e.sub_body(&ids, 50))
        .await
        .expect_error(400, "InvalidRequest");
    e.sim.shutdown().await;
}
