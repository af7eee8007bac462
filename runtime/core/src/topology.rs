//! Builds the running graph — channels, sources with their processors, sink runners — from a
//! validated [`Pipeline`]. Anything that can still be wrong here (a regex that does not
//! compile, a bad path template) is reported as a config error at the component's position.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
};

use crate::{
    channel::kafka::KafkaChannel,
    channel::{
        Channel,
        instrumented::Instrumented,
        memory::MemoryChannel,
        rocks::{Fsync, RocksChannel, RocksOptions, StorageCounters},
        spillable::SpillableChannel,
    },
    config::{
        BalanceOrder, ChannelConfig, CodecRef, ConfigError, ConfigErrors, FsyncConfig,
        HttpCodecRef, InterceptorRef, Named, Pipeline, Pos, SelectorConfig, SinkConfig,
        SinkGroupKind, SinkKind, SourceConfig, SourceKind, units::ByteSize,
    },
    dlq::DeadLetters,
    event::codec::Codec,
    interceptor::{self, Interceptor},
    metrics::{Metrics, SinkMetrics, SourceMetrics},
    plugin::{
        World,
        codec::WasmCodec,
        interceptor::WasmInterceptor,
        selector::WasmSelector,
        slot::{PluginSlot, PluginSource},
        watch::Registry,
    },
    selector::{Multiplexing, Replicating, Selector, multiplexing::Targets},
    sink::{
        Sink,
        console::{LoggerSink, StdoutSink},
        file::FileSink,
        group::{Member, Policy, SinkSet},
        http::{self as http_sink, HttpSink},
        null::NullSink,
        runner::SinkRunner,
    },
    source::{
        ChannelProcessor, Source,
        generator::Generator,
        http::{HttpSource, decode::Decoder},
        stdin::Stdin,
        tail::FileSource,
    },
};

pub struct BuiltSource {
    pub name: String,
    pub source: Box<dyn Source>,
    pub processor: ChannelProcessor,
    pub metrics: SourceMetrics,
    /// Events this source will emit in total, when known (for progress bars).
    pub expected: Option<u64>,
}

pub struct BuiltSink {
    pub name: String,
    pub metrics: SinkMetrics,
    pub dead: DeadLetters,
}

pub struct Topology {
    pub channels: Vec<(String, Arc<dyn Channel>)>,
    pub sources: Vec<BuiltSource>,
    pub runners: Vec<SinkRunner>,
    /// Runners reading a channel that is some component's DLQ; they drain last.
    pub dlq_runner: Vec<bool>,
    pub sinks: Vec<BuiltSink>,
    pub plugins: Registry,
}

struct Builder<'a> {
    p: &'a Pipeline,
    metrics: &'a Metrics,
    channels: HashMap<String, Arc<dyn Channel>>,
    plugins: Registry,
    errors: Vec<ConfigError>,
}

impl Builder<'_> {
    fn err(&mut self, pos: Pos, component: String, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.p.file.clone(),
            pos,
            component: Some(component),
            message: message.into(),
        });
    }

    /// The plugin `name` if it implements a world accepted by `ok` (else an error at `pos`).
    fn plugin(
        &mut self,
        name: &str,
        role: &str,
        ok: fn(World) -> bool,
        pos: Pos,
        component: &str,
    ) -> Option<Arc<PluginSlot>> {
        // A plugin that failed to load was reported on its own definition.
        let slot = Arc::clone(self.plugins.get(name)?);
        let world = slot.world();
        if ok(world) {
            Some(slot)
        } else {
            self.err(
                pos,
                component.to_owned(),
                format!(
                    "plugin `{name}` is a `{}` component; {role} needs another kind",
                    world.name()
                ),
            );
            None
        }
    }

    fn channel(&self, name: &str) -> Option<Arc<dyn Channel>> {
        self.channels.get(name).cloned()
    }

    /// Where relative paths in the pipeline file (TLS files) start from.
    fn base_dir(&self) -> PathBuf {
        self.p
            .file
            .parent()
            .map(|d| d.to_owned())
            .unwrap_or_default()
    }

    /// The DLQ of a component: its own `dlq`, else the pipeline's — except for a sink that
    /// reads the pipeline DLQ itself (`reads`), which would loop.
    fn dead_letters(
        &self,
        own: Option<&String>,
        component: &str,
        reads: Option<&str>,
    ) -> DeadLetters {
        let name = own
            .or(self.p.settings.dlq.as_ref())
            .filter(|n| Some(n.as_str()) != reads);
        DeadLetters::new(
            name.and_then(|n| self.channel(n)),
            self.metrics.dlq(),
            component,
        )
    }
}

