//! The HTTP interface: discovery and token (§2), the UCWA resources (§3–§7), routing, body
//! and query parsing, reply rendering.
//!
//! Order of checks on a UCWA request, like the real server's authentication-first order:
//! body size (413), Bearer token (401 with the challenge), route (404 / 405), application
//! (404 ApplicationNotFound, 403 for another user's), then the body and the operation.
//! Bodies are parsed into `serde_json::Value`s and read with case-insensitive property
//! names; anything malformed is `400 DeserializationFailure`, out-of-range values
//! `400 ParameterValidationFailure`. Nothing in here panics on input.

use super::engine::{normalise, AppReq, AvailableReq, Core, PgetReply, PgetReq, PgetStart};
use super::error::UcwaError;
use super::presence::Preferred;
use super::resources::{self as res, APPLICATIONS};
use super::Shared;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Request bodies above this are refused with `413 EntityTooLarge`.
pub const MAX_BODY: usize = 1 << 20;

const JSON: &str = "application/json; charset=utf-8";

/// The single entry point: `/_sim/…` goes to the control API, the rest is the server.
pub(crate) async fn handle(State(sim): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        return super::control::handle(&sim, &parts.method, rest, body).await;
    }
    super::engine::bump(&sim.counters.requests);
    let origin = origin(&parts.headers, sim.addr);
    let lower = path.to_ascii_lowercase();
    let p = lower.trim_end_matches('/');
    let resp =
        if p.is_empty() || p == "/autodiscover" || p == res::AUTODISCOVER_ROOT.to_ascii_lowercase()
        {
            get_only(&parts.method, || {
                json_response(StatusCode::OK, res::root(&origin, &sim.domain))
            })
        } else if p == res::USER.to_ascii_lowercase() {
            match parts.method {
                Method::GET => user(&sim, &parts.headers, &origin),
                _ => plain(StatusCode::METHOD_NOT_ALLOWED),
            }
        } else if p == res::XFRAME.to_ascii_lowercase() {
            get_only(&parts.method, || {
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/html")
                    .body(Body::from("<!DOCTYPE html><html><body></body></html>"))
                    .expect("static response parts are valid")
            })
        } else if p == res::TOKEN.to_ascii_lowercase() {
            match parts.method {
                Method::POST => token(&sim, &parts.headers, body).await,
                _ => plain(StatusCode::METHOD_NOT_ALLOWED),
            }
        } else if p == APPLICATIONS.to_ascii_lowercase()
            || p.starts_with(&format!("{}/", APPLICATIONS.to_ascii_lowercase()))
        {
            let rest = path
                .get(APPLICATIONS.len()..)
                .unwrap_or_default()
                .to_owned();
            ucwa(&sim, parts, body, &rest, &origin).await
        } else {
            plain(StatusCode::NOT_FOUND)
        };
    if resp.status().is_client_error() || resp.status().is_server_error() {
        super::engine::bump(&sim.counters.errors);
    }
    resp
}

/// `http://HOST` from the Host header when it looks like a host, else the bound address.
fn origin(headers: &HeaderMap, addr: SocketAddr) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://{addr}"),
    }
}

fn get_only(method: &Method, f: impl FnOnce() -> Response) -> Response {
    if method == Method::GET {
        f()
    } else {
        plain(StatusCode::METHOD_NOT_ALLOWED)
    }
}

fn plain(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .expect("static response parts are valid")
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, JSON)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body.into())
        .expect("static response parts are valid")
}

/// An error answer: §8 JSON, or for 401 the challenge headers and no body.
pub fn error_response(e: &UcwaError, origin: &str) -> Response {
    if e.status == 401 {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, res::challenge(origin))
            .header(
                header::WWW_AUTHENTICATE,
                "Bearer trusted_issuers=\"\", client_id=\"00000004-0000-0ff1-ce00-000000000000\"",
            )
            .body(Body::empty())
            .expect("static response parts are valid");
    }
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, e.body())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

/// GET user (§2.2, §2.4): the challenge without a valid token, the applications link with.
fn user(sim: &Shared, headers: &HeaderMap, origin: &str) -> Response {
    let token = bearer(headers);
    match sim.with(|core, now| core.auth(token.as_deref(), now)) {
        Ok(_) => json_response(StatusCode::OK, res::user(origin, &sim.domain)),
        Err(e) => error_response(&e, origin),
    }
}

