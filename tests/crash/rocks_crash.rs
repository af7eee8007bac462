//! Crash test: a child process puts numbered batches into a RocksDB channel from several tasks
//! at once (so group commit is exercised) and takes + commits some on start-up; it is killed
//! with SIGKILL at random moments, again and again, then a last child drains the channel.
//!
//! The child writes three logs next to the channel: `attempted` (a range, before each put),
//! `acked` (after the put returned, synced) and `delivered` (every event taken, synced before
//! its commit). At the end: lost (acked, never delivered), unexpected (delivered, never
//! attempted) and corrupted (content does not match its number) must all be 0; duplicates
//! (delivered twice: killed between delivery and commit) are allowed and reported.
//!
//! The test binary re-executes itself as the child (`CRASH_ROLE`), like sled's crash tests,
//! selecting this one test by its full name.

use std::{
    collections::{HashMap, HashSet},
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;
use sluice_core::{channel::Channel, event::Event};
use sluice_rocks::{RocksChannel, RocksOptions};

const ROLE: &str = "CRASH_ROLE";
const DIR: &str = "CRASH_DIR";
const EPOCH: &str = "CRASH_EPOCH";
const KILLS: u64 = 22;
const PUTTERS: u64 = 4;

#[test]
fn acknowledged_events_survive_repeated_sigkill() {
    match std::env::var(ROLE).as_deref() {
        Ok("work") => return child(true),
        Ok("drain") => return child(false),
        _ => {}
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = rand::rng();
    for epoch in 0..KILLS {
        let mut c = spawn(dir, "work", epoch);
        std::thread::sleep(Duration::from_millis(rng.random_range(40..350)));
        if let Some(status) = c.try_wait().unwrap() {
            panic!(
                "child exited on its own ({status}): {}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }
    let status = spawn(dir, "drain", KILLS).wait().unwrap();
    assert!(
        status.success(),
        "drain failed: {}",
        std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
    );

    let attempted = ranges(&dir.join("attempted"));
    let acked = ranges(&dir.join("acked"));
    let mut delivered: HashMap<u64, u32> = HashMap::new();
    let mut corrupted = 0;
    for line in lines(&dir.join("delivered")) {
        match line.split_once(' ') {
            Some(("d", n)) => *delivered.entry(n.parse().unwrap()).or_default() += 1,
            Some(("c", _)) => corrupted += 1,
            _ => panic!("bad line {line:?}"),
        }
    }
    let lost: Vec<u64> = acked
        .iter()
        .filter(|s| !delivered.contains_key(s))
        .copied()
        .collect();
    let unexpected = delivered.keys().filter(|s| !attempted.contains(s)).count();
    let duplicated: u32 = delivered.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {KILLS} kills in {:.1?}: attempted {}, acked {}, delivered {} distinct; \
         lost {}, unexpected {unexpected}, corrupted {corrupted}, duplicated {duplicated}",
        started.elapsed(),
        attempted.len(),
        acked.len(),
        delivered.len(),
        lost.len(),
    );
    assert!(acked.len() > 1000, "the children made progress");
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert_eq!(unexpected, 0);
    assert_eq!(corrupted, 0);
}

/// This test's name as the harness knows it (`--exact` wants it whole): its path in the test
/// binary, module included, without the crate's name.
fn test_name() -> String {
    const TEST: &str = "acknowledged_events_survive_repeated_sigkill";
    match module_path!().split_once("::") {
        Some((_crate, module)) => format!("{module}::{TEST}"),
        None => TEST.to_owned(),
    }
}

fn spawn(dir: &Path, role: &str, epoch: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            test_name().as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(DIR, dir)
        .env(EPOCH, epoch.to_string())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap()
}

fn lines(p: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    // A kill can cut the last line short: only whole lines count.
    let whole = text.rfind('\n').map_or("", |i| &text[..i]);
    whole
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn ranges(p: &Path) -> HashSet<u64> {
    let mut out = HashSet::new();
    for l in lines(p) {
        let (a, b) = l.split_once(' ').unwrap();
        out.extend(a.parse::<u64>().unwrap()..b.parse::<u64>().unwrap());
    }
    out
}

fn event(seq: u64) -> Event {
    let mut body = format!("{seq}:");
    body.extend(std::iter::repeat_n('x', (seq % 97) as usize));
    Event::new(body).with_header("seq", seq.to_string())
}

fn intact(e: &Event) -> Option<u64> {
    let seq: u64 = e.headers.get("seq")?.parse().ok()?;
    (*e == event(seq)).then_some(seq)
}

/// An append-only log; `sync` makes each record durable before the caller goes on.
struct Log(Mutex<File>);

impl Log {
    fn open(p: PathBuf) -> Self {
        Log(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap(),
        ))
    }
    fn write(&self, text: &str, sync: bool) {
        let mut f = self.0.lock().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
    }
}

/// The child: deliver some (or, when draining, everything), then put until killed.
fn child(work: bool) {
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let epoch: u64 = std::env::var(EPOCH).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ch =
            Arc::new(RocksChannel::open(dir.join("channel"), RocksOptions::default()).unwrap());
        let delivered = Arc::new(Log::open(dir.join("delivered")));
        let budget = if work {
            rand::rng().random_range(0..3000)
        } else {
            usize::MAX
        };
        take_some(&ch, &delivered, budget).await;
        if !work {
            assert_eq!(ch.stats().events, 0, "drained");
            return;
        }
        let attempted = Arc::new(Log::open(dir.join("attempted")));
        let acked = Arc::new(Log::open(dir.join("acked")));
        let next = Arc::new(AtomicU64::new(epoch * 1_000_000_000));
        let mut tasks = Vec::new();
        for _ in 0..PUTTERS {
            let (ch, next, attempted, acked) = (
                Arc::clone(&ch),
                Arc::clone(&next),
                Arc::clone(&attempted),
                Arc::clone(&acked),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = rand::rng().random_range(1..60u64);
                    let first = next.fetch_add(n, Ordering::Relaxed);
                    attempted.write(&format!("{first} {}\n", first + n), false);
                    ch.put((first..first + n).map(event).collect())
                        .await
                        .unwrap();
                    acked.write(&format!("{first} {}\n", first + n), true);
                }
            }));
        }
        // Keep taking while putting, so kills also land between a delivery and its commit.
        tasks.push(tokio::spawn(async move {
            loop {
                take_some(&ch, &delivered, 500).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
        // The tasks loop forever: the child runs until the parent kills it.
        let first = tasks.swap_remove(0);
        first.await.unwrap();
        unreachable!("the putters never stop");
    });
}

async fn take_some(ch: &RocksChannel, log: &Log, budget: usize) {
    let mut taken = 0;
    while taken < budget {
        let Some(lease) = ch.take(200, Duration::ZERO).await.unwrap() else {
            break;
        };
        let mut text = String::new();
        for e in lease.events() {
            match intact(e) {
                Some(seq) => text.push_str(&format!("d {seq}\n")),
                None => text.push_str(&format!("c {e:?}\n")),
            }
        }
        log.write(&text, true);
        taken += lease.events().len();
        lease.commit().await.unwrap();
    }
}
