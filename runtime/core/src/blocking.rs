//! Blocking work called from async code: file writes and fsyncs, Wasm compilation, opening
//! RocksDB, fetching plugins while a pipeline is built.
//!
//! On the agent's multi-thread runtime the work runs in place, after the worker hands its
//! other tasks to a fresh worker (`block_in_place`), so the admin server and every other
//! component keep running meanwhile; the work may borrow (a sink's batch) instead of being
//! copied onto a `spawn_blocking` thread. Elsewhere (a current-thread test runtime, a plain
//! thread) it simply runs.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs blocking `work` without stalling the runtime's other tasks.
pub fn run<R>(work: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
