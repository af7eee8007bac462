//! Events: a small header map plus a byte body, moved in batches.
//!
//! Headers are a vector of pairs rather than a hash map: events carry a handful of headers,
//! for which a linear scan beats hashing and an empty map costs no allocation.

pub mod codec;
pub mod template;

use bytes::Bytes;

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

    pub fn with_header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
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
pub struct Headers(Vec<(String, String)>);

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

    /// Sets `key`, replacing an existing value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// [`insert`](Self::insert) from borrowed text: allocates the key only when it is new and
    /// reuses the old value's buffer when it fits.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.0.push((key.to_owned(), value.to_owned())),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
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

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
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
}
