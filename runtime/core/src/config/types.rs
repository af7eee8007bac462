//! Typed pipeline configuration and the per-component readers that build it from [`Node`]s.
//!
//! Each component is a mapping with a `type` key plus fields. Fields shared by every component
//! of a kind (a sink's `channel`, `dlq`, `batch_size`, `retry`) are read into a `*Common`
//! struct, the remaining fields into the type's own struct; both deny unknown fields.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{
    Collector,
    aws::{AWS_KEYS, AwsConnection},
    dynamodb::DynamoSinkConfig,
    http::{self, HTTP_CODECS, HttpSinkConfig, HttpSourceConfig},
    kafka::{KafkaChannelConfig, KafkaSinkConfig, KafkaSourceConfig},
    kinesis::KinesisSinkConfig,
    node::{Node, NodeKind, Pos},
    rabbitmq::{RabbitSinkConfig, RabbitSourceConfig},
    redis::{RedisSinkConfig, RedisSourceConfig},
    s3::S3SinkConfig,
    sql::SqlSinkConfig,
    sqs::SqsSourceConfig,
    units::{ByteSize, HumanDuration},
};

/// A component as written in the file: its name, where it is, and its settings.
#[derive(Debug, Clone)]
pub struct Named<T> {
    pub name: String,
    pub pos: Pos,
    pub spec: T,
}

#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub file: PathBuf,
    pub plugins: Vec<Named<PluginConfig>>,
    pub channels: Vec<Named<ChannelConfig>>,
    pub sources: Vec<Named<SourceConfig>>,
    pub sinks: Vec<Named<SinkConfig>>,
    pub sink_groups: Vec<Named<SinkGroupConfig>>,
    pub admin: Option<AdminConfig>,
    pub settings: Settings,
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
    /// Address of the admin HTTP server (`/metrics`, `/health`, `/ready`).
    pub listen: SocketAddr,
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
    #[serde(default)]
    pub limits: PluginLimits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    pub memory: Option<ByteSize>,
    pub deadline: Option<HumanDuration>,
}

// ---------------------------------------------------------------- channels

#[derive(Debug, Clone)]
pub enum ChannelConfig {
    Memory(MemoryChannelConfig),
    Rocksdb(RocksChannelConfig),
    Spillable(SpillableChannelConfig),
    /// Boxed: far larger than the other kinds.
    Kafka(Box<KafkaChannelConfig>),
}

impl ChannelConfig {
    /// The directory a durable channel stores its events in.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            ChannelConfig::Memory(_) | ChannelConfig::Kafka(_) => None,
            ChannelConfig::Rocksdb(c) => Some(&c.path),
            ChannelConfig::Spillable(c) => Some(&c.path),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryChannelConfig {
    /// Most events held (queued plus taken but not yet committed).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// Most body+header bytes held; unlimited when absent.
    pub max_bytes: Option<ByteSize>,
}

fn default_capacity() -> usize {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RocksChannelConfig {
    /// Directory of the channel's RocksDB database; created if missing. One channel per path.
    pub path: PathBuf,
    /// Most events held (queued plus taken but not yet committed).
    #[serde(default = "default_durable_capacity")]
    pub capacity: usize,
    /// Most stored record bytes held; unlimited (up to the disk) when absent.
    pub max_bytes: Option<ByteSize>,
    #[serde(default)]
    pub fsync: FsyncConfig,
}

/// A memory tier in front of a RocksDB tier, one FIFO across both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpillableChannelConfig {
    /// Events held in memory before new events spill to disk.
    #[serde(default = "default_capacity")]
    pub memory_capacity: usize,
    /// Directory of the disk tier.
    pub path: PathBuf,
    /// Most events held by the disk tier.
    #[serde(default = "default_durable_capacity")]
    pub disk_capacity: usize,
    /// Most stored record bytes held by the disk tier.
    pub max_bytes: Option<ByteSize>,
    #[serde(default)]
    pub fsync: FsyncConfig,
}

fn default_durable_capacity() -> usize {
    1_000_000
}

/// When a durable channel acknowledges a put: `per_commit` (synced, default), `never`, or
/// `{ interval: 10ms }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncConfig {
    /// After a synced write; concurrent puts share one sync.
    #[default]
    PerCommit,
    /// After the write; the log is synced at least this often.
    Interval(HumanDuration),
    /// After the write; never synced explicitly (survives a crash, not a power loss).
    Never,
}

