//! The `kafka` channel: a Kafka topic as the durable buffer between sources and sinks.
//!
//! A put produces every event of the batch (body as the value, headers as Kafka headers,
//! optionally a key) with the idempotent, `acks=all` producer and returns Ok only once every
//! record is acknowledged. A take reads as a member of the channel's consumer group
//! (`group_id`, default `sluice-channel-<topic>`); a commit commits, synchronously, the offset
//! after the lease's last record in each partition. The state lives in Kafka, so the channel
//! survives agent restarts, and agents naming the same topic and group share its partitions.
//!
//! Transactions map onto Kafka like this:
//! - **One lease at a time.** Offsets are per partition and commit everything before them, so
//!   a second lease committing first would commit the first one's records too. A take waits
//!   (up to its `wait`) while a lease is outstanding; several sinks on one Kafka channel take
//!   turns.
//! - **Rollback** (or dropping an unfinished lease) puts the events back, in order, into a
//!   small in-process redelivery queue that the next take serves before reading on. This is
//!   simpler and cheaper than seeking the consumer back, and as correct: while events wait
//!   there the consumer is not polled, so no rebalance can move their partitions meanwhile.
//! - **A failed commit** is reported, but the events are not taken again by this process:
//!   they were delivered, and a later commit covers them; after a restart or a rebalance they
//!   may be delivered again (at-least-once).
//! - **A failed put** may have written part of the batch (Kafka has no atomic multi-record
//!   write without transactions); the source retries the whole batch, so some events may be
//!   stored twice. Nothing acknowledged is ever lost.
//! - Rebalances drop records of revoked partitions from a take in progress, as the `kafka`
//!   source does.
//!
//! Limits: `try_put` (optional channels) always answers `Full`, since a put cannot be
//! acknowledged without waiting for the broker; `stats` counts only what this process holds
//! (leased and rolled-back events): the backlog stays in Kafka and is reported as 0, with
//! capacity 0 (unbounded). Ordering holds per partition only. An event larger than the
//! producer's `message.max.bytes` makes every put of its batch fail.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
    message::BorrowedMessage,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use sluice_core::{
    channel::{Channel, ChannelError, ChannelStats, Lease},
    event::{Event, Headers, template::Template},
    registry::{ChannelCx, ChannelSpec, ReadCx, plain_channel},
};

use super::{
    client::{
        ClientSpec, ConsumerCtx, Throttle, add_header, check_topic_name, client_config,
        drop_detached, for_each_header,
    },
    config::KafkaChannelConfig,
    producer::{
        Failures, HeaderFilter, KafkaProducer, Routing, create_producer, produce_batch,
        producer_config,
    },
};

/// `type: kafka` channels.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn ChannelSpec>> {
    plain_channel::<KafkaChannelConfig>(cx)
}

impl ChannelSpec for KafkaChannelConfig {
    /// Opening connects to nothing: clients are made on the first put or take.
    fn open(&self, cx: &ChannelCx<'_>) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(KafkaChannel::open(cx.name, self)?))
    }

    fn crash_loss(&self) -> Option<&'static str> {
        None
    }
}

/// How long a commit may wait for the broker's answer.
const COMMIT_WAIT: Duration = Duration::from_secs(30);
/// Pause after a consumer error while a take waits, so errors cannot spin.
const ERROR_PAUSE: Duration = Duration::from_millis(200);

pub struct KafkaChannel {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    topic: String,
    routing: Routing,
    producer_config: ClientConfig,
    consumer_config: ClientConfig,
    /// Created on the first put; replaced after a fatal error.
    producer: Mutex<Option<KafkaProducer>>,
    /// Created on the first take (it joins the group then); replaced after a fatal error.
    consumer: Mutex<Option<Arc<StreamConsumer<ConsumerCtx>>>>,
    /// Rolled-back events, oldest first; served before anything new is read.
    redeliver: Mutex<VecDeque<Held>>,
    /// One permit: one lease at a time, so commits stay in order.
    lease: Arc<Semaphore>,
    in_flight: AtomicUsize,
    closed: AtomicBool,
    throttle: Throttle,
}

/// An event read from the topic, and where it came from.
struct Held {
    event: Event,
    partition: i32,
    offset: i64,
}

