//! `redact`: masks sensitive data in event bodies before it reaches a channel.
//!
//! ```yaml
//! plugins:
//!   redact:
//!     path: redact.wasm
//!     config:
//!       # Object keys masked at any depth; entries starting with `/` are JSON pointers
//!       # (RFC 6901) naming one place in the document instead.
//!       fields: [password, ssn, /user/email, /cards/0]
//!       # Regular expressions (Rust `regex` syntax) masked wherever they match.
//!       patterns: ['\b\d{4}([ -]?\d{4}){3}\b']
//!       mask: "***"          # the default
//! ```
//!
//! A JSON body keeps its structure: a masked field or pointer's value (whatever its type)
//! becomes the mask string, and patterns apply to each string value and to each number's
//! text (a number with a match becomes a string). Key order and number text are preserved.
//! A body that is not JSON gets only the patterns, applied to its bytes. An event with nothing
//! to mask is kept unchanged (nothing crosses the boundary back). Events changed per batch are
//! counted in the plugin counter `redacted`.
//!
//! This plugin never drops or rejects events: it only rewrites bodies.

use std::{collections::HashSet, sync::OnceLock};

use regex::bytes::Regex;
use serde::Deserialize;
use serde_json::Value;
use sluice_guest::{Error, Event, Verdict};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Key names masked at any depth, or JSON pointers (entries starting with `/`).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Regular expressions masked in the body.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// What replaces a masked value or match.
    #[serde(default = "default_mask")]
    pub mask: String,
}

