//! The `rabbitmq` source: consumes one queue with manual acknowledgements.
//!
//! Deliveries are gathered into a batch until it holds `batch_size` messages or `linger`
//! has passed since its first one; the batch is acknowledged — one `basic.ack` with
//! `multiple` on its last delivery tag (tags only grow on a channel) — only after the
//! channel processor committed it. A batch the channels refuse for now is returned to the
//! queue (`basic.nack`, `multiple`, `requeue`) and consumption resumes after a backoff; a
//! batch interrupted by shutdown is simply not acknowledged, and the broker requeues it when
//! the connection closes. `prefetch` (`basic.qos`, default twice `batch_size`) lets the
//! broker push the next batch while one is being committed.
//!
//! Message properties become `amqp.*` headers ([`header`]) and the AMQP `timestamp`
//! (seconds) becomes Sluice's `timestamp` header (epoch milliseconds); each entry of the
//! message's `headers` table becomes an event header, after the properties, so a table entry
//! wins over a property of the same name. Table values are rendered as text: strings as they
//! are, numbers and booleans in decimal, timestamps as epoch seconds, byte arrays as UTF-8
//! (base64 when not UTF-8), void as the empty string, nested arrays and tables as JSON.
//!
//! A lost connection or channel is logged and reopened after a doubling, jittered pause
//! (`reconnect_backoff` up to `max_reconnect_backoff`; the engine's source supervisor starts
//! it over once a batch was acknowledged or a connection outlived the longest pause); what was
//! delivered but not acknowledged is delivered again by the broker, so delivery is at least
//! once. The same happens when a batch waits for room in a full channel longer than the
//! broker's `consumer_timeout` (30 minutes by default): the broker closes the channel, the
//! source reconnects, and the batch is delivered again.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::{
    Acker, BasicProperties, Connection, Consumer, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    protocol::constants::REPLY_SUCCESS,
    types::{AMQPValue, DecimalValue, FieldTable, ShortString},
};

use sluice_core::{
    event::{Event, Headers},
    registry::{BuildCx, ReadCx, SourceSpec, plain_source},
    source::{
        ProcessError, Source, SourceContext, SourceError,
        supervisor::{Backoff, Failure, Session, Supervised, sleep_or_cancelled, supervise},
    },
};

use super::config::{
    Endpoint, RabbitError, RabbitSourceConfig, exchange_kind, field_table, header, short,
};

/// `type: rabbitmq` sources.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SourceSpec>> {
    plain_source::<RabbitSourceConfig>(cx)
}

impl SourceSpec for RabbitSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(
            RabbitSource::new(cx.name, self, cx.batch_size).map_err(|e| e.to_string())?,
        ))
    }

    fn upstream(&self) -> sluice_core::guarantee::Upstream {
        sluice_core::guarantee::Upstream::AckAfterCommit(
            "messages are acknowledged only after a commit",
        )
    }
}

/// Longest wait for an acknowledgement to be handed to the connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// After a stop signal, how long a batch already being committed may still take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Backoff after the channels refused a batch (growing per refusal in a row).
const REFUSED_BACKOFF: Duration = Duration::from_millis(200);
const MAX_REFUSED_BACKOFF: Duration = Duration::from_secs(5);

/// Which parts of a message become event headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mapping {
    /// Properties and delivery data as `amqp.*` headers, plus `timestamp`.
    pub properties: bool,
    /// Entries of the AMQP `headers` table.
    pub headers: bool,
}

struct QueueSpec {
    options: QueueDeclareOptions,
    arguments: FieldTable,
}

struct BindingSpec {
    exchange: ShortString,
    routing_key: ShortString,
    /// Declare the exchange with this type first.
    kind: Option<ExchangeKind>,
    arguments: FieldTable,
}

pub struct RabbitSource {
    name: String,
    endpoint: Endpoint,
    queue: ShortString,
    declare: Option<QueueSpec>,
    bindings: Vec<BindingSpec>,
    prefetch: u16,
    batch_size: usize,
    linger: Duration,
    consumer_tag: ShortString,
    mapping: Mapping,
    reconnect_backoff: Duration,
    max_reconnect_backoff: Duration,
}