impl KafkaChannel {
    /// Checks the settings and builds both client configurations; nothing connects here.
    pub fn open(name: &str, cfg: &KafkaChannelConfig) -> Result<Self, String> {
        check_topic_name("topic", &cfg.topic)?;
        let group = cfg.group();
        if group.trim().is_empty() {
            return Err("`group_id` is empty".into());
        }
        let key = cfg
            .key
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| format!("`key`: {e}"))?;
        let consumer_config = client_config(&ClientSpec {
            field: "consumer",
            bootstrap_servers: &cfg.bootstrap_servers,
            security: &cfg.security,
            options: &cfg.consumer,
            defaults: &[
                ("session.timeout.ms", "6000"),
                ("auto.offset.reset", "earliest"),
            ],
            managed: &[
                ("group.id", group.trim()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
        })?;
        let producer_config =
            producer_config(&cfg.bootstrap_servers, &cfg.security, &cfg.producer)?;
        Ok(KafkaChannel {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                topic: cfg.topic.clone(),
                routing: Routing {
                    // A valid topic name has no `%`, so the template is the name itself.
                    topic: Template::parse(&cfg.topic).map_err(|e| format!("`topic`: {e}"))?,
                    key,
                    headers: HeaderFilter::new(true, &[]),
                },
                producer_config,
                consumer_config,
                producer: Mutex::new(None),
                consumer: Mutex::new(None),
                redeliver: Mutex::new(VecDeque::new()),
                lease: Arc::new(Semaphore::new(1)),
                in_flight: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                throttle: Throttle::new(Duration::from_secs(10)),
            }),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few infallible steps: a poisoned lock is still sound.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn storage(e: impl std::fmt::Display) -> ChannelError {
    ChannelError::Storage(e.to_string())
}

/// Records taken off the consumer's stream and not yet in a lease: dropped unreturned (the
/// take was cancelled), they go to the front of the redelivery queue, in order.
struct Holding<'a> {
    inner: &'a Inner,
    held: Vec<Held>,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut q = lock(&self.inner.redeliver);
        for h in self.held.drain(..).rev() {
            q.push_front(h);
        }
    }
}

/// What one read of the topic found.
enum Polled {
    Events(Vec<Held>),
    /// The consumer failed for good and must be replaced.
    Broken(String),
}

impl Inner {
    fn producer(&self) -> Result<KafkaProducer, ChannelError> {
        let mut slot = lock(&self.producer);
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let p =
            create_producer(&self.producer_config, &self.name).map_err(ChannelError::Storage)?;
        *slot = Some(p.clone());
        Ok(p)
    }

    fn consumer(&self) -> Result<Arc<StreamConsumer<ConsumerCtx>>, ChannelError> {
        let mut slot = lock(&self.consumer);
        if let Some(c) = slot.as_ref() {
            return Ok(Arc::clone(c));
        }
        let c: StreamConsumer<ConsumerCtx> = self
            .consumer_config
            .create_with_context(ConsumerCtx::new(&self.name))
            .map_err(|e| storage(format!("kafka consumer: {e}")))?;
        if let Err(e) = c.subscribe(&[self.topic.as_str()]) {
            drop_detached(c);
            return Err(storage(format!("kafka subscribe to {}: {e}", self.topic)));
        }
        let c = Arc::new(c);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    /// Drops a broken consumer (every handle closes off the runtime); the next take makes a
    /// new one, which reads on from the committed offsets.
    fn reset_consumer(&self, local: Arc<StreamConsumer<ConsumerCtx>>) {
        drop_detached(local);
        if let Some(c) = lock(&self.consumer).take() {
            drop_detached(c);
        }
    }

    /// Waits until `deadline` for a first record, then takes what else is already fetched,
    /// up to `max`. With `fill` (`min`, `linger`), it goes on reading what arrives for up to
    /// `linger` after the first record, until it holds `min`.
    async fn poll(
        &self,
        consumer: &StreamConsumer<ConsumerCtx>,
        max: usize,
        deadline: Instant,
        fill: Option<(usize, Duration)>,
    ) -> Polled {
        let ctx = consumer.context();
        let mut stream = consumer.stream();
        let mut held: Vec<Held> = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            self.drop_revoked(ctx, &mut held);
            match next {
                Err(_) => return Polled::Events(held),
                Ok(Some(Ok(m))) => {
                    held.push(held_of(&m));
                    break;
                }
                Ok(Some(Err(e))) => {
                    if let Some(why) = self.consumer_error(e) {
                        return Polled::Broken(why);
                    }
                    let pause = Instant::now() + ERROR_PAUSE;
                    if pause >= deadline {
                        return Polled::Events(held);
                    }
                    tokio::time::sleep_until(pause).await;
                }
                Ok(None) => return Polled::Broken("the message stream ended".into()),
            }
        }
        let fill = fill.map(|(min, linger)| (min, Instant::now() + linger));
        // Filling awaits while holding records taken off the stream: if the take is dropped
        // meanwhile (the sink drains, retires or aborts), they go back for the next take
        // instead of being lost (a later lease would commit past them).
        let mut holding = Holding { inner: self, held };
        while holding.held.len() < max {
            let next = match fill {
                // A record already fetched is taken without arming a timer (and reading the
                // clock) per record; the timer is for waiting only.
                Some((min, until)) if holding.held.len() < min => {
                    match stream.next().now_or_never() {
                        Some(r) => Some(r),
                        None => tokio::time::timeout_at(until, stream.next()).await.ok(),
                    }
                }
                _ => stream.next().now_or_never(),
            };
            self.drop_revoked(ctx, &mut holding.held);
            match next {
                Some(Some(Ok(m))) => holding.held.push(held_of(&m)),
                Some(Some(Err(e))) => {
                    if let Some(why) = self.consumer_error(e) {
                        // A new consumer reads them again from the committed offsets.
                        holding.held.clear();
                        return Polled::Broken(why);
                    }
                    break;
                }
                Some(None) => {
                    holding.held.clear();
                    return Polled::Broken("the message stream ended".into());
                }
                None => break,
            }
        }
        Polled::Events(std::mem::take(&mut holding.held))
    }

