//! Settings of the `redis` sink (SET, HSET, LPUSH, RPUSH, XADD or PUBLISH per event, one
//! pipeline per batch) and the `redis` source (a Redis Stream read through a consumer group).
//!
//! The server is named by `url` (`redis://[user:password@]host:port/db`), kept in a
//! [`Secret`] because it may carry a password: `Debug` prints `***` and the connectors log
//! only `host:port`. Write it as `"${REDIS_URL}"` to keep the password out of the file.
//! Checks that need more than types (templates, which options go with which command) are made
//! by the connectors' constructors, each error naming its field.

use std::time::Duration;

use serde::Deserialize;

use sluice_core::config::{Secret, units::HumanDuration};

// ---------------------------------------------------------------- sink

/// The command each event becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisCommand {
    /// `SET key body` (with `PX ttl` when `ttl` is set).
    Set,
    /// `HSET key field value ...`, fields from the JSON body or the headers (see `fields`).
    Hset,
    /// `LPUSH key body`.
    Lpush,
    /// `RPUSH key body`: events of a batch keep their order in the list.
    Rpush,
    /// `XADD key [MAXLEN ~ n] * header value ... body_field body`.
    Xadd,
    /// `PUBLISH key body`: `key` is the channel.
    Publish,
}

impl RedisCommand {
    /// The command's name as written in the pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            RedisCommand::Set => "set",
            RedisCommand::Hset => "hset",
            RedisCommand::Lpush => "lpush",
            RedisCommand::Rpush => "rpush",
            RedisCommand::Xadd => "xadd",
            RedisCommand::Publish => "publish",
        }
    }
}

/// Where the fields of an `hset` come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashFields {
    /// The body is a JSON object; each top-level member is a field. String values are stored
    /// as they are, other values as their JSON text. A body that is not a JSON object (or an
    /// empty one) is poison: it goes to the DLQ.
    #[default]
    Json,
    /// The event headers are the fields; `body_field` also stores the body.
    Headers,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://[user:password@]host:port/db` (a secret: never logged).
    pub url: Secret,
    /// `set`, `hset`, `lpush`, `rpush`, `xadd` or `publish`.
    pub command: RedisCommand,
    /// Key template (`%{header}`, strftime escapes; `%%` for `%`); the channel for `publish`.
    pub key: String,
    /// Expiry of the written key: `SET ... PX`, or `PEXPIRE` after HSET, LPUSH, RPUSH and XADD
    /// (each write renews it). Not for `publish`.
    pub ttl: Option<HumanDuration>,
    /// `hset` only: `json` (default) or `headers`.
    pub fields: Option<HashFields>,
    /// `xadd`: the field holding the body (default `body`; a header of that name is left
    /// out). `hset` with `fields: headers`: also store the body under this field.
    pub body_field: Option<String>,
    /// `set` only: `SET ... NX`, so an existing key keeps its value and the event still
    /// counts as delivered. With a key from the event id (`key: 'ev:%{sluice.id}'`) a replay
    /// writes nothing twice and the first copy stays.
    #[serde(default)]
    pub only_new: bool,
    /// `xadd` only: trim the stream to about this many entries (`MAXLEN ~`).
    pub maxlen: Option<usize>,
    /// Wrap each batch in MULTI/EXEC: applied together, unseen by other clients halfway.
    /// Redis does not roll back a command failing at run time (e.g. WRONGTYPE): that event
    /// still goes to the DLQ while the rest are applied.
    #[serde(default)]
    pub transaction: bool,
    /// Connect timeout, and how long one batch's pipeline may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

// ---------------------------------------------------------------- source

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSourceConfig {
    /// `redis://[user:password@]host:port/db` (a secret: never logged).
    pub url: Secret,
    /// The stream key (one stream per source).
    pub stream: String,
    /// Consumer group; members of one group share the stream's entries.
    pub group: String,
    /// This reader's name in the group; default `<hostname>-<source name>`, stable across
    /// restarts so a restarted agent finds its own unacknowledged entries at once. Give each
    /// agent reading the same group from one host its own name.
    pub consumer: Option<String>,
    /// Where a group created by this source starts: `0` (default: the whole stream), `$`
    /// (only entries added from now on) or an entry id.
    #[serde(default = "default_start_id")]
    pub start_id: String,
    /// Create the group (and the stream) when missing: `XGROUP CREATE ... MKSTREAM`.
    #[serde(default = "yes")]
    pub create_group: bool,
    /// How long one read waits for new entries (`XREADGROUP BLOCK`).
    #[serde(default = "default_block")]
    pub block: HumanDuration,
    /// Entries pending this long on another consumer (one that died) are claimed with
    /// `XAUTOCLAIM` and processed here; checked every half of it. `0s` turns claiming off.
    #[serde(default = "default_claim_idle")]
    pub claim_idle: HumanDuration,
    /// The entry field holding the event body; the other fields become headers. An entry
    /// without it gets all its fields, as a JSON object, for a body.
    #[serde(default = "default_body_field")]
    pub body_field: String,
    /// Connect timeout, and how long a command may take (beyond `block` for reads).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_start_id() -> String {
    "0".into()
}
fn yes() -> bool {
    true
}
fn default_block() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_claim_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_body_field() -> String {
    "body".into()
}
