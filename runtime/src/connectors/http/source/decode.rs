//! Request body → events: `raw` (the body is one event), `lines`, `ndjson`, `json` (an array
//! is one event per element), or a Wasm `serde` plugin given the request's content type.
//!
//! Events share the body's buffer where they can (`raw`, `lines`, JSON elements that are not
//! envelopes), so a request is not copied once per event.

use bytes::Bytes;
use tokio::sync::Mutex;

use sluice_core::event::{
    Event,
    codec::{Codec, CodecName, decode_line_shared},
};

use crate::connectors::http::config::HttpCodec;

pub enum Decoder {
    Builtin(HttpCodec),
    /// One plugin instance, used by one request at a time.
    Plugin(Box<Mutex<Box<dyn Codec>>>),
}

impl Decoder {
    /// Decodes one request body; the error says why the request is malformed (answered 400).
    pub async fn decode(&self, body: Bytes, content_type: &str) -> Result<Vec<Event>, String> {
        match self {
            Decoder::Builtin(c) => decode(*c, body),
            Decoder::Plugin(p) => p.lock().await.decode_with_type(&body, content_type),
        }
    }
}

pub fn decode(codec: HttpCodec, body: Bytes) -> Result<Vec<Event>, String> {
    match codec {
        HttpCodec::Raw => Ok(vec![Event::new(body)]),
        HttpCodec::Lines => Ok(lines(&body)
            .map(|(_, r)| Event::new(body.slice(r)))
            .collect()),
        HttpCodec::Ndjson => lines(&body)
            .map(|(n, r)| {
                decode_line_shared(CodecName::Ndjson, body.slice(r))
                    .map_err(|e| format!("line {n}: {e}"))
            })
            .collect(),
        HttpCodec::Json => json(body),
    }
}

/// Non-blank lines as (1-based line number, byte range without the line ending).
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
    let mut start = 0;
    let mut n = 0;
    std::iter::from_fn(move || {
        while start < body.len() {
            n += 1;
            let end = body[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(body.len(), |i| start + i);
            let mut line_end = end;
            if line_end > start && body[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            let range = start..line_end;
            start = end + 1;
            if !body[range.clone()].iter().all(u8::is_ascii_whitespace) {
                return Some((n, range));
            }
        }
        None
    })
}

fn json(body: Bytes) -> Result<Vec<Event>, String> {
    // JSON's own whitespace (not form feed, which `is_ascii_whitespace` also counts).
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let first = body.iter().position(|b| !space(b));
    if let Some(first) = first.filter(|&i| body[i] == b'{') {
        // One object, the common webhook: decoding it checks the whole body in one pass.
        let end = body
            .iter()
            .rposition(|b| !space(b))
            .map_or(first, |i| i + 1);
        return Ok(vec![element(&body, first..end)?]);
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        .map_err(|e| format!("invalid JSON: {e}"))?;
    let Some(first) = first else {
        return Ok(Vec::new());
    };
    if body[first] != b'[' {
        let end = body
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(first, |i| i + 1);
        return Ok(vec![element(&body, first..end)?]);
    }
    array_elements(&body, first)
        .into_iter()
        .map(|r| element(&body, r))
        .collect()
}

/// An element: an object goes through the ndjson rules (an envelope becomes an event with
/// headers, any other object is the body as is); other values are the body as is.
fn element(body: &Bytes, r: std::ops::Range<usize>) -> Result<Event, String> {
    if body[r.start] == b'{' {
        decode_line_shared(CodecName::Ndjson, body.slice(r))
    } else {
        Ok(Event::new(body.slice(r)))
    }
}

/// Byte ranges of the elements of the array opening at `open` (the JSON is already known to
/// be valid, so only strings and nesting need tracking).
fn array_elements(b: &[u8], open: usize) -> Vec<std::ops::Range<usize>> {
    let trim_end = |mut end: usize| {
        while end > 0 && b[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        end
    };
    let mut out = Vec::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut start: Option<usize> = None;
    for (i, &c) in b.iter().enumerate().skip(open + 1) {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                start.get_or_insert(i);
            }
            b'[' | b'{' => {
                depth += 1;
                start.get_or_insert(i);
            }
            b']' | b'}' if depth > 0 => depth -= 1,
            b']' => {
                if let Some(s) = start.take() {
                    out.push(s..trim_end(i));
                }
                break;
            }
            b',' if depth == 0 => {
                if let Some(s) = start.take() {
                    out.push(s..trim_end(i));
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect()
    }

    #[test]
    fn raw_is_one_event_sharing_the_buffer() {
        let body = Bytes::from_static(b"{\"a\":1}\n{\"b\":2}");
        let ev = decode(HttpCodec::Raw, body.clone()).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].body.as_ptr(), body.as_ptr(), "no copy");
    }

    #[test]
    fn lines_and_ndjson_skip_blank_lines_and_name_the_bad_one() {
        let body = Bytes::from_static(b"a\r\n\n  \nb\n");
        assert_eq!(bodies(&decode(HttpCodec::Lines, body).unwrap()), ["a", "b"]);
        let nd =
            Bytes::from_static(b"{\"headers\":{\"k\":\"v\"},\"body\":\"x\"}\n\n{\"user\":1}\n");
        let ev = decode(HttpCodec::Ndjson, nd).unwrap();
        assert_eq!(bodies(&ev), ["x", "{\"user\":1}"]);
        assert_eq!(ev[0].headers.get("k"), Some("v"));
        let err = decode(HttpCodec::Ndjson, Bytes::from_static(b"{}\n\nnope\n")).unwrap_err();
        assert!(err.starts_with("line 3: invalid JSON"), "{err}");
    }

    #[test]
    fn json_arrays_split_into_elements() {
        let body = Bytes::from_static(
            br#" [ {"id":1,"tags":["a,]","b"]}, "s\"tr]", 3 , [1,[2]], {"body":"env","headers":{"h":"1"}}, null ] "#,
        );
        let ev = decode(HttpCodec::Json, body).unwrap();
        assert_eq!(
            bodies(&ev),
            [
                r#"{"id":1,"tags":["a,]","b"]}"#,
                r#""s\"tr]""#,
                "3",
                "[1,[2]]",
                "env",
                "null"
            ]
        );
        assert_eq!(ev[4].headers.get("h"), Some("1"));
        assert!(
            decode(HttpCodec::Json, Bytes::from_static(b"[]"))
                .unwrap()
                .is_empty()
        );
        let one = decode(HttpCodec::Json, Bytes::from_static(b"{\"a\":1}")).unwrap();
        assert_eq!(bodies(&one), ["{\"a\":1}"]);
        assert!(
            decode(HttpCodec::Json, Bytes::from_static(b"[1,"))
                .unwrap_err()
                .starts_with("invalid JSON")
        );
    }
}
