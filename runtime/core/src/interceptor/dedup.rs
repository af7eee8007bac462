//! The `dedup` interceptor: drops events whose key was already seen within `ttl` — the
//! building block of an HA pair, where two agents receive the same stream and the one
//! downstream keeps one copy.
//!
//! The key is a header (the event id by default), the body, or a JSON pointer into the body,
//! hashed to 128 bits. Keys of a batch enter the window only when the batch is committed: the
//! processor writes them as channel marks in the same commit as the events, so a RocksDB
//! channel keeps the window across restarts and an id is remembered only if its event was
//! stored. A batch that failed leaves the window as it was (its retry is not a duplicate).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasherDefault, Hash, Hasher},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Keys are already uniform 128-bit hashes: the table uses their low bits as they are
/// instead of hashing them again.
#[derive(Default)]
struct KeyBits(u64);

impl Hasher for KeyBits {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, k: u128) {
        self.0 = k as u64;
    }
}

type Table<V> = HashMap<u128, V, BuildHasherDefault<KeyBits>>;

use super::{InterceptError, Interceptor};
use crate::{channel::Mark, dlq::DeadLetter, event::Event};

/// What identifies an event.
#[derive(Debug, Clone)]
pub enum Key {
    Header(String),
    Body,
    /// A JSON pointer into the body; events whose body is not JSON, or lacks it, pass.
    Json(String),
}

pub struct Dedup {
    key: Key,
    ttl: Duration,
    max_keys: usize,
    /// Key → when it expires (ms since the epoch).
    seen: Table<u64>,
    /// Keys in the order they were committed, to expire and evict the oldest.
    order: VecDeque<(u128, u64)>,
    /// Keys of the batch in flight (and, to find repeats within it, as a set).
    pending: Vec<(u128, u64)>,
    in_batch: HashSet<u128, BuildHasherDefault<KeyBits>>,
    /// Keys forgotten since the last commit, whose marks are to be deleted.
    forgotten: Vec<u128>,
    prefix: String,
}

impl Dedup {
    pub fn new(key: Key, ttl: Duration, max_keys: usize) -> Self {
        Dedup {
            key,
            ttl,
            max_keys: max_keys.max(1),
            seen: Table::default(),
            order: VecDeque::new(),
            pending: Vec::new(),
            in_batch: HashSet::default(),
            forgotten: Vec::new(),
            prefix: String::new(),
        }
    }

    fn key_of(&self, e: &Event) -> Option<u128> {
        let hash = |bytes: &[u8]| {
            let half = |salt: u8| {
                let mut h = std::hash::DefaultHasher::new();
                salt.hash(&mut h);
                bytes.hash(&mut h);
                h.finish()
            };
            (u128::from(half(1)) << 64) | u128::from(half(2))
        };
        match &self.key {
            Key::Header(h) => e.headers.get(h).map(|v| hash(v.as_bytes())),
            Key::Body => Some(hash(&e.body)),
            Key::Json(p) => {
                let v: serde_json::Value = serde_json::from_slice(&e.body).ok()?;
                let at = v.pointer(p)?;
                Some(hash(at.to_string().as_bytes()))
            }
        }
    }

    /// Forgets expired keys, and the oldest beyond `max_keys`.
    fn expire(&mut self, now: u64) {
        while let Some(&(k, until)) = self.order.front() {
            if until > now && self.seen.len() <= self.max_keys {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&until) {
                self.seen.remove(&k);
                self.forgotten.push(k);
            }
        }
    }

