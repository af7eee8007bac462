//! Builds the running graph — channels, sources with their processors, sink runners — from a
//! validated [`Pipeline`]. Anything that can still be wrong here (a regex that does not
//! compile, a bad path template) is reported as a config error at the component's position.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
};

use crate::{
    channel::{Channel, instrumented::Instrumented, memory::MemoryChannel},
    config::{
        BalanceOrder, ConfigError, ConfigErrors, InterceptorRef, Named, Pipeline, Pos,
        SelectorConfig, SinkConfig, SinkGroupKind, SourceConfig, model::RefKind,
    },
    dlq::DeadLetters,
    interceptor::{self, Interceptor},
    metrics::{Metrics, SinkMetrics, SourceMetrics},
    plugin::{NoPlugins, PluginHost},
    registry::{BuildCx, ChannelCx, Registry},
    selector::{Multiplexing, Replicating, Selector, multiplexing::Targets},
    sink::{
        Sink,
        group::{Member, Policy, SinkSet},
        runner::SinkRunner,
    },
    source::{ChannelProcessor, Route, Source},
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
    /// The plugins the pipeline loaded (for hot swap and the admin server).
    pub plugins: Arc<dyn PluginHost>,
    /// New routes for running sources ([`Only::reroutes`]).
    pub routes: Vec<(String, Route)>,
}

struct Builder<'a> {
    p: &'a Pipeline,
    metrics: &'a Metrics,
    channels: HashMap<String, Arc<dyn Channel>>,
    plugins: Box<dyn PluginHost>,
    tls: Option<Arc<dyn crate::tls::TlsServers>>,
    formats: Vec<crate::registry::NativeFormat>,
    /// Plugins that failed to load (reported once, on their definition).
    failed_plugins: BTreeSet<String>,
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

/// Builds everything with `registry`'s component types; returns all problems found, each at
/// its component's position. Durable channels are opened (and their directories created).
pub fn build(
    p: &Pipeline,
    metrics: &Metrics,
    registry: &Registry,
) -> Result<Topology, ConfigErrors> {
    build_with(p, metrics, registry, Storage::Open, Reuse::default(), None)
}

/// What a live reload hands over from the running pipeline: channels that stay (by name) and
/// the plugin host.
#[derive(Default)]
pub struct Reuse {
    pub channels: HashMap<String, Arc<dyn Channel>>,
    pub plugins: Option<Arc<dyn PluginHost>>,
    /// Plugins whose definition is new or changed: they are loaded into a new host, which
    /// carries the others over from `plugins` (the same loaded plugins, so running
    /// components and hot swap keep working). `None`: the plugins did not change and the
    /// running host is shared as it is.
    pub load_plugins: Option<BTreeSet<String>>,
}

/// The sources and sink runners (by runner name: a group's, or an ungrouped sink's) a live
/// reload builds; the others keep running.
#[derive(Debug, Default, Clone)]
pub struct Only {
    pub sources: BTreeSet<String>,
    pub runners: BTreeSet<String>,
    /// Running sources that only need a new route (see [`RouteSlot`](crate::source::RouteSlot)).
    pub reroutes: BTreeSet<String>,
}

/// Builds only the components `only` names, with the channels and plugins of `reuse`; other
/// channels are opened. Nothing running is touched: on error the caller keeps what runs.
pub fn build_part(
    p: &Pipeline,
    metrics: &Metrics,
    registry: &Registry,
    reuse: Reuse,
    only: &Only,
) -> Result<Topology, ConfigErrors> {
    build_with(p, metrics, registry, Storage::Open, reuse, Some(only))
}

/// What a sink runner is called: its group's name, or its sink's when it is in no group, with
/// the sinks it runs.
pub fn runners(p: &Pipeline) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = p
        .sink_groups
        .iter()
        .map(|g| (g.name.clone(), g.spec.sinks.clone()))
        .collect();
    for s in &p.sinks {
        if !out.iter().any(|(_, members)| members.contains(&s.name)) {
            out.push((s.name.clone(), vec![s.name.clone()]));
        }
    }
    out
}

