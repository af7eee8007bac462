//! Body interceptors: regex_filter, regex_extractor, search_replace (bytes regexes, so
//! non-UTF-8 bodies are handled rather than rejected).

use bytes::Bytes;
use regex::bytes::Regex;

use super::{InterceptError, Interceptor};
use crate::{dlq::DeadLetter, event::Event};

pub(super) struct RegexFilter {
    pub regex: Regex,
    pub exclude: bool,
}

impl Interceptor for RegexFilter {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        _: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        batch.retain(|e| self.regex.is_match(&e.body) != self.exclude);
        Ok(())
    }
}

pub(super) struct RegexExtractor {
    pub regex: Regex,
    /// One header name per capture group, in order.
    pub headers: Vec<String>,
}

impl Interceptor for RegexExtractor {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        _: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        for e in batch.iter_mut() {
            let Some(caps) = self.regex.captures(&e.body) else {
                continue;
            };
            for (name, group) in self.headers.iter().zip(caps.iter().skip(1)) {
                if let Some(m) = group {
                    e.headers
                        .insert(name.as_str(), String::from_utf8_lossy(m.as_bytes()));
                }
            }
        }
        Ok(())
    }
}

pub(super) struct SearchReplace {
    pub search: Regex,
    pub replace: Vec<u8>,
}

impl Interceptor for SearchReplace {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        _: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        for e in batch.iter_mut() {
            if let std::borrow::Cow::Owned(new) =
                self.search.replace_all(&e.body, self.replace.as_slice())
            {
                e.body = Bytes::from(new);
            }
        }
        Ok(())
    }
}
