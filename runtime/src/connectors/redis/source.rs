//! The `redis` source: one Redis Stream read through a consumer group, at least once.
//!
//! Each entry becomes one event: the `body_field` field is the body, every other field a
//! header (an entry without the body field gets all its fields, as a JSON object, for a body),
//! plus `redis.stream`, `redis.id` and `timestamp` — the milliseconds part of the entry id,
//! unless the entry has a `timestamp` field of its own.
//!
//! Reading: first this consumer's own pending entries (`XREADGROUP ... 0`: delivered before a
//! crash or a lost connection but never acknowledged), then new ones (`>`, waiting up to
//! `block`), `batch_size` at a time. Entries left pending longer than `claim_idle` by other
//! consumers (dead ones) are taken over with `XAUTOCLAIM`, every half of `claim_idle`, and
//! processed the same way. A batch is acknowledged (one `XACK` for all its ids) only after the
//! channel processor committed it; when that fails the entries stay pending and are read again
//! from this consumer's pending list after a pause. A stop abandons the batch in hand without
//! acknowledging it. Redis errors are logged and retried by the engine's source supervisor
//! after a growing, jittered pause (100 ms up to 5 s), on a new connection unless Redis itself
//! answered with the error; the url may carry a password, so only `host:port` is logged.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, RedisError, Value, aio::MultiplexedConnection,
};
use tokio::time::Instant;

use sluice_core::{
    event::{Event, Headers},
    registry::{BuildCx, ReadCx, SourceSpec, plain_source},
    source::{
        ProcessError, Source, SourceContext, SourceError,
        supervisor::{Backoff, Failure, Session, Supervised, sleep_or_cancelled, supervise},
    },
};

use super::config::RedisSourceConfig;

/// `type: redis` sources.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SourceSpec>> {
    plain_source::<RedisSourceConfig>(cx)
}

impl SourceSpec for RedisSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(RedisSource::new(cx.name, self, cx.batch_size)?))
    }

    fn upstream(&self) -> sluice_core::guarantee::Upstream {
        sluice_core::guarantee::Upstream::AckAfterCommit(
            "entries are acknowledged (XACK) only after a commit",
        )
    }
}

/// Header naming the stream an event was read from.
pub const HEADER_STREAM: &str = "redis.stream";
/// Header holding the entry id.
pub const HEADER_ID: &str = "redis.id";

const MIN_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);

pub struct RedisSource {
    name: String,
    client: Client,
    /// `host:port`, for logs (never the url: it may hold a password).
    addr: String,
    stream: String,
    group: String,
    consumer: String,
    start_id: String,
    create_group: bool,
    /// `XAUTOCLAIM` min-idle-time in ms; `None`: claiming is off.
    claim_idle_ms: Option<u64>,
    claim_every: Duration,
    body_field: String,
    block: Duration,
    timeout: Duration,
    batch_size: usize,
    /// `XREADGROUP ... BLOCK .. STREAMS <stream> >`, built once.
    read_new: Cmd,

    // Running state.
    conn: Option<MultiplexedConnection>,
    group_ready: bool,
    phase: Phase,
    /// Ids of a committed batch whose `XACK` has not gone through yet.
    to_ack: Vec<String>,
    claim_cursor: String,
    next_claim: Option<Instant>,
}

/// Where the next read comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// This consumer's own pending entries after `cursor`.
    Pending { cursor: String },
    /// New entries.
    New,
}

impl Phase {
    fn from_start() -> Phase {
        Phase::Pending { cursor: "0".into() }
    }
}

