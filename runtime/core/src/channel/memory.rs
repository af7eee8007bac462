//! The memory channel: a bounded in-process queue with put/take transactions.
//!
//! Capacity counts events held — queued plus leased — so a rollback always fits back in.
//! Queued events carry an arrival number, so rolled-back events return to their original
//! place even when several leases are rolled back in any order.
//! Nothing here survives a crash; durable channels live in their own modules.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::Notify;

use serde::Deserialize;

use super::{Channel, ChannelError, ChannelStats, Lease, limits::Limits};
use crate::{
    config::units::ByteSize,
    event::{Event, batch_size_bytes},
    registry::{ChannelCx, ChannelSpec},
};

/// `type: memory`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryChannelConfig {
    /// Most events held (queued plus taken but not yet committed).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// Most body+header bytes held; unlimited when absent.
    pub max_bytes: Option<ByteSize>,
}

fn default_capacity() -> usize {
    10_000
}

impl ChannelSpec for MemoryChannelConfig {
    fn open(&self, _: &ChannelCx<'_>) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(MemoryChannel::new(
            self.capacity,
            self.max_bytes.map(|b| b.0),
        )))
    }

    fn crash_loss(&self) -> Option<&'static str> {
        Some("a memory channel: what it holds is lost if the agent crashes")
    }
}

pub struct MemoryChannel {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Signalled when events leave (commit) so waiting putters can retry.
    space: Notify,
    /// Signalled when events arrive (put, rollback) so waiting takers can retry.
    data: Notify,
    limits: Limits,
}

#[derive(Default)]
struct State {
    /// Visible events with their arrival numbers, in arrival order.
    queue: VecDeque<(u64, Event)>,
    next_seq: u64,
    held_events: usize,
    held_bytes: usize,
    in_flight: usize,
    closed: bool,
}

/// Where a new channel's numbering starts: the clock in nanoseconds, so positions (which
/// sinks name output after) do not repeat when the process restarts or another memory
/// channel writes to the same place; one event per nanosecond is far beyond any channel.
fn first_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated (every
        // critical section is a few infallible steps), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fits(&self, s: &State, events: usize, bytes: usize) -> bool {
        self.limits.fits(s.held_events, s.held_bytes, events, bytes)
    }

    fn too_large(&self, events: usize, bytes: usize) -> Option<ChannelError> {
        self.limits.too_large(events, bytes)
    }

    fn append(&self, s: &mut State, batch: Vec<Event>, bytes: usize) {
        s.held_events += batch.len();
        s.held_bytes += bytes;
        let first = s.next_seq;
        s.next_seq += batch.len() as u64;
        s.queue.extend((first..).zip(batch));
        self.data.notify_waiters();
    }
}

impl MemoryChannel {
    /// `max_bytes: None` means no byte limit.
    pub fn new(capacity: usize, max_bytes: Option<u64>) -> Self {
        MemoryChannel {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    next_seq: first_seq(),
                    ..State::default()
                }),
                space: Notify::new(),
                data: Notify::new(),
                limits: Limits::new(capacity, max_bytes, "bytes"),
            }),
        }
    }
}

impl MemoryChannel {
    /// Like [`Channel::try_put`], but hands a refused batch back (the spillable channel sends
    /// it to its disk tier instead).
    pub fn try_put_or_return(&self, batch: Vec<Event>) -> Result<(), (ChannelError, Vec<Event>)> {
        let bytes = batch_size_bytes(&batch);
        if let Some(e) = self.inner.too_large(batch.len(), bytes) {
            return Err((e, batch));
        }
        let mut s = self.inner.lock();
        if s.closed {
            return Err((ChannelError::Closed, batch));
        }
        if !self.inner.fits(&s, batch.len(), bytes) {
            return Err((ChannelError::Full, batch));
        }
        self.inner.append(&mut s, batch, bytes);
        Ok(())
    }
}

