//! Settings of the `fcm` sink.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use sluice_core::config::units::HumanDuration;

use crate::connectors::http::config::TlsClientConfig;

/// `type: fcm` sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmSinkConfig {
    /// The service account's JSON key file (relative to the pipeline file).
    pub credentials_file: Option<PathBuf>,
    /// Or the environment variable holding that JSON.
    pub credentials_env: Option<String>,
    /// The Firebase project; default: the key's `project_id`.
    pub project_id: Option<String>,
    /// Who gets the message, a template over headers: one of a device registration `token`,
    /// a `topic`, or a topic `condition`.
    pub token: Option<String>,
    pub topic: Option<String>,
    pub condition: Option<String>,
    /// The FCM API's base URL.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The OAuth2 token endpoint; default: the key's `token_uri`.
    pub token_url: Option<String>,
    /// Messages in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// Ask FCM to check messages without sending them.
    #[serde(default)]
    pub validate_only: bool,
}

fn default_endpoint() -> String {
    "https://fcm.googleapis.com".into()
}
fn default_concurrency() -> usize {
    16
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