fn default_mask() -> String {
    "***".to_owned()
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Redactor {
    names: HashSet<String>,
    pointers: Vec<String>,
    patterns: Vec<Regex>,
    mask: String,
    /// Quick rejection for JSON bodies when only keys are configured: matches `"key"` for
    /// every key name and every pointer's last key. `None` when a pointer ends in an index.
    key_filter: Option<Regex>,
}

impl Redactor {
    pub fn new(cfg: Config) -> Result<Self, Error> {
        if cfg.fields.is_empty() && cfg.patterns.is_empty() {
            return Err(Error::new("redact: nothing to redact: set `fields` and/or `patterns`"));
        }
        let mut names = HashSet::new();
        let mut pointers = Vec::new();
        let mut filter_keys = Vec::new();
        let mut filterable = true;
        for f in cfg.fields {
            if f.is_empty() {
                return Err(Error::new("redact: empty entry in `fields`"));
            }
            if f.starts_with('/') {
                match last_key(&f) {
                    Some(k) => filter_keys.push(k),
                    None => filterable = false,
                }
                pointers.push(f);
            } else {
                filter_keys.push(f.clone());
                names.insert(f);
            }
        }
        let patterns = cfg
            .patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| Error::new(format!("redact: pattern `{p}`: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let key_filter = if filterable && !filter_keys.is_empty() {
            let alts: Vec<String> = filter_keys.iter().map(|k| regex::escape(k)).collect();
            Some(Regex::new(&format!("\"(?:{})\"", alts.join("|"))).map_err(|e| Error::new(format!("redact: {e}")))?)
        } else {
            None
        };
        Ok(Redactor { names, pointers, patterns, mask: cfg.mask, key_filter })
    }

    /// The redacted body, or `None` when nothing in it had to be masked.
    pub fn redact(&self, body: &[u8]) -> Option<Vec<u8>> {
        if self.patterns.is_empty() && !self.may_hold_keys(body) {
            return None;
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(mut doc) => {
                if self.redact_json(&mut doc) {
                    serde_json::to_vec(&doc).ok()
                } else {
                    None
                }
            }
            Err(_) => self.redact_text(body),
        }
    }

    /// False only when the body certainly holds none of the configured keys: with no
    /// backslash in it, a key can only appear literally between quotes.
    fn may_hold_keys(&self, body: &[u8]) -> bool {
        match &self.key_filter {
            Some(f) => body.contains(&b'\\') || f.is_match(body),
            None => true,
        }
    }

    fn mask_value(&self, slot: &mut Value) -> bool {
        if matches!(slot, Value::String(s) if *s == self.mask) {
            return false;
        }
        *slot = Value::String(self.mask.clone());
        true
    }

    fn redact_json(&self, doc: &mut Value) -> bool {
        let mut changed = false;
        for p in &self.pointers {
            if let Some(slot) = doc.pointer_mut(p) {
                changed |= self.mask_value(slot);
            }
        }
        changed | self.walk(doc)
    }

    fn walk(&self, v: &mut Value) -> bool {
        match v {
            Value::Object(map) => {
                let mut changed = false;
                for (k, child) in map.iter_mut() {
                    changed |= if self.names.contains(k) { self.mask_value(child) } else { self.walk(child) };
                }
                changed
            }
            Value::Array(items) => items.iter_mut().fold(false, |c, item| self.walk(item) | c),
            Value::String(s) => match self.redact_text(s.as_bytes()) {
                Some(out) => {
                    *s = String::from_utf8_lossy(&out).into_owned();
                    true
                }
                None => false,
            },
            Value::Number(n) if !self.patterns.is_empty() => {
                let text = n.to_string();
                match self.redact_text(text.as_bytes()) {
                    Some(out) => {
                        *v = Value::String(String::from_utf8_lossy(&out).into_owned());
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    /// Applies every pattern in turn; empty matches are ignored (they would insert the mask
    /// between characters).
    fn redact_text(&self, text: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for re in &self.patterns {
            let src = current.as_deref().unwrap_or(text);
            let mut out = Vec::new();
            let mut last = 0;
            for m in re.find_iter(src).filter(|m| !m.is_empty()) {
                out.extend_from_slice(&src[last..m.start()]);
                out.extend_from_slice(self.mask.as_bytes());
                last = m.end();
            }
            if last > 0 {
                out.extend_from_slice(&src[last..]);
                current = Some(out);
            }
        }
        current
    }
}

/// The key a pointer ends in (unescaped), or `None` when it ends in an array index (or `-`).
fn last_key(pointer: &str) -> Option<String> {
    let seg = pointer.rsplit('/').next()?;
    if seg == "-" || (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(seg.replace("~1", "/").replace("~0", "~"))
}

static REDACTOR: OnceLock<Redactor> = OnceLock::new();

pub fn setup(cfg: Config) -> Result<(), Error> {
    REDACTOR.set(Redactor::new(cfg)?).map_err(|_| Error::new("redact: init called twice"))
}

#[sluice_guest::interceptor(batch, init = setup)]
pub fn redact(events: Vec<Event>) -> Result<Vec<Verdict>, Error> {
    let Some(r) = REDACTOR.get() else {
        return Err(Error::new("redact: not initialised"));
    };
    let mut changed = 0;
    let out = events
        .into_iter()
        .map(|mut ev| {
            if let Some(body) = r.redact(ev.body()) {
                ev.set_body(body);
                changed += 1;
            }
            Verdict::Keep(ev)
        })
        .collect();
    if changed > 0 {
        sluice_guest::counter_add("redacted", changed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{parts, run_batch_interceptor};

    fn redactor(config: &str) -> Redactor {
        Redactor::new(serde_json::from_str(config).unwrap()).unwrap()
    }

    fn text(r: &Redactor, body: &str) -> Option<String> {
        r.redact(body.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn masks_field_names_at_any_depth_keeping_order() {
        let r = redactor(r#"{"fields": ["password", "token"]}"#);
        let out = text(&r, r#"{"z":1,"password":"hunter2","a":{"token":{"x":1},"list":[{"password":7}]}}"#);
        assert_eq!(out.as_deref(), Some(r#"{"z":1,"password":"***","a":{"token":"***","list":[{"password":"***"}]}}"#));
    }

    #[test]
    fn masks_json_pointers_only_where_they_point() {
        let r = redactor(r#"{"fields": ["/user/email", "/cards/0", "/a~1b"], "mask": "[x]"}"#);
        let out = text(&r, r#"{"email":"keep","user":{"email":"e@x"},"cards":["1","2"],"a/b":3}"#);
        assert_eq!(out.as_deref(), Some(r#"{"email":"keep","user":{"email":"[x]"},"cards":["[x]","2"],"a/b":"[x]"}"#));
        assert_eq!(text(&r, r#"{"user":{"name":"n"},"cards":[]}"#), None, "missing pointers change nothing");
    }

    #[test]
    fn patterns_apply_to_strings_and_numbers_in_json() {
        let r = redactor(r#"{"patterns": ["\\d{4}-\\d{4}", "secret"]}"#);
        let out = text(&r, r#"{"note":"card 1234-5678 ok","n":1.50,"k":"a secret b","id":12345678}"#);
        assert_eq!(out.as_deref(), Some(r#"{"note":"card *** ok","n":1.50,"k":"a *** b","id":12345678}"#));
        let r = redactor(r#"{"patterns": ["\\d{8}"]}"#);
        assert_eq!(text(&r, r#"{"id":12345678}"#).as_deref(), Some(r#"{"id":"***"}"#));
    }

    #[test]
    fn non_json_bodies_get_only_patterns() {
        let r = redactor(r#"{"fields": ["password"], "patterns": ["password=\\S+"]}"#);
        assert_eq!(text(&r, "login password=hunter2 ok").as_deref(), Some("login *** ok"));
        assert_eq!(r.redact(b"\xff\xfe password=x"), Some(b"\xff\xfe ***".to_vec()), "works on non-UTF-8");
        let keys_only = redactor(r#"{"fields": ["password"]}"#);
        assert_eq!(text(&keys_only, "password=hunter2"), None);
    }

    #[test]
    fn escaped_keys_are_not_missed_by_the_prefilter() {
        let r = redactor(r#"{"fields": ["password"]}"#);
        assert_eq!(text(&r, r#"{"p\u0061ssword":"x"}"#).as_deref(), Some(r#"{"password":"***"}"#));
        assert_eq!(text(&r, r#"{"user":"password"}"#), None, "a value equal to a key name is not a key");
    }

    #[test]
    fn unchanged_events_stay_unchanged() {
        let r = redactor(r#"{"fields": ["password"], "patterns": ["x{3}"]}"#);
        assert_eq!(text(&r, r#"{"a":"b"}"#), None);
        assert_eq!(text(&r, r#"{"password":"***"}"#), None, "already masked");
        assert_eq!(text(&r, "plain text"), None);
        let empty = redactor(r#"{"patterns": ["a*"]}"#);
        assert_eq!(text(&empty, "bbb"), None, "empty matches are ignored");
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = |c: &str| Redactor::new(serde_json::from_str(c).unwrap()).unwrap_err().0;
        assert!(err(r#"{"patterns": ["(unclosed"]}"#).contains("(unclosed"));
        assert!(err("{}").contains("nothing to redact"));
        assert!(err(r#"{"fields": [""]}"#).contains("empty"));
        assert!(serde_json::from_str::<Config>(r#"{"field": ["a"]}"#).is_err(), "unknown keys are refused");
    }

    #[test]
    fn batch_entry_point_keeps_every_event() {
        setup(serde_json::from_str(r#"{"fields": ["ssn"]}"#).unwrap()).unwrap();
        let events = [Event::new(r#"{"ssn":"1"}"#).with_header("k", "v"), Event::new("not json")];
        let out = run_batch_interceptor(redact, &events).unwrap();
        let Verdict::Keep(a) = &out[0] else { panic!("{out:?}") };
        assert_eq!(parts(a), (vec![("k".into(), "v".into())], r#"{"ssn":"***"}"#.into()));
        let Verdict::Keep(b) = &out[1] else { panic!("{out:?}") };
        assert_eq!(parts(b).1, "not json");
    }
}
