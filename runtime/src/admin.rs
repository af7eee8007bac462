//! The admin HTTP server of an agent (one for all its pipelines): `/metrics` (Prometheus
//! text), `/health`, `/ready`, `/plugins`, `/pipelines`, the reload endpoints, `/tap` (live
//! events at a point of a pipeline: [`tap`]), the web console (`/`, `/graph`,
//! `/dlq/recent`: [`console`]), and a running agent's dead letters (`/dlq`,
//! `/dlq/replay`: [`dlq`]).
//!
//! `/ready` is 200 only while the pipeline runs and every channel can accept puts, so a load
//! balancer stops sending to an agent whose durable channel cannot write (a full disk).
//!
//! With `token_env`, every other endpoint (`/plugins`, reloads, and `/metrics` unless
//! `public_metrics`) answers 401 without `Authorization: Bearer <token>`; the token is
//! compared in constant time (as SHA-256 digests, so its length does not leak either).

mod console;
mod dlq;
mod tap;

use std::{
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
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

/// What the admin endpoints report on: the agent's metrics and each pipeline it runs.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// In the order they started (pipelines of a watched directory come and go).
    pub pipelines: Arc<RwLock<Vec<Arc<PipelineView>>>>,
    /// Component names are `<pipeline>/<name>` (the agent may run several pipelines).
    pub scoped: bool,
    /// Cancelled when the agent stops: endless answers (`/tap`) end then, so they do not hold
    /// up the server's graceful shutdown.
    pub stop: CancellationToken,
}

/// What the admin server sees of one pipeline (kept current by its live reloads).
pub struct PipelineView {
    pub name: String,
    /// True while the pipeline accepts events (cleared when it stops).
    pub ready: AtomicBool,
    pub plugins: RwLock<Arc<dyn PluginHost>>,
    /// Channels whose health `/ready` reports.
    pub channels: RwLock<Vec<(String, Arc<dyn Channel>)>>,
    /// The running topology (`GET /graph`, the console).
    pub graph: RwLock<sluice_core::graph::Graph>,
    /// Where `POST /config/reload` asks for a reload of the pipeline file; `None` when the
    /// pipeline was not read from a file.
    pub reload: Option<tokio::sync::mpsc::Sender<crate::reload::Request>>,
    /// The running pipeline's source, hash and last reload (`GET /pipelines`).
    pub status: RwLock<crate::reload::Status>,
}