/// The token endpoint (§2.3): form-encoded password grant.
async fn token(sim: &Shared, headers: &HeaderMap, body: Body) -> Response {
    let oauth_error =
        |e: &str| json_response(StatusCode::BAD_REQUEST, json!({"error": e}).to_string());
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return oauth_error("invalid_request");
    };
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let Ok(text) = std::str::from_utf8(&body) else {
        return oauth_error("invalid_request");
    };
    if !form_type {
        return oauth_error("invalid_request");
    }
    let form = parse_query(text);
    let get = |k: &str| form.get(k).map(String::as_str);
    let r = sim.with(|core, now| {
        core.issue_token(get("grant_type"), get("username"), get("password"), now)
    });
    match r {
        Ok((token, expires_in)) => json_response(
            StatusCode::OK,
            json!({
                "access_token": token,
                "expires_in": expires_in,
                "ms_rtc_identityscope": "local",
                "token_type": "Bearer",
            })
            .to_string(),
        ),
        Err(e) => oauth_error(e),
    }
}

/// Decodes `%XX` escapes and `+` (invalid escapes stay as they are).
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    if !(s.contains('%') || plus_is_space && s.contains('+')) {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=x%20y` → map (keys as given; a repeated key keeps the last value).
pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

// ------------------------------------------------------------------------ UCWA resources

/// A resource under one application.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Res {
    Root,
    Events,
    Me,
    MakeMeAvailable,
    MePresence,
    MeNote,
    MeLocation,
    ReportMyActivity,
    People,
    Subscriptions,
    Subscription(String),
    Memberships,
    Membership(String),
    SubscribedContacts,
    MyContacts,
    MyGroups,
    Search,
    Contact(String),
    ContactPresence(String),
    ContactNote(String),
    Bare(&'static str),
    Batch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Applications,
    App(u64, Res),
}

/// Path segments after `/ucwa/oauth/v1/applications`, already percent-decoded. Names match
/// in any case; a non-numeric application id is an unknown application.
fn route(segs: &[String]) -> Result<Route, UcwaError> {
    let Some((first, rest)) = segs.split_first() else {
        return Ok(Route::Applications);
    };
    let id: u64 = first
        .parse()
        .map_err(|_| UcwaError::application_not_found())?;
    let l: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    let r = match l.as_slice() {
        [] => Res::Root,
        ["events"] => Res::Events,
        ["me"] => Res::Me,
        ["me", "makemeavailable"] => Res::MakeMeAvailable,
        ["me", "presence"] => Res::MePresence,
        ["me", "note"] => Res::MeNote,
        ["me", "location"] => Res::MeLocation,
        ["me", "reportmyactivity"] => Res::ReportMyActivity,
        ["people"] => Res::People,
        ["people", "presencesubscriptions"] => Res::Subscriptions,
        ["people", "presencesubscriptions", s] => Res::Subscription(s.to_string()),
        ["people", "presencesubscriptionmemberships"] => Res::Memberships,
        ["people", "presencesubscriptionmemberships", m] => Res::Membership(m.to_string()),
        ["people", "subscribedcontacts"] => Res::SubscribedContacts,
        ["people", "mycontacts"] => Res::MyContacts,
        ["people", "mygroups"] => Res::MyGroups,
        ["people", "search"] => Res::Search,
        ["people", c] => Res::Contact(c.to_string()),
        ["people", c, "presence"] => Res::ContactPresence(c.to_string()),
        ["people", c, "note"] => Res::ContactNote(c.to_string()),
        ["communication"] => Res::Bare("communication"),
        ["onlinemeetings"] => Res::Bare("onlineMeetings"),
        ["policies"] => Res::Bare("policies"),
        ["batch"] => Res::Batch,
        _ => return Err(UcwaError::resource_not_found("The resource")),
    };
    Ok(Route::App(id, r))
}

/// A successful answer (or a pending GET to wait for).
enum Reply {
    Json(StatusCode, String),
    /// 201 for a new application, with the `cwt_ucwa` cookie (§3).
    CreatedApp(StatusCode, String, String),
    NoContent,
    Wait(oneshot::Receiver<PgetReply>),
}

/// A request body as the operations see it.
struct Input<'a> {
    method: &'a Method,
    query: HashMap<String, String>,
    body: &'a Bytes,
    content_type: Option<&'a str>,
}

impl Input<'_> {
    /// The JSON object body; `None` when the body is empty. Non-JSON content types are 415.
    fn object(&self) -> Result<Option<Map<String, Value>>, UcwaError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !self
            .content_type
            .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
        {
            return Err(UcwaError::unsupported_media_type());
        }
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(UcwaError::deserialization(
                "The body must be a JSON object.",
            )),
            Err(e) => Err(UcwaError::deserialization(format!(
                "The body is not valid JSON: {e}"
            ))),
        }
    }

    fn query_u64(&self, name: &str) -> Result<Option<u64>, UcwaError> {
        match self
            .query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            None => Ok(None),
            Some((_, v)) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| UcwaError::parameter(format!("{name} must be a whole number"))),
        }
    }

    fn query_str(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A property by name in any case (`Uris` / `uris`).
fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn opt_string(m: &Map<String, Value>, name: &str) -> Result<Option<String>, UcwaError> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(UcwaError::deserialization(format!(
            "{name} must be a string"
        ))),
    }
}

/// A required application property: non-empty, at most 100 characters.
fn app_string(m: &Map<String, Value>, name: &str) -> Result<String, UcwaError> {
    let s =
        opt_string(m, name)?.ok_or_else(|| UcwaError::parameter(format!("{name} is required")))?;
    check_len(name, &s)?;
    if s.trim().is_empty() {
        return Err(UcwaError::parameter(format!("{name} must not be empty")));
    }
    Ok(s)
}

fn check_len(name: &str, s: &str) -> Result<(), UcwaError> {
    if s.chars().count() > 100 {
        return Err(UcwaError::parameter(format!(
            "{name} is longer than 100 characters"
        )));
    }
    Ok(())
}

fn string_list(m: &Map<String, Value>, name: &str) -> Result<Vec<String>, UcwaError> {
    match field(m, name) {
        None => Err(UcwaError::parameter(format!("{name} is required"))),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(UcwaError::deserialization(format!(
                    "{name} must be an array of strings"
                ))),
            })
            .collect(),
        Some(_) => Err(UcwaError::deserialization(format!(
            "{name} must be an array of strings"
        ))),
    }
}

fn number(v: &Value, name: &str) -> Result<u64, UcwaError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| UcwaError::parameter(format!("{name} must be a whole number"))),
        _ => Err(UcwaError::deserialization(format!(
            "{name} must be a number"
        ))),
    }
}

/// `duration` from the query (extend) or the body.
fn duration(input: &Input<'_>, m: Option<&Map<String, Value>>) -> Result<u64, UcwaError> {
    if let Some(d) = input.query_u64("duration")? {
        return Ok(d);
    }
    match m.and_then(|m| field(m, "duration")) {
        Some(v) => number(v, "duration"),
        None => Err(UcwaError::parameter("duration is required")),
    }
}

fn sub_id(s: &str) -> Result<u32, UcwaError> {
    u32::from_str_radix(s, 16)
        .ok()
        .filter(|_| s.len() <= 8)
        .ok_or_else(|| UcwaError::resource_not_found("The presence subscription"))
}

async fn ucwa(
    sim: &Shared,
    parts: axum::http::request::Parts,
    body: Body,
    rest: &str,
    origin: &str,
) -> Response {
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return error_response(&UcwaError::too_large(), origin),
    };
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let token = bearer(&parts.headers);
    let input = Input {
        method: &parts.method,
        query: parse_query(parts.uri.query().unwrap_or_default()),
        body: &body,
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    };
    let route = route(&segs);
    let result = sim.with(|core, now| {
        let user = core.auth(token.as_deref(), now)?;
        serve(core, user, route?, &input, now)
    });
    match result {
        Ok(Reply::Json(status, body)) => json_response(status, body),
        Ok(Reply::CreatedApp(status, body, cookie)) => {
            let mut r = json_response(status, body);
            if let Ok(v) = format!("cwt_ucwa={cookie}; path=/ucwa; HttpOnly").parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(Reply::NoContent) => plain(StatusCode::NO_CONTENT),
        Ok(Reply::Wait(rx)) => match rx.await {
            Ok(Ok(body)) => json_response(StatusCode::OK, body.to_string()),
            Ok(Err(e)) => error_response(&e, origin),
            Err(_) => error_response(
                &UcwaError::new(503, "ServiceUnavailable", None, "The server is stopping."),
                origin,
            ),
        },
        Err(e) => error_response(&e, origin),
    }
}

fn ok(body: String) -> Result<Reply, UcwaError> {
    Ok(Reply::Json(StatusCode::OK, body))
}

/// One authenticated request against the core (one lock).
fn serve(
    core: &mut Core,
    user: u32,
    route: Route,
    input: &Input<'_>,
    now: Instant,
) -> Result<Reply, UcwaError> {
    let m = input.method;
    let (id, r) = match route {
        Route::Applications => {
            if m != Method::POST {
                return Err(UcwaError::method_not_allowed());
            }
            return create_app(core, user, input, now);
        }
        Route::App(id, r) => (id, r),
    };
    let base = core.app(user, id)?.base.clone();
    let not_allowed = || Err(UcwaError::method_not_allowed());
    match (r, m.clone()) {
        (Res::Root, Method::GET) => {
            let app = core.app(user, id)?;
            ok(res::application(app, core.user(user)))
        }
        (Res::Root, Method::DELETE) => {
            core.delete_app(user, id)?;
            Ok(Reply::NoContent)
        }
        (Res::Events, Method::GET) => {
            let req = PgetReq {
                ack: input.query_u64("ack")?,
                timeout: input.query_u64("timeout")?,
                medium: input.query_u64("medium")?,
                low: input.query_u64("low")?,
                priority: input.query_u64("priority")?,
            };
            Ok(match core.pget(user, id, req, now)? {
                PgetStart::Ready(body) => Reply::Json(StatusCode::OK, body.to_string()),
                PgetStart::Wait(rx) => Reply::Wait(rx),
            })
        }
        (Res::Me, Method::GET) => {
            let app = core.app(user, id)?;
            ok(res::me(app, core.user(user)).to_string())
        }
        (Res::MakeMeAvailable, Method::POST) => {
            let req = parse_available(input)?;
            core.make_me_available(user, id, req, now)?;
            Ok(Reply::NoContent)
        }
        (Res::MePresence, Method::GET) => {
            ok(res::own_presence(&base, core.own_presence(user, id)?))
        }
        (Res::MePresence, Method::POST) => {
            let preferred = match input.object()? {
                None => None,
                Some(m) => match opt_string(&m, "availability")? {
                    None => None,
                    Some(a) => Some(Preferred::parse(&a).ok_or_else(|| {
                        UcwaError::parameter(
                            "availability must be Online, Busy, DoNotDisturb, BeRightBack, Away or Offwork",
                        )
                    })?),
                },
            };
            core.set_own_presence(user, id, preferred, now)?;
            Ok(Reply::NoContent)
        }
        (Res::MeNote, Method::GET) => {
            core.own_presence(user, id)?;
            ok(res::own_note(&base, &core.user(user).presence))
        }
        (Res::MeNote, Method::POST) => {
            let message = match input.object()? {
                None => None,
                Some(m) => opt_string(&m, "message")?,
            };
            if message.as_ref().is_some_and(|s| s.chars().count() > 2048) {
                return Err(UcwaError::parameter(
                    "message is longer than 2048 characters",
                ));
            }
            core.set_own_note(user, id, message, now)?;
            Ok(Reply::NoContent)
        }
        (Res::MeLocation, Method::GET) => {
            core.check_available(user, id)?;
            ok(json!({"rel": "location", "_links": {"self": {"href": format!("{base}/me/location")}}}).to_string())
        }
        (Res::MeLocation, Method::POST) => {
            input.object()?;
            core.check_available(user, id)?;
            Ok(Reply::NoContent)
        }
        (Res::ReportMyActivity, Method::POST) => {
            core.report_activity(user, id, now)?;
            Ok(Reply::NoContent)
        }
        (Res::People, Method::GET) => ok(res::people(&base).to_string()),
        (Res::Subscriptions, Method::GET) => ok(res::subscriptions(core.app(user, id)?)),
        (Res::Subscriptions, Method::POST) => {
            let body = input
                .object()?
                .ok_or_else(|| UcwaError::parameter("duration and uris are required"))?;
            let d = duration(input, Some(&body))?;
            let uris = string_list(&body, "uris")?;
            let sid = core.subscribe(user, id, d, &uris, now)?;
            Ok(Reply::Json(
                StatusCode::CREATED,
                res::subscription(&base, sid),
            ))
        }
        (Res::Subscription(s), Method::GET) => {
            let sid = sub_id(&s)?;
            core.sub(user, id, sid, now)?;
            ok(res::subscription(&base, sid))
        }
        (Res::Subscription(s), Method::POST) => {
            let sid = sub_id(&s)?;
            let body = input.object()?;
            let d = duration(input, body.as_ref())?;
            core.extend(user, id, sid, d, now)?;
            ok(res::subscription(&base, sid))
        }
        (Res::Subscription(s), Method::DELETE) => {
            core.delete_sub(user, id, sub_id(&s)?, now)?;
            Ok(Reply::NoContent)
        }
        (Res::Memberships, Method::GET) => {
            let only = match input.query_str("presenceSubscriptionId") {
                None => None,
                Some(s) => {
                    let sid = sub_id(s)?;
                    core.sub(user, id, sid, now)?;
                    Some(sid)
                }
            };
            ok(res::memberships(core.app(user, id)?, core.users(), only))
        }
        (Res::Memberships, Method::POST) => {
            let sid = sub_id(
                input
                    .query_str("presenceSubscriptionId")
                    .ok_or_else(|| UcwaError::parameter("presenceSubscriptionId is required"))?,
            )?;
            let body = input
                .object()?
                .ok_or_else(|| UcwaError::parameter("contactUris is required"))?;
            let uris = string_list(&body, "contactUris")?;
            core.add_members(user, id, sid, &uris, now)?;
            Ok(Reply::Json(
                StatusCode::CREATED,
                res::memberships(core.app(user, id)?, core.users(), Some(sid)),
            ))
        }
        (Res::Membership(mid), method @ (Method::GET | Method::DELETE)) => {
            let (s, key) = mid
                .split_once('~')
                .ok_or_else(|| UcwaError::resource_not_found("The membership"))?;
            let sid = sub_id(s)?;
            let c = core
                .contact_by_key(key)
                .ok_or_else(|| UcwaError::resource_not_found("The membership"))?;
            if method == Method::DELETE {
                core.remove_member(user, id, sid, c, now)?;
                return Ok(Reply::NoContent);
            }
            if !core.sub(user, id, sid, now)?.members.contains(&c) {
                return Err(UcwaError::resource_not_found("The membership"));
            }
            ok(res::membership_resource(&base, sid, core.user(c)))
        }
        (Res::SubscribedContacts, Method::GET) => {
            let app = core.app(user, id)?;
            let mut seen = std::collections::HashSet::new();
            let list = app
                .subs
                .values()
                .flat_map(|s| s.members.iter())
                .filter(|c| seen.insert(**c))
                .map(|&c| core.user(c));
            ok(res::contacts(&base, "subscribedContacts", list))
        }
        (Res::MyContacts, Method::GET) => {
            ok(res::contacts(&base, "myContacts", std::iter::empty()))
        }
        (Res::MyGroups, Method::GET) => ok(res::groups(&base)),
        (Res::Search, Method::GET) => {
            let q = input
                .query_str("query")
                .map(normalise)
                .filter(|q| !q.is_empty())
                .ok_or_else(|| UcwaError::parameter("query is required"))?;
            let limit = input.query_u64("limit")?.unwrap_or(100).clamp(1, 100) as usize;
            let list = core
                .directory_users()
                .filter(|u| u.key.contains(&q) || u.name.to_ascii_lowercase().contains(&q))
                .take(limit);
            ok(res::contacts(&base, "search", list))
        }
        (Res::Contact(k), Method::GET) => {
            let c = contact(core, &k)?;
            ok(res::contact(&base, core.user(c)).to_string())
        }
        (Res::ContactPresence(k), Method::GET) => {
            let c = contact(core, &k)?;
            core.count_presence_get();
            ok(res::contact_presence(&base, core.user(c)))
        }
        (Res::ContactNote(k), Method::GET) => {
            let c = contact(core, &k)?;
            ok(res::contact_note(&base, core.user(c)))
        }
        (Res::Bare(rel), Method::GET) => ok(res::bare(&base, rel).to_string()),
        (Res::Batch, Method::POST) => Err(UcwaError::new(
            400,
            "BadRequest",
            None,
            "Batch requests are not simulated.",
        )),
        _ => not_allowed(),
    }
}

fn contact(core: &Core, key: &str) -> Result<u32, UcwaError> {
    core.contact_by_key(key)
        .ok_or_else(|| UcwaError::resource_not_found("The contact"))
}

fn create_app(
    core: &mut Core,
    user: u32,
    input: &Input<'_>,
    now: Instant,
) -> Result<Reply, UcwaError> {
    let m = input
        .object()?
        .ok_or_else(|| UcwaError::parameter("culture, endpointId and userAgent are required"))?;
    let instance_id = opt_string(&m, "instanceId")?;
    if let Some(i) = &instance_id {
        check_len("instanceId", i)?;
    }
    let req = AppReq {
        user_agent: app_string(&m, "userAgent")?,
        endpoint_id: app_string(&m, "endpointId")?,
        culture: app_string(&m, "culture")?,
        instance_id,
    };
    let (id, created) = core.create_app(user, req, now)?;
    let app = core.app(user, id)?;
    let body = res::application(app, core.user(user));
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Reply::CreatedApp(
        status,
        body,
        format!("{:016x}", id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    ))
}

/// makeMeAvailable body (§7.1), all optional.
fn parse_available(input: &Input<'_>) -> Result<AvailableReq, UcwaError> {
    let Some(m) = input.object()? else {
        return Ok(AvailableReq::default());
    };
    let sign_in_as = match opt_string(&m, "signInAs")? {
        None => None,
        Some(s) => Some(Preferred::parse(&s).ok_or_else(|| {
            UcwaError::parameter("signInAs must be a PreferredAvailability value")
        })?),
    };
    if field(&m, "supportedModalities").is_some() {
        for modality in string_list(&m, "supportedModalities")? {
            let known = [
                "Audio",
                "Video",
                "PhoneAudio",
                "ApplicationSharing",
                "Messaging",
                "DataCollaboration",
                "PanoramicVideo",
            ];
            if !known.iter().any(|k| k.eq_ignore_ascii_case(&modality)) {
                return Err(UcwaError::parameter(format!(
                    "unknown modality {}",
                    modality.chars().take(40).collect::<String>()
                )));
            }
            if !["Messaging", "PhoneAudio"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&modality))
            {
                return Err(UcwaError::forbidden(
                    None,
                    "Only Messaging and PhoneAudio are allowed.",
                ));
            }
        }
    }
    if field(&m, "supportedMessageFormats").is_some() {
        string_list(&m, "supportedMessageFormats")?;
    }
    let inactive_timeout = match field(&m, "inactiveTimeout") {
        None => None,
        Some(v) => {
            let minutes = number(v, "inactiveTimeout")?;
            if !(1..=1440).contains(&minutes) {
                return Err(UcwaError::parameter(
                    "inactiveTimeout must be between 1 and 1440 minutes",
                ));
            }
            Some(Duration::from_secs(minutes * 60))
        }
    };
    Ok(AvailableReq {
        sign_in_as,
        inactive_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_queries() {
        assert_eq!(
            percent_decode("alice%40example.com", false),
            "alice@example.com"
        );
        assert_eq!(percent_decode("a%4", false), "a%4");
        assert_eq!(percent_decode("a%zz", false), "a%zz");
        assert_eq!(percent_decode("%", false), "%");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("a+b", true), "a b");
        let q = parse_query("grant_type=password&username=user%40x.com&password=p%26w+d&&x");
        assert_eq!(q["grant_type"], "password");
        assert_eq!(q["username"], "user@x.com");
        assert_eq!(q["password"], "p&w d");
        assert_eq!(q["x"], "");
    }

    #[test]
    fn routes() {
        let segs = |p: &str| {
            p.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(route(&segs("")).unwrap(), Route::Applications);
        assert_eq!(
            route(&segs("105/people/presenceSubscriptions/97b6bd66")).unwrap(),
            Route::App(105, Res::Subscription("97b6bd66".into()))
        );
        assert_eq!(
            route(&segs("105/People/User00002@Example.com/presence")).unwrap(),
            Route::App(105, Res::ContactPresence("user00002@example.com".into()))
        );
        assert_eq!(
            route(&segs("105/me/makeMeAvailable")).unwrap(),
            Route::App(105, Res::MakeMeAvailable)
        );
        assert_eq!(
            route(&segs("abc/events")).unwrap_err().subcode,
            Some("ApplicationNotFound")
        );
        assert_eq!(route(&segs("105/nothing/here")).unwrap_err().status, 404);
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer cwt=abc".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("cwt=abc"));
        h.insert(header::AUTHORIZATION, "bearer  cwt=abc ".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("cwt=abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
