//! Fault injection through the whole agent, checked in Jepsen's terms. A client records every
//! event it sent and every one the agent acknowledged upstream; after the faults, the output
//! is read and each event is classified:
//!
//! - **lost**: acknowledged, never delivered (must be 0);
//! - **unexpected**: delivered, never sent (must be 0);
//! - **corrupted**: delivered with a body that is not the one sent, or a torn line (must be 0);
//! - **duplicated**: delivered more than once (reported: the paths are at-least-once).
//!
//! Paths: http → rocksdb → file, and file tail → rocksdb → file, each through 20 SIGKILLs
//! of the agent at random moments while events flow (`SLUICE_CHAOS_KILLS` for a longer run).
//! Every run prints its line of figures.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use crate::common::{Agent, lines};

/// The body of event `seq`: the number and a digest of it, so a body that was changed, cut
/// or glued to another is recognised.
fn body(seq: u64) -> String {
    let mut h = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    format!("{seq:010}:{h:016x}")
}

/// `Some(seq)` for a line that is exactly one event's body.
fn parse(line: &str) -> Option<u64> {
    let seq: u64 = line.split(':').next()?.parse().ok()?;
    (body(seq) == line).then_some(seq)
}

/// Figures of one run.
#[derive(Debug, Default)]
struct Report {
    kills: usize,
    sent: usize,
    acknowledged: usize,
    delivered: usize,
    lost: usize,
    unexpected: usize,
    duplicated: usize,
    corrupted: usize,
}

impl Report {
    fn check(kills: usize, sent: &BTreeSet<u64>, acked: &BTreeSet<u64>, out: &[String]) -> Self {
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

    fn line(&self, path: &str) -> String {
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

    fn assert_safe(&self, path: &str, logs: &str) {
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

fn kills() -> usize {
    std::env::var("SLUICE_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// A small linear congruential generator: random enough for kill moments, no dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        eprintln!("chaos seed {seed}");
        Rng(seed)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        Duration::from_millis(from + (self.0 >> 33) % (to - from))
    }
}

#[cfg(feature = "http")]
/// One POST of `text` over a fresh connection: the status, or `None` when the agent is not
/// there or the connection broke.
fn post(port: u16, text: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    reply.split(' ').nth(1)?.parse().ok()
}

/// The agent's output after the faults: once it holds every acknowledged event (or after ten
/// minutes: a long run leaves a backlog), a clean stop, then every line.
fn drain(agent: Agent, out: &Path, acked: &BTreeSet<u64>) -> (Vec<String>, String) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got: BTreeSet<u64> = std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .filter_map(parse)
            .collect();
        if acked.is_subset(&got) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.stop_blocking();
    (lines(out), log)
}

/// Runs the agent on `pipeline`, SIGKILLing it at random moments and starting it again,
/// [`kills`] times, while `feed` sends events (called again and again); returns the last,
/// still running agent, the number of kills and the log of the last killed run.
fn kill_loop(dir: &Path, pipeline: &str, mut feed: impl FnMut()) -> (Agent, usize, String) {
    let mut rng = Rng::new();
    let mut logs = String::new();
    let mut agent = Agent::start(dir, "run0", pipeline);
    let total = kills();
    for k in 1..=total {
        let until = Instant::now() + rng.millis(300, 1200);
        while Instant::now() < until {
            feed();
        }
        agent.kill();
        logs = agent.log();
        agent = Agent::start(dir, &format!("run{k}"), pipeline);
    }
    (agent, total, logs)
}

/// http → rocksdb → file: a client posts 20 events per request and counts a request as
/// acknowledged on 200; the agent is SIGKILLed at random moments and started again.
#[cfg(feature = "http")]
#[test]
fn http_to_rocksdb_to_file_through_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = crate::common::free_port();
    let out = d.join("out.log");
    let pipeline = format!(
        "channels:
  disk: {{ type: rocksdb, path: '{}/disk' }}
sources:
  web: {{ type: http, listen: '127.0.0.1:{port}', codec: lines, channels: [disk] }}
sinks:
  out: {{ type: file, channel: disk, path: '{}', batch_size: 100 }}
",
        d.display(),
        out.display()
    );
    let (mut sent, mut acked) = (BTreeSet::new(), BTreeSet::new());
    let mut next = 0u64;
    let (agent, total, logs) = kill_loop(d, &pipeline, || {
        let seqs = next..next + 20;
        next += 20;
        let text: String = seqs.clone().map(|s| body(s) + "\n").collect();
        sent.extend(seqs.clone());
        match post(port, &text) {
            Some(200) => acked.extend(seqs),
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    });
    let (delivered, log) = drain(agent, &out, &acked);
    Report::check(total, &sent, &acked, &delivered)
        .assert_safe("http → rocksdb → file", &(logs + &log));
}

/// file tail → rocksdb → file: a writer appends events to the tailed file all along (what
/// is written is "acknowledged": the file is the upstream that must not lose it); the agent
/// is SIGKILLed at random moments and started again.
#[cfg(feature = "rocksdb")]
#[test]
fn tail_to_rocksdb_to_file_through_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.log");
    let out = d.join("out.log");
    std::fs::write(&input, "").unwrap();
    let pipeline = format!(
        "channels:
  disk: {{ type: rocksdb, path: '{d}/disk' }}
sources:
  logs: {{ type: file, paths: ['{input}'], position_file: '{d}/pos.json', start_at: beginning, poll_interval: 50ms, batch_size: 200, channels: [disk] }}
sinks:
  out: {{ type: file, channel: disk, path: '{out}', batch_size: 100 }}
",
        d = d.display(),
        input = input.display(),
        out = out.display()
    );
    let mut written = BTreeSet::new();
    let mut next = 0u64;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    let (agent, total, logs) = kill_loop(d, &pipeline, || {
        let text: String = (next..next + 50).map(|s| body(s) + "\n").collect();
        file.write_all(text.as_bytes()).unwrap();
        written.extend(next..next + 50);
        next += 50;
        std::thread::sleep(Duration::from_millis(2));
    });
    let (delivered, log) = drain(agent, &out, &written);
    Report::check(total, &written, &written, &delivered)
        .assert_safe("tail → rocksdb → file", &(logs + &log));
}
