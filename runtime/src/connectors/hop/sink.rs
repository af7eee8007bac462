//! The `sluice` sink: the sending end of the hop.
//!
//! Each configured `host:port` is resolved (again every `resolve_interval`, so every pod
//! behind a headless Service is used) and every address is an endpoint with its own gRPC
//! connection and backoff. Requests go to the next healthy endpoint in turn
//! (`load_balance`) or to the first healthy one in the listed order (`failover`); an endpoint
//! that fails or is full is skipped for `backoff.initial`, doubled per consecutive failure up
//! to `backoff.max`. The take stays open for the whole call: the runner commits it only when
//! an endpoint acknowledged every event, and rolls it back otherwise.
//!
//! A request whose outcome is unknown (no answer: a timeout, a reset connection) may have
//! been stored. It is sent again to the same endpoint for up to `sticky_retry`, which
//! recognises it by origin and positions and does not store it twice; only then does it go
//! elsewhere (where it could be stored twice).

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use sluice_core::{
    event::Event,
    metrics::{EndpointFamily, EndpointMetrics},
    sink::{Batch, DeliveryError, Sink},
};

use super::{
    config::{HopSinkConfig, Strategy, split_host_port},
    proto::{SendRequest, hop_client::HopClient},
    wire,
};

/// HTTP/2 flow-control windows (see the source).
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// One resolved address of a configured endpoint.
struct Backend {
    /// Index of the configured endpoint (failover order).
    rank: usize,
    addr: SocketAddr,
    label: String,
    client: HopClient<Channel>,
    failures: u32,
    until: Option<Instant>,
    metrics: EndpointMetrics,
}

impl Backend {
    fn ready(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| u <= now)
    }
}

/// A request that got no answer: which batch, sent where, since when.
struct Unknown {
    batch: (Option<u64>, usize),
    addr: SocketAddr,
    since: Instant,
}

