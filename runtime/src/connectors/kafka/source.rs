//! The `kafka` source: consumes topics as a member of a consumer group (librdkafka through
//! rdkafka's `StreamConsumer`).
//!
//! Records are gathered into batches of up to `batch_size`, or fewer once `linger` has passed
//! since the batch's first record. Offsets are never committed by librdkafka itself
//! (`enable.auto.commit=false`): only after `process` returned Ok — the batch is in every
//! required channel — does the source commit, per partition, the offset after the batch's last
//! record. Commits are asynchronous (librdkafka sends them in order, without a round trip per
//! batch): a commit that fails or is lost in a crash only means those records are read again,
//! never that any is skipped; at shutdown the last batch's offsets are committed once more,
//! synchronously, so a clean stop leaves no redelivery behind. A batch that is not accepted
//! (a non-fatal processing error) is not kept: the consumer seeks back to the batch's first
//! offsets and reads it again after a pause.
//!
//! Rebalances: the consumer context records revoked partitions; records of those partitions
//! still in the unfinished batch are dropped (their new owner reads them again from the
//! committed offset), so nothing uncommitted is committed by the wrong member and nothing is
//! skipped. Assignment changes are logged.
//!
//! Each record becomes an event: the value is the body (a tombstone — no value — is an empty
//! body), Kafka headers become event headers, then `kafka.key`, `kafka.topic`,
//! `kafka.partition`, `kafka.offset` and `timestamp` (epoch milliseconds, which Sluice's
//! templates read for time) are set, replacing Kafka headers of the same names. Keys and
//! header values that are not UTF-8 are converted lossily (U+FFFD): binary data belongs in the
//! body, which is kept byte for byte. A header with a null value becomes an empty string; of
//! two headers with the same name the last wins.
//!
//! The consumer is never closed on the async runtime: closing can hang on some brokers
//! (rust-rdkafka #509), so it is closed on a thread of its own that nobody waits for.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::{KafkaError, KafkaResult},
    message::BorrowedMessage,
};

use sluice_core::{
    event::{Event, Headers},
    registry::{BuildCx, SourceSpec},
    source::{
        ProcessError, Source, SourceContext, SourceError,
        supervisor::{Backoff, Failure, Session, Supervised, sleep_or_cancelled, supervise},
    },
};

pub use super::client::HEADER_TIMESTAMP;
use super::{
    client::{
        ClientSpec, ConsumerCtx, Throttle, WARN_EVERY, add_header, check_topic_name, client_config,
        drop_detached, for_each_header, lossy,
    },
    config::KafkaSourceConfig,
    transaction,
};

/// `type: kafka` sources.
pub(crate) fn read(
    cx: &mut sluice_core::registry::ReadCx<'_>,
) -> Option<std::sync::Arc<dyn SourceSpec>> {
    sluice_core::registry::plain_source::<KafkaSourceConfig>(cx)
}

impl SourceSpec for KafkaSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let mut source = KafkaSource::new(cx.name, self, cx.batch_size)?;
        if let Some(sink) = &cx.positions_committed_by {
            source.commit_in_transactions(sink, transaction::link(&cx.metrics.component(cx.name)));
        }
        Ok(Box::new(source))
    }

    fn positions_in_transactions(&self) -> bool {
        true
    }

    fn upstream(&self) -> sluice_core::guarantee::Upstream {
        sluice_core::guarantee::Upstream::AckAfterCommit(
            "offsets are committed only after a commit",
        )
    }
}

/// The record's key (lossy UTF-8); absent for records without a key.
pub const HEADER_KEY: &str = "kafka.key";
pub const HEADER_TOPIC: &str = "kafka.topic";
pub const HEADER_PARTITION: &str = "kafka.partition";
pub const HEADER_OFFSET: &str = "kafka.offset";

/// How long the final synchronous offset commit may take at shutdown.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(5);
/// Pause before reading a batch that was not accepted again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub struct KafkaSource {
    name: String,
    config: ClientConfig,
    /// Topic names, or one `^regex`.
    subscription: Vec<String>,
    batch_size: usize,
    linger: Duration,
    /// Set when a transactional sink commits this source's offsets (see [`transaction`]):
    /// the source then commits none itself.
    offsets_by: Option<Arc<transaction::OffsetLink>>,
}

impl KafkaSource {
    /// Leaves the offsets to the transactions of sink `sink`, and reads only committed
    /// records upstream.
    pub(crate) fn commit_in_transactions(
        &mut self,
        sink: &str,
        link: Arc<transaction::OffsetLink>,
    ) {
        self.config.set("isolation.level", "read_committed");
        tracing::debug!(source = %self.name, sink, "offsets committed in the sink's transactions");
        self.offsets_by = Some(link);
    }

