//! The `redis` sink: each event becomes one Redis command (SET, HSET, LPUSH, RPUSH, XADD or
//! PUBLISH, plus PEXPIRE when `ttl` is set), and a whole batch goes out as one pipeline — one
//! round trip per batch.
//!
//! The pipeline is not atomic unless `transaction: true` wraps it in MULTI/EXEC. Either way
//! each command's reply is inspected on its own: an error reply that a later attempt may not
//! get (LOADING, BUSY, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY, OOM, MISCONF, NOREPLICAS,
//! NOAUTH) makes its event retriable; any other (WRONGTYPE on one key, ...) makes that event
//! poison, with the error text as the dead-letter reason, while the others count as delivered.
//! A body that cannot become an `hset` (not a JSON object with `fields: json`) is poison too
//! and is never sent. Connection errors and timeouts make the whole batch retriable; the
//! connection is dropped and made again on the next attempt. A batch whose connection broke
//! halfway may have been partly applied: delivery is at-least-once (LPUSH, RPUSH, XADD and
//! PUBLISH may then repeat an event).
//!
//! The url may carry a password: only `host:port` is ever logged.

use std::time::Duration;

use async_trait::async_trait;
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerError, ServerErrorKind, Value,
    aio::MultiplexedConnection,
};

use sluice_core::{
    event::{Event, template::Template},
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
    sink::{Batch, DeliveryError, Sink},
};

use super::config::{HashFields, RedisCommand, RedisSinkConfig};

/// `type: redis` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SinkSpec>> {
    plain_sink::<RedisSinkConfig>(cx)
}

impl SinkSpec for RedisSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(RedisSink::new(cx.name, self)?))
    }

    fn idempotent(&self) -> Option<sluice_core::guarantee::Idempotence> {
        use super::config::RedisCommand;
        matches!(self.command, RedisCommand::Set | RedisCommand::Hset).then(|| {
            sluice_core::guarantee::Idempotence::Keyed(
                "`SET`/`HSET` of a key rendered from the event: an event written again leaves one value"
                    .to_owned(),
            )
        })
    }
}

/// What a batch's reply (or an error reply) means for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The server may accept it later: retry.
    Retriable,
    /// The server will refuse it every time: dead-letter it.
    Permanent,
}

/// Error codes of replies that a later attempt may not get (server loading, busy scripts,
/// failover, memory pressure, a broken persistence setup, missing replicas or credentials).
const RETRIABLE_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
    "NOAUTH",
];

/// Classifies an error reply by its code (the first word of the reply).
pub(crate) fn classify_code(code: &str) -> ErrorClass {
    if RETRIABLE_CODES.contains(&code) {
        ErrorClass::Retriable
    } else {
        ErrorClass::Permanent
    }
}

/// Classifies a client-side error: every error that is not a server's reply (I/O, timeouts,
/// protocol, authentication at connect) is retriable.
pub(crate) fn classify_error(e: &RedisError) -> ErrorClass {
    match e.code() {
        Some(code) if is_reply(e) => classify_code(code),
        _ => ErrorClass::Retriable,
    }
}

/// True when the error is a server's reply to a command (the connection is still good).
fn is_reply(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// The text of an error reply as the server wrote it (`WRONGTYPE Operation against ...`).
fn reply_text(e: &ServerError) -> String {
    match e.details() {
        Some(d) => format!("{} {d}", e.code()),
        None => e.code().to_owned(),
    }
}

/// Why a body cannot become hash fields.
pub(crate) const NOT_AN_OBJECT: &str = "body is not a JSON object";
const EMPTY_OBJECT: &str = "body is an empty JSON object: no hash fields to store";

/// Parses a body into the members of a JSON object (each one a hash field).
pub(crate) fn json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, &'static str> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) if m.is_empty() => Err(EMPTY_OBJECT),
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(NOT_AN_OBJECT),
    }
}

/// A hash field's value: a string as it is, any other JSON value as its JSON text (written
/// into `scratch`, which is reused between fields).
pub(crate) fn field_value<'a>(v: &'a serde_json::Value, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    match v {
        serde_json::Value::String(s) => s.as_bytes(),
        other => {
            scratch.clear();
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *scratch, other);
            scratch
        }
    }
}

