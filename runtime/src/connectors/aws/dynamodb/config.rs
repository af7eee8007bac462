//! Settings of the `dynamodb` sink: one item per event, written with `BatchWriteItem`.
//!
//! The connection settings (`region`, `endpoint`, credentials) are the common AWS keys of
//! [`AwsConnection`], read by the pipeline reader beside these. Checks that need more than
//! types are made by the sink's constructor, each error naming its field.

use std::{fmt, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};

use sluice_core::{config::units::HumanDuration, event::codec::CodecRef};

use crate::connectors::aws::AwsConnection;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoSinkConfig {
    /// Region, endpoint and credentials (the common AWS keys, set by the pipeline reader).
    #[serde(skip)]
    pub aws: AwsConnection,
    /// The table's name (or ARN).
    pub table: String,
    /// The table's key attributes: the partition key, then the sort key if it has one.
    /// Default: read once from the table with `DescribeTable` (give it when the agent's
    /// credentials may not describe the table).
    pub key: Option<Vec<String>>,
    /// Headers stored as string attributes: a list of header names (the attribute has the
    /// header's name) or a map `header: attribute`. A header the event lacks is left out; a
    /// header attribute replaces a body member of the same name.
    #[serde(default)]
    pub headers: HeaderAttributes,
    /// How an event becomes the item's JSON: absent (or `lines`): the body is the item;
    /// `ndjson`: the envelope `{"headers": {..}, "body": ".."}`; a `serde` plugin's name: its
    /// encoding of the event, which must be one JSON object.
    pub format: Option<CodecRef>,
    /// `BatchWriteItem` requests (of up to 25 items) in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long one request may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// `(header, attribute)` pairs, in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderAttributes(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeaderAttributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderAttributes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of header names or a map `header: attribute`")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.push((name.clone(), name));
                }
                Ok(HeaderAttributes(out))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((header, attribute)) = map.next_entry::<String, String>()? {
                    out.push((header, attribute));
                }
                Ok(HeaderAttributes(out))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(HeaderAttributes::default())
            }
        }
        d.deserialize_any(V)
    }
}

fn default_concurrency() -> usize {
    4
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
