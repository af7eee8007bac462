//! Settings of the `nats` source and sink. `url` is `nats://[user:password@]host[:port]`
//! (several servers comma-separated); it may carry a password, so it is a [`Secret`] and only
//! the servers' `host:port` are logged.

use std::time::Duration;

use serde::Deserialize;

use sluice_core::config::{Secret, units::HumanDuration};

/// `type: nats` sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    pub url: Secret,
    /// The JetStream stream to read.
    pub stream: String,
    /// Only messages on this subject (wildcards allowed); all of the stream's when absent.
    pub subject: Option<String>,
    /// The durable consumer's name: it keeps the position while the agent is down. Default
    /// `sluice-<source>`.
    pub durable: Option<String>,
    /// Create the stream (capturing `subject`) when it does not exist.
    #[serde(default)]
    pub create_stream: bool,
    /// The header that gets the message's subject (`~` for none).
    #[serde(default = "default_subject_header")]
    pub subject_header: Option<String>,
    /// Hand a partial batch to the channels after this long.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    /// How long the server waits for an acknowledgement before sending a message again; a
    /// batch held up longer by full channels is delivered again (duplicates, not loss).
    #[serde(default = "default_ack_wait")]
    pub ack_wait: HumanDuration,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// `type: nats` sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    pub url: Secret,
    /// The subject to publish to: a template over headers (`orders.%{region}`).
    pub subject: String,
    /// Check that a stream captures the subject before the first batch (its name).
    pub stream: Option<String>,
    /// How long a batch may wait for the stream's acknowledgements.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_subject_header() -> Option<String> {
    Some("nats.subject".into())
}
fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_ack_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// The servers of a `nats://` url as `host:port`, for logs (no credentials).
pub(crate) fn servers(url: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for part in url.split(',') {
        let part = part.trim();
        let rest = part
            .strip_prefix("nats://")
            .or_else(|| part.strip_prefix("tls://"))
            .ok_or_else(|| {
                format!(
                    "`url`: expected nats://host[:port], got a {:?} scheme",
                    part.split("://").next().unwrap_or("")
                )
            })?;
        let hostport = rest
            .rsplit_once('@')
            .map_or(rest, |(_, h)| h)
            .trim_end_matches('/');
        if hostport.is_empty() {
            return Err("`url`: no host".into());
        }
        out.push(if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:4222")
        });
    }
    Ok(out.join(","))
}

/// Connects with a bounded wait; the error says where to.
pub(crate) async fn connect(
    url: &str,
    timeout: Duration,
    name: &str,
) -> Result<async_nats::Client, String> {
    let peer = servers(url)?;
    let options = async_nats::ConnectOptions::new()
        .name(format!("sluice {name}"))
        .connection_timeout(timeout);
    match tokio::time::timeout(timeout, options.connect(url)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to NATS at {peer}: {e}")),
        Err(_) => Err(format!(
            "cannot connect to NATS at {peer}: no answer within {timeout:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_for_logs_never_show_credentials() {
        assert_eq!(
            servers("nats://u:secret@h1:4223,nats://h2").unwrap(),
            "h1:4223,h2:4222"
        );
        assert!(servers("http://h").is_err());
    }
}