/// How one attempt on one endpoint ended, when it did not succeed.
enum Failure {
    /// Nothing was stored (refused, full, not reachable): another endpoint may take it now.
    Refused {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No answer: the batch may have been stored.
    Unknown(String),
    /// The receiver cannot ever take this batch.
    Permanent(String),
}

pub struct HopSink {
    name: String,
    cfg: HopSinkConfig,
    origin: String,
    token: Option<MetadataValue<Ascii>>,
    tls: Option<ClientTlsConfig>,
    backends: Vec<Backend>,
    resolved: Option<Instant>,
    next: usize,
    unknown: Option<Unknown>,
    family: EndpointFamily,
    buf: Vec<u8>,
}

impl HopSink {
    /// Reads the token and TLS files now, so that a missing one is a configuration error.
    pub fn new(
        name: &str,
        cfg: &HopSinkConfig,
        channel_id: Option<&str>,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        family: EndpointFamily,
    ) -> Result<Self, String> {
        let token = super::token(env, cfg.token_env.as_deref())?
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| "token_env: the token holds characters a header cannot carry")
            })
            .transpose()?;
        let tls = cfg
            .tls
            .as_ref()
            .map(|t| {
                let read = |field: &str, p: &Path| super::read_pem(base_dir, field, p);
                let mut c = ClientTlsConfig::new();
                if let Some(ca) = &t.ca {
                    c = c.ca_certificate(Certificate::from_pem(read("ca", ca)?));
                } else {
                    return Err(
                        "tls.ca: name the CA that signed the receivers' certificates".into(),
                    );
                }
                if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                    c = c.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
                }
                Ok::<_, String>(c)
            })
            .transpose()?;
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let who = cfg
            .origin
            .clone()
            .unwrap_or_else(|| format!("{host}/{name}"));
        // The channel's id keeps two senders with the same name apart; without one (a memory
        // channel) positions do not survive a restart, and neither need the origin.
        let origin = match channel_id {
            Some(id) => format!("{who}/{id}"),
            None => format!("{who}/{}", hex::encode(rand::random::<[u8; 8]>())),
        };
        Ok(HopSink {
            name: name.to_owned(),
            cfg: cfg.clone(),
            origin,
            token,
            tls,
            backends: Vec::new(),
            resolved: None,
            next: 0,
            unknown: None,
            family,
            buf: Vec::new(),
        })
    }

    /// Resolves the configured endpoints when due, keeping the connection and backoff of
    /// every address that is still there. A name that fails to resolve keeps its addresses.
    async fn resolve(&mut self) {
        // With no endpoint at all (names not resolvable yet: pods still starting), look
        // again every second rather than every `resolve_interval`.
        let every = if self.backends.is_empty() {
            Duration::from_secs(1).min(self.cfg.resolve_interval.0)
        } else {
            self.cfg.resolve_interval.0
        };
        if self.resolved.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.resolved = Some(Instant::now());
        let mut fresh: Vec<Backend> = Vec::new();
        for (rank, e) in self.cfg.endpoints.iter().enumerate() {
            let Some((host, port)) = split_host_port(e) else {
                continue;
            };
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
                Ok(a) => a.collect(),
                Err(err) => {
                    tracing::warn!(sink = %self.name, endpoint = %e, error = %err, "cannot resolve; keeping its last addresses");
                    self.backends
                        .iter()
                        .filter(|b| b.rank == rank)
                        .map(|b| b.addr)
                        .collect()
                }
            };
            for addr in addrs {
                if fresh.iter().any(|b| b.addr == addr) {
                    continue;
                }
                if let Some(i) = self.backends.iter().position(|b| b.addr == addr) {
                    let mut b = self.backends.swap_remove(i);
                    b.rank = rank;
                    fresh.push(b);
                    continue;
                }
                match self.connect(host, addr) {
                    Ok(client) => {
                        let label = if host.parse::<std::net::IpAddr>().is_ok() {
                            addr.to_string()
                        } else {
                            format!("{host}:{port}/{}", addr.ip())
                        };
                        tracing::info!(sink = %self.name, endpoint = %label, "endpoint added");
                        fresh.push(Backend {
                            rank,
                            addr,
                            metrics: self.family.get(&label),
                            label,
                            client,
                            failures: 0,
                            until: None,
                        });
                    }
                    Err(err) => {
                        tracing::error!(sink = %self.name, endpoint = %e, error = %err, "cannot set up the endpoint")
                    }
                }
            }
        }
        for gone in &self.backends {
            tracing::info!(sink = %self.name, endpoint = %gone.label, "endpoint removed (no longer resolved)");
        }
        self.backends = fresh;
    }

    fn connect(&self, host: &str, addr: SocketAddr) -> Result<HopClient<Channel>, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(self.cfg.connect_timeout.0)
            .timeout(self.cfg.timeout.0)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            let name = self
                .cfg
                .tls
                .as_ref()
                .and_then(|t| t.server_name.clone())
                .unwrap_or_else(|| host.to_owned());
            ep = ep
                .tls_config(tls.clone().domain_name(name))
                .map_err(|e| e.to_string())?;
        }
        Ok(HopClient::new(ep.connect_lazy()).max_encoding_message_size(usize::MAX))
    }

    /// Indices of the backends to try now, best first.
    fn candidates(&mut self, now: Instant, batch: (Option<u64>, usize)) -> Vec<usize> {
        if let Some(u) = &self.unknown {
            if u.batch == batch && u.since.elapsed() < self.cfg.sticky_retry.0 {
                if let Some(i) = self.backends.iter().position(|b| b.addr == u.addr) {
                    return vec![i];
                }
            }
            self.unknown = None;
        }
        let mut ready: Vec<usize> = (0..self.backends.len())
            .filter(|&i| self.backends[i].ready(now))
            .collect();
        match self.cfg.strategy {
            Strategy::Failover => ready.sort_by_key(|&i| self.backends[i].rank),
            Strategy::LoadBalance => {
                if !ready.is_empty() {
                    let k = self.next % ready.len();
                    ready.rotate_left(k);
                }
                self.next = self.next.wrapping_add(1);
            }
        }
        ready
    }

    fn failed(&mut self, i: usize, retry_after: Option<Duration>) {
        let b = &mut self.backends[i];
        b.failures = b.failures.saturating_add(1);
        let exp = self
            .cfg
            .backoff
            .initial
            .0
            .saturating_mul(1u32 << (b.failures - 1).min(16))
            .min(self.cfg.backoff.max.0);
        let wait = exp.max(retry_after.unwrap_or_default());
        b.until = Some(Instant::now() + wait);
        b.metrics.failures.inc();
        b.metrics.backoff.set(wait.as_secs_f64());
    }

    fn succeeded(&mut self, i: usize) {
        let b = &mut self.backends[i];
        b.failures = 0;
        b.until = None;
        b.metrics.backoff.set(0.0);
    }

    /// Sends the batch to backend `i`, in requests of at most `max_batch_bytes`.
    async fn send_to(&mut self, i: usize, batch: &Batch<'_>) -> Result<(), Failure> {
        let max = usize::try_from(self.cfg.max_batch_bytes.0).unwrap_or(usize::MAX);
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < batch.len() {
                let n = wire::encoded_len(std::slice::from_ref(&batch[end]));
                if end > start && bytes + n > max {
                    break;
                }
                bytes += n;
                end += 1;
            }
            let position = batch.position.map(|p| p + start as u64);
            self.send_one(i, &batch[start..end], position).await?;
            start = end;
        }
        Ok(())
    }

    async fn send_one(
        &mut self,
        i: usize,
        events: &[Event],
        position: Option<u64>,
    ) -> Result<(), Failure> {
        self.buf.clear();
        wire::encode_into(events, &mut self.buf);
        // Inline: compressing one batch takes about as long as encoding it.
        let packed = wire::pack(&mut self.buf, self.cfg.compression)
            .map_err(|e| Failure::Permanent(format!("cannot compress the batch: {e}")))?;
        let mut req = tonic::Request::new(SendRequest {
            origin: self.origin.clone(),
            position,
            count: events.len() as u32,
            compression: packed.compression as i32,
            decoded_len: packed.decoded_len,
            events: packed.bytes,
        });
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        let b = &mut self.backends[i];
        b.metrics.sent.inc_by(events.len() as u64);
        let started = Instant::now();
        let answer = b.client.send(req).await;
        b.metrics
            .round_trip
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                b.metrics.acked.inc_by(u64::from(r.stored));
                b.metrics.duplicates.inc_by(u64::from(r.duplicates));
                Ok(())
            }
            Err(s) => Err(classify(&s)),
        }
    }
}

