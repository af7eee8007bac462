//! Sinks: where events leave an agent.
//!
//! A sink only delivers; it never touches transactions. The [`runner`] takes a lease from the
//! channel, asks the sink (or a sink group) to deliver it, retries, routes poison to the DLQ,
//! and is the only code that commits or rolls back.

pub mod console;
pub mod file;
pub mod group;
pub mod null;
pub mod runner;

use std::time::Duration;

use async_trait::async_trait;

use crate::event::Event;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Nothing (reliably) delivered; the same batch may succeed later.
    #[error("{reason}")]
    Retriable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Some events are poison (`rejected`, by index into the batch, with a reason), some may be
    /// retried (`retriable`); every index not listed was delivered.
    #[error("{} events rejected, {} to retry", rejected.len(), retriable.len())]
    Partial {
        rejected: Vec<(usize, String)>,
        retriable: Vec<usize>,
    },
    /// The whole batch can never be delivered (e.g. the server refused its content).
    #[error("{0}")]
    Permanent(String),
}

impl DeliveryError {
    pub fn retriable(reason: impl std::fmt::Display) -> Self {
        DeliveryError::Retriable {
            reason: reason.to_string(),
            retry_after: None,
        }
    }

    /// The result of delivering `n` events of which some were refused for good and some are
    /// to be retried (indices into the batch): `Ok` when neither, a plain `Retriable` when
    /// every event is to be retried (with `reason`, else a generic one), `Partial` otherwise.
    pub fn outcome(
        n: usize,
        mut rejected: Vec<(usize, String)>,
        mut retriable: Vec<usize>,
        reason: Option<String>,
    ) -> Result<(), DeliveryError> {
        if rejected.is_empty() && retriable.is_empty() {
            return Ok(());
        }
        retriable.sort_unstable();
        retriable.dedup();
        if rejected.is_empty() && retriable.len() == n {
            return Err(DeliveryError::Retriable {
                reason: reason.unwrap_or_else(|| "nothing was delivered".into()),
                retry_after: None,
            });
        }
        rejected.sort_unstable_by_key(|(i, _)| *i);
        Err(DeliveryError::Partial {
            rejected,
            retriable,
        })
    }
}

impl From<std::io::Error> for DeliveryError {
    /// I/O errors are retriable by default: disks fill and free up, servers come back.
    fn from(e: std::io::Error) -> Self {
        DeliveryError::retriable(e)
    }
}

#[async_trait]
pub trait Sink: Send {
    /// Delivers the whole batch, or says what went wrong.
    async fn deliver(&mut self, batch: &[Event]) -> Result<(), DeliveryError>;

    /// The channel position of the lease about to be delivered: the sequence number of its
    /// first event, stable across a crash and restart for channels that store one (rocksdb,
    /// memory), `None` otherwise. The runner calls this before every `deliver` of a lease
    /// (retries included), so a sink can name its output after it and a retried batch
    /// overwrites its own output instead of duplicating it (the `s3` sink does).
    fn set_position(&mut self, _position: Option<u64>) {}

    /// How long the runner may let the channel fill up to the batch size before taking, so
    /// a sink that writes one object per batch gets full objects (the `s3` sink's
    /// `roll_interval`). `None`: take whatever is there at once.
    fn linger(&self) -> Option<Duration> {
        None
    }

    /// Called when the channel has been empty for a while: time-based rolling, flushes.
    async fn idle(&mut self) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// Flushes and releases resources at shutdown.
    async fn close(&mut self) -> Result<(), DeliveryError> {
        Ok(())
    }
}
