//! The `rabbitmq` sink: publishes each event as one message, with publisher confirms.
//!
//! The channel is in confirm mode. A batch is published without waiting between messages,
//! then every confirm is awaited; the batch is delivered only when the broker acknowledged
//! each message. A negative acknowledgement makes that event retriable; with `mandatory`, a
//! message the broker returns as unroutable is rejected with the broker's reason (or retried,
//! with `unroutable: retry`). When the broker closes the channel or the connection while
//! publishing — publishing to an exchange that does not exist closes the channel with
//! NOT_FOUND — the unconfirmed events are retriable and the channel (and the connection, if
//! it is gone too) is reopened on the next attempt, so an exchange created later is picked
//! up. The connection is opened lazily, on the first batch.
//!
//! `exchange` and `routing_key` are templates over event headers; a fixed one is built once.
//! With `copy_properties`, the `amqp.*` headers the `rabbitmq` source produces set the
//! matching message properties (`amqp.user_id` excepted: the broker checks it against the
//! publishing user) and `timestamp` (epoch ms) sets the AMQP timestamp (seconds); with
//! `copy_headers`, every other event header goes into the AMQP `headers` table as a string.
//! Headers carrying delivery data (`amqp.exchange`, `amqp.routing_key`, `amqp.redelivered`)
//! are not sent. An event that cannot be expressed in AMQP (a name over 255 bytes, a
//! non-numeric `amqp.expiration`) is rejected rather than failing the whole batch.

use std::{future::Future, time::Duration};

use async_trait::async_trait;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ExchangeKind, PublisherConfirm,
    message::BasicReturnMessage,
    options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions},
    protocol::constants::REPLY_SUCCESS,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use sluice_core::{
    event::{Event, template::Template},
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
    sink::{Batch, DeliveryError, Sink},
};

use super::config::{
    Endpoint, RabbitError, RabbitSinkConfig, Unroutable, exchange_kind, field_table, header, short,
};

/// Settings the sink refuses, or a channel it cannot open.
#[derive(Debug, thiserror::Error)]
pub enum RabbitSinkError {
    #[error(transparent)]
    Rabbit(#[from] RabbitError),
    #[error("`{field}`: {message}")]
    Template {
        field: &'static str,
        message: String,
    },
    #[error("`routing_key`: required with the default exchange (it names the target queue)")]
    NoRoutingKey,
    #[error("`declare_exchange`: the default exchange cannot be declared; set `exchange`")]
    DeclareDefaultExchange,
    #[error("`declare_exchange`: needs a fixed `exchange`, not a template")]
    DeclareTemplateExchange,
    #[error(
        "`unroutable`: only applies with `mandatory: true` (without it the broker drops \
         unroutable messages)"
    )]
    UnroutableWithoutMandatory,
    #[error("cannot open a channel: {0}")]
    OpenChannel(#[source] Box<lapin::Error>),
    #[error("cannot enable publisher confirms: {0}")]
    Confirms(#[source] Box<lapin::Error>),
    #[error("cannot declare exchange `{exchange}`: {source}")]
    DeclareExchange {
        exchange: ShortString,
        source: Box<lapin::Error>,
    },
}

/// Why one event cannot be published: it becomes that event's rejection reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unsendable {
    #[error("the {what} is {len} bytes long; AMQP allows at most 255")]
    NameTooLong { what: &'static str, len: usize },
    #[error("header name of {0} bytes; AMQP allows at most 255")]
    HeaderNameTooLong(usize),
    #[error("header `{key}` is {len} bytes; AMQP allows at most 255")]
    HeaderTooLong { key: String, len: usize },
    #[error("header `{key}` must be milliseconds as digits, got {value:?}")]
    Expiration { key: String, value: String },
    #[error("header `{key}` must be 0-255, got {value:?}")]
    Priority { key: String, value: String },
}

/// `type: rabbitmq` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SinkSpec>> {
    plain_sink::<RabbitSinkConfig>(cx)
}

impl SinkSpec for RabbitSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(
            RabbitSink::new(cx.name, self).map_err(|e| e.to_string())?,
        ))
    }
}

/// An exchange name or routing key: fixed, or rendered per event.
enum Name {
    Fixed(ShortString),
    Template(Template),
}

impl Name {
    fn parse(field: &'static str, text: &str) -> Result<Name, RabbitSinkError> {
        let t = Template::parse(text)
            .map_err(|message| RabbitSinkError::Template { field, message })?;
        if !t.is_constant() {
            return Ok(Name::Template(t));
        }
        let mut fixed = String::new();
        t.render(&Event::default(), &mut fixed);
        Ok(Name::Fixed(short(field, &fixed)?))
    }

