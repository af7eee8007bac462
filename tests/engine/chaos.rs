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
//! of the agent at random moments while events flow (`SLUICE_CHAOS_KILLS` for a longer run);
//! http → rocksdb → http and file tail → rocksdb → http, whose sink reaches its server through
//! a TCP proxy that cuts every connection at random moments and then refuses connections for
//! 30 s (an outage of the destination, `SLUICE_CHAOS_OUTAGE_SECS`), with SIGKILLs before,
//! during and after the outage and the agent's memory sampled all along. Every run prints its
//! line of figures.

use std::{
    collections::BTreeSet,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use crate::common::{
    Agent,
    faults::{HttpReceiver, Proxy, rss},
    jepsen::{Report, body, parse},
    lines,
};

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

/// A client of an `http` source: each call posts the next 20 events in one request and
/// counts them as acknowledged on a 200.
#[cfg(feature = "http")]
struct Poster {
    port: u16,
    next: u64,
    sent: BTreeSet<u64>,
    acked: BTreeSet<u64>,
}

#[cfg(feature = "http")]
impl Poster {
    fn new(port: u16) -> Poster {
        Poster {
            port,
            next: 0,
            sent: BTreeSet::new(),
            acked: BTreeSet::new(),
        }
    }

    /// One request; `pause` after it, so the backlog of an outage stays a few hundred
    /// thousand events.
    fn feed(&mut self, pause: Duration) {
        let seqs = self.next..self.next + 20;
        self.next += 20;
        let text: String = seqs.clone().map(|s| body(s) + "\n").collect();
        self.sent.extend(seqs.clone());
        match post(self.port, &text) {
            Some(200) => self.acked.extend(seqs),
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(5)),
        }
        std::thread::sleep(pause);
    }
}

/// A writer appending 50 events per call to a tailed file; what is written counts as
/// acknowledged (the file is the upstream that must not lose it).
struct Appender {
    file: std::fs::File,
    next: u64,
    written: BTreeSet<u64>,
}

impl Appender {
    fn new(path: &Path) -> Appender {
        std::fs::write(path, "").unwrap();
        Appender {
            file: std::fs::OpenOptions::new().append(true).open(path).unwrap(),
            next: 0,
            written: BTreeSet::new(),
        }
    }

    fn feed(&mut self, pause: Duration) {
        let text: String = (self.next..self.next + 50)
            .map(|s| body(s) + "\n")
            .collect();
        self.file.write_all(text.as_bytes()).unwrap();
        self.written.extend(self.next..self.next + 50);
        self.next += 50;
        std::thread::sleep(pause);
    }
}

/// http source on `port` → rocksdb → `sink` (a flow mapping, draining `disk`).
fn http_pipeline(d: &Path, port: u16, sink: &str) -> String {
    format!(
        "channels:
  disk: {{ type: rocksdb, path: '{}/disk' }}
sources:
  web: {{ type: http, listen: '127.0.0.1:{port}', codec: lines, channels: [disk] }}
sinks:
  out: {sink}
",
        d.display()
    )
}

/// file source tailing `input` → rocksdb → `sink` (a flow mapping, draining `disk`).
fn tail_pipeline(d: &Path, input: &Path, sink: &str) -> String {
    format!(
        "channels:
  disk: {{ type: rocksdb, path: '{d}/disk' }}
sources:
  logs: {{ type: file, paths: ['{input}'], position_file: '{d}/pos.json', start_at: beginning, poll_interval: 50ms, batch_size: 200, channels: [disk] }}
sinks:
  out: {sink}
",
        d = d.display(),
        input = input.display()
    )
}

fn file_sink(out: &Path) -> String {
    format!(
        "{{ type: file, channel: disk, path: '{}', batch_size: 100 }}",
        out.display()
    )
}

/// http → rocksdb → file: the agent is SIGKILLed at random moments and started again while a
/// client posts.
#[cfg(feature = "http")]
#[test]
fn http_to_rocksdb_to_file_through_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = crate::common::free_port();
    let out = d.join("out.log");
    let mut client = Poster::new(port);
    let (agent, total, logs) = kill_loop(d, &http_pipeline(d, port, &file_sink(&out)), || {
        client.feed(Duration::ZERO)
    });
    let (delivered, log) = drain(agent, &out, &client.acked);
    Report::check(total, &client.sent, &client.acked, &delivered)
        .assert_safe("http → rocksdb → file", &(logs + &log));
}

