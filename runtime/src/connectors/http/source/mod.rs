//! The `http` source: a webhook receiver (hyper, HTTP/1.1, optional TLS).
//!
//! Each request's body becomes events through a codec, and the request is answered 2xx only
//! once those events are committed to every required channel. A request passes, in order:
//!
//! 1. path and method (404, 405) and the cap on concurrent requests (busy);
//! 2. header authentication — bearer, basic — (401), before any of the body is read;
//! 3. the declared `Content-Length` against `max_body` (413), then reading the body against
//!    the same limit and `read_timeout` (413, 408);
//! 4. signature authentication — hmac, timestamped — over the raw body as received (401);
//! 5. decompression (gzip, zstd) capped at `max_decoded_body` (413, 415);
//! 6. the codec (400), request headers / query / path copied into event headers;
//! 7. the group commit ([`commit`]): 200, or `busy_status` with `Retry-After` when a
//!    required channel stays full for `full_wait` — in which case nothing was committed and
//!    the client's retry is not a duplicate.
//!
//! Refused requests are counted in `sluice_source_requests_rejected_total{reason}`. On
//! shutdown the listener closes, requests in flight finish, and idle connections are closed.

pub mod auth;
pub mod body;
mod commit;
pub mod decode;

use std::{
    convert::Infallible,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
    request::Parts,
};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{Semaphore, mpsc, oneshot},
    task::JoinSet,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;

use self::{
    auth::{Auth, AuthError},
    body::{BodyError, Encoding},
    commit::{Outcome, Submit},
    decode::Decoder,
};
use sluice_core::{
    event::{Event, HeaderText},
    metrics::SourceMetrics,
    source::{Source, SourceContext, SourceError},
};

use super::config::HttpSourceConfig;

/// How long, and how much, of a refused request's body is read and thrown away so that the
/// client sees the answer (see [`body::discard`]).
const DRAIN_TIME: Duration = Duration::from_secs(5);

pub struct HttpSource {
    cfg: HttpSourceConfig,
    batch_size: usize,
    decoder: Decoder,
    auth: Option<Auth>,
    tls: Option<TlsAcceptor>,
}

impl HttpSource {
    /// Resolves secrets (through `env`) and loads TLS files (relative to `base_dir`), so that
    /// both fail at build time with the component's position.
    pub fn new(
        cfg: &HttpSourceConfig,
        batch_size: usize,
        decoder: Decoder,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let auth = cfg
            .auth
            .as_ref()
            .map(|a| Auth::from_config(a, env))
            .transpose()?;
        let tls = cfg
            .tls
            .as_ref()
            .map(|t| crate::tls::http_acceptor(&base_dir.join(&t.cert), &base_dir.join(&t.key)))
            .transpose()?;
        Ok(HttpSource {
            cfg: cfg.clone(),
            batch_size,
            decoder,
            auth,
            tls,
        })
    }
}

/// What every request handler of one source shares.
struct Shared {
    paths: Vec<String>,
    methods: Vec<Method>,
    allow: HeaderValue,
    /// Request header → event header (its lower-case name).
    copy_headers: Vec<(HeaderName, HeaderText)>,
    query: Vec<HeaderText>,
    path_header: Option<HeaderText>,
    max_body: usize,
    max_decoded: usize,
    read_timeout: Duration,
    full_wait: Duration,
    busy_status: StatusCode,
    retry_after: HeaderValue,
    requests: Semaphore,
    /// Decompressions at once (CPU-bound; each may hold a window plus `max_decoded`).
    decompressions: Semaphore,
    auth: Option<Auth>,
    decoder: Decoder,
    commit: mpsc::Sender<Submit>,
    metrics: SourceMetrics,
}

