//! Settings of the `kafka` source, sink and channel, and how they become librdkafka client
//! configurations.
//!
//! Every Kafka component names its brokers (`bootstrap_servers`), optional `security`
//! settings (TLS and SASL, written out field by field so secrets live in [`Secret`] and stay
//! out of logs) and a map of librdkafka properties passed through as written (`consumer:` or
//! `producer:`; see librdkafka's CONFIGURATION.md). Sluice sets a few defaults the map may
//! override (`acks=all`, idempotence, a 6 s session timeout) and manages a few properties
//! itself, which the map may not change: offsets are committed by Sluice after the events are
//! safe, so `enable.auto.commit` is always false.
//!
//! The bundled librdkafka is built with OpenSSL and zlib: `compression.type` may be `gzip`,
//! `snappy` or `lz4` (not `zstd`), and SASL may be `PLAIN` or `SCRAM-SHA-256/512` (not
//! `GSSAPI`).

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use rdkafka::{ClientConfig, config::RDKafkaLogLevel, error::KafkaError};
use serde::Deserialize;

use super::{Secret, units::HumanDuration};

/// librdkafka properties, passed through as written (`"session.timeout.ms": 6000`; numbers and
/// booleans are passed as their text). `Debug` hides the values of secret-looking properties.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct KafkaOptions(pub BTreeMap<String, String>);

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown: &dyn fmt::Debug = if is_sensitive(k) { &"***" } else { v };
                (k, shown)
            }))
            .finish()
    }
}

/// Properties whose values must never be shown (passwords, keys, tokens, JAAS strings).
fn is_sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "key",
        "pem",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaProtocol {
    fn as_str(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

/// TLS and SASL settings. Each may instead be written in the pass-through map under its
/// librdkafka name, but not both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: Option<KafkaProtocol>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// Usually written `"${KAFKA_PASSWORD}"` so the file holds no secret.
    pub sasl_password: Option<Secret>,
    /// PEM file of the CAs to trust; the system's trust store when absent.
    pub ssl_ca_location: Option<String>,
    /// Client certificate (PEM) for mutual TLS.
    pub ssl_certificate_location: Option<String>,
    /// Client private key (PEM) for mutual TLS.
    pub ssl_key_location: Option<String>,
    pub ssl_key_password: Option<Secret>,
    /// Check the broker's host name against its certificate (default true).
    pub ssl_verify_hostname: Option<bool>,
}

impl KafkaSecurity {
    /// The librdkafka properties these settings stand for.
    fn properties(&self) -> Result<Vec<(&'static str, String)>, String> {
        let mut out = Vec::new();
        if let Some(p) = self.protocol {
            out.push(("security.protocol", p.as_str().to_owned()));
        }
        let mut text = |name: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                out.push((name, v.clone()));
            }
        };
        text("sasl.mechanism", &self.sasl_mechanism);
        text("sasl.username", &self.sasl_username);
        text("ssl.ca.location", &self.ssl_ca_location);
        text("ssl.certificate.location", &self.ssl_certificate_location);
        text("ssl.key.location", &self.ssl_key_location);
        if let Some(s) = &self.sasl_password {
            out.push(("sasl.password", s.expose().to_owned()));
        }
        if let Some(s) = &self.ssl_key_password {
            out.push(("ssl.key.password", s.expose().to_owned()));
        }
        if let Some(verify) = self.ssl_verify_hostname {
            let v = if verify { "https" } else { "none" };
            out.push(("ssl.endpoint.identification.algorithm", v.to_owned()));
        }
        for (name, value) in &out {
            if name.ends_with(".location") && !Path::new(value).exists() {
                return Err(format!(
                    "`security`: file {value:?} ({name}) does not exist"
                ));
            }
        }
        Ok(out)
    }
}

/// Where a new consumer group starts reading (librdkafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaStartAt {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// Only records written after the group first joins.
    Latest,
}

impl KafkaStartAt {
    /// The `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaStartAt::Earliest => "earliest",
            KafkaStartAt::Latest => "latest",
        }
    }
}

/// The `kafka` source: consumes topics as a member of a consumer group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port...]` of one or more brokers.
    pub bootstrap_servers: String,
    /// Consumer group; agents with the same group share the topics' partitions.
    pub group_id: String,
    /// Topics to consume (or `topic_pattern`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regex; every topic whose whole name matches is consumed, including topics created
    /// later.
    pub topic_pattern: Option<String>,
    /// Where a group without committed offsets starts: `earliest` (default) or `latest`.
    pub start_at: Option<KafkaStartAt>,
    /// Hand a partial batch to the channels after this long (from its first record).
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka consumer properties.
    #[serde(default)]
    pub consumer: KafkaOptions,
}

fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

/// The `kafka` sink: produces every event as one record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port...]` of one or more brokers.
    pub bootstrap_servers: String,
    /// Topic template, e.g. `logs-%{app}` (`%{header}` and strftime escapes).
    pub topic: String,
    /// Record key template (for partitioning); an empty rendering means no key.
    pub key: Option<String>,
    /// Copy event headers into Kafka headers (default true).
    #[serde(default = "yes")]
    pub headers: bool,
    /// Event headers not copied: exact names, or prefixes written `name*` (e.g. `kafka.*`).
    #[serde(default)]
    pub exclude_headers: Vec<String>,
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka producer properties (`compression.type`, `linger.ms`, ...).
    #[serde(default)]
    pub producer: KafkaOptions,
}

fn yes() -> bool {
    true
}

/// The `kafka` channel: a topic as a durable, shared buffer between sources and sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaChannelConfig {
    /// `host:port[,host:port...]` of one or more brokers.
    pub bootstrap_servers: String,
    /// The topic holding the channel's events (it must exist, or the broker must create
    /// topics on first use).
    pub topic: String,
    /// Consumer group of the takers; default `sluice-channel-<topic>`. Agents sharing a group
    /// share the work; each group sees every event.
    pub group_id: Option<String>,
    /// Record key template (for partitioning); no key when absent or rendered empty.
    pub key: Option<String>,
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka consumer properties.
    #[serde(default)]
    pub consumer: KafkaOptions,
    /// librdkafka producer properties.
    #[serde(default)]
    pub producer: KafkaOptions,
}

impl KafkaChannelConfig {
    /// The consumer group, defaulted from the topic.
    pub fn group(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("sluice-channel-{}", self.topic))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
