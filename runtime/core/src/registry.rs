//! Component registries: one table per kind (source, sink, channel) mapping a `type:` name to
//! the function that reads its settings. What a reader returns is a spec that builds the
//! running component, so reading the file and building the topology use the same entry.
//!
//! The engine fills a [`Registry`] with its built-in components ([`Registry::builtin`]); the
//! agent adds its connectors, each behind its cargo feature. A type whose feature was left out
//! of the build stays in the table as [`Unavailable`], so a pipeline naming it is refused with
//! the feature to enable rather than as an unknown type.

use std::{any::Any, fmt, path::Path, sync::Arc};

use serde::de::DeserializeOwned;

use crate::{
    channel::Channel,
    config::{
        Collector, Node, Pos,
        model::{RefKind, Reference},
    },
    event::codec::{Codec, CodecRef},
    metrics::{ChannelMetrics, Metrics},
    plugin::PluginSupport,
    sink::Sink,
    source::Source,
};

/// A channel's settings, ready to open it.
pub trait ChannelSpec: Any + fmt::Debug + Send + Sync {
    /// Opens the channel (metrics wrapping is the topology's job).
    fn open(&self, cx: &ChannelCx<'_>) -> Result<Arc<dyn Channel>, String>;

    /// The directory a durable channel keeps its events in. `sluice validate` does not open
    /// such a channel (that would create the directory, or fight a running agent for its
    /// lock), and no two components may use one path.
    fn storage_dir(&self) -> Option<&Path> {
        None
    }

    /// `None` when what the channel holds survives a crash of the agent; otherwise what is
    /// lost (see [`crate::guarantee`]).
    fn crash_loss(&self) -> Option<&'static str> {
        Some("it does not say that its events survive a crash")
    }
}

/// A source's settings, ready to build it.
pub trait SourceSpec: Any + fmt::Debug + Send + Sync {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String>;

    /// Events the source emits in total, when known (progress bars).
    fn expected_events(&self) -> Option<u64> {
        None
    }

    /// Paths this source needs to itself (a position file), with the field naming each.
    fn exclusive_paths(&self) -> Vec<(&'static str, &Path)> {
        Vec::new()
    }

    /// Whether what a crash interrupts is sent again (see [`crate::guarantee`]).
    fn upstream(&self) -> crate::guarantee::Upstream {
        crate::guarantee::Upstream::NoReplay("it does not say that it acknowledges after a commit")
    }

    /// Whether a transactional sink may commit this source's upstream positions in its own
    /// transactions instead of the source (a `kafka` source's offsets, for a `kafka` sink with
    /// `delivery: exactly_once`): see [`BuildCx::positions_committed_by`].
    fn positions_in_transactions(&self) -> bool {
        false
    }
}

/// A sink's settings, ready to build it.
pub trait SinkSpec: Any + fmt::Debug + Send + Sync {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String>;

    /// How long the runner may let the channel fill up to the batch size before taking, so a
    /// sink that writes one object per batch gets full objects (the `s3` sink's
    /// `roll_interval`). `None`: take whatever is there at once.
    fn linger(&self) -> Option<std::time::Duration> {
        None
    }

    /// `Some` when writing the same events again changes nothing (rows or items keyed on the
    /// event, objects or batches named by channel position), so a replay after a crash or a
    /// retry leaves one copy (see [`crate::guarantee`]).
    fn idempotent(&self) -> Option<crate::guarantee::Idempotence> {
        None
    }

    /// `Some(how)` when, with `delivery: exactly_once`, the sink writes each batch and its
    /// sources' upstream positions in one transaction (sources whose
    /// [`SourceSpec::positions_in_transactions`] is true, through a channel that does not
    /// keep events across a crash).
    fn transactions(&self) -> Option<&'static str> {
        None
    }
}

/// What opening a channel gets.
pub struct ChannelCx<'a> {
    pub name: &'a str,
    /// The channel's metric handles (durable channels count fsyncs and corrupt records).
    pub metrics: &'a ChannelMetrics,
}

/// What building a source or sink gets.
pub struct BuildCx<'a> {
    /// The component's name.
    pub name: &'a str,
    /// Events per batch (`batch_size`).
    pub batch_size: usize,
    /// Where relative paths in the pipeline file (TLS files) start from.
    pub base_dir: &'a Path,
    pub metrics: &'a Metrics,
    /// A sink's channel's [`Channel::id`](crate::channel::Channel::id) (`None` for sources,
    /// and for channels whose positions do not survive a restart).
    pub channel_id: Option<String>,
    /// A sink's `delivery:`.
    pub delivery: Option<crate::guarantee::Delivery>,
    /// A source: the transactional sink (its metrics label) that commits this source's
    /// upstream positions; the source then never commits them itself.
    pub positions_committed_by: Option<String>,
    /// A transactional sink: the sources (metrics labels) whose positions it commits.
    pub transactional_sources: Vec<String>,
    pub(crate) plugins: &'a dyn crate::plugin::PluginHost,
    pub(crate) tls: Option<&'a dyn crate::tls::TlsServers>,
    pub(crate) formats: &'a [NativeFormat],
}