/// Why a step did not complete.
enum StepError {
    /// A command failed (`what` names it).
    Redis(&'static str, RedisError),
    /// A reply of an unexpected shape.
    Reply(String),
    /// The channel processor refused the batch; it may take it later.
    Process(ProcessError),
    /// The agent is stopping (channel closed) or the batch can never fit.
    Fatal(ProcessError),
}

impl RedisSource {
    /// Checks the settings and parses the url; connects when run.
    pub fn new(name: &str, cfg: &RedisSourceConfig, batch_size: usize) -> Result<Self, String> {
        let client = Client::open(cfg.url.expose()).map_err(|e| format!("`url`: {e}"))?;
        let addr = client.get_connection_info().addr().to_string();
        for (field, v) in [
            ("stream", &cfg.stream),
            ("group", &cfg.group),
            ("body_field", &cfg.body_field),
        ] {
            if v.is_empty() {
                return Err(format!("`{field}` must not be empty"));
            }
        }
        let consumer = match &cfg.consumer {
            Some(c) if c.is_empty() => return Err("`consumer` must not be empty".into()),
            Some(c) => c.clone(),
            None => default_consumer(name),
        };
        if !valid_start_id(&cfg.start_id) {
            return Err(format!(
                "`start_id`: {:?} is not `0`, `$` or an entry id like 1700000000000-0",
                cfg.start_id
            ));
        }
        let block_ms = u64::try_from(cfg.block.0.as_millis()).unwrap_or(u64::MAX);
        if block_ms == 0 {
            return Err("`block` must be at least 1ms".into());
        }
        if cfg.timeout.0.is_zero() {
            return Err("`timeout` must be more than 0".into());
        }
        let claim_idle_ms = match u64::try_from(cfg.claim_idle.0.as_millis()).unwrap_or(u64::MAX) {
            0 => None,
            ms => Some(ms),
        };
        let batch_size = batch_size.max(1);
        let mut read_new = redis::cmd("XREADGROUP");
        read_new
            .arg("GROUP")
            .arg(&cfg.group)
            .arg(&consumer)
            .arg("COUNT")
            .arg(batch_size)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&cfg.stream)
            .arg(">");
        Ok(RedisSource {
            name: name.to_owned(),
            client,
            addr,
            stream: cfg.stream.clone(),
            group: cfg.group.clone(),
            consumer,
            start_id: cfg.start_id.clone(),
            create_group: cfg.create_group,
            claim_idle_ms,
            claim_every: (cfg.claim_idle.0 / 2).max(MIN_PAUSE),
            body_field: cfg.body_field.clone(),
            block: cfg.block.0,
            timeout: cfg.timeout.0,
            batch_size,
            read_new,
            conn: None,
            group_ready: false,
            phase: Phase::from_start(),
            to_ack: Vec::new(),
            claim_cursor: "0-0".into(),
            next_claim: claim_idle_ms.map(|_| Instant::now()),
        })
    }

