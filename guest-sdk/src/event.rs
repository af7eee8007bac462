//! The guest's view of events and verdicts.
//!
//! An [`Event`] remembers what was changed since the host sent it, so that keeping an event
//! sends back only the changed headers (or nothing at all) instead of the whole event.

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderOp {
    Set(String, String),
    Remove(String),
}

/// One event: headers (unique names, in order) and a body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Header changes since the host sent it (replayed by the host on keep).
    pub(crate) ops: Vec<HeaderOp>,
    pub(crate) body_changed: bool,
    /// Built by the plugin rather than received: sent back whole.
    pub(crate) fresh: bool,
}

impl Event {
    /// A new event (e.g. for `Verdict::Split` or a codec's `decode`).
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Event {
            body: body.into(),
            fresh: true,
            ..Event::default()
        }
    }

    /// An event as received from the host: unchanged until modified.
    pub(crate) fn received(headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Event {
            headers,
            body,
            ops: Vec::new(),
            body_changed: false,
            fresh: false,
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_header(name, value);
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets a header, replacing an existing value.
    pub fn set_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        if !self.fresh {
            self.ops.push(HeaderOp::Set(name.clone(), value.clone()));
        }
        match self.headers.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name, value)),
        }
    }

    pub fn remove_header(&mut self, name: &str) -> Option<String> {
        let i = self.headers.iter().position(|(k, _)| k == name)?;
        if !self.fresh {
            self.ops.push(HeaderOp::Remove(name.to_owned()));
        }
        Some(self.headers.remove(i).1)
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    pub fn body_str(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// Parses the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
        self.body = body.into();
        self.body_changed = true;
    }

    /// Headers and body, for codecs that hand events over whole.
    pub fn into_parts(self) -> (Vec<(String, String)>, Vec<u8>) {
        (self.headers, self.body)
    }

    /// True when nothing was changed since the host sent it.
    pub fn is_unchanged(&self) -> bool {
        !self.fresh && self.ops.is_empty() && !self.body_changed
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