#[async_trait]
impl Channel for MemoryChannel {
    async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = batch_size_bytes(&batch);
        if let Some(e) = self.inner.too_large(batch.len(), bytes) {
            return Err(e);
        }
        loop {
            let notified = self.inner.space.notified();
            tokio::pin!(notified);
            {
                let mut s = self.inner.lock();
                if s.closed {
                    return Err(ChannelError::Closed);
                }
                if self.inner.fits(&s, batch.len(), bytes) {
                    self.inner.append(&mut s, batch, bytes);
                    return Ok(());
                }
                // Register interest before releasing the lock so a commit in between wakes us.
                notified.as_mut().enable();
            }
            notified.await;
        }
    }

    fn try_put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        self.try_put_or_return(batch).map_err(|(e, _)| e)
    }

    async fn take(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut woken = false;
        loop {
            if std::mem::take(&mut woken) && self.inner.lock().queue.len() < max {
                // Woken by a put: the other tasks that are ready to put run first, so that a
                // busy source's puts make one lease rather than one each (on a single worker
                // the woken taker would otherwise run right after the first put). An idle
                // agent has no such task and loses one scheduler pass.
                tokio::task::yield_now().await;
            }
            let notified = self.inner.data.notified();
            tokio::pin!(notified);
            {
                let mut s = self.inner.lock();
                if !s.queue.is_empty() {
                    let n = max.max(1).min(s.queue.len());
                    let mut seqs = Vec::with_capacity(n);
                    let events: Vec<Event> = s
                        .queue
                        .drain(..n)
                        .map(|(seq, e)| {
                            seqs.push(seq);
                            e
                        })
                        .collect();
                    s.in_flight += n;
                    return Ok(Some(Box::new(MemoryLease {
                        inner: Arc::clone(&self.inner),
                        bytes: batch_size_bytes(&events),
                        events,
                        seqs,
                        done: false,
                    })));
                }
                notified.as_mut().enable();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
            woken = true;
        }
    }

    fn arrivals(&self) -> Option<&Notify> {
        Some(&self.inner.data)
    }

    fn stats(&self) -> ChannelStats {
        let s = self.inner.lock();
        ChannelStats {
            events: s.held_events,
            bytes: s.held_bytes,
            capacity_events: self.inner.limits.capacity,
            in_flight: s.in_flight,
        }
    }

    fn close(&self) {
        self.inner.lock().closed = true;
        self.inner.space.notify_waiters();
    }
}

struct MemoryLease {
    inner: Arc<Inner>,
    events: Vec<Event>,
    /// Arrival numbers of `events`, ascending.
    seqs: Vec<u64>,
    bytes: usize,
    done: bool,
}

impl MemoryLease {
    fn finish(&mut self, commit: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let n = self.events.len();
        let mut s = self.inner.lock();
        s.in_flight -= n;
        if commit {
            s.held_events -= n;
            s.held_bytes -= self.bytes;
            drop(s);
            self.inner.space.notify_waiters();
        } else {
            // Usually the lease goes back in front of everything (one comparison per event);
            // after out-of-order rollbacks it interleaves with what is queued.
            for (seq, e) in self.seqs.drain(..).zip(self.events.drain(..)).rev() {
                let i = s.queue.partition_point(|(q, _)| *q < seq);
                s.queue.insert(i, (seq, e));
            }
            drop(s);
            self.inner.data.notify_waiters();
        }
    }
}

#[async_trait]
impl Lease for MemoryLease {
    fn events(&self) -> &[Event] {
        &self.events
    }

    fn events_mut(&mut self) -> &mut [Event] {
        &mut self.events
    }

    fn position(&self) -> Option<u64> {
        self.seqs.first().copied()
    }

    async fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        self.finish(true);
        Ok(())
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), ChannelError> {
        self.finish(false);
        Ok(())
    }
}

impl Drop for MemoryLease {
    /// An abandoned lease (a sink task that died) must not lose its events.
    fn drop(&mut self) {
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize) -> Event {
        Event::new(format!("{i}"))
    }

    fn bodies(l: &dyn Lease) -> Vec<String> {
        l.events()
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect()
    }

    const NOW: Duration = Duration::from_millis(0);

