//! Settings of the `rabbitmq` source (consume a queue) and `rabbitmq` sink (publish with
//! publisher confirms), plus what both share: the parsed broker address ([`Endpoint`]), the
//! names of the event headers that carry AMQP message properties ([`header`]), and the
//! conversion of `arguments` mappings into AMQP field tables.
//!
//! The broker address is one `uri` (`amqp://user:password@host:5672/vhost`, `%2f` being the
//! vhost `/`) held as a [`Secret`] because it carries the password; write the password as
//! `${NAME}` to take it from the environment. Logs and errors only ever show
//! `amqp://user@host:port/vhost`. `amqps://` is refused: this build has no AMQP TLS support.

use std::{collections::BTreeMap, fmt, time::Duration};

use lapin::{
    Connection, ConnectionProperties, ExchangeKind,
    types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString},
    uri::AMQPUri,
};
use serde::Deserialize;

use sluice_core::config::{Secret, units::HumanDuration};

/// Event headers the source fills from message properties and the sink turns back into them.
pub mod header {
    /// Prefix of every header mapped to or from AMQP delivery data; the sink never copies
    /// such headers into the AMQP `headers` table.
    pub const PREFIX: &str = "amqp.";
    /// Exchange the message was published to (absent for the default exchange).
    pub const EXCHANGE: &str = "amqp.exchange";
    /// Routing key the message was published with.
    pub const ROUTING_KEY: &str = "amqp.routing_key";
    /// `true` when the broker delivers the message again (absent otherwise).
    pub const REDELIVERED: &str = "amqp.redelivered";
    pub const CONTENT_TYPE: &str = "amqp.content_type";
    pub const CONTENT_ENCODING: &str = "amqp.content_encoding";
    pub const MESSAGE_ID: &str = "amqp.message_id";
    pub const CORRELATION_ID: &str = "amqp.correlation_id";
    pub const REPLY_TO: &str = "amqp.reply_to";
    pub const EXPIRATION: &str = "amqp.expiration";
    /// The `type` property.
    pub const TYPE: &str = "amqp.type";
    pub const APP_ID: &str = "amqp.app_id";
    /// Set by the source only: the broker checks `user_id` against the publishing user, so
    /// the sink does not send it back.
    pub const USER_ID: &str = "amqp.user_id";
    pub const PRIORITY: &str = "amqp.priority";
    /// Sluice's event time in epoch milliseconds (the AMQP `timestamp` property is seconds).
    pub const TIMESTAMP: &str = "timestamp";
}

// ---------------------------------------------------------------- source

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitSourceConfig {
    /// `amqp://user:password@host:5672/vhost` (`%2f` is the vhost `/`). Never logged.
    pub uri: Secret,
    /// Queue to consume.
    pub queue: String,
    /// Declare the queue on every connect (idempotent); absent: the queue must exist.
    pub declare: Option<RabbitQueueDeclare>,
    /// Bindings created on every connect (after `declare`).
    #[serde(default)]
    pub bindings: Vec<RabbitBinding>,
    /// Unacknowledged messages the broker may push ahead (`basic.qos`), at most 65535;
    /// default twice `batch_size`.
    pub prefetch: Option<u16>,
    /// How long a batch may wait to fill up after its first message.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    /// Consumer tag; empty (default) lets the broker choose one.
    #[serde(default)]
    pub consumer_tag: String,
    /// Message properties become `amqp.*` headers (and `timestamp`, in epoch ms).
    #[serde(default = "yes")]
    pub copy_properties: bool,
    /// Entries of the AMQP `headers` table become event headers (values as text).
    #[serde(default = "yes")]
    pub copy_headers: bool,
    /// Give up a connection attempt after this long.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// First wait before reconnecting; doubles on every failure up to `max_reconnect_backoff`.
    #[serde(default = "default_reconnect_backoff")]
    pub reconnect_backoff: HumanDuration,
    #[serde(default = "default_max_reconnect_backoff")]
    pub max_reconnect_backoff: HumanDuration,
}

/// How the source declares its queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitQueueDeclare {
    /// Survives a broker restart.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Used by this connection only and deleted when it closes.
    #[serde(default)]
    pub exclusive: bool,
    /// Deleted when its last consumer goes away.
    #[serde(default)]
    pub auto_delete: bool,
    /// `x-` arguments, e.g. `x-queue-type: quorum`, `x-max-length: 100000`.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