/// The channels a source writes to (its list, the selector's, its DLQ's).
fn source_channels(p: &Pipeline, s: &SourceConfig) -> Vec<String> {
    let mut names = s.targets();
    names.extend(s.common.dlq.clone().or(p.settings.dlq.clone()));
    names
}

/// Fingerprints that change whenever anything a component is built from changes: per source
/// one for the source itself and one for its route (its channels, selector, interceptors, the
/// pipeline's DLQ), per sink runner one for its sinks, group, channels and DLQ; each counts
/// the plugins it uses (so a changed plugin definition rebuilds its users, and only them).
/// Equal fingerprints across two readings of a file mean the component (or route) can keep
/// running.
pub type SourceFingerprints = BTreeMap<String, (u64, u64)>;

pub fn component_fingerprints(p: &Pipeline) -> (SourceFingerprints, BTreeMap<String, u64>) {
    use std::hash::{Hash, Hasher};
    let fp = |key: &str| p.fingerprints.get(key).copied().unwrap_or(0);
    let hash = |parts: &[u64]| {
        let mut h = std::hash::DefaultHasher::new();
        parts.hash(&mut h);
        h.finish()
    };
    // The plugins a component names (codecs; a source's interceptors and selector too).
    let plugins_of = |component: &str| -> BTreeSet<&str> {
        p.refs
            .iter()
            .filter(|r| r.kind == RefKind::Plugin && r.component == component)
            .map(|r| r.name.as_str())
            .collect()
    };
    let with_plugins = |parts: &mut Vec<u64>, names: &BTreeSet<&str>| {
        parts.extend(names.iter().map(|n| fp(&format!("plugins.{n}"))));
    };
    let sources = p
        .sources
        .iter()
        .map(|s| {
            let c = &s.spec.common;
            let mut on_route: BTreeSet<&str> = c
                .interceptors
                .iter()
                .filter_map(|i| match i {
                    InterceptorRef::Plugin(n) => Some(n.as_str()),
                    InterceptorRef::Builtin(_) => None,
                })
                .collect();
            if let SelectorConfig::Wasm { plugin } = &c.selector {
                on_route.insert(plugin);
            }
            let mut in_body = plugins_of(&format!("sources.{}", s.name));
            in_body.retain(|n| !on_route.contains(n));
            let mut body = vec![fp(&format!("sources.{}#body", s.name))];
            with_plugins(&mut body, &in_body);
            let mut route = vec![fp(&format!("sources.{}#route", s.name)), fp("dlq")];
            route.extend(
                source_channels(p, &s.spec)
                    .iter()
                    .map(|c| fp(&format!("channels.{c}"))),
            );
            with_plugins(&mut route, &on_route);
            (s.name.clone(), (hash(&body), hash(&route)))
        })
        .collect();
    let runners = runners(p)
        .into_iter()
        .map(|(name, members)| {
            let mut parts = vec![fp(&format!("sink_groups.{name}")), fp("dlq")];
            if let Some(d) = &p.settings.dlq {
                parts.push(fp(&format!("channels.{d}")));
            }
            for m in &members {
                parts.push(fp(&format!("sinks.{m}")));
                with_plugins(&mut parts, &plugins_of(&format!("sinks.{m}")));
                if let Some(s) = p.sinks.iter().find(|s| &s.name == m) {
                    parts.push(fp(&format!("channels.{}", s.spec.common.channel)));
                    if let Some(d) = &s.spec.common.dlq {
                        parts.push(fp(&format!("channels.{d}")));
                    }
                }
            }
            (name, hash(&parts))
        })
        .collect();
    (sources, runners)
}

