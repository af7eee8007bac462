//! librdkafka plumbing shared by the Kafka source, sink and channel: building and checking
//! client configurations, routing librdkafka's logs to `tracing` (rate-limited), rebalance
//! bookkeeping, reading Kafka headers safely, and closing clients off the async runtime.

use std::{
    ffi::{CStr, c_char, c_void},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, ClientContext, TopicPartitionList,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, ConsumerContext, Rebalance},
    error::{KafkaError, KafkaResult},
    message::BorrowedMessage,
};
use sluice_core::event::Headers;

use super::config::{KafkaOptions, KafkaSecurity, is_sensitive};

/// The record's timestamp in epoch milliseconds: written by the source, read by the sink.
pub const HEADER_TIMESTAMP: &str = "timestamp";

/// At most one repeated warning per this interval (per client).
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// A valid Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn check_topic_name(field: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{field}`: {name:?} is not a valid topic name (1 to 249 of a-z A-Z 0-9 . _ -)"
        ))
    }
}

/// Everything one librdkafka client is built from.
pub struct ClientSpec<'a> {
    /// Name of the pass-through map, for error messages (`consumer` or `producer`).
    pub field: &'static str,
    pub bootstrap_servers: &'a str,
    pub security: &'a KafkaSecurity,
    pub options: &'a KafkaOptions,
    /// Sluice's defaults; the map may override them.
    pub defaults: &'a [(&'a str, &'a str)],
    /// Properties Sluice manages; the map may only repeat them unchanged.
    pub managed: &'a [(&'a str, &'a str)],
}

/// Builds and checks (offline: no client is created, nothing connects) a client configuration.
/// Errors name the offending field and never show a secret.
pub fn client_config(spec: &ClientSpec<'_>) -> Result<ClientConfig, String> {
    let servers = spec.bootstrap_servers.trim();
    if servers.is_empty() {
        return Err("`bootstrap_servers` is empty".to_owned());
    }
    let field = spec.field;
    let mut c = ClientConfig::new();
    for (k, v) in spec.defaults {
        c.set(*k, *v);
    }
    for (k, v) in spec.security.properties()? {
        if spec.options.0.contains_key(k) {
            return Err(format!(
                "`{field}` sets `{k}`, which `security` sets too; keep one"
            ));
        }
        c.set(k, v);
    }
    for (k, v) in &spec.options.0 {
        if k == "bootstrap.servers" || k == "metadata.broker.list" {
            return Err(format!(
                "`{field}` may not set `{k}`: use `bootstrap_servers`"
            ));
        }
        if let Some((_, want)) = spec.managed.iter().find(|(m, _)| *m == k) {
            if v != want {
                return Err(format!(
                    "`{field}` may not set `{k}`: sluice manages it ({want:?})"
                ));
            }
        }
        c.set(k.as_str(), v.as_str());
    }
    for (k, v) in spec.managed {
        c.set(*k, *v);
    }
    c.set("bootstrap.servers", servers);
    // librdkafka's own log level; its messages go to `tracing` (see the kafka source).
    c.set_log_level(if spec.options.0.contains_key("debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
    c.create_native_config().map_err(|e| match e {
        KafkaError::ClientConfig(_, _, key, _) if is_sensitive(&key) => {
            format!("kafka setting `{key}` is invalid")
        }
        KafkaError::ClientConfig(_, desc, key, _) => {
            format!("kafka setting `{key}`: {desc}")
        }
        other => format!("kafka settings: {other}"),
    })?;
    Ok(c)
}

/// Adds one Kafka header: lossy UTF-8, a null value as an empty string.
pub(crate) fn add_header(h: &mut Headers, name: &[u8], value: Option<&[u8]>) {
    h.insert(lossy(name), value.map(lossy).unwrap_or_default());
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Calls `f` with the name and value (`None`: a null value) of each Kafka header of `msg`.
///
/// Read through librdkafka directly: rdkafka's `Headers::get` panics on a header name that is
/// not UTF-8, and a record written by anyone must not be able to stop a source.
pub(crate) fn for_each_header(msg: &BorrowedMessage<'_>, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    use rdkafka::bindings as rd;
    let ok = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `msg` is a live consumer message; librdkafka points `hdrs` at the message's own
    // parsed header list, valid as long as the message is.
    let err = unsafe { rd::rd_kafka_message_headers(msg.ptr(), &mut hdrs) };
    if err != ok || hdrs.is_null() {
        return;
    }
    // SAFETY: `hdrs` is a valid header list (above).
    let count = unsafe { rd::rd_kafka_header_cnt(hdrs) };
    for idx in 0..count {
        let mut name: *const c_char = std::ptr::null();
        let mut value: *const c_void = std::ptr::null();
        let mut size: usize = 0;
        // SAFETY: `idx < count`; librdkafka writes pointers into the header list it owns.
        let err =
            unsafe { rd::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size) };
        if err != ok || name.is_null() {
            break;
        }
        // SAFETY: header names are NUL-terminated; a non-null value points at `size` bytes.
        // Both live in the message, which outlives this call.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = if value.is_null() {
            None
        } else {
            // SAFETY: see above.
            Some(unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) })
        };
        f(name, value);
    }
}

