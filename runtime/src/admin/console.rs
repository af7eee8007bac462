//! The web console at `/`: the topology of each pipeline drawn from `GET /graph`, with live
//! rates, channel fill, DLQ counts and the latest dead-letter reasons (`GET /dlq/recent`),
//! scraped from the same admin server every second. One HTML page with its script inline,
//! embedded in the binary: no CDN, nothing to install.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::header,
    response::{Html, IntoResponse},
};

use super::AdminState;

const PAGE: &str = include_str!("console/index.html");

pub(super) async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE))
}

/// Each pipeline's topology and config hash; `scoped` says whether metrics name its
/// components `<pipeline>/<name>`.
pub(super) async fn graph(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let pipelines: Vec<serde_json::Value> = s
        .all()
        .iter()
        .map(|p| {
            let graph = p.graph.read().unwrap_or_else(|e| e.into_inner());
            let status = p.status.read().unwrap_or_else(|e| e.into_inner());
            serde_json::json!({
                "name": p.name,
                "config_hash": status.hash,
                "graph": &*graph,
            })
        })
        .collect();
    Json(serde_json::json!({ "scoped": s.scoped, "pipelines": pipelines }))
}

/// The latest dead-lettered batches, newest first: component, stage, class, first reason.
pub(super) async fn recent_dead(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    Json(s.metrics.recent_dead())
}
