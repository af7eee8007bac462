//! Sources: where events enter an agent.
//!
//! A source produces batches and hands each to its [`ChannelProcessor`]; it acknowledges
//! upstream (when it has an upstream) only after `process` returned Ok, which means the batch
//! is committed to every required channel. A source that ends (a generator with a count,
//! stdin at EOF) returns from `run`; the agent then drains and exits. Unbounded sources (the
//! file tailer) run until the agent is stopped.

pub mod exec;
pub mod feed;
pub mod generator;
pub mod net;
pub mod processor;
pub mod spooldir;
pub mod stdin;
pub mod supervisor;
pub mod tail;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use processor::{ChannelProcessor, ProcessError, Route, RouteSlot};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Process(#[from] ProcessError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What a running source gets from the agent.
pub struct SourceContext {
    pub name: String,
    pub out: ChannelProcessor,
    /// Cancelled when the agent stops; sources finish their current batch and return.
    pub shutdown: CancellationToken,
}

#[async_trait]
pub trait Source: Send {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
}
