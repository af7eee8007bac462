//! Channels: transactional buffers between sources and sinks.
//!
//! A put is all-or-nothing for its batch and waits while the channel is full (backpressure).
//! A take leases the oldest visible events; only [`Lease::commit`] removes them, while
//! [`Lease::rollback`] — or dropping the lease — makes them visible again at the head, in order.
//! This trait names no storage engine: the memory channel lives here, durable ones in the
//! crates that own their storage (`sluice-rocks`) or their broker (the Kafka connector).

pub mod instrumented;
pub mod limits;
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use tokio::{sync::Notify, time::Instant};

use crate::event::Event;

/// How often [`Channel::take_batch`] looks at a channel that has no [`Channel::arrivals`].
pub const ARRIVAL_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The batch alone exceeds the channel's capacity, so waiting would never help.
    #[error("batch of {events} events / {bytes} bytes exceeds channel capacity ({capacity})")]
    BatchTooLarge {
        events: usize,
        bytes: usize,
        capacity: String,
    },
    /// The channel was full and the caller asked not to wait.
    #[error("channel is full")]
    Full,
    /// The channel is shutting down and accepts no more events.
    #[error("channel is closed")]
    Closed,
    #[error("channel storage error: {0}")]
    Storage(String),
}

/// A small record a source keeps in a channel beside its events (a hop receiver's
/// de-duplication window), written in the same commit as a put so that the record and the
/// events are stored together or not at all. An empty value deletes the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub key: String,
    pub value: Vec<u8>,
}

/// Point-in-time counts for metrics and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Events held: queued plus leased but not yet committed.
    pub events: usize,
    pub bytes: usize,
    pub capacity_events: usize,
    /// Events currently leased to takers.
    pub in_flight: usize,
}

#[async_trait]
pub trait Channel: Send + Sync {
    /// Appends a batch atomically, waiting while there is no room.
    async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError>;

    /// Appends a batch atomically if there is room now; `Full` otherwise.
    fn try_put(&self, batch: Vec<Event>) -> Result<(), ChannelError>;

    /// Leases up to `max` of the oldest visible events, waiting up to `wait` for at least one.
    /// `None` means nothing arrived in time.
    async fn take(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError>;

    fn stats(&self) -> ChannelStats;

    /// Signalled when events become visible (puts, rollbacks), so a taker waiting for more
    /// than one event wakes on arrivals instead of polling. `None`: the channel cannot say
    /// (events arrive from a broker), and [`Channel::take_batch`] looks every
    /// [`ARRIVAL_POLL`].
    fn arrivals(&self) -> Option<&Notify> {
        None
    }

    /// Leases up to `max` events once at least `min` are visible, or the channel is full (its
    /// sources would otherwise wait on it), or `linger` has passed since an event was first
    /// seen; `None` when the channel stayed empty for `idle`. A sink that writes one object
    /// per batch (S3) gets full objects instead of one per trickle, and wakes once per
    /// arrival rather than on a timer.
    async fn take_batch(
        &self,
        max: usize,
        min: usize,
        linger: Duration,
        idle: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        let started = Instant::now();
        let mut first_seen: Option<Instant> = None;
        loop {
            let notified = self.arrivals().map(Notify::notified);
            tokio::pin!(notified);
            if let Some(n) = notified.as_mut().as_pin_mut() {
                // Registered before looking, so an arrival in between still wakes us.
                n.enable();
            }
            let s = self.stats();
            let visible = s.events.saturating_sub(s.in_flight);
            let full = s.capacity_events > 0 && s.events >= s.capacity_events;
            let now = Instant::now();
            let deadline = if visible == 0 {
                first_seen = None;
                started + idle
            } else {
                let since = *first_seen.get_or_insert(now);
                if visible >= min.max(1) || full || now >= since + linger {
                    return self.take(max, Duration::ZERO).await;
                }
                since + linger
            };
            if visible == 0 && now >= deadline {
                return Ok(None);
            }
            match notified.as_pin_mut() {
                Some(n) => {
                    let _ = tokio::time::timeout_at(deadline, n).await;
                }
                None => tokio::time::sleep_until(deadline.min(now + ARRIVAL_POLL)).await,
            }
        }
    }

    /// Stops accepting puts (takes continue so sinks can drain). Idempotent.
    fn close(&self);

    /// Like [`put`](Channel::put), and writes `marks` in the same commit; an empty batch
    /// writes only the marks. Channels that cannot keep marks (see [`Channel::marks`]) only
    /// put the events.
    async fn put_marked(&self, batch: Vec<Event>, marks: &[Mark]) -> Result<(), ChannelError> {
        let _ = marks;
        self.put(batch).await
    }

    /// The marks whose key starts with `prefix`, as of the last commit; `None` when this
    /// channel keeps no marks across restarts (its events do not survive one either).
    fn marks(&self, prefix: &str) -> Result<Option<Vec<Mark>>, ChannelError> {
        let _ = prefix;
        Ok(None)
    }

    /// A name for this channel's numbering of events ([`Lease::position`]) that stays the
    /// same across restarts, so that (id, position) names an event for good; `None` when
    /// positions are not kept across restarts.
    fn id(&self) -> Option<String> {
        None
    }

    /// `Err(why)` while the channel cannot accept puts because its storage failed (a full
    /// disk); takes still work. Feeds the admin server's `/ready`.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A shared channel is a channel (the topology hands out `Arc<dyn Channel>`s, and wraps them).
#[async_trait]
impl<C: Channel + ?Sized> Channel for std::sync::Arc<C> {
    async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        (**self).put(batch).await
    }

    fn try_put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        (**self).try_put(batch)
    }

    async fn take(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        (**self).take(max, wait).await
    }

    async fn take_batch(
        &self,
        max: usize,
        min: usize,
        linger: Duration,
        idle: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        (**self).take_batch(max, min, linger, idle).await
    }

    fn stats(&self) -> ChannelStats {
        (**self).stats()
    }

    fn arrivals(&self) -> Option<&Notify> {
        (**self).arrivals()
    }

    fn close(&self) {
        (**self).close()
    }

    fn health(&self) -> Result<(), String> {
        (**self).health()
    }

    async fn put_marked(&self, batch: Vec<Event>, marks: &[Mark]) -> Result<(), ChannelError> {
        (**self).put_marked(batch, marks).await
    }

    fn marks(&self, prefix: &str) -> Result<Option<Vec<Mark>>, ChannelError> {
        (**self).marks(prefix)
    }

    fn id(&self) -> Option<String> {
        (**self).id()
    }
}

/// Events taken from a channel, invisible to other takers until committed or rolled back.
#[async_trait]
pub trait Lease: Send {
    fn events(&self) -> &[Event];

    /// The leased events, to reorder in place (the runner moves the events still to retry
    /// to the front and restores the order before committing or rolling back).
    fn events_mut(&mut self) -> &mut [Event];

    /// The channel's sequence number of the first leased event, when the channel numbers its
    /// events; the same events leased again (after a rollback or a restart) report the same
    /// position. Sinks use it to name output deterministically.
    fn position(&self) -> Option<u64> {
        None
    }

    /// Removes the leased events for good.
    async fn commit(self: Box<Self>) -> Result<(), ChannelError>;

    /// Returns the events to the head of the channel, in their original order.
    async fn rollback(self: Box<Self>) -> Result<(), ChannelError>;
}