    fn render(
        &self,
        what: &'static str,
        e: &Event,
        buf: &mut String,
    ) -> Result<ShortString, Unsendable> {
        match self {
            Name::Fixed(s) => Ok(s.clone()),
            Name::Template(t) => {
                t.render(e, buf);
                ShortString::try_new(buf.as_str()).map_err(|_| Unsendable::NameTooLong {
                    what,
                    len: buf.len(),
                })
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Name::Fixed(s) if s.as_str().is_empty())
    }
}

/// How events become message properties.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub persistent: bool,
    pub copy_headers: bool,
    pub copy_properties: bool,
    pub content_type: Option<ShortString>,
}

struct ExchangeSpec {
    name: ShortString,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    arguments: FieldTable,
}

pub struct RabbitSink {
    name: String,
    endpoint: Endpoint,
    exchange: Name,
    routing_key: Name,
    options: BasicPublishOptions,
    unroutable: Unroutable,
    outgoing: Outgoing,
    declare: Option<ExchangeSpec>,
    confirm_timeout: Duration,
    conn: Option<Connection>,
    channel: Option<Channel>,
    /// Reused for rendering templates.
    buf: String,
}

impl RabbitSink {
    /// Checks the settings without connecting; an error names the offending field.
    pub fn new(name: &str, cfg: &RabbitSinkConfig) -> Result<Self, RabbitSinkError> {
        let endpoint = Endpoint::parse(&cfg.uri, cfg.connect_timeout.0)?;
        let exchange = Name::parse("exchange", &cfg.exchange)?;
        let routing_key = Name::parse("routing_key", &cfg.routing_key)?;
        if exchange.is_empty() && routing_key.is_empty() {
            return Err(RabbitSinkError::NoRoutingKey);
        }
        let declare = match &cfg.declare_exchange {
            None => None,
            Some(d) => {
                let exchange_name = match &exchange {
                    Name::Fixed(n) if !n.as_str().is_empty() => n.clone(),
                    Name::Fixed(_) => return Err(RabbitSinkError::DeclareDefaultExchange),
                    Name::Template(_) => return Err(RabbitSinkError::DeclareTemplateExchange),
                };
                Some(ExchangeSpec {
                    name: exchange_name,
                    kind: exchange_kind("declare_exchange.type", &d.kind)?,
                    options: ExchangeDeclareOptions {
                        passive: false,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: false,
                        nowait: false,
                    },
                    arguments: field_table("declare_exchange.arguments", &d.arguments)?,
                })
            }
        };
        if cfg.unroutable.is_some() && !cfg.mandatory {
            return Err(RabbitSinkError::UnroutableWithoutMandatory);
        }
        let content_type = match &cfg.content_type {
            Some(c) => Some(short("content_type", c)?),
            None => None,
        };
        Ok(RabbitSink {
            name: name.to_owned(),
            endpoint,
            exchange,
            routing_key,
            options: BasicPublishOptions {
                mandatory: cfg.mandatory,
                immediate: false,
            },
            unroutable: cfg.unroutable.unwrap_or_default(),
            outgoing: Outgoing {
                persistent: cfg.persistent,
                copy_headers: cfg.copy_headers,
                copy_properties: cfg.copy_properties,
                content_type,
            },
            declare,
            confirm_timeout: cfg.confirm_timeout.0,
            conn: None,
            channel: None,
            buf: String::new(),
        })
    }

