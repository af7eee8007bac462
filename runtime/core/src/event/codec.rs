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
use serde_json::{Map, Value};

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
pub fn encode_into(codec: CodecName, event: &Event, out: &mut Vec<u8>) {
    match codec {
        CodecName::Lines => {
            out.extend_from_slice(&event.body);
            out.push(b'\n');
        }
        CodecName::Ndjson => {
            let mut headers = Map::with_capacity(event.headers.len());
            for (k, v) in event.headers.iter() {
                headers.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            let mut obj = Map::with_capacity(2);
            obj.insert("headers".into(), Value::Object(headers));
            match std::str::from_utf8(&event.body) {
                Ok(s) => obj.insert("body".into(), Value::String(s.to_owned())),
                Err(_) => obj.insert(
                    "body_base64".into(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(&event.body)),
                ),
            };
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &Value::Object(obj));
            out.push(b'\n');
        }
    }
}

/// Decodes one line (without its newline) into an event, or says why it cannot.
pub fn decode_line(codec: CodecName, line: &[u8]) -> Result<Event, String> {
    match codec {
        CodecName::Lines => Ok(Event::new(Bytes::copy_from_slice(line))),
        CodecName::Ndjson => {
            let value: Value =
                serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
            let Value::Object(mut obj) = value else {
                return Err("expected a JSON object".into());
            };
            let is_envelope = obj
                .keys()
                .all(|k| matches!(k.as_str(), "headers" | "body" | "body_base64"))
                && (obj.contains_key("body") || obj.contains_key("body_base64"));
            if !is_envelope {
                return Ok(Event::new(Bytes::copy_from_slice(line)));
            }
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
    }
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