    /// Checks the settings and builds the consumer configuration; nothing connects here.
    pub fn new(name: &str, cfg: &KafkaSourceConfig, batch_size: usize) -> Result<Self, String> {
        let subscription = match (&cfg.topic_pattern, cfg.topics.is_empty()) {
            (Some(_), false) => return Err("set `topics` or `topic_pattern`, not both".into()),
            (None, true) => return Err("`topics` is empty (or set `topic_pattern`)".into()),
            (None, false) => {
                for t in &cfg.topics {
                    check_topic_name("topics", t)?;
                }
                cfg.topics.clone()
            }
            (Some(p), true) => vec![anchored_pattern(p)?],
        };
        let group = cfg.group_id.trim();
        if group.is_empty() {
            return Err("`group_id` is empty".into());
        }
        let mut defaults = vec![("session.timeout.ms", "6000")];
        let mut managed = vec![
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ];
        match cfg.start_at {
            Some(s) => managed.push(("auto.offset.reset", s.as_str())),
            None => defaults.push(("auto.offset.reset", "earliest")),
        }
        let config = client_config(&ClientSpec {
            field: "consumer",
            bootstrap_servers: &cfg.bootstrap_servers,
            security: &cfg.security,
            options: &cfg.consumer,
            defaults: &defaults,
            managed: &managed,
        })?;
        Ok(KafkaSource {
            name: name.to_owned(),
            config,
            subscription,
            batch_size: batch_size.max(1),
            linger: cfg.linger.0,
            offsets_by: None,
        })
    }

    fn subscribe(&self) -> Result<StreamConsumer<ConsumerCtx>, String> {
        let consumer: StreamConsumer<ConsumerCtx> = self
            .config
            .create_with_context(ConsumerCtx::new(&self.name))
            .map_err(|e| format!("kafka consumer: {e}"))?;
        let topics: Vec<&str> = self.subscription.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            drop_detached(consumer);
            return Err(format!("kafka subscribe to {topics:?}: {e}"));
        }
        Ok(consumer)
    }

    /// One consumer's life: until the agent stops, processing fails fatally, or the consumer
    /// breaks. Also returns the offsets of the last committed batch.
    async fn consume_batches(
        &self,
        consumer: &StreamConsumer<ConsumerCtx>,
        cx: &mut SourceContext,
        session: &mut Session,
    ) -> (End, Option<TopicPartitionList>) {
        let ctx = Arc::clone(consumer.context());
        let throttle = Throttle::new(WARN_EVERY);
        let mut stream = consumer.stream();
        let mut pending = Pending::new(self.batch_size);
        let mut last: Option<TopicPartitionList> = None;
        // Pauses while librdkafka reconnects by itself after a consumer error.
        let mut errors = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            // The first record of a batch: wait as long as it takes.
            let first = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => return (End::Stopped, last),
                m = stream.next() => m,
            };
            if pending.drop_revoked(&ctx, &self.name) {
                last = None;
            }
            match first {
                Some(Ok(m)) => {
                    errors.reset();
                    pending.push(&m);
                }
                Some(Err(e)) => {
                    if let Some(end) = self.consumer_error(e, &throttle) {
                        return (end, last);
                    }
                    if sleep_or_cancelled(&cx.shutdown, errors.next_delay()).await {
                        return (End::Stopped, last);
                    }
                    continue;
                }
                None => return (End::Broken("the message stream ended".into()), last),
            }

            // More records until the batch is full or the linger time is up. Records already
            // fetched are taken without touching timers.
            let deadline = tokio::time::Instant::now() + self.linger;
            while pending.len() < self.batch_size {
                let next = match stream.next().now_or_never() {
                    Some(item) => item,
                    None => tokio::select! {
                        biased;
                        _ = cx.shutdown.cancelled() => return (End::Stopped, last),
                        r = tokio::time::timeout_at(deadline, stream.next()) => match r {
                            Ok(item) => item,
                            Err(_) => break,
                        },
                    },
                };
                if pending.drop_revoked(&ctx, &self.name) {
                    last = None;
                }
                match next {
                    Some(Ok(m)) => pending.push(&m),
                    Some(Err(e)) => {
                        if let Some(end) = self.consumer_error(e, &throttle) {
                            return (end, last);
                        }
                        break;
                    }
                    None => return (End::Broken("the message stream ended".into()), last),
                }
            }
            if pending.drop_revoked(&ctx, &self.name) {
                last = None;
            }
            if pending.is_empty() {
                continue;
            }

            // Hand the batch over; commit only once it is safe.
            let (events, spans) = pending.take();
            let outcome = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => return (End::Stopped, last),
                r = cx.out.process(events) => r,
            };
            match outcome {
                // The sink commits the offsets with its records.
                Ok(()) if self.offsets_by.is_some() => session.mark_progress(),
                Ok(()) => match commit_list(&pending.topics, &spans) {
                    Ok(tpl) => {
                        session.mark_progress();
                        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                            if let Some(suppressed) = throttle.allow() {
                                tracing::warn!(source = %self.name, error = %e, suppressed, "offset commit failed; records may be read again");
                            }
                        }
                        last = Some(tpl);
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.name, error = %e, "cannot build the offset commit")
                    }
                },
                Err(e) if e.is_fatal() => return (End::Failed(e), last),
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "batch not accepted; reading it again");
                    rewind(consumer, &pending.topics, &spans, &self.name);
                    if sleep_or_cancelled(&cx.shutdown, RETRY_PAUSE).await {
                        return (End::Stopped, last);
                    }
                }
            }
        }
    }

    /// Logs a consumer error (librdkafka reconnects by itself); `Some` when the consumer is
    /// broken for good and must be replaced.
    fn consumer_error(&self, e: KafkaError, throttle: &Throttle) -> Option<End> {
        match e {
            KafkaError::PartitionEOF(_) => None,
            KafkaError::MessageConsumptionFatal(code) => {
                Some(End::Broken(format!("fatal consumer error: {code}")))
            }
            e => {
                if let Some(suppressed) = throttle.allow() {
                    tracing::warn!(source = %self.name, error = %e, suppressed, "kafka consumer error");
                }
                None
            }
        }
    }
}