    /// The open confirm-mode channel, connecting and opening as needed.
    async fn channel(&mut self) -> Result<Channel, DeliveryError> {
        if let Some(ch) = &self.channel {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        self.channel = None;
        let conn = match self.conn.take() {
            Some(c) if c.status().connected() => c,
            _ => {
                let c = self
                    .endpoint
                    .connect(&self.name)
                    .await
                    .map_err(DeliveryError::retriable)?;
                tracing::info!(sink = %self.name, endpoint = %self.endpoint, "connected to RabbitMQ");
                c
            }
        };
        let opened = open_channel(&conn, self.declare.as_ref()).await;
        if conn.status().connected() {
            self.conn = Some(conn);
        }
        let ch = opened.map_err(DeliveryError::retriable)?;
        self.channel = Some(ch.clone());
        Ok(ch)
    }

    /// Forgets a channel the broker closed, and the connection too if it is gone.
    fn discard_channel(&mut self) {
        self.channel = None;
        if !self.conn.as_ref().is_some_and(|c| c.status().connected()) {
            self.conn = None;
        }
    }

    /// Exchange, routing key and properties of one event; `Err` is why it cannot be sent.
    fn prepare(
        &mut self,
        e: &Event,
    ) -> Result<(ShortString, ShortString, BasicProperties), Unsendable> {
        let exchange = self.exchange.render("exchange", e, &mut self.buf)?;
        let routing_key = self.routing_key.render("routing key", e, &mut self.buf)?;
        Ok((exchange, routing_key, properties(e, &self.outgoing)?))
    }

    /// The event of the batch a returned message was, among those published and not yet
    /// matched: same body, exchange and routing key.
    fn find_returned(
        &mut self,
        batch: &[Event],
        sent: &[usize],
        taken: &[usize],
        body: &[u8],
        exchange: &ShortString,
        routing_key: &ShortString,
    ) -> Option<usize> {
        for &i in sent {
            let e = &batch[i];
            if taken.contains(&i) || e.body[..] != *body {
                continue;
            }
            let same_exchange = self
                .exchange
                .render("exchange", e, &mut self.buf)
                .is_ok_and(|x| x == *exchange);
            if same_exchange
                && self
                    .routing_key
                    .render("routing key", e, &mut self.buf)
                    .is_ok_and(|k| k == *routing_key)
            {
                return Some(i);
            }
        }
        None
    }
}

#[async_trait]
impl Sink for RabbitSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        let channel = self.channel().await?;
        let ch = &channel;
        let options = self.options;
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut sent: Vec<usize> = Vec::with_capacity(batch.len());
        let mut publishes = Vec::with_capacity(batch.len());
        for (i, e) in batch.iter().enumerate() {
            match self.prepare(e) {
                Ok((exchange, routing_key, props)) => {
                    sent.push(i);
                    publishes.push(async move {
                        ch.basic_publish(exchange, routing_key, options, &e.body, props)
                            .await
                    });
                }
                Err(reason) => rejected.push((i, reason.to_string())),
            }
        }

        let Ok(results) = tokio::time::timeout(self.confirm_timeout, confirm_all(publishes)).await
        else {
            self.channel = None;
            self.conn = None;
            return Err(DeliveryError::retriable(format!(
                "no publisher confirms from {} within {:?}; reconnecting",
                self.endpoint, self.confirm_timeout
            )));
        };

        let mut retriable: Vec<usize> = Vec::new();
        let mut returned: Vec<BasicReturnMessage> = Vec::new();
        let mut broken: Option<lapin::Error> = None;
        let mut nacked = 0usize;
        for (&i, r) in sent.iter().zip(results) {
            match r {
                Ok(Confirmation::Ack(ret)) => returned.extend(ret),
                Ok(Confirmation::Nack(ret)) => {
                    nacked += 1;
                    retriable.push(i);
                    returned.extend(ret);
                }
                // Not in confirm mode (cannot happen: the channel is opened with confirms).
                Ok(Confirmation::NotRequested) => {}
                Err(e) => {
                    retriable.push(i);
                    if broken.is_none() {
                        broken = Some(e);
                    }
                }
            }
        }
        if let Some(e) = &broken {
            tracing::warn!(
                sink = %self.name,
                endpoint = %self.endpoint,
                error = %e,
                unconfirmed = retriable.len(),
                "RabbitMQ closed the channel or connection while publishing (a missing \
                 exchange closes the channel with NOT_FOUND); it is reopened on the next attempt"
            );
            self.discard_channel();
        }

        let mut matched: Vec<usize> = Vec::with_capacity(returned.len());
        for m in &returned {
            let reason = format!(
                "unroutable: the broker returned the message ({} {}) for exchange {:?}, \
                 routing key {:?}",
                m.reply_code,
                m.reply_text,
                m.delivery.exchange.as_str(),
                m.delivery.routing_key.as_str()
            );
            let found = self.find_returned(
                batch,
                &sent,
                &matched,
                &m.delivery.data,
                &m.delivery.exchange,
                &m.delivery.routing_key,
            );
            let Some(i) = found else {
                // Which event it was is unknown: send them all again rather than lose one.
                tracing::warn!(sink = %self.name, "a returned message matches no event of the batch; the batch is retried");
                return Err(DeliveryError::retriable(reason));
            };
            matched.push(i);
            match self.unroutable {
                Unroutable::Reject => {
                    retriable.retain(|&j| j != i);
                    rejected.push((i, reason));
                }
                Unroutable::Retry => retriable.push(i),
            }
        }
        if !matched.is_empty() && self.unroutable == Unroutable::Retry {
            tracing::warn!(
                sink = %self.name,
                unroutable = matched.len(),
                "the broker returned unroutable messages; they are published again later"
            );
        }
        retriable.sort_unstable();
        retriable.dedup();

