//! The `sluice` source: the receiving end of the hop, a gRPC server (tonic, HTTP/2, optional
//! TLS and mutual TLS).
//!
//! A request is answered only once its events are committed to every required channel,
//! like the http source. Requests are decoded concurrently; one task (the committer) then
//! puts them in arrival order, consulting and updating the de-duplication [`Window`] in the
//! same commit as the events, so a retry of an already stored batch is answered as a
//! duplicate and not stored again. A full channel answers RESOURCE_EXHAUSTED with a
//! `retry-after-ms`; a batch that cannot be decoded, or that would decode to more than
//! `max_decoded_batch_bytes`, INVALID_ARGUMENT (the sender dead-letters it). The standard
//! gRPC health service reports SERVING while the source runs.

use std::{collections::HashMap, path::Path, time::Duration};

use async_trait::async_trait;
use subtle::ConstantTimeEq;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    time::Instant,
};
use tonic::{
    Request, Response, Status,
    metadata::MetadataValue,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming},
};

use sluice_core::{
    channel::ChannelError,
    event::Event,
    metrics::{OriginFamily, OriginMetrics, SourceMetrics},
    source::{ChannelProcessor, ProcessError, Source, SourceContext, SourceError},
};

use super::{
    config::HopSourceConfig,
    proto::{
        SendReply, SendRequest,
        hop_server::{Hop, HopServer},
    },
    window::{Fresh, Window},
    wire,
};

/// HTTP/2 flow-control windows: a batch of a few hundred kB arrives without waiting for
/// window updates.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Longest origin accepted (it names a metric label and a stored window record).
const MAX_ORIGIN_LEN: usize = 512;

pub struct HopSource {
    cfg: HopSourceConfig,
    token: Option<String>,
    tls: Option<ServerTlsConfig>,
    origins: OriginFamily,
}

impl HopSource {
    /// Reads the token and the TLS files now, so that a missing one is a configuration error
    /// at the component, not a failure at the first request.
    pub fn new(
        cfg: &HopSourceConfig,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        origins: OriginFamily,
    ) -> Result<Self, String> {
        let token = cfg
            .token_env
            .as_deref()
            .map(|name| env(name).ok_or_else(|| format!("token_env: ${name} is not set")))
            .transpose()?;
        let tls = cfg
            .tls
            .as_ref()
            .map(|t| {
                let read = |field: &str, p: &Path| {
                    let p = base_dir.join(p);
                    std::fs::read(&p).map_err(|e| format!("tls.{field} {}: {e}", p.display()))
                };
                let mut c = ServerTlsConfig::new()
                    .identity(Identity::from_pem(read("cert", &t.cert)?, read("key", &t.key)?));
                if let Some(ca) = &t.client_ca {
                    c = c.client_ca_root(Certificate::from_pem(read("client_ca", ca)?));
                }
                // Parsed here, so a bad certificate or key is reported now.
                Server::builder()
                    .tls_config(c.clone())
                    .map_err(|e| format!("tls: {e}"))?;
                Ok::<_, String>(c)
            })
            .transpose()?;
        Ok(HopSource {
            cfg: cfg.clone(),
            token,
            tls,
            origins,
        })
    }
}

#[async_trait]
impl Source for HopSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let HopSource {
            cfg,
            token,
            tls,
            origins,
        } = *self;
        let mut window = Window::new(window_prefix(&cx.name), cfg.max_origins);
        window.load(cx.out.marks(&window_prefix(&cx.name))?);
        let listener = TcpListener::bind(cfg.listen.0).await?;
        tracing::info!(
            source = %cx.name,
            addr = %listener.local_addr()?,
            tls = tls.is_some(),
            mutual_tls = cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            origins = window.origins(),
            "sluice source listening"
        );
        let metrics = cx.out.metrics().clone();
        let (tx, rx) = mpsc::channel(64);
        let committer = tokio::spawn(commit(cx.out, window, rx, origins));
        let receiver = Receiver {
            commit: tx,
            token: token.map(|t| format!("Bearer {t}")),
            limit: cfg.max_decoded_batch_bytes.0,
            full_wait: cfg.full_wait.0,
            retry_after: MetadataValue::from(cfg.retry_after.0.as_millis() as u64),
            metrics,
        };
        let limit = usize::try_from(cfg.max_decoded_batch_bytes.0)
            .unwrap_or(usize::MAX)
            .saturating_add(64 << 10);
        let hop = HopServer::new(receiver)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(4 << 10);
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<HopServer<Receiver>>().await;

        let mut server = Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_keepalive_interval(Some(Duration::from_secs(30)));
        if let Some(tls) = tls {
            server = server
                .tls_config(tls)
                .map_err(|e| std::io::Error::other(format!("tls: {e}")))?;
        }
        let shutdown = cx.shutdown.clone();
        let served = server
            .add_service(health_service)
            .add_service(hop)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move { shutdown.cancelled().await },
            )
            .await;
        // Requests in flight were answered; the committer ends once every handle is gone.
        health.set_not_serving::<HopServer<Receiver>>().await;
        let _ = committer.await;
        served.map_err(|e| SourceError::Io(std::io::Error::other(e)))
    }
}

fn window_prefix(source: &str) -> String {
    format!("hop/{source}/")
}

