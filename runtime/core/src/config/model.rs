//! The typed pipeline: what the reader ([`super::read`]) makes of a file and the topology
//! builds from.
//!
//! Fields every component of a kind has (a sink's `channel`, `dlq`, `batch_size`, `retry`)
//! are read into a `*Common` struct; the rest is the component type's own settings, read by
//! its registry entry into a spec ([`SourceSpec`], [`SinkSpec`], [`ChannelSpec`]) that knows
//! how to build it. Both deny unknown fields.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;

use super::{
    node::Pos,
    units::{ByteSize, HumanDuration},
};
use crate::registry::{ChannelSpec, SinkSpec, SourceSpec};

/// A component as written in the file: its name, where it is, and its settings.
#[derive(Debug, Clone)]
pub struct Named<T> {
    pub name: String,
    pub pos: Pos,
    /// Its `type` as written (`kafka`, `failover`); `plugin` for plugins.
    pub kind: String,
    pub spec: T,
}

#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub file: PathBuf,
    pub plugins: Vec<Named<PluginConfig>>,
    pub channels: Vec<Named<Arc<dyn ChannelSpec>>>,
    pub sources: Vec<Named<SourceConfig>>,
    pub sinks: Vec<Named<SinkConfig>>,
    pub sink_groups: Vec<Named<SinkGroupConfig>>,
    pub admin: Option<AdminConfig>,
    pub settings: Settings,
    /// [`Node::fingerprint`](super::Node::fingerprint) of each component's settings
    /// (`sources.<name>`, `channels.<name>`, …) and of each other top-level key (`dlq`,
    /// `admin`, …): what a live reload compares.
    pub fingerprints: std::collections::BTreeMap<String, u64>,
    /// Positions of references (channel names etc.), for cross-reference errors.
    pub(crate) refs: Vec<Reference>,
    /// Every component name written in the file, even those whose settings were invalid, so a
    /// broken definition does not also make each of its users an error.
    pub(crate) declared: Vec<(RefKind, String)>,
}

/// A name used somewhere that must resolve to a component of `kind`.
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub kind: RefKind,
    pub name: String,
    pub pos: Pos,
    pub component: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefKind {
    Channel,
    Sink,
    Plugin,
}

/// Pipeline-wide settings (top-level keys other than the component sections).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Channel receiving poison events from components that name no `dlq` of their own.
    pub dlq: Option<String>,
    /// How long sinks may keep draining after a stop signal.
    pub shutdown_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dlq: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP server (`/metrics`, `/health`, `/ready`, `/plugins`).
    pub listen: SocketAddr,
    /// The environment variable holding the bearer token that every endpoint except
    /// `/health`, `/ready` and (while `public_metrics`) `/metrics` requires. Required when
    /// `listen` is reachable from other hosts.
    pub token_env: Option<String>,
    /// Serve `/metrics` without the token (scrapers often have none).
    #[serde(default = "public_metrics")]
    pub public_metrics: bool,
    /// The token read from `token_env` when the pipeline is read.
    #[serde(skip)]
    pub token: Option<super::secret::Secret>,
    /// Serve HTTPS: PEM certificate chain and key (relative paths start at the pipeline
    /// file's directory). Needs the `http` feature.
    pub tls: Option<AdminTls>,
}

/// The admin server's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn public_metrics() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// A component file (relative to the pipeline file), or `oci://registry/repo:tag` or
    /// `oci://registry/repo@sha256:<digest>` (pulled, verified and cached).
    pub path: PathBuf,
    /// For an `oci://` tag: re-resolve it this often and swap in a new digest.
    #[serde(default)]
    pub refresh: Option<HumanDuration>,
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Files the agent reads for the plugin (which has no file system: schemas, descriptor
    /// sets), relative to the pipeline file; each reaches the plugin's config base64-encoded,
    /// as `files: {name: "<base64>"}`.
    #[serde(default)]
    pub files: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub limits: PluginLimits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Largest memory of an instance (default 64 MiB); a call growing past it fails.
    pub memory: Option<ByteSize>,
    /// Longest call (default 50 ms); calls are sized to take about a quarter of it.
    pub deadline: Option<HumanDuration>,
    /// Replace an instance by a fresh one after this many calls (default: never).
    pub recycle_after_calls: Option<u64>,
    /// Replace an instance whose memory passed this (default: 3/4 of `memory`), before the
    /// cap fails a call: for guests that grow with every call and never shrink.
    pub recycle_memory: Option<ByteSize>,
}