/// How a consumer's life ended.
enum End {
    /// The agent is stopping.
    Stopped,
    /// Processing failed in a way retrying cannot fix.
    Failed(ProcessError),
    /// The consumer hit a fatal error; a new one is created.
    Broken(String),
}

/// A subscribed consumer, from `connect` to `consume` (a newtype: the context type is
/// crate-private, the trait is not).
pub struct Subscribed(Arc<StreamConsumer<ConsumerCtx>>);

impl Supervised for KafkaSource {
    type Conn = Subscribed;

    fn peer(&self) -> String {
        self.config
            .get("bootstrap.servers")
            .unwrap_or_default()
            .to_owned()
    }

    async fn connect(&mut self) -> Result<Self::Conn, Failure> {
        // librdkafka connects in the background: only a bad setting fails here, and retrying
        // cannot fix that.
        let consumer = self
            .subscribe()
            .map_err(|e| Failure::Fatal(SourceError::Io(std::io::Error::other(e))))?;
        tracing::info!(source = %self.name, subscription = ?self.subscription, "consuming from kafka");
        let consumer = Arc::new(consumer);
        if let Some(link) = &self.offsets_by {
            link.publish(&consumer);
        }
        Ok(Subscribed(consumer))
    }

    async fn consume(
        &mut self,
        Subscribed(consumer): Self::Conn,
        cx: &mut SourceContext,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let (end, last) = self.consume_batches(&consumer, cx, session).await;
        close_consumer(&self.name, consumer, last).await;
        match end {
            End::Stopped => Ok(()),
            End::Failed(e) => Err(Failure::Fatal(e.into())),
            End::Broken(why) => Err(Failure::retry("the kafka consumer broke", why)),
        }
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let mut this = *self;
        let restarts = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        supervise(&mut this, &mut cx, restarts).await
    }
}

/// librdkafka subscribes to a regex when the name starts with `^`; the whole topic name must
/// match, as with Java clients.
fn anchored_pattern(p: &str) -> Result<String, String> {
    let inner = p.strip_prefix('^').unwrap_or(p);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    if inner.is_empty() {
        return Err("`topic_pattern` is empty".into());
    }
    let anchored = format!("^({inner})$");
    regex::Regex::new(&anchored).map_err(|e| format!("`topic_pattern`: {e}"))?;
    Ok(anchored)
}

// ---------------------------------------------------------------- batches

/// Where an event of the batch came from.
#[derive(Clone, Copy)]
struct Origin {
    topic: usize,
    partition: i32,
    offset: i64,
}

/// The offsets a batch holds in one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    topic: usize,
    partition: i32,
    first: i64,
    last: i64,
}

/// The batch being gathered.
struct Pending {
    events: Vec<Event>,
    origins: Vec<Origin>,
    /// Topic names seen, indexed by `Origin::topic` (a handful, looked up linearly).
    topics: Vec<String>,
    capacity: usize,
}

