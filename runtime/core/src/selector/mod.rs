//! Selectors: which of a source's channels each event goes to.
//!
//! A selector splits a batch into per-channel sub-batches, `required` (a failed put fails the
//! source's batch) and `optional` (failures are counted and ignored). Channels are indices
//! into the source's channel list, resolved once when the pipeline is built.

pub mod multiplexing;
mod replicating;

pub use multiplexing::Multiplexing;
pub use replicating::Replicating;

use crate::{dlq::DeadLetter, event::Event};

/// Per-channel sub-batches produced by a selector.
#[derive(Debug, Default)]
pub struct Routed {
    pub required: Vec<Vec<Event>>,
    pub optional: Vec<Vec<Event>>,
}

impl Routed {
    pub fn new(channels: usize) -> Self {
        Routed {
            required: (0..channels).map(|_| Vec::new()).collect(),
            optional: (0..channels).map(|_| Vec::new()).collect(),
        }
    }

    /// Empties every sub-batch, keeping allocations for the next batch.
    pub fn clear(&mut self) {
        self.required
            .iter_mut()
            .chain(self.optional.iter_mut())
            .for_each(Vec::clear);
    }
}

pub trait Selector: Send {
    /// Routes `batch` into `out` (already cleared and sized to the channel list); events that
    /// no channel takes go to `unroutable`.
    fn select(&mut self, batch: Vec<Event>, out: &mut Routed, unroutable: &mut Vec<DeadLetter>);
}
