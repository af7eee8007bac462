//! Connection settings shared by the AWS connectors (`s3`, `sqs`, `dynamodb`, `kinesis`).
//!
//! They are written at the top level of each connector's block, beside its own settings
//! (`region:`, `endpoint:`, ...). The pipeline reader takes these keys out before reading the
//! connector's own struct, so they are declared once here instead of in every connector.
//! Credentials come from the standard AWS chain (environment, shared profile, web identity,
//! container and instance roles) unless a static key pair is given; secrets are never logged.

use serde::Deserialize;

use sluice_core::config::Secret;

/// The keys read into [`AwsConnection`]; every AWS connector accepts them.
pub const AWS_KEYS: &[&str] = &[
    "region",
    "endpoint",
    "profile",
    "access_key_id",
    "secret_access_key",
    "force_path_style",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConnection {
    /// AWS region; default: the chain's (`AWS_REGION`, the profile), else `us-east-1`.
    pub region: Option<String>,
    /// Endpoint override (`http://127.0.0.1:9000` for MinIO, moto or LocalStack).
    pub endpoint: Option<String>,
    /// Named profile from `~/.aws/config` and `~/.aws/credentials`.
    pub profile: Option<String>,
    /// Static credentials, e.g. `"${S3_KEY_ID}"`; both or neither. Without them the standard
    /// chain is used.
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// S3 only: `bucket` in the path (`endpoint/bucket/key`) instead of the host name, as most
    /// S3-compatible stores need.
    #[serde(default)]
    pub force_path_style: bool,
}

impl AwsConnection {
    /// Checks that need more than types; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => return Err("access_key_id is set without secret_access_key".into()),
            (None, Some(_)) => return Err("secret_access_key is set without access_key_id".into()),
            _ => {}
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!("endpoint: {e:?} is not an http:// or https:// URL"));
            }
        }
        Ok(())
    }
}
