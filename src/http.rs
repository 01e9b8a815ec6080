//! The bridge's HTTP server: `/health` (process is up), `/ready` (every sink reachable and
//! intake not blocked), `/metrics` (Prometheus text). Connector callbacks (PWS notification
//! GETs, Graph webhooks) are mounted on the same server.

use crate::metrics::Metrics;
use crate::pipeline::OutboxSignals;
use crate::sinks::SinkHealth;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub sinks: Arc<Vec<(String, SinkHealth)>>,
    pub signals: Arc<OutboxSignals>,
}

/// What `/ready` reports: empty when ready, else one reason per problem.
pub fn not_ready_reasons(state: &HttpState) -> Vec<String> {
    let mut reasons = Vec::new();
    for (name, h) in state.sinks.iter() {
        if !h.is_up() {
            reasons.push(format!("sink {name} unreachable"));
        }
    }
    if state.signals.blocked.load(Ordering::Relaxed) {
        reasons.push("outbox full: intake paused".into());
    }
    reasons
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    let reasons = not_ready_reasons(&state);
    let depth = state.signals.depth();
    if reasons.is_empty() {
        (StatusCode::OK, format!("ready\noutbox_depth {depth}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\noutbox_depth {depth}\n", reasons.join("\n")),
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The base router; connector routes are merged into it by the runtime.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}
