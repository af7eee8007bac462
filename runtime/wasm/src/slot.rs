//! One configured plugin: its current version, live instances, calls, health and hot swap.
//!
//! A reload compiles, links and `init`s the new version off the hot path; only when all of
//! that worked is it published (a version bump), and users switch between batches. A version
//! that fails any step is refused and the old one keeps running. A plugin comes from a file or
//! from an OCI registry ([`PluginSource`]); a reload re-reads the file or re-resolves the tag first.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use wasmtime::{
    Store,
    component::{Component, InstancePre, Linker},
};

use super::{
    CallFailure, FailureKind, PluginError, PluginMetrics, World,
    bindings::{interceptor, packed, route_selector, selector, serde},
    engine::PluginEngine,
    oci::{self, OciRef},
    offload::{self, outside_async},
    pacing::{BatchPacer, Notice, Notices, Resized},
    quota::GuestQuota,
    sandbox::{self, StoreState},
};

/// Where a plugin's component comes from.
#[derive(Debug, Clone)]
pub enum PluginSource {
    File(PathBuf),
    /// `oci://…`: a tag is re-resolved on every reload, a digest is fixed.
    Oci(OciRef),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::File(p) => write!(f, "{}", p.display()),
            PluginSource::Oci(r) => write!(f, "{}{r}", oci::SCHEME),
        }
    }
}

/// Consecutive failed calls after which a plugin is reported unhealthy.
pub const UNHEALTHY_AFTER: u64 = 5;

pub const DEFAULT_MEMORY: usize = 64 << 20;
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);
/// Budget for instantiation plus `init`: off the hot path, and interpreters compiled to Wasm
/// (componentize-py) start slowly, so it is larger than a call's; a runaway `init` still ends.
pub const INIT_DEADLINE: Duration = Duration::from_secs(5);
/// By default an instance is replaced once its memory passes this share of the cap (in
/// percent): guests built by some toolchains grow by about one batch per call and never
/// shrink, and a fresh instance costs milliseconds where a trap at the cap costs a failed call.
pub const DEFAULT_RECYCLE_PERCENT: usize = 75;

/// A plugin's limits from its `limits:` (each `None` takes its default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotLimits {
    pub memory: Option<usize>,
    pub deadline: Option<Duration>,
    /// Replace an instance after this many calls.
    pub recycle_after_calls: Option<u64>,
    /// Replace an instance whose memory passed this many bytes.
    pub recycle_memory: Option<usize>,
}

/// A compiled, linked version of a plugin.
pub struct Loaded {
    pub digest: String,
    pub world: World,
    pre: InstancePre<StoreState>,
}

/// World-specific bindings of a live instance.
pub enum Bound {
    Typed(interceptor::Interceptor),
    Packed(packed::PackedInterceptor),
    Serde(serde::Serde),
    Selector(selector::Selector),
    RouteSelector(route_selector::RouteSelector),
}

/// An instance owned by one user (a source's chain, a codec, a selector).
pub struct Live {
    pub store: Store<StoreState>,
    pub bound: Bound,
    pub version: u64,
    pub digest: String,
    /// Calls this instance answered.
    calls: u64,
    /// How long its last call took (see [`offload::runs_inline`]).
    last_took: Option<Duration>,
    /// Past this memory the instance is recycled: the plugin's threshold, or halfway from what
    /// the instance had after `init` to the cap when that was already past the threshold (so
    /// a guest that starts big is not recycled after every call).
    recycle_memory: usize,
    /// Why it is to be replaced before its next call (see [`PluginSlot::ready`]).
    retire: Option<Retire>,
}

impl Live {
    /// Whether its next call runs on the async worker (see [`offload::runs_inline`]).
    pub fn runs_inline(&self) -> bool {
        offload::runs_inline(self.last_took)
    }
}

/// Why an instance that works is replaced by a fresh one.
#[derive(Debug, Clone, Copy)]
enum Retire {
    Memory,
    Calls,
}

impl Retire {
    /// The `kind` label of `sluice_plugin_adjustments_total`.
    fn kind(self) -> &'static str {
        match self {
            Retire::Memory => "recycled_memory",
            Retire::Calls => "recycled_calls",
        }
    }
}

/// Counters shown by `GET /plugins`.
#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    swaps: AtomicU64,
    swap_failures: AtomicU64,
}