/// A binding of the source's queue to an exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitBinding {
    pub exchange: String,
    /// Binding key (a pattern such as `orders.*` for topic exchanges; ignored by fanout).
    #[serde(default)]
    pub routing_key: String,
    /// Declare the exchange (durable) with this type first: `direct`, `fanout`, `topic`,
    /// `headers` or a plugin type. Absent: the exchange must exist.
    pub exchange_type: Option<String>,
    /// Binding arguments (e.g. `x-match` for headers exchanges).
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}
fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_reconnect_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}
fn default_max_reconnect_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_confirm_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

// ---------------------------------------------------------------- sink

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitSinkConfig {
    /// `amqp://user:password@host:5672/vhost` (`%2f` is the vhost `/`). Never logged.
    pub uri: Secret,
    /// Exchange to publish to (template); empty (default) is the default exchange, which
    /// routes to the queue named by the routing key.
    #[serde(default)]
    pub exchange: String,
    /// Routing key (template, e.g. `orders.%{region}`).
    #[serde(default)]
    pub routing_key: String,
    /// Mark messages persistent (delivery mode 2), so durable queues keep them on disk.
    #[serde(default = "yes")]
    pub persistent: bool,
    /// Ask the broker to return messages no queue accepts instead of dropping them.
    #[serde(default)]
    pub mandatory: bool,
    /// With `mandatory`: what a returned message is — `reject` (default: dead-lettered with
    /// the broker's reason) or `retry` (published again later, for bindings still to come).
    pub unroutable: Option<Unroutable>,
    /// Event headers go into the AMQP `headers` table as strings (except `amqp.*` ones).
    #[serde(default = "yes")]
    pub copy_headers: bool,
    /// `amqp.*` headers (and `timestamp`) set the matching message properties.
    #[serde(default = "yes")]
    pub copy_properties: bool,
    /// `content_type` property of every message (wins over an `amqp.content_type` header).
    pub content_type: Option<String>,
    /// Declare the exchange (a fixed name) on every connect.
    pub declare_exchange: Option<RabbitExchangeDeclare>,
    /// Give up a connection attempt after this long.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// How long a batch may wait for the broker's confirms before the connection is
    /// considered broken and the batch retried.
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout: HumanDuration,
}

/// What the sink does with a message the broker returned as unroutable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unroutable {
    /// Dead-letter it, with the broker's reply as the reason.
    #[default]
    Reject,
    /// Publish it again on the next attempt (the runner's retry budget applies).
    Retry,
}

/// How the sink declares its exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitExchangeDeclare {
    /// `direct`, `fanout`, `topic`, `headers` or a plugin type.
    #[serde(rename = "type", default = "default_exchange_type")]
    pub kind: String,
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

fn default_exchange_type() -> String {
    "direct".into()
}

// ---------------------------------------------------------------- shared

const URI_SHAPE: &str = "expected amqp://user:password@host:5672/vhost";

/// A broker address, name or argument AMQP cannot carry, or a broker that cannot be reached.
/// Texts name the offending field and never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    #[error("`uri`: not a valid URI ({0}); {URI_SHAPE}")]
    UriSyntax(#[source] url::ParseError),
    #[error(
        "`uri`: amqps:// (TLS) is not supported by this build of sluice; use amqp://, e.g. \
         through a local TLS tunnel"
    )]
    TlsUnsupported,
    #[error("`uri`: unsupported scheme `{0}`; {URI_SHAPE}")]
    Scheme(String),
    #[error("`uri`: no host; {URI_SHAPE}")]
    NoHost,
    /// Refused by the AMQP URI parser, whose error is text (password masked).
    #[error("`uri`: {0}")]
    Uri(String),
    /// `endpoint` is the shown address (no password).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: Box<lapin::Error>,
    },
    #[error("cannot connect to {endpoint}: no answer within {timeout:?}")]
    ConnectTimeout { endpoint: String, timeout: Duration },
    #[error("`{field}`: {len} bytes; AMQP allows at most 255")]
    TooLong { field: String, len: usize },
    #[error("`{0}`: empty exchange type")]
    EmptyExchangeType(String),
    #[error("`{field}`: {number} does not fit a signed 64-bit integer")]
    NotInt64 {
        field: String,
        number: serde_json::Number,
    },
}