// ---------------------------------------------------------------- sources

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub common: SourceCommon,
    /// The settings of its type (`type: kafka`), read by that type's registry entry.
    pub spec: Arc<dyn SourceSpec>,
}

impl SourceConfig {
    /// The channels this source may write events to: its list and, for a multiplexing
    /// selector, every channel of its mapping (not its DLQ).
    pub fn targets(&self) -> Vec<String> {
        let c = &self.common;
        let mut names = c.channels.clone();
        if let SelectorConfig::Multiplexing {
            mapping,
            default,
            optional,
            ..
        } = &c.selector
        {
            names.extend(mapping.values().chain(optional.values()).flatten().cloned());
            names.extend(default.iter().cloned());
        }
        names
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCommon {
    /// Channels this source may write to (the selector picks among them).
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub selector: SelectorConfig,
    /// Read separately (each item is a plugin name or a built-in mapping).
    #[serde(skip)]
    pub interceptors: Vec<InterceptorRef>,
    pub dlq: Option<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Stable event ids, given where an event first enters Sluice (see [`EventIdConfig`]).
    pub event_id: Option<EventIdConfig>,
}

fn default_batch_size() -> usize {
    1000
}

/// `event_id: true`, or `event_id: { header: sluice.id, from: [kafka.topic, …] }`: every
/// event this source emits gets an id in `header` unless it already carries one (it came
/// from another agent, or a retry): a UUIDv7, or — with `from` — the values of those headers
/// joined with `/` (a Kafka topic/partition/offset, an SQS message id), so that the same
/// upstream record always gets the same id. Channels, interceptors and hops carry it
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventIdConfig {
    pub header: String,
    pub from: Vec<String>,
}

/// The header event ids go in unless `event_id.header` says otherwise.
pub const EVENT_ID_HEADER: &str = "sluice.id";

impl<'de> Deserialize<'de> for EventIdConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            #[serde(default = "default_id_header")]
            header: String,
            #[serde(default)]
            from: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            On(bool),
            Full(Full),
        }
        match Form::deserialize(d)? {
            Form::On(true) => Ok(EventIdConfig {
                header: default_id_header(),
                from: Vec::new(),
            }),
            Form::On(false) => Err(serde::de::Error::custom(
                "event_id: leave it out to give no ids",
            )),
            Form::Full(f) if f.header.is_empty() => Err(serde::de::Error::custom(
                "event_id.header must not be empty",
            )),
            Form::Full(f) => Ok(EventIdConfig {
                header: f.header,
                from: f.from,
            }),
        }
    }
}

fn default_id_header() -> String {
    EVENT_ID_HEADER.to_owned()
}

