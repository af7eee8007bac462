//! The `dynamodb` sink: each event becomes one item (a full put), a batch is written with
//! `BatchWriteItem`, 25 items a request, `concurrency` requests at once.
//!
//! The item is the event's JSON — the body, or with `format` the codec's encoding of the event
//! — which must be an object; each member becomes an attribute: strings `S`, numbers `N`
//! (their text; integers beyond 64 bits lose precision), booleans `BOOL`, `null` `NULL`,
//! arrays `L` and objects `M`, nested alike. Headers named in `headers` are added as `S`
//! attributes. An event whose JSON is not an object, or whose item lacks a key attribute or
//! has one that is not a string, number or binary, is poison (DLQ) and is never sent.
//!
//! Puts are idempotent, so retrying is always safe. Within a batch, events with the same key
//! are collapsed: only the last one is written (the table ends as if each had been written in
//! order), and the earlier ones share its fate — except that when the last one is poison the
//! earlier ones are retried, so the latest valid version is the one written. Items
//! `BatchWriteItem` leaves unprocessed (throughput exceeded) are sent again after a short
//! pause, up to three times within one delivery; those still left are retried by the runner.
//! A request the service refuses for its content (`ValidationException`: a key of the wrong
//! type, an item over 400 KB, ...) is written again item by item with `PutItem`, so the
//! poison items go to the DLQ with the service's message and the rest are written. Network
//! trouble, throttling, a missing table and credential errors make the events retriable.
//!
//! The key attribute names come from `key`, or are read once with `DescribeTable`.

use std::{collections::HashMap, fmt, fmt::Write as _, time::Duration};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, KeyType, PutRequest, WriteRequest},
};
use backon::{BackoffBuilder, ExponentialBuilder};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use sluice_core::{
    event::{
        Event,
        codec::{Codec, CodecName, CodecRef},
    },
    sink::{Batch, DeliveryError, Sink},
};

use super::config::DynamoSinkConfig;
use crate::connectors::aws::{self, AwsConnection, ErrorClass};

/// One item: attribute name → value.
pub type Item = HashMap<String, AttributeValue>;

/// Most items one `BatchWriteItem` may carry (a DynamoDB limit).
const PER_REQUEST: usize = 25;
/// Resends of unprocessed items within one delivery.
const UNPROCESSED_RETRIES: usize = 3;

/// Why an event's JSON cannot be an item.
pub(crate) const NOT_AN_OBJECT: &str = "body is not a JSON object";

pub struct DynamoSink {
    name: String,
    aws: AwsConnection,
    table: String,
    /// Key attribute names (partition key first), configured or read from the table.
    key: Option<Vec<String>>,
    /// `(header, attribute)` pairs.
    headers: Vec<(String, String)>,
    /// `None`: the body is the item's JSON.
    codec: Option<Box<dyn Codec>>,
    /// A `format` plugin the agent must hand over with [`DynamoSink::with_codec`].
    plugin: Option<String>,
    concurrency: usize,
    timeout: Duration,
    client: Option<Client>,
    /// Reused encoding buffer for `format`.
    scratch: Vec<u8>,
    /// Reused key signature buffer.
    sig: String,
}

/// One item to put, standing for `event` and the earlier events of the batch with its key.
#[derive(Debug)]
struct Write {
    event: usize,
    covers: Vec<usize>,
    /// Taken when sent.
    item: Option<Item>,
}

/// Planned writes (by index) that failed, and the first retriable error.
#[derive(Debug, Default)]
struct Verdicts {
    retry: Vec<usize>,
    refused: Vec<(usize, String)>,
    reason: Option<String>,
}

/// What became of the writes of one request (by index into the plan); the others were
/// written.
#[derive(Debug, Default)]
struct ChunkOutcome {
    retriable: Vec<usize>,
    /// Refused as a whole for their content: to be written one by one.
    one_by_one: Vec<usize>,
    error: Option<String>,
}