/// What can go wrong with a RabbitMQ source: its settings, or the broker session.
#[derive(Debug, thiserror::Error)]
pub enum RabbitSourceError {
    #[error(transparent)]
    Settings(#[from] RabbitError),
    #[error("`queue`: required (the queue to consume)")]
    NoQueue,
    #[error("`bindings[{0}].exchange`: required (queues cannot be bound to the default exchange)")]
    DefaultExchange(usize),
    #[error("`prefetch`: must be at least 1 (0 would let the broker push the whole queue)")]
    ZeroPrefetch,
    /// A broker operation (opening a channel, declaring, binding, consuming) was refused.
    #[error("{what}: {source}")]
    Broker {
        what: String,
        source: Box<lapin::Error>,
    },
    /// The consumer's stream ended with an error.
    #[error(transparent)]
    Consumer(Box<lapin::Error>),
    #[error("the broker cancelled the consumer (was queue `{0}` deleted?)")]
    Cancelled(String),
    #[error(
        "the channel closed before {0} committed messages were acknowledged; the broker \
         delivers them again (duplicates)"
    )]
    AckClosed(usize),
    #[error(
        "acknowledging {events} committed messages failed ({source}); the broker delivers \
         them again (duplicates)"
    )]
    AckFailed {
        events: usize,
        source: Box<lapin::Error>,
    },
    #[error("acknowledgement not sent within {0:?}")]
    AckTimeout(Duration),
    #[error("the channel closed while returning a refused batch; the broker delivers it again")]
    NackFailed,
}

impl RabbitSourceError {
    fn broker(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> Self {
        let what = what.into();
        move |e| RabbitSourceError::Broker {
            what,
            source: Box::new(e),
        }
    }
}

/// Why a consuming session ended.
enum Ended {
    /// The agent is stopping.
    Shutdown,
    /// The channels can never take a batch again (the agent is stopping).
    Fatal(ProcessError),
    /// The connection or channel is gone.
    Lost(RabbitSourceError),
}

impl RabbitSource {
    /// Checks the settings without connecting; an error names the offending field.
    pub fn new(
        name: &str,
        cfg: &RabbitSourceConfig,
        batch_size: usize,
    ) -> Result<Self, RabbitSourceError> {
        let endpoint = Endpoint::parse(&cfg.uri, cfg.connect_timeout.0)?;
        if cfg.queue.is_empty() {
            return Err(RabbitSourceError::NoQueue);
        }
        let queue = short("queue", &cfg.queue)?;
        let declare = match &cfg.declare {
            Some(d) => Some(QueueSpec {
                options: QueueDeclareOptions {
                    passive: false,
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    nowait: false,
                },
                arguments: field_table("declare.arguments", &d.arguments)?,
            }),
            None => None,
        };
        let mut bindings = Vec::with_capacity(cfg.bindings.len());
        for (i, b) in cfg.bindings.iter().enumerate() {
            if b.exchange.is_empty() {
                return Err(RabbitSourceError::DefaultExchange(i));
            }
            let kind = match &b.exchange_type {
                Some(k) => Some(exchange_kind(&format!("bindings[{i}].exchange_type"), k)?),
                None => None,
            };
            bindings.push(BindingSpec {
                exchange: short(&format!("bindings[{i}].exchange"), &b.exchange)?,
                routing_key: short(&format!("bindings[{i}].routing_key"), &b.routing_key)?,
                kind,
                arguments: field_table(&format!("bindings[{i}].arguments"), &b.arguments)?,
            });
        }
        let batch_size = batch_size.max(1);
        let prefetch = match cfg.prefetch {
            Some(0) => return Err(RabbitSourceError::ZeroPrefetch),
            Some(p) => p,
            None => u16::try_from(batch_size.saturating_mul(2)).unwrap_or(u16::MAX),
        };
        if usize::from(prefetch) < batch_size {
            tracing::warn!(
                source = %name,
                prefetch,
                batch_size,
                "prefetch is below batch_size: a batch never holds more than `prefetch` messages"
            );
        }
        Ok(RabbitSource {
            name: name.to_owned(),
            endpoint,
            queue,
            declare,
            bindings,
            prefetch,
            batch_size,
            linger: cfg.linger.0,
            consumer_tag: short("consumer_tag", &cfg.consumer_tag)?,
            mapping: Mapping {
                properties: cfg.copy_properties,
                headers: cfg.copy_headers,
            },
            reconnect_backoff: cfg.reconnect_backoff.0.max(Duration::from_millis(1)),
            max_reconnect_backoff: cfg.max_reconnect_backoff.0.max(cfg.reconnect_backoff.0),
        })
    }