/// An output format the agent writes natively rather than through a plugin (`parquet`, in
/// builds with a Parquet writer): its name and what makes an encoder from its settings.
#[derive(Clone, Copy)]
pub struct NativeFormat {
    pub name: &'static str,
    pub make: MakeFormat,
}

/// Makes a native format's encoder from its settings (the sink's `<format>:` mapping).
pub type MakeFormat = fn(Option<&serde_json::Value>) -> Result<Box<dyn Codec>, String>;

impl BuildCx<'_> {
    /// The codec a `codec:`/`format:` field names: built in, or a `serde` plugin.
    pub fn codec(&self, r: &CodecRef) -> Result<Box<dyn Codec>, String> {
        match r {
            CodecRef::Builtin(c) => Ok(Box::new(*c)),
            CodecRef::Plugin(name) => self.plugin_codec(name),
        }
    }

    /// A `serde` plugin by name, as a codec.
    pub fn plugin_codec(&self, name: &str) -> Result<Box<dyn Codec>, String> {
        self.plugins.codec(name)
    }

    /// The acceptor for a listener's `tls:` settings; an error when they are unusable, or when
    /// this build has no TLS library.
    pub fn tls_acceptor(
        &self,
        tls: &crate::tls::ServerTls,
    ) -> Result<std::sync::Arc<dyn crate::tls::TlsAccept>, String> {
        match self.tls {
            Some(t) => t.acceptor(tls, self.base_dir),
            None => Err(
                "`tls` needs a build with TLS (the `http` feature, in the default \
                 build); this one was built without it"
                    .into(),
            ),
        }
    }

    /// The native format `name` (see [`NativeFormat`]) with its `settings`; an error naming
    /// `feature` when this build does not have it.
    pub fn native_format(
        &self,
        name: &str,
        settings: Option<&serde_json::Value>,
        feature: &str,
    ) -> Result<Box<dyn Codec>, String> {
        match self.formats.iter().find(|f| f.name == name) {
            Some(f) => (f.make)(settings),
            None => Err(format!(
                "`format: {name}` needs a build with the `{feature}` feature (in the default build); this one was built without it"
            )),
        }
    }

    /// Secrets named by environment variable (`secret_env`) are read when the pipeline is
    /// built, from the process environment.
    pub fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// What a component's reader gets: the component's own settings (its mapping without `type`
/// and without the fields every component of its kind has), and where to report problems.
pub struct ReadCx<'a> {
    pub(crate) collector: &'a mut Collector,
    pub(crate) refs: &'a mut Vec<Reference>,
    /// `sources.<name>`, `sinks.<name>` or `channels.<name>`.
    pub component: &'a str,
    /// Where the component's name is written (for problems with the component as a whole).
    pub pos: Pos,
    /// The component's own settings.
    pub body: Node,
}

impl ReadCx<'_> {
    /// Deserializes the settings as `T`, recording any error (with its position).
    pub fn read<T: DeserializeOwned>(&mut self) -> Option<T> {
        self.collector.read(&self.body, Some(self.component))
    }

    /// [`read`](Self::read), then `check` — the checks that need more than types — each
    /// problem recorded at the field it concerns.
    pub fn read_checked<T: DeserializeOwned>(
        &mut self,
        check: fn(&T, &Node) -> Vec<(Pos, String)>,
    ) -> Option<T> {
        let cfg: T = self.read()?;
        let problems = check(&cfg, &self.body);
        let ok = problems.is_empty();
        for (pos, message) in problems {
            self.error(pos, message);
        }
        ok.then_some(cfg)
    }

    /// Deserializes `node` (part of the settings) as `T`, recording any error.
    pub fn read_node<T: DeserializeOwned>(&mut self, node: &Node) -> Option<T> {
        self.collector.read(node, Some(self.component))
    }

    /// Records a problem at `pos`.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.collector.push(pos, Some(self.component), message);
    }

    /// Where field `key` is written, else where the component is.
    pub fn field_pos(&self, key: &str) -> Pos {
        self.body.get(key).map_or(self.pos, |n| n.pos)
    }

    /// Records that field `key` (a `codec` or `format`) refers to a plugin when its value is
    /// none of the `builtins`, so validation checks that the plugin exists.
    pub fn codec_field(&mut self, key: &str, builtins: &[&str]) {
        if let Some(v) = self.body.get(key) {
            if let Some(name) = v.as_str().filter(|n| !builtins.contains(n)) {
                self.refs.push(Reference {
                    kind: RefKind::Plugin,
                    name: name.to_owned(),
                    pos: v.pos,
                    component: self.component.to_owned(),
                });
            }
        }
    }
}

/// Reads a source type whose settings are one struct that is its own spec.
pub fn plain_source<T: SourceSpec + DeserializeOwned + 'static>(
    cx: &mut ReadCx<'_>,
) -> Option<Arc<dyn SourceSpec>> {
    cx.read::<T>().map(|t| Arc::new(t) as Arc<dyn SourceSpec>)
}