/// Builds everything as [`build`] does, to find errors, but opens no storage: durable channels
/// are stood in for by memory channels, so `sluice validate` neither creates directories nor
/// takes the lock of a running agent's channel.
pub fn check(
    p: &Pipeline,
    metrics: &Metrics,
    registry: &Registry,
) -> Result<Topology, ConfigErrors> {
    build_with(p, metrics, registry, Storage::Skip, Reuse::default(), None)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Storage {
    Open,
    Skip,
}

/// The running plugin host, lent to a live reload's build (whose plugins did not change).
struct Shared(Arc<dyn PluginHost>);

#[async_trait::async_trait]
impl PluginHost for Shared {
    fn load(
        &mut self,
        name: &str,
        _: &crate::config::PluginConfig,
        _: &std::path::Path,
        _: crate::metrics::PluginMetrics,
    ) -> Result<(), String> {
        Err(format!(
            "plugin `{name}`: plugins are loaded when the agent starts"
        ))
    }
    fn interceptor(&self, name: &str) -> Result<Box<dyn Interceptor>, String> {
        self.0.interceptor(name)
    }
    fn codec(&self, name: &str) -> Result<Box<dyn crate::event::codec::Codec>, String> {
        self.0.codec(name)
    }
    fn selector(&self, name: &str, channels: Vec<String>) -> Result<Box<dyn Selector>, String> {
        self.0.selector(name, channels)
    }
    fn watch(&self, stop: tokio_util::sync::CancellationToken) {
        self.0.watch(stop)
    }
    fn describe(&self) -> Vec<serde_json::Value> {
        self.0.describe()
    }
    fn unhealthy(&self) -> Vec<String> {
        self.0.unhealthy()
    }
    async fn reload(&self, name: &str) -> crate::plugin::ReloadOutcome {
        self.0.reload(name).await
    }
    fn carry_over(&self, keep: &BTreeSet<String>) -> Option<Box<dyn PluginHost>> {
        self.0.carry_over(keep)
    }
}

/// Opens one channel; `Err` is a message for the channel's config error.
fn open_channel(
    c: &Named<Arc<dyn crate::registry::ChannelSpec>>,
    m: crate::metrics::ChannelMetrics,
    storage: Storage,
) -> Result<Arc<dyn Channel>, String> {
    if let (Storage::Skip, Some(path)) = (storage, c.spec.storage_dir()) {
        if path.exists() && !path.is_dir() {
            return Err(format!(
                "`{}` exists and is not a directory",
                path.display()
            ));
        }
        return Ok(Arc::new(MemoryChannel::new(1, None)));
    }
    let cx = ChannelCx {
        name: &c.name,
        metrics: &m,
    };
    let inner = c.spec.open(&cx)?;
    Ok(Arc::new(Instrumented::new(inner, m)))
}

fn build_with(
    p: &Pipeline,
    metrics: &Metrics,
    registry: &Registry,
    storage: Storage,
    reuse: Reuse,
    only: Option<&Only>,
) -> Result<Topology, ConfigErrors> {
    let fresh = || match (&registry.plugins, p.plugins.is_empty()) {
        (Some(support), false) => (support.new_host)(),
        _ => Box::new(NoPlugins) as Box<dyn PluginHost>,
    };
    // The plugin host: the running one shared as it is (no plugin changed), a new one that
    // carries the unchanged plugins over and loads the others, or a fresh one loading all.
    type Host = (
        Option<Arc<dyn PluginHost>>,
        Box<dyn PluginHost>,
        Option<BTreeSet<String>>,
    );
    let (shared, plugins, only_plugins): Host = match (reuse.plugins, reuse.load_plugins) {
        (Some(host), None) => (
            Some(Arc::clone(&host)),
            Box::new(Shared(host)),
            Some(BTreeSet::new()),
        ),
        (Some(host), Some(load)) => {
            let keep = p
                .plugins
                .iter()
                .map(|pc| pc.name.clone())
                .filter(|n| !load.contains(n))
                .collect();
            (
                None,
                host.carry_over(&keep).unwrap_or_else(fresh),
                Some(load),
            )
        }
        (None, _) => (None, fresh(), None),
    };
    let mut b = Builder {
        p,
        metrics,
        channels: HashMap::new(),
        plugins,
        tls: registry.tls.clone(),
        formats: registry.formats.clone(),
        failed_plugins: BTreeSet::new(),
        errors: Vec::new(),
    };
    load_plugins(&mut b, only_plugins.as_ref());
    let mut channels = Vec::new();
    let mut kept = reuse.channels;
    for c in &p.channels {
        if let Some(ch) = kept.remove(&c.name) {
            b.channels.insert(c.name.clone(), Arc::clone(&ch));
            channels.push((c.name.clone(), ch));
            continue;
        }
        let ch = match open_channel(c, metrics.channel(&c.name), storage) {
            Ok(ch) => ch,
            Err(e) => {
                b.err(c.pos, format!("channels.{}", c.name), e);
                continue;
            }
        };
        b.channels.insert(c.name.clone(), Arc::clone(&ch));
        channels.push((c.name.clone(), ch));
    }

    let mut routes = Vec::new();
    for s in &p.sources {
        if only.is_some_and(|o| o.reroutes.contains(&s.name)) {
            if let Some(r) = build_route(&mut b, s) {
                routes.push((s.name.clone(), r));
            }
        }
    }
    let mut sources = Vec::new();
    for s in &p.sources {
        if only.is_some_and(|o| !o.sources.contains(&s.name)) {
            continue;
        }
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

    // The sinks of the runners to build.
    let wanted: BTreeSet<String> = runners(p)
        .into_iter()
        .filter(|(name, _)| only.is_none_or(|o| o.runners.contains(name)))
        .flat_map(|(_, members)| members)
        .collect();
    let mut built_sinks: HashMap<&str, (Box<dyn Sink>, SinkMetrics)> = HashMap::new();
    let mut sinks = Vec::new();
    for s in &p.sinks {
        if !wanted.contains(&s.name) {
            continue;
        }
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
        match build_sink(&b, &s.name, &s.spec) {
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
        if only.is_some_and(|o| !o.runners.contains(&g.name)) {
            grouped.extend(g.spec.sinks.iter().map(String::as_str));
            continue;
        }
        let Some(first) = g
            .spec
            .sinks
            .first()
            .and_then(|n| p.sinks.iter().find(|s| &s.name == n))
        else {
            continue;
        };
        let mut members = Vec::new();
        // The longest linger any member asks for.
        let linger = g
            .spec
            .sinks
            .iter()
            .filter_map(|n| p.sinks.iter().find(|s| &s.name == n))
            .filter_map(|s| s.spec.spec.linger())
            .max();
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
        if let Some(runner) = runner(&b, &g.name, &first.spec, set, linger) {
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
            if let Some(runner) = runner(&b, &s.name, &s.spec, set, s.spec.spec.linger()) {
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
            plugins: shared.unwrap_or_else(|| Arc::from(b.plugins)),
            routes,
        })
    } else {
        Err(ConfigErrors(b.errors))
    }
}

fn runner(
    b: &Builder<'_>,
    name: &str,
    spec: &SinkConfig,
    set: SinkSet,
    linger: Option<std::time::Duration>,
) -> Option<SinkRunner> {
    let channel = b.channel(&spec.common.channel)?;
    let runner = SinkRunner::new(
        name,
        channel,
        set,
        b.dead_letters(spec.common.dlq.as_ref(), name, Some(&spec.common.channel)),
        spec.common.batch_size,
        spec.common.retry.clone(),
    );
    Some(runner.with_linger(linger))
}

/// Loads every configured plugin, or those `only` names (fetch, compile, link, init),
/// reporting failures at their
/// position.
fn load_plugins(b: &mut Builder<'_>, only: Option<&BTreeSet<String>>) {
    let dir = b.base_dir();
    for pc in &b.p.plugins {
        if only.is_some_and(|o| !o.contains(&pc.name)) {
            continue;
        }
        let m = b.metrics.plugin(&pc.name);
        if let Err(e) = b.plugins.load(&pc.name, &pc.spec, &dir, m) {
            // A plugin with no position in the file came from the command line.
            let at = if pc.pos == Default::default() {
                format!("--plugin {}={}", pc.name, pc.spec.path.display())
            } else {
                format!("plugins.{}", pc.name)
            };
            b.err(pc.pos, at, e);
            b.failed_plugins.insert(pc.name.clone());
        }
    }
}

fn build_cx<'a>(
    b: &'a Builder<'_>,
    name: &'a str,
    batch_size: usize,
    base: &'a std::path::Path,
) -> BuildCx<'a> {
    BuildCx {
        name,
        batch_size,
        base_dir: base,
        metrics: b.metrics,
        channel_id: None,
        delivery: None,
        positions_committed_by: None,
        transactional_sources: Vec::new(),
        plugins: b.plugins.as_ref(),
        tls: b.tls.as_deref(),
        formats: &b.formats,
    }
}

/// The sink with `delivery: exactly_once` that writes in transactions and reads a channel
/// source `s` writes to, when `s` can leave its positions to it.
fn transactional_sink_of<'p>(
    p: &'p Pipeline,
    s: &SourceConfig,
) -> Option<&'p crate::config::Named<SinkConfig>> {
    if !s.spec.positions_in_transactions() {
        return None;
    }
    let targets = s.targets();
    p.sinks.iter().find(|k| {
        k.spec.common.delivery == Some(crate::guarantee::Delivery::ExactlyOnce)
            && k.spec.spec.transactions().is_some()
            && targets.contains(&k.spec.common.channel)
    })
}