impl Pending {
    fn new(capacity: usize) -> Self {
        Pending {
            events: Vec::with_capacity(capacity),
            origins: Vec::with_capacity(capacity),
            topics: Vec::new(),
            capacity,
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn push(&mut self, m: &BorrowedMessage<'_>) {
        let topic = self.topic_index(m.topic());
        self.origins.push(Origin {
            topic,
            partition: m.partition(),
            offset: m.offset(),
        });
        self.events.push(record_to_event(m));
    }

    fn topic_index(&mut self, name: &str) -> usize {
        match self.topics.iter().position(|t| t == name) {
            Some(i) => i,
            None => {
                self.topics.push(name.to_owned());
                self.topics.len() - 1
            }
        }
    }

    /// Drops the events of partitions revoked since the last call; true if any partition was
    /// revoked (whether or not the batch held its records).
    fn drop_revoked(&mut self, ctx: &ConsumerCtx, component: &str) -> bool {
        let Some(revoked) = ctx.take_revoked() else {
            return false;
        };
        let before = self.events.len();
        if before > 0 {
            let topics = &self.topics;
            let gone = |o: &Origin| {
                revoked
                    .iter()
                    .any(|(t, p)| *p == o.partition && *t == topics[o.topic])
            };
            let (events, origins): (Vec<Event>, Vec<Origin>) = std::mem::take(&mut self.events)
                .into_iter()
                .zip(std::mem::take(&mut self.origins))
                .filter(|(_, o)| !gone(o))
                .unzip();
            self.events = events;
            self.origins = origins;
            if self.events.len() < before {
                tracing::debug!(
                    component,
                    dropped = before - self.events.len(),
                    "dropped unfinished records of revoked partitions"
                );
            }
        }
        true
    }

    /// Hands the events over, with the offsets they span per partition.
    fn take(&mut self) -> (Vec<Event>, Vec<Span>) {
        let spans = spans(&self.origins);
        self.origins.clear();
        let events = std::mem::replace(&mut self.events, Vec::with_capacity(self.capacity));
        (events, spans)
    }
}

/// First and last offset per partition, in order of first appearance.
fn spans(origins: &[Origin]) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for o in origins {
        match out
            .iter_mut()
            .find(|s| s.topic == o.topic && s.partition == o.partition)
        {
            Some(s) => {
                s.first = s.first.min(o.offset);
                s.last = s.last.max(o.offset);
            }
            None => out.push(Span {
                topic: o.topic,
                partition: o.partition,
                first: o.offset,
                last: o.offset,
            }),
        }
    }
    out
}

/// The commit for a processed batch: the offset after its last record, per partition.
fn commit_list(topics: &[String], spans: &[Span]) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(spans.len());
    for s in spans {
        tpl.add_partition_offset(&topics[s.topic], s.partition, Offset::Offset(s.last + 1))?;
    }
    Ok(tpl)
}

/// Seeks every partition of a batch back to its first record, so the batch is read again.
fn rewind(
    consumer: &StreamConsumer<ConsumerCtx>,
    topics: &[String],
    spans: &[Span],
    component: &str,
) {
    for s in spans {
        // Timeout zero: the seek is queued, not waited for (messages fetched before it are
        // discarded by librdkafka).
        if let Err(e) = consumer.seek(
            &topics[s.topic],
            s.partition,
            Offset::Offset(s.first),
            Duration::ZERO,
        ) {
            tracing::warn!(component, error = %e, partition = s.partition, "seek failed; the batch is read again after a restart");
        }
    }
}

// ---------------------------------------------------------------- records to events

/// A record's coordinates, key and time: what becomes the `kafka.*` and `timestamp` headers.
pub(crate) struct RecordMeta<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub timestamp: Option<i64>,
}

fn record_to_event(m: &BorrowedMessage<'_>) -> Event {
    let meta = RecordMeta {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        timestamp: m.timestamp().to_millis(),
    };
    record_event(m.payload(), &meta, |h| {
        for_each_header(m, |name, value| add_header(h, name, value));
    })
}

