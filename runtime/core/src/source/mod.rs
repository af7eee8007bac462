//! Sources: where events enter an agent.
//!
//! A source produces batches and hands each to its [`ChannelProcessor`]; it acknowledges
//! upstream (when it has an upstream) only after `process` returned Ok, which means the batch
//! is committed to every required channel. A source that ends (a generator with a count,
//! stdin at EOF) returns from `run`; the agent then drains and exits. Unbounded sources (the
//! file tailer) run until the agent is stopped.

pub mod exec;
pub mod feed;
pub mod framing;
pub mod generator;
pub mod net;
pub mod processor;
pub mod spooldir;
pub mod stdin;
pub mod supervisor;
pub mod tail;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::event::Event;

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

/// What became of a batch handed to [`SourceContext::commit_or_stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// The agent stopped while the channels were refusing it: not committed.
    Stopped,
}

/// Pause before offering a refused batch again, growing per refusal in a row.
const REFUSED_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);
const MAX_REFUSED_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

impl SourceContext {
    /// Commits `events`, offering them again after a growing pause while the channels refuse
    /// them for now (full, say), until they are committed or the agent stops. For sources that
    /// hold their upstream's acknowledgement (or position) until the commit: on `Stopped` they
    /// leave it unacknowledged and the upstream sends the batch again.
    pub async fn commit_or_stop(&mut self, events: Vec<Event>) -> Result<Commit, SourceError> {
        let mut pause = supervisor::Backoff::new(REFUSED_PAUSE, MAX_REFUSED_PAUSE);
        loop {
            // A copy per try: a refused batch must still be in hand for the next one.
            match self.out.process(events.clone()).await {
                Ok(()) => return Ok(Commit::Done),
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "batch refused; retrying");
                    if supervisor::sleep_or_cancelled(&self.shutdown, pause.next_delay()).await {
                        return Ok(Commit::Stopped);
                    }
                }
            }
        }
    }
}

#[async_trait]
pub trait Source: Send {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
}
