//! The spillable channel: memory speed while the sink keeps up, RocksDB when it does not, and
//! one FIFO order across both tiers.
//!
//! Order rule: a put goes to the memory tier only while the disk tier holds nothing (queued,
//! leased or being written) and the whole batch fits in memory; otherwise it goes to disk. So
//! every event in memory is older than every event on disk, and takes serve memory first.
//! Once anything spills, new events follow it to disk until the disk tier is empty again.
//! Memory holds at most `memory_capacity` events. What survives a crash is the disk tier; the
//! memory tier is lost, like a memory channel.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::Notify;

use sluice_core::{
    channel::{Channel, ChannelError, ChannelStats, Lease, memory::MemoryChannel},
    event::Event,
};

use crate::RocksChannel;

pub struct SpillableChannel {
    memory: MemoryChannel,
    disk: RocksChannel,
    /// Signalled when events arrive or are rolled back, so waiting takers retry.
    data: Arc<Notify>,
}

impl SpillableChannel {
    /// A memory tier of `memory_capacity` events in front of `disk`.
    pub fn new(memory_capacity: usize, disk: RocksChannel) -> Self {
        SpillableChannel {
            memory: MemoryChannel::new(memory_capacity, None),
            disk,
            data: Arc::new(Notify::new()),
        }
    }

    /// The memory and disk tiers' own counts.
    pub fn tiers(&self) -> (ChannelStats, ChannelStats) {
        (self.memory.stats(), self.disk.stats())
    }

    /// Anything on disk — queued, leased or being written — pins new events to disk.
    fn disk_in_use(&self) -> bool {
        self.disk.stats().events > 0
    }

    /// Puts `batch` into the memory tier when the order allows it and there is room (`None`);
    /// otherwise hands it back for the disk tier.
    fn put_in_memory(&self, batch: Vec<Event>) -> Result<Option<Vec<Event>>, ChannelError> {
        if self.disk_in_use() {
            return Ok(Some(batch));
        }
        match self.memory.try_put_or_return(batch) {
            Ok(()) => {
                self.data.notify_waiters();
                Ok(None)
            }
            Err((ChannelError::Closed, _)) => Err(ChannelError::Closed),
            Err((_, batch)) => Ok(Some(batch)),
        }
    }

    fn wrap(&self, lease: Box<dyn Lease>) -> Box<dyn Lease> {
        Box::new(SpillLease {
            inner: Some(lease),
            data: Arc::clone(&self.data),
        })
    }
}