/// An interceptor in a source's chain: a built-in (mapping with `type`) or a plugin name.
#[derive(Debug, Clone)]
pub enum InterceptorRef {
    Builtin(BuiltinInterceptor),
    Plugin(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BuiltinInterceptor {
    /// Adds the event time in epoch milliseconds.
    Timestamp {
        #[serde(default = "header_timestamp")]
        header: String,
        #[serde(default)]
        preserve_existing: bool,
    },
    /// Adds the agent's host name.
    Host {
        #[serde(default = "header_host")]
        header: String,
        #[serde(default)]
        preserve_existing: bool,
    },
    /// Adds a fixed header.
    Static {
        key: String,
        value: String,
        #[serde(default = "yes")]
        preserve_existing: bool,
    },
    /// Removes headers by exact name and/or regex.
    RemoveHeader {
        #[serde(default)]
        names: Vec<String>,
        matching: Option<String>,
    },
    /// Keeps (or, with `exclude: true`, drops) events whose body matches.
    RegexFilter {
        regex: String,
        #[serde(default)]
        exclude: bool,
    },
    /// Copies regex capture groups of the body into headers (one name per group).
    RegexExtractor { regex: String, headers: Vec<String> },
    /// Adds a random UUID.
    Uuid {
        #[serde(default = "header_id")]
        header: String,
        #[serde(default = "yes")]
        preserve_existing: bool,
    },
    /// Replaces regex matches in the body.
    SearchReplace { search: String, replace: String },
    /// Drops events whose key was already seen within `ttl` (the window survives restarts
    /// in a channel that keeps marks: see `interceptor::dedup`).
    Dedup {
        /// The key: a header (default `sluice.id`, the event id) …
        #[serde(default = "header_event_id")]
        header: String,
        /// … or the whole body …
        #[serde(default)]
        body: bool,
        /// … or a JSON pointer into a JSON body (`/order/id`).
        json: Option<String>,
        #[serde(default = "default_dedup_ttl")]
        ttl: HumanDuration,
        #[serde(default = "default_dedup_keys")]
        max_keys: usize,
    },
}

fn header_event_id() -> String {
    EVENT_ID_HEADER.into()
}
fn default_dedup_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_dedup_keys() -> usize {
    1_000_000
}

fn header_timestamp() -> String {
    "timestamp".into()
}
fn header_host() -> String {
    "host".into()
}
fn header_id() -> String {
    "id".into()
}
fn yes() -> bool {
    true
}

/// How a source picks channels for each event.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SelectorConfig {
    /// Every event to every channel; those listed in `optional` may fail without failing the put.
    Replicating {
        #[serde(default)]
        optional: Vec<String>,
    },
    /// Channels chosen by the value of one header.
    Multiplexing {
        header: String,
        #[serde(default)]
        mapping: BTreeMap<String, Vec<String>>,
        #[serde(default)]
        default: Vec<String>,
        #[serde(default)]
        optional: BTreeMap<String, Vec<String>>,
    },
    /// A `selector` plugin; it receives the source's `channels` list at init.
    Wasm { plugin: String },
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig::Replicating {
            optional: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- sinks

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub common: SinkCommon,
    /// The settings of its type (`type: s3`), read by that type's registry entry.
    pub spec: Arc<dyn SinkSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkCommon {
    pub channel: String,
    pub dlq: Option<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub retry: RetryConfig,
    /// The least every path into this sink must guarantee on a crash (`at_least_once`,
    /// `exactly_once`); a pipeline whose paths fall short is refused, naming what breaks it.
    #[serde(default)]
    pub delivery: Option<crate::guarantee::Delivery>,
    /// Where `delivery` is written (for its error).
    #[serde(skip)]
    pub delivery_pos: Pos,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Delivery attempts per batch before its events go to the DLQ; `unlimited` (read as
    /// `u32::MAX`) retries until delivered — what a hop to other agents usually wants.
    #[serde(default = "default_attempts", deserialize_with = "attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: HumanDuration,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_attempts() -> u32 {
    10
}

/// A number of attempts, or `unlimited`.
fn attempts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Attempts {
        Count(u32),
        Word(String),
    }
    match Attempts::deserialize(d)? {
        Attempts::Count(n) => Ok(n),
        Attempts::Word(w) if w == "unlimited" => Ok(u32::MAX),
        // A number written through ${VAR} arrives as text.
        Attempts::Word(w) if w.trim().parse::<u32>().is_ok() => Ok(w.trim().parse().unwrap_or(0)),
        Attempts::Word(w) => Err(serde::de::Error::custom(format!(
            "max_attempts must be a number or `unlimited`, not {w:?}"
        ))),
    }
}
fn default_initial_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

// ---------------------------------------------------------------- sink groups

#[derive(Debug, Clone)]
pub struct SinkGroupConfig {
    pub sinks: Vec<String>,
    pub kind: SinkGroupKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SinkGroupCommon {
    pub(super) sinks: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum SinkGroupKind {
    Failover(FailoverConfig),
    LoadBalance(LoadBalanceConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Higher goes first; sinks not listed get priority 0 in list order.
    #[serde(default)]
    pub priorities: BTreeMap<String, i32>,
    /// Longest a failed sink is kept out of rotation.
    #[serde(default = "default_max_penalty")]
    pub max_penalty: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalanceConfig {
    #[serde(default)]
    pub selector: BalanceOrder,
    /// Keep a failed sink out of rotation with exponential backoff.
    #[serde(default = "yes")]
    pub backoff: bool,
    #[serde(default = "default_max_penalty")]
    pub max_backoff: HumanDuration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceOrder {
    #[default]
    RoundRobin,
    Random,
}

fn default_max_penalty() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
