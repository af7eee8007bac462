//! Jepsen's terms for a fault-injection run: events carry a self-checking body; after the
//! faults, what was sent, acknowledged upstream and delivered is classified as **lost**
//! (acknowledged, never delivered), **unexpected** (delivered, never sent), **corrupted** (a
//! body that is not one sent, or a torn line) or **duplicated** (delivered more than once).

use std::collections::{BTreeMap, BTreeSet};

/// The body of event `seq`: the number and a digest of it, so a body that was changed, cut
/// or glued to another is recognised.
pub fn body(seq: u64) -> String {
    let mut h = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    format!("{seq:010}:{h:016x}")
}

/// `Some(seq)` for a line that is exactly one event's body.
pub fn parse(line: &str) -> Option<u64> {
    let seq: u64 = line.split(':').next()?.parse().ok()?;
    (body(seq) == line).then_some(seq)
}

/// Figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub kills: usize,
    pub sent: usize,
    pub acknowledged: usize,
    pub delivered: usize,
    pub lost: usize,
    pub unexpected: usize,
    pub duplicated: usize,
    pub corrupted: usize,
}

impl Report {
    pub fn check(
        kills: usize,
        sent: &BTreeSet<u64>,
        acked: &BTreeSet<u64>,
        out: &[String],
    ) -> Self {
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        let mut corrupted = 0;
        for l in out {
            match parse(l) {
                Some(seq) => *seen.entry(seq).or_default() += 1,
                None => corrupted += 1,
            }
        }
        Report {
            kills,
            sent: sent.len(),
            acknowledged: acked.len(),
            delivered: seen.len(),
            lost: acked.iter().filter(|s| !seen.contains_key(s)).count(),
            unexpected: seen.keys().filter(|s| !sent.contains(s)).count(),
            duplicated: seen.values().map(|n| n - 1).sum(),
            corrupted,
        }
    }

    pub fn line(&self, path: &str) -> String {
        format!(
            "chaos {path}: kills {}, sent {}, acknowledged {}, delivered {}, lost {}, unexpected {}, duplicated {}, corrupted {}",
            self.kills,
            self.sent,
            self.acknowledged,
            self.delivered,
            self.lost,
            self.unexpected,
            self.duplicated,
            self.corrupted
        )
    }

    pub fn assert_safe(&self, path: &str, logs: &str) {
        let line = self.line(path);
        eprintln!("{line}");
        assert!(
            self.lost == 0 && self.unexpected == 0 && self.corrupted == 0,
            "{line}\n{logs}"
        );
        assert!(
            self.acknowledged > 0,
            "nothing was acknowledged: {line}\n{logs}"
        );
    }
}