#[async_trait]
impl Source for HttpSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let HttpSource {
            cfg,
            batch_size,
            decoder,
            auth,
            tls,
        } = *self;
        let listener = TcpListener::bind(cfg.listen.0).await?;
        tracing::info!(
            source = %cx.name,
            addr = %listener.local_addr()?,
            tls = tls.is_some(),
            "http source listening"
        );

        let (tx, rx) = mpsc::channel(cfg.max_concurrent_requests.max(1));
        let metrics = cx.out.metrics().clone();
        let committer = tokio::spawn(commit::run(cx.out, rx, batch_size.max(1)));
        let shared = Arc::new(shared(&cfg, decoder, auth, tx, metrics));

        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(shared.read_timeout)
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            let permit = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => break,
                p = Arc::clone(&connections).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let tcp = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((tcp, _peer)) => tcp,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(source = %cx.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            while tasks.try_join_next().is_some() {}
            let _ = tcp.set_nodelay(true);
            let (s, b, tls, watcher) = (
                Arc::clone(&shared),
                builder.clone(),
                tls.clone(),
                graceful.watcher(),
            );
            tasks.spawn(async move {
                let _permit = permit;
                match tls {
                    None => serve_connection(TokioIo::new(tcp), s, b, watcher).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(s.read_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                serve_connection(TokioIo::new(stream), s, b, watcher).await
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(listener);

        // Requests in flight finish (each is bounded by read_timeout and full_wait); idle
        // keep-alive connections close at once.
        let grace = shared.read_timeout + shared.full_wait + Duration::from_secs(1);
        drop(shared);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(source = %cx.name, "connections still open after {grace:?}; closing them");
            tasks.abort_all();
        }
        while tasks.join_next().await.is_some() {}
        // Every handler is gone, so the committer sees its channel close and finishes.
        let _ = committer.await;
        Ok(())
    }
}

fn shared(
    cfg: &HttpSourceConfig,
    decoder: Decoder,
    auth: Option<Auth>,
    commit: mpsc::Sender<Submit>,
    metrics: SourceMetrics,
) -> Shared {
    let methods: Vec<Method> = cfg
        .methods
        .iter()
        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
        .collect();
    let allow = HeaderValue::from_str(&cfg.methods.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static("POST"));
    let retry_secs = cfg.retry_after.0.as_secs_f64().ceil().max(1.0) as u64;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Shared {
        paths: cfg.paths.clone(),
        methods,
        allow,
        copy_headers: cfg
            .headers
            .iter()
            .filter_map(|h| {
                Some((
                    HeaderName::from_bytes(h.as_bytes()).ok()?,
                    HeaderText::new(h.to_ascii_lowercase()),
                ))
            })
            .collect(),
        query: cfg.query.iter().map(HeaderText::new).collect(),
        path_header: cfg.path_header.as_deref().map(HeaderText::new),
        max_body: usize::try_from(cfg.max_body.0).unwrap_or(usize::MAX),
        max_decoded: usize::try_from(cfg.max_decoded_body.0).unwrap_or(usize::MAX),
        read_timeout: cfg.read_timeout.0,
        full_wait: cfg.full_wait.0,
        busy_status: StatusCode::from_u16(cfg.busy_status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        retry_after: HeaderValue::from(retry_secs),
        requests: Semaphore::new(cfg.max_concurrent_requests.max(1)),
        decompressions: Semaphore::new(cores),
        auth,
        decoder,
        commit,
        metrics,
    }
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    s: Arc<Shared>,
    builder: http1::Builder,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(Arc::clone(&s), req));
    let conn = builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// A request answered with something other than 2xx.
struct Refusal {
    status: StatusCode,
    /// A fixed word: the `reason` label of `sluice_source_requests_rejected_total`.
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            message: message.into(),
        }
    }

    fn unauthorized(e: AuthError) -> Self {
        Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", e.message())
    }

    fn too_large(limit: usize) -> Self {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body exceeds max_body ({limit} bytes)"),
        )
    }

    fn busy(s: &Shared, reason: &'static str, message: &str) -> Self {
        Refusal::new(s.busy_status, reason, message)
    }

    fn stopping() -> Self {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the agent is stopping; retry later",
        )
    }
}

