//! What a plugin instance can touch: per-store state, limits, and the linker.
//!
//! WASI is deny-all: no preopened directories, no environment, no arguments, no network;
//! stdout and stderr go to the agent's log (cut and rate-limited by the plugin's
//! [`GuestQuota`]). A component that imports anything beyond the `sluice:plugin` host
//! interface and the harmless WASI interfaces is refused at load with the name of the import.
//! Sleeps are allowed only within the call's deadline: a WASI sleep blocks in the host, where
//! the epoch deadline cannot interrupt it, so one past the deadline fails the call at once.
//! Random bytes are capped per request ([`MAX_RANDOM_BYTES`]).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use wasmtime::{
    Engine, ResourceLimiter, StoreContextMut, StoreLimits, StoreLimitsBuilder,
    component::{Component, Linker, Resource, ResourceTable, types::ComponentItem},
};
use wasmtime_wasi::{
    HostMonotonicClock, WasiCtx, WasiCtxView, WasiView,
    cli::{IsTerminal, StdoutStream},
    p2::{DynPollable, Pollable},
};

use super::{PluginError, quota::GuestQuota};

/// Most random bytes one `get-random-bytes` call may ask for (WASI's default is 64 MiB, which
/// the host allocates before the guest's memory cap applies).
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// The WASI clock interface whose sleeps are bounded (the version wasmtime-wasi provides;
/// guests built against older 0.2 versions link to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

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
    quota: Arc<GuestQuota>,
    /// The guest's monotonic clock counts from here.
    clock_origin: Instant,
    /// When the current call's deadline passes: no sleep may end later.
    call_ends: Instant,
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
    pub fn new(quota: &Arc<GuestQuota>, memory_limit: usize) -> Self {
        let clock_origin = Instant::now();
        let wasi = WasiCtx::builder()
            .stdout(LogStream {
                quota: quota.clone(),
                stream: "stdout",
            })
            .stderr(LogStream {
                quota: quota.clone(),
                stream: "stderr",
            })
            .monotonic_clock(GuestClock(clock_origin))
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limits: Limits::new(memory_limit),
            quota: quota.clone(),
            clock_origin,
            call_ends: clock_origin,
        }
    }

    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Whether the current call has run past its deadline.
    pub(super) fn past_deadline(&self) -> bool {
        Instant::now() >= self.call_ends
    }

    /// Starts a call (or `init`) that may run for `budget`.
    pub(super) fn start_call(&mut self, budget: Duration) {
        let now = Instant::now();
        self.call_ends = now.checked_add(budget).unwrap_or(now);
    }

    pub(super) fn host_log(&self, level: tracing::Level, message: &str) {
        self.quota.log(level, None, message.as_bytes(), 0);
    }

    pub(super) fn host_counter_add(&self, name: &str, delta: i64) {
        self.quota.counter_add(name, delta);
    }

    /// A pollable that is ready after `duration`, unless that is past the call's deadline: then
    /// the call fails now instead of blocking the agent's thread where no deadline reaches.
    fn sleep(&mut self, duration: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let now = Instant::now();
        let ends = now.checked_add(duration).filter(|&t| t <= self.call_ends);
        let Some(ends) = ends else {
            self.quota.note_sleep_refused();
            wasmtime::bail!(
                "plugin asked to sleep {duration:?}, past its call's deadline (sleeps must end \
                 within the deadline)"
            );
        };
        let sleep = self
            .table
            .push(Sleep(tokio::time::Instant::from_std(ends)))?;
        wasmtime_wasi::p2::subscribe(&mut self.table, sleep)
    }
}

/// The guest's monotonic clock: nanoseconds since its instance started.
struct GuestClock(Instant);

impl HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A guest's sleep, already checked against its call's deadline.
struct Sleep(tokio::time::Instant);

#[async_trait::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

/// The store's resource limiter: wasmtime's [`StoreLimits`] (a growth past the limit traps)
/// plus a record of that refusal, so a call ended by the memory cap is told apart from other
/// traps by this flag rather than by the error's text.
pub struct Limits {
    inner: StoreLimits,
    memory_refused: bool,
    /// The largest size any of the instance's memories has grown to: guest memory only grows,
    /// so this is what a leak shows as, and what proactive recycling watches.
    largest_memory: usize,
}

impl Limits {
    pub fn new(memory_limit: usize) -> Self {
        Limits {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            memory_refused: false,
            largest_memory: 0,
        }
    }

    /// The largest memory of the instance, in bytes.
    pub fn largest_memory(&self) -> usize {
        self.largest_memory
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
        if matches!(allowed, Ok(true)) {
            self.largest_memory = self.largest_memory.max(desired);
        } else {
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
    super::offload::add_to_linker(&mut linker)
        .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
    super::bindings::interceptor::Interceptor::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |s| s,
    )
    .map_err(|e| PluginError::Engine(e.to_string()))?;
    bound_sleeps(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
    Ok(linker)
}

/// Replaces WASI's sleeps (`subscribe-duration`, `subscribe-instant`) with ones bounded by the
/// call's deadline.
fn bound_sleeps(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut cx: StoreContextMut<'_, StoreState>, (nanos,): (u64,)| {
            Ok((cx.data_mut().sleep(Duration::from_nanos(nanos))?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut cx: StoreContextMut<'_, StoreState>, (when,): (u64,)| {
            let s = cx.data_mut();
            let now = s.clock_origin.elapsed().as_nanos() as u64;
            Ok((s.sleep(Duration::from_nanos(when.saturating_sub(now)))?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
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
    quota: Arc<GuestQuota>,
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
            quota: self.quota.clone(),
            stream: self.stream,
            line: Vec::new(),
            cut: 0,
        })
    }
}

struct LogWriter {
    quota: Arc<GuestQuota>,
    stream: &'static str,
    line: Vec<u8>,
    /// Bytes of the current line left out: only [`MAX_LINE`](super::quota::MAX_LINE) are
    /// buffered, so a plugin cannot flood memory.
    cut: usize,
}

impl LogWriter {
    fn emit(&mut self) {
        self.quota.log(
            tracing::Level::INFO,
            Some(self.stream),
            &self.line,
            self.cut,
        );
        self.line.clear();
        self.cut = 0;
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
            } else if self.line.len() < super::quota::MAX_LINE {
                self.line.push(b);
            } else {
                self.cut += 1;
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
