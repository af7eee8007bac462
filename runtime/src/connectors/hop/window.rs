//! The receiver's de-duplication window: for each sender (origin), the ranges of sender
//! positions already committed here.
//!
//! A sender numbers its events by its channel's positions, which stay the same when a batch
//! is sent again — after a lost answer, after the sender restarted, or re-cut into batches of
//! another size. The receiver stores only the events whose positions it has not committed, and
//! records the new range in the same commit as those events (as a channel [`Mark`]), so after
//! a crash the window and the channels agree. In-order delivery keeps one range per origin;
//! a few more appear while several batches of one origin are in flight at once.

use std::{collections::HashMap, ops::Range};

use sluice_core::channel::Mark;

/// Ranges kept per origin; beyond it the oldest (lowest) range is forgotten.
const MAX_RANGES: usize = 64;
/// Format byte of a stored window record.
const FORMAT: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ranges {
    /// Sorted, disjoint, non-adjacent `[start, end)`.
    spans: Vec<(u64, u64)>,
    /// When the origin was last seen (a counter), to forget the least recent.
    seen: u64,
}

impl Ranges {
    #[cfg(test)]
    fn covered(&self, p: u64) -> bool {
        let i = self.spans.partition_point(|&(_, end)| end <= p);
        self.spans.get(i).is_some_and(|&(start, _)| start <= p)
    }

    fn with(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut spans = Vec::with_capacity(self.spans.len() + 1);
        let (mut s, mut e) = (start, end);
        let mut placed = false;
        for &(a, b) in &self.spans {
            if b < s {
                spans.push((a, b));
            } else if a > e {
                if !placed {
                    spans.push((s, e));
                    placed = true;
                }
                spans.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            spans.push((s, e));
        }
        if spans.len() > MAX_RANGES {
            spans.drain(..spans.len() - MAX_RANGES);
        }
        spans
    }

    fn encode(spans: &[(u64, u64)]) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + spans.len() * 16);
        v.push(FORMAT);
        for (a, b) in spans {
            v.extend_from_slice(&a.to_be_bytes());
            v.extend_from_slice(&b.to_be_bytes());
        }
        v
    }

    fn decode(v: &[u8]) -> Option<Vec<(u64, u64)>> {
        let (&format, rest) = v.split_first()?;
        if format != FORMAT || rest.len() % 16 != 0 {
            return None;
        }
        let mut spans: Vec<(u64, u64)> = rest
            .chunks_exact(16)
            .filter_map(|c| {
                let a = u64::from_be_bytes(c[..8].try_into().ok()?);
                let b = u64::from_be_bytes(c[8..].try_into().ok()?);
                (a < b).then_some((a, b))
            })
            .collect();
        spans.sort_unstable();
        Some(spans)
    }
}

fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 { i += 1 } else { j += 1 }
    }
    out
}

/// Which events of a batch are new here.
#[derive(Debug, PartialEq, Eq)]
pub enum Fresh {
    All,
    /// Every event was committed before.
    None,
    /// Index ranges of the batch not committed before.
    Some(Vec<Range<usize>>),
}

/// What committing a batch changes in the window (applied with [`Window::record`] once the
/// commit succeeded).
pub struct Update {
    origin: String,
    spans: Vec<(u64, u64)>,
    forget: Option<String>,
    pub marks: Vec<Mark>,
}

pub struct Window {
    prefix: String,
    origins: HashMap<String, Ranges>,
    max_origins: usize,
    clock: u64,
}

impl Window {
    /// An empty window whose marks are stored under `prefix` (one per source).
    pub fn new(prefix: String, max_origins: usize) -> Self {
        Window {
            prefix,
            origins: HashMap::new(),
            max_origins: max_origins.max(1),
            clock: 0,
        }
    }

    /// The window as the channels committed it: an event counts as stored only if every
    /// channel that keeps marks says so (a crash between two channels' commits leaves the
    /// later one behind; its events are then stored again rather than lost). Channels that
    /// keep no marks (`None`) have nothing to say.
    pub fn load(&mut self, per_channel: Vec<Option<Vec<Mark>>>) {
        let mut merged: Option<HashMap<String, Vec<(u64, u64)>>> = None;
        for marks in per_channel.into_iter().flatten() {
            let here: HashMap<String, Vec<(u64, u64)>> = marks
                .into_iter()
                .filter_map(|m| {
                    let origin = m.key.strip_prefix(&self.prefix)?.to_owned();
                    Some((origin, Ranges::decode(&m.value)?))
                })
                .collect();
            merged = Some(match merged {
                None => here,
                Some(prev) => prev
                    .into_iter()
                    .filter_map(|(o, a)| {
                        let b = here.get(&o)?;
                        let both = intersect(&a, b);
                        (!both.is_empty()).then_some((o, both))
                    })
                    .collect(),
            });
        }
        for (origin, spans) in merged.unwrap_or_default() {
            self.clock += 1;
            self.origins.insert(
                origin,
                Ranges {
                    spans,
                    seen: self.clock,
                },
            );
        }
    }

    pub fn origins(&self) -> usize {
        self.origins.len()
    }

    pub fn max_origins(&self) -> usize {
        self.max_origins
    }

