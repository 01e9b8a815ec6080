//! The JSON control API under `/_sim/` on its own HTTP port, for harnesses outside the
//! process (`presence-bridge simulate sip --http …`, Python tests). In-process code uses
//! the [`super::SipSimHandle`]; both call the same operations.
//!
//! | call | effect |
//! |---|---|
//! | `GET /_sim/stats` | [`super::SipSimStats`] |
//! | `GET /_sim/users/{aor}` | [`super::UserInfo`] (state, watchers, the current PIDF) |
//! | `POST /_sim/users/{aor}/presence` `{"basic":"open","activity":"busy","note":"…"}` | the user's client publishes (NOTIFYs); `basic` defaults to `open` |
//! | `DELETE /_sim/users/{aor}/presence` | the publication is removed (empty NOTIFY) |
//! | `POST /_sim/users/{aor}/call` `{"state":"ringing"}` | `idle`, `ringing`, `dialing`, `in-call` (dialog NOTIFYs) |
//! | `POST /_sim/users/{aor}/mwi` `{"new":2,"old":5}` | message-summary NOTIFYs |
//! | `POST /_sim/users/{aor}/terminate` `{"reason":"probation","retry_after":30,"package":"presence"}` | final NOTIFY `terminated;reason=…` to the user's watchers (`package` optional) |
//! | `GET /_sim/subscriptions` | live subscriptions |
//! | `POST /_sim/subscriptions/drop` | forget all subscriptions, no NOTIFY (refresh → 481) |
//! | `POST /_sim/faults` `{"unavailable_secs":30,"retry_after":10,"notify_before_ok":true,"notify_delay_ms":0,"change_rate":5}` | every field optional; `unavailable_secs: 0` ends the 503s |
//! | `GET /_sim/changes?since=N&limit=M` | the change log after sequence N (default limit 10 000) |
//!
//! Answers are JSON; an unknown user is 404, a bad value 400 with `{"error": …}`.

use super::notify::{Package, Termination};
use super::state::{Basic, CallState, Presence};
use super::Shared;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Sim = State<Arc<Shared>>;

/// Binds `addr` and serves the control API until `cancel`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(shared);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            cancel.cancelled().await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "SIP simulator control API stopped");
        }
    });
    Ok((bound, task))
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/stats", get(stats))
        .route("/_sim/users/{aor}", get(user))
        .route(
            "/_sim/users/{aor}/presence",
            post(set_presence).put(set_presence).delete(clear_presence),
        )
        .route("/_sim/users/{aor}/call", post(set_call))
        .route("/_sim/users/{aor}/mwi", post(set_mwi))
        .route("/_sim/users/{aor}/terminate", post(terminate))
        .route("/_sim/subscriptions", get(subscriptions))
        .route("/_sim/subscriptions/drop", post(drop_all))
        .route("/_sim/faults", post(faults))
        .route("/_sim/changes", get(changes))
        .with_state(shared)
}

fn error(status: StatusCode, what: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": what.to_string() }))).into_response()
}

fn unknown_user() -> Response {
    error(StatusCode::NOT_FOUND, "unknown user")
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

/// A JSON body into `T` (an empty body is `{}`); `Err` names the problem.
fn body<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, String> {
    let raw: &[u8] = if raw.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        raw
    };
    serde_json::from_slice(raw).map_err(|e| format!("invalid JSON: {e}"))
}

async fn stats(State(sim): Sim) -> Response {
    ok(json!(sim.stats()))
}

async fn user(State(sim): Sim, Path(aor): Path<String>) -> Response {
    match sim.user_info(&aor) {
        Some(u) => ok(json!(u)),
        None => unknown_user(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceBody {
    #[serde(default = "open")]
    basic: Basic,
    activity: Option<String>,
    note: Option<String>,
}

fn open() -> Basic {
    Basic::Open
}

async fn set_presence(
    State(sim): Sim,
    Path(aor): Path<String>,
    raw: axum::body::Bytes,
) -> Response {
    let b: PresenceBody = match body(&raw) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let p = Presence {
        basic: b.basic,
        activity: b.activity,
        note: b.note,
    };
    match sim.set_presence(&aor, Some(p)) {
        Ok(Some(seq)) => ok(json!({ "seq": seq })),
        Ok(None) => unknown_user(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn clear_presence(State(sim): Sim, Path(aor): Path<String>) -> Response {
    match sim.set_presence(&aor, None) {
        Ok(Some(seq)) => ok(json!({ "seq": seq })),
        Ok(None) => unknown_user(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallBody {
    state: String,
}

async fn set_call(State(sim): Sim, Path(aor): Path<String>, raw: axum::body::Bytes) -> Response {
    let b: CallBody = match body(&raw) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let to = match CallState::parse(&b.state) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match sim.set_call(&aor, to) {
        Some(seq) => ok(json!({ "seq": seq })),
        None => unknown_user(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MwiBody {
    #[serde(default)]
    new: u32,
    #[serde(default)]
    old: u32,
}

async fn set_mwi(State(sim): Sim, Path(aor): Path<String>, raw: axum::body::Bytes) -> Response {
    let b: MwiBody = match body(&raw) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match sim.set_mwi(&aor, b.new, b.old) {
        Some(seq) => ok(json!({ "seq": seq })),
        None => unknown_user(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminateBody {
    reason: String,
    retry_after: Option<u32>,
    package: Option<Package>,
}

async fn terminate(State(sim): Sim, Path(aor): Path<String>, raw: axum::body::Bytes) -> Response {
    let b: TerminateBody = match body(&raw) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(mut end) = Termination::parse(&b.reason) else {
        return error(
            StatusCode::BAD_REQUEST,
            "reason must be a token, e.g. deactivated, probation, rejected, noresource",
        );
    };
    if b.retry_after.is_some() {
        end.retry_after = b.retry_after;
    }
    match sim.terminate(&aor, b.package, &end) {
        Some(n) => ok(json!({ "terminated": n })),
        None => unknown_user(),
    }
}

async fn subscriptions(State(sim): Sim) -> Response {
    ok(json!(sim.subscriptions()))
}

async fn drop_all(State(sim): Sim) -> Response {
    let n = sim.lock().drop_all();
    ok(json!({ "dropped": n }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    unavailable_secs: Option<u64>,
    retry_after: Option<u32>,
    notify_before_ok: Option<bool>,
    notify_delay_ms: Option<u64>,
    change_rate: Option<f64>,
}

async fn faults(State(sim): Sim, raw: axum::body::Bytes) -> Response {
    let b: FaultsBody = match body(&raw) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Some(secs) = b.unavailable_secs {
        let retry = b.retry_after.unwrap_or(secs.min(u32::MAX as u64) as u32);
        sim.set_unavailable((secs > 0).then(|| Duration::from_secs(secs)), retry);
    }
    if let Some(on) = b.notify_before_ok {
        sim.lock().faults.notify_before_ok = on;
    }
    if let Some(ms) = b.notify_delay_ms {
        sim.notify_delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(r) = b.change_rate {
        sim.set_change_rate(r);
    }
    ok(json!({ "ok": true }))
}

#[derive(Deserialize)]
struct ChangesQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

async fn changes(State(sim): Sim, Query(q): Query<ChangesQuery>) -> Response {
    let mut c = sim.lock().changes_since(q.since);
    c.truncate(q.limit.unwrap_or(10_000));
    ok(json!(c))
}