pub struct PluginSlot {
    pub name: Arc<str>,
    /// The file loaded (for an OCI plugin, the component in the cache at start).
    pub path: PathBuf,
    pub source: PluginSource,
    /// How often an OCI tag is re-resolved (a new digest is swapped in).
    pub refresh: Option<Duration>,
    /// The manifest digest an OCI plugin's current version came from.
    manifest_digest: Mutex<Option<String>>,
    config_json: String,
    memory_limit: usize,
    deadline: Duration,
    recycle_after_calls: u64,
    recycle_memory: usize,
    /// Events per call, learnt from the time calls take.
    pacer: BatchPacer,
    notices: Notices,
    /// An instance made and `init`ed but not yet used (the one that proved a version loads),
    /// handed to the first user so that `init` runs once per instance actually used.
    spare: Mutex<Option<Live>>,
    engine: Arc<PluginEngine>,
    linker: Arc<Linker<StoreState>>,
    current: RwLock<Arc<Loaded>>,
    version: AtomicU64,
    pub metrics: PluginMetrics,
    /// Log lines and counter names, shared by every instance of every version.
    quota: Arc<GuestQuota>,
    stats: Stats,
    unhealthy: AtomicBool,
    /// Channel names a selector's `init` receives (kept to validate swapped versions).
    selector_channels: Mutex<Vec<String>>,
    /// Serialises reloads of this slot.
    reloading: Mutex<()>,
    pub last_error: Mutex<Option<String>>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    Swapped { from: String, to: String },
    Unchanged,
}

impl PluginSlot {
    /// Loads the plugin at `path`, checking that it compiles, links and `init`s.
    pub fn load(
        name: &str,
        path: PathBuf,
        config: &serde_json::Value,
        memory_limit: Option<usize>,
        deadline: Option<Duration>,
        metrics: PluginMetrics,
    ) -> Result<Arc<PluginSlot>, PluginError> {
        let limits = SlotLimits {
            memory: memory_limit,
            deadline,
            ..SlotLimits::default()
        };
        Self::load_from(
            name,
            PluginSource::File(path),
            config,
            limits,
            None,
            metrics,
        )
    }

    /// Loads the plugin from `source` (an OCI reference is fetched first, or taken from the
    /// cache), checking that it compiles, links and `init`s.
    pub fn load_from(
        name: &str,
        source: PluginSource,
        config: &serde_json::Value,
        limits: SlotLimits,
        refresh: Option<Duration>,
        metrics: PluginMetrics,
    ) -> Result<Arc<PluginSlot>, PluginError> {
        let engine = PluginEngine::shared()?;
        let linker = Arc::new(sandbox::linker(&engine.engine)?);
        let memory_limit = limits
            .memory
            .unwrap_or(DEFAULT_MEMORY)
            .min(super::engine::MAX_MEMORY);
        let deadline = limits.deadline.unwrap_or(DEFAULT_DEADLINE);
        let config_json = serde_json::to_string(config).unwrap_or_else(|_| "{}".into());
        let (path, fetched) = locate(name, &source, true)?;
        let bytes = read(&path)?;
        let loaded = prepare(&engine, &linker, name, &bytes)?;
        let slot = PluginSlot {
            name: name.into(),
            path,
            source,
            refresh,
            manifest_digest: Mutex::new(fetched.map(|f| f.manifest_digest)),
            config_json,
            memory_limit,
            deadline,
            recycle_after_calls: limits.recycle_after_calls.unwrap_or(0),
            recycle_memory: limits
                .recycle_memory
                .unwrap_or(memory_limit * DEFAULT_RECYCLE_PERCENT / 100),
            pacer: BatchPacer::default(),
            notices: Notices::default(),
            spare: Mutex::new(None),
            engine,
            linker,
            current: RwLock::new(Arc::new(loaded)),
            version: AtomicU64::new(1),
            quota: GuestQuota::new(name.into(), metrics.clone()),
            metrics,
            stats: Stats::default(),
            unhealthy: AtomicBool::new(false),
            selector_channels: Mutex::new(Vec::new()),
            reloading: Mutex::new(()),
            last_error: Mutex::new(None),
        };
        // A selector is validated by its users (they know the channel list).
        if !slot.world().is_selector() {
            let current = slot.current();
            let first = slot.instantiate_version(&current, 1, &[])?;
            *slot.spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(first);
        }
        slot.metrics.healthy.set(1);
        slot.metrics.call_limit.set(slot.pacer.limit() as i64);
        Ok(Arc::new(slot))
    }