/// One decoded request on its way to the committer.
struct Submit {
    origin: String,
    position: Option<u64>,
    events: Vec<Event>,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

enum Outcome {
    Stored { stored: u32, duplicates: u32 },
    Full,
    TooLarge(String),
    Unavailable(String),
}

struct Receiver {
    commit: mpsc::Sender<Submit>,
    /// `Bearer <token>`, compared in constant time.
    token: Option<String>,
    limit: u64,
    full_wait: Duration,
    retry_after: MetadataValue<tonic::metadata::Ascii>,
    metrics: SourceMetrics,
}

impl Receiver {
    fn refuse(&self, reason: &'static str, status: Status) -> Status {
        self.metrics.rejected(reason);
        tracing::debug!(source = %self.metrics.component, reason, error = %status.message(), "batch refused");
        status
    }

    fn authorized<T>(&self, req: &Request<T>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let given = req
            .metadata()
            .get("authorization")
            .map_or(&b""[..], |v| v.as_bytes());
        given.ct_eq(expected.as_bytes()).into()
    }
}

#[tonic::async_trait]
impl Hop for Receiver {
    async fn send(&self, req: Request<SendRequest>) -> Result<Response<SendReply>, Status> {
        if !self.authorized(&req) {
            return Err(self.refuse(
                "unauthorized",
                Status::unauthenticated("missing or wrong bearer token"),
            ));
        }
        let req = req.into_inner();
        if req.origin.len() > MAX_ORIGIN_LEN {
            return Err(self.refuse(
                "malformed",
                Status::invalid_argument(format!("origin longer than {MAX_ORIGIN_LEN} bytes")),
            ));
        }
        let events = wire::unpack(&req, self.limit).map_err(|e| {
            let reason = match e {
                wire::WireError::TooLarge { .. } => "too_large",
                _ => "malformed",
            };
            self.refuse(reason, Status::invalid_argument(e.to_string()))
        })?;
        if events.is_empty() {
            return Ok(Response::new(SendReply::default()));
        }
        let (reply, answer) = oneshot::channel();
        let stopping = || {
            self.refuse(
                "unavailable",
                Status::unavailable("the agent is stopping; retry later"),
            )
        };
        self.commit
            .send(Submit {
                origin: req.origin,
                position: req.position,
                events,
                deadline: Instant::now() + self.full_wait,
                reply,
            })
            .await
            .map_err(|_| stopping())?;
        match answer.await.map_err(|_| stopping())? {
            Outcome::Stored { stored, duplicates } => {
                Ok(Response::new(SendReply { stored, duplicates }))
            }
            Outcome::Full => {
                let mut s = Status::resource_exhausted("channel full; retry later");
                s.metadata_mut()
                    .insert("retry-after-ms", self.retry_after.clone());
                Err(self.refuse("channel_full", s))
            }
            Outcome::TooLarge(m) => Err(self.refuse("too_large", Status::invalid_argument(m))),
            Outcome::Unavailable(m) => Err(self.refuse("unavailable", Status::unavailable(m))),
        }
    }
}

impl Outcome {
    fn of(r: Result<(), ProcessError>, stored: usize, duplicates: usize) -> Outcome {
        match r {
            Ok(()) => Outcome::Stored {
                stored: stored as u32,
                duplicates: duplicates as u32,
            },
            Err(ProcessError::Channel {
                error: ChannelError::Full,
                ..
            }) => Outcome::Full,
            Err(
                e @ ProcessError::Channel {
                    error: ChannelError::BatchTooLarge { .. },
                    ..
                },
            ) => Outcome::TooLarge(e.to_string()),
            Err(e) => Outcome::Unavailable(e.to_string()),
        }
    }
}

/// Commits submissions in arrival order until every handler is gone.
async fn commit(
    mut out: ChannelProcessor,
    mut window: Window,
    mut rx: mpsc::Receiver<Submit>,
    family: OriginFamily,
) {
    let mut origins: HashMap<String, OriginMetrics> = HashMap::new();
    let mut other: Option<OriginMetrics> = None;
    while let Some(s) = rx.recv().await {
        // A sender that gave up gets no answer: it will send the batch again.
        if s.reply.is_closed() {
            continue;
        }
        let n = s.events.len();
        // Metric handles per origin, as many as the window remembers (beyond that, senders
        // are counted under `other` so that labels stay bounded).
        let m = match origins.get(&s.origin) {
            Some(m) => m.clone(),
            None if origins.len() < window.max_origins() => {
                let m = family.get(&s.origin);
                origins.insert(s.origin.clone(), m.clone());
                m
            }
            None => other.get_or_insert_with(|| family.get("other")).clone(),
        };
        let (events, update) = match s.position {
            None => (s.events, None),
            Some(p) => match window.fresh(&s.origin, p, n) {
                Fresh::None => {
                    m.duplicates.inc_by(n as u64);
                    let _ = s.reply.send(Outcome::Stored {
                        stored: 0,
                        duplicates: n as u32,
                    });
                    continue;
                }
                Fresh::All => (s.events, Some(window.update(&s.origin, p, n))),
                Fresh::Some(ranges) => {
                    let mut all = s.events;
                    let mut kept = Vec::with_capacity(n);
                    for r in ranges.into_iter().rev() {
                        kept.splice(0..0, all.drain(r));
                    }
                    (kept, Some(window.update(&s.origin, p, n)))
                }
            },
        };
        let stored = events.len();
        let marks = update.as_ref().map_or(&[][..], |u| &u.marks[..]);
        let result = out.process_marked(events, Some(s.deadline), marks).await;
        if result.is_ok() {
            if let Some(u) = update {
                window.record(u);
            }
            m.events.inc_by(stored as u64);
            m.duplicates.inc_by((n - stored) as u64);
        }
        let _ = s.reply.send(Outcome::of(result, stored, n - stored));
    }
}