impl DynamoSink {
    /// Checks the settings; connects on the first delivery.
    pub fn new(name: &str, cfg: &DynamoSinkConfig) -> Result<Self, String> {
        cfg.aws.check()?;
        if cfg.table.is_empty() {
            return Err("`table` must not be empty".into());
        }
        if let Some(key) = &cfg.key {
            if key.is_empty() || key.len() > 2 {
                return Err(
                    "`key` names the partition key attribute, then the sort key's if the table has one"
                        .into(),
                );
            }
            if key.iter().any(String::is_empty) {
                return Err("`key`: an attribute name must not be empty".into());
            }
            if key.len() == 2 && key[0] == key[1] {
                return Err("`key`: the partition and sort key must differ".into());
            }
        }
        for (h, a) in &cfg.headers.0 {
            if h.is_empty() || a.is_empty() {
                return Err("`headers`: header and attribute names must not be empty".into());
            }
        }
        if cfg.concurrency == 0 {
            return Err("`concurrency` must be at least 1".into());
        }
        if cfg.timeout.0.is_zero() {
            return Err("`timeout` must be more than 0".into());
        }
        let (codec, plugin) = match &cfg.format {
            None | Some(CodecRef::Builtin(CodecName::Lines)) => (None, None),
            Some(CodecRef::Builtin(c)) => (Some(Box::new(*c) as Box<dyn Codec>), None),
            Some(CodecRef::Plugin(p)) => (None, Some(p.clone())),
        };
        Ok(DynamoSink {
            name: name.to_owned(),
            aws: cfg.aws.clone(),
            table: cfg.table.clone(),
            key: cfg.key.clone(),
            headers: cfg.headers.0.clone(),
            codec,
            plugin,
            concurrency: cfg.concurrency,
            timeout: cfg.timeout.0,
            client: None,
            scratch: Vec::new(),
            sig: String::new(),
        })
    }

    /// Uses `codec` (the `format` plugin's instance) to turn events into items' JSON.
    pub fn with_codec(mut self, codec: Box<dyn Codec>) -> Self {
        self.codec = Some(codec);
        self.plugin = None;
        self
    }

    /// The client in hand, or a new one (no request is made).
    async fn client(&mut self) -> Client {
        if let Some(c) = &self.client {
            return c.clone();
        }
        let sdk = aws::sdk_config(&self.aws, self.timeout).await;
        let c = Client::new(&sdk);
        tracing::info!(sink = %self.name, table = %self.table, region = %aws::region_name(&sdk), "dynamodb client ready");
        self.client = Some(c.clone());
        c
    }

