//! The test-only control API under `/_sim/` (JSON), for harnesses outside the process
//! (Python tests, the demo). In-process code uses the [`super::PwsSimHandle`] directly.
//!
//! | call | effect |
//! |---|---|
//! | `POST /_sim/users/{uri}/basic` `{"status":"BUSY"}` | client state change (notifies) |
//! | `POST /_sim/users/{uri}/rich` `{"activity":"on-the-phone","note":"…"}` | same, rich |
//! | `GET /_sim/users/{uri}` | `{"uri","basic","rich"}` |
//! | `GET /_sim/stats` | [`super::SimStats`] |
//! | `GET /_sim/callbacks` | the most recent notification GETs |
//! | `POST /_sim/faults` `{"cpu_throttle":true,"rate_limit":null,"drop_callbacks":false,"callback_delay_ms":0,"change_rate":10}` | every field optional; `rate_limit: null` turns the limit off |
//! | `POST /_sim/expire-sessions`, `/_sim/expire-subscriptions`, `/_sim/restart` | faults |

use super::presence::{Basic, State};
use super::Shared;
use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

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
        serde_json::from_slice::<Value>(&body).map_err(|e| {
            Box::new(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("invalid JSON: {e}")}),
            ))
        })
    };
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(super::http::percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["stats"]) => reply(StatusCode::OK, json!(sim.stats())),
        (Method::GET, ["callbacks"]) => reply(StatusCode::OK, json!(sim.recent_callbacks())),
        (Method::GET, ["users", uri]) => {
            let core = sim.lock();
            match core.user_by_uri(uri) {
                Some(u) => reply(
                    StatusCode::OK,
                    json!({"uri": uri, "basic": core.basic_of(u).as_str(), "rich": core.pidf_of(u)}),
                ),
                None => not_found("unknown user"),
            }
        }
        (Method::POST, ["users", uri, "basic"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let status = v["status"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let basic = match Basic::from_wire(&status) {
                Some(Basic::Unknown) | None => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "status must be AVAILABLE, AWAY, BUSY, DND, VACATION or UNAVAILABLE"}),
                    )
                }
                Some(b) => b,
            };
            change(sim, uri, State::basic(basic))
        }
        (Method::POST, ["users", uri, "rich"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let activity = v["activity"].as_str().unwrap_or_default();
            match State::from_activities(activity, v["note"].as_str()) {
                Some(s) => change(sim, uri, s),
                None => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "activity must be PIDF activity names, e.g. \"busy on-the-phone\""}),
                ),
            }
        }
        (Method::POST, ["faults"]) => {
            let v = match json_body() {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let Some(obj) = v.as_object() else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "expected an object"}),
                );
            };
            let rate = match obj.get("rate_limit") {
                None => None,
                Some(Value::Null) => Some(None),
                Some(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => Some(Some(n)),
                    None => {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            json!({"error": "rate_limit must be null or a positive integer"}),
                        )
                    }
                },
            };
            sim.set_faults(
                obj.get("cpu_throttle").and_then(Value::as_bool),
                rate,
                obj.get("drop_callbacks").and_then(Value::as_bool),
            );
            if let Some(ms) = obj.get("callback_delay_ms").and_then(Value::as_u64) {
                sim.callback_delay_ms.store(ms, Ordering::Relaxed);
            }
            if let Some(r) = obj.get("change_rate").and_then(Value::as_f64) {
                sim.set_change_rate(r);
            }
            reply(StatusCode::OK, json!({"ok": true}))
        }
        (Method::POST, ["expire-sessions"]) => {
            sim.lock().expire_sessions();
            reply(StatusCode::OK, json!({"ok": true}))
        }
        (Method::POST, ["expire-subscriptions"]) => {
            sim.lock().expire_subscriptions();
            reply(StatusCode::OK, json!({"ok": true}))
        }
        (Method::POST, ["restart"]) => {
            sim.lock().restart();
            reply(StatusCode::OK, json!({"ok": true}))
        }
        _ => not_found("no such control call"),
    }
}

fn change(sim: &Shared, uri: &str, s: State) -> Response {
    if sim.set_client(uri, s) {
        reply(StatusCode::OK, json!({"ok": true}))
    } else {
        not_found("unknown user")
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
