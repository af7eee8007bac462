//! Header interceptors: timestamp, static/host, remove_header, uuid.

use super::{InterceptError, Interceptor};
use crate::{
    dlq::DeadLetter,
    event::{Event, HeaderText, SharedChange},
};

pub(super) struct Timestamp {
    pub header: String,
    pub preserve: bool,
}

impl Interceptor for Timestamp {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        _: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        // One clock read per batch: events of a batch arrived together.
        let now = HeaderText::new(chrono::Utc::now().timestamp_millis().to_string());
        let mut change = SharedChange::default();
        for e in batch.iter_mut() {
            if !(self.preserve && e.headers.contains(&self.header)) {
                change.apply(&mut e.headers, |h| {
                    h.insert(self.header.as_str(), now.clone())
                });
            }
        }
        Ok(())
    }
}

/// A fixed header; also serves `host` with the host name resolved once at build.
pub(super) struct Static {
    pub key: String,
    pub value: String,
    pub preserve: bool,
}

impl Interceptor for Static {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        _: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        let mut change = SharedChange::default();
        for e in batch.iter_mut() {
            if !(self.preserve && e.headers.contains(&self.key)) {
                change.apply(&mut e.headers, |h| h.set(&self.key, &self.value));
            }
        }
        Ok(())
    }
}

pub(super) struct RemoveHeader {
    pub names: Vec<String>,
    pub matching: Option<regex::Regex>,
}

impl Interceptor for RemoveHeader {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        _: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        for e in batch.iter_mut() {
            e.headers.retain(|k, _| {
                !self.names.iter().any(|n| n == k)
                    && !self.matching.as_ref().is_some_and(|r| r.is_match(k))
            });
        }
        Ok(())
    }
}

pub(super) struct Uuid {
    pub header: String,
    pub preserve: bool,
}

impl Interceptor for Uuid {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        _: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        for e in batch.iter_mut() {
            if !(self.preserve && e.headers.contains(&self.header)) {
                e.headers
                    .insert(self.header.as_str(), uuid::Uuid::new_v4().to_string());
            }
        }
        Ok(())
    }
}