    /// Drops records of partitions revoked since the last call.
    fn drop_revoked(&self, ctx: &ConsumerCtx, held: &mut Vec<Held>) {
        if let Some(revoked) = ctx.take_revoked() {
            held.retain(|h| {
                !revoked
                    .iter()
                    .any(|(t, p)| *p == h.partition && *t == self.topic)
            });
        }
    }

    /// Logs a consumer error (librdkafka reconnects by itself); `Some` when the consumer is
    /// broken for good.
    fn consumer_error(&self, e: KafkaError) -> Option<String> {
        match e {
            KafkaError::PartitionEOF(_) => None,
            KafkaError::MessageConsumptionFatal(code) => {
                Some(format!("fatal consumer error: {code}"))
            }
            e => {
                if let Some(suppressed) = self.throttle.allow() {
                    tracing::warn!(channel = %self.name, error = %e, suppressed, "kafka consumer error");
                }
                None
            }
        }
    }

    /// Commits `offsets` (partition, next offset) synchronously on a thread of its own — a
    /// commit must be acknowledged before it counts, and a broker that never answers must
    /// not hold a runtime thread (or the agent's exit).
    async fn commit(&self, offsets: Vec<(i32, i64)>) -> Result<(), ChannelError> {
        let Some(consumer) = lock(&self.consumer).clone() else {
            return Err(storage("the kafka consumer is gone"));
        };
        let topic = self.topic.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("kafka-commit".into())
            .spawn(move || {
                let result = commit_sync(&consumer, &topic, &offsets);
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            return Err(storage(format!("no thread for the offset commit: {e}")));
        }
        match tokio::time::timeout(COMMIT_WAIT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(storage("the offset commit ended without an answer")),
            Err(_) => Err(storage(format!(
                "the offset commit got no answer within {COMMIT_WAIT:?}"
            ))),
        }
    }
}

fn commit_sync(
    consumer: &StreamConsumer<ConsumerCtx>,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<(), ChannelError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for &(partition, next) in offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next))
            .map_err(storage)?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| storage(format!("kafka offset commit: {e}")))
}

impl Drop for Inner {
    fn drop(&mut self) {
        let consumer = self
            .consumer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = consumer {
            drop_detached(c);
        }
        let producer = self
            .producer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(p) = producer {
            drop_detached(p);
        }
    }
}

/// The event for a record: the value as body, the Kafka headers as headers (lossy UTF-8, as
/// in the `kafka` source, which is exact for what a put wrote).
fn held_of(m: &BorrowedMessage<'_>) -> Held {
    let mut headers = Headers::default();
    for_each_header(m, |name, value| add_header(&mut headers, name, value));
    Held {
        event: Event {
            headers,
            body: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        },
        partition: m.partition(),
        offset: m.offset(),
    }
}

/// The offset after the last record, per partition.
fn next_offsets(marks: &[(i32, i64)]) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = Vec::new();
    for &(partition, offset) in marks {
        match out.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, next)) => *next = (*next).max(offset + 1),
            None => out.push((partition, offset + 1)),
        }
    }
    out
}

