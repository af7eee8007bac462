//! Settings of the `sqs` source: one SQS queue (standard or FIFO) read with long polling.
//!
//! The connection settings (`region`, `endpoint`, credentials) are the common AWS keys of
//! [`AwsConnection`], read by the pipeline reader beside these. Checks that need more than
//! types (exactly one of `queue_url` and `queue_name`, whole seconds within SQS's limits) are
//! made by the source's constructor, each error naming its field.

use std::time::Duration;

use serde::Deserialize;

use sluice_core::config::units::HumanDuration;

use crate::connectors::aws::AwsConnection;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSourceConfig {
    /// Region, endpoint and credentials (the common AWS keys, set by the pipeline reader).
    #[serde(skip)]
    pub aws: AwsConnection,
    /// The queue's URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
    pub queue_url: Option<String>,
    /// The queue's name, resolved to its URL with `GetQueueUrl` when the source starts
    /// (another account's queue: give `queue_url` instead). Exactly one of the two.
    pub queue_name: Option<String>,
    /// How long one receive waits for messages (long polling): `0s` to `20s`, whole seconds.
    #[serde(default = "default_wait_time")]
    pub wait_time: HumanDuration,
    /// How long received messages stay hidden from other consumers: `1s` to `12h`, whole
    /// seconds. It is renewed every half of it while a batch is still being processed, so it
    /// bounds how soon messages of a crashed agent come back, not how long a batch may take.
    #[serde(default = "default_visibility_timeout")]
    pub visibility_timeout: HumanDuration,
    /// Once a batch has its first messages, more are received (without waiting) until it has
    /// `batch_size` of them, a receive comes back empty, or this long has passed.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    /// Receives in flight at once while a batch is filled (standard queues; FIFO queues are
    /// always read one receive at a time so each group's order is kept), and deletes in
    /// flight at once after a commit.
    #[serde(default = "default_receivers")]
    pub receivers: usize,
    /// Message attributes that become headers: names, `prefix.*`, or `All` (default). `[]`:
    /// none.
    #[serde(default = "default_attributes")]
    pub attributes: Vec<String>,
    /// How long one request may take (beyond `wait_time` for receives).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_wait_time() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}
fn default_visibility_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_receivers() -> usize {
    4
}
fn default_attributes() -> Vec<String> {
    vec!["All".into()]
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