/// file tail → rocksdb → file: the agent is SIGKILLed at random moments and started again
/// while a writer appends.
#[cfg(feature = "rocksdb")]
#[test]
fn tail_to_rocksdb_to_file_through_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (input, out) = (d.join("in.log"), d.join("out.log"));
    let mut writer = Appender::new(&input);
    let (agent, total, logs) = kill_loop(d, &tail_pipeline(d, &input, &file_sink(&out)), || {
        writer.feed(Duration::from_millis(2))
    });
    let (delivered, log) = drain(agent, &out, &writer.written);
    Report::check(total, &writer.written, &writer.written, &delivered)
        .assert_safe("tail → rocksdb → file", &(logs + &log));
}

/// What [`fault_run`] did.
struct Faults {
    kills: usize,
    cuts: u64,
    outage: Duration,
    peak_rss: u64,
}

fn outage() -> Duration {
    let secs = std::env::var("SLUICE_CHAOS_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Runs the agent on `pipeline`, whose sink goes through `proxy`, while `feed` sends events:
/// 8 s in which the proxy cuts every connection every 300–900 ms and the agent is SIGKILLed
/// (and started again) 3 times; an outage of the destination ([`outage`]: connections
/// refused) with 2 kills; 8 s more of cuts and 3 kills. Samples the agent's RSS every 100 ms.
/// Returns the last, still running agent, what was done, and the logs of the killed runs.
fn fault_run(
    dir: &Path,
    pipeline: &str,
    proxy: &Proxy,
    mut feed: impl FnMut(),
) -> (Agent, Faults, String) {
    let mut rng = Rng::new();
    let mut logs = String::new();
    let mut runs = 0;
    let mut agent = Agent::start(dir, "run0", pipeline);
    let outage = outage();
    // (length, destination down, kills during it)
    let phases = [
        (Duration::from_secs(8), false, 3),
        (outage, true, 2),
        (Duration::from_secs(8), false, 3),
    ];
    let mut faults = Faults {
        kills: 0,
        cuts: 0,
        outage,
        peak_rss: 0,
    };
    for (length, down, kills) in phases {
        proxy.set_down(down);
        let start = Instant::now();
        let mut kill_at: Vec<Duration> = (1..=kills)
            .map(|k| length * k / (kills + 1) + rng.millis(0, 200))
            .collect();
        let mut next_cut = start + rng.millis(300, 900);
        let mut next_sample = start;
        while start.elapsed() < length {
            feed();
            let now = Instant::now();
            if !down && now >= next_cut {
                proxy.cut();
                next_cut = now + rng.millis(300, 900);
            }
            if now >= next_sample {
                if let Some(r) = agent.pid().and_then(rss) {
                    faults.peak_rss = faults.peak_rss.max(r);
                }
                next_sample = now + Duration::from_millis(100);
            }
            if kill_at.first().is_some_and(|&t| start.elapsed() >= t) {
                kill_at.remove(0);
                agent.kill();
                logs += &agent.log();
                runs += 1;
                faults.kills += 1;
                agent = Agent::start(dir, &format!("run{runs}"), pipeline);
            }
        }
    }
    proxy.set_down(false);
    faults.cuts = proxy.cuts.load(std::sync::atomic::Ordering::Relaxed);
    (agent, faults, logs)
}

/// Every line the receiver got, once it holds every acknowledged event (or after ten
/// minutes), then the agent's log after a clean stop.
fn drain_receiver(
    agent: Agent,
    receiver: &HttpReceiver,
    acked: &BTreeSet<u64>,
) -> (Vec<String>, String) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let got: BTreeSet<u64> = receiver.text().lines().filter_map(parse).collect();
        if acked.is_subset(&got) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.stop_blocking();
    let lines = receiver.text().lines().map(str::to_owned).collect();
    (lines, log)
}

/// Checks a run through the proxy: Jepsen's figures, then memory. During the outage the
/// rocksdb channel holds the backlog on disk; the agent's memory must not grow with it.
fn assert_proxy_run(path: &str, report: Report, faults: &Faults, logs: &str) {
    let mib = faults.peak_rss as f64 / (1 << 20) as f64;
    eprintln!(
        "chaos {path}: proxy cuts {}, destination down {:?}, peak RSS {mib:.1} MiB",
        faults.cuts, faults.outage
    );
    report.assert_safe(path, logs);
    assert!(faults.cuts > 0, "the proxy cut nothing");
    assert!(
        faults.peak_rss < 256 << 20,
        "peak RSS {mib:.1} MiB during a sink outage: the backlog is held in memory"
    );
}

fn http_sink(proxy: &Proxy) -> String {
    format!(
        "{{ type: http, channel: disk, url: 'http://127.0.0.1:{}/in', mode: batch, format: lines, batch_size: 100, timeout: 5s }}",
        proxy.port
    )
}

/// http → rocksdb → http: the sink's destination behind a proxy that cuts connections and
/// then goes away for 30 s, the agent SIGKILLed 8 times.
#[cfg(all(feature = "http", feature = "rocksdb"))]
#[test]
fn http_to_rocksdb_to_http_through_cuts_an_outage_and_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let receiver = HttpReceiver::start(Duration::ZERO, true);
    let proxy = Proxy::start(receiver.port);
    let port = crate::common::free_port();
    let mut client = Poster::new(port);
    let pipeline = http_pipeline(d, port, &http_sink(&proxy));
    let (agent, faults, logs) = fault_run(d, &pipeline, &proxy, || {
        client.feed(Duration::from_millis(2))
    });
    let (delivered, log) = drain_receiver(agent, &receiver, &client.acked);
    let report = Report::check(faults.kills, &client.sent, &client.acked, &delivered);
    assert_proxy_run("http → rocksdb → http", report, &faults, &(logs + &log));
}