    /// The key attribute names, read from the table the first time unless configured.
    async fn key_names(&mut self, client: &Client) -> Result<Vec<String>, DeliveryError> {
        if let Some(k) = &self.key {
            return Ok(k.clone());
        }
        let out = client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| {
                DeliveryError::retriable(format!(
                    "DescribeTable (to learn the key; or set `key`): {}",
                    aws::describe(&e)
                ))
            })?;
        let mut schema = out
            .table()
            .map(|t| t.key_schema().to_vec())
            .unwrap_or_default();
        // The partition key first.
        schema.sort_by_key(|k| *k.key_type() != KeyType::Hash);
        let names: Vec<String> = schema
            .iter()
            .map(|k| k.attribute_name().to_owned())
            .collect();
        if names.is_empty() {
            return Err(DeliveryError::retriable(
                "DescribeTable returned no key schema (set `key`)",
            ));
        }
        tracing::info!(sink = %self.name, table = %self.table, key = ?names, "read the table's key");
        self.key = Some(names.clone());
        Ok(names)
    }

    /// The item of one event, or why there is none.
    fn item(&mut self, e: &Event) -> Result<Item, String> {
        let (json, what): (&[u8], &str) = match &mut self.codec {
            None => (&e.body[..], "body"),
            Some(c) => {
                self.scratch.clear();
                c.encode(std::slice::from_ref(e), &mut self.scratch)?;
                (&self.scratch[..], "encoded event")
            }
        };
        let mut item = parse_item(json, what)?;
        for (header, attribute) in &self.headers {
            if let Some(v) = e.headers.get(header) {
                item.insert(attribute.clone(), AttributeValue::S(v.to_owned()));
            }
        }
        Ok(item)
    }

    /// The writes of a batch (events with the same key collapsed into the last one) and the
    /// events that cannot be written.
    fn plan(
        &mut self,
        batch: &[Event],
        key: &[String],
        rejected: &mut Vec<(usize, String)>,
    ) -> Vec<Write> {
        let mut writes: Vec<Write> = Vec::with_capacity(batch.len());
        let mut by_key: HashMap<String, usize> = HashMap::with_capacity(batch.len());
        for (i, e) in batch.iter().enumerate() {
            let item = match self.item(e) {
                Ok(item) => item,
                Err(why) => {
                    rejected.push((i, why));
                    continue;
                }
            };
            if let Err(why) = key_signature(&item, key, &mut self.sig) {
                rejected.push((i, why));
                continue;
            }
            match by_key.get(self.sig.as_str()).copied() {
                Some(w) => {
                    let earlier = &mut writes[w];
                    earlier.covers.push(earlier.event);
                    earlier.event = i;
                    earlier.item = Some(item);
                }
                None => {
                    by_key.insert(self.sig.clone(), writes.len());
                    writes.push(Write {
                        event: i,
                        covers: Vec::new(),
                        item: Some(item),
                    });
                }
            }
        }
        writes
    }

    /// Writes the given planned items one by one with `PutItem`, noting in `v` those that
    /// failed.
    async fn put_one_by_one(
        &mut self,
        client: &Client,
        batch: &[Event],
        writes: &[Write],
        which: &[usize],
        v: &mut Verdicts,
    ) {
        for &w in which {
            // The items went into the refused request: made again from the event.
            let item = match self.item(&batch[writes[w].event]) {
                Ok(item) => item,
                Err(why) => {
                    v.refused.push((w, why));
                    continue;
                }
            };
            let put = client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await;
            if let Err(e) = put {
                let why = aws::describe(&e);
                match aws::classify(&e) {
                    ErrorClass::Permanent => v.refused.push((w, why)),
                    ErrorClass::Retriable => {
                        v.retry.push(w);
                        v.reason.get_or_insert(why);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Sink for DynamoSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if let Some(p) = &self.plugin {
            return Err(DeliveryError::retriable(format!(
                "the `format` plugin `{p}` was not handed to the sink"
            )));
        }
        let client = self.client().await;
        let key = self.key_names(&client).await?;
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut writes = self.plan(batch, &key, &mut rejected);

        let mut chunks: Vec<Vec<(usize, Item)>> =
            Vec::with_capacity(writes.len().div_ceil(PER_REQUEST));
        for (w, write) in writes.iter_mut().enumerate() {
            if let Some(item) = write.item.take() {
                if chunks.last().is_none_or(|c| c.len() == PER_REQUEST) {
                    chunks.push(Vec::with_capacity(PER_REQUEST));
                }
                if let Some(c) = chunks.last_mut() {
                    c.push((w, item));
                }
            }
        }
        let outcomes: Vec<ChunkOutcome> = {
            let (client, table, key) = (&client, self.table.as_str(), key.as_slice());
            futures_util::stream::iter(chunks)
                .map(move |chunk| write_chunk(client, table, key, chunk))
                .buffer_unordered(self.concurrency)
                .collect()
                .await
        };

        let mut v = Verdicts::default();
        let mut one_by_one: Vec<usize> = Vec::new();
        for o in outcomes {
            if !o.retriable.is_empty() && v.reason.is_none() {
                v.reason = o.error.clone();
            }
            v.retry.extend(o.retriable);
            if !o.one_by_one.is_empty() {
                tracing::info!(sink = %self.name, items = o.one_by_one.len(), error = %o.error.unwrap_or_default(), "a request was refused; writing its items one by one");
                one_by_one.extend(o.one_by_one);
            }
        }
        if !one_by_one.is_empty() {
            one_by_one.sort_unstable();
            self.put_one_by_one(&client, batch, &writes, &one_by_one, &mut v)
                .await;
        }

        let mut retriable: Vec<usize> = Vec::new();
        for w in v.retry {
            retriable.push(writes[w].event);
            retriable.extend_from_slice(&writes[w].covers);
        }
        for (w, why) in v.refused {
            rejected.push((writes[w].event, why));
            // The earlier versions of a refused item were never written: retried, the last
            // valid one wins.
            retriable.extend_from_slice(&writes[w].covers);
        }
        DeliveryError::outcome(batch.len(), rejected, retriable, v.reason)
    }
}

/// One `BatchWriteItem` of up to 25 items (plan index, item), with unprocessed items sent
/// again a few times.
async fn write_chunk(
    client: &Client,
    table: &str,
    key: &[String],
    mut pending: Vec<(usize, Item)>,
) -> ChunkOutcome {
    let mut pauses = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .with_max_times(UNPROCESSED_RETRIES)
        .build();
    let mut sig = String::new();
    loop {
        // Key signatures of this round's items, to match unprocessed items back.
        let mut sent: Vec<(usize, String)> = Vec::with_capacity(pending.len());
        let mut requests = Vec::with_capacity(pending.len());
        for (w, item) in pending.drain(..) {
            let _ = key_signature(&item, key, &mut sig);
            sent.push((w, sig.clone()));
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .expect("the item is set");
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        let all = |sent: &[(usize, String)]| sent.iter().map(|(w, _)| *w).collect::<Vec<_>>();
        let out = match client
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let error = Some(aws::describe(&e));
                return match aws::classify(&e) {
                    ErrorClass::Retriable => ChunkOutcome {
                        retriable: all(&sent),
                        error,
                        ..ChunkOutcome::default()
                    },
                    ErrorClass::Permanent => ChunkOutcome {
                        one_by_one: all(&sent),
                        error,
                        ..ChunkOutcome::default()
                    },
                };
            }
        };
        let unprocessed = out
            .unprocessed_items
            .unwrap_or_default()
            .into_values()
            .flatten();
        let mut unmatched = false;
        for request in unprocessed {
            let Some(item) = request.put_request.map(|p| p.item) else {
                continue;
            };
            let _ = key_signature(&item, key, &mut sig);
            match sent.iter().find(|(_, s)| *s == sig) {
                Some((w, _)) => pending.push((*w, item)),
                None => unmatched = true,
            }
        }
        if unmatched {
            // Cannot tell which items are left: retry them all (puts are idempotent).
            return ChunkOutcome {
                retriable: all(&sent),
                error: Some("unprocessed items that match no request".into()),
                ..ChunkOutcome::default()
            };
        }
        if pending.is_empty() {
            return ChunkOutcome::default();
        }
        match pauses.next() {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                return ChunkOutcome {
                    error: Some(format!(
                        "{} items left unprocessed (throughput exceeded)",
                        pending.len()
                    )),
                    retriable: pending.into_iter().map(|(w, _)| w).collect(),
                    ..ChunkOutcome::default()
                };
            }
        }
    }
}

/// Writes the item's key into `out` (each part type-tagged, and length-prefixed or ended by
/// `;`, so distinct keys never look alike; numbers canonical, as DynamoDB compares them), or
/// says why the item has no usable key.
fn key_signature(item: &Item, key: &[String], out: &mut String) -> Result<(), String> {
    out.clear();
    for name in key {
        match item.get(name) {
            None => return Err(format!("the item has no key attribute `{name}`")),
            Some(AttributeValue::S(s)) => {
                let _ = write!(out, "S{}:{s}", s.len());
            }
            Some(AttributeValue::N(n)) => {
                out.push('N');
                canonical_number(n, out);
                out.push(';');
            }
            Some(AttributeValue::B(b)) => {
                let bytes: &[u8] = b.as_ref();
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                let _ = write!(out, "B{}:{b64}", b64.len());
            }
            Some(_) => {
                return Err(format!(
                    "key attribute `{name}` must be a string, number or binary"
                ));
            }
        }
    }
    Ok(())
}

/// Writes a number so that equal numbers read alike, as DynamoDB compares keys (`10`, `1e1`,
/// `10.0` and `010` are one key): the significant digits, then `e` and the exponent, with no
/// leading or trailing zeros (`1e1`); zero is `0`. Text that is not a number is written as it
/// is (DynamoDB refuses it anyway). Only digits, `-` and `e` are written.
fn canonical_number(n: &str, out: &mut String) {
    let (neg, unsigned) = match n.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, n.strip_prefix('+').unwrap_or(n)),
    };
    let (mantissa, exp) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], unsigned[i + 1..].parse::<i64>().ok()),
        None => (unsigned, Some(0)),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = || int.bytes().chain(frac.bytes());
    let (Some(exp), true) = (
        exp,
        !mantissa.is_empty() && digits().all(|b| b.is_ascii_digit()),
    ) else {
        out.push_str(n);
        return;
    };
    let total = int.len() + frac.len();
    let Some(first) = digits().position(|b| b != b'0') else {
        out.push('0');
        return;
    };
    let last = total - 1 - digits().rev().position(|b| b != b'0').unwrap_or(0);
    if neg {
        out.push('-');
    }
    out.extend(digits().skip(first).take(last + 1 - first).map(char::from));
    // The value is digits[first..=last] × 10^(exp - frac.len() + trailing zeros).
    let scale = exp - frac.len() as i64 + (total - 1 - last) as i64;
    let _ = write!(out, "e{scale}");
}