impl PipelineView {
    pub fn plugins(&self) -> Arc<dyn PluginHost> {
        Arc::clone(&self.plugins.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn channels(&self) -> Vec<(String, Arc<dyn Channel>)> {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl AdminState {
    /// Every pipeline, now.
    fn all(&self) -> Vec<Arc<PipelineView>> {
        self.pipelines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The pipelines a request is about: the one `?pipeline=` names (none when no pipeline
    /// has that name), else all.
    fn chosen(&self, which: &Which) -> Vec<Arc<PipelineView>> {
        let mut all = self.all();
        all.retain(|p| which.pipeline.as_ref().is_none_or(|n| *n == p.name));
        all
    }

    /// Component names carry their pipeline's name when the agent runs several.
    fn qualified(&self, pipeline: &str, name: &str) -> String {
        if self.scoped {
            format!("{pipeline}/{name}")
        } else {
            name.to_owned()
        }
    }
}

/// `?pipeline=<name>`: limits a request to one pipeline.
#[derive(serde::Deserialize, Default)]
struct Which {
    pipeline: Option<String>,
}

/// The admin server's TLS: a ready acceptor (the `http` feature), or nothing to build one
/// with.
#[cfg(feature = "http")]
pub type Tls = tokio_rustls::TlsAcceptor;
#[cfg(not(feature = "http"))]
pub type Tls = std::convert::Infallible;

/// The acceptor for `admin.tls`; an error message when it cannot be made (bad files, or a
/// build without the `http` feature).
pub fn tls_acceptor(
    t: &sluice_core::config::AdminTls,
    base: &std::path::Path,
) -> Result<Tls, String> {
    #[cfg(feature = "http")]
    {
        crate::tls::http_acceptor(&base.join(&t.cert), &base.join(&t.key))
    }
    #[cfg(not(feature = "http"))]
    {
        let _ = (t, base);
        Err(format!(
            "admin.tls needs the `http` feature; this build has: {}",
            crate::features().join(", ")
        ))
    }
}

#[cfg(feature = "http")]
mod tls {
    //! HTTPS for the admin server: each accepted connection is TLS-wrapped, then served by the
    //! same router over HTTP/1.1.
    use std::time::Duration;

    use axum::Router;
    use hyper_util::{rt::TokioIo, service::TowerToHyperService};
    use tokio_util::sync::CancellationToken;

    pub fn spawn(
        listener: tokio::net::TcpListener,
        acceptor: super::Tls,
        app: Router,
        stop: CancellationToken,
    ) {
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            tracing::warn!(error = %e, "admin server: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, app, stop) = (acceptor.clone(), app.clone(), stop.clone());
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "admin server: TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
                    tokio::select! {
                        r = conn => if let Err(e) = r {
                            tracing::debug!(error = %e, "admin connection ended with an error");
                        },
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
    }
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
        // `/` is the console's page, which holds no data: it asks for the token itself.
        if path == "/"
            || path == "/health"
            || path == "/ready"
            || (path == "/metrics" && self.public_metrics)
        {
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
    tls: Option<Tls>,
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
        .route("/pipelines/{name}/reload", post(reload_pipeline))
        .route("/tap", get(tap::tap))
        .route("/", get(console::page))
        .route("/graph", get(console::graph))
        .route("/dlq/recent", get(console::recent_dead))
        .route("/dlq", get(dlq::census))
        .route("/dlq/replay", post(dlq::replay))
        .with_state(state)
        .layer(middleware::from_fn_with_state(access, authorize));
    if let Some(tls) = tls {
        #[cfg(feature = "http")]
        {
            tls::spawn(listener, tls, app, stop);
            return Ok(bound);
        }
        #[cfg(not(feature = "http"))]
        match tls {}
    }
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
    let mut failing = Vec::new();
    let all = s.all();
    for p in &all {
        if !p.ready.load(Ordering::Relaxed) {
            failing.push(format!("pipeline {}: not running\n", p.name));
            continue;
        }
        for (name, ch) in p.channels() {
            if let Err(why) = ch.health() {
                let name = s.qualified(&p.name, &name);
                failing.push(format!("channel {name}: {why}\n"));
            }
        }
    }
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
    let all = s.all();
    let sick: Vec<String> = all
        .iter()
        .flat_map(|p| {
            let sick = p.plugins().unhealthy();
            sick.into_iter()
                .map(|n| s.qualified(&p.name, &n))
                .collect::<Vec<_>>()
        })
        .collect();
    if sick.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy plugins: {}\n", sick.join(", ")),
        )
    }
}

/// Every plugin of the chosen pipelines, each with its pipeline's name when there are several.
async fn plugins(
    State(s): State<Arc<AdminState>>,
    Query(which): Query<Which>,
) -> impl IntoResponse {
    let several = s.scoped;
    let mut out = Vec::new();
    for p in s.chosen(&which) {
        for mut d in p.plugins().describe() {
            if let (true, Some(o)) = (several, d.as_object_mut()) {
                o.insert("pipeline".into(), p.name.clone().into());
            }
            out.push(d);
        }
    }
    Json(out)
}

fn plugin_answer(name: &str, outcome: &ReloadOutcome) -> (StatusCode, serde_json::Value) {
    match outcome {
        ReloadOutcome::NotFound => (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no plugin named `{name}`") }),
        ),
        ReloadOutcome::Unchanged => (StatusCode::OK, serde_json::json!({ "result": "unchanged" })),
        ReloadOutcome::Swapped { from, to } => (
            StatusCode::OK,
            serde_json::json!({ "result": "swapped", "from": from, "to": to }),
        ),
        ReloadOutcome::Refused(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({ "error": e, "result": "refused; the previous version keeps running" }),
        ),
    }
}

/// Reloads plugin `name` in every chosen pipeline that has one of that name. With one such
/// pipeline the answer is its outcome; with several, `{"pipelines": {name: outcome}}` (422
/// when any was refused).
async fn reload(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    Query(which): Query<Which>,
) -> impl IntoResponse {
    let mut found = Vec::new();
    for p in s.chosen(&which) {
        let outcome = p.plugins().reload(&name).await;
        if outcome != ReloadOutcome::NotFound {
            found.push((p.name.clone(), outcome));
        }
    }
    match found.as_slice() {
        [] => {
            let (code, body) = plugin_answer(&name, &ReloadOutcome::NotFound);
            (code, Json(body))
        }
        [(_, one)] => {
            let (code, body) = plugin_answer(&name, one);
            (code, Json(body))
        }
        many => {
            let mut code = StatusCode::OK;
            let mut by = serde_json::Map::new();
            for (p, o) in many {
                let (c, body) = plugin_answer(&name, o);
                if c != StatusCode::OK {
                    code = c;
                }
                by.insert(p.clone(), body);
            }
            (code, Json(serde_json::json!({ "pipelines": by })))
        }
    }
}

/// The pipelines this agent runs, with their config hash and last reload.
async fn pipelines(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let all: Vec<serde_json::Value> = s
        .all()
        .iter()
        .map(|p| {
            let mut st = p.status.read().unwrap_or_else(|e| e.into_inner()).to_json();
            if !p.ready.load(Ordering::Relaxed) {
                st["state"] = "stopped".into();
            }
            st
        })
        .collect();
    Json(all)
}

/// Reloads one pipeline's file now (see [`reload_chosen`]).
async fn reload_pipeline(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> impl IntoResponse {
    reload_chosen(
        &s,
        &Which {
            pipeline: Some(name),
        },
    )
    .await
}

/// Reloads the pipeline files (all, or the one `?pipeline=` names) now.
async fn reload_config(
    State(s): State<Arc<AdminState>>,
    Query(which): Query<Which>,
) -> impl IntoResponse {
    reload_chosen(&s, &which).await
}

/// Asks each chosen pipeline for a reload and answers with the outcome: 200 `applied` (with
/// what changed) or `unchanged`, 422 `refused` with every error (that pipeline keeps running
/// as it was). Several pipelines: `{"pipelines": {name: outcome}}`, 422 when any refused.
/// Each pipeline reloads on its own: one refused file changes nothing in the others.
async fn reload_chosen(s: &AdminState, which: &Which) -> (StatusCode, Json<serde_json::Value>) {
    let chosen = s.chosen(which);
    if chosen.is_empty() {
        let name = which.pipeline.clone().unwrap_or_default();
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no pipeline named `{name}`") })),
        );
    }
    let mut answers = Vec::new();
    for p in &chosen {
        answers.push((p.name.clone(), ask_reload(p).await));
    }
    if let [(_, one)] = answers.as_slice() {
        return (one.0, Json(one.1.clone()));
    }
    let code = answers
        .iter()
        .map(|(_, (c, _))| *c)
        .find(|c| *c != StatusCode::OK)
        .unwrap_or(StatusCode::OK);
    let by: serde_json::Map<String, serde_json::Value> = answers
        .into_iter()
        .map(|(n, (_, body))| (n, body))
        .collect();
    (code, Json(serde_json::json!({ "pipelines": by })))
}

async fn ask_reload(p: &PipelineView) -> (StatusCode, serde_json::Value) {
    let Some(tx) = &p.reload else {
        return (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "this pipeline was not read from a file" }),
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
            (status, a.to_json())
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "the pipeline is stopping" }),
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
        for path in ["/health", "/ready", "/metrics", "/"] {
            assert!(a.allows(path, None), "{path}");
        }
        for path in [
            "/plugins",
            "/plugins/enrich/reload",
            "/anything",
            "/graph",
            "/dlq/recent",
            "/tap",
        ] {
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