/// The event for a record: Kafka headers (added by `kafka_headers`), then the metadata
/// headers, which replace Kafka headers of the same names.
pub(crate) fn record_event(
    payload: Option<&[u8]>,
    meta: &RecordMeta<'_>,
    kafka_headers: impl FnOnce(&mut Headers),
) -> Event {
    let mut headers = Headers::default();
    kafka_headers(&mut headers);
    match meta.key {
        Some(k) => headers.insert(HEADER_KEY, lossy(k)),
        None => {
            // A key header copied from an upstream record would be stale.
            headers.remove(HEADER_KEY);
        }
    }
    let mut num = itoa::Buffer::new();
    headers.insert(HEADER_TOPIC, meta.topic);
    headers.insert(HEADER_PARTITION, num.format(meta.partition));
    headers.insert(HEADER_OFFSET, num.format(meta.offset));
    if let Some(ts) = meta.timestamp {
        headers.insert(HEADER_TIMESTAMP, num.format(ts));
    }
    Event {
        headers,
        body: payload.map(Bytes::copy_from_slice).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------- client plumbing

/// Commits `last` synchronously (waiting at most [`FINAL_COMMIT_WAIT`] for the broker), then
/// closes the consumer in the background (see [`drop_detached`]).
pub(crate) async fn close_consumer(
    component: &str,
    consumer: Arc<StreamConsumer<ConsumerCtx>>,
    last: Option<TopicPartitionList>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || {
            let committed = last.map(|tpl| consumer.commit(&tpl, CommitMode::Sync));
            // Answer before closing: the close may never return.
            let _ = tx.send(committed);
            drop(consumer);
        });
    if let Err(e) = spawned {
        tracing::warn!(component, error = %e, "no thread to close the kafka consumer on");
        return;
    }
    match tokio::time::timeout(FINAL_COMMIT_WAIT, rx).await {
        Ok(Ok(Some(Err(e)))) => {
            tracing::warn!(component, error = %e, "final offset commit failed; the last batch may be read again")
        }
        Err(_) => {
            tracing::warn!(
                component,
                "final offset commit timed out; the last batch may be read again"
            )
        }
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: Option<&'static [u8]>) -> RecordMeta<'static> {
        RecordMeta {
            topic: "orders",
            partition: 2,
            offset: 41,
            key,
            timestamp: Some(1_700_000_000_123),
        }
    }

    #[test]
    fn records_become_events_with_metadata_headers() {
        let e = record_event(Some(b"body"), &meta(Some(b"k1")), |h| {
            add_header(h, b"trace", Some(b"abc"));
            add_header(h, b"bin", Some(&[0x66, 0xff]));
            add_header(h, b"nothing", None);
            add_header(h, b"kafka.topic", Some(b"stale"));
        });
        assert_eq!(&e.body[..], b"body");
        let h = &e.headers;
        assert_eq!(h.get("trace"), Some("abc"));
        assert_eq!(h.get("bin"), Some("f\u{fffd}"), "lossy UTF-8");
        assert_eq!(h.get("nothing"), Some(""));
        assert_eq!(h.get(HEADER_TOPIC), Some("orders"), "metadata wins");
        assert_eq!(h.get(HEADER_KEY), Some("k1"));
        assert_eq!(h.get(HEADER_PARTITION), Some("2"));
        assert_eq!(h.get(HEADER_OFFSET), Some("41"));
        assert_eq!(h.get(HEADER_TIMESTAMP), Some("1700000000123"));
    }

    #[test]
    fn tombstones_are_empty_and_stale_keys_go() {
        let mut m = meta(None);
        m.timestamp = None;
        let e = record_event(None, &m, |h| add_header(h, b"kafka.key", Some(b"old")));
        assert!(e.body.is_empty());
        assert_eq!(e.headers.get(HEADER_KEY), None);
        assert_eq!(e.headers.get(HEADER_TIMESTAMP), None);
    }

    #[test]
    fn spans_cover_each_partition_once() {
        let o = |topic, partition, offset| Origin {
            topic,
            partition,
            offset,
        };
        let s = spans(&[o(0, 1, 10), o(0, 0, 5), o(0, 1, 11), o(1, 1, 3), o(0, 0, 7)]);
        assert_eq!(
            s,
            [
                Span {
                    topic: 0,
                    partition: 1,
                    first: 10,
                    last: 11
                },
                Span {
                    topic: 0,
                    partition: 0,
                    first: 5,
                    last: 7
                },
                Span {
                    topic: 1,
                    partition: 1,
                    first: 3,
                    last: 3
                },
            ]
        );
        let tpl = commit_list(&["a".into(), "b".into()], &s).unwrap();
        let a1 = tpl.find_partition("a", 1).unwrap();
        assert_eq!(
            a1.offset(),
            Offset::Offset(12),
            "the offset after the last record"
        );
    }

    #[test]
    fn patterns_must_match_whole_names() {
        assert_eq!(anchored_pattern("events-.*").unwrap(), "^(events-.*)$");
        assert_eq!(anchored_pattern("^a|b$").unwrap(), "^(a|b)$");
        assert!(anchored_pattern("(").is_err());
        assert!(anchored_pattern("^$").is_err());
    }
}