/// A broker to connect to: the parsed `uri` and the connect timeout. `Debug` and `Display`
/// show `amqp://user@host:port/vhost`, never the password.
#[derive(Clone)]
pub struct Endpoint {
    uri: AMQPUri,
    shown: String,
    connect_timeout: Duration,
}

impl Endpoint {
    /// Parses and checks `uri` without connecting; the error names the field and never
    /// contains the password.
    pub fn parse(uri: &Secret, connect_timeout: Duration) -> Result<Endpoint, RabbitError> {
        let raw = uri.expose().trim();
        let url = url::Url::parse(raw).map_err(RabbitError::UriSyntax)?;
        match url.scheme() {
            "amqp" => {}
            "amqps" => return Err(RabbitError::TlsUnsupported),
            other => return Err(RabbitError::Scheme(other.to_owned())),
        }
        let host = match url.host_str() {
            Some(h) if !url.cannot_be_a_base() && !h.is_empty() => h,
            _ => return Err(RabbitError::NoHost),
        };
        let password = url.password().unwrap_or_default();
        let mut parsed: AMQPUri = raw.parse().map_err(|e: String| {
            RabbitError::Uri(if password.is_empty() {
                e
            } else {
                e.replace(password, "***")
            })
        })?;
        // The AMQP URI parser only keeps domain names (an IPv6 literal would become
        // "localhost"); take the host as written.
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            parsed.authority.host = v6.to_owned();
        }
        let shown_host = if parsed.authority.host.contains(':') {
            format!("[{}]", parsed.authority.host)
        } else {
            parsed.authority.host.clone()
        };
        let shown = format!(
            "amqp://{}@{}:{}/{}",
            parsed.authority.userinfo.username,
            shown_host,
            parsed.authority.port,
            parsed.vhost.replace('%', "%25").replace('/', "%2f"),
        );
        Ok(Endpoint {
            uri: parsed,
            shown,
            connect_timeout,
        })
    }

    /// Opens a connection named `sluice <component>` (visible in the management UI).
    pub async fn connect(&self, component: &str) -> Result<Connection, RabbitError> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("sluice {component}")));
        match tokio::time::timeout(
            self.connect_timeout,
            Connection::connect_uri(self.uri.clone(), props),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(source)) => Err(RabbitError::Connect {
                endpoint: self.shown.clone(),
                source: Box::new(source),
            }),
            Err(_) => Err(RabbitError::ConnectTimeout {
                endpoint: self.shown.clone(),
                timeout: self.connect_timeout,
            }),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A name the protocol carries as a short string (at most 255 bytes).
pub fn short(field: &str, value: &str) -> Result<ShortString, RabbitError> {
    ShortString::try_new(value).map_err(|_| RabbitError::TooLong {
        field: field.to_owned(),
        len: value.len(),
    })
}

/// An exchange type by name.
pub fn exchange_kind(field: &str, kind: &str) -> Result<ExchangeKind, RabbitError> {
    Ok(match kind {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        "" => return Err(RabbitError::EmptyExchangeType(field.to_owned())),
        other => ExchangeKind::Custom(other.to_owned()),
    })
}

/// An `arguments` mapping as an AMQP field table: integers become signed 64-bit, other
/// numbers doubles, strings long strings, lists arrays, mappings tables, null void.
pub fn field_table(
    field: &str,
    args: &BTreeMap<String, serde_json::Value>,
) -> Result<FieldTable, RabbitError> {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let f = format!("{field}.{k}");
        t.insert(short(&f, k)?, amqp_value(&f, v)?);
    }
    Ok(t)
}