        if rejected.is_empty() && retriable.is_empty() {
            return Ok(());
        }
        if rejected.is_empty() && retriable.len() == batch.len() {
            let reason = match (&broken, nacked) {
                (Some(e), _) => format!("publishing to {} failed: {e}", self.endpoint),
                (None, n) if n > 0 => format!("the broker refused (nack) {n} messages"),
                (None, _) => format!("{} unroutable messages to publish again", matched.len()),
            };
            return Err(DeliveryError::Retriable {
                reason,
                retry_after: None,
            });
        }
        Err(DeliveryError::Partial {
            rejected,
            retriable,
        })
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        self.channel = None;
        if let Some(conn) = self.conn.take() {
            if conn.status().connected() {
                let closing = conn.close(REPLY_SUCCESS, ShortString::from("OK"));
                if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), closing).await {
                    tracing::debug!(sink = %self.name, error = %e, "closing the RabbitMQ connection failed");
                }
            }
        }
        Ok(())
    }
}

/// A channel in confirm mode, with the exchange declared if configured.
async fn open_channel(
    conn: &Connection,
    declare: Option<&ExchangeSpec>,
) -> Result<Channel, RabbitSinkError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| RabbitSinkError::OpenChannel(Box::new(e)))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| RabbitSinkError::Confirms(Box::new(e)))?;
    if let Some(d) = declare {
        ch.exchange_declare(
            d.name.clone(),
            d.kind.clone(),
            d.options,
            d.arguments.clone(),
        )
        .await
        .map_err(|e| RabbitSinkError::DeclareExchange {
            exchange: d.name.clone(),
            source: Box::new(e),
        })?;
    }
    Ok(ch)
}

/// Runs every publish at once (each hands its frames to the connection in order on its first
/// poll), then awaits the confirms in order.
async fn confirm_all<F>(publishes: Vec<F>) -> Vec<lapin::Result<Confirmation>>
where
    F: Future<Output = lapin::Result<PublisherConfirm>>,
{
    let published = futures_util::future::join_all(publishes).await;
    let mut confirmed = Vec::with_capacity(published.len());
    for p in published {
        confirmed.push(match p {
            Ok(confirm) => confirm.await,
            Err(e) => Err(e),
        });
    }
    confirmed
}

/// The message properties of an event (see the module doc for the mapping).
pub(crate) fn properties(e: &Event, o: &Outgoing) -> Result<BasicProperties, Unsendable> {
    let mut p = BasicProperties::default();
    if o.persistent {
        p = p.with_delivery_mode(2);
    }
    let mut table = FieldTable::default();
    for (key, value) in e.headers.iter() {
        if key.starts_with(header::PREFIX) {
            if o.copy_properties {
                p = set_property(p, key, value)?;
            }
            continue;
        }
        if o.copy_properties && key == header::TIMESTAMP {
            if let Ok(ms) = value.trim().parse::<u64>() {
                p = p.with_timestamp(ms / 1000);
            }
        }
        if o.copy_headers {
            let name =
                ShortString::try_new(key).map_err(|_| Unsendable::HeaderNameTooLong(key.len()))?;
            table.insert(name, AMQPValue::LongString(LongString::from(value)));
        }
    }
    if let Some(ct) = &o.content_type {
        p = p.with_content_type(ct.clone());
    }
    if !table.inner().is_empty() {
        p = p.with_headers(table);
    }
    Ok(p)
}