    /// Which of the `count` events from `position` on are not committed yet.
    pub fn fresh(&self, origin: &str, position: u64, count: usize) -> Fresh {
        let Some(r) = self.origins.get(origin) else {
            return Fresh::All;
        };
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut i = 0;
        while i < count {
            let p = position + i as u64;
            let j = r.spans.partition_point(|&(_, end)| end <= p);
            match r.spans.get(j) {
                Some(&(start, end)) if start <= p => {
                    // Covered up to `end`.
                    i = (end - position).min(count as u64) as usize;
                }
                next => {
                    let stop = next.map_or(count, |&(start, _)| {
                        (start - position).min(count as u64) as usize
                    });
                    out.push(i..stop);
                    i = stop;
                }
            }
        }
        match out.as_slice() {
            [] => Fresh::None,
            [r] if *r == (0..count) => Fresh::All,
            _ => Fresh::Some(out),
        }
    }

    /// The window once `[position, position + count)` of `origin` is committed, and the marks
    /// that record it.
    pub fn update(&self, origin: &str, position: u64, count: usize) -> Update {
        let end = position.saturating_add(count as u64);
        let (spans, forget) = match self.origins.get(origin) {
            Some(r) => (r.with(position, end), None),
            None => {
                let forget = (self.origins.len() >= self.max_origins)
                    .then(|| {
                        self.origins
                            .iter()
                            .min_by_key(|(_, r)| r.seen)
                            .map(|(o, _)| o.clone())
                    })
                    .flatten();
                (vec![(position, end)], forget)
            }
        };
        let mut marks = vec![Mark {
            key: format!("{}{origin}", self.prefix),
            value: Ranges::encode(&spans),
        }];
        if let Some(f) = &forget {
            marks.push(Mark {
                key: format!("{}{f}", self.prefix),
                value: Vec::new(),
            });
        }
        Update {
            origin: origin.to_owned(),
            spans,
            forget,
            marks,
        }
    }

    /// Applies a committed update.
    pub fn record(&mut self, u: Update) {
        if let Some(f) = u.forget {
            self.origins.remove(&f);
        }
        self.clock += 1;
        self.origins.insert(
            u.origin,
            Ranges {
                spans: u.spans,
                seen: self.clock,
            },
        );
    }

    #[cfg(test)]
    fn covered(&self, origin: &str, p: u64) -> bool {
        self.origins.get(origin).is_some_and(|r| r.covered(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One fresh range.
    fn some(start: usize, end: usize) -> Fresh {
        Fresh::Some(std::iter::once(start..end).collect())
    }

    fn commit(w: &mut Window, o: &str, p: u64, n: usize) -> Vec<Mark> {
        let u = w.update(o, p, n);
        let marks = u.marks.clone();
        w.record(u);
        marks
    }

    #[test]
    fn retries_and_rebatched_retries_store_only_what_is_new() {
        let mut w = Window::new("hop/in/".into(), 10);
        assert_eq!(w.fresh("a", 100, 10), Fresh::All);
        commit(&mut w, "a", 100, 10);
        assert_eq!(w.fresh("a", 100, 10), Fresh::None, "the same batch again");
        assert_eq!(w.fresh("a", 105, 3), Fresh::None, "a part of it");
        // Re-cut after a restart: the first 10 were stored, the rest are new.
        assert_eq!(w.fresh("a", 100, 25), some(10, 25));
        assert_eq!(w.fresh("b", 100, 10), Fresh::All, "other origins are apart");
        // Out of order (two batches in flight): a hole is new, both sides are not.
        commit(&mut w, "a", 120, 10);
        assert_eq!(w.fresh("a", 100, 30), some(10, 20));
        commit(&mut w, "a", 110, 10);
        assert_eq!(w.origins["a"].spans, vec![(100, 130)], "ranges merge");
        assert!(w.covered("a", 129) && !w.covered("a", 130) && !w.covered("a", 99));
    }

    #[test]
    fn a_restart_reads_back_what_every_channel_committed() {
        let mut w = Window::new("hop/in/".into(), 10);
        let m1 = commit(&mut w, "a", 0, 10);
        let m2 = commit(&mut w, "a", 10, 10);
        let mb = commit(&mut w, "b", 5, 5);
        // Channel 1 has both commits of `a`, channel 2 crashed before the second; a channel
        // without marks does not count.
        let ch1 = vec![m2[0].clone(), mb[0].clone()];
        let ch2 = vec![m1[0].clone(), mb[0].clone()];
        let mut back = Window::new("hop/in/".into(), 10);
        back.load(vec![Some(ch1), None, Some(ch2)]);
        assert_eq!(back.fresh("a", 0, 20), some(10, 20));
        assert_eq!(back.fresh("b", 5, 5), Fresh::None);
        // Marks of another source are not this window's.
        let mut other = Window::new("hop/other/".into(), 10);
        other.load(vec![Some(m2)]);
        assert_eq!(other.origins(), 0);
    }

    #[test]
    fn the_least_recent_origin_is_forgotten_with_a_delete_mark() {
        let mut w = Window::new("p/".into(), 2);
        commit(&mut w, "a", 0, 1);
        commit(&mut w, "b", 0, 1);
        commit(&mut w, "a", 1, 1);
        let marks = commit(&mut w, "c", 0, 1);
        assert_eq!(w.origins(), 2);
        assert_eq!(w.fresh("b", 0, 1), Fresh::All, "b was forgotten");
        assert_eq!(w.fresh("a", 0, 2), Fresh::None);
        assert!(marks.iter().any(|m| m.key == "p/b" && m.value.is_empty()));
    }

    #[test]
    fn ranges_are_bounded() {
        let mut w = Window::new("p/".into(), 2);
        for i in 0..200u64 {
            commit(&mut w, "a", i * 10, 1);
        }
        assert_eq!(w.origins["a"].spans.len(), MAX_RANGES);
        assert!(w.covered("a", 1990) && !w.covered("a", 0));
    }
}
