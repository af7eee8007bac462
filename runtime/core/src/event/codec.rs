//! Codecs: how events become bytes in files and streams, and back.
//!
//! [`Codec`] is what components that read or write payloads hold; the built-in codecs
//! ([`CodecName`]) implement it here and a plugin host implements it for its plugins, so
//! nothing here knows how a plugin runs.
//!
//! `lines`: the body is the line. `ndjson`: one JSON object per line, either the envelope
//! `{"headers":{..},"body":"..."}` (a non-UTF-8 body is written as `body_base64`) or, when
//! decoding, any other JSON object, which becomes the body as is.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use serde::Deserialize;

use super::{Event, Headers};

/// Built-in codecs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodecName {
    /// One event per line; the line is the body.
    #[default]
    Lines,
    /// One JSON object per line: `{"headers":{..},"body":"..."}`, or any other object as the body.
    Ndjson,
}

impl CodecName {
    /// The names a `codec:`/`format:` field accepts for the built-in codecs.
    pub const NAMES: &[&str] = &["lines", "ndjson"];
}

/// A built-in codec or a `serde` plugin by name, as written in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecRef {
    Builtin(CodecName),
    Plugin(String),
}

impl Default for CodecRef {
    fn default() -> Self {
        CodecRef::Builtin(CodecName::Lines)
    }
}

impl<'de> Deserialize<'de> for CodecRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "lines" => CodecRef::Builtin(CodecName::Lines),
            "ndjson" => CodecRef::Builtin(CodecName::Ndjson),
            _ => CodecRef::Plugin(s),
        })
    }
}

/// Appends the encoding of `event` (with its trailing newline) to `out`.
///
/// The NDJSON envelope is written straight from the event — `body` (or `body_base64`) first,
/// then the headers sorted by name, as a JSON map would order them — without building a JSON
/// value per event.
pub fn encode_into(codec: CodecName, event: &Event, out: &mut Vec<u8>) {
    match codec {
        CodecName::Lines => {
            out.extend_from_slice(&event.body);
            out.push(b'\n');
        }
        CodecName::Ndjson => {
            let base64;
            let body = match std::str::from_utf8(&event.body) {
                Ok(s) => BodyOut::Text(s),
                Err(_) => {
                    base64 = base64::engine::general_purpose::STANDARD.encode(&event.body);
                    BodyOut::Base64(&base64)
                }
            };
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(
                &mut *out,
                &EnvelopeOut {
                    body,
                    headers: SortedHeaders(&event.headers),
                },
            );
            out.push(b'\n');
        }
    }
}

/// The envelope as written: one of the two body fields, then `headers`.
struct EnvelopeOut<'a> {
    body: BodyOut<'a>,
    headers: SortedHeaders<'a>,
}

enum BodyOut<'a> {
    Text(&'a str),
    Base64(&'a str),
}

/// Headers serialized as a JSON object with its keys in order.
struct SortedHeaders<'a>(&'a Headers);

impl serde::Serialize for EnvelopeOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        match self.body {
            BodyOut::Text(t) => m.serialize_entry("body", t)?,
            BodyOut::Base64(b) => m.serialize_entry("body_base64", b)?,
        }
        m.serialize_entry("headers", &self.headers)?;
        m.end()
    }
}

impl serde::Serialize for SortedHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut pairs: smallvec::SmallVec<[(&str, &str); 8]> = self.0.iter().collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut m = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Decodes one line (without its newline) into an event, or says why it cannot.
pub fn decode_line(codec: CodecName, line: &[u8]) -> Result<Event, String> {
    match codec {
        CodecName::Lines => Ok(Event::new(Bytes::copy_from_slice(line))),
        CodecName::Ndjson => decode_ndjson(line, || Bytes::copy_from_slice(line)),
    }
}

/// [`decode_line`] of a line that is already in shared memory: a plain object's body is that
/// memory, not a copy.
pub fn decode_line_shared(codec: CodecName, line: Bytes) -> Result<Event, String> {
    match codec {
        CodecName::Lines => Ok(Event::new(line)),
        CodecName::Ndjson => decode_ndjson(&line, || line.clone()),
    }
}

