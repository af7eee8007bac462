//! The admin HTTP server: `/metrics` (Prometheus text), `/health`, `/ready`.
//!
//! `/ready` is 200 only while the pipeline runs and every channel can accept puts, so a load
//! balancer stops sending to an agent whose durable channel cannot write (a full disk).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use tokio_util::sync::CancellationToken;

use sluice_core::{
    channel::Channel,
    metrics::Metrics,
    plugin::{PluginHost, ReloadOutcome},
};

/// What the admin endpoints report on.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// True while the pipeline accepts events (cleared when shutdown starts).
    pub ready: AtomicBool,
    pub plugins: Arc<dyn PluginHost>,
    /// Channels whose health `/ready` reports.
    pub channels: Vec<(String, Arc<dyn Channel>)>,
}

/// Binds `addr` and serves until `stop` is cancelled. Returns the bound address (useful with
/// port 0) once listening.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AdminState>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/plugins", get(plugins))
        .route("/plugins/{name}/reload", post(reload))
        .with_state(state);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok(bound)
}

async fn metrics(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn ready(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    if !s.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
    }
    let failing: Vec<String> = s
        .channels
        .iter()
        .filter_map(|(name, ch)| {
            ch.health()
                .err()
                .map(|why| format!("channel {name}: {why}\n"))
        })
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}", failing.concat()),
        )
    }
}

/// 200 while every plugin is healthy; 503 naming the unhealthy ones otherwise.
async fn health(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let sick = s.plugins.unhealthy();
    if sick.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy plugins: {}\n", sick.join(", ")),
        )
    }
}

async fn plugins(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    Json(s.plugins.describe())
}

async fn reload(State(s): State<Arc<AdminState>>, Path(name): Path<String>) -> impl IntoResponse {
    match s.plugins.reload(&name).await {
        ReloadOutcome::NotFound => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no plugin named `{name}`") })),
        ),
        ReloadOutcome::Unchanged => (
            StatusCode::OK,
            Json(serde_json::json!({ "result": "unchanged" })),
        ),
        ReloadOutcome::Swapped { from, to } => (
            StatusCode::OK,
            Json(serde_json::json!({ "result": "swapped", "from": from, "to": to })),
        ),
        ReloadOutcome::Refused(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                serde_json::json!({ "error": e, "result": "refused; the previous version keeps running" }),
            ),
        ),
    }
}