    pub fn world(&self) -> World {
        self.current().world
    }

    pub fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// A new instance of the current version, `init`ed and ready.
    pub fn instantiate(&self, selector_channels: &[String]) -> Result<Live, PluginError> {
        if self.world().is_selector() {
            let mut known = self
                .selector_channels
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if known.is_empty() {
                *known = selector_channels.to_vec();
            }
        }
        // Read the version before the code: a swap in between is then seen at the next batch.
        let version = self.version();
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        match spare.take() {
            Some(live) if live.version == version => return Ok(live),
            // A swap landed since `version` was read: its instance is for the next user.
            Some(live) if live.version > version => *spare = Some(live),
            _ => {}
        }
        drop(spare);
        let loaded = self.current();
        self.instantiate_version(&loaded, version, selector_channels)
    }

    /// The instance in `live`, first (re)made if there is none, the plugin was swapped, or the
    /// instance is due for recycling (which is logged and counted).
    pub fn ready<'l>(
        &self,
        live: &'l mut Option<Live>,
        selector_channels: &[String],
    ) -> Result<&'l mut Live, PluginError> {
        let version = self.version();
        match live.as_mut() {
            Some(old) if old.version == version => {
                if let Some(why) = old.retire.take() {
                    // The replacement is made first: if it cannot start, the instance that
                    // works keeps serving (and recycling is tried again after its next call).
                    match self.instantiate(selector_channels) {
                        Ok(new) => {
                            self.recycled(old, why);
                            *old = new;
                        }
                        Err(e) => tracing::warn!(
                            plugin = &*self.name,
                            error = %e,
                            "plugin instance due for recycling kept: a new one cannot start"
                        ),
                    }
                }
            }
            _ => {
                *live = None;
                *live = Some(self.instantiate(selector_channels)?);
            }
        }
        live.as_mut()
            .ok_or_else(|| PluginError::Init("no instance".into()))
    }

    fn recycled(&self, old: &Live, why: Retire) {
        self.metrics.adjusted(why.kind()).inc();
        if let Some(held) = self.notices.allow(Notice::Recycled) {
            tracing::info!(
                plugin = &*self.name,
                digest = %old.digest,
                calls = old.calls,
                memory_mib = mib(old.store.data().limits.largest_memory()),
                recycle_at_mib = mib(old.recycle_memory),
                memory_limit_mib = mib(self.memory_limit),
                not_logged = held,
                "plugin instance recycled ({})",
                match why {
                    Retire::Memory => "its memory passed the recycling threshold",
                    Retire::Calls => "it reached its number of calls",
                }
            );
        }
    }

    /// Events the next call may carry (learnt from the time calls take).
    pub fn call_limit(&self) -> usize {
        self.pacer.limit()
    }

    /// Records a failed call's events being split in halves to find the failing ones.
    pub fn record_bisection(&self, digest: &str, events: usize, failure: &CallFailure) {
        self.metrics.adjusted("bisected").inc();
        if let Some(held) = self.notices.allow(Notice::Bisected) {
            tracing::warn!(
                plugin = &*self.name,
                digest,
                batch = events,
                not_logged = held,
                "plugin call failed ({failure}); splitting its events to find the failing ones"
            );
        }
    }

    fn instantiate_version(
        &self,
        loaded: &Loaded,
        version: u64,
        channels: &[String],
    ) -> Result<Live, PluginError> {
        outside_async(|| self.instantiate_now(loaded, version, channels))
    }

    fn instantiate_now(
        &self,
        loaded: &Loaded,
        version: u64,
        channels: &[String],
    ) -> Result<Live, PluginError> {
        let mut store = Store::new(
            &self.engine.engine,
            StoreState::new(&self.quota, self.memory_limit),
        );
        store.limiter(|s| &mut s.limits);
        // Every epoch tick a running call checks its deadline on the clock: it is interrupted
        // within one tick after it, never before.
        store.epoch_deadline_callback(|cx| {
            if cx.data().past_deadline() {
                Err(wasmtime::Trap::Interrupt.into())
            } else {
                Ok(wasmtime::UpdateDeadline::Continue(1))
            }
        });
        store.set_epoch_deadline(1);
        store
            .data_mut()
            .start_call(self.deadline.max(INIT_DEADLINE));
        let fail = |e: wasmtime::Error| PluginError::Init(format!("{e:#}"));
        // Instantiate through the world's bindings, then call its `init` with `args`.
        macro_rules! bind {
            ($pre:ty, $variant:ident, $($arg:expr),*) => {{
                let b = <$pre>::new(loaded.pre.clone()).map_err(fail)?.instantiate(&mut store).map_err(fail)?;
                let init = b.call_init(&mut store, $($arg),*).map_err(fail)?.map(|_| ());
                (Bound::$variant(b), init)
            }};
        }
        let config = self.config_json.as_str();
        let (bound, init) = match loaded.world {
            World::Interceptor => bind!(interceptor::InterceptorPre<StoreState>, Typed, config),
            World::PackedInterceptor => {
                bind!(packed::PackedInterceptorPre<StoreState>, Packed, config)
            }
            World::Serde => bind!(serde::SerdePre<StoreState>, Serde, config),
            World::Selector => bind!(
                selector::SelectorPre<StoreState>,
                Selector,
                channels,
                config
            ),
            World::RouteSelector => bind!(
                route_selector::RouteSelectorPre<StoreState>,
                RouteSelector,
                channels,
                config
            ),
        };
        init.map_err(PluginError::Init)?;
        let started = store.data().limits.largest_memory();
        let recycle_memory = if started < self.recycle_memory {
            self.recycle_memory
        } else {
            if let Some(held) = self.notices.allow(Notice::Recycled) {
                tracing::warn!(
                    plugin = &*self.name,
                    memory_mib = mib(started),
                    recycle_at_mib = mib(self.recycle_memory),
                    memory_limit_mib = mib(self.memory_limit),
                    not_logged = held,
                    "plugin instance starts past its recycling threshold; raise limits.memory"
                );
            }
            started + (self.memory_limit.saturating_sub(started)) / 2
        };
        Ok(Live {
            store,
            bound,
            version,
            digest: loaded.digest.clone(),
            calls: 0,
            last_took: None,
            recycle_memory,
            retire: None,
        })
    }

    /// Runs one call on `live` under the deadline, recording metrics and health. `events` is
    /// how many events the call carries when its size is the host's to choose (interceptors
    /// and selectors; 0 for a codec's payload): its time then sizes the next calls.
    pub fn call<R: Send>(
        &self,
        live: &mut Live,
        events: usize,
        f: impl FnOnce(&mut Store<StoreState>, &Bound) -> wasmtime::Result<R> + Send,
    ) -> Result<R, CallFailure> {
        live.store.set_epoch_deadline(1);
        let state = live.store.data_mut();
        state.limits.take_memory_refused();
        state.start_call(self.deadline);
        let started = Instant::now();
        let result = if live.runs_inline() {
            f(&mut live.store, &live.bound)
        } else {
            outside_async(|| f(&mut live.store, &live.bound))
        };
        let took = started.elapsed();
        live.last_took = Some(took);
        self.metrics.duration.observe(took.as_secs_f64());
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.metrics.calls(&live.digest).inc();
        live.calls += 1;
        match result {
            Ok(r) => {
                if let Some(resized) = self.pacer.after_call(events, took, self.deadline) {
                    self.resized(&live.digest, resized, Some(took));
                }
                let memory = live.store.data().limits.largest_memory();
                if memory > live.recycle_memory {
                    live.retire = Some(Retire::Memory);
                } else if self.recycle_after_calls > 0 && live.calls >= self.recycle_after_calls {
                    live.retire = Some(Retire::Calls);
                }
                Ok(r)
            }
            Err(e) => {
                let memory_refused = live.store.data_mut().limits.take_memory_refused();
                let failure = CallFailure::from_wasmtime(&e, memory_refused);
                self.record_failure(&failure);
                self.limit_hit(live, events, &failure);
                Err(failure)
            }
        }
    }

    /// Logs a call that met its deadline or the memory cap, and shrinks the call size after
    /// a deadline.
    fn limit_hit(&self, live: &Live, events: usize, failure: &CallFailure) {
        let digest = &live.digest;
        match failure.kind {
            FailureKind::Deadline => {
                let resized = (events > 0)
                    .then(|| self.pacer.after_deadline(events))
                    .flatten();
                if let Some(held) = self.notices.allow(Notice::Deadline) {
                    tracing::warn!(
                        plugin = &*self.name,
                        %digest,
                        batch = events,
                        deadline_ms = self.deadline.as_millis() as u64,
                        next_batch = self.pacer.limit(),
                        not_logged = held,
                        "plugin call ran past its deadline and was interrupted"
                    );
                }
                if let Some(r) = resized {
                    self.metrics.adjusted("call_size_lowered").inc();
                    self.metrics.call_limit.set(r.to as i64);
                }
            }
            FailureKind::MemoryLimit => {
                if let Some(held) = self.notices.allow(Notice::MemoryCap) {
                    tracing::warn!(
                        plugin = &*self.name,
                        %digest,
                        batch = events,
                        calls = live.calls,
                        memory_limit_mib = mib(self.memory_limit),
                        not_logged = held,
                        "plugin call hit its memory limit; the instance is replaced"
                    );
                }
            }
            _ => {
                if let Some(held) = self.notices.allow(Notice::Failed) {
                    tracing::warn!(
                        plugin = &*self.name,
                        %digest,
                        batch = events,
                        not_logged = held,
                        "plugin call failed: {failure}"
                    );
                }
            }
        }
    }

    fn resized(&self, digest: &str, r: Resized, took: Option<Duration>) {
        let shrunk = r.to < r.from;
        self.metrics
            .adjusted(if shrunk {
                "call_size_lowered"
            } else {
                "call_size_raised"
            })
            .inc();
        self.metrics.call_limit.set(r.to as i64);
        if let Some(held) = self.notices.allow(Notice::Resized) {
            tracing::info!(
                plugin = &*self.name,
                digest,
                from = r.from,
                to = r.to,
                call_ms = took.map(|t| t.as_secs_f64() * 1e3),
                deadline_ms = self.deadline.as_millis() as u64,
                not_logged = held,
                "plugin call size {}",
                if shrunk { "lowered" } else { "raised" }
            );
        }
    }

    /// A call that returned but whose answer was unusable (wrong count, bad indices).
    pub fn record_failure(&self, failure: &CallFailure) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.metrics.trap(failure.kind.as_str());
        let n = self
            .stats
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n >= UNHEALTHY_AFTER && !self.unhealthy.swap(true, Ordering::Relaxed) {
            self.metrics.healthy.set(0);
            tracing::error!(plugin = &*self.name, failures = n, last = %failure, "plugin marked unhealthy");
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure.to_string());
    }

    pub fn record_success(&self) {
        if self.stats.consecutive_failures.swap(0, Ordering::Relaxed) > 0
            && self.unhealthy.swap(false, Ordering::Relaxed)
        {
            self.metrics.healthy.set(1);
            tracing::info!(plugin = &*self.name, "plugin healthy again");
        }
    }

    pub fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Re-reads the file; if it changed, prepares and publishes the new version.
    pub fn reload(&self) -> Result<Reloaded, PluginError> {
        let _guard = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.try_reload();
        match &result {
            Ok(Reloaded::Swapped { from, to }) => {
                self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                self.metrics.swaps.inc();
                tracing::info!(plugin = &*self.name, %from, %to, "plugin swapped");
            }
            Ok(Reloaded::Unchanged) => {}
            Err(e) => {
                self.stats.swap_failures.fetch_add(1, Ordering::Relaxed);
                self.metrics.swap_failures.inc();
                tracing::error!(plugin = &*self.name, error = %e, "new plugin version refused; the old one keeps running");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<Reloaded, PluginError> {
        let (path, fetched) = locate(&self.name, &self.source, false)?;
        let bytes = read(&path)?;
        let old = self.current();
        let loaded = prepare(&self.engine, &self.linker, &self.name, &bytes)?;
        if loaded.digest == old.digest {
            // Same component (perhaps re-pushed with other annotations): nothing to swap.
            if let Some(f) = fetched {
                *self
                    .manifest_digest
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(f.manifest_digest);
            }
            return Ok(Reloaded::Unchanged);
        }
        let same_role = loaded.world == old.world
            || (loaded.world.is_interceptor() && old.world.is_interceptor())
            || (loaded.world.is_selector() && old.world.is_selector());
        if !same_role {
            return Err(PluginError::WrongWorld {
                found: loaded.world.name(),
                expected: format!("a `{}`", old.world.name()),
            });
        }
        // Prove the new version initialises before anyone depends on it.
        let channels = self
            .selector_channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut proof = self.instantiate_version(&loaded, 0, &channels)?;
        let to = loaded.digest.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        if let Some(f) = fetched {
            *self
                .manifest_digest
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(f.manifest_digest);
        }
        proof.version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        // A selector's proof was made with the channels of one user; others need their own.
        if !self.world().is_selector() {
            *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(proof);
        }
        Ok(Reloaded::Swapped {
            from: old.digest.clone(),
            to,
        })
    }

    /// A JSON summary for `GET /plugins`.
    pub fn describe(&self) -> serde_json::Value {
        let c = self.current();
        serde_json::json!({
            "name": &*self.name,
            "path": self.source.to_string(),
            "manifest_digest": self.manifest_digest.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "world": c.world.name(),
            "digest": c.digest,
            "version": self.version(),
            "healthy": self.healthy(),
            "calls": self.stats.calls.load(Ordering::Relaxed),
            "errors": self.stats.failures.load(Ordering::Relaxed),
            "swaps": self.stats.swaps.load(Ordering::Relaxed),
            "swap_failures": self.stats.swap_failures.load(Ordering::Relaxed),
            "last_error": self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }
}

/// The local file holding `source`'s component: the file itself, or the verified component
/// fetched into the OCI cache. With `offline_ok`, an unreachable registry falls back to what a
/// tag last resolved to (starting an agent); without, it is an error (a reload keeps the
/// running version and says why).
#[cfg(feature = "oci")]
fn locate(
    name: &str,
    source: &PluginSource,
    offline_ok: bool,
) -> Result<(PathBuf, Option<oci::Fetched>), PluginError> {
    let r = match source {
        PluginSource::File(p) => return Ok((p.clone(), None)),
        PluginSource::Oci(r) => r,
    };
    let fail = |error: String| PluginError::Fetch {
        reference: format!("{}{r}", oci::SCHEME),
        error,
    };
    let cache = oci::cache::Cache::open_default().map_err(|e| fail(e.to_string()))?;
    let opts = oci::Options::default();
    let fetched = oci::block_on(oci::client::fetch(r, &cache, &opts, offline_ok))
        .map_err(|e| fail(e.to_string()))?;
    tracing::debug!(plugin = name, reference = %r, manifest = %fetched.manifest_digest, offline = fetched.offline, "OCI plugin located");
    Ok((fetched.path.clone(), Some(fetched)))
}

/// Without the `oci` feature only files can be located.
#[cfg(not(feature = "oci"))]
fn locate(
    _name: &str,
    source: &PluginSource,
    _offline_ok: bool,
) -> Result<(PathBuf, Option<Fetched>), PluginError> {
    match source {
        PluginSource::File(p) => Ok((p.clone(), None)),
        PluginSource::Oci(r) => Err(PluginError::Fetch {
            reference: format!("{}{r}", oci::SCHEME),
            error: "`oci://` plugins need the `oci` feature".into(),
        }),
    }
}

/// What a fetch reports (nothing can be fetched without the `oci` feature).
#[cfg(not(feature = "oci"))]
struct Fetched {
    manifest_digest: String,
}

fn mib(bytes: usize) -> usize {
    bytes >> 20
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path).map_err(|e| PluginError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })
}

/// Compile (or load from cache), check imports and world, and link.
fn prepare(
    engine: &PluginEngine,
    linker: &Linker<StoreState>,
    name: &str,
    bytes: &[u8],
) -> Result<Loaded, PluginError> {
    let (component, digest) = engine.load(name, bytes)?;
    sandbox::check_imports(&engine.engine, &component)?;
    let world = detect_world(engine, &component)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| PluginError::Invalid(format!("cannot link plugin: {e:#}")))?;
    Ok(Loaded { digest, world, pre })
}

pub(crate) fn detect_world(
    engine: &PluginEngine,
    component: &Component,
) -> Result<World, PluginError> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(&engine.engine).map(|(n, _)| n).collect();
    let has = |n: &str| exports.contains(&n);
    Ok(if has("intercept-packed") {
        World::PackedInterceptor
    } else if has("intercept") {
        World::Interceptor
    } else if has("decode") && has("encode") {
        World::Serde
    } else if has("select") {
        World::Selector
    } else if has("select-routes") {
        World::RouteSelector
    } else {
        return Err(PluginError::Invalid(format!(
            "not a Sluice plugin: it exports [{}], but no sluice:plugin world (interceptor, packed-interceptor, serde, selector, route-selector)",
            exports.join(", ")
        )));
    })
}