    /// The consumer name in use (configured or derived).
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The connection in hand, or a new one (then the group is made sure of, and this
    /// consumer's pending entries are read again: a lost connection may have swallowed a
    /// reply that delivered entries).
    async fn connection(&mut self) -> Result<MultiplexedConnection, StepError> {
        let mut conn = match self.conn.clone() {
            Some(c) => c,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.block + self.timeout));
                let c = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| StepError::Redis("connect", e))?;
                tracing::info!(
                    source = %self.name,
                    addr = %self.addr,
                    stream = %self.stream,
                    group = %self.group,
                    consumer = %self.consumer,
                    "connected to redis"
                );
                self.conn = Some(c.clone());
                self.phase = Phase::from_start();
                c
            }
        };
        if !self.group_ready {
            if self.create_group {
                let mut create = redis::cmd("XGROUP");
                create
                    .arg("CREATE")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(&self.start_id)
                    .arg("MKSTREAM");
                match send(&mut conn, &create).await {
                    Ok(_) => tracing::info!(
                        source = %self.name,
                        stream = %self.stream,
                        group = %self.group,
                        start_id = %self.start_id,
                        "created the consumer group"
                    ),
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) => return Err(StepError::Redis("XGROUP CREATE", e)),
                }
            }
            self.group_ready = true;
        }
        Ok(conn)
    }

    /// Acknowledges the committed batch in `to_ack`.
    async fn ack(&mut self, conn: &mut MultiplexedConnection) -> Result<(), StepError> {
        let mut xack = redis::cmd("XACK");
        xack.arg(&self.stream)
            .arg(&self.group)
            .arg(&self.to_ack[..]);
        send(conn, &xack)
            .await
            .map_err(|e| StepError::Redis("XACK", e))?;
        self.to_ack.clear();
        Ok(())
    }

    /// One read, its processing and its acknowledgement. `Ok(false)`: stop now.
    async fn step(
        &mut self,
        conn: &mut MultiplexedConnection,
        cx: &mut SourceContext,
    ) -> Result<bool, StepError> {
        if !self.to_ack.is_empty() {
            self.ack(conn).await?;
        }
        let claiming =
            self.phase == Phase::New && self.next_claim.is_some_and(|t| Instant::now() >= t);
        let entries = if claiming {
            let mut claim = redis::cmd("XAUTOCLAIM");
            claim
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(self.claim_idle_ms.unwrap_or(u64::MAX))
                .arg(&self.claim_cursor)
                .arg("COUNT")
                .arg(self.batch_size);
            let reply = send(conn, &claim)
                .await
                .map_err(|e| StepError::Redis("XAUTOCLAIM", e))?;
            let (next, entries) = claim_entries(reply).map_err(StepError::Reply)?;
            if next == "0-0" {
                // A whole sweep done: the next one in a while.
                self.next_claim = Some(Instant::now() + self.claim_every);
            }
            self.claim_cursor = next;
            entries
        } else if let Phase::Pending { cursor } = &self.phase {
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(self.batch_size)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(cursor);
            let reply = send(conn, &read)
                .await
                .map_err(|e| StepError::Redis("XREADGROUP (pending)", e))?;
            let entries = read_entries(reply).map_err(StepError::Reply)?;
            if entries.is_empty() {
                self.phase = Phase::New;
                return Ok(true);
            }
            entries
        } else {
            let reply = tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => return Ok(false),
                r = send(conn, &self.read_new) => r,
            };
            let reply = reply.map_err(|e| StepError::Redis("XREADGROUP", e))?;
            read_entries(reply).map_err(StepError::Reply)?
        };

        let mut events = Vec::with_capacity(entries.len());
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            let (id, event) =
                entry_event(entry, &self.stream, &self.body_field).map_err(StepError::Reply)?;
            ids.push(id);
            events.extend(event);
        }
        if ids.is_empty() {
            return Ok(true);
        }
        if claiming {
            tracing::info!(source = %self.name, entries = ids.len(), "claimed entries left pending by other consumers");
        }
        if !events.is_empty() {
            let processed = tokio::select! {
                biased;
                r = cx.out.process(events) => r,
                _ = cx.shutdown.cancelled() => return Ok(false),
            };
            match processed {
                Ok(()) => {}
                Err(e) if e.is_fatal() => return Err(StepError::Fatal(e)),
                Err(e) => return Err(StepError::Process(e)),
            }
        }
        if let (Phase::Pending { cursor }, Some(last)) = (&mut self.phase, ids.last()) {
            cursor.clone_from(last);
        }
        self.to_ack = ids;
        self.ack(conn).await?;
        Ok(true)
    }

    /// Drops what the error spoilt and says what the supervisor is to do.
    fn failed(&mut self, e: StepError) -> Failure {
        match e {
            StepError::Fatal(e) => Failure::Fatal(e.into()),
            StepError::Redis(what, e) => {
                if !is_reply(&e) {
                    // Connection trouble: a new connection next time.
                    self.conn = None;
                } else if e.code() == Some("NOGROUP") {
                    // The stream or group went away: made again when `create_group`.
                    self.group_ready = false;
                }
                Failure::retry(format!("redis {what} failed"), e)
            }
            StepError::Reply(why) => {
                self.conn = None;
                Failure::retry("unexpected reply from redis", why)
            }
            // Only `consume` meets these, and pauses in place instead.
            StepError::Process(e) => Failure::retry("batch not taken", e),
        }
    }
}

