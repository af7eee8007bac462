//! Settings of the `kafka` source, sink and channel (how they become librdkafka client
//! configurations is in [`super::client`]).
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

use serde::Deserialize;
use sluice_core::config::{Secret, units::HumanDuration};

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
pub(super) fn is_sensitive(key: &str) -> bool {
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
    pub(super) fn properties(&self) -> Result<Vec<(&'static str, String)>, String> {
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
    /// With `delivery: exactly_once`: the producer's `transactional.id`, which must stay the
    /// same across restarts of this sink and differ from every other producer's (default
    /// `sluice-<sink name>`; set it when several agents run the same pipeline).
    pub transactional_id: Option<String>,
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