/// Builds everything; returns all problems found, each at its component's position.
/// Durable channels are opened (and their directories created).
pub fn build(p: &Pipeline, metrics: &Metrics) -> Result<Topology, ConfigErrors> {
    build_with(p, metrics, Storage::Open)
}

/// Builds everything as [`build`] does, to find errors, but opens no storage: durable channels
/// are stood in for by memory channels, so `sluice validate` neither creates directories nor
/// takes the lock of a running agent's channel.
pub fn check(p: &Pipeline, metrics: &Metrics) -> Result<Topology, ConfigErrors> {
    build_with(p, metrics, Storage::Skip)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Storage {
    Open,
    Skip,
}

fn rocks_options(
    capacity: usize,
    max_bytes: Option<ByteSize>,
    fsync: FsyncConfig,
    m: &crate::metrics::ChannelMetrics,
) -> RocksOptions {
    RocksOptions {
        capacity,
        max_bytes: max_bytes.map(|b| b.0),
        fsync: match fsync {
            FsyncConfig::PerCommit => Fsync::PerCommit,
            FsyncConfig::Interval(d) => Fsync::Interval(d.0),
            FsyncConfig::Never => Fsync::Never,
        },
        counters: StorageCounters {
            corrupt: m.corrupt.clone(),
            fsyncs: m.fsyncs.clone(),
        },
        statistics: false,
    }
}

/// Opens one channel; `Err` is a message for the channel's config error.
fn build_channel(
    name: &str,
    spec: &ChannelConfig,
    m: crate::metrics::ChannelMetrics,
    storage: Storage,
) -> Result<Arc<dyn Channel>, String> {
    if let (Storage::Skip, Some(path)) = (storage, spec.path()) {
        if path.exists() && !path.is_dir() {
            return Err(format!(
                "`{}` exists and is not a directory",
                path.display()
            ));
        }
        return Ok(Arc::new(MemoryChannel::new(1, None)));
    }
    Ok(match spec {
        ChannelConfig::Memory(c) => Arc::new(Instrumented::new(
            MemoryChannel::new(c.capacity, c.max_bytes.map(|b| b.0)),
            m,
        )),
        ChannelConfig::Rocksdb(c) => {
            let opts = rocks_options(c.capacity, c.max_bytes, c.fsync, &m);
            let disk = RocksChannel::open(&c.path, opts).map_err(|e| e.to_string())?;
            Arc::new(Instrumented::new(disk, m))
        }
        ChannelConfig::Spillable(c) => {
            let opts = rocks_options(c.disk_capacity, c.max_bytes, c.fsync, &m);
            let disk = RocksChannel::open(&c.path, opts).map_err(|e| e.to_string())?;
            Arc::new(Instrumented::new(
                SpillableChannel::new(c.memory_capacity, disk),
                m,
            ))
        }
        // Opening connects to nothing: clients are made on the first put or take.
        ChannelConfig::Kafka(c) => Arc::new(Instrumented::new(KafkaChannel::open(name, c)?, m)),
    })
}

fn build_with(p: &Pipeline, metrics: &Metrics, storage: Storage) -> Result<Topology, ConfigErrors> {
    let mut b = Builder {
        p,
        metrics,
        channels: HashMap::new(),
        plugins: Registry::default(),
        errors: Vec::new(),
    };
    load_plugins(&mut b);
    let mut channels = Vec::new();
    for c in &p.channels {
        let ch = match build_channel(&c.name, &c.spec, metrics.channel(&c.name), storage) {
            Ok(ch) => ch,
            Err(e) => {
                b.err(c.pos, format!("channels.{}", c.name), e);
                continue;
            }
        };
        b.channels.insert(c.name.clone(), Arc::clone(&ch));
        channels.push((c.name.clone(), ch));
    }

    let mut sources = Vec::new();
    for s in &p.sources {
        if let Some(built) = build_source(&mut b, s) {
            sources.push(built);
        }
    }

    let dlq_names: BTreeSet<&str> = p
        .sinks
        .iter()
        .filter_map(|s| s.spec.common.dlq.as_deref())
        .chain(
            p.sources
                .iter()
                .filter_map(|s| s.spec.common.dlq.as_deref()),
        )
        .chain(p.settings.dlq.as_deref())
        .collect();

    let mut built_sinks: HashMap<&str, (Box<dyn Sink>, SinkMetrics)> = HashMap::new();
    let mut sinks = Vec::new();
    for s in &p.sinks {
        let component = format!("sinks.{}", s.name);
        let metrics = metrics.sink(&s.name);
        sinks.push(BuiltSink {
            name: s.name.clone(),
            metrics: metrics.clone(),
            dead: b.dead_letters(
                s.spec.common.dlq.as_ref(),
                &s.name,
                Some(&s.spec.common.channel),
            ),
        });
        match build_sink(&mut b, &s.name, s.pos, &s.spec) {
            Ok(sink) => {
                built_sinks.insert(&s.name, (sink, metrics));
            }
            Err(e) => b.err(s.pos, component, e),
        }
    }

    let mut runners = Vec::new();
    let mut dlq_runner = Vec::new();
    let mut grouped = BTreeSet::new();
    for g in &p.sink_groups {
        let Some(first) = g
            .spec
            .sinks
            .first()
            .and_then(|n| p.sinks.iter().find(|s| &s.name == n))
        else {
            continue;
        };
        let mut members = Vec::new();
        for name in &g.spec.sinks {
            grouped.insert(name.as_str());
            let priority = match &g.spec.kind {
                SinkGroupKind::Failover(f) => f.priorities.get(name).copied().unwrap_or(0),
                SinkGroupKind::LoadBalance(_) => 0,
            };
            if let Some((sink, m)) = built_sinks.remove(name.as_str()) {
                members.push(Member::new(name, sink, m, priority));
            }
        }
        let set = match &g.spec.kind {
            SinkGroupKind::Failover(f) => {
                SinkSet::group(members, Policy::Failover, true, f.max_penalty.0)
            }
            SinkGroupKind::LoadBalance(lb) => {
                let policy = match lb.selector {
                    BalanceOrder::RoundRobin => Policy::RoundRobin,
                    BalanceOrder::Random => Policy::Random,
                };
                SinkSet::group(members, policy, lb.backoff, lb.max_backoff.0)
            }
        };
        // The group runs with its first sink's channel, batch size, retry policy and DLQ.
        if let Some(runner) = runner(&b, &g.name, &first.spec, set) {
            dlq_runner.push(dlq_names.contains(first.spec.common.channel.as_str()));
            runners.push(runner);
        }
    }
    for s in &p.sinks {
        if grouped.contains(s.name.as_str()) {
            continue;
        }
        if let Some((sink, m)) = built_sinks.remove(s.name.as_str()) {
            let set = SinkSet::single(Member::new(&s.name, sink, m, 0));
            if let Some(runner) = runner(&b, &s.name, &s.spec, set) {
                dlq_runner.push(dlq_names.contains(s.spec.common.channel.as_str()));
                runners.push(runner);
            }
        }
    }

    if b.errors.is_empty() {
        Ok(Topology {
            channels,
            sources,
            runners,
            dlq_runner,
            sinks,
            plugins: b.plugins,
        })
    } else {
        Err(ConfigErrors(b.errors))
    }
}

fn runner(b: &Builder<'_>, name: &str, spec: &SinkConfig, set: SinkSet) -> Option<SinkRunner> {
    let channel = b.channel(&spec.common.channel)?;
    Some(SinkRunner::new(
        name,
        channel,
        set,
        b.dead_letters(spec.common.dlq.as_ref(), name, Some(&spec.common.channel)),
        spec.common.batch_size,
        spec.common.retry.clone(),
    ))
}

/// Loads every configured plugin (compile, link, init), reporting failures at their position.
fn load_plugins(b: &mut Builder<'_>) {
    let dir = b.p.file.parent().map(|d| d.to_owned()).unwrap_or_default();
    for pc in &b.p.plugins {
        let spec = &pc.spec;
        let source = match crate::plugin::oci::path_ref(&spec.path) {
            Some(r) => match crate::plugin::oci::OciRef::parse(r) {
                Ok(r) => PluginSource::Oci(r),
                Err(e) => {
                    b.err(pc.pos, format!("plugins.{}", pc.name), e);
                    continue;
                }
            },
            None if spec.path.is_absolute() => PluginSource::File(spec.path.clone()),
            None => PluginSource::File(dir.join(&spec.path)),
        };
        let config = serde_json::Value::Object(spec.config.clone().into_iter().collect());
        let memory = spec
            .limits
            .memory
            .map(|m| usize::try_from(m.0).unwrap_or(usize::MAX));
        let deadline = spec.limits.deadline.map(|d| d.0);
        match PluginSlot::load_from(
            &pc.name,
            source,
            &config,
            (memory, deadline),
            spec.refresh.map(|d| d.0),
            b.metrics.plugin(&pc.name),
        ) {
            Ok(slot) => {
                b.plugins.slots.insert(pc.name.clone(), slot);
            }
            Err(e) => b.err(pc.pos, format!("plugins.{}", pc.name), e.to_string()),
        }
    }
}

fn codec(b: &mut Builder<'_>, r: &CodecRef, pos: Pos, component: &str) -> Option<Codec> {
    match r {
        CodecRef::Builtin(c) => Some(Codec::Builtin(*c)),
        CodecRef::Plugin(name) => wasm_codec(b, name, pos, component).map(Codec::Plugin),
    }
}

fn wasm_codec(b: &mut Builder<'_>, name: &str, pos: Pos, component: &str) -> Option<WasmCodec> {
    let slot = b.plugin(name, "a codec", |w| w == World::Serde, pos, component)?;
    match WasmCodec::new(slot) {
        Ok(c) => Some(c),
        Err(e) => {
            b.err(pos, component.to_owned(), e.to_string());
            None
        }
    }
}

/// Secrets (`secret_env`) are read from the process environment when the pipeline is built.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn build_sink(
    b: &mut Builder<'_>,
    name: &str,
    pos: Pos,
    spec: &SinkConfig,
) -> Result<Box<dyn Sink>, String> {
    let component = format!("sinks.{name}");
    Ok(match &spec.kind {
        SinkKind::Null => Box::new(NullSink),
        SinkKind::Stdout(c) => {
            let codec = codec(b, &c.format, pos, &component).ok_or("codec unavailable")?;
            Box::new(StdoutSink::new(codec))
        }
        SinkKind::Logger(c) => Box::new(LoggerSink::new(name, c.max_body)),
        SinkKind::File(c) => {
            let codec = codec(b, &c.format, pos, &component).ok_or("codec unavailable")?;
            Box::new(FileSink::new(c, codec)?)
        }
        SinkKind::Http(c) => {
            let format = match &c.format {
                HttpCodecRef::Builtin(f) => http_sink::Format::Builtin(*f),
                HttpCodecRef::Plugin(p) => http_sink::Format::Plugin(Codec::Plugin(
                    wasm_codec(b, p, pos, &component).ok_or("codec unavailable")?,
                )),
            };
            Box::new(HttpSink::new(name, c, format, &b.base_dir(), &process_env)?)
        }
        SinkKind::Kafka(c) => Box::new(crate::sink::kafka::KafkaSink::new(name, c)?),
        SinkKind::Rabbitmq(c) => Box::new(crate::sink::rabbitmq::RabbitSink::new(name, c)?),
        SinkKind::Redis(c) => Box::new(crate::sink::redis::RedisSink::new(name, c)?),
        SinkKind::S3(c) => {
            let codec = codec(b, &c.format, pos, &component).ok_or("codec unavailable")?;
            Box::new(crate::sink::s3::S3Sink::new(name, c, codec)?)
        }
        SinkKind::Dynamodb(c) => {
            let sink = crate::sink::dynamodb::DynamoSink::new(name, c)?;
            Box::new(match &c.format {
                Some(CodecRef::Plugin(p)) => sink.with_codec(Codec::Plugin(
                    wasm_codec(b, p, pos, &component).ok_or("codec unavailable")?,
                )),
                _ => sink,
            })
        }
        SinkKind::Kinesis(c) => Box::new(crate::sink::kinesis::KinesisSink::new(name, c)?),
        SinkKind::Sql(c) => Box::new(crate::sink::sql::SqlSink::new(name, c)?),
    })
}

