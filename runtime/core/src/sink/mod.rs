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
    /// The destination could not be reached at all (connection refused, no route): nothing
    /// was sent, so no event of the batch can be at fault. The runner retries until the
    /// destination is back without spending the batch's attempt budget, so an outage of any
    /// length sends nothing to the DLQ and loses nothing from a durable channel.
    #[error("{0}")]
    Unreachable(String),
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

/// What a sink delivers: events leased from one channel, and where they sit in it.
///
/// Derefs to the events, so a sink reads it as a slice. On a retry after a partial failure it
/// holds only the events still to deliver, with the same `position`.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub events: &'a [Event],
    /// The channel's sequence number of the lease's first event, stable across a crash and a
    /// restart for channels that store one (rocksdb, memory), `None` otherwise. A sink that
    /// names its output after it (the `s3` sink) overwrites its own output on a retry instead
    /// of duplicating it; such a sink must deliver all or nothing.
    pub position: Option<u64>,
}

impl<'a> Batch<'a> {
    /// A batch with no channel position (tests, sinks feeding other sinks).
    pub fn new(events: &'a [Event]) -> Self {
        Batch {
            events,
            position: None,
        }
    }
}

impl<'a> IntoIterator for &Batch<'a> {
    type Item = &'a Event;
    type IntoIter = std::slice::Iter<'a, Event>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.iter()
    }
}

impl std::ops::Deref for Batch<'_> {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        self.events
    }
}

#[async_trait]
pub trait Sink: Send {
    /// Delivers the whole batch, or says what went wrong (by index into the batch).
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError>;

    /// Called when the channel has been empty for a while: time-based rolling, flushes.
    async fn idle(&mut self) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// Flushes and releases resources at shutdown.
    async fn close(&mut self) -> Result<(), DeliveryError> {
        Ok(())
    }
}
