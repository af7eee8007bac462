//! Events: a small header map plus a byte body, moved in batches.
//!
//! Headers are a vector of pairs rather than a hash map: events carry a handful of headers,
//! for which a linear scan beats hashing. The vector is one pointer wide (its length and
//! capacity live in its allocation) and allocates nothing while empty, which keeps events
//! small for the moves through batches and channels; header text is a [`HeaderText`] (short
//! strings inline, longer ones shared), so an event's headers cost one allocation whatever
//! their number — the file source's path header, for one, is the same shared text on every
//! line of a file.

pub mod codec;
pub mod template;

use bytes::Bytes;
use thin_vec::ThinVec;

/// Header names and values: up to 23 bytes inline, longer text reference-counted, so a clone
/// never copies the text.
pub type HeaderText = smol_str::SmolStr;

/// One event: string headers and an opaque body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub headers: Headers,
    pub body: Bytes,
}

impl Event {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Event {
            headers: Headers::default(),
            body: body.into(),
        }
    }

    pub fn with_header(mut self, k: impl Into<HeaderText>, v: impl Into<HeaderText>) -> Self {
        self.headers.insert(k, v);
        self
    }

    /// Bytes this event accounts for in channel capacity (body + header text).
    pub fn size(&self) -> usize {
        self.body.len() + self.headers.byte_len()
    }
}

/// Header map with insertion order; keys are unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(ThinVec<(HeaderText, HeaderText)>);

impl Headers {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Sets `key`, replacing an existing value. Passing [`HeaderText`]s shares their text.
    pub fn insert(&mut self, key: impl Into<HeaderText>, value: impl Into<HeaderText>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// [`insert`](Self::insert) from borrowed text: makes a key only when it is new.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => {
                if slot.1 != value {
                    slot.1 = HeaderText::new(value);
                }
            }
            None => self.0.push((HeaderText::new(key), HeaderText::new(value))),
        }
    }

    /// Sets every header of `other`, sharing its text.
    pub fn insert_all(&mut self, other: &Headers) {
        for (k, v) in &other.0 {
            self.insert(k.clone(), v.clone());
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<HeaderText> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.0.retain(|(k, v)| keep(k, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl<K: Into<HeaderText>, V: Into<HeaderText>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Headers::default();
        for (k, v) in iter {
            h.insert(k, v);
        }
        h
    }
}

/// Total accounted size of a batch.
pub fn batch_size_bytes(batch: &[Event]) -> usize {
    batch.iter().map(Event::size).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_replace_and_remove() {
        let mut h = Headers::default();
        h.insert("a", "1");
        h.insert("b", "2");
        h.insert("a", "3");
        assert_eq!(h.get("a"), Some("3"));
        assert_eq!(h.len(), 2);
        assert_eq!(h.remove("a").as_deref(), Some("3"));
        assert!(!h.contains("a"));
        let e = Event::new("xyz").with_header("k", "vv");
        assert_eq!(e.size(), 6);
    }

    #[test]
    fn events_stay_small() {
        // Events move through batches and channels by value: a bigger one costs every move.
        assert_eq!(std::mem::size_of::<Event>(), 40);
    }

    #[test]
    fn long_header_text_is_shared_and_short_text_inline() {
        let path = HeaderText::new("/var/log/some/rather/long/application/file.log");
        let mut a = Headers::default();
        a.insert("file", path.clone());
        let b = a.clone();
        let (pa, pb) = (a.get("file").unwrap(), b.get("file").unwrap());
        assert_eq!(
            pa.as_ptr(),
            pb.as_ptr(),
            "a copied event shares the long value"
        );
        assert_eq!(pa.as_ptr(), path.as_ptr());
        assert!(!HeaderText::new("processed-by").is_heap_allocated());
        // Order is kept, and replacing keeps a key's place.
        let mut h = Headers::default();
        for i in 0..5 {
            h.insert(format!("k{i}"), i.to_string());
        }
        h.set("k1", "one");
        let order: Vec<_> = h.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(order, ["k0=0", "k1=one", "k2=2", "k3=3", "k4=4"]);
    }
}
