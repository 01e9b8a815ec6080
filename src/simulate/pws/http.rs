//! The REST interface (reference §3): routing, header and body parsing, reply rendering.
//!
//! Each request is parsed completely *before* the engine lock is taken; parse failures are
//! carried as `Result`s into the engine, which checks the session key first, so a request
//! with both a bad key and a bad body gets the key error (100/101/140/141) like the real
//! server's authentication-first order.

use super::engine::{self, bump, check_expiry, SetReq, SubscribeReq, DEFAULT_EXPIRY};
use super::error::PwsError;
use super::presence::{self, Basic};
use super::xml::{self, Element};
use super::Shared;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

/// Request bodies above this are refused with error 150.
pub const MAX_BODY: usize = 1 << 20;

pub const BASE: &str = "/presence-service";

/// The single entry point: `/_sim/…` goes to the control API, `/presence-service/…` here,
/// anything else is 404.
pub(crate) async fn handle(State(sim): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        return super::control::handle(&sim, &parts.method, rest, body).await;
    }
    let Some(rest) = path.strip_prefix(BASE).and_then(|r| r.strip_prefix('/')) else {
        return empty(StatusCode::NOT_FOUND);
    };
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let route = match route(&parts.method, &segs) {
        Ok(r) => r,
        Err(Miss::NotFound) => return empty(StatusCode::NOT_FOUND),
        Err(Miss::Method) => return empty(StatusCode::METHOD_NOT_ALLOWED),
    };
    bump(&sim.counters.requests);
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => String::from_utf8(b.to_vec()).map_err(|_| PwsError(150)),
        Err(_) => Err(PwsError(150)),
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| sim.addr.to_string());
    let reply = serve(&sim, route, &parts.headers, body, &host);
    match reply {
        Ok(r) => r.into_response(),
        Err(e) => {
            bump(&sim.counters.errors_returned);
            error_response(e)
        }
    }
}

/// A successful answer.
#[derive(Debug)]
enum Reply {
    /// 201, optional `Location`, optional body.
    Created {
        location: Option<String>,
        body: Option<String>,
    },
    /// 200 with an XML body, or without a body.
    Ok(Option<String>),
}

impl Reply {
    fn into_response(self) -> Response {
        let (status, location, body) = match self {
            Reply::Created { location, body } => (StatusCode::CREATED, location, body),
            Reply::Ok(body) => (StatusCode::OK, None, body),
        };
        let mut b = Response::builder().status(status);
        if let Some(l) = location {
            b = b.header(header::LOCATION, l);
        }
        let resp = match body {
            Some(body) => b
                .header(header::CONTENT_TYPE, "text/xml")
                .body(Body::from(body)),
            None => b.body(Body::empty()),
        };
        resp.expect("static response parts are valid")
    }
}

pub fn error_response(e: PwsError) -> Response {
    Response::builder()
        .status(e.status())
        .header(header::CONTENT_TYPE, "text/xml")
        .body(Body::from(e.body()))
        .expect("static response parts are valid")
}

fn empty(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .expect("static response parts are valid")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Login {
        user: String,
        force: bool,
    },
    Logout {
        user: String,
    },
    RegisterEndpoint,
    RefreshEndpoint(Result<u64, PwsError>),
    UnregisterEndpoint(Result<u64, PwsError>),
    Subscribe {
        user: String,
    },
    UpdateSubscription {
        user: String,
        sid: Result<u64, PwsError>,
    },
    Unsubscribe {
        user: String,
        sid: Result<u64, PwsError>,
    },
    Fetch {
        user: String,
        rich: Result<bool, PwsError>,
        sid: Result<u64, PwsError>,
    },
    Poll {
        user: String,
        rich: Result<bool, PwsError>,
        contact: String,
    },
    Set {
        user: String,
        rich: Result<bool, PwsError>,
    },
}

enum Miss {
    NotFound,
    Method,
}

