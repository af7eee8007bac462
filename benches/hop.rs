//! The agent-to-agent hop, two real `sluice` processes on this machine: an edge (generator →
//! memory → sink) and a collector (source → memory → null), 256-byte events in batches of
//! 1000. Compared: the `sluice` hop with zstd, gzip and no compression, and the generic
//! http sink → http source hop with NDJSON.
//!
//! Reports events/s from the edge's start until the collector's null sink has drained every
//! event, and the CPU seconds per million events of each agent (utime + stime from /proc).
//! `SLUICE_BENCH_EVENTS` (default 2,000,000; 50,000 under `cargo test`) and
//! `SLUICE_BENCH_ONLY` (a comma-separated subset of `zstd,gzip,none,http`), `SLUICE_BENCH_BIN`
//! (another `sluice` binary, for before/after figures).
//! Run with `cargo bench --bench hop`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

#[path = "common/mod.rs"]
mod common;

use common::{cpu_of, env_or, free_port, spawn_agent};

/// The collector's null sink's drained count, from its admin server.
fn drained(admin: u16) -> Option<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with("sluice_sink_events_drained_total{component=\"drain\"}"))?
        .rsplit(' ')
        .next()?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(dir: &Path, mode: &str, events: u64) {
    let (port, admin) = (free_port(), free_port());
    let (source, sink) = match mode {
        "http" => (
            format!(
                "{{ type: http, listen: '127.0.0.1:{port}', codec: ndjson, max_body: 16MiB, channels: [mem] }}"
            ),
            format!(
                "{{ type: http, channel: mem, url: 'http://127.0.0.1:{port}/', mode: batch, format: ndjson, batch_size: 1000 }}"
            ),
        ),
        how => (
            format!("{{ type: sluice, listen: '127.0.0.1:{port}', channels: [mem] }}"),
            format!(
                "{{ type: sluice, channel: mem, endpoints: ['127.0.0.1:{port}'], compression: {how}, batch_size: 1000 }}"
            ),
        ),
    };
    let collector = format!(
        "admin: {{ listen: '127.0.0.1:{admin}' }}\nchannels:\n  mem: {{ type: memory, capacity: 100000 }}\nsources:\n  in: {source}\nsinks:\n  drain: {{ type: null, channel: mem, batch_size: 1000 }}\n"
    );
    let edge = format!(
        "channels:\n  mem: {{ type: memory, capacity: 100000 }}\nsources:\n  gen: {{ type: generator, count: {events}, body_size: 256, batch_size: 1000, channels: [mem] }}\nsinks:\n  out: {sink}\n"
    );
    let mut c = spawn_agent(dir, &format!("collector-{mode}"), &collector);
    wait_listening(port);
    let c_cpu0 = cpu_of(c.id());
    let started = Instant::now();
    let mut e = spawn_agent(dir, &format!("edge-{mode}"), &edge);
    let mut e_cpu = 0.0;
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Ok(None) = e.try_wait() {
            e_cpu = cpu_of(e.id());
        }
        if drained(admin).is_some_and(|n| n >= events) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{mode}: not drained in 600 s; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed().as_secs_f64();
    let c_cpu = cpu_of(c.id()) - c_cpu0;
    if let Ok(None) = e.try_wait() {
        e_cpu = cpu_of(e.id());
    }
    let _ = e.kill();
    let _ = c.kill();
    let _ = e.wait();
    let _ = c.wait();
    let m = events as f64 / 1e6;
    println!(
        "{mode:>5}: {:>10.0} events/s  wall {wall:>6.2} s  edge {:.3} CPU-s/M  collector {:.3} CPU-s/M",
        events as f64 / wall,
        e_cpu / m,
        c_cpu / m,
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let events: u64 = env_or(
        "SLUICE_BENCH_EVENTS",
        if benching { 2_000_000 } else { 50_000 },
    );
    let only: String = env_or("SLUICE_BENCH_ONLY", "zstd,gzip,none,http".to_owned());
    let dir = tempfile::tempdir().unwrap();
    println!(
        "hop: edge generator -> memory -> sink ==> collector source -> memory -> null, {events} x 256 B, batch 1000, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for mode in only.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        run(dir.path(), mode, events);
    }
    let _ = std::io::stdout().flush();
}