fn build_source(b: &mut Builder<'_>, s: &Named<SourceConfig>) -> Option<BuiltSource> {
    let component = format!("sources.{}", s.name);
    let c = &s.spec.common;

    let mut interceptors: Vec<Box<dyn Interceptor>> = Vec::new();
    for i in &c.interceptors {
        match i {
            InterceptorRef::Builtin(cfg) => match interceptor::build(cfg) {
                Ok(i) => interceptors.push(i),
                Err(e) => b.err(s.pos, component.clone(), e.to_string()),
            },
            InterceptorRef::Plugin(name) => {
                let Some(slot) = b.plugin(
                    name,
                    "an interceptor chain",
                    World::is_interceptor,
                    s.pos,
                    &component,
                ) else {
                    continue;
                };
                match WasmInterceptor::new(slot) {
                    Ok(i) => interceptors.push(Box::new(i)),
                    Err(e) => b.err(s.pos, component.clone(), e.to_string()),
                }
            }
        }
    }

    // The source's channel list: `channels` first, then any other channel the selector names.
    let mut names: Vec<String> = c.channels.clone();
    if let SelectorConfig::Multiplexing {
        mapping,
        default,
        optional,
        ..
    } = &c.selector
    {
        for n in mapping
            .values()
            .chain(optional.values())
            .flatten()
            .chain(default)
        {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let index = |n: &String| names.iter().position(|x| x == n);
    let selector: Box<dyn Selector> = match &c.selector {
        SelectorConfig::Replicating { optional } => Box::new(Replicating::new(
            names.iter().map(|n| optional.contains(n)).collect(),
        )),
        SelectorConfig::Multiplexing {
            header,
            mapping,
            default,
            optional,
        } => {
            let resolve = |list: &Vec<String>| list.iter().filter_map(index).collect::<Vec<_>>();
            let mut targets: HashMap<String, Targets> = HashMap::new();
            for (value, chans) in mapping {
                targets.entry(value.clone()).or_default().required = resolve(chans);
            }
            for (value, chans) in optional {
                targets.entry(value.clone()).or_default().optional = resolve(chans);
            }
            let default = Targets {
                required: resolve(default),
                optional: Vec::new(),
            };
            Box::new(Multiplexing::new(header.clone(), targets, default))
        }
        SelectorConfig::Wasm { plugin } => {
            let slot = b.plugin(
                plugin,
                "a selector",
                |w| w == World::Selector,
                s.pos,
                &component,
            )?;
            match WasmSelector::new(slot, names.clone()) {
                Ok(sel) => Box::new(sel),
                Err(e) => {
                    b.err(s.pos, component.clone(), e.to_string());
                    return None;
                }
            }
        }
    };
    let channels: Vec<(String, Arc<dyn Channel>)> = names
        .iter()
        .filter_map(|n| Some((n.clone(), b.channel(n)?)))
        .collect();
    if channels.len() != names.len() {
        return None; // dangling names were reported by validation
    }

    let metrics = b.metrics.source(&s.name);
    let dead = b.dead_letters(c.dlq.as_ref(), &s.name, None);
    let processor = ChannelProcessor::new(interceptors, selector, channels, dead, metrics.clone());
    let (source, expected): (Box<dyn Source>, _) = match &s.spec.kind {
        SourceKind::Generator(g) => (Box::new(Generator::new(g.clone(), c.batch_size)), g.count),
        SourceKind::Stdin(cfg) => {
            let codec = codec(b, &cfg.codec, s.pos, &component)?;
            (Box::new(Stdin::new(cfg.clone(), c.batch_size, codec)), None)
        }
        SourceKind::File(cfg) => {
            let codec = codec(b, &cfg.codec, s.pos, &component)?;
            match FileSource::new(cfg, c.batch_size, codec) {
                Ok(source) => (Box::new(source), None),
                Err(e) => {
                    b.err(s.pos, component.clone(), e);
                    return None;
                }
            }
        }
        SourceKind::Http(cfg) => {
            let decoder = match &cfg.codec {
                HttpCodecRef::Builtin(codec) => Decoder::Builtin(*codec),
                HttpCodecRef::Plugin(p) => {
                    let codec = wasm_codec(b, p, s.pos, &component)?;
                    Decoder::Plugin(Box::new(tokio::sync::Mutex::new(codec)))
                }
            };
            let base = b.base_dir();
            match HttpSource::new(cfg, c.batch_size, decoder, &base, &process_env) {
                Ok(src) => (Box::new(src), None),
                Err(e) => {
                    b.err(s.pos, component.clone(), e);
                    return None;
                }
            }
        }
        SourceKind::Kafka(cfg) => {
            match crate::source::kafka::KafkaSource::new(&s.name, cfg, c.batch_size) {
                Ok(src) => (Box::new(src), None),
                Err(e) => {
                    b.err(s.pos, component.clone(), e);
                    return None;
                }
            }
        }
        SourceKind::Rabbitmq(cfg) => {
            match crate::source::rabbitmq::RabbitSource::new(&s.name, cfg, c.batch_size) {
                Ok(src) => (Box::new(src), None),
                Err(e) => {
                    b.err(s.pos, component.clone(), e);
                    return None;
                }
            }
        }
        SourceKind::Redis(cfg) => {
            match crate::source::redis::RedisSource::new(&s.name, cfg, c.batch_size) {
                Ok(src) => (Box::new(src), None),
                Err(e) => {
                    b.err(s.pos, component.clone(), e);
                    return None;
                }
            }
        }
        SourceKind::Sqs(cfg) => {
            match crate::source::sqs::SqsSource::new(&s.name, cfg, c.batch_size) {
                Ok(src) => (Box::new(src), None),
                Err(e) => {
                    b.err(s.pos, component.clone(), e);
                    return None;
                }
            }
        }
    };
    Some(BuiltSource {
        name: s.name.clone(),
        source,
        processor,
        metrics,
        expected,
    })
}