/// Reads a sink type whose settings are one struct that is its own spec.
pub fn plain_sink<T: SinkSpec + DeserializeOwned + 'static>(
    cx: &mut ReadCx<'_>,
) -> Option<Arc<dyn SinkSpec>> {
    cx.read::<T>().map(|t| Arc::new(t) as Arc<dyn SinkSpec>)
}

/// Reads a channel type whose settings are one struct that is its own spec.
pub fn plain_channel<T: ChannelSpec + DeserializeOwned + 'static>(
    cx: &mut ReadCx<'_>,
) -> Option<Arc<dyn ChannelSpec>> {
    cx.read::<T>().map(|t| Arc::new(t) as Arc<dyn ChannelSpec>)
}

/// Reads one component type's settings into its spec.
pub type ReadFn<S> = fn(&mut ReadCx<'_>) -> Option<Arc<S>>;

/// One component type.
pub struct Entry<S: ?Sized> {
    pub name: &'static str,
    pub read: ReadFn<S>,
}

/// A component type this build left out, and the cargo feature that brings it in.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable {
    pub name: &'static str,
    pub feature: &'static str,
}

/// The component types of one kind.
pub struct Table<S: ?Sized> {
    entries: Vec<Entry<S>>,
    unavailable: Vec<Unavailable>,
}

impl<S: ?Sized> Default for Table<S> {
    fn default() -> Self {
        Table {
            entries: Vec::new(),
            unavailable: Vec::new(),
        }
    }
}

impl<S: ?Sized> Table<S> {
    /// Adds (or replaces) a type.
    pub fn add(&mut self, name: &'static str, read: ReadFn<S>) {
        self.entries.retain(|e| e.name != name);
        self.entries.push(Entry { name, read });
    }

    /// Records a type that needs `feature`, which this build does not have.
    pub fn unavailable(&mut self, name: &'static str, feature: &'static str) {
        self.unavailable.push(Unavailable { name, feature });
    }

    pub fn get(&self, name: &str) -> Option<&Entry<S>> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn missing(&self, name: &str) -> Option<Unavailable> {
        self.unavailable.iter().copied().find(|u| u.name == name)
    }

    /// Every type name, available or not, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries
            .iter()
            .map(|e| e.name)
            .chain(self.unavailable.iter().map(|u| u.name))
            .collect()
    }
}

/// Every component type an agent knows, and its plugin host.
pub struct Registry {
    pub sources: Table<dyn SourceSpec>,
    pub sinks: Table<dyn SinkSpec>,
    pub channels: Table<dyn ChannelSpec>,
    /// The plugin host, when this build has one (else a `plugins:` section is refused).
    pub plugins: Option<PluginSupport>,
    /// The cargo features compiled in, for messages about missing ones.
    pub features: Vec<&'static str>,
    /// TLS for the engine's listeners, when this build has a TLS library.
    pub tls: Option<Arc<dyn crate::tls::TlsServers>>,
    /// Output formats written natively (`parquet`).
    pub formats: Vec<NativeFormat>,
}

impl Registry {
    /// The engine's own components: the memory channel; generator, stdin, file, spooldir, exec,
    /// tcp, udp and syslog sources;
    /// null, stdout, logger and file sinks. No plugin host.
    pub fn builtin() -> Self {
        use crate::{channel::memory, sink, source};
        let mut r = Registry {
            sources: Table::default(),
            sinks: Table::default(),
            channels: Table::default(),
            plugins: None,
            features: Vec::new(),
            tls: None,
            formats: Vec::new(),
        };
        r.channels
            .add("memory", plain_channel::<memory::MemoryChannelConfig>);
        r.sources.add(
            "generator",
            plain_source::<source::generator::GeneratorConfig>,
        );
        r.sources.add("stdin", source::stdin::read);
        r.sources.add("file", source::tail::read);
        r.sources.add("spooldir", source::spooldir::read);
        r.sources.add("exec", source::exec::read);
        r.sources.add("tcp", source::net::read_tcp);
        r.sources.add("udp", source::net::read_udp);
        r.sources
            .add("syslog", plain_source::<source::net::SyslogConfig>);
        r.sinks
            .add("null", plain_sink::<sink::null::NullSinkConfig>);
        r.sinks.add("stdout", sink::console::read_stdout);
        r.sinks
            .add("logger", plain_sink::<sink::console::LoggerSinkConfig>);
        r.sinks.add("file", sink::file::read);
        r
    }

    /// The message for a type this build does not have.
    pub(crate) fn feature_message(&self, kind: &str, missing: Unavailable) -> String {
        format!(
            "`{}` {kind} need the `{}` feature; this build has: {}",
            missing.name,
            missing.feature,
            self.features_list()
        )
    }

    pub(crate) fn features_list(&self) -> String {
        if self.features.is_empty() {
            "no optional features (built with --no-default-features)".to_owned()
        } else {
            self.features.join(", ")
        }
    }
}
