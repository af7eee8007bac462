//! `json`: a JSON / NDJSON codec (SerDe).
//!
//! ```yaml
//! plugins:
//!   json:
//!     path: json.wasm
//!     config:
//!       mode: auto            # auto | object | array | ndjson (decode)
//!       headers:              # header name: JSON pointer into each decoded element
//!         user: /user/id
//!         kind: /type
//!       format: ndjson        # ndjson | array (encode)
//! ```
//!
//! Decode, by `mode`:
//! - `object`: the payload is one JSON value, one event (even if that value is an array);
//! - `array`: the payload is a JSON array, one event per element;
//! - `ndjson`: one event per non-empty line;
//! - `auto` (the default): content type `application/x-ndjson` (or `application/ndjson`,
//!   `application/jsonl`) is NDJSON; `application/json` (or `…+json`) is one document, an
//!   array giving one event per element; any other content type is sniffed: a payload holding
//!   one JSON value is handled like `application/json`, more than one like NDJSON.
//!
//! Each event's body is the compact JSON of its element (key order and number text kept).
//! `headers` copies values into event headers: strings as they are, other values as their
//! compact JSON text; a pointer that matches nothing sets no header. Any malformed element
//! fails the whole payload (the host dead-letters it with the error, which names the line or
//! element).
//!
//! Encode: every body must be valid JSON (else the batch fails naming the event). `ndjson`
//! writes one compact body per line; `array` writes one JSON array of the bodies.

use std::{borrow::Cow, collections::BTreeMap, sync::OnceLock};

use serde::{Deserialize, de::IgnoredAny};
use serde_json::Value;
use sluice_guest::{Error, Event};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Auto,
    Object,
    Array,
    Ndjson,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Ndjson,
    Array,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How `decode` splits a payload into events.
    #[serde(default)]
    pub mode: Mode,
    /// Header name → JSON pointer into each decoded element.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How `encode` joins events.
    #[serde(default)]
    pub format: Format,
}

/// The configured codec.
#[derive(Debug)]
pub struct JsonCodec {
    mode: Mode,
    headers: Vec<(String, String)>,
    format: Format,
}

impl JsonCodec {
    pub fn new(cfg: Config) -> Result<Self, Error> {
        for (name, pointer) in &cfg.headers {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(Error::new(format!(
                    "json: headers.{name}: `{pointer}` is not a JSON pointer (it must start with `/`)"
                )));
            }
        }
        Ok(JsonCodec { mode: cfg.mode, headers: cfg.headers.into_iter().collect(), format: cfg.format })
    }

    pub fn decode(&self, payload: &[u8], content_type: &str) -> Result<Vec<Event>, Error> {
        let payload = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
        match self.mode {
            Mode::Object => Ok(vec![self.event(parse(payload)?)?]),
            Mode::Array => match parse(payload)? {
                Value::Array(items) => self.events(items),
                other => Err(Error::new(format!("json: expected an array, found {}", kind(&other)))),
            },
            Mode::Ndjson => self.ndjson(payload),
            Mode::Auto => match media_type(content_type).as_str() {
                "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
                    self.ndjson(payload)
                }
                t if t == "application/json" || t.ends_with("+json") => self.document(parse(payload)?),
                _ => self.sniff(payload),
            },
        }
    }

    /// One value: an array gives one event per element, anything else one event.
    fn document(&self, doc: Value) -> Result<Vec<Event>, Error> {
        match doc {
            Value::Array(items) => self.events(items),
            other => Ok(vec![self.event(other)?]),
        }
    }

    fn sniff(&self, payload: &[u8]) -> Result<Vec<Event>, Error> {
        let mut stream = serde_json::Deserializer::from_slice(payload).into_iter::<Value>();
        let first = match stream.next() {
            None => return Ok(Vec::new()),
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(Error::new(format!("json: line {}: {e}", e.line()))),
        };
        if payload[stream.byte_offset()..].trim_ascii().is_empty() {
            self.document(first)
        } else {
            self.ndjson(payload)
        }
    }

    fn ndjson(&self, payload: &[u8]) -> Result<Vec<Event>, Error> {
        let mut out = Vec::new();
        for (i, line) in payload.split(|&b| b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_slice(line).map_err(|e| Error::new(format!("json: line {}: {e}", i + 1)))?;
            out.push(self.event(v)?);
        }
        Ok(out)
    }

    fn events(&self, items: Vec<Value>) -> Result<Vec<Event>, Error> {
        items.into_iter().map(|v| self.event(v)).collect()
    }

    fn event(&self, v: Value) -> Result<Event, Error> {
        let mut ev = Event::new(serde_json::to_vec(&v)?);
        for (name, pointer) in &self.headers {
            if let Some(found) = v.pointer(pointer) {
                ev.set_header(name.as_str(), scalar_text(found));
            }
        }
        Ok(ev)
    }

    pub fn encode(&self, events: &[Event]) -> Result<Vec<u8>, Error> {
        let size: usize = events.iter().map(|e| e.body().len() + 1).sum();
        let mut out = Vec::with_capacity(size + 2);
        if self.format == Format::Array {
            out.push(b'[');
        }
        for (i, ev) in events.iter().enumerate() {
            let body =
                compact(ev.body()).map_err(|e| Error::new(format!("json: event {i}: body is not valid JSON: {e}")))?;
            match self.format {
                Format::Ndjson => {
                    out.extend_from_slice(&body);
                    out.push(b'\n');
                }
                Format::Array => {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&body);
                }
            }
        }
        if self.format == Format::Array {
            out.push(b']');
        }
        Ok(out)
    }
}

