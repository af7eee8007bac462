//! The guest's view of events and verdicts.
//!
//! An event received from the host is not copied out of the host's batch buffer: it is a pair
//! of ranges into that buffer plus the changes made to it. Keeping it sends back only those
//! changes (one byte when there are none), so an interceptor that adds a header costs one
//! small allocation per event instead of a copy of every header and body.

use std::sync::Arc;

use crate::{Error, recycled::RecycledBuf};

/// Header change tags, as in a patch verdict (`wit/PACKED.md`).
pub(crate) const OP_SET: u8 = 0;
pub(crate) const OP_REMOVE: u8 = 1;

/// One event: headers (unique names, in order) and a body.
#[derive(Clone)]
pub struct Event(pub(crate) Repr);

#[derive(Clone)]
pub(crate) enum Repr {
    /// Built by the plugin (`Event::new`, a codec's decode): sent back whole.
    Fresh {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// As the host sent it, plus changes.
    Received(Received),
}

#[derive(Clone)]
pub(crate) struct Received {
    /// The host's whole batch (shared by all its events).
    pub(crate) batch: Arc<Vec<u8>>,
    /// The header block (length-prefixed name/value pairs) in `batch`.
    pub(crate) headers: (usize, usize),
    pub(crate) header_count: u16,
    pub(crate) body: (usize, usize),
    /// Header changes in the patch layout (`0 name value` sets, `1 name` removes), in order.
    pub(crate) ops: RecycledBuf,
    pub(crate) op_count: u16,
    pub(crate) new_body: Option<Vec<u8>>,
}

/// Reads one length-prefixed string from the front of `b`. The host's batch is bounds-checked
/// when it is decoded and ops are written by this module, so a short field cannot occur. The
/// host only sends UTF-8 (its headers are Rust strings); were a field not UTF-8, it would read
/// as empty rather than panic.
pub(crate) fn next_str<'a>(b: &mut &'a [u8]) -> &'a str {
    let Some((len, rest)) = b.split_first_chunk::<4>() else {
        *b = &[];
        return "";
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        *b = &[];
        return "";
    }
    let (s, rest) = rest.split_at(len);
    *b = rest;
    std::str::from_utf8(s).unwrap_or("")
}

/// The name/value pairs of a packed header block.
struct PackedPairs<'a>(&'a [u8]);

impl<'a> Iterator for PackedPairs<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let k = next_str(&mut self.0);
        let v = next_str(&mut self.0);
        Some((k, v))
    }
}

/// The recorded changes: `(name, Some(value))` for a set, `(name, None)` for a remove.
struct Ops<'a>(&'a [u8]);

impl<'a> Iterator for Ops<'a> {
    type Item = (&'a str, Option<&'a str>);
    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.0.split_first()?;
        self.0 = rest;
        let name = next_str(&mut self.0);
        Some(if tag == OP_SET {
            (name, Some(next_str(&mut self.0)))
        } else {
            (name, None)
        })
    }
}

#[inline]
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Received {
    fn packed(&self) -> PackedPairs<'_> {
        PackedPairs(&self.batch[self.headers.0..self.headers.1])
    }

    fn ops(&self) -> Ops<'_> {
        Ops(&self.ops)
    }

    fn header(&self, name: &str) -> Option<&str> {
        // The last change of `name` decides; without one, the host's value stands.
        match self.ops().filter(|(k, _)| *k == name).last() {
            Some((_, v)) => v,
            None => self.packed().find(|(k, _)| *k == name).map(|(_, v)| v),
        }
    }

    /// The headers with the changes applied in order, as the host will apply them.
    fn current_headers(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self.packed().collect();
        for (name, value) in self.ops() {
            let at = out.iter().position(|(k, _)| *k == name);
            match (value, at) {
                (Some(v), Some(i)) => out[i].1 = v,
                (Some(v), None) => out.push((name, v)),
                (None, Some(i)) => {
                    out.remove(i);
                }
                (None, None) => {}
            }
        }
        out
    }

    #[inline]
    fn body(&self) -> &[u8] {
        match &self.new_body {
            Some(b) => b,
            None => &self.batch[self.body.0..self.body.1],
        }
    }
}