impl KafkaChannel {
    /// [`Channel::take`], optionally filling the batch (see [`Inner::poll`]).
    async fn take_filling(
        &self,
        max: usize,
        wait: Duration,
        fill: Option<(usize, Duration)>,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        let inner = &self.inner;
        let deadline = Instant::now() + wait;
        let permit =
            match tokio::time::timeout_at(deadline, Arc::clone(&inner.lease).acquire_owned()).await
            {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(ChannelError::Closed),
                Err(_) => return Ok(None),
            };
        let max = max.max(1);

        // Rolled-back events first, in their order.
        let again: Vec<Held> = {
            let mut q = lock(&inner.redeliver);
            let n = max.min(q.len());
            q.drain(..n).collect()
        };
        if !again.is_empty() {
            return Ok(Some(KafkaLease::new(inner, again, permit)));
        }

        let consumer = inner.consumer()?;
        match inner.poll(&consumer, max, deadline, fill).await {
            Polled::Events(held) if held.is_empty() => Ok(None),
            Polled::Events(held) => Ok(Some(KafkaLease::new(inner, held, permit))),
            Polled::Broken(why) => {
                tracing::warn!(channel = %inner.name, error = %why, "replacing the kafka consumer");
                inner.reset_consumer(consumer);
                Err(ChannelError::Storage(why))
            }
        }
    }
}

#[async_trait]
impl Channel for KafkaChannel {
    async fn put(&self, batch: Vec<Event>) -> Result<(), ChannelError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ChannelError::Closed);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let producer = inner.producer()?;
        let mut failures = Failures::default();
        produce_batch(&producer, &inner.routing, &batch, &mut failures).await;
        // Never the last handle dropped here: closing a client may block.
        drop(producer);
        if failures.fatal {
            tracing::warn!(channel = %inner.name, "fatal kafka producer error; replacing the producer");
            if let Some(p) = lock(&inner.producer).take() {
                drop_detached(p);
            }
        }
        match failures.first_reason() {
            None => Ok(()),
            Some(why) => Err(ChannelError::Storage(format!(
                "kafka topic {}: {} of {} events not acknowledged: {why}",
                inner.topic,
                failures.rejected.len() + failures.retriable.len(),
                batch.len()
            ))),
        }
    }

    /// Always `Full` (or `Closed`): a put is only safe once the broker acknowledged it, which
    /// cannot be had without waiting. Optional channels of type `kafka` receive nothing.
    fn try_put(&self, _batch: Vec<Event>) -> Result<(), ChannelError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(ChannelError::Closed)
        } else {
            Err(ChannelError::Full)
        }
    }

    async fn take(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        self.take_filling(max, wait, None).await
    }

    /// The backlog stays in Kafka, where [`stats`](Channel::stats) cannot see it (the default
    /// waits for visible events, so a lingering sink such as S3 never took any): the batch is
    /// filled by reading instead — up to `idle` for a first record, then up to `linger` for
    /// `min`.
    async fn take_batch(
        &self,
        max: usize,
        min: usize,
        linger: Duration,
        idle: Duration,
    ) -> Result<Option<Box<dyn Lease>>, ChannelError> {
        self.take_filling(max, idle, Some((min.max(1), linger)))
            .await
    }

    fn stats(&self) -> ChannelStats {
        let inner = &self.inner;
        let in_flight = inner.in_flight.load(Ordering::Acquire);
        let waiting = lock(&inner.redeliver).len();
        ChannelStats {
            events: in_flight + waiting,
            bytes: 0,
            capacity_events: 0,
            in_flight,
        }
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }
}

/// Events taken from the topic. Holding it holds the channel's only lease permit.
struct KafkaLease {
    inner: Arc<Inner>,
    events: Vec<Event>,
    /// (partition, offset) of each event.
    marks: Vec<(i32, i64)>,
    /// `Some` until committed or given back.
    permit: Option<OwnedSemaphorePermit>,
}

impl KafkaLease {
    fn new(inner: &Arc<Inner>, held: Vec<Held>, permit: OwnedSemaphorePermit) -> Box<Self> {
        let mut events = Vec::with_capacity(held.len());
        let mut marks = Vec::with_capacity(held.len());
        for h in held {
            events.push(h.event);
            marks.push((h.partition, h.offset));
        }
        inner.in_flight.fetch_add(events.len(), Ordering::AcqRel);
        Box::new(KafkaLease {
            inner: Arc::clone(inner),
            events,
            marks,
            permit: Some(permit),
        })
    }

