//! `GET /tap`: live events at a point of a running pipeline, as NDJSON, for `sluice tap` (or
//! `curl -N`). Without `point` it lists the points. The stream ends after `limit` samples or
//! when the client goes away; a client that reads slowly loses samples (counted in each
//! line's `dropped`), never slows the pipeline.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    body::Body,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use bytes::Bytes;
use sluice_core::tap::{Sample, TapFilter};

use super::AdminState;

/// Samples a client may have waiting before new ones are dropped.
const DEFAULT_QUEUE: usize = 1024;

#[derive(serde::Deserialize)]
pub(super) struct TapQuery {
    /// `<component>[:<point>]`; a component alone means its main point (a source's output, a
    /// channel's puts, a sink's deliveries).
    point: Option<String>,
    limit: Option<u64>,
    /// At most this many samples per second.
    rate: Option<u32>,
    /// `name=value`: only events with this header value.
    header: Option<String>,
    /// Queue length for this client (default 1024).
    queue: Option<usize>,
}

pub(super) async fn tap(State(s): State<Arc<AdminState>>, Query(q): Query<TapQuery>) -> Response {
    let taps = s.metrics.taps();
    let Some(wanted) = q.point else {
        return Json(taps.names()).into_response();
    };
    let point = [
        wanted.clone(),
        format!("{wanted}:output"),
        format!("{wanted}:put"),
        format!("{wanted}:delivered"),
    ]
    .iter()
    .find_map(|n| taps.find(n));
    let Some(point) = point else {
        let known = taps.names().join(", ");
        return (
            StatusCode::NOT_FOUND,
            format!("no tap point `{wanted}`; the points are: {known}\n"),
        )
            .into_response();
    };
    let header = match q.header.as_deref().map(|h| h.split_once('=')) {
        None => None,
        Some(Some((k, v))) => Some((k.to_owned(), v.to_owned())),
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                "header must be `name=value`\n".to_owned(),
            )
                .into_response();
        }
    };
    let t = point.subscribe(
        q.queue.unwrap_or(DEFAULT_QUEUE),
        TapFilter {
            header,
            rate: q.rate,
        },
    );
    let limit = q.limit.unwrap_or(u64::MAX);
    let stop = s.stop.clone();
    let lines = futures_util::stream::unfold((t, 0u64), move |(mut t, sent)| {
        let stop = stop.clone();
        async move {
            if sent >= limit {
                return None;
            }
            let sample = tokio::select! {
                s = t.recv() => s?,
                _ = stop.cancelled() => return None,
            };
            let line = ndjson(&sample, t.dropped());
            Some((Ok::<_, std::convert::Infallible>(line), (t, sent + 1)))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// One sample as a JSON line: the body as text when it is UTF-8, else as `body_base64`.
fn ndjson(s: &Sample, dropped: u64) -> Bytes {
    let headers: BTreeMap<&str, &str> = s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut v = serde_json::json!({
        "point": &*s.point,
        "time_ms": s.at_ms,
        "headers": headers,
    });
    match std::str::from_utf8(&s.body) {
        Ok(text) => v["body"] = text.into(),
        Err(_) => {
            v["body_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&s.body)
                .into()
        }
    }
    if dropped > 0 {
        v["dropped"] = dropped.into();
    }
    let mut line = serde_json::to_vec(&v).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}
