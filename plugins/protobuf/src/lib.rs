//! `protobuf`: a Protocol Buffers codec (SerDe). Messages are described by a descriptor set
//! (`protoc --include_imports --descriptor_set_out=orders.desc orders.proto`), read when the
//! plugin starts; no generated code, so one build of the plugin serves every schema.
//!
//! ```yaml
//! plugins:
//!   orders:
//!     path: protobuf.wasm
//!     files:                       # read by the agent (the plugin has no file system)
//!       descriptor_set: orders.desc
//!     config:
//!       message: shop.v1.Order     # the fully qualified message type
//!       framing: delimited         # delimited (default) | single
//!       field_names: proto         # proto (default: as in the .proto) | json (lowerCamelCase)
//!       enums_as_numbers: false
//!       emit_defaults: false       # also write fields at their default value (0, "", [])
//!       headers: { order: id }     # decode: also copy these top-level fields into headers
//! ```
//!
//! `descriptor_set` may also be given inline in `config`, as base64.
//!
//! Decode: with `framing: delimited` the payload is a stream of messages, each preceded by
//! its length as a varint (Java's `writeDelimitedTo`, Python's `_VarintBytes(len)`), one event
//! per message; with `single` the whole payload is one message (a Kafka record, an MQTT
//! message). Each event's body is the message in the canonical protobuf JSON mapping (64-bit
//! integers as strings, bytes as base64, enums by name). A payload that does not parse as the
//! message (a wrong wire type, a truncated field, a length past the end) fails as a whole
//! (the host dead-letters it), the error naming the message's place in the stream.
//!
//! Encode: every body must be a JSON object in that mapping (field names in either spelling;
//! an unknown field is an error naming the event). `delimited` writes each message with its
//! length; `single` takes exactly one event per payload.

use std::sync::OnceLock;