impl Supervised for RedisSource {
    type Conn = MultiplexedConnection;

    fn peer(&self) -> String {
        self.addr.clone()
    }

    /// The connection in hand (kept after an error Redis answered) or a new one.
    async fn connect(&mut self) -> Result<MultiplexedConnection, Failure> {
        match self.connection().await {
            Ok(conn) => Ok(conn),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn consume(
        &mut self,
        mut conn: MultiplexedConnection,
        cx: &mut SourceContext,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let mut refused = Backoff::new(MIN_PAUSE, MAX_PAUSE);
        while !cx.shutdown.is_cancelled() {
            match self.step(&mut conn, cx).await {
                Ok(true) => {
                    session.mark_progress();
                    refused.reset();
                }
                Ok(false) => break,
                Err(StepError::Process(e)) => {
                    // The entries stay pending on this consumer: read them again.
                    let wait = refused.next_delay();
                    tracing::warn!(source = %self.name, error = %e, retry_in = ?wait, "batch not taken; reading it again");
                    self.phase = Phase::from_start();
                    if sleep_or_cancelled(&cx.shutdown, wait).await {
                        break;
                    }
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for RedisSource {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let mut this = *self;
        tracing::info!(
            source = %this.name,
            addr = %this.addr,
            stream = %this.stream,
            group = %this.group,
            consumer = %this.consumer,
            "reading a redis stream"
        );
        supervise(&mut this, &mut cx, Backoff::new(MIN_PAUSE, MAX_PAUSE)).await
    }
}

/// Sends one command; an error reply becomes an error.
async fn send(conn: &mut MultiplexedConnection, cmd: &Cmd) -> Result<Value, RedisError> {
    match conn.send_packed_command(cmd).await? {
        Value::ServerError(e) => Err(e.into()),
        v => Ok(v),
    }
}

/// True when the error is a server's reply to a command (the connection is still good).
fn is_reply(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// `<hostname>-<source name>`: stable across restarts, distinct per host and source.
fn default_consumer(source: &str) -> String {
    format!("{}-{source}", gethostname::gethostname().to_string_lossy())
}

/// `0`, `$`, or `<ms>` / `<ms>-<seq>`.
fn valid_start_id(id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    id == "$"
        || match id.split_once('-') {
            Some((ms, seq)) => digits(ms) && digits(seq),
            None => digits(id),
        }
}

/// The entries of the (only) stream in an `XREADGROUP` reply; none on a timeout.
fn read_entries(reply: Value) -> Result<Vec<Value>, String> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        // RESP2: [[stream, entries]]
        Value::Array(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => entries_of(pair.into_iter().nth(1).unwrap_or(Value::Nil)),
            Some(other) => Err(format!(
                "XREADGROUP: unexpected stream item {}",
                kind(&other)
            )),
        },
        // RESP3: {stream: entries}
        Value::Map(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some((_, entries)) => entries_of(entries),
        },
        other => Err(format!("XREADGROUP: unexpected reply {}", kind(&other))),
    }
}

/// `(next cursor, entries)` of an `XAUTOCLAIM` reply.
fn claim_entries(reply: Value) -> Result<(String, Vec<Value>), String> {
    let Value::Array(parts) = reply else {
        return Err(format!("XAUTOCLAIM: unexpected reply {}", kind(&reply)));
    };
    let mut parts = parts.into_iter();
    let next = parts
        .next()
        .and_then(into_string)
        .ok_or("XAUTOCLAIM: reply without a cursor")?;
    let entries = entries_of(parts.next().unwrap_or(Value::Nil))?;
    Ok((next, entries))
}

fn entries_of(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(entries) => Ok(entries),
        Value::Nil => Ok(Vec::new()),
        other => Err(format!("unexpected list of entries {}", kind(&other))),
    }
}

/// A short name for a reply's type (replies may be large: never printed whole).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "simple string",
        Value::Okay => "OK",
        Value::Map(_) => "map",
        Value::ServerError(_) => "error",
        _ => "other value",
    }
}

fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn into_string(v: Value) -> Option<String> {
    into_bytes(v).map(text)
}

/// One stream entry `[id, [field, value, ...]]` as `(id, event)`; the event is `None` for an
/// entry deleted while pending (`[id, nil]`: only to be acknowledged).
fn entry_event(
    entry: Value,
    stream: &str,
    body_field: &str,
) -> Result<(String, Option<Event>), String> {
    let Value::Array(parts) = entry else {
        return Err(format!("unexpected stream entry {}", kind(&entry)));
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .and_then(into_string)
        .ok_or("stream entry without an id")?;
    let fields = match parts.next() {
        Some(Value::Array(f)) => f,
        Some(Value::Map(m)) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Some(Value::Nil) | None => return Ok((id, None)),
        Some(other) => {
            return Err(format!(
                "stream entry {id}: unexpected fields {}",
                kind(&other)
            ));
        }
    };
    let mut headers = Headers::default();
    let mut body = None;
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let (Some(k), Some(v)) = (into_string(k), into_bytes(v)) else {
            continue;
        };
        if body.is_none() && k == body_field {
            body = Some(Bytes::from(v));
        } else {
            headers.insert(k, text(v));
        }
    }
    let body = body.unwrap_or_else(|| fields_json(&headers));
    if !headers.contains("timestamp")
        && let Some(ms) = id_millis(&id)
    {
        headers.insert("timestamp", ms);
    }
    headers.insert(HEADER_STREAM, stream);
    headers.insert(HEADER_ID, id.as_str());
    Ok((id, Some(Event { headers, body })))
}

/// The fields of an entry without a body field, as a JSON object.
fn fields_json(headers: &Headers) -> Bytes {
    let mut m = serde_json::Map::with_capacity(headers.len());
    for (k, v) in headers.iter() {
        m.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    }
    Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}

/// The milliseconds part of an entry id (`1700000000000-3` → `1700000000000`).
fn id_millis(id: &str) -> Option<&str> {
    let ms = id.split_once('-').map_or(id, |(ms, _)| ms);
    (!ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit())).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::{Secret, units::HumanDuration};

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [bulk(k), bulk(v)])
                    .collect(),
            ),
        ])
    }

    fn cfg() -> RedisSourceConfig {
        RedisSourceConfig {
            url: Secret::new("redis://:pw@127.0.0.1:6379/2"),
            stream: "s".into(),
            group: "g".into(),
            consumer: None,
            start_id: "0".into(),
            create_group: true,
            block: HumanDuration(Duration::from_secs(1)),
            claim_idle: HumanDuration(Duration::from_secs(60)),
            body_field: "body".into(),
            timeout: HumanDuration(Duration::from_secs(10)),
        }
    }

    #[test]
    fn fields_become_headers_and_the_body_field_the_body() {
        let (id, e) = entry_event(
            entry(
                "1700000000123-4",
                &[("body", "hello"), ("k", "v"), ("n", "1")],
            ),
            "st",
            "body",
        )
        .unwrap();
        let e = e.unwrap();
        assert_eq!(id, "1700000000123-4");
        assert_eq!(&e.body[..], b"hello");
        let h: Vec<(&str, &str)> = e.headers.iter().collect();
        assert_eq!(
            h,
            [
                ("k", "v"),
                ("n", "1"),
                ("timestamp", "1700000000123"),
                (HEADER_STREAM, "st"),
                (HEADER_ID, "1700000000123-4"),
            ]
        );
    }

    #[test]
    fn an_entry_without_the_body_field_has_its_fields_as_a_json_body() {
        let (_, e) = entry_event(
            entry("5-0", &[("a", "1"), ("timestamp", "42")]),
            "st",
            "body",
        )
        .unwrap();
        let e = e.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(body, serde_json::json!({"a": "1", "timestamp": "42"}));
        assert_eq!(
            e.headers.get("timestamp"),
            Some("42"),
            "the entry's own wins"
        );
        assert_eq!(e.headers.get("a"), Some("1"));
        assert_eq!(e.headers.get(HEADER_ID), Some("5-0"));
    }

    #[test]
    fn binary_bodies_stay_as_they_are_and_deleted_entries_have_no_event() {
        let raw = Value::Array(vec![
            bulk("9-1"),
            Value::Array(vec![bulk("body"), Value::BulkString(vec![0, 255, 10])]),
        ]);
        let (_, e) = entry_event(raw, "st", "body").unwrap();
        assert_eq!(&e.unwrap().body[..], &[0, 255, 10]);
        let gone = Value::Array(vec![bulk("9-2"), Value::Nil]);
        assert_eq!(
            entry_event(gone, "st", "body").unwrap(),
            ("9-2".into(), None)
        );
        assert!(entry_event(Value::Int(3), "st", "body").is_err());
    }

    #[test]
    fn reply_shapes() {
        assert!(read_entries(Value::Nil).unwrap().is_empty());
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("st"),
            Value::Array(vec![entry("1-0", &[("body", "a")]), entry("2-0", &[])]),
        ])]);
        assert_eq!(read_entries(resp2).unwrap().len(), 2);
        let empty = Value::Array(vec![Value::Array(vec![bulk("st"), Value::Array(vec![])])]);
        assert!(read_entries(empty).unwrap().is_empty());
        let resp3 = Value::Map(vec![(bulk("st"), Value::Array(vec![entry("1-0", &[])]))]);
        assert_eq!(read_entries(resp3).unwrap().len(), 1);
        assert!(read_entries(Value::Int(1)).is_err());

        let claimed = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![entry("3-0", &[("body", "x")])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let (next, entries) = claim_entries(claimed).unwrap();
        assert_eq!((next.as_str(), entries.len()), ("0-0", 1));
        assert!(claim_entries(Value::Nil).is_err());
    }

    #[test]
    fn start_ids_and_settings() {
        for ok in ["0", "$", "1700000000000", "1700000000000-0"] {
            assert!(valid_start_id(ok), "{ok}");
        }
        for bad in ["", ">", "-", "1-", "a-1", "1-2-3"] {
            assert!(!valid_start_id(bad), "{bad}");
        }
        assert_eq!(id_millis("17-3"), Some("17"));
        assert_eq!(id_millis("x-3"), None);

        let s = RedisSource::new("src", &cfg(), 500).unwrap();
        assert!(s.consumer().ends_with("-src"), "{}", s.consumer());
        assert_eq!(s.addr, "127.0.0.1:6379");
        assert_eq!(s.phase, Phase::from_start());
        let err = |f: &dyn Fn(&mut RedisSourceConfig)| {
            let mut c = cfg();
            f(&mut c);
            RedisSource::new("src", &c, 10).err().unwrap_or_default()
        };
        assert!(err(&|c| c.start_id = "later".into()).starts_with("`start_id`"));
        assert!(err(&|c| c.stream = String::new()).starts_with("`stream`"));
        assert!(err(&|c| c.consumer = Some(String::new())).starts_with("`consumer`"));
        assert!(err(&|c| c.block = HumanDuration(Duration::ZERO)).starts_with("`block`"));
        assert!(err(&|c| c.url = Secret::new("http://x")).starts_with("`url`"));
        let mut c = cfg();
        c.claim_idle = HumanDuration(Duration::ZERO);
        let s = RedisSource::new("src", &c, 10).unwrap();
        assert!(s.claim_idle_ms.is_none() && s.next_claim.is_none());
    }
}
