//! Settings of the `mqtt` source and sink, and the broker address they share.
//!
//! `url` is `mqtt://[user[:password]@]host[:port]` (port 1883 by default) or `mqtts://…`
//! (TLS, port 8883 by default); it may carry a password, so it is a [`Secret`] and only
//! `host:port` is logged.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use sluice_core::{
    config::{Secret, units::HumanDuration},
    tls::ClientTls,
};

/// `version:` the MQTT protocol version spoken: `3.1.1` (default) or `5`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Version {
    #[default]
    V3_1_1,
    V5,
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML reads `5` as a number and `3.1.1` as text; take both spellings of each.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            F(f64),
            S(String),
        }
        let v = match Raw::deserialize(d)? {
            Raw::N(5) => Some(Version::V5),
            Raw::N(4) => Some(Version::V3_1_1),
            Raw::F(5.0) => Some(Version::V5),
            Raw::S(s) => match s.as_str() {
                "5" | "5.0" | "v5" => Some(Version::V5),
                "3.1.1" | "4" | "v3.1.1" => Some(Version::V3_1_1),
                _ => None,
            },
            _ => None,
        };
        v.ok_or_else(|| serde::de::Error::custom("expected MQTT version `3.1.1` or `5`"))
    }
}

/// `type: mqtt` sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    pub url: Secret,
    /// Topic filters to subscribe to (`+` and `#` wildcards).
    pub topics: Vec<String>,
    /// The session's client id: it must stay the same across restarts for the broker to keep
    /// the session (and the messages sent while the agent was down). Default
    /// `sluice-<host>-<source>`.
    pub client_id: Option<String>,
    /// 0, 1 (default) or 2: the subscription's QoS. Only QoS 1 and 2 are acknowledged after
    /// the commit; QoS 0 messages are lost if a crash interrupts them.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The header that gets the message's topic (`~` for none).
    #[serde(default = "default_topic_header")]
    pub topic_header: Option<String>,
    /// Hand a partial batch to the channels after this long.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// Largest message accepted.
    #[serde(default = "default_max_packet")]
    pub max_packet_size: usize,
    /// `3.1.1` (default) or `5`.
    #[serde(default)]
    pub version: Version,
    /// MQTT 5: how long the broker keeps the session (and queues messages for it) after the
    /// agent disconnects. 3.1.1 sessions last until the broker drops them.
    #[serde(default = "default_session_expiry")]
    pub session_expiry: HumanDuration,
    /// MQTT 5: user properties become event headers.
    #[serde(default = "default_true")]
    pub copy_headers: bool,
    /// TLS settings for an `mqtts://` broker (`ca`, and `cert` + `key` for a client
    /// certificate). Without them the system's trusted roots check the broker.
    pub tls: Option<ClientTls>,
    /// How a payload becomes events: `lines` (default: the payload is the body), `ndjson`, or
    /// a `serde` plugin (Avro, Protobuf...); a payload it refuses is dead-lettered.
    #[serde(default)]
    pub codec: sluice_core::event::codec::CodecRef,
}

/// `type: mqtt` sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    pub url: Secret,
    /// The topic to publish to: a template over headers (`sensors/%{device}`).
    pub topic: String,
    pub client_id: Option<String>,
    /// 0, 1 (default: wait for each PUBACK) or 2.
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    /// How long a batch may wait for its acknowledgements.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    #[serde(default = "default_max_packet")]
    pub max_packet_size: usize,
    #[serde(default)]
    pub version: Version,
    /// MQTT 5: event headers (except `mqtt.*` ones) go out as user properties.
    #[serde(default = "default_true")]
    pub copy_headers: bool,
    pub tls: Option<ClientTls>,
}

fn default_true() -> bool {
    true
}
fn default_session_expiry() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}
fn default_qos() -> u8 {
    1
}
fn default_topic_header() -> Option<String> {
    Some("mqtt.topic".into())
}
fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_packet() -> usize {
    1 << 20
}

pub(crate) fn qos(n: u8) -> Result<u8, String> {
    match n {
        0..=2 => Ok(n),
        _ => Err(format!("`qos`: {n} is not an MQTT QoS (0, 1 or 2)")),
    }
}

/// A broker address read from `url`.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
    /// `mqtts://`.
    pub tls: bool,
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker, String> {
        let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => return Err("`url`: expected mqtt://host[:port] or mqtts://host[:port]".into()),
        };
        let default_port = if tls { 8883 } else { 1883 };
        let rest = rest.trim_end_matches('/');
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((cred, hp)) => {
                let (user, pass) = cred.split_once(':').unwrap_or((cred, ""));
                (Some((user.to_owned(), pass.to_owned())), hp)
            }
            None => (None, rest),
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("`url`: bad port {p:?}"))
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, rest) = v6
                .split_once(']')
                .ok_or_else(|| "`url`: `[` without `]`".to_owned())?;
            match rest.strip_prefix(':') {
                Some(p) => (h, port(p)?),
                None if rest.is_empty() => (h, default_port),
                None => return Err(format!("`url`: unexpected {rest:?} after the host")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, port(p)?),
                None => (hostport, default_port),
            }
        };
        if host.is_empty() {
            return Err("`url`: no host".into());
        }
        Ok(Broker {
            host: host.to_owned(),
            port,
            credentials,
            tls,
        })
    }

    /// `host:port`, for logs.
    pub fn peer(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// `sluice-<host>-<kind>-<component>`: stable across restarts of the same agent, and never
/// the same for a source and a sink (a sink's clean session would wipe a source's).
pub(crate) fn default_client_id(kind: &str, component: &str) -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let id: String = format!("sluice-{host}-{kind}-{component}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let b = Broker::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.credentials),
            ("127.0.0.1", 1884, None)
        );
        let b = Broker::parse("mqtt://u:p@broker").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("broker", 1883));
        assert_eq!(b.credentials, Some(("u".into(), "p".into())));
        let b = Broker::parse("mqtts://h").unwrap();
        assert_eq!((b.port, b.tls), (8883, true));
        assert!(!Broker::parse("mqtt://h").unwrap().tls);
        assert!(Broker::parse("tcp://h").is_err());
        assert!(Broker::parse("mqtt://h:x").is_err());
        assert!(qos(3).is_err());
    }

    #[test]
    fn versions() {
        let v = |y: &str| serde_json::from_str::<Version>(y);
        assert_eq!(v("5").unwrap(), Version::V5);
        assert_eq!(v("\"5\"").unwrap(), Version::V5);
        assert_eq!(v("\"3.1.1\"").unwrap(), Version::V3_1_1);
        assert!(v("3").is_err());
        assert!(v("\"6\"").is_err());
    }
}