fn parse(payload: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(payload).map_err(|e| Error::new(format!("json: line {}: {e}", e.line())))
}

/// `text/csv; charset=utf-8` → `text/csv`.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A header value: strings as they are, anything else as compact JSON.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A valid JSON body, trimmed, compacted only when it spans lines (a valid JSON text can hold
/// a line break only as whitespace between tokens).
fn compact(body: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let text = std::str::from_utf8(body.trim_ascii()).map_err(|e| e.to_string())?;
    serde_json::from_str::<IgnoredAny>(text).map_err(|e| e.to_string())?;
    if text.contains(['\n', '\r']) {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(Cow::Owned(serde_json::to_vec(&v).map_err(|e| e.to_string())?))
    } else {
        Ok(Cow::Borrowed(text.as_bytes()))
    }
}

static CODEC: OnceLock<JsonCodec> = OnceLock::new();

fn codec() -> Result<&'static JsonCodec, Error> {
    CODEC.get().ok_or_else(|| Error::new("json: not initialised"))
}

/// The plugin: a thin shell over the [`JsonCodec`] built by `init`.
pub struct Json;

#[sluice_guest::serde]
impl sluice_guest::Codec for Json {
    fn init(config: Value) -> Result<(), Error> {
        let cfg: Config =
            serde_json::from_value(config).map_err(|e| Error::new(format!("json: invalid config: {e}")))?;
        CODEC.set(JsonCodec::new(cfg)?).map_err(|_| Error::new("json: init called twice"))
    }

    fn decode(payload: &[u8], content_type: &str) -> Result<Vec<Event>, Error> {
        codec()?.decode(payload, content_type)
    }