pub struct RedisSink {
    name: String,
    client: Client,
    /// `host:port`, for logs (never the url: it may hold a password).
    addr: String,
    conn: Option<MultiplexedConnection>,
    command: RedisCommand,
    key: Template,
    /// The rendered key when the template cannot vary between events.
    constant_key: Option<String>,
    ttl_ms: Option<u64>,
    fields: HashFields,
    body_field: Option<String>,
    maxlen: Option<usize>,
    /// `SET ... NX`.
    only_new: bool,
    timeout: Duration,
    /// Reused for every batch (its settings — atomic, ignore_errors — stay).
    pipe: redis::Pipeline,
    /// `(event index, commands)` for each event in the pipeline, in order.
    plan: Vec<(usize, usize)>,
    key_buf: String,
    scratch: Vec<u8>,
}

impl RedisSink {
    /// Checks the settings and parses the url; connects on the first delivery.
    pub fn new(name: &str, cfg: &RedisSinkConfig) -> Result<Self, String> {
        let client = Client::open(cfg.url.expose()).map_err(|e| format!("`url`: {e}"))?;
        let addr = client.get_connection_info().addr().to_string();
        let command = cfg.command;
        let cmd_name = command.name();
        if cfg.key.is_empty() {
            return Err("`key` must not be empty".into());
        }
        let key = Template::parse(&cfg.key).map_err(|e| format!("`key`: {e}"))?;
        let constant_key = key.is_constant().then(|| {
            let mut k = String::new();
            key.render(&Event::default(), &mut k);
            k
        });
        let ttl_ms = match cfg.ttl {
            None => None,
            Some(_) if command == RedisCommand::Publish => {
                return Err("`ttl` does not apply to `command: publish`".into());
            }
            Some(t) => {
                let ms = u64::try_from(t.0.as_millis()).unwrap_or(u64::MAX);
                if ms == 0 {
                    return Err("`ttl` must be at least 1ms".into());
                }
                Some(ms)
            }
        };
        if cfg.fields.is_some() && command != RedisCommand::Hset {
            return Err(format!(
                "`fields` applies to `command: hset`, not `{cmd_name}`"
            ));
        }
        let fields = cfg.fields.unwrap_or_default();
        let body_field = match (command, fields, &cfg.body_field) {
            (_, _, Some(f)) if f.is_empty() => {
                return Err("`body_field` must not be empty".into());
            }
            (RedisCommand::Xadd, _, f) => Some(f.clone().unwrap_or_else(|| "body".into())),
            (RedisCommand::Hset, HashFields::Headers, f) => f.clone(),
            (RedisCommand::Hset, HashFields::Json, Some(_)) => {
                return Err(
                    "`body_field` applies to `fields: headers`; with `fields: json` the body's members are the fields"
                        .into(),
                );
            }
            (_, _, Some(_)) => {
                return Err(format!(
                    "`body_field` applies to `command: xadd` and `hset`, not `{cmd_name}`"
                ));
            }
            (_, _, None) => None,
        };
        match cfg.maxlen {
            Some(_) if command != RedisCommand::Xadd => {
                return Err(format!(
                    "`maxlen` applies to `command: xadd`, not `{cmd_name}`"
                ));
            }
            Some(0) => return Err("`maxlen` must be at least 1".into()),
            _ => {}
        }
        if cfg.only_new && command != RedisCommand::Set {
            return Err(format!(
                "`only_new` applies to `command: set`, not `{cmd_name}`"
            ));
        }
        if cfg.timeout.0.is_zero() {
            return Err("`timeout` must be more than 0".into());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if cfg.transaction {
            pipe.atomic();
        }
        Ok(RedisSink {
            name: name.to_owned(),
            client,
            addr,
            conn: None,
            command,
            key,
            constant_key,
            ttl_ms,
            fields,
            body_field,
            maxlen: cfg.maxlen,
            only_new: cfg.only_new,
            timeout: cfg.timeout.0,
            pipe,
            plan: Vec::new(),
            key_buf: String::new(),
            scratch: Vec::new(),
        })
    }

    /// Fills the pipeline with the commands of `batch`; events that cannot become a command
    /// go to `rejected` (by index) instead.
    fn plan(&mut self, batch: &[Event], rejected: &mut Vec<(usize, String)>) {
        self.pipe.clear();
        self.plan.clear();
        for (i, e) in batch.iter().enumerate() {
            let key: &str = match &self.constant_key {
                Some(k) => k,
                None => {
                    self.key.render(e, &mut self.key_buf);
                    &self.key_buf
                }
            };
            let pipe = &mut self.pipe;
            match self.command {
                RedisCommand::Set => {
                    pipe.cmd("SET").arg(key).arg(&e.body[..]);
                    if self.only_new {
                        pipe.arg("NX");
                    }
                    if let Some(ms) = self.ttl_ms {
                        pipe.arg("PX").arg(ms);
                    }
                    self.plan.push((i, 1));
                    continue;
                }
                RedisCommand::Publish => {
                    pipe.cmd("PUBLISH").arg(key).arg(&e.body[..]);
                    self.plan.push((i, 1));
                    continue;
                }
                RedisCommand::Lpush => {
                    pipe.cmd("LPUSH").arg(key).arg(&e.body[..]);
                }
                RedisCommand::Rpush => {
                    pipe.cmd("RPUSH").arg(key).arg(&e.body[..]);
                }
                RedisCommand::Hset => match self.fields {
                    HashFields::Json => {
                        let members = match json_object(&e.body) {
                            Ok(m) => m,
                            Err(why) => {
                                rejected.push((i, why.to_owned()));
                                continue;
                            }
                        };
                        pipe.cmd("HSET").arg(key);
                        for (k, v) in &members {
                            pipe.arg(k.as_str()).arg(field_value(v, &mut self.scratch));
                        }
                    }
                    HashFields::Headers => {
                        let body_field = self.body_field.as_deref();
                        let n = e
                            .headers
                            .iter()
                            .filter(|(k, _)| Some(*k) != body_field)
                            .count();
                        if n == 0 && body_field.is_none() {
                            rejected.push((
                                i,
                                "no hash fields to store: the event has no headers (set `body_field` to store the body)"
                                    .to_owned(),
                            ));
                            continue;
                        }
                        pipe.cmd("HSET").arg(key);
                        for (k, v) in e.headers.iter() {
                            if Some(k) != body_field {
                                pipe.arg(k).arg(v);
                            }
                        }
                        if let Some(f) = body_field {
                            pipe.arg(f).arg(&e.body[..]);
                        }
                    }
                },
                RedisCommand::Xadd => {
                    let body_field = self.body_field.as_deref().unwrap_or("body");
                    pipe.cmd("XADD").arg(key);
                    if let Some(n) = self.maxlen {
                        pipe.arg("MAXLEN").arg("~").arg(n);
                    }
                    pipe.arg("*");
                    for (k, v) in e.headers.iter() {
                        if k != body_field {
                            pipe.arg(k).arg(v);
                        }
                    }
                    pipe.arg(body_field).arg(&e.body[..]);
                }
            }
            // LPUSH, RPUSH, HSET and XADD: the expiry is a command of its own.
            match self.ttl_ms {
                Some(ms) => {
                    pipe.cmd("PEXPIRE").arg(key).arg(ms);
                    self.plan.push((i, 2));
                }
                None => self.plan.push((i, 1)),
            }
        }
    }

    /// The connection in hand, or a new one.
    async fn connect(&mut self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(c) = self.conn.take() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        tracing::info!(sink = %self.name, addr = %self.addr, "connected to redis");
        Ok(conn)
    }

    /// Maps the replies (one per command, in order) onto the planned events.
    fn judge_replies(
        &self,
        replies: &[Value],
        rejected: &mut Vec<(usize, String)>,
        retriable: &mut Vec<usize>,
        retry_reason: &mut Option<String>,
    ) {
        let mut pos = 0;
        for &(event, n) in &self.plan {
            let failed = replies[pos..pos + n].iter().find_map(|r| match r {
                Value::ServerError(e) => Some(e),
                _ => None,
            });
            pos += n;
            if let Some(e) = failed {
                match classify_code(e.code()) {
                    ErrorClass::Retriable => {
                        retriable.push(event);
                        if retry_reason.is_none() {
                            *retry_reason = Some(reply_text(e));
                        }
                    }
                    ErrorClass::Permanent => rejected.push((event, reply_text(e))),
                }
            }
        }
    }

    /// A MULTI/EXEC refused at queue time applied nothing: the commands it names are judged
    /// by their error, every other event is retried.
    fn judge_aborted(
        &self,
        errors: &[(usize, ServerError)],
        rejected: &mut Vec<(usize, String)>,
        retriable: &mut Vec<usize>,
    ) {
        let mut first = 0;
        for &(event, n) in &self.plan {
            let failed = errors
                .iter()
                .find(|(c, _)| (first..first + n).contains(c))
                .map(|(_, e)| e);
            first += n;
            match failed {
                Some(e) if classify_code(e.code()) == ErrorClass::Permanent => {
                    rejected.push((event, reply_text(e)));
                }
                _ => retriable.push(event),
            }
        }
    }

    /// Every planned event retriable (the pipeline did not get through).
    fn all_retriable(&self, retriable: &mut Vec<usize>) {
        retriable.extend(self.plan.iter().map(|&(event, _)| event));
    }
}

/// The outcome of a batch from what became of each event.
fn outcome(
    total: usize,
    rejected: Vec<(usize, String)>,
    retriable: Vec<usize>,
    retry_reason: Option<String>,
) -> Result<(), DeliveryError> {
    if rejected.is_empty() && retriable.is_empty() {
        Ok(())
    } else if rejected.is_empty() && retriable.len() == total {
        Err(DeliveryError::Retriable {
            reason: retry_reason.unwrap_or_else(|| "redis: retriable error".into()),
            retry_after: None,
        })
    } else {
        Err(DeliveryError::Partial {
            rejected,
            retriable,
        })
    }
}

#[async_trait]
impl Sink for RedisSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut rejected = Vec::new();
        let mut retriable = Vec::new();
        let mut retry_reason = None;
        self.plan(batch, &mut rejected);
        if self.plan.is_empty() {
            return outcome(batch.len(), rejected, retriable, retry_reason);
        }
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => {
                self.all_retriable(&mut retriable);
                let reason = format!("redis {}: cannot connect: {e}", self.addr);
                return outcome(batch.len(), rejected, retriable, Some(reason));
            }
        };
        let commands = self.pipe.len();
        let result = self.pipe.query_async::<Vec<Value>>(&mut conn).await;
        match result {
            Ok(replies) if replies.len() == commands => {
                self.conn = Some(conn);
                self.judge_replies(&replies, &mut rejected, &mut retriable, &mut retry_reason);
            }
            Ok(replies) => {
                // Not what was asked for (e.g. a transaction discarded): retry on a new connection.
                self.all_retriable(&mut retriable);
                retry_reason = Some(format!(
                    "redis {}: {} replies to {commands} commands",
                    self.addr,
                    replies.len()
                ));
            }
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort) => {
                self.conn = Some(conn);
                retry_reason = Some(format!("redis {}: {e}", self.addr));
                match e.into_server_errors() {
                    Some(errors) => self.judge_aborted(&errors, &mut rejected, &mut retriable),
                    None => self.all_retriable(&mut retriable),
                }
            }
            Err(e) if classify_error(&e) == ErrorClass::Permanent => {
                // The server refused the pipeline as a whole: its events are poison.
                self.conn = Some(conn);
                let why = format!("redis: {e}");
                rejected.extend(self.plan.iter().map(|&(event, _)| (event, why.clone())));
            }
            Err(e) => {
                // The connection is dropped (not put back): the next attempt makes a new one.
                if is_reply(&e) {
                    self.conn = Some(conn);
                }
                self.all_retriable(&mut retriable);
                retry_reason = Some(format!("redis {}: {e}", self.addr));
            }
        }
        outcome(batch.len(), rejected, retriable, retry_reason)
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        self.conn = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::Secret;

    fn cfg(command: RedisCommand, key: &str) -> RedisSinkConfig {
        RedisSinkConfig {
            url: Secret::new("redis://user:hunter2@127.0.0.1:6379/0"),
            command,
            key: key.into(),
            ttl: None,
            fields: None,
            body_field: None,
            maxlen: None,
            only_new: false,
            transaction: false,
            timeout: sluice_core::config::units::HumanDuration(Duration::from_secs(1)),
        }
    }

    /// The planned commands as text, one Vec per command.
    fn commands(sink: &RedisSink) -> Vec<Vec<String>> {
        sink.pipe
            .cmd_iter()
            .map(|c| {
                c.args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                        _ => "<cursor>".into(),
                    })
                    .collect()
            })
            .collect()
    }

    fn plan(sink: &mut RedisSink, batch: &[Event]) -> Vec<(usize, String)> {
        let mut rejected = Vec::new();
        sink.plan(batch, &mut rejected);
        rejected
    }

    #[test]
    fn json_members_become_hash_fields() {
        let m =
            json_object(br#"{"s":"text","n":1.5,"b":true,"o":{"x":[1,"y"]},"z":null}"#).unwrap();
        let mut scratch = Vec::new();
        let got: Vec<(String, String)> = m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    String::from_utf8(field_value(v, &mut scratch).to_vec()).unwrap(),
                )
            })
            .collect();
        let want = [
            ("b", "true"),
            ("n", "1.5"),
            ("o", r#"{"x":[1,"y"]}"#),
            ("s", "text"),
            ("z", "null"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut got = got;
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        for body in ["not json", "[1,2]", "\"s\"", "42", "", "{\"a\":"] {
            assert_eq!(
                json_object(body.as_bytes()).unwrap_err(),
                NOT_AN_OBJECT,
                "{body:?}"
            );
        }
        assert_eq!(json_object(b"{}").unwrap_err(), EMPTY_OBJECT);
    }

    #[test]
    fn error_replies_are_classified() {
        for code in [
            "LOADING",
            "BUSY",
            "TRYAGAIN",
            "CLUSTERDOWN",
            "READONLY",
            "OOM",
        ] {
            assert_eq!(classify_code(code), ErrorClass::Retriable, "{code}");
        }
        for code in ["WRONGTYPE", "ERR", "NOPERM", "CROSSSLOT", "MOVED"] {
            assert_eq!(classify_code(code), ErrorClass::Permanent, "{code}");
        }
        // Parsed the way the client parses replies: known kinds and extension codes.
        for (wire, class) in [
            (
                "-LOADING Redis is loading the dataset in memory\r\n",
                ErrorClass::Retriable,
            ),
            (
                "-BUSY Redis is busy running a script.\r\n",
                ErrorClass::Retriable,
            ),
            (
                "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                ErrorClass::Retriable,
            ),
            (
                "-CLUSTERDOWN The cluster is down\r\n",
                ErrorClass::Retriable,
            ),
            (
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                ErrorClass::Permanent,
            ),
            (
                "-ERR wrong number of arguments for 'hset' command\r\n",
                ErrorClass::Permanent,
            ),
        ] {
            let Value::ServerError(e) = redis::parse_redis_value(wire.as_bytes()).unwrap() else {
                panic!("not an error reply");
            };
            assert_eq!(classify_code(e.code()), class, "{e}");
            let err: RedisError = e.into();
            assert_eq!(classify_error(&err), class, "{err}");
        }
        let busy = redis::make_extension_error("BUSY".into(), Some("script".into()));
        assert_eq!(classify_error(&busy), ErrorClass::Retriable);
        let wrong = redis::make_extension_error("WRONGTYPE".into(), None);
        assert_eq!(classify_error(&wrong), ErrorClass::Permanent);
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(classify_error(&io), ErrorClass::Retriable);
        let timeout: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "t").into();
        assert_eq!(classify_error(&timeout), ErrorClass::Retriable);
    }

    #[test]
    fn the_reply_text_is_the_dead_letter_reason() {
        let Value::ServerError(e) = redis::parse_redis_value(
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            reply_text(&e),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
    }

    #[test]
    fn replies_map_onto_events() {
        let mut c = cfg(RedisCommand::Rpush, "k");
        c.ttl = Some(sluice_core::config::units::HumanDuration(
            Duration::from_secs(5),
        ));
        let mut sink = RedisSink::new("s", &c).unwrap();
        let batch = [Event::new("a"), Event::new("b"), Event::new("c")];
        assert!(plan(&mut sink, &batch).is_empty());
        let err = |wire: &str| redis::parse_redis_value(wire.as_bytes()).unwrap();
        let replies = [
            Value::Int(1),
            Value::Int(1),
            err("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
            Value::Int(0),
            Value::Int(2),
            err("-LOADING loading\r\n"),
        ];
        let (mut rejected, mut retriable, mut why) = (Vec::new(), Vec::new(), None);
        sink.judge_replies(&replies, &mut rejected, &mut retriable, &mut why);
        assert_eq!(
            rejected,
            [(
                1,
                "WRONGTYPE Operation against a key holding the wrong kind of value".to_owned()
            )]
        );
        assert_eq!(retriable, [2]);
        assert_eq!(why.as_deref(), Some("LOADING loading"));
        let r = outcome(3, rejected, retriable, why);
        assert!(
            matches!(&r, Err(DeliveryError::Partial { rejected, retriable }) if rejected.len() == 1 && retriable == &[2]),
            "{r:?}"
        );
        assert!(matches!(
            outcome(2, vec![], vec![0, 1], Some("x".into())),
            Err(DeliveryError::Retriable { .. })
        ));
        assert!(outcome(2, vec![], vec![], None).is_ok());
    }

    #[test]
    fn commands_per_kind() {
        let e = Event::new("payload")
            .with_header("id", "7")
            .with_header("body", "shadowed");
        let mut c = cfg(RedisCommand::Set, "k:%{id}");
        c.ttl = Some(sluice_core::config::units::HumanDuration(
            Duration::from_millis(1500),
        ));
        let mut s = RedisSink::new("s", &c).unwrap();
        plan(&mut s, std::slice::from_ref(&e));
        assert_eq!(commands(&s), [["SET", "k:7", "payload", "PX", "1500"]]);
        c.only_new = true;
        let mut s = RedisSink::new("s", &c).unwrap();
        plan(&mut s, std::slice::from_ref(&e));
        assert_eq!(
            commands(&s),
            [["SET", "k:7", "payload", "NX", "PX", "1500"]]
        );

        let mut c = cfg(RedisCommand::Xadd, "st");
        c.maxlen = Some(100);
        let mut s = RedisSink::new("s", &c).unwrap();
        plan(&mut s, std::slice::from_ref(&e));
        assert_eq!(
            commands(&s),
            [[
                "XADD", "st", "MAXLEN", "~", "100", "*", "id", "7", "body", "payload"
            ]]
        );

        let mut c = cfg(RedisCommand::Hset, "h");
        c.fields = Some(HashFields::Headers);
        c.body_field = Some("raw".into());
        c.ttl = Some(sluice_core::config::units::HumanDuration(
            Duration::from_secs(2),
        ));
        let mut s = RedisSink::new("s", &c).unwrap();
        plan(&mut s, std::slice::from_ref(&e));
        assert_eq!(
            commands(&s),
            [
                vec!["HSET", "h", "id", "7", "body", "shadowed", "raw", "payload"],
                vec!["PEXPIRE", "h", "2000"]
            ]
        );
        assert_eq!(s.plan, [(0, 2)]);

        let mut s = RedisSink::new("s", &cfg(RedisCommand::Hset, "h:%{id}")).unwrap();
        let batch = [
            Event::new(r#"{"a":"x","n":2}"#).with_header("id", "1"),
            Event::new("not json").with_header("id", "2"),
            Event::new("{}").with_header("id", "3"),
        ];
        let rejected = plan(&mut s, &batch);
        assert_eq!(
            rejected,
            [(1, NOT_AN_OBJECT.to_owned()), (2, EMPTY_OBJECT.to_owned())]
        );
        assert_eq!(commands(&s), [["HSET", "h:1", "a", "x", "n", "2"]]);
        assert_eq!(s.plan, [(0, 1)]);

        let mut s = RedisSink::new("s", &cfg(RedisCommand::Publish, "chan")).unwrap();
        assert!(s.constant_key.is_some());
        plan(&mut s, &[Event::new("m1"), Event::new("m2")]);
        assert_eq!(
            commands(&s),
            [["PUBLISH", "chan", "m1"], ["PUBLISH", "chan", "m2"]]
        );
    }

    #[test]
    fn settings_are_checked_by_field() {
        let err = |f: &dyn Fn(&mut RedisSinkConfig)| {
            let mut c = cfg(RedisCommand::Set, "k");
            f(&mut c);
            RedisSink::new("s", &c).err().unwrap_or_default()
        };
        assert!(err(&|c| c.key = "a%".into()).starts_with("`key`:"));
        assert!(err(&|c| c.key = String::new()).starts_with("`key`"));
        assert!(err(&|c| c.url = Secret::new("nope://x")).starts_with("`url`:"));
        assert!(!err(&|c| c.url = Secret::new("redis://u:hunter2@[::1")).contains("hunter2"));
        assert!(err(&|c| c.maxlen = Some(5)).starts_with("`maxlen`"));
        assert!(
            err(&|c| {
                c.command = RedisCommand::Lpush;
                c.only_new = true;
            })
            .starts_with("`only_new` applies to `command: set`")
        );
        assert!(err(&|c| c.fields = Some(HashFields::Json)).starts_with("`fields`"));
        assert!(err(&|c| c.body_field = Some("b".into())).starts_with("`body_field`"));
        assert!(
            err(&|c| {
                c.command = RedisCommand::Publish;
                c.ttl = Some(sluice_core::config::units::HumanDuration(
                    Duration::from_secs(1),
                ));
            })
            .starts_with("`ttl`")
        );
        assert!(
            err(&|c| {
                c.command = RedisCommand::Hset;
                c.body_field = Some("b".into());
            })
            .starts_with("`body_field`")
        );
        assert_eq!(err(&|_| {}), "");
        let debug = format!("{:?}", cfg(RedisCommand::Set, "k"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
