//! Model-based property test: random sequences of put / take / commit / rollback / drop /
//! reopen against the RocksDB, spillable and memory channels, checked step by step against a model
//! that is just an ordered set of visible ids plus the leases outstanding.
//!
//! The model's rules are the channel contract: a take leases the oldest visible events; a
//! commit removes them; a rollback or a dropped lease makes them visible again in their
//! original place; a reopen (RocksDB only) makes everything not committed visible again;
//! capacity counts leased events; a put that does not fit is refused whole.
//! `PROPTEST_CASES` raises the number of cases (default 40 per channel). The RocksDB and
//! spillable channels are checked with the `rocksdb` feature, the memory channel always.

use std::{collections::BTreeSet, path::Path, time::Duration};

use proptest::prelude::*;
use sluice_core::{
    channel::{Channel, ChannelError, Lease, memory::MemoryChannel},
    event::Event,
};
#[cfg(feature = "rocksdb")]
use sluice_rocks::{RocksChannel, RocksOptions, spillable::SpillableChannel};

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    Take(usize),
    Commit(usize),
    Rollback(usize),
    DropLease(usize),
    Reopen,
}

fn ops(reopen: bool) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (1usize..=6).prop_map(Op::Put),
        4 => (1usize..=7).prop_map(Op::Take),
        3 => any::<usize>().prop_map(Op::Commit),
        2 => any::<usize>().prop_map(Op::Rollback),
        1 => any::<usize>().prop_map(Op::DropLease),
        (if reopen { 1 } else { 0 }) => Just(Op::Reopen),
    ];
    proptest::collection::vec(op, 1..60)
}

fn ev(id: u64) -> Event {
    Event::new(format!("{id}")).with_header("id", id.to_string())
}

fn ids(l: &dyn Lease) -> Vec<u64> {
    l.events()
        .iter()
        .map(|e| {
            let id: u64 = std::str::from_utf8(&e.body).unwrap().parse().unwrap();
            assert_eq!(e.headers.get("id"), Some(id.to_string().as_str()));
            id
        })
        .collect()
}

#[derive(Default)]
struct Model {
    visible: BTreeSet<u64>,
    leases: Vec<Vec<u64>>,
    next: u64,
}

impl Model {
    fn held(&self) -> usize {
        self.visible.len() + self.in_flight()
    }
    fn in_flight(&self) -> usize {
        self.leases.iter().map(Vec::len).sum()
    }
}

/// How to (re)open the channel under test.
trait Subject {
    fn open(&self, dir: &Path) -> Box<dyn Channel>;
    /// Capacity against which the model predicts `Full`; `None` when it never fills.
    fn capacity(&self) -> Option<usize>;
    /// Whether a take returns all `max` oldest events, or may stop early (at a tier boundary).
    fn exact_takes(&self) -> bool {
        true
    }
}

const ROCKS_CAPACITY: usize = 24;

#[cfg(feature = "rocksdb")]
struct Rocks;

#[cfg(feature = "rocksdb")]
impl Subject for Rocks {
    fn open(&self, dir: &Path) -> Box<dyn Channel> {
        let opts = RocksOptions {
            capacity: ROCKS_CAPACITY,
            ..RocksOptions::default()
        };
        Box::new(RocksChannel::open(dir, opts).unwrap())
    }
    fn capacity(&self) -> Option<usize> {
        Some(ROCKS_CAPACITY)
    }
}

struct Memory;

impl Subject for Memory {
    fn open(&self, _: &Path) -> Box<dyn Channel> {
        Box::new(MemoryChannel::new(ROCKS_CAPACITY, None))
    }
    fn capacity(&self) -> Option<usize> {
        Some(ROCKS_CAPACITY)
    }
}

#[cfg(feature = "rocksdb")]
struct Spill;

#[cfg(feature = "rocksdb")]
impl Subject for Spill {
    fn open(&self, dir: &Path) -> Box<dyn Channel> {
        // A tiny memory tier, so runs cross between the tiers all the time.
        let disk = RocksChannel::open(dir, RocksOptions::default()).unwrap();
        Box::new(SpillableChannel::new(4, disk))
    }
    fn capacity(&self) -> Option<usize> {
        None
    }
    fn exact_takes(&self) -> bool {
        false
    }
}

fn check(subject: &dyn Subject, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut ch = subject.open(dir.path());
        let mut leases: Vec<Box<dyn Lease>> = Vec::new();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Put(n) => {
                    let batch: Vec<Event> = (m.next..m.next + n as u64).map(ev).collect();
                    if subject.capacity().is_some_and(|c| m.held() + n > c) {
                        prop_assert!(matches!(ch.try_put(batch), Err(ChannelError::Full)));
                    } else {
                        ch.put(batch).await.unwrap();
                        m.visible.extend(m.next..m.next + n as u64);
                        m.next += n as u64;
                    }
                }
                Op::Take(max) => {
                    let expected: Vec<u64> = m.visible.iter().take(max).copied().collect();
                    match ch.take(max, Duration::ZERO).await.unwrap() {
                        Some(l) => {
                            let got = ids(&*l);
                            if subject.exact_takes() {
                                prop_assert_eq!(&got, &expected);
                            } else {
                                prop_assert!(
                                    !got.is_empty() && expected.starts_with(&got),
                                    "took {:?}, oldest are {:?}",
                                    got,
                                    expected
                                );
                            }
                            for id in &got {
                                m.visible.remove(id);
                            }
                            m.leases.push(got);
                            leases.push(l);
                        }
                        None => prop_assert!(expected.is_empty(), "take found nothing"),
                    }
                }
                Op::Commit(i) | Op::Rollback(i) | Op::DropLease(i) if !leases.is_empty() => {
                    let i = i % leases.len();
                    let l = leases.remove(i);
                    let ids = m.leases.remove(i);
                    match op {
                        Op::Commit(_) => l.commit().await.unwrap(),
                        Op::Rollback(_) => {
                            l.rollback().await.unwrap();
                            m.visible.extend(ids);
                        }
                        _ => {
                            drop(l);
                            m.visible.extend(ids);
                        }
                    }
                }
                Op::Reopen => {
                    leases.clear();
                    drop(ch);
                    ch = subject.open(dir.path());
                    for l in m.leases.drain(..) {
                        m.visible.extend(l);
                    }
                }
                _ => {}
            }
            let s = ch.stats();
            prop_assert_eq!(s.events, m.held(), "events held");
            prop_assert_eq!(s.in_flight, m.in_flight(), "in flight");
        }
        leases.clear(); // dropped: rolled back
        for l in m.leases.drain(..) {
            m.visible.extend(l);
        }
        let mut rest = Vec::new();
        while let Some(l) = ch.take(5, Duration::ZERO).await.unwrap() {
            rest.extend(ids(&*l));
            l.commit().await.unwrap();
        }
        prop_assert_eq!(rest, m.visible.iter().copied().collect::<Vec<_>>());
        Ok(())
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(40),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_channel_matches_the_model(ops in ops(true)) {
        check(&Rocks, ops)?;
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn spillable_channel_matches_the_model(ops in ops(false)) {
        check(&Spill, ops)?;
    }

    #[test]
    fn memory_channel_matches_the_model(ops in ops(false)) {
        check(&Memory, ops)?;
    }
}