async fn handle(
    s: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match serve(&s, req).await {
        Ok(events) => {
            let mut r = Response::new(Full::new(Bytes::from(format!(
                "{{\"accepted\":{events}}}\n"
            ))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(refusal) => refuse(&s, refusal),
    })
}

fn refuse(s: &Shared, r: Refusal) -> Response<Full<Bytes>> {
    s.metrics.rejected(r.reason);
    tracing::debug!(source = %s.metrics.component, status = %r.status, reason = r.reason, "request refused");
    let mut resp = Response::new(Full::new(Bytes::from(r.message + "\n")));
    *resp.status_mut() = r.status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match r.status.as_u16() {
        429 | 503 => {
            h.insert(header::RETRY_AFTER, s.retry_after.clone());
        }
        401 => {
            if let Some(c) = s.auth.as_ref().and_then(Auth::challenge) {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
            }
        }
        405 => {
            h.insert(header::ALLOW, s.allow.clone());
        }
        _ => {}
    }
    resp
}

/// Reads what is left of a refused request's body in the background (unless the client
/// waits for `100 Continue`, in which case it has sent nothing).
fn drain(s: &Shared, headers: &HeaderMap, body: Incoming) {
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        body::discard(body, s.max_body.saturating_mul(4).max(1 << 20), DRAIN_TIME);
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Handles one request; Ok is the number of events committed.
async fn serve(s: &Shared, req: Request<Incoming>) -> Result<usize, Refusal> {
    let (parts, body) = req.into_parts();
    if !s.paths.iter().any(|p| p == parts.uri.path()) {
        drain(s, &parts.headers, body);
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path",
        ));
    }
    if !s.methods.contains(&parts.method) {
        drain(s, &parts.headers, body);
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        ));
    }
    let Ok(_permit) = s.requests.try_acquire() else {
        drain(s, &parts.headers, body);
        return Err(Refusal::busy(
            s,
            "overloaded",
            "too many requests in progress; retry later",
        ));
    };
    if let Some(auth) = &s.auth {
        if let Err(e) = auth.check_headers(&parts.headers) {
            drain(s, &parts.headers, body);
            return Err(Refusal::unauthorized(e));
        }
    }
    let declared = content_length(&parts.headers);
    if declared.is_some_and(|n| n > s.max_body as u64) {
        drain(s, &parts.headers, body);
        return Err(Refusal::too_large(s.max_body));
    }
    let raw = match tokio::time::timeout(
        s.read_timeout,
        body::read_limited(body, s.max_body, declared),
    )
    .await
    {
        Ok(Ok(raw)) => raw,
        Ok(Err((BodyError::TooLarge, rest))) => {
            drain(s, &parts.headers, rest);
            return Err(Refusal::too_large(s.max_body));
        }
        Ok(Err((BodyError::Read(e) | BodyError::Corrupt(e), _))) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "read_error",
                format!("cannot read the request body: {e}"),
            ));
        }
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "request body not received within read_timeout",
            ));
        }
    };
    if let Some(auth) = &s.auth {
        auth.check_body(&parts.headers, &raw, unix_now())
            .map_err(Refusal::unauthorized)?;
    }
    let encoding = body::encoding(&parts.headers).map_err(|e| {
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("unsupported Content-Encoding {e:?} (supported: gzip, zstd)"),
        )
    })?;
    let decoded = match encoding {
        Encoding::Identity => raw,
        enc => decompress(s, enc, raw).await?,
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let mut events = s
        .decoder
        .decode(decoded, content_type)
        .await
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "malformed", e))?;
    if events.is_empty() {
        return Ok(0);
    }
    add_headers(s, &parts, &mut events);
    let n = events.len();

    let (reply, answer) = oneshot::channel();
    let submit = Submit {
        events,
        deadline: Instant::now() + s.full_wait,
        reply,
    };
    s.commit
        .send(submit)
        .await
        .map_err(|_| Refusal::stopping())?;
    match answer.await {
        Ok(Outcome::Committed) => Ok(n),
        Ok(Outcome::Full) => Err(Refusal::busy(
            s,
            "channel_full",
            "channel full; retry later",
        )),
        Ok(Outcome::TooLarge(m)) => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            String::from_utf8_lossy(&m),
        )),
        Ok(Outcome::Unavailable(m)) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            String::from_utf8_lossy(&m),
        )),
        Err(_) => Err(Refusal::stopping()),
    }
}

async fn decompress(s: &Shared, encoding: Encoding, raw: Bytes) -> Result<Bytes, Refusal> {
    let _permit = s
        .decompressions
        .acquire()
        .await
        .map_err(|_| Refusal::stopping())?;
    let cap = s.max_decoded;
    let result = tokio::task::spawn_blocking(move || body::decompress(encoding, &raw, cap)).await;
    match result {
        Ok(Ok(v)) => Ok(Bytes::from(v)),
        Ok(Err(BodyError::TooLarge)) => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("decompressed body exceeds max_decoded_body ({cap} bytes)"),
        )),
        Ok(Err(BodyError::Corrupt(e) | BodyError::Read(e))) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("cannot decompress the {encoding:?} body: {e}"),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "decompression failed",
        )),
    }
}

/// Copies the configured request headers, query parameters and path into every event; the
/// events of one request share the text.
fn add_headers(s: &Shared, parts: &Parts, events: &mut [Event]) {
    let mut extra: Vec<(HeaderText, HeaderText)> = Vec::new();
    for (name, key) in &s.copy_headers {
        if let Some(v) = parts.headers.get(name) {
            extra.push((
                key.clone(),
                HeaderText::new(String::from_utf8_lossy(v.as_bytes())),
            ));
        }
    }
    if let (false, Some(q)) = (s.query.is_empty(), parts.uri.query()) {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if let Some(name) = s.query.iter().find(|n| n.as_str() == k.as_ref()) {
                extra.push((name.clone(), HeaderText::new(v)));
            }
        }
    }
    if let Some(h) = &s.path_header {
        extra.push((h.clone(), HeaderText::new(parts.uri.path())));
    }
    if extra.is_empty() {
        return;
    }
    for e in events {
        for (k, v) in &extra {
            e.headers.insert(k.clone(), v.clone());
        }
    }
}