impl Event {
    /// A new event (e.g. for `Verdict::Split` or a codec's `decode`).
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Event(Repr::Fresh {
            headers: Vec::new(),
            body: body.into(),
        })
    }

    /// An event built from owned parts (a codec's or selector's input).
    pub(crate) fn from_parts(headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Event(Repr::Fresh { headers, body })
    }

    pub fn with_header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.set_header(name, value);
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        match &self.0 {
            Repr::Fresh { headers, .. } => headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            Repr::Received(r) => r.header(name),
        }
    }

    /// The headers in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        enum It<'a> {
            Owned(std::slice::Iter<'a, (String, String)>),
            Packed(PackedPairs<'a>),
            Changed(std::vec::IntoIter<(&'a str, &'a str)>),
        }
        impl<'a> Iterator for It<'a> {
            type Item = (&'a str, &'a str);
            fn next(&mut self) -> Option<Self::Item> {
                match self {
                    It::Owned(i) => i.next().map(|(k, v)| (k.as_str(), v.as_str())),
                    It::Packed(i) => i.next(),
                    It::Changed(i) => i.next(),
                }
            }
        }
        match &self.0 {
            Repr::Fresh { headers, .. } => It::Owned(headers.iter()),
            Repr::Received(r) if r.op_count == 0 => It::Packed(r.packed()),
            Repr::Received(r) => It::Changed(r.current_headers().into_iter()),
        }
    }

    /// Sets a header, replacing an existing value.
    pub fn set_header(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        let (name, value) = (name.as_ref(), value.as_ref());
        self.make_room_for_an_op();
        match &mut self.0 {
            Repr::Fresh { headers, .. } => match headers.iter_mut().find(|(k, _)| k == name) {
                Some(slot) => value.clone_into(&mut slot.1),
                None => headers.push((name.to_owned(), value.to_owned())),
            },
            Repr::Received(r) => {
                let ops = r.ops.get_mut();
                ops.reserve(9 + name.len() + value.len());
                ops.push(OP_SET);
                put_str(ops, name);
                put_str(ops, value);
                r.op_count += 1;
            }
        }
    }

    /// Removes a header, returning its value.
    pub fn remove_header(&mut self, name: &str) -> Option<String> {
        self.make_room_for_an_op();
        match &mut self.0 {
            Repr::Fresh { headers, .. } => {
                let i = headers.iter().position(|(k, _)| k == name)?;
                Some(headers.remove(i).1)
            }
            Repr::Received(r) => {
                let old = r.header(name)?.to_owned();
                let ops = r.ops.get_mut();
                ops.push(OP_REMOVE);
                put_str(ops, name);
                r.op_count += 1;
                Some(old)
            }
        }
    }

    /// A patch counts its changes in 16 bits; past that the event is sent back whole.
    #[inline]
    fn make_room_for_an_op(&mut self) {
        if matches!(&self.0, Repr::Received(r) if r.op_count == u16::MAX) {
            let (headers, body) = std::mem::take(self).into_parts();
            *self = Event::from_parts(headers, body);
        }
    }

    #[inline]
    pub fn body(&self) -> &[u8] {
        match &self.0 {
            Repr::Fresh { body, .. } => body,
            Repr::Received(r) => r.body(),
        }
    }

    /// The body as UTF-8 text.
    pub fn body_str(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(self.body())?)
    }

    /// Parses the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(self.body())?)
    }

    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
        match &mut self.0 {
            Repr::Fresh { body: b, .. } => *b = body.into(),
            Repr::Received(r) => r.new_body = Some(body.into()),
        }
    }

    /// Headers and body, owned, for codecs that hand events over whole.
    pub fn into_parts(self) -> (Vec<(String, String)>, Vec<u8>) {
        match self.0 {
            Repr::Fresh { headers, body } => (headers, body),
            Repr::Received(r) => {
                let headers = r
                    .current_headers()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                let body = match r.new_body {
                    Some(b) => b,
                    None => r.batch[r.body.0..r.body.1].to_vec(),
                };
                (headers, body)
            }
        }
    }

    /// True when nothing was changed since the host sent it.
    pub fn is_unchanged(&self) -> bool {
        matches!(&self.0, Repr::Received(r) if r.op_count == 0 && r.new_body.is_none())
    }
}

impl Default for Event {
    fn default() -> Self {
        Event::new(Vec::new())
    }
}

impl PartialEq for Event {
    /// Equal when headers (in order) and body are; how the event is held does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.body() == other.body() && self.headers().eq(other.headers())
    }
}

impl Eq for Event {}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body", &String::from_utf8_lossy(self.body()))
            .finish()
    }
}

/// An interceptor's decision for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the event (possibly modified).
    Keep(Event),
    /// Replace it by these events.
    Split(Vec<Event>),
    /// Discard it on purpose.
    Drop,
    /// Poison: to the dead-letter channel with this reason.
    Reject(String),
    /// Fail the whole batch now; the source retries it later.
    Retry(String),
}

/// A selector's decision for one event: indices into the channel list given to `init`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub required: Vec<u32>,
    pub optional: Vec<u32>,
}

impl Route {
    pub fn to(required: impl IntoIterator<Item = u32>) -> Self {
        Route {
            required: required.into_iter().collect(),
            optional: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packed::{decode_batch, encode_batch};

    fn received(e: Event) -> Event {
        decode_batch(encode_batch(&[e])).unwrap().remove(0)
    }

    #[test]
    fn received_events_read_like_fresh_ones_after_the_same_changes() {
        let base = || {
            Event::new("body")
                .with_header("a", "1")
                .with_header("b", "2")
        };
        let (mut fresh, mut got) = (base(), received(base()));
        assert!(got.is_unchanged() && !fresh.is_unchanged());
        assert_eq!(got, fresh);
        for e in [&mut fresh, &mut got] {
            e.set_header("c", "3");
            e.set_header("a", "one");
            assert_eq!(e.remove_header("b").as_deref(), Some("2"));
            assert_eq!(e.remove_header("zz"), None);
            e.set_header("b", "again");
        }
        assert_eq!(got, fresh, "same headers in the same order");
        assert_eq!(got.header("a"), Some("one"));
        assert_eq!(got.header("b"), Some("again"));
        assert!(!got.is_unchanged());
        assert_eq!(
            got.clone().into_parts(),
            fresh.clone().into_parts(),
            "owned parts agree"
        );
        got.set_body("new");
        assert_eq!(got.body(), b"new");
    }

    #[test]
    fn too_many_changes_turn_the_event_fresh_instead_of_overflowing() {
        let mut e = received(Event::new("x").with_header("k", "v"));
        for i in 0..u16::MAX as usize + 3 {
            e.set_header("n", i.to_string());
        }
        assert!(matches!(e.0, Repr::Fresh { .. }));
        assert_eq!(
            e.header("n"),
            Some((u16::MAX as usize + 2).to_string().as_str())
        );
        assert_eq!(e.header("k"), Some("v"));
    }
}