fn route(method: &Method, segs: &[String]) -> Result<Route, Miss> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.clone();
    let id = |v: &str, code| v.parse::<u64>().map_err(|_| PwsError(code));
    let kind = |v: &str| match v {
        "basic" => Ok(false),
        "rich" => Ok(true),
        _ => Err(PwsError(110)),
    };
    let r = match s.as_slice() {
        ["users", u, "sessions"] => match m {
            Method::POST => Route::Login {
                user: u.to_string(),
                force: false,
            },
            _ => return Err(Miss::Method),
        },
        ["users", u, "session"] => match m {
            Method::PUT => Route::Login {
                user: u.to_string(),
                force: true,
            },
            Method::DELETE => Route::Logout {
                user: u.to_string(),
            },
            _ => return Err(Miss::Method),
        },
        ["endpoints"] => match m {
            Method::POST => Route::RegisterEndpoint,
            _ => return Err(Miss::Method),
        },
        ["endpoints", e] => match m {
            Method::PUT => Route::RefreshEndpoint(id(e, 132)),
            Method::DELETE => Route::UnregisterEndpoint(id(e, 132)),
            _ => return Err(Miss::Method),
        },
        ["users", u, "subscriptions"] => match m {
            Method::POST => Route::Subscribe {
                user: u.to_string(),
            },
            _ => return Err(Miss::Method),
        },
        ["users", u, "subscriptions", sid] => match m {
            Method::PUT => Route::UpdateSubscription {
                user: u.to_string(),
                sid: id(sid, 133),
            },
            Method::DELETE => Route::Unsubscribe {
                user: u.to_string(),
                sid: id(sid, 133),
            },
            _ => return Err(Miss::Method),
        },
        ["users", u, "presence", t, "subscriptions", sid] => match m {
            Method::GET => Route::Fetch {
                user: u.to_string(),
                rich: kind(t),
                sid: id(sid, 133),
            },
            _ => return Err(Miss::Method),
        },
        ["users", u, "presence", t, "contacts", c] => match m {
            Method::GET => Route::Poll {
                user: u.to_string(),
                rich: kind(t),
                contact: c.to_string(),
            },
            _ => return Err(Miss::Method),
        },
        ["users", u, "presence", t] => match m {
            Method::PUT => Route::Set {
                user: u.to_string(),
                rich: kind(t),
            },
            _ => return Err(Miss::Method),
        },
        _ => return Err(Miss::NotFound),
    };
    Ok(r)
}