// ---------------------------------------------------------------- sources

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub common: SourceCommon,
    pub kind: SourceKind,
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
}

fn default_batch_size() -> usize {
    1000
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    Generator(GeneratorConfig),
    Stdin(StdinConfig),
    File(FileSourceConfig),
    /// Boxed: far larger than the other kinds.
    Http(Box<HttpSourceConfig>),
    Kafka(Box<KafkaSourceConfig>),
    Rabbitmq(Box<RabbitSourceConfig>),
    Redis(Box<RedisSourceConfig>),
    Sqs(Box<SqsSourceConfig>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Events to emit before ending; runs forever when absent.
    pub count: Option<u64>,
    /// Events per second; as fast as the channel accepts when absent.
    pub rate: Option<f64>,
    /// Body length in bytes; the body starts with the sequence number.
    #[serde(default = "default_body_size")]
    pub body_size: ByteSize,
    /// A fixed body for every event instead of the numbered one.
    pub body: Option<String>,
    /// Static headers on every event.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A header whose value cycles through a list, event by event (for routing demos).
    pub cycle: Option<CycleHeader>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleHeader {
    pub header: String,
    pub values: Vec<String>,
}

fn default_body_size() -> ByteSize {
    ByteSize(256)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// `lines`, `ndjson`, or the name of a `serde` plugin (each line is one payload).
    #[serde(default)]
    pub codec: CodecRef,
    /// Hand a partial batch to the channel after this long without a new line.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
}

fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

/// The `file` source: follows files matching globs as they grow (`tail -F`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Glob patterns (`*`, `?`, `[..]`, `**`). Relative ones are relative to the working
    /// directory, like the file sink's paths.
    pub paths: Vec<String>,
    /// JSON file recording how far each file has been committed (one per source).
    pub position_file: PathBuf,
    /// Where to start in files found on the very first run (no position file yet).
    #[serde(default)]
    pub start_at: StartAt,
    /// How often to look for new, rotated and grown files (change notifications come sooner).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// How long a file renamed out of the globs or deleted keeps being read after it last grew.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait: HumanDuration,
    /// Join lines into events: a line matching `start` begins one.
    pub multiline: Option<MultilineConfig>,
    /// Longest event body; longer lines are split into pieces of this size.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// Header names for the file's path and the line's byte offset (`null`: no header).
    #[serde(default)]
    pub headers: FileHeaders,
    /// `lines`, `ndjson`, or the name of a `serde` plugin (each line is one payload).
    #[serde(default)]
    pub codec: CodecRef,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Read files found on the first run from their start.
    #[default]
    Beginning,
    /// Skip the complete lines files already hold on the first run.
    End,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// Regex a line must match to begin a new event; other lines continue the current one.
    pub start: String,
    /// An event is complete when no line has been added to it for this long.
    #[serde(default = "default_multiline_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    #[serde(default = "default_file_header")]
    pub file: Option<String>,
    #[serde(default)]
    pub offset: Option<String>,
}

impl Default for FileHeaders {
    fn default() -> Self {
        FileHeaders {
            file: default_file_header(),
            offset: None,
        }
    }
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}
fn default_rotate_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_multiline_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_max_line_bytes() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_file_header() -> Option<String> {
    Some("file".into())
}

/// Built-in codecs (Wasm serde plugins come later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodecName {
    /// One event per line; the line is the body.
    #[default]
    Lines,
    /// One JSON object per line: `{"headers":{..},"body":"..."}`, or any other object as the body.
    Ndjson,
}

/// A built-in codec or a `serde` plugin by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecRef {
    Builtin(CodecName),
    Plugin(String),
}