    /// Connects, declares what is configured, and starts consuming.
    async fn open(&self) -> Result<(Connection, Consumer), RabbitSourceError> {
        let conn = self.endpoint.connect(&self.name).await?;
        let ch = conn
            .create_channel()
            .await
            .map_err(RabbitSourceError::broker("cannot open a channel"))?;
        if let Some(d) = &self.declare {
            ch.queue_declare(self.queue.clone(), d.options, d.arguments.clone())
                .await
                .map_err(RabbitSourceError::broker(format!(
                    "cannot declare queue `{}`",
                    self.queue
                )))?;
        }
        for b in &self.bindings {
            if let Some(kind) = &b.kind {
                let options = ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                };
                ch.exchange_declare(
                    b.exchange.clone(),
                    kind.clone(),
                    options,
                    FieldTable::default(),
                )
                .await
                .map_err(RabbitSourceError::broker(format!(
                    "cannot declare exchange `{}`",
                    b.exchange
                )))?;
            }
            ch.queue_bind(
                self.queue.clone(),
                b.exchange.clone(),
                b.routing_key.clone(),
                QueueBindOptions::default(),
                b.arguments.clone(),
            )
            .await
            .map_err(RabbitSourceError::broker(format!(
                "cannot bind queue `{}` to exchange `{}`",
                self.queue, b.exchange
            )))?;
        }
        ch.basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(RabbitSourceError::broker("cannot set prefetch"))?;
        let consumer = ch
            .basic_consume(
                self.queue.clone(),
                self.consumer_tag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(RabbitSourceError::broker(format!(
                "cannot consume queue `{}`",
                self.queue
            )))?;
        Ok((conn, consumer))
    }

    /// Batches, commits and acknowledges until the session ends.
    async fn consume_batches(
        &self,
        cx: &mut SourceContext,
        consumer: &mut Consumer,
        session: &mut Session,
    ) -> Ended {
        let mut refused = Backoff::new(REFUSED_BACKOFF, MAX_REFUSED_BACKOFF);
        loop {
            let first = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => return Ended::Shutdown,
                d = consumer.next() => d,
            };
            let mut batch = Vec::with_capacity(self.batch_size);
            let mut last = match self.take(first, &mut batch) {
                Ok(acker) => acker,
                Err(reason) => return Ended::Lost(reason),
            };
            let linger = tokio::time::sleep(self.linger);
            tokio::pin!(linger);
            while batch.len() < self.batch_size {
                let next = tokio::select! {
                    biased;
                    d = consumer.next() => d,
                    _ = &mut linger => break,
                    _ = cx.shutdown.cancelled() => return Ended::Shutdown,
                };
                match self.take(next, &mut batch) {
                    Ok(acker) => last = acker,
                    // The partial batch is not acknowledged: the broker delivers it again.
                    Err(reason) => return Ended::Lost(reason),
                }
            }
            let events = batch.len();

            let result = {
                let process = cx.out.process(batch);
                tokio::pin!(process);
                tokio::select! {
                    r = &mut process => Some(r),
                    _ = cx.shutdown.cancelled() => {
                        tokio::time::timeout(SHUTDOWN_GRACE, &mut process).await.ok()
                    }
                }
            };
            match result {
                // Stopping before the batch was committed: unacknowledged, so redelivered.
                None => return Ended::Shutdown,
                Some(Ok(())) => {
                    let ack = last.ack(BasicAckOptions { multiple: true });
                    match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                        Ok(Ok(true)) => {
                            session.mark_progress();
                            refused.reset();
                        }
                        Ok(Ok(false)) => {
                            return Ended::Lost(RabbitSourceError::AckClosed(events));
                        }
                        Ok(Err(e)) => {
                            return Ended::Lost(RabbitSourceError::AckFailed {
                                events,
                                source: Box::new(e),
                            });
                        }
                        Err(_) => {
                            return Ended::Lost(RabbitSourceError::AckTimeout(ACK_TIMEOUT));
                        }
                    }
                }
                Some(Err(e)) if e.is_fatal() => return Ended::Fatal(e),
                Some(Err(e)) => {
                    let wait = refused.next_delay();
                    tracing::warn!(
                        source = %cx.name,
                        error = %e,
                        events,
                        retry_in = ?wait,
                        "batch not accepted; returning it to the queue"
                    );
                    let nack = last.nack(BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    });
                    let returned = tokio::time::timeout(ACK_TIMEOUT, nack).await;
                    if !matches!(returned, Ok(Ok(true))) {
                        return Ended::Lost(RabbitSourceError::NackFailed);
                    }
                    if sleep_or_cancelled(&cx.shutdown, wait).await {
                        return Ended::Shutdown;
                    }
                }
            }
            if cx.shutdown.is_cancelled() {
                return Ended::Shutdown;
            }
        }
    }

    /// Adds a delivery to the batch and returns its acknowledger; `Err` when the consumer ended.
    fn take(
        &self,
        next: Option<lapin::Result<Delivery>>,
        batch: &mut Vec<Event>,
    ) -> Result<Acker, RabbitSourceError> {
        match next {
            Some(Ok(d)) => {
                let (event, acker) = to_event(d, self.mapping);
                batch.push(event);
                Ok(acker)
            }
            Some(Err(e)) => Err(RabbitSourceError::Consumer(Box::new(e))),
            None => Err(RabbitSourceError::Cancelled(self.queue.to_string())),
        }
    }
}