/// Parses an item's JSON (`what` names it in errors): a JSON object whose members become
/// attributes.
pub(crate) fn parse_item(json: &[u8], what: &str) -> Result<Item, String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = ItemSeed
        .deserialize(&mut de)
        .and_then(|item| de.end().map(|()| item));
    parsed.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            if what == "body" {
                NOT_AN_OBJECT.to_owned()
            } else {
                format!("{what} is not a JSON object")
            }
        }
        _ => format!("{what} is not valid JSON: {e}"),
    })
}

/// Reads a top-level JSON object as an item.
struct ItemSeed;

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Item;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = Item;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item, A::Error> {
                read_map(map)
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

/// One JSON value as an attribute value.
struct Attr(AttributeValue);

impl<'de> Deserialize<'de> for Attr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AttrVisitor).map(Attr)
    }
}

struct AttrVisitor;

impl<'de> Visitor<'de> for AttrVisitor {
    type Value = AttributeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<AttributeValue, E> {
        Ok(AttributeValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<AttributeValue, E> {
        Ok(AttributeValue::N(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<AttributeValue, E> {
        Ok(AttributeValue::N(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<AttributeValue, E> {
        // JSON numbers are finite; serde_json's text is the shortest that reads back.
        serde_json::Number::from_f64(v)
            .map(|n| AttributeValue::N(n.to_string()))
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<AttributeValue, E> {
        Ok(AttributeValue::S(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<AttributeValue, E> {
        Ok(AttributeValue::S(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<AttributeValue, E> {
        Ok(AttributeValue::Null(true))
    }

    fn visit_none<E: de::Error>(self) -> Result<AttributeValue, E> {
        Ok(AttributeValue::Null(true))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AttributeValue, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Attr(v)) = seq.next_element()? {
            list.push(v);
        }
        Ok(AttributeValue::L(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AttributeValue, A::Error> {
        read_map(map).map(AttributeValue::M)
    }
}

fn read_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Item, A::Error> {
    let mut item = HashMap::with_capacity(map.size_hint().unwrap_or(0));
    while let Some((k, Attr(v))) = map.next_entry::<String, Attr>()? {
        item.insert(k, v);
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::aws::dynamodb::config::HeaderAttributes;
    use sluice_core::config::units::HumanDuration;

    fn cfg() -> DynamoSinkConfig {
        DynamoSinkConfig {
            aws: AwsConnection::default(),
            table: "t".into(),
            key: Some(vec!["id".into()]),
            headers: HeaderAttributes::default(),
            format: None,
            concurrency: 4,
            timeout: HumanDuration(Duration::from_secs(10)),
        }
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }
    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.into())
    }

    #[test]
    fn json_types_map_to_attribute_types() {
        let item = parse_item(
            br#"{"id":"a","i":-3,"u":18446744073709551615,"f":1.5,"e":1e300,"t":true,
                 "z":null,"l":[1,"x",[],{}],"m":{"inner":{"deep":[false]}},"empty":""}"#,
            "body",
        )
        .unwrap();
        let want: Item = [
            ("id", s("a")),
            ("i", n("-3")),
            ("u", n("18446744073709551615")),
            ("f", n("1.5")),
            ("e", n("1e+300")),
            ("t", AttributeValue::Bool(true)),
            ("z", AttributeValue::Null(true)),
            (
                "l",
                AttributeValue::L(vec![
                    n("1"),
                    s("x"),
                    AttributeValue::L(vec![]),
                    AttributeValue::M(HashMap::new()),
                ]),
            ),
            (
                "m",
                AttributeValue::M(
                    [(
                        "inner".to_owned(),
                        AttributeValue::M(
                            [(
                                "deep".to_owned(),
                                AttributeValue::L(vec![AttributeValue::Bool(false)]),
                            )]
                            .into(),
                        ),
                    )]
                    .into(),
                ),
            ),
            ("empty", s("")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(item, want);
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        for body in ["[1,2]", "\"s\"", "42", "null", "true"] {
            assert_eq!(
                parse_item(body.as_bytes(), "body").unwrap_err(),
                NOT_AN_OBJECT
            );
        }
        for body in ["not json", "", "{\"a\":", "{} x"] {
            let e = parse_item(body.as_bytes(), "body").unwrap_err();
            assert!(e.starts_with("body is not valid JSON"), "{body:?}: {e}");
        }
        assert_eq!(
            parse_item(b"[]", "encoded event").unwrap_err(),
            "encoded event is not a JSON object"
        );
        assert!(parse_item(b"{}\n", "body").unwrap().is_empty());
    }

    #[test]
    fn equal_numbers_have_one_canonical_form() {
        let canon = |n: &str| {
            let mut out = String::new();
            canonical_number(n, &mut out);
            out
        };
        for same in ["10", "1e1", "10.0", "010", "1.0E+1", "+10", "100e-1"] {
            assert_eq!(canon(same), "1e1", "{same}");
        }
        for zero in ["0", "-0", "0.000", "0e5"] {
            assert_eq!(canon(zero), "0", "{zero}");
        }
        assert_eq!(canon("-1.50"), "-15e-1");
        assert_eq!(canon("0.001"), "1e-3");
        assert_eq!(canon("123"), "123e0");
        assert_ne!(canon("12"), canon("1.2"));
        assert_eq!(canon("abc"), "abc", "not a number: as it is");
        assert_eq!(canon("1e"), "1e", "a bad exponent: as it is");
    }

    #[test]
    fn key_signatures() {
        let key = ["pk".to_owned(), "sk".to_owned()];
        let mut out = String::new();
        let item: Item = [("pk".to_owned(), s("a")), ("sk".to_owned(), n("1"))].into();
        key_signature(&item, &key, &mut out).unwrap();
        assert_eq!(out, "S1:aN1e0;");
        let other: Item = [("pk".to_owned(), s("aN1:1")), ("sk".to_owned(), s(""))].into();
        let mut out2 = String::new();
        key_signature(&other, &key, &mut out2).unwrap();
        assert_ne!(out, out2);
        let missing: Item = [("pk".to_owned(), s("a"))].into();
        assert_eq!(
            key_signature(&missing, &key, &mut out).unwrap_err(),
            "the item has no key attribute `sk`"
        );
        let wrong: Item = [
            ("pk".to_owned(), AttributeValue::Bool(true)),
            ("sk".to_owned(), n("1")),
        ]
        .into();
        assert!(
            key_signature(&wrong, &key, &mut out)
                .unwrap_err()
                .starts_with("key attribute `pk` must be")
        );
    }

    #[test]
    fn same_keys_collapse_into_the_last_event() {
        let mut c = cfg();
        c.headers = HeaderAttributes(vec![
            ("kind".into(), "kind".into()),
            ("src".into(), "source".into()),
        ]);
        let mut sink = DynamoSink::new("d", &c).unwrap();
        let batch = [
            Event::new(r#"{"id":"a","v":1}"#).with_header("kind", "k1"),
            Event::new(r#"{"id":"b","v":2}"#),
            Event::new("not json"),
            Event::new(r#"{"id":"a","v":3}"#).with_header("src", "x"),
            Event::new(r#"{"v":4}"#),
            Event::new(r#"{"id":"a","v":5}"#),
        ];
        let mut rejected = Vec::new();
        let writes = sink.plan(&batch, &["id".to_owned()], &mut rejected);
        let got: Vec<(usize, Vec<usize>)> =
            writes.iter().map(|w| (w.event, w.covers.clone())).collect();
        let want: [(usize, Vec<usize>); 2] = [(5, vec![0, 3]), (1, vec![])];
        assert_eq!(got, want);
        assert_eq!(writes[0].item.as_ref().unwrap()["v"], n("5"));
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].0, 2);
        assert!(rejected[0].1.starts_with("body is not valid JSON"));
        assert_eq!(
            rejected[1],
            (4, "the item has no key attribute `id`".to_owned())
        );

        let mut rejected = Vec::new();
        let writes = sink.plan(&batch[..1], &["id".to_owned()], &mut rejected);
        let item = writes[0].item.as_ref().unwrap();
        assert_eq!(item["kind"], s("k1"));
        assert!(!item.contains_key("source"));
    }

    #[test]
    fn the_ndjson_format_stores_the_envelope() {
        let mut c = cfg();
        c.format = Some(CodecRef::Builtin(CodecName::Ndjson));
        c.key = Some(vec!["body".into()]);
        let mut sink = DynamoSink::new("d", &c).unwrap();
        let item = sink
            .item(&Event::new("payload").with_header("h", "v"))
            .unwrap();
        assert_eq!(item["body"], s("payload"));
        assert_eq!(
            item["headers"],
            AttributeValue::M([("h".to_owned(), s("v"))].into())
        );
        let mut c = cfg();
        c.format = Some(CodecRef::Builtin(CodecName::Lines));
        assert!(DynamoSink::new("d", &c).unwrap().codec.is_none());
        c.format = Some(CodecRef::Plugin("avro".into()));
        let sink = DynamoSink::new("d", &c).unwrap();
        assert_eq!(sink.plugin.as_deref(), Some("avro"));
    }

    #[test]
    fn outcomes() {
        assert!(DeliveryError::outcome(3, vec![], vec![], None).is_ok());
        assert!(matches!(
            DeliveryError::outcome(2, vec![], vec![1, 0, 1], Some("slow".into())),
            Err(DeliveryError::Retriable { reason, .. }) if reason == "slow"
        ));
        let r = DeliveryError::outcome(
            4,
            vec![(3, "bad".into()), (0, "worse".into())],
            vec![2, 2],
            None,
        );
        match r {
            Err(DeliveryError::Partial {
                rejected,
                retriable,
            }) => {
                assert_eq!(rejected, [(0, "worse".to_owned()), (3, "bad".to_owned())]);
                assert_eq!(retriable, [2]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_are_checked_by_field() {
        let err = |f: &dyn Fn(&mut DynamoSinkConfig)| {
            let mut c = cfg();
            f(&mut c);
            DynamoSink::new("d", &c).err().unwrap_or_default()
        };
        assert_eq!(err(&|_| {}), "");
        assert!(err(&|c| c.table = String::new()).starts_with("`table`"));
        assert!(err(&|c| c.key = Some(vec![])).starts_with("`key`"));
        assert!(err(&|c| c.key = Some(vec!["a".into(), "a".into()])).starts_with("`key`"));
        assert!(
            err(&|c| c.key = Some(vec!["a".into(), "b".into(), "c".into()])).starts_with("`key`")
        );
        assert!(
            err(&|c| c.headers = HeaderAttributes(vec![(String::new(), "a".into())]))
                .starts_with("`headers`")
        );
        assert!(err(&|c| c.concurrency = 0).starts_with("`concurrency`"));
        assert!(err(&|c| c.timeout = HumanDuration(Duration::ZERO)).starts_with("`timeout`"));
        assert!(
            err(&|c| c.key = None).is_empty(),
            "the key may be read later"
        );
    }

    #[test]
    fn header_attributes_are_a_list_or_a_map() {
        let list: HeaderAttributes = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert_eq!(
            list.0,
            [
                ("a".to_owned(), "a".to_owned()),
                ("b".to_owned(), "b".to_owned())
            ]
        );
        let map: HeaderAttributes = serde_json::from_str(r#"{"h":"attr"}"#).unwrap();
        assert_eq!(map.0, [("h".to_owned(), "attr".to_owned())]);
        assert!(serde_json::from_str::<HeaderAttributes>("3").is_err());
    }
}
