//! What a plugin instance can touch: per-store state, limits, and the linker.
//!
//! WASI is deny-all: no preopened directories, no environment, no arguments, no network;
//! stdout and stderr go to the agent's log. A component that imports anything beyond the
//! `sluice:plugin` host interface and the harmless WASI interfaces is refused at load with
//! the name of the import.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use wasmtime::{
    Engine, ResourceLimiter, StoreLimits, StoreLimitsBuilder,
    component::{Component, Linker, ResourceTable, types::ComponentItem},
};
use wasmtime_wasi::{
    WasiCtx, WasiCtxView, WasiView,
    cli::{IsTerminal, StdoutStream},
};

use super::{PluginError, PluginMetrics};

/// Import prefixes a plugin may use. Filesystem and clocks are linked but reach nothing
/// dangerous: there are no preopened directories.
const ALLOWED_IMPORTS: &[&str] = &[
    "sluice:plugin/host@",
    "sluice:plugin/types@",
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: Limits,
    plugin: Arc<str>,
    metrics: PluginMetrics,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl StoreState {
    pub fn new(plugin: &Arc<str>, memory_limit: usize, metrics: PluginMetrics) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(LogStream {
                plugin: plugin.clone(),
                stream: "stdout",
            })
            .stderr(LogStream {
                plugin: plugin.clone(),
                stream: "stderr",
            })
            .build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limits: Limits::new(memory_limit),
            plugin: plugin.clone(),
            metrics,
        }
    }

    pub(super) fn host_log(&self, level: tracing::Level, message: &str) {
        let plugin = &*self.plugin;
        match level {
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
        }
    }

    pub(super) fn host_counter_add(&self, name: &str, delta: i64) {
        if delta > 0 {
            self.metrics.counter(name).inc_by(delta as u64);
        }
    }
}

/// The store's resource limiter: wasmtime's [`StoreLimits`] (a growth past the limit traps)
/// plus a record of that refusal, so a call ended by the memory cap is told apart from other
/// traps by this flag rather than by the error's text.
pub struct Limits {
    inner: StoreLimits,
    memory_refused: bool,
}

impl Limits {
    pub fn new(memory_limit: usize) -> Self {
        Limits {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            memory_refused: false,
        }
    }

    /// Whether a memory growth was refused since the last call; clears the record.
    pub fn take_memory_refused(&mut self) -> bool {
        std::mem::take(&mut self.memory_refused)
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_refused = true;
        }
        allowed
    }

    /// Growth allowed above that failed anyway (the system refused the memory).
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// The linker shared by every plugin: deny-all WASI plus the Sluice host interface.
pub fn linker(engine: &Engine) -> Result<Linker<StoreState>, PluginError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(|e| PluginError::Engine(e.to_string()))?;
    super::bindings::interceptor::Interceptor::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |s| s,
    )
    .map_err(|e| PluginError::Engine(e.to_string()))?;
    Ok(linker)
}

/// Refuses a component importing anything outside [`ALLOWED_IMPORTS`].
pub fn check_imports(engine: &Engine, component: &Component) -> Result<(), PluginError> {
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        if !matches!(
            item.ty,
            ComponentItem::ComponentInstance(_)
                | ComponentItem::ComponentFunc(_)
                | ComponentItem::Type(_)
        ) {
            return Err(PluginError::Invalid(format!(
                "plugin imports `{name}` of an unsupported kind"
            )));
        }
        if !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)) {
            return Err(PluginError::Invalid(format!(
                "plugin imports `{name}`, which Sluice does not provide to plugins (no network, no host \
                 access); allowed: {}",
                ALLOWED_IMPORTS
                    .iter()
                    .map(|p| format!("{p}*"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

/// Guest stdout/stderr, line by line into the log.
struct LogStream {
    plugin: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LogWriter {
            plugin: self.plugin.clone(),
            stream: self.stream,
            line: Vec::new(),
        })
    }
}

struct LogWriter {
    plugin: Arc<str>,
    stream: &'static str,
    line: Vec<u8>,
}

/// Longest line kept; the rest of a longer line is cut (a plugin cannot flood memory).
const MAX_LINE: usize = 4096;

impl LogWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        tracing::info!(
            plugin = &*self.plugin,
            stream = self.stream,
            "{}",
            text.trim_end()
        );
        self.line.clear();
    }
}

impl tokio::io::AsyncWrite for LogWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}
