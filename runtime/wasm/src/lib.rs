//! Sluice's plugin host: Wasm components implementing interceptors, codecs and selectors,
//! sandboxed (deadlines, memory caps, deny-all WASI) and hot-swapped. [`host::WasmHost`] is
//! what the engine sees (its `PluginHost`); everything else is how it works.
//!
//! A [`slot::PluginSlot`] is one configured plugin: the current compiled version plus what is
//! needed to swap in a new one. Users (an interceptor chain, a codec, a selector) hold their
//! own instance and re-instantiate between batches when the slot's version changes, so a swap
//! never splits a batch between versions. A trap never leaves this module as a panic: the
//! instance is dropped, and the caller isolates the poison events.

pub mod bindings;
pub mod codec;
pub mod engine;
pub mod host;
pub mod interceptor;
pub mod oci;
pub mod offload;
pub mod pacing;
pub mod packed;
pub mod quota;
pub mod sandbox;
pub mod selector;
pub mod slot;
pub mod template;
#[doc(hidden)]
pub mod test_guests;
pub mod watch;

pub use sluice_core::metrics::PluginMetrics;

/// Which world a component implements (found from its exports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `interceptor`: typed events and verdicts.
    Interceptor,
    /// `packed-interceptor`: one buffer each way.
    PackedInterceptor,
    Serde,
    Selector,
    /// `route-selector`: the selector role, its export named `select-routes`.
    RouteSelector,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Interceptor => "interceptor",
            World::PackedInterceptor => "packed-interceptor",
            World::Serde => "serde",
            World::Selector => "selector",
            World::RouteSelector => "route-selector",
        }
    }

    pub fn is_selector(self) -> bool {
        matches!(self, World::Selector | World::RouteSelector)
    }

    pub fn is_interceptor(self) -> bool {
        matches!(self, World::Interceptor | World::PackedInterceptor)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin file {path}: {error}")]
    Read { path: String, error: String },
    #[error("cannot fetch plugin {reference}: {error}")]
    Fetch { reference: String, error: String },
    #[error("{0}")]
    Invalid(String),
    #[error("plugin init failed: {0}")]
    Init(String),
    #[error("plugin engine error: {0}")]
    Engine(String),
    #[error("the plugin is a `{found}` component, but is used as {expected}")]
    WrongWorld {
        found: &'static str,
        expected: String,
    },
}

/// What kind of failure a [`CallFailure`] is; [`FailureKind::as_str`] is the `kind` label of
/// `sluice_plugin_traps_total` and the tag in dead-letter reasons, so those strings are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The call ran past its deadline and was interrupted.
    Deadline,
    /// The guest tried to grow its memory past the plugin's limit.
    MemoryLimit,
    StackOverflow,
    /// Any other trap or host-side error during the call.
    Trap,
    /// The plugin answered with an error of its own, or could not be started.
    GuestError,
    /// The call returned, but its answer was unusable (wrong count, bad indices, bad encoding).
    BadOutput,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Deadline => "deadline",
            FailureKind::MemoryLimit => "memory",
            FailureKind::StackOverflow => "stack_overflow",
            FailureKind::Trap => "trap",
            FailureKind::GuestError => "error",
            FailureKind::BadOutput => "bad_output",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call into a plugin failed; the instance is discarded after any of these.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({kind})")]
pub struct CallFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl CallFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        CallFailure {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_output(message: impl Into<String>) -> Self {
        Self::new(FailureKind::BadOutput, message)
    }

    /// Classifies a wasmtime error from a call. `memory_refused` is the store limiter's record
    /// of a refused memory growth: the error that growth raises is untyped, and its text is
    /// wasmtime's to change (and other errors mention memory too).
    fn from_wasmtime(e: &wasmtime::Error, memory_refused: bool) -> Self {
        let kind = match e.downcast_ref::<wasmtime::Trap>() {
            _ if memory_refused => FailureKind::MemoryLimit,
            Some(wasmtime::Trap::Interrupt) => FailureKind::Deadline,
            Some(wasmtime::Trap::StackOverflow) => FailureKind::StackOverflow,
            _ => FailureKind::Trap,
        };
        let message = match kind {
            FailureKind::Deadline => {
                "call exceeded its deadline (runaway plugin interrupted)".to_owned()
            }
            // The trap itself, or the reason a host function failed the call (a sleep past
            // the deadline, a refused request), not wasmtime's backtrace header.
            _ => match e.downcast_ref::<wasmtime::Trap>() {
                Some(t) => t.to_string(),
                None => e.root_cause().to_string(),
            },
        };
        CallFailure { kind, message }
    }
}

#[cfg(test)]
mod tests;
