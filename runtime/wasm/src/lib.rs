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
pub mod packed;
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
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Interceptor => "interceptor",
            World::PackedInterceptor => "packed-interceptor",
            World::Serde => "serde",
            World::Selector => "selector",
        }
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

/// Why a call into a plugin failed; the instance is discarded after any of these.
#[derive(Debug, Clone)]
pub struct CallFailure {
    /// `deadline`, `memory`, `stack_overflow`, `trap`, `error` or `bad_output`.
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl CallFailure {
    pub fn bad_output(message: impl Into<String>) -> Self {
        CallFailure {
            kind: "bad_output",
            message: message.into(),
        }
    }

    /// Classifies a wasmtime error from a call.
    fn from_wasmtime(e: &wasmtime::Error) -> Self {
        let kind = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => "deadline",
            Some(wasmtime::Trap::StackOverflow) => "stack_overflow",
            Some(_) => "trap",
            None if format!("{e:#}").contains("memory") => "memory",
            None => "trap",
        };
        let message = match kind {
            "deadline" => "call exceeded its deadline (runaway plugin interrupted)".to_owned(),
            _ => format!("{e:#}").lines().next().unwrap_or("trap").to_owned(),
        };
        CallFailure { kind, message }
    }
}

#[cfg(test)]
mod tests;