    /// Puts the events back at the head of the redelivery queue, in order, then lets the
    /// next take in.
    fn give_back(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let events = std::mem::take(&mut self.events);
        let marks = std::mem::take(&mut self.marks);
        self.inner
            .in_flight
            .fetch_sub(events.len(), Ordering::AcqRel);
        {
            let mut q = lock(&self.inner.redeliver);
            for (event, (partition, offset)) in events.into_iter().zip(marks).rev() {
                q.push_front(Held {
                    event,
                    partition,
                    offset,
                });
            }
        }
        drop(permit);
    }
}

#[async_trait]
impl Lease for KafkaLease {
    fn events_mut(&mut self) -> &mut [Event] {
        &mut self.events
    }

    fn events(&self) -> &[Event] {
        &self.events
    }

    async fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        let offsets = next_offsets(&self.marks);
        let result = self.inner.commit(offsets).await;
        if let Err(e) = &result {
            tracing::warn!(channel = %self.inner.name, error = %e, "kafka offset commit failed; the events may be delivered again after a restart or rebalance");
        }
        // Committed or not, these events were delivered: they are not taken again here.
        self.inner
            .in_flight
            .fetch_sub(self.events.len(), Ordering::AcqRel);
        self.permit = None;
        result
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), ChannelError> {
        self.give_back();
        Ok(())
    }
}

impl Drop for KafkaLease {
    fn drop(&mut self) {
        // An unfinished lease counts as rolled back.
        self.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> KafkaChannel {
        let cfg = KafkaChannelConfig {
            // Nothing listens there; these tests never reach the broker.
            bootstrap_servers: "127.0.0.1:1".into(),
            topic: "t".into(),
            group_id: None,
            key: None,
            security: Default::default(),
            consumer: Default::default(),
            producer: Default::default(),
        };
        KafkaChannel::open("ch", &cfg).unwrap()
    }

    async fn lease_of(ch: &KafkaChannel, items: &[(i32, i64, &str)]) -> Box<KafkaLease> {
        let permit = Arc::clone(&ch.inner.lease).acquire_owned().await.unwrap();
        let held = items
            .iter()
            .map(|&(partition, offset, body)| Held {
                event: Event::new(body.to_owned()),
                partition,
                offset,
            })
            .collect();
        KafkaLease::new(&ch.inner, held, permit)
    }

    fn bodies(lease: &dyn Lease) -> Vec<String> {
        lease
            .events()
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn rolled_back_events_come_back_first_in_order() {
        let ch = channel();
        let lease = lease_of(&ch, &[(0, 5, "a"), (1, 9, "b"), (0, 6, "c")]).await;
        assert_eq!(ch.stats().in_flight, 3);
        assert!(
            ch.take(10, Duration::from_millis(20))
                .await
                .unwrap()
                .is_none(),
            "one lease at a time"
        );
        lease.rollback().await.unwrap();
        assert_eq!((ch.stats().events, ch.stats().in_flight), (3, 0));

        let first = ch.take(2, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(bodies(&*first), ["a", "b"]);
        drop(first); // an unfinished lease is rolled back
        let all = ch.take(10, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(bodies(&*all), ["a", "b", "c"]);
        all.rollback().await.unwrap();
        assert_eq!(ch.stats().events, 3);
    }

    #[test]
    fn commit_offsets_follow_each_partitions_last_record() {
        assert_eq!(
            next_offsets(&[(0, 5), (1, 9), (0, 7), (0, 6)]),
            [(0, 8), (1, 10)]
        );
    }

    #[tokio::test]
    async fn optional_puts_are_refused_and_closed_channels_refuse_puts() {
        let ch = channel();
        assert!(matches!(
            ch.try_put(vec![Event::new("x")]),
            Err(ChannelError::Full)
        ));
        ch.close();
        assert!(matches!(
            ch.put(vec![Event::new("x")]).await,
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let cfg = |topic: &str, key: Option<&str>| KafkaChannelConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic: topic.into(),
            group_id: None,
            key: key.map(str::to_owned),
            security: Default::default(),
            consumer: Default::default(),
            producer: Default::default(),
        };
        let err = |c: KafkaChannelConfig| KafkaChannel::open("ch", &c).err().unwrap();
        assert!(err(cfg("bad topic", None)).contains("`topic`"));
        assert!(err(cfg("t", Some("%{"))).contains("`key`"));
        assert_eq!(cfg("t", None).group(), "sluice-channel-t");
    }
}
