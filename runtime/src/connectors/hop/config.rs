//! Settings of the `sluice` sink (sender) and `sluice` source (receiver) of the agent-to-agent
//! hop, and the checks that need more than types.

use serde::Deserialize;

use sluice_core::config::{
    Node, Pos,
    units::{ByteSize, HumanDuration, ListenAddr},
};

/// How a sender spreads batches over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each request goes to the next healthy endpoint in turn.
    #[default]
    LoadBalance,
    /// Every request goes to the first healthy endpoint in the listed order.
    Failover,
}

/// How a batch is compressed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

/// Per-endpoint backoff after a failure: `initial`, doubled per consecutive failure, up to
/// `max` (Flume's `OrderSelector`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "default_backoff_initial")]
    pub initial: HumanDuration,
    #[serde(default = "default_backoff_max")]
    pub max: HumanDuration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: default_backoff_initial(),
            max: default_backoff_max(),
        }
    }
}

fn default_backoff_initial() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(250))
}
fn default_backoff_max() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

/// A sender's TLS: the CA that signed the receivers' certificates (required: hops run on
/// private CAs), and a client certificate and key for mutual TLS.
pub use sluice_core::tls::ClientTls;

/// A receiver's TLS: the same `tls:` settings as every listening source's.
pub use sluice_core::tls::ServerTls;

/// `type: sluice` sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopSinkConfig {
    /// `host:port` of each receiver; names are resolved again every `resolve_interval`, and
    /// every address a name has is an endpoint of its own.
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub compression: Compression,
    /// Largest request (events encoded, before compression); a bigger batch is sent as
    /// several requests.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: ByteSize,
    /// Longest wait for one request's answer (the receiver's commit included).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_resolve_interval")]
    pub resolve_interval: HumanDuration,
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// How long a batch whose outcome is unknown (no answer) is retried on the same endpoint
    /// before another one is tried: that endpoint recognises the retry if it had stored the
    /// batch, another endpoint could not.
    #[serde(default = "default_sticky_retry")]
    pub sticky_retry: HumanDuration,
    /// Who this sender is to the receivers (their de-duplication window is kept per origin).
    /// Default: `<hostname>/<sink name>`. Two agents sending with the same origin through
    /// channels with the same id would be taken for one; the channel's id is added to it.
    pub origin: Option<String>,
    pub tls: Option<ClientTls>,
    /// Environment variable holding a bearer token sent with every request.
    pub token_env: Option<String>,
}

fn default_max_batch_bytes() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_resolve_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_sticky_retry() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}

/// `type: sluice` sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopSourceConfig {
    pub listen: ListenAddr,
    pub tls: Option<ServerTls>,
    /// Environment variable holding the bearer token senders must present.
    pub token_env: Option<String>,
    /// Largest batch accepted once decompressed; a bigger one (or one that claims to be
    /// smaller and is not: a decompression bomb) is refused without being stored.
    #[serde(default = "default_max_decoded")]
    pub max_decoded_batch_bytes: ByteSize,
    /// How long a batch waits for room in a full channel before the sender is told to retry.
    #[serde(default = "default_full_wait")]
    pub full_wait: HumanDuration,
    /// What a sender is told to wait before retrying after a full channel.
    #[serde(default = "default_retry_after")]
    pub retry_after: HumanDuration,
    /// Senders remembered by the de-duplication window; the least recently seen is forgotten
    /// beyond this.
    #[serde(default = "default_max_origins")]
    pub max_origins: usize,
}

fn default_max_decoded() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_full_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}
fn default_retry_after() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}
fn default_max_origins() -> usize {
    10_000
}

/// Problems a sink's settings have beyond their types, at the field concerned.
pub fn check_sink(c: &HopSinkConfig, body: &Node) -> Vec<(Pos, String)> {
    let at = |key: &str| body.get(key).map_or(body.pos, |n| n.pos);
    let mut out = Vec::new();
    if c.endpoints.is_empty() {
        out.push((
            at("endpoints"),
            "endpoints: list at least one host:port".into(),
        ));
    }
    for e in &c.endpoints {
        if split_host_port(e).is_none() {
            out.push((
                at("endpoints"),
                format!("endpoint {e:?} is not host:port (collector-0.collector:7400, 10.0.0.5:7400, [::1]:7400)"),
            ));
        }
    }
    if c.max_batch_bytes.0 == 0 {
        out.push((
            at("max_batch_bytes"),
            "max_batch_bytes must be above 0".into(),
        ));
    }
    if c.backoff.initial.0 > c.backoff.max.0 {
        out.push((
            at("backoff"),
            "backoff.initial is longer than backoff.max".into(),
        ));
    }
    if let Some(t) = &c.tls {
        if t.cert.is_some() != t.key.is_some() {
            out.push((
                at("tls"),
                "tls: a client certificate needs both `cert` and `key`".into(),
            ));
        }
    }
    out
}

/// Problems a source's settings have beyond their types.
pub fn check_source(c: &HopSourceConfig, body: &Node) -> Vec<(Pos, String)> {
    let at = |key: &str| body.get(key).map_or(body.pos, |n| n.pos);
    let mut out = Vec::new();
    if c.max_decoded_batch_bytes.0 == 0 {
        out.push((
            at("max_decoded_batch_bytes"),
            "max_decoded_batch_bytes must be above 0".into(),
        ));
    }
    if c.max_origins == 0 {
        out.push((at("max_origins"), "max_origins must be above 0".into()));
    }
    out
}

/// `host:port` → (host, port); IPv6 literals in brackets.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(':') || s.starts_with('[')).then_some((host, port))
}
