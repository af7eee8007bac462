//! Settings of the `kinesis` sink: each event one record of a Kinesis data stream, a batch
//! written with `PutRecords`.
//!
//! The connection settings (`region`, `endpoint`, credentials) are the common AWS keys of
//! [`AwsConnection`], read by the pipeline reader beside these. Checks that need more than
//! types (exactly one of `stream` and `stream_arn`, the template) are made by the sink's
//! constructor, each error naming its field.

use std::time::Duration;

use serde::Deserialize;

use sluice_core::config::units::HumanDuration;

use crate::connectors::aws::AwsConnection;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSinkConfig {
    /// Region, endpoint and credentials (the common AWS keys, set by the pipeline reader).
    #[serde(skip)]
    pub aws: AwsConnection,
    /// The stream's name.
    pub stream: Option<String>,
    /// The stream's ARN (e.g. another account's stream). Exactly one of the two.
    pub stream_arn: Option<String>,
    /// Partition key template (`%{header}`, strftime escapes; `%%` for `%`): records with the
    /// same key go to the same shard, in order. It must render to 1..=256 characters; an
    /// event for which it renders empty goes to the DLQ. Default: a random key per event,
    /// spreading records evenly over the shards.
    pub partition_key: Option<String>,
    /// How long one request may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