    fn remember(&mut self, k: u128, until: u64) {
        self.seen.insert(k, until);
        self.order.push_back((k, until));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Interceptor for Dedup {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        _rejected: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        let now = now_ms();
        self.expire(now);
        self.pending.clear();
        self.in_batch.clear();
        let until = now + self.ttl.as_millis() as u64;
        let keys: Vec<Option<u128>> = batch.iter().map(|e| self.key_of(e)).collect();
        let mut keep = keys.iter().map(|k| match k {
            // Events without a key pass.
            None => true,
            Some(k) => {
                // Not in the window (or expired there), and the first of its batch.
                let fresh = self.seen.get(k).is_none_or(|&t| t <= now) && self.in_batch.insert(*k);
                if fresh {
                    self.pending.push((*k, until));
                }
                fresh
            }
        });
        batch.retain(|_| keep.next().unwrap_or(true));
        Ok(())
    }

    fn keeps_marks(&self) -> bool {
        true
    }

    fn restore(&mut self, prefix: &str, marks: Vec<Mark>) {
        self.prefix = prefix.to_owned();
        let now = now_ms();
        let mut kept: Vec<(u128, u64)> = marks
            .into_iter()
            .filter_map(|m| {
                let k = u128::from_str_radix(m.key.strip_prefix(prefix)?, 16).ok()?;
                let until = u64::from_be_bytes(m.value.try_into().ok()?);
                Some((k, until))
            })
            .collect();
        kept.sort_by_key(|(_, until)| *until);
        for (k, until) in kept {
            if until > now {
                self.remember(k, until);
            } else {
                self.forgotten.push(k);
            }
        }
    }

    fn marks(&mut self, out: &mut Vec<Mark>) {
        for (k, until) in &self.pending {
            out.push(Mark {
                key: format!("{}{k:032x}", self.prefix),
                value: until.to_be_bytes().to_vec(),
            });
        }
        for k in &self.forgotten {
            out.push(Mark {
                key: format!("{}{k:032x}", self.prefix),
                value: Vec::new(),
            });
        }
    }

    fn settled(&mut self, committed: bool) {
        if committed {
            self.forgotten.clear();
            for (k, until) in std::mem::take(&mut self.pending) {
                self.remember(k, until);
            }
            self.expire(now_ms());
        } else {
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut Dedup, bodies: &[&str], commit: bool) -> (Vec<String>, Vec<Mark>) {
        let mut batch: Vec<Event> = bodies
            .iter()
            .map(|b| Event::new(b.to_string()).with_header("sluice.id", b.to_string()))
            .collect();
        d.intercept(&mut batch, &mut Vec::new()).unwrap();
        let mut marks = Vec::new();
        d.marks(&mut marks);
        d.settled(commit);
        let kept = batch
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect();
        (kept, marks)
    }

    #[test]
    fn a_key_is_remembered_only_once_its_batch_is_committed() {
        let mut d = Dedup::new(
            Key::Header("sluice.id".into()),
            Duration::from_secs(60),
            100,
        );
        d.restore("p/", Vec::new());
        let (kept, marks) = run(&mut d, &["a", "b", "a"], false);
        assert_eq!(kept, ["a", "b"], "a repeat within a batch is dropped");
        assert_eq!(marks.len(), 2);
        // Not committed: the retry passes whole.
        let (kept, _) = run(&mut d, &["a", "b"], true);
        assert_eq!(kept, ["a", "b"]);
        let (kept, marks) = run(&mut d, &["a", "c", "b"], true);
        assert_eq!(kept, ["c"]);
        assert!(marks.iter().all(|m| m.key.starts_with("p/")), "{marks:?}");
    }

    #[test]
    fn the_window_comes_back_from_marks_and_forgets_by_age_and_count() {
        let mut d = Dedup::new(Key::Body, Duration::from_secs(60), 2);
        d.restore("p/", Vec::new());
        let (_, m1) = run(&mut d, &["a"], true);
        let (_, m2) = run(&mut d, &["b"], true);
        let mut back = Dedup::new(Key::Body, Duration::from_secs(60), 2);
        back.restore("p/", [m1, m2].concat());
        assert_eq!(run(&mut back, &["a", "b", "x"], true).0, ["x"]);
        // Three keys with max_keys 2: the oldest (a) is forgotten, and its mark deleted.
        let (kept, marks) = run(&mut back, &["a", "y"], true);
        assert_eq!(kept, ["a", "y"]);
        assert!(marks.iter().any(|m| m.value.is_empty()), "{marks:?}");
        // Expired marks are not restored.
        let old = Mark {
            key: format!("p/{:032x}", 7u128),
            value: 1u64.to_be_bytes().to_vec(),
        };
        let mut fresh = Dedup::new(Key::Body, Duration::from_secs(60), 10);
        fresh.restore("p/", vec![old]);
        assert!(fresh.seen.is_empty());
    }

    #[test]
    fn json_keys_and_keyless_events() {
        let mut d = Dedup::new(Key::Json("/id".into()), Duration::from_secs(60), 10);
        d.restore("p/", Vec::new());
        let mut batch = vec![
            Event::new(r#"{"id":1,"v":"a"}"#),
            Event::new(r#"{"id":1,"v":"b"}"#),
            Event::new("not json"),
            Event::new("not json"),
        ];
        d.intercept(&mut batch, &mut Vec::new()).unwrap();
        assert_eq!(batch.len(), 3, "same id dropped; events without a key pass");
    }
}