/// Runs one routed request against the engine (one lock), then hands notifications over.
fn serve(
    sim: &Shared,
    route: Route,
    headers: &HeaderMap,
    body: Result<String, PwsError>,
    host: &str,
) -> Result<Reply, PwsError> {
    let key = header_str(headers, "presence-session-key").filter(|k| !k.is_empty());
    let now = Instant::now();
    let mut notices = Vec::new();
    let reply = {
        let mut core = sim.lock();
        core.check_rate(now)?;
        match route {
            Route::Login { user, force } => {
                // The app user logs in with its password (a stale key sent along is
                // ignored); end users log in by proxy with the app user's key.
                let key = match key {
                    Some(app_key) if !core.is_app_user(&user) => {
                        core.login_end(app_key, &user, force)?
                    }
                    _ => core.login_app(&user, parse_password(&body), force)?,
                };
                Reply::Created {
                    location: None,
                    body: Some(format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session><sessionKey>{}</sessionKey></session>",
                        xml::escape(&key)
                    )),
                }
            }
            Route::Logout { user } => {
                core.logout(key, &user)?;
                Reply::Ok(None)
            }
            Route::RegisterEndpoint => {
                let id = core.register_endpoint(key, parse_endpoint(headers, &body), now)?;
                Reply::Created {
                    location: Some(format!("http://{host}{BASE}/endpoints/{id}")),
                    body: None,
                }
            }
            Route::RefreshEndpoint(id) => {
                core.app_session(key)?;
                let id = id?;
                core.refresh_endpoint(key, id, parse_endpoint_refresh(headers, &body), now)?;
                Reply::Created {
                    location: Some(format!("http://{host}{BASE}/endpoints/{id}")),
                    body: None,
                }
            }
            Route::UnregisterEndpoint(id) => {
                core.app_session(key)?;
                core.unregister_endpoint(key, id?, now)?;
                Reply::Ok(None)
            }
            Route::Subscribe { user } => {
                core.check_cpu()?;
                let req = parse_subscription(headers, &body, true);
                let sid = core.subscribe(key, &user, req, now, &mut notices)?;
                Reply::Created {
                    location: Some(format!(
                        "http://{host}{BASE}/users/{user}/subscriptions/{sid}"
                    )),
                    body: None,
                }
            }
            Route::UpdateSubscription { user, sid } => {
                core.end_session(key, &user)?;
                let sid = sid?;
                let req = parse_subscription(headers, &body, false);
                core.update_subscription(key, &user, sid, req, now, &mut notices)?;
                Reply::Created {
                    location: Some(format!(
                        "http://{host}{BASE}/users/{user}/subscriptions/{sid}"
                    )),
                    body: None,
                }
            }
            Route::Unsubscribe { user, sid } => {
                core.end_session(key, &user)?;
                core.unsubscribe(key, &user, sid?, now)?;
                Reply::Ok(None)
            }
            Route::Fetch { user, rich, sid } => {
                core.check_cpu()?;
                core.end_session(key, &user)?;
                let body = core.fetch(key, &user, sid?, rich?, now)?;
                Reply::Ok(Some(body))
            }
            Route::Poll {
                user,
                rich,
                contact,
            } => {
                core.end_session(key, &user)?;
                Reply::Ok(Some(core.poll(key, &user, &contact, rich?)?))
            }
            Route::Set { user, rich } => {
                core.end_session(key, &user)?;
                let req = rich.and_then(|rich| parse_set(headers, &body, rich));
                core.set_presence(key, &user, req, now, &mut notices)?;
                Reply::Ok(None)
            }
        }
    };
    sim.send(notices);
    Ok(reply)
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Decodes `%XX` escapes of a path segment (invalid escapes stay as they are).
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body as an XML tree (150 unreadable, 102 malformed or empty).
fn doc(body: &Result<String, PwsError>) -> Result<Element, PwsError> {
    let body = body.as_ref().map_err(|e| *e)?;
    xml::parse(body).map_err(|_| PwsError(102))
}

fn is_blank(body: &Result<String, PwsError>) -> bool {
    matches!(body, Ok(b) if b.trim().is_empty())
}

/// `<session><password>…</password></session>`; empty body → 112, empty password → the
/// engine answers 111.
fn parse_password(body: &Result<String, PwsError>) -> Result<String, PwsError> {
    if is_blank(body) {
        return Err(PwsError(112));
    }
    let d = doc(body)?;
    if d.name != "session" {
        return Err(PwsError(103));
    }
    Ok(d.child("password")
        .map(|p| p.text.clone())
        .unwrap_or_default())
}

/// `Presence-Expiry` header (preferred) or the body's `<expiration>`; malformed → 131.
fn expiry(headers: &HeaderMap, d: Option<&Element>) -> Result<Option<u64>, PwsError> {
    let raw = header_str(headers, "presence-expiry")
        .or_else(|| d.and_then(|d| d.child_text("expiration")));
    match raw {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| PwsError(131)),
    }
}

fn parse_endpoint(
    headers: &HeaderMap,
    body: &Result<String, PwsError>,
) -> Result<(String, u64), PwsError> {
    let d = doc(body)?;
    if d.name != "endpoint" {
        return Err(PwsError(103));
    }
    let url = d.child_text("url").unwrap_or_default();
    if url.is_empty() {
        return Err(PwsError(130));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(PwsError(142));
    }
    let exp = check_expiry(expiry(headers, Some(&d))?.unwrap_or(DEFAULT_EXPIRY))?;
    Ok((url.to_owned(), exp))
}

