//! The admin HTTP server: `/metrics` (Prometheus text), `/health`, `/ready`.
//!
//! `/ready` is 200 only while the pipeline runs and every channel can accept puts, so a load
//! balancer stops sending to an agent whose durable channel cannot write (a full disk).
//!
//! With `token_env`, every other endpoint (`/plugins`, reloads, and `/metrics` unless
//! `public_metrics`) answers 401 without `Authorization: Bearer <token>`; the token is
//! compared in constant time (as SHA-256 digests, so its length does not leak either).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
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
    /// Channels whose health `/ready` reports (replaced by a live reload).
    pub channels: std::sync::RwLock<Vec<(String, Arc<dyn Channel>)>>,
    /// Where `POST /config/reload` asks for a reload of the pipeline file; `None` when the
    /// pipeline was not read from a file.
    pub reload: Option<tokio::sync::mpsc::Sender<crate::reload::Request>>,
    /// The running pipeline's source, hash and last reload (`GET /pipelines`).
    pub config: std::sync::RwLock<crate::reload::Status>,
}

/// Who may use the admin endpoints.
#[derive(Clone, Default)]
pub struct Access {
    /// SHA-256 of the bearer token; `None`: no token (a loopback listener).
    token: Option<[u8; 32]>,
    public_metrics: bool,
}

impl Access {
    pub fn new(token: Option<&str>, public_metrics: bool) -> Self {
        Access {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            public_metrics,
        }
    }

    fn allows(&self, path: &str, authorization: Option<&[u8]>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        if path == "/health" || path == "/ready" || (path == "/metrics" && self.public_metrics) {
            return true;
        }
        let given = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .map(|t| Sha256::digest(t.trim_ascii()));
        given.is_some_and(|g| bool::from(g.as_slice().ct_eq(want)))
    }
}

async fn authorize(State(access): State<Access>, req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if access.allows(req.uri().path(), authorization) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response()
    }
}

/// Binds `addr` and serves until `stop` is cancelled. Returns the bound address (useful with
/// port 0) once listening.
pub async fn serve(
    addr: SocketAddr,
    access: Access,
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
        .route("/config/reload", post(reload_config))
        .route("/pipelines", get(pipelines))
        .with_state(state)
        .layer(middleware::from_fn_with_state(access, authorize));
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
    let channels = s.channels.read().unwrap_or_else(|p| p.into_inner()).clone();
    let failing: Vec<String> = channels
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

/// The pipelines this agent runs (one so far), with their config hash and last reload.
async fn pipelines(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let status = s.config.read().unwrap_or_else(|p| p.into_inner()).to_json();
    Json(serde_json::json!([status]))
}

/// Reloads the pipeline file now and answers with the outcome: 200 `applied` (with what
/// changed) or `unchanged`, 422 `refused` with every error (the running pipeline is kept).
async fn reload_config(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let Some(tx) = &s.reload else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "this agent's pipeline was not read from a file" })),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let asked = tx
        .send(crate::reload::Request {
            origin: "admin",
            reply: Some(reply),
        })
        .await;
    match (asked, answer.await) {
        (Ok(()), Ok(a)) => {
            let status = if a.refused() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            (status, Json(a.to_json()))
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "the agent is stopping" })),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_ready_and_public_metrics_go_without_the_token() {
        let open = Access::new(None, false);
        assert!(
            open.allows("/plugins", None),
            "no token configured: loopback only"
        );
        let a = Access::new(Some("s3cret"), true);
        for path in ["/health", "/ready", "/metrics"] {
            assert!(a.allows(path, None), "{path}");
        }
        for path in ["/plugins", "/plugins/enrich/reload", "/anything"] {
            assert!(!a.allows(path, None), "{path}");
            assert!(!a.allows(path, Some(b"Bearer wrong")), "{path}");
            assert!(!a.allows(path, Some(b"Bearer s3cre")), "{path}");
            assert!(!a.allows(path, Some(b"Basic s3cret")), "{path}");
            assert!(a.allows(path, Some(b"Bearer s3cret")), "{path}");
        }
        let private = Access::new(Some("s3cret"), false);
        assert!(!private.allows("/metrics", None));
        assert!(private.allows("/metrics", Some(b"Bearer s3cret")));
    }
}
