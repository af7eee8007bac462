//! Events: a small header map plus a byte body, moved in batches.
//!
//! Headers are a vector of pairs rather than a hash map: events carry a handful of headers,
//! for which a linear scan beats hashing. The map is one pointer wide and allocates nothing
//! while empty, which keeps events small for the moves through batches and channels; it is
//! shared copy-on-write, so copies of an event (and every line of one file) share one map;
//! header text is a [`HeaderText`] (short strings inline, longer ones shared).

pub mod codec;
pub mod template;

use std::sync::Arc;

use bytes::Bytes;

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

/// One header: name and value.
type Pair = (HeaderText, HeaderText);

/// Header map with insertion order; keys are unique.
///
/// Copy-on-write: a clone shares the pairs (one reference count, no allocation), and the first
/// change to a shared map copies it. So a source gives every line of a file the same headers
/// for the price of a counter, and the copies of a batch kept for a retry, a second channel or
/// a tap cost no allocation per event.
#[derive(Clone, Default)]
pub struct Headers(Option<Arc<Vec<Pair>>>);

impl Headers {
    fn pairs(&self) -> &[Pair] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The pairs to change, made this map's own first (with room for `extra` more).
    fn pairs_mut(&mut self, extra: usize) -> &mut Vec<Pair> {
        let shared = self.0.get_or_insert_with(Arc::default);
        if Arc::get_mut(shared).is_none() {
            let mut own = Vec::with_capacity(shared.len() + extra);
            own.extend(shared.iter().cloned());
            *shared = Arc::new(own);
        }
        // Unique now: just made, or copied above.
        Arc::make_mut(shared)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.pairs().iter().position(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key`, replacing an existing value. Passing [`HeaderText`]s shares their text.
    pub fn insert(&mut self, key: impl Into<HeaderText>, value: impl Into<HeaderText>) {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Some(i) if self.pairs()[i].1 == value => {}
            Some(i) => self.pairs_mut(0)[i].1 = value,
            None => self.pairs_mut(1).push((key, value)),
        }
    }

    /// [`insert`](Self::insert) from borrowed text: makes a key only when it is new.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.position(key) {
            Some(i) if self.pairs()[i].1 == value => {}
            Some(i) => self.pairs_mut(0)[i].1 = HeaderText::new(value),
            None => self
                .pairs_mut(1)
                .push((HeaderText::new(key), HeaderText::new(value))),
        }
    }

    /// Sets every header of `other`, sharing its text (and, when this map is empty, the whole
    /// map).
    pub fn insert_all(&mut self, other: &Headers) {
        if self.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        for (k, v) in other.pairs() {
            self.insert(k.clone(), v.clone());
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<HeaderText> {
        let i = self.position(key)?;
        Some(self.pairs_mut(0).remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        // A shared map is copied only when something goes.
        if self.pairs().iter().all(|(k, v)| keep(k, v)) {
            return;
        }
        self.pairs_mut(0).retain(|(k, v)| keep(k, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    fn byte_len(&self) -> usize {
        self.pairs().iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Whether this map has pairs no other event shares.
    fn is_own(&self) -> bool {
        matches!(&self.0, Some(a) if Arc::strong_count(a) == 1)
    }

    /// Whether both are the same shared map (or both empty): the same change to them gives the
    /// same result.
    fn same_map(&self, other: &Headers) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        }
    }
}

/// One change made to many events' headers (a static header, a filter's verdict): events that
/// shared their map before it (a file's lines) share the changed one after it, instead of a
/// copy each. Keep one per batch and per change.
#[derive(Default)]
pub struct SharedChange {
    last: Option<(Headers, Headers)>,
}

impl SharedChange {
    /// Makes `change` to `headers`, or gives them the result of the same change to the same
    /// map made last time.
    pub fn apply(&mut self, headers: &mut Headers, change: impl FnOnce(&mut Headers)) {
        if let Some((before, after)) = &self.last {
            if before.same_map(headers) {
                headers.clone_from(after);
                return;
            }
        }
        if headers.is_own() {
            // Nobody shares it: changed in place, and no other event can have it.
            change(headers);
            return;
        }
        let before = headers.clone();
        change(headers);
        self.last = Some((before, headers.clone()));
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.pairs() == other.pairs()
    }
}

impl Eq for Headers {}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Headers").field(&self.pairs()).finish()
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
    fn copies_share_until_changed_and_one_change_is_shared_by_same_maps() {
        let file: Headers = [("file", "/var/log/app.log")].into_iter().collect();
        let (mut a, mut b, mut other) = (file.clone(), file.clone(), Headers::default());
        assert!(a.same_map(&file), "a clone shares the map");
        a.insert("k", "1");
        assert!(!a.same_map(&file), "a change copies a shared map");
        assert_eq!(file.len(), 1, "the original is untouched");
        assert_eq!(a.get("k"), Some("1"));

        let mut change = SharedChange::default();
        let mut c = file.clone();
        change.apply(&mut b, |h| h.insert("env", "prod"));
        change.apply(&mut c, |h| h.insert("env", "prod"));
        assert!(
            b.same_map(&c),
            "the second event got the first one's result"
        );
        assert_eq!(c.get("env"), Some("prod"));
        assert_eq!(c.get("file"), Some("/var/log/app.log"));
        change.apply(&mut other, |h| h.insert("env", "prod"));
        assert_eq!(other.iter().collect::<Vec<_>>(), [("env", "prod")]);
        assert!(!other.same_map(&b), "another map is changed on its own");
        assert_eq!(file.len(), 1);
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