impl Supervised for RabbitSource {
    type Conn = (Connection, Consumer);

    fn peer(&self) -> String {
        format!("{} (queue {})", self.endpoint, self.queue)
    }

    async fn connect(&mut self) -> Result<Self::Conn, Failure> {
        let session = self
            .open()
            .await
            .map_err(|e| Failure::retry("cannot consume from RabbitMQ", e))?;
        tracing::info!(
            source = %self.name,
            endpoint = %self.endpoint,
            queue = %self.queue,
            prefetch = self.prefetch,
            "consuming"
        );
        Ok(session)
    }

    async fn consume(
        &mut self,
        (conn, mut consumer): Self::Conn,
        cx: &mut SourceContext,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let ended = self.consume_batches(cx, &mut consumer, session).await;
        drop(consumer);
        close(&conn).await;
        match ended {
            Ended::Shutdown => Ok(()),
            Ended::Fatal(e) => Err(Failure::Fatal(e.into())),
            Ended::Lost(reason) => Err(Failure::retry(
                "lost the RabbitMQ connection (messages delivered but not acknowledged are \
                 redelivered by the broker)",
                reason,
            )),
        }
    }
}

#[async_trait]
impl Source for RabbitSource {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let mut this = *self;
        let backoff = Backoff::new(this.reconnect_backoff, this.max_reconnect_backoff);
        supervise(&mut this, &mut cx, backoff).await
    }
}

/// Closes the connection politely (unacknowledged messages go back to their queue).
async fn close(conn: &Connection) {
    if conn.status().connected() {
        let closing = conn.close(REPLY_SUCCESS, ShortString::from("OK"));
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), closing).await {
            tracing::debug!(error = %e, "closing the RabbitMQ connection failed");
        }
    }
}

/// Turns a delivery into an event (the body moves, no copy) and hands back its acknowledger.
pub(crate) fn to_event(d: Delivery, map: Mapping) -> (Event, Acker) {
    let Delivery {
        exchange,
        routing_key,
        redelivered,
        properties,
        data,
        acker,
        ..
    } = d;
    let mut headers = Headers::default();
    if map.properties {
        if !exchange.as_str().is_empty() {
            headers.insert(header::EXCHANGE, String::from(exchange));
        }
        if !routing_key.as_str().is_empty() {
            headers.insert(header::ROUTING_KEY, String::from(routing_key));
        }
        if redelivered {
            headers.insert(header::REDELIVERED, "true");
        }
        properties_to_headers(&properties, &mut headers);
    }
    if map.headers {
        if let Some(table) = properties.headers() {
            table_to_headers(table, &mut headers);
        }
    }
    let event = Event {
        headers,
        body: Bytes::from(data),
    };
    (event, acker)
}

/// Message properties as `amqp.*` headers; the AMQP timestamp (seconds) as `timestamp` (ms).
pub(crate) fn properties_to_headers(p: &BasicProperties, h: &mut Headers) {
    let texts: [(&str, &Option<ShortString>); 9] = [
        (header::CONTENT_TYPE, p.content_type()),
        (header::CONTENT_ENCODING, p.content_encoding()),
        (header::MESSAGE_ID, p.message_id()),
        (header::CORRELATION_ID, p.correlation_id()),
        (header::REPLY_TO, p.reply_to()),
        (header::EXPIRATION, p.expiration()),
        (header::TYPE, p.kind()),
        (header::APP_ID, p.app_id()),
        (header::USER_ID, p.user_id()),
    ];
    for (key, value) in texts {
        if let Some(v) = value {
            h.insert(key, v.as_str());
        }
    }
    if let Some(priority) = p.priority() {
        h.insert(header::PRIORITY, priority.to_string());
    }
    if let Some(seconds) = p.timestamp() {
        h.insert(header::TIMESTAMP, seconds.saturating_mul(1000).to_string());
    }
}