fn build_sink(b: &Builder<'_>, name: &str, spec: &SinkConfig) -> Result<Box<dyn Sink>, String> {
    let base = b.base_dir();
    let mut cx = build_cx(b, name, spec.common.batch_size, &base);
    cx.channel_id = b.channel(&spec.common.channel).and_then(|c| c.id());
    cx.delivery = spec.common.delivery;
    if spec.common.delivery == Some(crate::guarantee::Delivery::ExactlyOnce)
        && spec.spec.transactions().is_some()
    {
        cx.transactional_sources =
            b.p.sources
                .iter()
                .filter(|s| transactional_sink_of(b.p, &s.spec).is_some_and(|k| k.name == name))
                .map(|s| b.metrics.component(&s.name))
                .collect();
    }
    spec.spec.build(&cx)
}

fn build_source(b: &mut Builder<'_>, s: &Named<SourceConfig>) -> Option<BuiltSource> {
    let component = format!("sources.{}", s.name);
    let c = &s.spec.common;
    let Route {
        interceptors,
        selector,
        channels,
        dead,
        ids,
    } = build_route(b, s)?;
    let metrics = b.metrics.source(&s.name);
    let processor = ChannelProcessor::new(interceptors, selector, channels, dead, metrics.clone())
        .with_event_ids(ids);
    let base = b.base_dir();
    let mut cx = build_cx(b, &s.name, c.batch_size, &base);
    cx.positions_committed_by =
        transactional_sink_of(b.p, &s.spec).map(|k| b.metrics.component(&k.name));
    let source = match s.spec.spec.build(&cx) {
        Ok(source) => source,
        Err(e) => {
            b.err(s.pos, component, e);
            return None;
        }
    };
    let expected = s.spec.spec.expected_events();
    Some(BuiltSource {
        name: s.name.clone(),
        source,
        processor,
        metrics,
        expected,
    })
}