use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::Deserialize;
use serde_json::Value;
use sluice_guest::{Error, Event};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    #[default]
    Delimited,
    Single,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldNames {
    #[default]
    Proto,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fully qualified message type.
    pub message: String,
    /// The serialized `FileDescriptorSet`, base64 (inline, or from the plugin's `files:`).
    #[serde(default)]
    pub descriptor_set: Option<String>,
    /// What the agent read for the plugin (`files:` in the plugin definition), base64.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub framing: Framing,
    #[serde(default)]
    pub field_names: FieldNames,
    #[serde(default)]
    pub enums_as_numbers: bool,
    /// Write fields holding their default value too (the canonical mapping leaves them out).
    #[serde(default)]
    pub emit_defaults: bool,
    /// Header name -> top-level field (decode).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The configured codec.
pub struct ProtobufCodec {
    message: MessageDescriptor,
    framing: Framing,
    options: SerializeOptions,
    headers: Vec<(String, String)>,
}

impl ProtobufCodec {
    pub fn new(cfg: Config) -> Result<Self, Error> {
        let encoded = match (&cfg.descriptor_set, cfg.files.get("descriptor_set")) {
            (Some(s), None) | (None, Some(s)) => s,
            (Some(_), Some(_)) => {
                return Err(Error::new("protobuf: `descriptor_set` is given both inline and in `files`"));
            }
            (None, None) => {
                return Err(Error::new(
                    "protobuf: no descriptor set: add `files: { descriptor_set: x.desc }` to the plugin \
                     (made with protoc --include_imports --descriptor_set_out=x.desc)",
                ));
            }
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| Error::new(format!("protobuf: descriptor_set is not base64: {e}")))?;
        let pool = DescriptorPool::decode(bytes.as_slice())
            .map_err(|e| Error::new(format!("protobuf: descriptor_set: {e}")))?;
        let message = pool.get_message_by_name(&cfg.message).ok_or_else(|| {
            let known: Vec<String> = pool.all_messages().map(|m| m.full_name().to_owned()).take(20).collect();
            Error::new(format!(
                "protobuf: no message `{}` in the descriptor set (it has: {})",
                cfg.message,
                known.join(", ")
            ))
        })?;
        for field in cfg.headers.values() {
            if message.get_field_by_name(field).is_none() {
                return Err(Error::new(format!("protobuf: headers: `{}` has no field `{field}`", cfg.message)));
            }
        }
        let options = SerializeOptions::new()
            .use_proto_field_name(cfg.field_names == FieldNames::Proto)
            .use_enum_numbers(cfg.enums_as_numbers)
            .skip_default_fields(!cfg.emit_defaults);
        Ok(ProtobufCodec { message, framing: cfg.framing, options, headers: cfg.headers.into_iter().collect() })
    }

    pub fn decode(&self, payload: &[u8]) -> Result<Vec<Event>, Error> {
        let mut out = Vec::new();
        match self.framing {
            Framing::Single => out.push(self.decode_one(payload, 0)?),
            Framing::Delimited => {
                let mut rest = payload;
                while !rest.is_empty() {
                    let n = out.len();
                    let len = prost::encoding::decode_varint(&mut rest)
                        .map_err(|e| Error::new(format!("protobuf: message {n}: bad length prefix: {e}")))?;
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    if len > rest.len() {
                        return Err(Error::new(format!(
                            "protobuf: message {n}: length {len} runs past the end of the payload ({} bytes left)",
                            rest.len()
                        )));
                    }
                    let (one, tail) = rest.split_at(len);
                    out.push(self.decode_one(one, n)?);
                    rest = tail;
                }
            }
        }
        Ok(out)
    }

    fn decode_one(&self, bytes: &[u8], n: usize) -> Result<Event, Error> {
        let msg = DynamicMessage::decode(self.message.clone(), bytes)
            .map_err(|e| Error::new(format!("protobuf: message {n}: not a {}: {e}", self.message.full_name())))?;
        let mut body = Vec::with_capacity(bytes.len() * 2 + 16);
        let mut ser = serde_json::Serializer::new(&mut body);
        msg.serialize_with_options(&mut ser, &self.options)
            .map_err(|e| Error::new(format!("protobuf: message {n}: {e}")))?;
        let mut event = Event::new(body);
        for (header, field) in &self.headers {
            // An unset field sets no header (rather than its default value).
            if !msg.has_field_by_name(field) {
                continue;
            }
            if let Some(v) = msg.get_field_by_name(field) {
                let text = match v.as_ref() {
                    prost_reflect::Value::String(s) => s.clone(),
                    other => scalar_text(other),
                };
                event.set_header(header, text);
            }
        }
        Ok(event)
    }

    pub fn encode(&self, events: &[Event]) -> Result<Vec<u8>, Error> {
        if self.framing == Framing::Single && events.len() > 1 {
            return Err(Error::new(format!(
                "protobuf: framing `single` writes one message per payload, and this batch has {}; use `delimited`",
                events.len()
            )));
        }
        let mut out = Vec::new();
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        for (i, e) in events.iter().enumerate() {
            let mut json: Value = serde_json::from_slice(e.body()).map_err(|err| {
                Error::new(format!("protobuf: event {i}: not a {} in JSON: {err}", self.message.full_name()))
            })?;
            canonical_numbers(&mut json);
            let msg =
                DynamicMessage::deserialize_with_options(self.message.clone(), json, &options).map_err(|err| {
                    Error::new(format!("protobuf: event {i}: not a {} in JSON: {err}", self.message.full_name()))
                })?;
            match self.framing {
                Framing::Single => msg.encode(&mut out),
                Framing::Delimited => msg.encode_length_delimited(&mut out),
            }
            .map_err(|err| Error::new(format!("protobuf: event {i}: {err}")))?;
        }
        Ok(out)
    }
}

/// Rewrites fractional numbers in their shortest form. This workspace's `serde_json` keeps
/// numbers as written (`arbitrary_precision`), and then hands `2.50` to a deserializer as text
/// rather than as a float, which the message deserializer refuses.
fn canonical_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => {
            if let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                *n = f;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonical_numbers),
        Value::Object(map) => map.values_mut().for_each(canonical_numbers),
        _ => {}
    }
}