/// Adds the events of one payload (a line, a datagram, a message) to `out`: a built-in codec
/// keeps the payload's memory (no copy), any other codec decodes it.
pub fn decode_into(
    codec: &mut dyn Codec,
    payload: Bytes,
    out: &mut Vec<Event>,
) -> Result<(), String> {
    match codec.builtin() {
        Some(name) => out.push(decode_line_shared(name, payload)?),
        None => out.extend(codec.decode(&payload)?),
    }
    Ok(())
}

/// An NDJSON line: one pass checks it is an object and whether it is the envelope (without
/// building a JSON value); only an envelope is parsed again into headers and body. A plain
/// object becomes the body `as_body()` gives.
fn decode_ndjson(line: &[u8], as_body: impl FnOnce() -> Bytes) -> Result<Event, String> {
    let shape: ObjectShape =
        serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    match shape {
        ObjectShape::NotObject => Err("expected a JSON object".into()),
        ObjectShape::Plain => Ok(Event::new(as_body())),
        ObjectShape::Envelope => decode_envelope(line),
    }
}

/// What an NDJSON line holds, found in one pass over its keys.
enum ObjectShape {
    NotObject,
    /// Any object that is not the envelope.
    Plain,
    /// Only `headers`, `body` and `body_base64`, with one of the body fields.
    Envelope,
}