/// A source's interceptors, selector, channels and dead letters.
fn build_route(b: &mut Builder<'_>, s: &Named<SourceConfig>) -> Option<Route> {
    let component = format!("sources.{}", s.name);
    let c = &s.spec.common;

    let mut interceptors: Vec<Box<dyn Interceptor>> = Vec::new();
    for i in &c.interceptors {
        match i {
            InterceptorRef::Builtin(cfg) => match interceptor::build(cfg) {
                Ok(i) => interceptors.push(i),
                Err(e) => b.err(s.pos, component.clone(), e.to_string()),
            },
            // A plugin that failed to load was reported on its own definition.
            InterceptorRef::Plugin(name) if b.failed_plugins.contains(name) => {}
            InterceptorRef::Plugin(name) => match b.plugins.interceptor(name) {
                Ok(i) => interceptors.push(i),
                Err(e) => b.err(s.pos, component.clone(), e),
            },
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
        SelectorConfig::Wasm { plugin } if b.failed_plugins.contains(plugin) => return None,
        SelectorConfig::Wasm { plugin } => match b.plugins.selector(plugin, names.clone()) {
            Ok(sel) => sel,
            Err(e) => {
                b.err(s.pos, component.clone(), e);
                return None;
            }
        },
    };
    let channels: Vec<(String, Arc<dyn Channel>)> = names
        .iter()
        .filter_map(|n| Some((n.clone(), b.channel(n)?)))
        .collect();
    if channels.len() != names.len() {
        return None; // dangling names were reported by validation
    }
    let dead = b.dead_letters(c.dlq.as_ref(), &s.name, None);
    Some(Route {
        interceptors,
        selector,
        channels,
        dead,
        ids: c.event_id.clone(),
    })
}
