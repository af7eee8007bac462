//! The one wasmtime engine of an agent, its epoch clock, and the on-disk compile cache.
//!
//! Component model, epoch interruption (per-call deadlines) and the pooling allocator are
//! configured here and nowhere else. Compiled components are cached under
//! `$SLUICE_CACHE_DIR` (default `~/.cache/sluice/components`) keyed by the content digest
//! and the engine's compatibility hash, so a restart or a swap back to a known version loads
//! in well under a millisecond instead of compiling.

use std::{
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, component::Component,
};

use super::PluginError;

/// How often the epoch advances, and so how often a running call checks its deadline (on the
/// clock: a call is interrupted within one tick after its deadline). Each tick wakes a thread
/// that shares the agent's cores: at 1 ms the ticks cost 2–3 % of an agent running a fast
/// plugin on one core.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest memory any plugin instance may be given (per-plugin limits are lower).
pub const MAX_MEMORY: usize = 1 << 30;

pub struct PluginEngine {
    pub engine: Engine,
    cache_dir: Option<PathBuf>,
    engine_hash: String,
    /// Profiling: code must live in anonymous memory, where `perf` consults the perf map (it
    /// attributes samples in a mapped cache file to the file instead).
    perfmap: bool,
}

static SHARED: OnceLock<Result<Arc<PluginEngine>, String>> = OnceLock::new();

impl PluginEngine {
    /// The process-wide engine, created (with its epoch ticker thread) on first use.
    pub fn shared() -> Result<Arc<PluginEngine>, PluginError> {
        SHARED
            .get_or_init(|| PluginEngine::new().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(PluginError::Engine)
    }

    fn new() -> Result<PluginEngine, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(512)
            .total_core_instances(2048)
            .total_memories(512)
            .total_tables(2048)
            .total_stacks(512)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(32)
            .table_elements(100_000)
            .max_memory_size(MAX_MEMORY);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .max_wasm_stack(1 << 20);
        let perfmap = std::env::var_os("SLUICE_WASM_PERFMAP").is_some();
        if perfmap {
            // Names compiled plugin functions for `perf` (writes /tmp/perf-<pid>.map).
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&cfg).map_err(|e| PluginError::Engine(e.to_string()))?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish());
        let cache_dir = std::env::var_os("SLUICE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice")))
            .map(|d| d.join("components"));
        Ok(PluginEngine {
            engine,
            cache_dir,
            engine_hash,
            perfmap,
        })
    }

    /// Compiles `bytes` (or loads the cached compilation). Returns the component and the
    /// content digest (`sha256:<hex>`). `name` says which plugin in the log line a compile
    /// writes (it can take seconds for an interpreter compiled to Wasm).
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<(Component, String), PluginError> {
        let hex = hex::encode(Sha256::digest(bytes));
        let digest = format!("sha256:{hex}");
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hex}-{}.cwasm", self.engine_hash)));
        if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: the file was written by `precompile_component` of an engine with the same
            // compatibility hash (it is in the name), into a directory only this tool writes.
            let loaded = if self.perfmap {
                std::fs::read(path)
                    .map_err(wasmtime::Error::from)
                    .and_then(|b| unsafe { Component::deserialize(&self.engine, b) })
            } else {
                unsafe { Component::deserialize_file(&self.engine, path) }
            };
            match loaded {
                Ok(c) => return Ok((c, digest)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compile cache entry")
                }
            }
        }
        let cache_note = if cached.is_some() {
            "cached afterwards"
        } else {
            "no cache directory: compiled on every start"
        };
        tracing::info!(
            plugin = name,
            size_kib = bytes.len() >> 10,
            "compiling plugin {name} ({cache_note})"
        );
        let started = std::time::Instant::now();
        let compiled = self.engine.precompile_component(bytes).map_err(|e| {
            PluginError::Invalid(format!("not a loadable WebAssembly component: {e:#}"))
        })?;
        tracing::info!(
            plugin = name,
            seconds = started.elapsed().as_secs_f64(),
            "compiled plugin {name}"
        );
        if let Some(path) = &cached {
            if let Err(e) = write_atomically(path, &compiled) {
                tracing::debug!(path = %path.display(), error = %e, "compile cache not written");
            }
        }
        // SAFETY: `compiled` was produced just above by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| PluginError::Invalid(e.to_string()))?;
        Ok((component, digest))
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}
