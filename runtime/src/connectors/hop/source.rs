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
const MAX_FRAME: u32 = 1 << 20;

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
        let token = super::token(env, cfg.token_env.as_deref())?;
        let tls = cfg
            .tls
            .as_ref()
            .map(|t| {
                let read = |field: &str, p: &Path| super::read_pem(base_dir, field, p);
                let mut c = ServerTlsConfig::new().identity(Identity::from_pem(
                    read("cert", &t.cert)?,
                    read("key", &t.key)?,
                ));
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
            // Senders may send a batch in frames of up to 1 MiB instead of 16 kB ones.
            .max_frame_size(MAX_FRAME)
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
    fn failed(e: ProcessError) -> Outcome {
        match e {
            ProcessError::Channel {
                error: ChannelError::Full,
                ..
            } => Outcome::Full,
            e @ ProcessError::Channel {
                error: ChannelError::BatchTooLarge { .. },
                ..
            } => Outcome::TooLarge(e.to_string()),
            e => Outcome::Unavailable(e.to_string()),
        }
    }
}

/// Commits submissions in arrival order until every handler is gone.
async fn commit(
    out: ChannelProcessor,
    window: Window,
    mut rx: mpsc::Receiver<Submit>,
    family: OriginFamily,
) {
    let mut c = Committer {
        out,
        window,
        family,
        origins: HashMap::new(),
        other: None,
        max_chunk: usize::MAX,
    };
    while let Some(s) = rx.recv().await {
        // A sender that gave up gets no answer: it will send the batch again.
        if s.reply.is_closed() {
            continue;
        }
        let outcome = c.submit(s.origin, s.position, s.events, s.deadline).await;
        let _ = s.reply.send(outcome);
    }
}

/// The committer's state: the source's processor, the de-duplication window, and the
/// largest put a channel has accepted.
struct Committer {
    out: ChannelProcessor,
    window: Window,
    family: OriginFamily,
    origins: HashMap<String, OriginMetrics>,
    other: Option<OriginMetrics>,
    /// Events per put. A batch larger than a required channel can ever hold is refused by
    /// the channel (and its events are gone with the put); the sender is told to retry, and
    /// from then on batches are put in parts of at most this size, down to one event (which,
    /// refused, is refused for good).
    max_chunk: usize,
}

impl Committer {
    /// Metric handles per origin, as many as the window remembers (beyond that, senders are
    /// counted under `other` so that labels stay bounded).
    fn metrics(&mut self, origin: &str) -> OriginMetrics {
        if let Some(m) = self.origins.get(origin) {
            return m.clone();
        }
        if self.origins.len() < self.window.max_origins() {
            let m = self.family.get(origin);
            self.origins.insert(origin.to_owned(), m.clone());
            return m;
        }
        self.other
            .get_or_insert_with(|| self.family.get("other"))
            .clone()
    }

    async fn submit(
        &mut self,
        origin: String,
        position: Option<u64>,
        events: Vec<Event>,
        deadline: Instant,
    ) -> Outcome {
        let n = events.len();
        let m = self.metrics(&origin);
        // The runs of consecutive positions not stored yet.
        let runs: Vec<(Option<u64>, Vec<Event>)> = match position {
            None => vec![(None, events)],
            Some(p) => match self.window.fresh(&origin, p, n) {
                Fresh::All => vec![(Some(p), events)],
                Fresh::None => Vec::new(),
                Fresh::Some(ranges) => {
                    let mut all = events;
                    let mut runs = Vec::with_capacity(ranges.len());
                    for r in ranges.into_iter().rev() {
                        let at = p + r.start as u64;
                        runs.push((Some(at), all.drain(r).collect()));
                    }
                    runs.reverse();
                    runs
                }
            },
        };
        let mut stored = 0;
        for (start, mut events) in runs {
            let mut offset = 0u64;
            while !events.is_empty() {
                let rest = if events.len() > self.max_chunk {
                    events.split_off(self.max_chunk)
                } else {
                    Vec::new()
                };
                let part = std::mem::replace(&mut events, rest);
                let len = part.len();
                if let Err(outcome) = self
                    .put(&origin, start.map(|p| p + offset), part, deadline)
                    .await
                {
                    return outcome;
                }
                stored += len;
                offset += len as u64;
                m.events.inc_by(len as u64);
            }
        }
        m.duplicates.inc_by((n - stored) as u64);
        Outcome::Stored {
            stored: stored as u32,
            duplicates: (n - stored) as u32,
        }
    }

    /// Puts one part, recording its positions in the window in the same commit.
    async fn put(
        &mut self,
        origin: &str,
        at: Option<u64>,
        part: Vec<Event>,
        deadline: Instant,
    ) -> Result<(), Outcome> {
        let len = part.len();
        let update = at.map(|p| self.window.update(origin, p, len));
        let marks = update.as_ref().map_or(&[][..], |u| &u.marks[..]);
        match self.out.process_marked(part, Some(deadline), marks).await {
            Ok(()) => {
                if let Some(u) = update {
                    self.window.record(u);
                }
                Ok(())
            }
            Err(ProcessError::Channel {
                error: ChannelError::BatchTooLarge { .. },
                ..
            }) if len > 1 => {
                self.max_chunk = len / 2;
                tracing::info!(source = %self.out.metrics().component, events = len, "a batch was larger than a channel holds; putting batches in parts of {} from now on", len / 2);
                Err(Outcome::Unavailable(format!(
                    "a batch of {len} events is more than a channel holds; retry: it will be put in parts of {}",
                    len / 2
                )))
            }
            Err(e) => Err(Outcome::failed(e)),
        }
    }
}