    /// On one worker a taker woken by the first of several ready puts would run right after
    /// it (tokio's LIFO slot) and take one event per lease; it yields first, so the puts that
    /// were ready make one lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_woken_taker_lets_ready_puts_in_before_it_takes() {
        let ch = Arc::new(MemoryChannel::new(1000, None));
        let taker = {
            let ch = Arc::clone(&ch);
            tokio::spawn(async move {
                let mut sizes = Vec::new();
                let mut taken = 0;
                while taken < 20 {
                    let lease = ch.take(100, Duration::from_secs(5)).await.unwrap().unwrap();
                    sizes.push(lease.events().len());
                    taken += lease.events().len();
                    lease.commit().await.unwrap();
                }
                sizes
            })
        };
        // The taker is waiting before any put.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Spawned from a task on the worker, so all are queued before the first runs (the
        // test's own thread could be descheduled between two spawns).
        let puts = {
            let ch = Arc::clone(&ch);
            tokio::spawn(async move {
                (0..20)
                    .map(|i| {
                        let ch = Arc::clone(&ch);
                        tokio::spawn(async move { ch.put(vec![ev(i)]).await.unwrap() })
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap()
        };
        for p in puts {
            p.await.unwrap();
        }
        let sizes = taker.await.unwrap();
        assert!(
            sizes.len() <= 3,
            "20 ready puts came out in {} leases: {sizes:?}",
            sizes.len()
        );
    }

    #[tokio::test]
    async fn rollback_returns_events_to_the_head_in_order() {
        let ch = MemoryChannel::new(100, None);
        ch.put((0..5).map(ev).collect()).await.unwrap();
        let a = ch.take(3, NOW).await.unwrap().unwrap();
        assert_eq!(bodies(&*a), ["0", "1", "2"]);
        a.rollback().await.unwrap();
        let b = ch.take(10, NOW).await.unwrap().unwrap();
        assert_eq!(bodies(&*b), ["0", "1", "2", "3", "4"]);
        drop(b); // dropping is a rollback
        let c = ch.take(2, NOW).await.unwrap().unwrap();
        assert_eq!(bodies(&*c), ["0", "1"]);
        c.commit().await.unwrap();
        assert_eq!(ch.stats().events, 3);
        assert_eq!(ch.stats().in_flight, 0);
    }

    #[tokio::test]
    async fn leases_rolled_back_in_any_order_restore_the_original_order() {
        let ch = MemoryChannel::new(100, None);
        ch.put((0..8).map(ev).collect()).await.unwrap();
        let a = ch.take(1, NOW).await.unwrap().unwrap(); // 0
        let b = ch.take(4, NOW).await.unwrap().unwrap(); // 1..5
        b.rollback().await.unwrap();
        let c = ch.take(2, NOW).await.unwrap().unwrap(); // 1, 2
        let d = ch.take(1, NOW).await.unwrap().unwrap(); // 3
        drop(a);
        assert_eq!(bodies(&*c), ["1", "2"]);
        d.rollback().await.unwrap();
        c.rollback().await.unwrap();
        let all = ch.take(100, NOW).await.unwrap().unwrap();
        assert_eq!(bodies(&*all), ["0", "1", "2", "3", "4", "5", "6", "7"]);
    }

    #[tokio::test]
    async fn capacity_counts_leased_events_and_put_waits_for_commit() {
        let ch = Arc::new(MemoryChannel::new(4, None));
        ch.put((0..4).map(ev).collect()).await.unwrap();
        let lease = ch.take(2, NOW).await.unwrap().unwrap();
        assert!(
            matches!(ch.try_put(vec![ev(9)]), Err(ChannelError::Full)),
            "leased events still count"
        );
        let ch2 = Arc::clone(&ch);
        let putter = tokio::spawn(async move { ch2.put(vec![ev(4), ev(5)]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !putter.is_finished(),
            "put must wait while the channel is full"
        );
        lease.commit().await.unwrap();
        putter.await.unwrap().unwrap();
        let rest = ch.take(10, NOW).await.unwrap().unwrap();
        assert_eq!(bodies(&*rest), ["2", "3", "4", "5"]);
    }

    #[tokio::test]
    async fn a_batch_is_all_or_nothing() {
        let ch = MemoryChannel::new(3, Some(10));
        ch.put(vec![ev(1)]).await.unwrap();
        assert!(matches!(
            ch.try_put((0..3).map(ev).collect()),
            Err(ChannelError::Full)
        ));
        assert_eq!(ch.stats().events, 1, "nothing of a refused batch is kept");
        let huge = Event::new(vec![b'x'; 11]);
        assert!(matches!(
            ch.put(vec![huge]).await,
            Err(ChannelError::BatchTooLarge { .. })
        ));
        assert!(matches!(
            ch.put((0..4).map(ev).collect()).await,
            Err(ChannelError::BatchTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn concurrent_takers_never_share_events() {
        let ch = Arc::new(MemoryChannel::new(10_000, None));
        ch.put((0..10_000).map(ev).collect()).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let ch = Arc::clone(&ch);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(l) = ch.take(7, NOW).await.unwrap() {
                    got.extend(bodies(&*l));
                    l.commit().await.unwrap();
                    tokio::task::yield_now().await;
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_by_key(|s| s.parse::<usize>().unwrap());
        assert_eq!(all, (0..10_000).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(ch.stats().events, 0);
    }

    #[tokio::test]
    async fn take_waits_for_data_and_close_refuses_puts() {
        let ch = Arc::new(MemoryChannel::new(10, None));
        assert!(
            ch.take(1, Duration::from_millis(10))
                .await
                .unwrap()
                .is_none()
        );
        let ch2 = Arc::clone(&ch);
        let taker = tokio::spawn(async move { ch2.take(5, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        ch.put(vec![ev(7)]).await.unwrap();
        let l = taker.await.unwrap().unwrap().unwrap();
        assert_eq!(bodies(&*l), ["7"]);
        ch.close();
        assert!(matches!(
            ch.put(vec![ev(8)]).await,
            Err(ChannelError::Closed)
        ));
        l.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_take_wakes_on_the_put_that_completes_it() {
        let ch = Arc::new(MemoryChannel::new(100, None));
        let taker = {
            let ch = Arc::clone(&ch);
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let lease = ch
                    .take_batch(10, 5, Duration::from_secs(30), Duration::from_secs(30))
                    .await
                    .unwrap()
                    .unwrap();
                (bodies(lease.as_ref()), started.elapsed())
            })
        };
        ch.put((0..2).map(ev).collect()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!taker.is_finished(), "two of five is not a batch yet");
        ch.put((2..5).map(ev).collect()).await.unwrap();
        let (got, took) = taker.await.unwrap();
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
        assert!(
            took < Duration::from_secs(5),
            "woken by the put, not a deadline: {took:?}"
        );
    }

    #[tokio::test]
    async fn a_batch_take_ends_at_the_linger_or_the_idle_deadline() {
        let ch = MemoryChannel::new(100, None);
        let started = std::time::Instant::now();
        let none = ch
            .take_batch(10, 5, Duration::from_secs(30), Duration::from_millis(100))
            .await
            .unwrap();
        assert!(none.is_none());
        assert!(started.elapsed() >= Duration::from_millis(100));
        ch.put((0..2).map(ev).collect()).await.unwrap();
        let started = std::time::Instant::now();
        let lease = ch
            .take_batch(10, 5, Duration::from_millis(150), Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bodies(lease.as_ref()), ["0", "1"]);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_full_channel_is_taken_from_without_lingering() {
        let ch = MemoryChannel::new(3, None);
        ch.put((0..3).map(ev).collect()).await.unwrap();
        let lease = tokio::time::timeout(
            Duration::from_secs(5),
            ch.take_batch(10, 10, Duration::from_secs(30), Duration::from_secs(30)),
        )
        .await
        .expect("no linger on a full channel")
        .unwrap()
        .unwrap();
        assert_eq!(lease.events().len(), 3);
    }
}