fn amqp_value(field: &str, v: &serde_json::Value) -> Result<AMQPValue, RabbitError> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(f)) if n.is_f64() => AMQPValue::Double(f),
            _ => {
                return Err(RabbitError::NotInt64 {
                    field: field.to_owned(),
                    number: n.clone(),
                });
            }
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => {
            let mut a = FieldArray::default();
            for (i, item) in items.iter().enumerate() {
                a.push(amqp_value(&format!("{field}[{i}]"), item)?);
            }
            AMQPValue::FieldArray(a)
        }
        Value::Object(map) => {
            let mut t = FieldTable::default();
            for (k, item) in map {
                let f = format!("{field}.{k}");
                t.insert(short(&f, k)?, amqp_value(&f, item)?);
            }
            AMQPValue::FieldTable(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(uri: &str) -> Result<Endpoint, RabbitError> {
        Endpoint::parse(&Secret::new(uri), Duration::from_secs(1))
    }

    #[test]
    fn the_password_never_shows() {
        let e = endpoint("amqp://app:s3cr%2Ft@rabbit.example:5673/%2f").unwrap();
        assert_eq!(e.to_string(), "amqp://app@rabbit.example:5673/%2f");
        assert_eq!(format!("{e:?}"), "amqp://app@rabbit.example:5673/%2f");
        assert_eq!(e.uri.authority.userinfo.password, "s3cr/t");
        assert_eq!(e.uri.vhost, "/");
        let cfg = RabbitSinkConfig {
            uri: Secret::new("amqp://app:hunter2@h/v"),
            exchange: String::new(),
            routing_key: String::new(),
            persistent: true,
            mandatory: false,
            unroutable: None,
            copy_headers: true,
            copy_properties: true,
            content_type: None,
            declare_exchange: None,
            connect_timeout: default_connect_timeout(),
            confirm_timeout: default_confirm_timeout(),
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let err = endpoint("amqp://app:hunter2@h:notaport/v").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn addresses_and_schemes() {
        let e = endpoint("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(e.uri.authority.host, "127.0.0.1");
        assert_eq!(e.uri.authority.port, 5672);
        let e = endpoint("amqp://[::1]/prod").unwrap();
        assert_eq!(e.uri.authority.host, "::1");
        assert_eq!(e.to_string(), "amqp://guest@[::1]:5672/prod");
        let err = endpoint("amqps://u:p@h/").unwrap_err();
        assert!(matches!(err, RabbitError::TlsUnsupported));
        assert_eq!(
            err.to_string(),
            "`uri`: amqps:// (TLS) is not supported by this build of sluice; use amqp://, e.g. \
             through a local TLS tunnel"
        );
        assert_eq!(
            endpoint("http://h/").unwrap_err().to_string(),
            "`uri`: unsupported scheme `http`; expected amqp://user:password@host:5672/vhost"
        );
        let err = endpoint("not a uri").unwrap_err();
        assert!(
            std::error::Error::source(&err).is_some(),
            "the URL parser's error is kept"
        );
        assert_eq!(
            err.to_string(),
            "`uri`: not a valid URI (relative URL without a base); \
             expected amqp://user:password@host:5672/vhost"
        );
    }

    #[test]
    fn arguments_become_typed_field_table_entries() {
        let args: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"x-max-length": 1000, "x-queue-type": "quorum", "x-ratio": 0.5, "x-on": true,
                "x-list": [1, "a"], "x-map": {"k": null}}"#,
        )
        .unwrap();
        let t = field_table("declare.arguments", &args).unwrap();
        let get = |k: &str| t.inner().get(k).cloned().unwrap();
        assert_eq!(get("x-max-length"), AMQPValue::LongLongInt(1000));
        assert_eq!(
            get("x-queue-type"),
            AMQPValue::LongString(LongString::from("quorum"))
        );
        assert_eq!(get("x-ratio"), AMQPValue::Double(0.5));
        assert_eq!(get("x-on"), AMQPValue::Boolean(true));
        assert!(matches!(get("x-list"), AMQPValue::FieldArray(a) if a.as_slice().len() == 2));
        assert!(matches!(get("x-map"), AMQPValue::FieldTable(m) if m.inner().len() == 1));
        let long = "k".repeat(300);
        assert_eq!(
            short("queue", &long).unwrap_err().to_string(),
            "`queue`: 300 bytes; AMQP allows at most 255"
        );
        let big: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"x-big": 18446744073709551615}"#).unwrap();
        assert_eq!(
            field_table("declare.arguments", &big)
                .unwrap_err()
                .to_string(),
            "`declare.arguments.x-big`: 18446744073709551615 does not fit a signed 64-bit integer"
        );
        assert_eq!(
            exchange_kind("declare_exchange.type", "")
                .unwrap_err()
                .to_string(),
            "`declare_exchange.type`: empty exchange type"
        );
    }
}