/// A refresh: new lifetime only; a URL in it is error 123; no lifetime is 131.
fn parse_endpoint_refresh(
    headers: &HeaderMap,
    body: &Result<String, PwsError>,
) -> Result<u64, PwsError> {
    let d = if is_blank(body) {
        None
    } else {
        let d = doc(body)?;
        if d.name != "endpoint" {
            return Err(PwsError(103));
        }
        if d.child_text("url").is_some_and(|u| !u.is_empty()) {
            return Err(PwsError(123));
        }
        Some(d)
    };
    check_expiry(expiry(headers, d.as_ref())?.ok_or(PwsError(131))?)
}

/// `<subscription>` of §3.8. `create`: the subscription type is required.
fn parse_subscription(
    headers: &HeaderMap,
    body: &Result<String, PwsError>,
    create: bool,
) -> Result<SubscribeReq, PwsError> {
    if !create && is_blank(body) {
        return Ok(SubscribeReq {
            expiry: expiry(headers, None)?,
            ..SubscribeReq::default()
        });
    }
    let d = doc(body)?;
    if d.name != "subscription" {
        return Err(PwsError(103));
    }
    match d.child_text("subscriptionType") {
        Some("PRESENCE_NOTIFICATION") => {}
        None if !create => {}
        _ => return Err(PwsError(134)),
    }
    let contacts = match d.child("contactsList") {
        None => None,
        Some(list) => {
            let mut v = Vec::with_capacity(list.children.len());
            for c in &list.children {
                if c.name != "contact" {
                    return Err(PwsError(147));
                }
                let uri = c.attr("contactURI").ok_or(PwsError(148))?.trim();
                if uri.is_empty() {
                    return Err(PwsError(143));
                }
                if !engine::valid_uri(uri) {
                    return Err(PwsError(124));
                }
                v.push(uri.to_owned());
            }
            Some(v)
        }
    };
    let endpoint = match d.child_text("endPointID") {
        None | Some("") | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| PwsError(132))?),
    };
    Ok(SubscribeReq {
        contacts,
        endpoint,
        expiry: expiry(headers, Some(&d))?,
    })
}

/// `Presence-Override`: absent → false; otherwise exactly `true` / `false` (125).
fn override_header(headers: &HeaderMap) -> Result<bool, PwsError> {
    match header_str(headers, "presence-override") {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(PwsError(125)),
    }
}

fn parse_set(
    headers: &HeaderMap,
    body: &Result<String, PwsError>,
    rich: bool,
) -> Result<SetReq, PwsError> {
    let override_ = override_header(headers)?;
    let d = doc(body)?;
    let req = if rich {
        SetReq::Rich(presence::parse_rich_set(&d, override_)?)
    } else {
        if d.name != "presence" {
            return Err(PwsError(103));
        }
        let v = d.text.trim();
        if v.is_empty() {
            return Err(PwsError(115));
        }
        let basic = match Basic::from_wire(v) {
            Some(Basic::Unknown) | None => return Err(PwsError(120)),
            Some(b) => b,
        };
        match (basic, override_) {
            (Basic::Available, true) => return Err(PwsError(121)),
            (Basic::Dnd, false) => return Err(PwsError(122)),
            _ => {}
        }
        SetReq::Basic { basic, override_ }
    };
    // Validated, then ignored: set states do not lapse in the simulator.
    if let Some(e) = expiry(headers, None)? {
        check_expiry(e)?;
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("alice%40example.com"), "alice@example.com");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("plain"), "plain");
    }

    #[test]
    fn routes() {
        let segs = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert!(matches!(
            route(
                &Method::GET,
                &segs("users/u/presence/rich/subscriptions/12")
            ),
            Ok(Route::Fetch {
                rich: Ok(true),
                sid: Ok(12),
                ..
            })
        ));
        assert!(matches!(
            route(
                &Method::GET,
                &segs("users/u/presence/fancy/subscriptions/12")
            ),
            Ok(Route::Fetch {
                rich: Err(PwsError(110)),
                ..
            })
        ));
        assert!(matches!(
            route(&Method::GET, &segs("soap")),
            Err(Miss::NotFound)
        ));
        assert!(matches!(
            route(&Method::GET, &segs("endpoints")),
            Err(Miss::Method)
        ));
    }
}
