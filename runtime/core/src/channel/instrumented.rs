//! Wraps any channel to keep its Prometheus counters and gauges current.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use super::{Channel, ChannelError, ChannelStats, Lease, Mark};
use crate::{event::Event, metrics::ChannelMetrics};

pub struct Instrumented<C> {
    inner: C,
    /// Shared with each lease: a lease per take clones one reference, not every metric's.
    metrics: Arc<ChannelMetrics>,
}

impl<C: Channel> Instrumented<C> {
    pub fn new(inner: C, metrics: ChannelMetrics) -> Self {
        let s = inner.stats();
        metrics.capacity.set(s.capacity_events as i64);
        // A durable channel may reopen holding events.
        refresh(&metrics, s);
        Instrumented {
            inner,
            metrics: Arc::new(metrics),
        }
    }
}

fn refresh(m: &ChannelMetrics, s: ChannelStats) {
    m.events.set(s.events as i64);
    if s.capacity_events > 0 {
        m.fill.set(s.events as f64 / s.capacity_events as f64);
    }
}

#[async_trait]
impl<C: Channel> Channel for Instrumented<C> {
    async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        let n = batch.len() as u64;
        let tapped = self.metrics.tap.copy_to_offer(&batch);
        self.inner.put(batch).await?;
        if let Some(t) = tapped {
            self.metrics.tap.offer(&t);
        }
        self.metrics.put.inc_by(n);
        refresh(&self.metrics, self.inner.stats());
        Ok(())
    }

    async fn put_marked(&self, batch: Vec<Event>, marks: &[Mark]) -> Result<(), ChannelError> {
        let n = batch.len() as u64;
        let tapped = self.metrics.tap.copy_to_offer(&batch);
        self.inner.put_marked(batch, marks).await?;
        if let Some(t) = tapped {
            self.metrics.tap.offer(&t);
        }
        self.metrics.put.inc_by(n);
        refresh(&self.metrics, self.inner.stats());
        Ok(())
    }

    fn marks(&self, prefix: &str) -> Result<Option<Vec<Mark>>, ChannelError> {
        self.inner.marks(prefix)
    }

    fn id(&self) -> Option<String> {
        self.inner.id()
    }

    fn try_put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        let n = batch.len() as u64;
        let tapped = self.metrics.tap.copy_to_offer(&batch);
        self.inner.try_put(batch)?;
        if let Some(t) = tapped {
            self.metrics.tap.offer(&t);
        }
        self.metrics.put.inc_by(n);
        refresh(&self.metrics, self.inner.stats());
        Ok(())
    }

    async fn take(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        Ok(self
            .inner
            .take(max, wait)
            .await?
            .map(|inner| self.wrap(inner)))
    }

    /// The wrapped channel's own batching (a Kafka channel fills batches by reading, as it
    /// cannot see its backlog).
    async fn take_batch(
        &self,
        max: usize,
        min: usize,
        linger: Duration,
        idle: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        let lease = self.inner.take_batch(max, min, linger, idle).await?;
        Ok(lease.map(|inner| self.wrap(inner)))
    }

    fn stats(&self) -> ChannelStats {
        self.inner.stats()
    }

    fn arrivals(&self) -> Option<&tokio::sync::Notify> {
        self.inner.arrivals()
    }

    fn close(&self) {
        self.inner.close()
    }

    fn health(&self) -> Result<(), String> {
        self.inner.health()
    }
}

impl<C: Channel> Instrumented<C> {
    fn wrap(&self, inner: Box<dyn Lease>) -> Box<dyn Lease> {
        Box::new(InstrumentedLease {
            inner,
            metrics: Arc::clone(&self.metrics),
        })
    }
}

struct InstrumentedLease {
    inner: Box<dyn Lease>,
    metrics: Arc<ChannelMetrics>,
}

#[async_trait]
impl Lease for InstrumentedLease {
    fn events(&self) -> &[Event] {
        self.inner.events()
    }

    fn events_mut(&mut self) -> &mut [Event] {
        self.inner.events_mut()
    }

    fn position(&self) -> Option<u64> {
        self.inner.position()
    }

    async fn commit(self: Box<Self>) -> Result<(), ChannelError> {
        let n = self.inner.events().len() as u64;
        self.inner.commit().await?;
        self.metrics.take.inc_by(n);
        let held = self.metrics.events.dec_by(n as i64) - n as i64;
        let capacity = self.metrics.capacity.get();
        if capacity > 0 {
            self.metrics.fill.set(held.max(0) as f64 / capacity as f64);
        }
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> Result<(), ChannelError> {
        let n = self.inner.events().len() as u64;
        self.inner.rollback().await?;
        self.metrics.rollbacks.inc_by(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{channel::memory::MemoryChannel, metrics::Metrics};

    /// A channel that, like Kafka's, cannot show its backlog and batches by itself.
    struct Hidden(MemoryChannel);

    #[async_trait]
    impl Channel for Hidden {
        async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
            self.0.put(batch).await
        }
        fn try_put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
            self.0.try_put(batch)
        }
        fn close(&self) {
            self.0.close()
        }
        async fn take(
            &self,
            max: usize,
            wait: Duration,
        ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
            self.0.take(max, wait).await
        }
        async fn take_batch(
            &self,
            max: usize,
            _min: usize,
            _linger: Duration,
            idle: Duration,
        ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
            self.0.take(max, idle).await
        }
        fn stats(&self) -> ChannelStats {
            ChannelStats::default()
        }
    }

    #[tokio::test]
    async fn wrappers_pass_batching_to_the_channel() {
        let inner = Hidden(MemoryChannel::new(100, None));
        let ch: Arc<dyn Channel> = Arc::new(Instrumented::new(inner, Metrics::new().channel("c")));
        ch.put((0..5).map(|i| Event::new(i.to_string())).collect())
            .await
            .unwrap();
        // The default would wait for visible events the stats never show, then give up.
        let lease = ch
            .take_batch(10, 10, Duration::from_millis(10), Duration::from_secs(1))
            .await
            .unwrap()
            .expect("the channel's own batching took the events");
        assert_eq!(lease.events().len(), 5);
        lease.commit().await.unwrap();
    }
}