/// file tail → rocksdb → http, through the same faults.
#[cfg(all(feature = "http", feature = "rocksdb"))]
#[test]
fn tail_to_rocksdb_to_http_through_cuts_an_outage_and_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let receiver = HttpReceiver::start(Duration::ZERO, true);
    let proxy = Proxy::start(receiver.port);
    let input = d.join("in.log");
    let mut writer = Appender::new(&input);
    let pipeline = tail_pipeline(d, &input, &http_sink(&proxy));
    let (agent, faults, logs) = fault_run(d, &pipeline, &proxy, || {
        writer.feed(Duration::from_millis(5))
    });
    let (delivered, log) = drain_receiver(agent, &receiver, &writer.written);
    let report = Report::check(faults.kills, &writer.written, &writer.written, &delivered);
    assert_proxy_run("tail → rocksdb → http", report, &faults, &(logs + &log));
}

/// file tail → rocksdb → `sluice` hop → rocksdb → file: an edge tails a file and sends to a
/// collector through a TCP proxy. The collector goes through [`fault_run`] (cuts, a 30 s
/// outage, 8 SIGKILLs); the edge is SIGKILLed too, every 3 s. Every line written counts as
/// acknowledged.
#[cfg(all(feature = "hop", feature = "rocksdb"))]
#[test]
fn tail_to_a_hop_to_a_collector_through_cuts_an_outage_and_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hop = crate::common::free_port();
    let proxy = Proxy::start(hop);
    let input = d.join("in.log");
    let out = d.join("out.log");
    let collector = format!(
        "channels:
  disk: {{ type: rocksdb, path: '{d}/collector' }}
sources:
  in: {{ type: sluice, listen: '127.0.0.1:{hop}', channels: [disk] }}
sinks:
  out: {{ type: file, channel: disk, path: '{out}', batch_size: 100 }}
",
        d = d.display(),
        out = out.display()
    );
    let edge_pipeline = format!(
        "channels:
  disk: {{ type: rocksdb, path: '{d}/edge' }}
sources:
  logs: {{ type: file, paths: ['{input}'], position_file: '{d}/pos.json', start_at: beginning, poll_interval: 50ms, batch_size: 200, channels: [disk] }}
sinks:
  out:
    type: sluice
    channel: disk
    endpoints: ['127.0.0.1:{port}']
    origin: edge
    timeout: 5s
    retry: {{ max_attempts: unlimited, initial_backoff: 50ms, max_backoff: 1s }}
",
        d = d.display(),
        input = input.display(),
        port = proxy.port
    );
    let mut writer = Appender::new(&input);
    let edge_dir = d.join("edge-runs");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let mut edge = Agent::start(&edge_dir, "edge0", &edge_pipeline);
    let (mut edge_kills, mut next_edge_kill) = (0, Instant::now() + Duration::from_secs(3));
    let mut edge_logs = String::new();
    let (agent, mut faults, logs) = fault_run(d, &collector, &proxy, || {
        writer.feed(Duration::from_millis(5));
        if Instant::now() >= next_edge_kill {
            edge.kill();
            edge_logs = edge.log();
            edge_kills += 1;
            edge = Agent::start(&edge_dir, &format!("edge{edge_kills}"), &edge_pipeline);
            next_edge_kill = Instant::now() + Duration::from_secs(3);
        }
    });
    faults.kills += edge_kills;
    let (delivered, log) = drain(agent, &out, &writer.written);
    let edge_log = edge.stop_blocking();
    let report = Report::check(faults.kills, &writer.written, &writer.written, &delivered);
    assert_proxy_run(
        "tail → rocksdb → hop → rocksdb → file",
        report,
        &faults,
        &(logs + &log + &edge_logs + &edge_log),
    );
}