#[async_trait]
impl Channel for SpillableChannel {
    async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        let Some(batch) = self.put_in_memory(batch)? else {
            return Ok(());
        };
        self.disk.put(batch).await?;
        self.data.notify_waiters();
        Ok(())
    }

    fn try_put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        let Some(batch) = self.put_in_memory(batch)? else {
            return Ok(());
        };
        self.disk.try_put(batch)
    }

    async fn take(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let ours = self.data.notified();
            let disk = self.disk.visible_notify().notified();
            tokio::pin!(ours, disk);
            ours.as_mut().enable();
            disk.as_mut().enable();
            // Memory first: whatever it holds is older than anything on disk.
            if let Some(l) = self.memory.take(max, Duration::ZERO).await? {
                return Ok(Some(self.wrap(l)));
            }
            if self.disk_in_use() {
                if let Some(l) = self.disk.take(max, Duration::ZERO).await? {
                    return Ok(Some(self.wrap(l)));
                }
            }
            let woken = async {
                tokio::select! {
                    _ = ours => {}
                    _ = disk => {}
                }
            };
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Puts into either tier and rollbacks signal this (a non-blocking put that spills to
    /// disk is seen at the next arrival or deadline).
    fn arrivals(&self) -> Option<&Notify> {
        Some(&self.data)
    }

    fn stats(&self) -> ChannelStats {
        let (m, d) = self.tiers();
        ChannelStats {
            events: m.events + d.events,
            bytes: m.bytes + d.bytes,
            capacity_events: m.capacity_events + d.capacity_events,
            in_flight: m.in_flight + d.in_flight,
        }
    }

    fn close(&self) {
        self.memory.close();
        self.disk.close();
    }

    fn health(&self) -> Result<(), String> {
        self.disk.health()
    }
}

/// A lease from either tier; a rollback wakes the spillable channel's takers.
struct SpillLease {
    inner: Option<Box<dyn Lease>>,
    data: Arc<Notify>,
}

#[async_trait]
impl Lease for SpillLease {
    fn events(&self) -> &[Event] {
        self.inner.as_ref().map_or(&[], |l| l.events())
    }

    fn events_mut(&mut self) -> &mut [Event] {
        self.inner.as_mut().map_or(&mut [], |l| l.events_mut())
    }

    fn position(&self) -> Option<u64> {
        self.inner.as_ref().and_then(|l| l.position())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        match self.inner.take() {
            Some(l) => l.commit().await,
            None => Ok(()),
        }
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), ChannelError> {
        if let Some(l) = self.inner.take() {
            l.rollback().await?;
            self.data.notify_waiters();
        }
        Ok(())
    }
}

impl Drop for SpillLease {
    fn drop(&mut self) {
        if let Some(l) = self.inner.take() {
            drop(l); // the tier's own lease rolls back on drop
            self.data.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RocksOptions;

    fn ev(i: usize) -> Event {
        Event::new(format!("{i}"))
    }

    fn bodies(l: &dyn Lease) -> Vec<usize> {
        l.events()
            .iter()
            .map(|e| std::str::from_utf8(&e.body).unwrap().parse().unwrap())
            .collect()
    }

    fn open(dir: &std::path::Path, memory: usize) -> SpillableChannel {
        let disk = RocksChannel::open(dir, RocksOptions::default()).unwrap();
        SpillableChannel::new(memory, disk)
    }

    #[tokio::test]
    async fn spills_when_memory_is_full_and_keeps_fifo_order_across_tiers() {
        let dir = tempfile::tempdir().unwrap();
        let ch = open(dir.path(), 4);
        ch.put((0..3).map(ev).collect()).await.unwrap();
        ch.put((3..6).map(ev).collect()).await.unwrap(); // does not fit: spills whole
        assert_eq!(ch.tiers().0.events, 3);
        assert_eq!(ch.tiers().1.events, 3);
        let a = ch.take(2, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(bodies(&*a), [0, 1]);
        a.commit().await.unwrap();
        // Memory has room again, but disk is in use: this must follow the spilled events.
        ch.put(vec![ev(6)]).await.unwrap();
        assert_eq!(ch.tiers().0.events, 1, "memory took nothing new");
        let mut got = Vec::new();
        while let Some(l) = ch.take(2, Duration::ZERO).await.unwrap() {
            got.extend(bodies(&*l));
            l.commit().await.unwrap();
        }
        assert_eq!(got, [2, 3, 4, 5, 6]);
        // Disk drained: memory again.
        ch.put(vec![ev(7)]).await.unwrap();
        assert_eq!((ch.tiers().0.events, ch.tiers().1.events), (1, 0));
    }

    #[tokio::test]
    async fn a_leased_disk_event_pins_new_puts_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let ch = open(dir.path(), 2);
        ch.put((0..3).map(ev).collect()).await.unwrap(); // too big for memory
        let l = ch.take(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(bodies(&*l), [0, 1, 2]);
        ch.put(vec![ev(3)]).await.unwrap();
        assert_eq!(ch.tiers().0.events, 0, "disk still holds the lease");
        l.rollback().await.unwrap();
        let l = ch.take(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(bodies(&*l), [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn the_spilled_part_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ch = open(dir.path(), 2);
            ch.put((0..2).map(ev).collect()).await.unwrap();
            ch.put((2..5).map(ev).collect()).await.unwrap();
        }
        let ch = open(dir.path(), 2);
        ch.put(vec![ev(5)]).await.unwrap();
        let l = ch.take(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(bodies(&*l), [2, 3, 4, 5], "memory part lost, order kept");
    }

    #[tokio::test]
    async fn a_waiting_taker_wakes_for_either_tier() {
        let dir = tempfile::tempdir().unwrap();
        let ch = Arc::new(open(dir.path(), 1));
        let c = Arc::clone(&ch);
        let taker = tokio::spawn(async move {
            let l = c.take(5, Duration::from_secs(5)).await.unwrap().unwrap();
            let got = bodies(&*l);
            l.commit().await.unwrap();
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        ch.try_put((0..2).map(ev).collect()).unwrap(); // straight to disk, no put await
        assert_eq!(taker.await.unwrap(), [0, 1]);
    }
}