/// Each entry of an AMQP `headers` table as an event header (see the module doc for values).
pub(crate) fn table_to_headers(t: &FieldTable, h: &mut Headers) {
    for (key, value) in t {
        h.insert(key.as_str(), value_text(value));
    }
}

/// An AMQP value as header text.
pub(crate) fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        AMQPValue::DecimalValue(d) => decimal_text(*d),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::ByteArray(b) => bytes_text(b.as_slice()),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => json(v).to_string(),
        AMQPValue::Void => String::new(),
    }
}

fn bytes_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(b),
    }
}

/// `value / 10^scale` written out in decimal.
fn decimal_text(d: DecimalValue) -> String {
    let digits = d.value.to_string();
    let scale = usize::from(d.scale);
    if scale == 0 {
        digits
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        format!("{int}.{frac}")
    } else {
        format!("0.{}{digits}", "0".repeat(scale - digits.len()))
    }
}

/// Nested values as JSON (strings stay strings; decimals become strings to stay exact).
fn json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(f) => Value::from(*f),
        AMQPValue::Double(f) => Value::from(*f),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::DecimalValue(d) => Value::String(decimal_text(*d)),
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) | AMQPValue::ByteArray(_) => {
            Value::String(value_text(v))
        }
        AMQPValue::Void => Value::Null,
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{ByteArray, FieldArray, LongString};

    use super::*;

    fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(ShortString::from(k), v);
        }
        t
    }

    #[test]
    fn properties_and_table_entries_become_headers() {
        let mut d = Delivery::mock(
            7,
            ShortString::from("orders"),
            ShortString::from("eu.new"),
            true,
            b"body".to_vec(),
        );
        d.properties = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from("m-1"))
            .with_correlation_id(ShortString::from("c-1"))
            .with_type(ShortString::from("order.created"))
            .with_app_id(ShortString::from("shop"))
            .with_priority(3)
            .with_timestamp(1_700_000_000)
            .with_headers(table(vec![
                ("tenant", AMQPValue::LongString(LongString::from("acme"))),
                ("attempt", AMQPValue::LongInt(3)),
                ("ok", AMQPValue::Boolean(true)),
                ("ratio", AMQPValue::Double(0.25)),
                ("short", AMQPValue::ShortString(ShortString::from("s"))),
                ("nothing", AMQPValue::Void),
            ]));
        let map = Mapping {
            properties: true,
            headers: true,
        };
        let (e, _) = to_event(d, map);
        assert_eq!(&e.body[..], b"body");
        let h = |k: &str| e.headers.get(k).map(str::to_owned);
        assert_eq!(h("amqp.exchange").as_deref(), Some("orders"));
        assert_eq!(h("amqp.routing_key").as_deref(), Some("eu.new"));
        assert_eq!(h("amqp.redelivered").as_deref(), Some("true"));
        assert_eq!(h("amqp.content_type").as_deref(), Some("application/json"));
        assert_eq!(h("amqp.message_id").as_deref(), Some("m-1"));
        assert_eq!(h("amqp.correlation_id").as_deref(), Some("c-1"));
        assert_eq!(h("amqp.type").as_deref(), Some("order.created"));
        assert_eq!(h("amqp.app_id").as_deref(), Some("shop"));
        assert_eq!(h("amqp.priority").as_deref(), Some("3"));
        assert_eq!(h("timestamp").as_deref(), Some("1700000000000"));
        assert_eq!(h("tenant").as_deref(), Some("acme"));
        assert_eq!(h("attempt").as_deref(), Some("3"));
        assert_eq!(h("ok").as_deref(), Some("true"));
        assert_eq!(h("ratio").as_deref(), Some("0.25"));
        assert_eq!(h("short").as_deref(), Some("s"));
        assert_eq!(h("nothing").as_deref(), Some(""));
        assert_eq!(h("amqp.reply_to"), None, "absent properties add nothing");
    }

    #[test]
    fn mapping_can_be_turned_off_and_the_default_exchange_adds_nothing() {
        let mut d = Delivery::mock(
            1,
            ShortString::from(""),
            ShortString::from("q"),
            false,
            b"x".to_vec(),
        );
        d.properties = BasicProperties::default()
            .with_message_id(ShortString::from("m"))
            .with_headers(table(vec![("k", AMQPValue::LongString("v".into()))]));
        let only_table = Mapping {
            properties: false,
            headers: true,
        };
        let (e, _) = to_event(d, only_table);
        assert_eq!(e.headers.iter().collect::<Vec<_>>(), [("k", "v")]);

        let d = Delivery::mock(
            2,
            ShortString::from(""),
            ShortString::from("q"),
            false,
            vec![],
        );
        let (e, _) = to_event(
            d,
            Mapping {
                properties: true,
                headers: true,
            },
        );
        assert_eq!(
            e.headers.iter().collect::<Vec<_>>(),
            [("amqp.routing_key", "q")],
            "no amqp.exchange for the default exchange, no amqp.redelivered when false"
        );
    }

    #[test]
    fn a_table_timestamp_wins_over_the_coarser_property() {
        let mut d = Delivery::mock(1, "".into(), "q".into(), false, vec![]);
        d.properties = BasicProperties::default()
            .with_timestamp(1_700_000_000)
            .with_headers(table(vec![(
                "timestamp",
                AMQPValue::LongString("1700000000123".into()),
            )]));
        let (e, _) = to_event(
            d,
            Mapping {
                properties: true,
                headers: true,
            },
        );
        assert_eq!(e.headers.get("timestamp"), Some("1700000000123"));
    }

    #[test]
    fn odd_values_render_as_text() {
        let dec =
            |scale, value| value_text(&AMQPValue::DecimalValue(DecimalValue { scale, value }));
        assert_eq!(dec(2, 12345), "123.45");
        assert_eq!(dec(3, 5), "0.005");
        assert_eq!(dec(0, 42), "42");
        assert_eq!(
            value_text(&AMQPValue::ByteArray(ByteArray::from(&b"text"[..]))),
            "text"
        );
        assert_eq!(
            value_text(&AMQPValue::ByteArray(ByteArray::from(vec![0xffu8, 0x00]))),
            "/wA="
        );
        assert_eq!(
            value_text(&AMQPValue::Timestamp(1_700_000_000)),
            "1700000000"
        );
        let nested = AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::FieldTable(table(vec![
                ("count", AMQPValue::LongLongInt(2)),
                ("queue", AMQPValue::LongString("q1".into())),
                ("reason", AMQPValue::ShortString("expired".into())),
                ("none", AMQPValue::Void),
            ])),
            AMQPValue::Boolean(false),
        ]));
        let text = value_text(&nested);
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            serde_json::json!([{"count": 2, "queue": "q1", "reason": "expired", "none": null}, false])
        );
    }

    fn settings(extra: serde_json::Value) -> RabbitSourceConfig {
        let mut v = serde_json::json!({ "uri": "amqp://127.0.0.1:5672/%2f", "queue": "q" });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn settings_errors_are_typed_and_read_as_before() {
        let err = |extra| RabbitSource::new("s", &settings(extra), 10).err();
        assert!(err(serde_json::json!({})).is_none());
        let e = err(serde_json::json!({ "queue": "" })).unwrap();
        assert!(matches!(e, RabbitSourceError::NoQueue));
        assert_eq!(e.to_string(), "`queue`: required (the queue to consume)");
        let e = err(serde_json::json!({ "bindings": [{ "exchange": "" }] })).unwrap();
        assert!(matches!(e, RabbitSourceError::DefaultExchange(0)));
        assert!(
            e.to_string()
                .starts_with("`bindings[0].exchange`: required")
        );
        let e = err(serde_json::json!({ "prefetch": 0 })).unwrap();
        assert!(matches!(e, RabbitSourceError::ZeroPrefetch));
        let e = err(serde_json::json!({ "queue": "q".repeat(300) })).unwrap();
        assert!(
            matches!(e, RabbitSourceError::Settings(RabbitError::TooLong { .. })),
            "{e:?}"
        );
    }

    #[test]
    fn broker_errors_keep_their_cause() {
        let e = RabbitSourceError::broker("cannot open a channel")(lapin::Error::from(
            lapin::ErrorKind::InvalidChannel(7),
        ));
        assert!(e.to_string().starts_with("cannot open a channel: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