    fn encode(events: &[Event]) -> Result<Vec<u8>, Error> {
        codec()?.encode(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::{Codec, testing::parts};

    fn codec(config: &str) -> JsonCodec {
        JsonCodec::new(serde_json::from_str(config).unwrap()).unwrap()
    }

    fn bodies(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| parts(e).1).collect()
    }

    #[test]
    fn decodes_object_array_and_ndjson_by_content_type() {
        let c = codec("{}");
        assert_eq!(
            bodies(&c.decode(b"{ \"a\": 1,\n \"b\": [1, 2] }", "application/json").unwrap()),
            [r#"{"a":1,"b":[1,2]}"#]
        );
        assert_eq!(
            bodies(&c.decode(b"[{\"a\":1}, 2, \"x\"]", "application/json; charset=utf-8").unwrap()),
            [r#"{"a":1}"#, "2", r#""x""#]
        );
        let nd = b"{\"a\":1}\r\n\n  \n[1, 2]\n{\"b\":2}";
        assert_eq!(bodies(&c.decode(nd, "Application/X-NDJSON").unwrap()), [r#"{"a":1}"#, "[1,2]", r#"{"b":2}"#]);
        assert!(c.decode(b"{\"a\":1}\n{\"b\":2}", "application/json").is_err(), "application/json is one document");
    }

    #[test]
    fn sniffs_unknown_content_types() {
        let c = codec("{}");
        assert_eq!(bodies(&c.decode(b"  {\"a\":1}  ", "").unwrap()), [r#"{"a":1}"#]);
        assert_eq!(bodies(&c.decode(b"\n[1,2,3]\n", "text/plain").unwrap()), ["1", "2", "3"]);
        assert_eq!(bodies(&c.decode(b"{\"a\":1}\n{\"a\":2}\n", "").unwrap()), [r#"{"a":1}"#, r#"{"a":2}"#]);
        assert_eq!(bodies(&c.decode(b"[1]\n[2]", "").unwrap()), ["[1]", "[2]"], "NDJSON of arrays");
        assert_eq!(c.decode(b" \n ", "").unwrap().len(), 0);
        assert_eq!(bodies(&c.decode(b"\xEF\xBB\xBF{\"a\":1}", "").unwrap()), [r#"{"a":1}"#], "BOM");
    }

    #[test]
    fn configured_mode_overrides_content_type() {
        assert_eq!(bodies(&codec(r#"{"mode":"object"}"#).decode(b"[1,2]", "application/x-ndjson").unwrap()), ["[1,2]"]);
        let err = codec(r#"{"mode":"array"}"#).decode(b"{}", "").unwrap_err();
        assert!(err.0.contains("expected an array, found an object"), "{err}");
        assert_eq!(bodies(&codec(r#"{"mode":"ndjson"}"#).decode(b"1\n2", "application/json").unwrap()), ["1", "2"]);
    }

    #[test]
    fn keeps_key_order_and_number_text() {
        let out = codec("{}").decode(br#"{"z":1.10,"a":18446744073709551616,"m":-0.0}"#, "").unwrap();
        assert_eq!(bodies(&out), [r#"{"z":1.10,"a":18446744073709551616,"m":-0.0}"#]);
    }

    #[test]
    fn malformed_input_names_the_line() {
        let err = codec(r#"{"mode":"ndjson"}"#).decode(b"{\"a\":1}\n\n{\"a\":\n", "").unwrap_err();
        assert!(err.0.starts_with("json: line 3:"), "{err}");
        assert!(codec("{}").decode(b"{\"a\":1}\nnope", "").unwrap_err().0.contains("line 2"));
        assert!(codec(r#"{"mode":"object"}"#).decode(b"", "").is_err());
    }

    #[test]
    fn extracts_headers_by_pointer() {
        let c = codec(
            r#"{"headers": {"user": "/user/id", "n": "/n", "ok": "/ok", "nil": "/nil", "tags": "/tags", "missing": "/nope/x"}}"#,
        );
        let out = c
            .decode(br#"[{"user":{"id":"u1"},"n":42,"ok":true,"nil":null,"tags":["a", "b"]}, {"n":1.5}]"#, "")
            .unwrap();
        let (headers, _) = parts(&out[0]);
        let want: Vec<(String, String)> =
            [("n", "42"), ("nil", "null"), ("ok", "true"), ("tags", r#"["a","b"]"#), ("user", "u1")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into();
        assert_eq!(headers, want);
        assert_eq!(parts(&out[1]).0, [("n".to_owned(), "1.5".to_owned())]);
    }

    #[test]
    fn encodes_ndjson_and_array() {
        let events = [Event::new("{\n  \"a\": 1\n}\n"), Event::new(" [1, 2] "), Event::new("\"s\"")];
        assert_eq!(String::from_utf8(codec("{}").encode(&events).unwrap()).unwrap(), "{\"a\":1}\n[1, 2]\n\"s\"\n");
        let arr = codec(r#"{"format":"array"}"#).encode(&events).unwrap();
        assert_eq!(String::from_utf8(arr.clone()).unwrap(), "[{\"a\":1},[1, 2],\"s\"]");
        assert_eq!(
            bodies(&codec("{}").decode(&arr, "application/json").unwrap()),
            [r#"{"a":1}"#, "[1,2]", r#""s""#],
            "round trip"
        );
        assert_eq!(codec(r#"{"format":"array"}"#).encode(&[]).unwrap(), b"[]");
        assert_eq!(codec("{}").encode(&[]).unwrap(), b"");
    }

    #[test]
    fn encode_refuses_invalid_json_naming_the_event() {
        for bad in [&b"{\"a\":"[..], b"", b"{} {}", b"\"\xff\"", b"nope"] {
            let err = codec("{}").encode(&[Event::new("1"), Event::new(bad)]).unwrap_err();
            assert!(err.0.starts_with("json: event 1: body is not valid JSON"), "{err}");
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(serde_json::from_str::<Config>(r#"{"mode":"xml"}"#).is_err());
        assert!(serde_json::from_str::<Config>(r#"{"format":"csv"}"#).is_err());
        assert!(serde_json::from_str::<Config>(r#"{"header":{}}"#).is_err());
        let err = JsonCodec::new(serde_json::from_str(r#"{"headers":{"u":"user.id"}}"#).unwrap()).unwrap_err();
        assert!(err.0.contains("headers.u"), "{err}");
    }

    #[test]
    fn codec_entry_points_use_the_init_config() {
        let err = Json::init(serde_json::json!({"mode": "nope"})).unwrap_err();
        assert!(err.0.starts_with("json: invalid config:"), "{err}");
        Json::init(serde_json::json!({"format": "array"})).unwrap();
        let events = Json::decode(b"{\"a\":1}\n{\"a\":2}", "application/x-ndjson").unwrap();
        assert_eq!(Json::encode(&events).unwrap(), b"[{\"a\":1},{\"a\":2}]");
        assert!(Json::init(serde_json::json!({})).is_err(), "a second init is refused");
    }
}