impl<'de> Deserialize<'de> for ObjectShape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = ObjectShape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ObjectShape, A::Error> {
                let (mut only_envelope_keys, mut has_body) = (true, false);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "body" | "body_base64" => has_body = true,
                        "headers" => {}
                        _ => only_envelope_keys = false,
                    }
                    map.next_value::<Valid>()?;
                }
                Ok(if only_envelope_keys && has_body {
                    ObjectShape::Envelope
                } else {
                    ObjectShape::Plain
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ObjectShape, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(ObjectShape::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<ObjectShape, E> {
                Ok(ObjectShape::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<ObjectShape, E> {
                Ok(ObjectShape::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<ObjectShape, E> {
                Ok(ObjectShape::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<ObjectShape, E> {
                Ok(ObjectShape::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<ObjectShape, E> {
                Ok(ObjectShape::NotObject)
            }
            fn visit_unit<E>(self) -> Result<ObjectShape, E> {
                Ok(ObjectShape::NotObject)
            }
        }
        d.deserialize_any(Shape)
    }
}

/// Any JSON value, read only to check it as strictly as building a `serde_json::Value` would
/// (UTF-8 and surrogates in strings, number range, nesting depth) — which `IgnoredAny`, which
/// only checks the syntax, does not — without allocating.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Valid;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Valid, A::Error> {
                while map.next_key::<Valid>()?.is_some() {
                    map.next_value::<Valid>()?;
                }
                Ok(Valid)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Valid, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(Valid)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_unit<E>(self) -> Result<Valid, E> {
                Ok(Valid)
            }
        }
        d.deserialize_any(V)
    }
}

/// The envelope `{"headers":{..},"body":".."}` (or `body_base64`) into an event.
fn decode_envelope(line: &[u8]) -> Result<Event, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("expected a JSON object".into());
    };
    let mut headers = Headers::default();
    if let Some(h) = obj.remove("headers") {
        let Value::Object(h) = h else {
            return Err("`headers` must be an object".into());
        };
        for (k, v) in h {
            match v {
                Value::String(s) => headers.insert(k, s),
                other => headers.insert(k, other.to_string()),
            }
        }
    }
    let body = match (obj.remove("body"), obj.remove("body_base64")) {
        (Some(Value::String(s)), None) => Bytes::from(s),
        (Some(other), None) => Bytes::from(other.to_string()),
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .map_err(|e| format!("invalid body_base64: {e}"))?,
        _ => return Err("expected exactly one of `body`, `body_base64` (a string)".into()),
    };
    Ok(Event { headers, body })
}

/// A codec in use: payloads into events and events into payloads.
pub trait Codec: Send {
    /// One payload (a line, a request body) into events; the error is a dead-letter reason.
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<Event>, String>;

    /// A batch into bytes appended to `out`.
    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), String>;

    /// [`decode`](Self::decode) for a payload whose media type is known (an HTTP request's
    /// `Content-Type`); codecs that read it (plugins) override this.
    fn decode_with_type(
        &mut self,
        payload: &[u8],
        content_type: &str,
    ) -> Result<Vec<Event>, String> {
        let _ = content_type;
        self.decode(payload)
    }

    /// The built-in codec this is, for callers with a faster path for one (the file source
    /// splits `lines` without a call per line).
    fn builtin(&self) -> Option<CodecName> {
        None
    }

    /// Whether each `encode` output is a complete file that nothing may be appended to
    /// (Parquet): the file sink writes each to a file of its own.
    fn whole_file(&self) -> bool {
        false
    }
}

impl Codec for CodecName {
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<Event>, String> {
        decode_line(*self, payload).map(|e| vec![e])
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), String> {
        for e in events {
            encode_into(*self, e, out);
        }
        Ok(())
    }

    fn builtin(&self) -> Option<CodecName> {
        Some(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_round_trip_keeps_headers_and_binary_bodies() {
        for body in [&b"hello \"world\""[..], &[0xff, 0x00, 0x80][..]] {
            let e = Event::new(Bytes::copy_from_slice(body)).with_header("k", "v");
            let mut out = Vec::new();
            encode_into(CodecName::Ndjson, &e, &mut out);
            assert_eq!(out.last(), Some(&b'\n'));
            let back = decode_line(CodecName::Ndjson, &out[..out.len() - 1]).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn ndjson_envelope_is_written_body_first_with_sorted_headers() {
        let e = Event::new("x\"y")
            .with_header("zeta", "1")
            .with_header("alpha", "q\"uote");
        let mut out = Vec::new();
        encode_into(CodecName::Ndjson, &e, &mut out);
        assert_eq!(
            out,
            b"{\"body\":\"x\\\"y\",\"headers\":{\"alpha\":\"q\\\"uote\",\"zeta\":\"1\"}}\n"
        );
        let mut out = Vec::new();
        encode_into(CodecName::Ndjson, &Event::new(vec![0xffu8]), &mut out);
        assert_eq!(out, b"{\"body_base64\":\"/w==\",\"headers\":{}}\n");
    }

    #[test]
    fn ndjson_shared_lines_keep_their_memory_and_envelopes_need_a_body() {
        let line = Bytes::from_static(br#"{"user":1,"body":"not an envelope"}"#);
        let e = decode_line_shared(CodecName::Ndjson, line.clone()).unwrap();
        assert_eq!(
            e.body.as_ptr(),
            line.as_ptr(),
            "a plain object is not copied"
        );
        // Only envelope keys but no body: a plain object.
        let e = decode_line(CodecName::Ndjson, br#"{"headers":{"a":"1"}}"#).unwrap();
        assert_eq!(&e.body[..], br#"{"headers":{"a":"1"}}"#);
        let e = decode_line(CodecName::Ndjson, br#"{"body":{"n":1},"headers":{"a":2}}"#).unwrap();
        assert_eq!(&e.body[..], br#"{"n":1}"#);
        assert_eq!(e.headers.get("a"), Some("2"));
        for bad in [&b"1"[..], b"\"s\"", b"null", b"[{}]", b"{} x", b"{\"a\":}"] {
            assert!(decode_line(CodecName::Ndjson, bad).is_err(), "{bad:?}");
        }
        // As strict as a full parse: bad UTF-8, lone surrogates, numbers out of range, and
        // nesting past serde_json's limit are refused inside values too.
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            br#"{"a":"\ud800"}"#,
            br#"{"a":1e400}"#,
            deep.as_bytes(),
        ] {
            let err = decode_line(CodecName::Ndjson, bad).unwrap_err();
            assert!(err.starts_with("invalid JSON"), "{err}");
        }
    }

    #[test]
    fn ndjson_plain_objects_become_bodies_and_garbage_is_refused() {
        let e = decode_line(CodecName::Ndjson, br#"{"user":1}"#).unwrap();
        assert_eq!(&e.body[..], br#"{"user":1}"#);
        assert!(
            decode_line(CodecName::Ndjson, b"{nope")
                .unwrap_err()
                .contains("invalid JSON")
        );
        assert!(decode_line(CodecName::Ndjson, b"[1]").is_err());
    }

    #[test]
    fn lines() {
        let mut out = Vec::new();
        encode_into(CodecName::Lines, &Event::new("a b"), &mut out);
        assert_eq!(out, b"a b\n");
        assert_eq!(
            &decode_line(CodecName::Lines, b"xy").unwrap().body[..],
            b"xy"
        );
    }
}