impl Default for CodecRef {
    fn default() -> Self {
        CodecRef::Builtin(CodecName::Lines)
    }
}

impl<'de> Deserialize<'de> for CodecRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "lines" => CodecRef::Builtin(CodecName::Lines),
            "ndjson" => CodecRef::Builtin(CodecName::Ndjson),
            _ => CodecRef::Plugin(s),
        })
    }
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
    pub kind: SinkKind,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Delivery attempts per batch before its events go to the DLQ.
    #[serde(default = "default_attempts")]
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
fn default_initial_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    Null,
    Stdout(StdoutSinkConfig),
    Logger(LoggerSinkConfig),
    File(FileSinkConfig),
    /// Boxed: far larger than the other kinds.
    Http(Box<HttpSinkConfig>),
    Kafka(Box<KafkaSinkConfig>),
    Rabbitmq(Box<RabbitSinkConfig>),
    Redis(Box<RedisSinkConfig>),
    S3(Box<S3SinkConfig>),
    Dynamodb(Box<DynamoSinkConfig>),
    Kinesis(Box<KinesisSinkConfig>),
    Sql(Box<SqlSinkConfig>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// `lines`, `ndjson`, or the name of a `serde` plugin (one payload per batch).
    #[serde(default)]
    pub format: CodecRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerSinkConfig {
    /// Bytes of body shown per event.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
}

fn default_max_body() -> usize {
    16
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Path template: `%{header}` and strftime escapes such as `%Y-%m-%d`.
    pub path: String,
    /// `lines`, `ndjson`, or the name of a `serde` plugin (one call per run of events going to
    /// the same file).
    #[serde(default)]
    pub format: CodecRef,
    /// Start a new file after this many bytes.
    pub roll_size: Option<ByteSize>,
    /// Start a new file after this many events.
    pub roll_count: Option<u64>,
    /// Start a new file after this long.
    pub roll_interval: Option<HumanDuration>,
    /// fsync after every batch (slower; survives power loss).
    #[serde(default)]
    pub fsync: bool,
}

// ---------------------------------------------------------------- sink groups

#[derive(Debug, Clone)]
pub struct SinkGroupConfig {
    pub sinks: Vec<String>,
    pub kind: SinkGroupKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkGroupCommon {
    sinks: Vec<String>,
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

// ---------------------------------------------------------------- reading

const TOP_LEVEL: &[&str] = &[
    "plugins",
    "channels",
    "sources",
    "sinks",
    "sink_groups",
    "admin",
    "dlq",
    "shutdown_timeout",
];

pub(super) fn read_pipeline(root: &Node, cx: &mut Collector) -> Pipeline {
    let mut p = Pipeline {
        file: cx.file.clone(),
        ..Pipeline::default()
    };
    if !matches!(root.kind, NodeKind::Map(_)) {
        cx.push(
            root.pos,
            None,
            format!("a pipeline file is a mapping, found {}", root.kind_name()),
        );
        return p;
    }
    for (k, _) in root.entries() {
        match k.as_str() {
            Some(key) if TOP_LEVEL.contains(&key) => {}
            other => cx.push(
                k.pos,
                None,
                format!(
                    "unknown top-level key `{}`, expected one of: {}",
                    other.unwrap_or("?"),
                    TOP_LEVEL.join(", ")
                ),
            ),
        }
    }
    for (section_key, kind) in [
        ("plugins", RefKind::Plugin),
        ("channels", RefKind::Channel),
        ("sinks", RefKind::Sink),
    ] {
        if let Some(n) = root.get(section_key) {
            p.declared.extend(
                n.entries()
                    .iter()
                    .filter_map(|(k, _)| Some((kind, k.as_str()?.to_owned()))),
            );
        }
    }
    for (name, pos, node) in section(root, "plugins", cx) {
        let component = format!("plugins.{name}");
        if let Some(spec) = cx.read::<PluginConfig>(node, Some(&component)) {
            let at = node.get("path").map_or(pos, |n| n.pos);
            match crate::plugin::oci::path_ref(&spec.path) {
                Some(r) => {
                    if let Err(e) = crate::plugin::oci::OciRef::parse(r) {
                        cx.push(at, Some(&component), e);
                    }
                }
                None if spec.refresh.is_some() => cx.push(
                    at,
                    Some(&component),
                    "`refresh` applies to `oci://` plugins (a plugin file is watched for changes)",
                ),
                None => {}
            }
            p.plugins.push(Named { name, pos, spec });
        }
    }
    for (name, pos, node) in section(root, "channels", cx) {
        if let Some(spec) = read_channel(&name, node, cx) {
            p.channels.push(Named { name, pos, spec });
        }
    }
    for (name, pos, node) in section(root, "sources", cx) {
        if let Some(spec) = read_source(&name, node, cx, &mut p.refs) {
            p.sources.push(Named { name, pos, spec });
        }
    }
    for (name, pos, node) in section(root, "sinks", cx) {
        if let Some(spec) = read_sink(&name, node, cx, &mut p.refs) {
            p.sinks.push(Named { name, pos, spec });
        }
    }
    for (name, pos, node) in section(root, "sink_groups", cx) {
        if let Some(spec) = read_sink_group(&name, node, cx, &mut p.refs) {
            p.sink_groups.push(Named { name, pos, spec });
        }
    }
    if let Some(node) = root.get("admin") {
        p.admin = cx.read(node, Some("admin"));
    }
    if let Some(node) = root.get("dlq") {
        if let Some(name) = cx.read::<String>(node, Some("dlq")) {
            push_ref(&mut p.refs, RefKind::Channel, &name, node.pos, "dlq");
            p.settings.dlq = Some(name);
        }
    }
    if let Some(node) = root.get("shutdown_timeout") {
        if let Some(d) = cx.read::<HumanDuration>(node, Some("shutdown_timeout")) {
            p.settings.shutdown_timeout = d.0;
        }
    }
    p
}

/// The named entries of a top-level section, each a mapping.
fn section<'a>(root: &'a Node, key: &str, cx: &mut Collector) -> Vec<(String, Pos, &'a Node)> {
    let Some(node) = root.get(key) else {
        return Vec::new();
    };
    match &node.kind {
        NodeKind::Null => Vec::new(),
        NodeKind::Map(entries) => entries
            .iter()
            .filter_map(|(k, v)| {
                let Some(name) = k.as_str() else {
                    cx.push(k.pos, None, format!("{key}: component names are strings"));
                    return None;
                };
                if !matches!(v.kind, NodeKind::Map(_)) {
                    cx.push(
                        v.pos,
                        Some(&format!("{key}.{name}")),
                        format!("expected a mapping of settings, found {}", v.kind_name()),
                    );
                    return None;
                }
                Some((name.to_owned(), k.pos, v))
            })
            .collect(),
        _ => {
            cx.push(
                node.pos,
                None,
                format!("`{key}` must be a mapping of name → settings"),
            );
            Vec::new()
        }
    }
}

/// Reads the `type` key, reporting a missing or unknown one.
fn component_type(
    node: &Node,
    component: &str,
    known: &[&'static str],
    cx: &mut Collector,
) -> Option<&'static str> {
    let Some(t) = node.get("type") else {
        cx.push(
            node.pos,
            Some(component),
            format!("missing field `type` (one of: {})", known.join(", ")),
        );
        return None;
    };
    // `type: null` is YAML's null scalar, but here it names the null sink.
    let name = match &t.kind {
        NodeKind::Null => Some("null"),
        _ => t.as_str(),
    };
    match name {
        Some(s) if known.contains(&s) => known.iter().find(|k| **k == s).copied(),
        _ => {
            let found = t
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| t.kind_name().into());
            cx.push(
                t.pos,
                Some(component),
                format!(
                    "unknown type `{found}`, expected one of: {}",
                    known.join(", ")
                ),
            );
            None
        }
    }
}

fn push_ref(refs: &mut Vec<Reference>, kind: RefKind, name: &str, pos: Pos, component: &str) {
    refs.push(Reference {
        kind,
        name: name.to_owned(),
        pos,
        component: component.to_owned(),
    });
}

/// Records a reference for each string in the list under `key`.
fn list_refs(node: &Node, key: &str, kind: RefKind, component: &str, refs: &mut Vec<Reference>) {
    if let Some(NodeKind::Seq(items)) = node.get(key).map(|n| &n.kind) {
        for item in items {
            if let Some(name) = item.as_str() {
                push_ref(refs, kind, name, item.pos, component);
            }
        }
    }
}

fn read_channel(name: &str, node: &Node, cx: &mut Collector) -> Option<ChannelConfig> {
    let component = format!("channels.{name}");
    let ty = component_type(
        node,
        &component,
        &["memory", "rocksdb", "spillable", "kafka"],
        cx,
    )?;
    let body = node.filter_keys(|k| k != "type");
    match ty {
        "memory" => cx.read(&body, Some(&component)).map(ChannelConfig::Memory),
        "rocksdb" => cx.read(&body, Some(&component)).map(ChannelConfig::Rocksdb),
        "spillable" => cx
            .read(&body, Some(&component))
            .map(ChannelConfig::Spillable),
        "kafka" => cx
            .read(&body, Some(&component))
            .map(|c| ChannelConfig::Kafka(Box::new(c))),
        _ => None,
    }
}

const SOURCE_COMMON: &[&str] = &["channels", "selector", "interceptors", "dlq", "batch_size"];

fn read_source(
    name: &str,
    node: &Node,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
) -> Option<SourceConfig> {
    let component = format!("sources.{name}");
    let ty = component_type(
        node,
        &component,
        &[
            "generator",
            "stdin",
            "file",
            "http",
            "kafka",
            "rabbitmq",
            "redis",
            "sqs",
        ],
        cx,
    );
    let common_node = node.filter_keys(|k| SOURCE_COMMON.contains(&k) && k != "interceptors");
    let common: Option<SourceCommon> = cx.read(&common_node, Some(&component));
    let interceptors = read_interceptors(node.get("interceptors"), &component, cx, refs);
    list_refs(node, "channels", RefKind::Channel, &component, refs);
    if let Some(dlq) = node.get("dlq").filter(|d| d.as_str().is_some()) {
        push_ref(
            refs,
            RefKind::Channel,
            dlq.as_str().unwrap_or_default(),
            dlq.pos,
            &component,
        );
    }
    if let Some(sel) = node.get("selector") {
        selector_refs(sel, &component, refs);
    }
    let builtin_codecs = if ty == Some("http") {
        HTTP_CODECS
    } else {
        CODECS
    };
    codec_ref(node, "codec", builtin_codecs, &component, refs);
    let body = node.filter_keys(|k| k != "type" && !SOURCE_COMMON.contains(&k));
    let kind = match ty? {
        "generator" => SourceKind::Generator(cx.read(&body, Some(&component))?),
        "stdin" => SourceKind::Stdin(cx.read(&body, Some(&component))?),
        "file" => SourceKind::File(cx.read(&body, Some(&component))?),
        "http" => {
            let cfg: HttpSourceConfig = cx.read(&body, Some(&component))?;
            if !http::check_source(&cfg, &body, &component, cx) {
                return None;
            }
            SourceKind::Http(Box::new(cfg))
        }
        "kafka" => SourceKind::Kafka(Box::new(cx.read(&body, Some(&component))?)),
        "rabbitmq" => SourceKind::Rabbitmq(Box::new(cx.read(&body, Some(&component))?)),
        "redis" => SourceKind::Redis(Box::new(cx.read(&body, Some(&component))?)),
        "sqs" => SourceKind::Sqs(read_aws(
            &body,
            &component,
            cx,
            |c: &mut SqsSourceConfig| &mut c.aws,
        )?),
        _ => return None,
    };
    let mut common = common?;
    common.interceptors = interceptors?;
    Some(SourceConfig { common, kind })
}

/// Built-in codecs of `stdin` and `stdout`.
const CODECS: &[&str] = &["lines", "ndjson"];

/// A `codec`/`format` value naming no built-in codec refers to a plugin.
fn codec_ref(
    node: &Node,
    key: &str,
    builtins: &[&str],
    component: &str,
    refs: &mut Vec<Reference>,
) {
    if let Some(v) = node.get(key) {
        if let Some(name) = v.as_str().filter(|n| !builtins.contains(n)) {
            push_ref(refs, RefKind::Plugin, name, v.pos, component);
        }
    }
}

fn selector_refs(sel: &Node, component: &str, refs: &mut Vec<Reference>) {
    if let Some(p) = sel.get("plugin").filter(|p| p.as_str().is_some()) {
        push_ref(
            refs,
            RefKind::Plugin,
            p.as_str().unwrap_or_default(),
            p.pos,
            component,
        );
    }
    list_refs(sel, "optional", RefKind::Channel, component, refs);
    list_refs(sel, "default", RefKind::Channel, component, refs);
    for key in ["mapping", "optional"] {
        if let Some(map) = sel.get(key) {
            for (_, v) in map.entries() {
                if let NodeKind::Seq(items) = &v.kind {
                    for item in items {
                        if let Some(n) = item.as_str() {
                            push_ref(refs, RefKind::Channel, n, item.pos, component);
                        }
                    }
                }
            }
        }
    }
}

fn read_interceptors(
    node: Option<&Node>,
    component: &str,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
) -> Option<Vec<InterceptorRef>> {
    let Some(node) = node else {
        return Some(Vec::new());
    };
    let NodeKind::Seq(items) = &node.kind else {
        cx.push(node.pos, Some(component), "`interceptors` must be a list");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match &item.kind {
            NodeKind::Str(plugin) => {
                push_ref(refs, RefKind::Plugin, plugin, item.pos, component);
                out.push(InterceptorRef::Plugin(plugin.clone()));
            }
            NodeKind::Map(_) => {
                const KNOWN: &[&str] = &[
                    "timestamp",
                    "host",
                    "static",
                    "remove_header",
                    "regex_filter",
                    "regex_extractor",
                    "uuid",
                    "search_replace",
                ];
                let Some(ty) = component_type(item, component, KNOWN, cx) else {
                    ok = false;
                    continue;
                };
                // Re-shape `{type: x, a: 1}` into the externally tagged `{x: {a: 1}}`.
                let body = item.filter_keys(|k| k != "type");
                let tagged = Node {
                    pos: item.pos,
                    kind: NodeKind::Map(vec![(
                        Node {
                            pos: item.pos,
                            kind: NodeKind::Str(ty.to_owned()),
                        },
                        body,
                    )]),
                };
                match cx.read::<BuiltinInterceptor>(&tagged, Some(component)) {
                    Some(b) => out.push(InterceptorRef::Builtin(b)),
                    None => ok = false,
                }
            }
            _ => {
                cx.push(
                    item.pos,
                    Some(component),
                    "an interceptor is a plugin name or a mapping with `type`",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

const SINK_COMMON: &[&str] = &["channel", "dlq", "batch_size", "retry"];

fn read_sink(
    name: &str,
    node: &Node,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
) -> Option<SinkConfig> {
    let component = format!("sinks.{name}");
    let ty = component_type(
        node,
        &component,
        &[
            "null", "stdout", "logger", "file", "http", "kafka", "rabbitmq", "redis", "s3",
            "dynamodb", "kinesis", "sql",
        ],
        cx,
    );
    let common: Option<SinkCommon> = cx.read(
        &node.filter_keys(|k| SINK_COMMON.contains(&k)),
        Some(&component),
    );
    for key in ["channel", "dlq"] {
        if let Some(n) = node.get(key).filter(|n| n.as_str().is_some()) {
            push_ref(
                refs,
                RefKind::Channel,
                n.as_str().unwrap_or_default(),
                n.pos,
                &component,
            );
        }
    }
    match ty {
        Some("stdout" | "file" | "s3" | "dynamodb") => {
            codec_ref(node, "format", CODECS, &component, refs)
        }
        Some("http") => codec_ref(node, "format", HTTP_CODECS, &component, refs),
        _ => {}
    }
    let body = node.filter_keys(|k| k != "type" && !SINK_COMMON.contains(&k));
    let kind = match ty? {
        "null" => {
            cx.read::<Empty>(&body, Some(&component))?;
            SinkKind::Null
        }
        "stdout" => SinkKind::Stdout(cx.read(&body, Some(&component))?),
        "logger" => SinkKind::Logger(cx.read(&body, Some(&component))?),
        "file" => SinkKind::File(cx.read(&body, Some(&component))?),
        "http" => {
            let cfg: HttpSinkConfig = cx.read(&body, Some(&component))?;
            if !http::check_sink(&cfg, &body, &component, cx) {
                return None;
            }
            SinkKind::Http(Box::new(cfg))
        }
        "kafka" => SinkKind::Kafka(Box::new(cx.read(&body, Some(&component))?)),
        "rabbitmq" => SinkKind::Rabbitmq(Box::new(cx.read(&body, Some(&component))?)),
        "redis" => SinkKind::Redis(Box::new(cx.read(&body, Some(&component))?)),
        "s3" => SinkKind::S3(read_aws(&body, &component, cx, |c: &mut S3SinkConfig| {
            &mut c.aws
        })?),
        "dynamodb" => SinkKind::Dynamodb(read_aws(
            &body,
            &component,
            cx,
            |c: &mut DynamoSinkConfig| &mut c.aws,
        )?),
        "kinesis" => SinkKind::Kinesis(read_aws(
            &body,
            &component,
            cx,
            |c: &mut KinesisSinkConfig| &mut c.aws,
        )?),
        "sql" => SinkKind::Sql(Box::new(cx.read(&body, Some(&component))?)),
        _ => return None,
    };
    Some(SinkConfig {
        common: common?,
        kind,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Reads an AWS connector: the shared connection keys ([`AWS_KEYS`]) into an
/// [`AwsConnection`], the rest into the connector's own struct, which `aws` points into.
fn read_aws<T: serde::de::DeserializeOwned>(
    body: &Node,
    component: &str,
    cx: &mut Collector,
    aws: impl FnOnce(&mut T) -> &mut AwsConnection,
) -> Option<Box<T>> {
    let conn: Option<AwsConnection> = cx.read(
        &body.filter_keys(|k| AWS_KEYS.contains(&k)),
        Some(component),
    );
    let own: Option<T> = cx.read(
        &body.filter_keys(|k| !AWS_KEYS.contains(&k)),
        Some(component),
    );
    let conn = conn?;
    if let Err(e) = conn.check() {
        cx.push(body.pos, Some(component), e);
        return None;
    }
    let mut own = own?;
    *aws(&mut own) = conn;
    Some(Box::new(own))
}

fn read_sink_group(
    name: &str,
    node: &Node,
    cx: &mut Collector,
    refs: &mut Vec<Reference>,
) -> Option<SinkGroupConfig> {
    let component = format!("sink_groups.{name}");
    let ty = component_type(node, &component, &["failover", "load_balance"], cx);
    let common: Option<SinkGroupCommon> =
        cx.read(&node.filter_keys(|k| k == "sinks"), Some(&component));
    list_refs(node, "sinks", RefKind::Sink, &component, refs);
    if let Some(prio) = node.get("priorities") {
        for (k, _) in prio.entries() {
            if let Some(n) = k.as_str() {
                push_ref(refs, RefKind::Sink, n, k.pos, &component);
            }
        }
    }
    let body = node.filter_keys(|k| k != "type" && k != "sinks");
    let kind = match ty? {
        "failover" => SinkGroupKind::Failover(cx.read(&body, Some(&component))?),
        "load_balance" => SinkGroupKind::LoadBalance(cx.read(&body, Some(&component))?),
        _ => return None,
    };
    Some(SinkGroupConfig {
        sinks: common?.sinks,
        kind,
    })
}