/// What a failed call means for the batch.
fn classify(s: &Status) -> Failure {
    let reason = format!("{:?}: {}", s.code(), s.message());
    match s.code() {
        Code::ResourceExhausted => Failure::Refused {
            reason,
            retry_after: s
                .metadata()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_millis),
        },
        Code::InvalidArgument | Code::OutOfRange => Failure::Permanent(reason),
        Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented => Failure::Refused {
            reason,
            retry_after: None,
        },
        _ if connection_refused(s) => Failure::Refused {
            reason,
            retry_after: None,
        },
        _ => Failure::Unknown(reason),
    }
}

/// True when the call never reached the receiver (nothing listens there).
fn connection_refused(s: &Status) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(err) = e {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        e = err.source();
    }
    false
}

#[async_trait]
impl Sink for HopSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.resolve().await;
        let key = (batch.position, batch.len());
        let now = Instant::now();
        let candidates = self.candidates(now, key);
        let mut last = None;
        for i in candidates {
            match self.send_to(i, batch).await {
                Ok(()) => {
                    self.succeeded(i);
                    self.unknown = None;
                    return Ok(());
                }
                Err(Failure::Permanent(reason)) => {
                    return Err(DeliveryError::Permanent(format!(
                        "{} refused the batch: {reason}",
                        self.backends[i].label
                    )));
                }
                Err(Failure::Refused {
                    reason,
                    retry_after,
                }) => {
                    tracing::debug!(sink = %self.name, endpoint = %self.backends[i].label, %reason, "endpoint refused the batch; trying another");
                    self.failed(i, retry_after);
                    last = Some(reason);
                }
                Err(Failure::Unknown(reason)) => {
                    self.failed(i, None);
                    let addr = self.backends[i].addr;
                    let since = match &self.unknown {
                        Some(u) if u.batch == key && u.addr == addr => u.since,
                        _ => Instant::now(),
                    };
                    self.unknown = Some(Unknown {
                        batch: key,
                        addr,
                        since,
                    });
                    return Err(DeliveryError::retriable(format!(
                        "no answer from {}: {reason}",
                        self.backends[i].label
                    )));
                }
            }
        }
        let soonest = self
            .backends
            .iter()
            .filter_map(|b| b.until)
            .min()
            .map(|u| u.saturating_duration_since(Instant::now()));
        Err(DeliveryError::Retriable {
            reason: match last {
                Some(r) => format!("every endpoint refused or is backing off; last: {r}"),
                None if self.backends.is_empty() => "no endpoint resolved".into(),
                None => "every endpoint is backing off".into(),
            },
            retry_after: soonest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_what_they_say_about_the_batch() {
        let mut full = Status::resource_exhausted("full");
        full.metadata_mut()
            .insert("retry-after-ms", MetadataValue::from(1500u64));
        assert!(matches!(
            classify(&full),
            Failure::Refused { retry_after: Some(d), .. } if d == Duration::from_millis(1500)
        ));
        assert!(matches!(
            classify(&Status::invalid_argument("bomb")),
            Failure::Permanent(_)
        ));
        assert!(matches!(
            classify(&Status::unauthenticated("token")),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            classify(&Status::deadline_exceeded("slow")),
            Failure::Unknown(_)
        ));
        assert!(matches!(
            classify(&Status::from_error(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            )))),
            Failure::Refused { .. }
        ));
    }
}