/// Lets a repeated warning through at most once per interval, counting what it held back.
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last one)` when the caller may log now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        let now = Instant::now();
        let last = s.0;
        match last {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                s.0 = Some(now);
                Some(std::mem::take(&mut s.1))
            }
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the data (a list, a timestamp) is intact.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// librdkafka's logs and client errors go to `tracing`, tagged with the component and
/// rate-limited: a broker that is down is reported every few seconds, not at every retry.
pub(crate) struct ClientLog {
    component: String,
    throttle: Throttle,
}

impl ClientLog {
    pub(crate) fn new(component: &str) -> Self {
        ClientLog {
            component: component.to_owned(),
            throttle: Throttle::new(WARN_EVERY),
        }
    }
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let component = self.component.as_str();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if let Some(suppressed) = self.throttle.allow() {
                    tracing::warn!(
                        component,
                        facility = fac,
                        suppressed,
                        "librdkafka: {log_message}"
                    );
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(component, facility = fac, "librdkafka: {log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(component, facility = fac, "librdkafka: {log_message}");
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(suppressed) = self.throttle.allow() {
            let component = self.component.as_str();
            tracing::warn!(component, error = %error, suppressed, "kafka client error: {reason}");
        }
    }
}

/// The consumer's context: logging, plus the partitions revoked by rebalances, which readers
/// drop from unfinished batches (their new owner reads them again from the committed offset).
pub(crate) struct ConsumerCtx {
    log: ClientLog,
    revoked: Mutex<Vec<(String, i32)>>,
    any_revoked: AtomicBool,
}

impl ConsumerCtx {
    pub(crate) fn new(component: &str) -> Self {
        ConsumerCtx {
            log: ClientLog::new(component),
            revoked: Mutex::new(Vec::new()),
            any_revoked: AtomicBool::new(false),
        }
    }

    /// Partitions revoked since the last call, if any. Rebalance callbacks run inside the
    /// reader's own polls, so after a poll returns this is up to date.
    pub(crate) fn take_revoked(&self) -> Option<Vec<(String, i32)>> {
        if !self.any_revoked.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(std::mem::take(&mut *lock(&self.revoked)))
    }
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let component = self.log.component.as_str();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = partitions(tpl);
                tracing::info!(component, partitions = %describe(&parts), "kafka partitions revoked");
                lock(&self.revoked).extend(parts);
                self.any_revoked.store(true, Ordering::Release);
            }
            Rebalance::Assign(tpl) => {
                let parts = partitions(tpl);
                tracing::info!(component, partitions = %describe(&parts), "kafka partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(component, error = %e, "kafka rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            if let Some(suppressed) = self.log.throttle.allow() {
                let component = self.log.component.as_str();
                tracing::warn!(component, error = %e, suppressed, "offset commit failed; records may be read again");
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

fn describe(parts: &[(String, i32)]) -> String {
    if parts.is_empty() {
        return "none".to_owned();
    }
    parts
        .iter()
        .map(|(t, p)| format!("{t}[{p}]"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Drops a librdkafka client on a thread of its own that nobody waits for: closing can block
/// (a consumer leaving its group, rust-rdkafka #509), and must hold up neither the runtime nor
/// the agent's exit.
pub(crate) fn drop_detached<T: Send + 'static>(client: T) {
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(client));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to close a kafka client on; closed inline");
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::config::Secret;

    use super::*;
    use crate::connectors::kafka::config::KafkaProtocol;

    fn opts(pairs: &[(&str, &str)]) -> KafkaOptions {
        KafkaOptions(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn spec<'a>(options: &'a KafkaOptions, security: &'a KafkaSecurity) -> ClientSpec<'a> {
        ClientSpec {
            field: "consumer",
            bootstrap_servers: "127.0.0.1:9092",
            security,
            options,
            defaults: &[("session.timeout.ms", "6000")],
            managed: &[("enable.auto.commit", "false"), ("group.id", "g")],
        }
    }

    #[test]
    fn defaults_yield_to_the_map_but_managed_settings_do_not() {
        let sec = KafkaSecurity::default();
        let o = opts(&[("session.timeout.ms", "10000"), ("fetch.min.bytes", "1")]);
        let c = client_config(&spec(&o, &sec)).unwrap();
        assert_eq!(c.get("session.timeout.ms"), Some("10000"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));

        let o = opts(&[("enable.auto.commit", "true")]);
        let e = client_config(&spec(&o, &sec)).unwrap_err();
        assert!(e.contains("enable.auto.commit"), "{e}");
        let o = opts(&[("enable.auto.commit", "false")]);
        assert!(client_config(&spec(&o, &sec)).is_ok(), "repeating is fine");
    }

    #[test]
    fn unknown_properties_and_bad_values_are_reported_offline() {
        let sec = KafkaSecurity::default();
        let e = client_config(&spec(&opts(&[("no.such.thing", "1")]), &sec)).unwrap_err();
        assert!(e.contains("no.such.thing"), "{e}");
        let e = client_config(&spec(&opts(&[("session.timeout.ms", "soon")]), &sec)).unwrap_err();
        assert!(e.contains("session.timeout.ms"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let sec = KafkaSecurity {
            protocol: Some(KafkaProtocol::SaslPlaintext),
            sasl_mechanism: Some("PLAIN".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some(Secret::new("hunter2")),
            ..KafkaSecurity::default()
        };
        let o = opts(&[("ssl.key.password", "swordfish")]);
        assert!(!format!("{sec:?}{o:?}").contains("hunter2"));
        assert!(!format!("{o:?}").contains("swordfish"));
        let c = client_config(&spec(&KafkaOptions::default(), &sec)).unwrap();
        assert_eq!(c.get("sasl.password"), Some("hunter2"));
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));

        let clash = opts(&[("sasl.username", "other")]);
        assert!(client_config(&spec(&clash, &sec)).is_err());
    }

    #[test]
    fn topic_names() {
        assert!(check_topic_name("topic", "events.v1_x-y").is_ok());
        assert!(check_topic_name("topic", "").is_err());
        assert!(check_topic_name("topic", "a/b").is_err());
        assert!(check_topic_name("topic", "..").is_err());
    }

    #[test]
    fn throttle_lets_one_through_per_interval() {
        let t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
    }

    #[test]
    fn revocations_are_taken_once() {
        let ctx = ConsumerCtx::new("t");
        assert!(ctx.take_revoked().is_none());
        lock(&ctx.revoked).push(("a".into(), 1));
        ctx.any_revoked.store(true, Ordering::Release);
        assert_eq!(ctx.take_revoked(), Some(vec![("a".to_owned(), 1)]));
        assert!(ctx.take_revoked().is_none());
    }
}