/// Sets the property an `amqp.*` header names; other `amqp.*` headers are not sent.
fn set_property(p: BasicProperties, key: &str, value: &str) -> Result<BasicProperties, Unsendable> {
    let text = || {
        ShortString::try_new(value).map_err(|_| Unsendable::HeaderTooLong {
            key: key.to_owned(),
            len: value.len(),
        })
    };
    Ok(match key {
        header::CONTENT_TYPE => p.with_content_type(text()?),
        header::CONTENT_ENCODING => p.with_content_encoding(text()?),
        header::MESSAGE_ID => p.with_message_id(text()?),
        header::CORRELATION_ID => p.with_correlation_id(text()?),
        header::REPLY_TO => p.with_reply_to(text()?),
        header::TYPE => p.with_type(text()?),
        header::APP_ID => p.with_app_id(text()?),
        header::EXPIRATION => {
            // The broker closes the channel over a malformed expiration: refuse it here.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Unsendable::Expiration {
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
            p.with_expiration(text()?)
        }
        header::PRIORITY => match value.trim().parse::<u8>() {
            Ok(n) => p.with_priority(n),
            Err(_) => {
                return Err(Unsendable::Priority {
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
        },
        _ => p,
    })
}

#[cfg(test)]
mod tests {
    use lapin::message::Delivery;

    use super::*;
    use crate::connectors::rabbitmq::source::{Mapping, to_event};
    use sluice_core::config::Secret;

    fn outgoing() -> Outgoing {
        Outgoing {
            persistent: true,
            copy_headers: true,
            copy_properties: true,
            content_type: None,
        }
    }

    fn cfg(exchange: &str, routing_key: &str) -> RabbitSinkConfig {
        RabbitSinkConfig {
            uri: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            persistent: true,
            mandatory: false,
            unroutable: None,
            copy_headers: true,
            copy_properties: true,
            content_type: None,
            declare_exchange: None,
            connect_timeout: sluice_core::config::units::HumanDuration(Duration::from_secs(1)),
            confirm_timeout: sluice_core::config::units::HumanDuration(Duration::from_secs(1)),
        }
    }

    fn text(t: &FieldTable, k: &str) -> Option<String> {
        match t.inner().get(k)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            other => panic!("{k}: not a long string: {other:?}"),
        }
    }

    #[test]
    fn headers_become_properties_and_table_entries() {
        let e = Event::new("b")
            .with_header("amqp.message_id", "m-1")
            .with_header("amqp.content_type", "text/plain")
            .with_header("amqp.type", "created")
            .with_header("amqp.priority", "4")
            .with_header("amqp.exchange", "in")
            .with_header("amqp.routing_key", "k")
            .with_header("amqp.redelivered", "true")
            .with_header("amqp.user_id", "someone")
            .with_header("timestamp", "1700000000123")
            .with_header("tenant", "acme");
        let p = properties(&e, &outgoing()).unwrap();
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.message_id().as_ref().map(ShortString::as_str),
            Some("m-1")
        );
        assert_eq!(
            p.content_type().as_ref().map(ShortString::as_str),
            Some("text/plain")
        );
        assert_eq!(p.kind().as_ref().map(ShortString::as_str), Some("created"));
        assert_eq!(*p.priority(), Some(4));
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        assert_eq!(*p.user_id(), None, "the broker checks user_id: never sent");
        let t = p.headers().as_ref().unwrap();
        assert_eq!(text(t, "tenant").as_deref(), Some("acme"));
        assert_eq!(text(t, "timestamp").as_deref(), Some("1700000000123"));
        assert_eq!(t.inner().len(), 2, "no amqp.* header in the table: {t:?}");
    }

    #[test]
    fn switches_and_the_fixed_content_type() {
        let e = Event::new("b")
            .with_header("amqp.content_type", "text/plain")
            .with_header("tenant", "acme");
        let o = Outgoing {
            persistent: false,
            copy_headers: false,
            copy_properties: true,
            content_type: Some(ShortString::from("application/json")),
        };
        let p = properties(&e, &o).unwrap();
        assert_eq!(*p.delivery_mode(), None);
        assert_eq!(*p.headers(), None);
        assert_eq!(
            p.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        let o = Outgoing {
            copy_properties: false,
            ..outgoing()
        };
        let p = properties(&e, &o).unwrap();
        assert_eq!(*p.content_type(), None);
        assert_eq!(p.headers().as_ref().unwrap().inner().len(), 1);
    }

    #[test]
    fn unrepresentable_events_are_refused() {
        let long = "x".repeat(300);
        let bad = [
            Event::new("b").with_header(long.clone(), "v"),
            Event::new("b").with_header("amqp.message_id", long.clone()),
            Event::new("b").with_header("amqp.expiration", "soon"),
            Event::new("b").with_header("amqp.priority", "high"),
        ];
        let why: Vec<_> = bad
            .iter()
            .map(|e| properties(e, &outgoing()).unwrap_err().to_string())
            .collect();
        assert_eq!(
            why,
            [
                "header name of 300 bytes; AMQP allows at most 255",
                "header `amqp.message_id` is 300 bytes; AMQP allows at most 255",
                "header `amqp.expiration` must be milliseconds as digits, got \"soon\"",
                "header `amqp.priority` must be 0-255, got \"high\"",
            ]
        );
        let mut sink = RabbitSink::new("s", &cfg("", "%{q}")).unwrap();
        let e = Event::new("b").with_header("q", long);
        let Err(why) = sink.prepare(&e) else {
            panic!("a 300-byte routing key is refused");
        };
        assert!(matches!(why, Unsendable::NameTooLong { len: 300, .. }));
        assert_eq!(
            why.to_string(),
            "the routing key is 300 bytes long; AMQP allows at most 255"
        );
    }

    #[test]
    fn a_message_round_trips_through_source_and_sink_mappings() {
        let e = Event::new("payload")
            .with_header("amqp.message_id", "m-9")
            .with_header("amqp.correlation_id", "c-9")
            .with_header("amqp.app_id", "shop")
            .with_header("amqp.expiration", "60000")
            .with_header("timestamp", "1700000000123")
            .with_header("tenant", "acme")
            .with_header("n", "7");
        let p = properties(&e, &outgoing()).unwrap();
        let mut d = Delivery::mock(
            1,
            ShortString::from(""),
            ShortString::from("q"),
            false,
            e.body.to_vec(),
        );
        d.properties = p;
        let map = Mapping {
            properties: true,
            headers: true,
        };
        let (back, _) = to_event(d, map);
        for (k, v) in e.headers.iter() {
            assert_eq!(back.headers.get(k), Some(v), "{k}");
        }
        assert_eq!(back.headers.get("amqp.routing_key"), Some("q"));
        assert_eq!(back.body, e.body);
    }

    #[test]
    fn names_render_once_when_fixed_and_per_event_otherwise() {
        let mut sink = RabbitSink::new("s", &cfg("logs", "app.%{level}")).unwrap();
        assert!(matches!(sink.exchange, Name::Fixed(ref s) if s.as_str() == "logs"));
        let (x, k, _) = sink
            .prepare(&Event::new("b").with_header("level", "warn"))
            .unwrap();
        assert_eq!((x.as_str(), k.as_str()), ("logs", "app.warn"));
        assert!(matches!(sink.routing_key, Name::Template(_)));
    }

    #[test]
    fn settings_are_checked_without_connecting() {
        let err = |c: RabbitSinkConfig| RabbitSink::new("s", &c).err().unwrap();
        assert_eq!(
            err(cfg("", "")).to_string(),
            "`routing_key`: required with the default exchange (it names the target queue)"
        );
        assert!(matches!(
            err(cfg("x", "%{")),
            RabbitSinkError::Template {
                field: "routing_key",
                ..
            }
        ));
        let mut c = cfg("x", "k");
        c.unroutable = Some(Unroutable::Retry);
        assert_eq!(
            err(c).to_string(),
            "`unroutable`: only applies with `mandatory: true` (without it the broker drops \
             unroutable messages)"
        );
        let mut c = cfg("ex-%{h}", "k");
        c.declare_exchange = Some(crate::connectors::rabbitmq::config::RabbitExchangeDeclare {
            kind: "topic".into(),
            durable: true,
            auto_delete: false,
            arguments: Default::default(),
        });
        assert_eq!(
            err(c).to_string(),
            "`declare_exchange`: needs a fixed `exchange`, not a template"
        );
        let mut c = cfg("x", "k");
        c.uri = Secret::new("amqps://u:pw@h/");
        assert!(matches!(
            err(c),
            RabbitSinkError::Rabbit(RabbitError::TlsUnsupported)
        ));
    }

    #[test]
    fn returned_messages_are_matched_to_their_events() {
        let mut sink = RabbitSink::new("s", &cfg("", "%{q}")).unwrap();
        let batch = [
            Event::new("same").with_header("q", "a"),
            Event::new("same").with_header("q", "b"),
            Event::new("same").with_header("q", "b"),
        ];
        let sent = [0, 1, 2];
        let (ex, b) = (ShortString::from(""), ShortString::from("b"));
        let first = sink.find_returned(&batch, &sent, &[], b"same", &ex, &b);
        assert_eq!(first, Some(1));
        let second = sink.find_returned(&batch, &sent, &[1], b"same", &ex, &b);
        assert_eq!(second, Some(2));
        assert_eq!(
            sink.find_returned(&batch, &sent, &[1, 2], b"same", &ex, &b),
            None
        );
        assert_eq!(
            sink.find_returned(&batch, &sent, &[], b"other", &ex, &b),
            None
        );
    }
}