/// A scalar field's value as header text (messages and lists as their debug form).
fn scalar_text(v: &prost_reflect::Value) -> String {
    use prost_reflect::Value as V;
    match v {
        V::Bool(b) => b.to_string(),
        V::I32(n) | V::EnumNumber(n) => n.to_string(),
        V::I64(n) => n.to_string(),
        V::U32(n) => n.to_string(),
        V::U64(n) => n.to_string(),
        V::F32(n) => n.to_string(),
        V::F64(n) => n.to_string(),
        V::String(s) => s.clone(),
        V::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        other => format!("{other:?}"),
    }
}

static CODEC: OnceLock<ProtobufCodec> = OnceLock::new();

fn codec() -> Result<&'static ProtobufCodec, Error> {
    CODEC.get().ok_or_else(|| Error::new("protobuf: not initialised"))
}

/// The plugin: a thin shell over the [`ProtobufCodec`] built by `init`.
pub struct Protobuf;

#[sluice_guest::serde]
impl sluice_guest::Codec for Protobuf {
    fn init(config: Value) -> Result<(), Error> {
        let cfg: Config =
            serde_json::from_value(config).map_err(|e| Error::new(format!("protobuf: invalid config: {e}")))?;
        CODEC.set(ProtobufCodec::new(cfg)?).map_err(|_| Error::new("protobuf: init called twice"))
    }

    fn decode(payload: &[u8], _content_type: &str) -> Result<Vec<Event>, Error> {
        codec()?.decode(payload)
    }

