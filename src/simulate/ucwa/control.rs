//! The test-only JSON control API under `/_sim/` (not part of UCWA).
//!
//! | call | effect |
//! |---|---|
//! | `POST /_sim/users/{uri}/presence` `{"availability":"Busy","activity":"on-the-phone","note":"…"}` | change as from the user's own client (drives events); `activity` optional, `note` optional (absent = unchanged, `""` = cleared) |
//! | `GET /_sim/users/{uri}` | `{"uri","availability","activity","deviceType","note"}` |
//! | `GET /_sim/stats` | [`super::UcwaSimStats`] |
//! | `POST /_sim/expire-tokens`, `/_sim/expire-applications`, `/_sim/resume`, `/_sim/resync`, `/_sim/expire-subscriptions` | faults, as the handle methods |
//! | `POST /_sim/advance` `{"seconds":60}` | moves the simulator's clock forward |
//! | `POST /_sim/change-rate` `{"rate":10}` | random changes per second (0 stops) |

use super::presence::Availability;
use super::Shared;
use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::time::Duration;

const MAX_CONTROL_BODY: usize = 64 * 1024;

pub(crate) async fn handle(sim: &Shared, method: &Method, rest: &str, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, MAX_CONTROL_BODY).await {
        Ok(b) => b,
        Err(_) => return reply(StatusCode::BAD_REQUEST, json!({"error": "body too large"})),
    };
    let json_body = || -> Result<Value, Box<Response>> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(Box::new(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "expected a JSON object"}),
            ))),
            Err(e) => Err(Box::new(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("invalid JSON: {e}")}),
            ))),
        }
    };
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| super::http::percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let done = || reply(StatusCode::OK, json!({"ok": true}));
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["stats"]) => reply(StatusCode::OK, json!(sim.stats())),
        (Method::GET, ["users", uri]) => {
            let core = sim.lock();
            match core.user_by_name(uri) {
                Some(u) => {
                    let u = core.user(u);
                    let p = &u.presence;
                    reply(
                        StatusCode::OK,
                        json!({
                            "uri": u.uri,
                            "availability": p.availability.as_str(),
                            "activity": p.activity,
                            "deviceType": p.shown_device().as_str(),
                            "note": p.note,
                        }),
                    )
                }
                None => not_found("unknown user"),
            }
        }
        (Method::POST, ["users", uri, "presence"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let Some(a) = v["availability"].as_str().and_then(Availability::parse) else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "availability must be one of Online Busy DoNotDisturb BeRightBack Away Offline IdleOnline IdleBusy"}),
                );
            };
            if !matches!(v["activity"], Value::Null | Value::String(_))
                || !matches!(v["note"], Value::Null | Value::String(_))
            {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "activity and note must be strings"}),
                );
            }
            let activity = v["activity"].as_str().filter(|s| !s.is_empty());
            let note = v.get("note").map(|n| n.as_str().unwrap_or_default());
            if sim.set_presence(uri, a, activity, note) {
                done()
            } else {
                not_found("unknown user")
            }
        }
        (Method::POST, ["expire-tokens"]) => {
            sim.with(|core, _| core.expire_tokens());
            done()
        }
        (Method::POST, ["expire-applications"]) => {
            sim.with(|core, _| core.expire_applications());
            done()
        }
        (Method::POST, ["resume"]) => {
            sim.with(|core, now| core.force_resume(now));
            done()
        }
        (Method::POST, ["resync"]) => {
            sim.with(|core, now| core.force_resync(now));
            done()
        }
        (Method::POST, ["expire-subscriptions"]) => {
            sim.with(|core, now| core.expire_subscriptions(now));
            done()
        }
        (Method::POST, ["advance"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(r) => return *r,
            };
            match v["seconds"].as_f64() {
                Some(s) if s.is_finite() && (0.0..=1e9).contains(&s) => {
                    sim.advance(Duration::from_secs_f64(s));
                    done()
                }
                _ => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "seconds must be a non-negative number"}),
                ),
            }
        }
        (Method::POST, ["change-rate"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(r) => return *r,
            };
            match v["rate"].as_f64() {
                Some(r) => {
                    sim.set_change_rate(r);
                    done()
                }
                None => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "rate must be a number"}),
                ),
            }
        }
        _ => not_found("no such control call"),
    }
}

fn not_found(what: &str) -> Response {
    reply(StatusCode::NOT_FOUND, json!({ "error": what }))
}

fn reply(status: StatusCode, v: Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .expect("static response parts are valid")
}
