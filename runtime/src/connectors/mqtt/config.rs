//! Settings of the `mqtt` source and sink, and the broker address they share.
//!
//! `url` is `mqtt://[user[:password]@]host[:port]` (port 1883 by default); it may carry a
//! password, so it is a [`Secret`] and only `host:port` is logged.

use std::time::Duration;

use rumqttc::{MqttOptions, QoS};
use serde::Deserialize;

use sluice_core::config::{Secret, units::HumanDuration};

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

pub(crate) fn qos(n: u8) -> Result<QoS, String> {
    match n {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(format!("`qos`: {n} is not an MQTT QoS (0, 1 or 2)")),
    }
}

/// A broker address read from `url`.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker, String> {
        let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
            if url.starts_with("mqtts://") {
                "`url`: mqtts:// (TLS) is not supported yet; use mqtt://".to_owned()
            } else {
                "`url`: expected mqtt://host[:port]".to_owned()
            }
        })?;
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
                None if rest.is_empty() => (h, 1883),
                None => return Err(format!("`url`: unexpected {rest:?} after the host")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, port(p)?),
                None => (hostport, 1883),
            }
        };
        if host.is_empty() {
            return Err("`url`: no host".into());
        }
        Ok(Broker {
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// `host:port`, for logs.
    pub fn peer(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn options(&self, client_id: &str, keep_alive: Duration, max_packet: usize) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(keep_alive.max(Duration::from_secs(5)))
            .set_max_packet_size(max_packet, max_packet);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        o
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
        assert!(Broker::parse("mqtts://h").unwrap_err().contains("TLS"));
        assert!(Broker::parse("tcp://h").is_err());
        assert!(Broker::parse("mqtt://h:x").is_err());
        assert!(qos(3).is_err());
    }
}