    fn encode(events: &[Event]) -> Result<Vec<u8>, Error> {
        codec()?.encode(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::parts;

    /// `testdata/orders.desc`, made by protoc from `testdata/orders.proto`.
    const DESC: &[u8] = include_bytes!("../testdata/orders.desc");
    /// An Order written by Python's protobuf (see `testdata/README.md`).
    const ORDER_HEX: &str =
        "0881c8afa025120263311a120a05736b752d31100119000000000000f83f20012a030100ff320a0a047a6f6e6512027a31";

    fn order() -> Vec<u8> {
        (0..ORDER_HEX.len()).step_by(2).map(|i| u8::from_str_radix(&ORDER_HEX[i..i + 2], 16).unwrap()).collect()
    }

    fn codec(extra: &str) -> ProtobufCodec {
        let b64 = base64::engine::general_purpose::STANDARD.encode(DESC);
        let cfg = format!(r#"{{"message": "shop.v1.Order", "files": {{"descriptor_set": "{b64}"}} {extra}}}"#);
        ProtobufCodec::new(serde_json::from_str(&cfg).unwrap()).unwrap()
    }

    fn delimited(msgs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            prost::encoding::encode_varint(m.len() as u64, &mut out);
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn decodes_a_delimited_stream_into_canonical_json() {
        let one = order();
        let events = codec(r#", "headers": {"order": "id"}"#).decode(&delimited(&[&one, &one])).unwrap();
        assert_eq!(events.len(), 2);
        let (headers, body) = parts(&events[0]);
        assert_eq!(headers, [("order".to_owned(), "10000000001".to_owned())]);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], "10000000001");
        assert_eq!(v["status"], "PAID");
        assert_eq!(v["token"], "AQD/");
        assert_eq!(v["items"][0]["price"], 1.5);
        assert_eq!(v["labels"]["zone"], "z1");
    }

    #[test]
    fn json_field_names_and_enum_numbers_on_request() {
        let c = codec(r#", "framing": "single", "field_names": "json", "enums_as_numbers": true"#);
        let events = c.decode(&order()).unwrap();
        let v: Value = serde_json::from_str(&parts(&events[0]).1).unwrap();
        assert_eq!(v["status"], 1);
        assert!(v.get("customer").is_some());
    }

    #[test]
    fn encode_round_trips_to_the_same_bytes() {
        let c = codec("");
        let events = c.decode(&delimited(&[&order()])).unwrap();
        assert_eq!(c.encode(&events).unwrap(), delimited(&[&order()]));
        let single = codec(r#", "framing": "single""#);
        assert_eq!(single.encode(&events).unwrap(), order());
        // Numbers as people write them (`2.50`, `1e2`) are taken too.
        let written = c.encode(&[Event::new(r#"{"id": "1", "items": [{"price": 2.50, "qty": 1e2}]}"#)]);
        assert!(written.is_ok(), "{written:?}");
        let two = [events[0].clone(), events[0].clone()];
        assert!(single.encode(&two).unwrap_err().to_string().contains("one message per payload"));
    }

    #[test]
    fn hostile_input_is_refused_with_a_reason() {
        let c = codec("");
        // Field 1 (int64) sent as a length-delimited string.
        let wrong = c.decode(&delimited(&[b"\x0a\x03abc"])).unwrap_err().to_string();
        assert!(wrong.contains("message 0: not a shop.v1.Order"), "{wrong}");
        let whole = order();
        let mut truncated = delimited(&[&whole]);
        truncated.truncate(truncated.len() - 3);
        let t = c.decode(&truncated).unwrap_err().to_string();
        assert!(t.contains("runs past the end"), "{t}");
        // A message cut inside a field, with a length prefix that matches it.
        let cut = c.decode(&delimited(&[&whole[..whole.len() - 3]])).unwrap_err().to_string();
        assert!(cut.contains("not a shop.v1.Order"), "{cut}");
        let bad_json = c.encode(&[Event::new(r#"{"id": "1", "nope": 2}"#)]).unwrap_err().to_string();
        assert!(bad_json.contains("event 0: not a shop.v1.Order in JSON"), "{bad_json}");
    }

    #[test]
    fn config_errors_name_what_is_wrong() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(DESC);
        let err = |cfg: String| match ProtobufCodec::new(serde_json::from_str(&cfg).unwrap()) {
            Ok(_) => panic!("accepted {cfg}"),
            Err(e) => e.to_string(),
        };
        assert!(err(format!(r#"{{"message": "shop.v1.Nope", "descriptor_set": "{b64}"}}"#)).contains("shop.v1.Order"));
        assert!(err(r#"{"message": "shop.v1.Order"}"#.into()).contains("no descriptor set"));
        assert!(err(r#"{"message": "m", "descriptor_set": "!!"}"#.into()).contains("not base64"));
        assert!(
            err(format!(r#"{{"message": "shop.v1.Order", "descriptor_set": "{b64}", "headers": {{"h": "nope"}}}}"#))
                .contains("no field `nope`")
        );
    }

    /// Order `i` as JSON, about 256 bytes: the record `benches/codecs.rs` runs through the
    /// Wasm sandbox.
    fn order_json(i: u64) -> String {
        format!(
            r#"{{"id":"{}","customer":"customer-{i:08}","items":[{{"sku":"sku-{:06}","qty":{},"price":{}.25}},{{"sku":"sku-{:06}","qty":1,"price":9.5}}],"status":"PAID","token":"AQIDBAUGBwgJCgsMDQ4PEA==","labels":{{"zone":"eu-west-{}","channel":"web","campaign":"winter-sale-2026"}}}}"#,
            10_000_000_000 + i,
            i % 100_000,
            i % 7 + 1,
            i % 500,
            (i * 7) % 100_000,
            i % 3
        )
    }

    /// The native figure beside the sandbox's (`cargo test --release -p protobuf -- --ignored
    /// --nocapture native_speed`): the same records, batches of 1,024.
    #[test]
    #[ignore]
    fn native_speed() {
        let c = codec("");
        let n = 500_000u64;
        let batches: Vec<Vec<Event>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(1024)
            .map(|b| b.iter().map(|&i| Event::new(order_json(i))).collect())
            .collect();
        let t0 = std::time::Instant::now();
        let payloads: Vec<Vec<u8>> = batches.iter().map(|b| c.encode(b).unwrap()).collect();
        let enc = n as f64 / t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        let got: usize = payloads.iter().map(|p| c.decode(p).unwrap().len()).sum();
        let dec = n as f64 / t0.elapsed().as_secs_f64();
        assert_eq!(got as u64, n);
        println!("protobuf native: encode {enc:.0} ev/s, decode {dec:.0} ev/s");
    }
}
