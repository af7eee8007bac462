//! The dead letters of a running agent: `GET /dlq?channel=dead` counts what a DLQ channel
//! holds by component, stage, class and reason; `POST /dlq/replay?channel=dead&to=inbox`
//! moves a selection into another channel of the same pipeline, where its sources' events
//! go (see [`crate::dead_letters`] for what a replay guarantees). Both take the filters of
//! `sluice dlq`: `reason`, `stage`, `class`, `component`, `since`; a replay also `limit` and
//! `keep_headers`. `pipeline=` picks the pipeline when the agent runs several.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use sluice_core::channel::Channel;

use super::AdminState;
use crate::dead_letters::{self, Selection};

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn selection(q: &HashMap<String, String>) -> Result<Selection, String> {
    Ok(Selection {
        reason: q.get("reason").cloned(),
        stage: q.get("stage").cloned(),
        class: q.get("class").cloned(),
        component: q.get("component").cloned(),
        since: q
            .get("since")
            .map(|s| humantime::parse_duration(s).map_err(|e| format!("since: {e}")))
            .transpose()?,
    })
}

/// Channel `name` of the pipeline the query names (or the only one).
fn channel(
    s: &AdminState,
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Arc<dyn Channel>, (StatusCode, String)> {
    let all = s.all();
    let pipelines: Vec<_> = all
        .iter()
        .filter(|p| q.get("pipeline").is_none_or(|n| *n == p.name))
        .collect();
    let [p] = pipelines.as_slice() else {
        return Err((
            StatusCode::BAD_REQUEST,
            "name the pipeline: `pipeline=`".into(),
        ));
    };
    p.channels()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c)
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("pipeline {} has no channel `{name}`", p.name),
            )
        })
}

pub(super) async fn census(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = q.get("channel") else {
        return error(StatusCode::BAD_REQUEST, "`channel=` is required".into());
    };
    let dlq = match channel(&s, &q, name) {
        Ok(c) => c,
        Err((status, e)) => return error(status, e),
    };
    let select = match selection(&q) {
        Ok(sel) => sel,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match dead_letters::census(dlq.as_ref(), &select).await {
        Ok(counts) => {
            let rows: Vec<serde_json::Value> = counts
                .into_iter()
                .map(|((component, stage, class, reason), events)| {
                    serde_json::json!({
                        "component": component, "stage": stage, "class": class,
                        "reason": reason, "events": events,
                    })
                })
                .collect();
            Json(rows).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub(super) async fn replay(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(from), Some(to)) = (q.get("channel"), q.get("to")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "`channel=` (the DLQ) and `to=` (the target channel) are required".into(),
        );
    };
    if from == to {
        return error(StatusCode::BAD_REQUEST, "`to` is the DLQ itself".into());
    }
    let (dlq, target) = match (channel(&s, &q, from), channel(&s, &q, to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err((status, e)), _) | (_, Err((status, e))) => return error(status, e),
    };
    let select = match selection(&q) {
        Ok(sel) => sel,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("limit: {e}")),
    };
    let keep = q.get("keep_headers").is_some_and(|v| v == "true");
    match dead_letters::replay(dlq.as_ref(), target.as_ref(), &select, limit, keep).await {
        Ok((moved, kept)) => {
            tracing::info!(from = %from, to = %to, moved, kept, "dead letters replayed");
            Json(serde_json::json!({ "replayed": moved, "kept": kept })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
