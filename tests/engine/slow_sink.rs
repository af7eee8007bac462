//! A slow sink: the agent's memory stays bounded by its channel's limits. A generator pushes
//! 64 KiB events as fast as it can into a memory channel limited to 8 MiB, drained by an
//! `http` sink whose server answers each request after 50 ms. The source must wait (back
//! pressure), not buffer: the agent's RSS, sampled every 100 ms for 15 s, stays under a bound
//! far below what the generator offered, and every event the server received is whole.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{Agent, free_port};

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// An HTTP/1.1 server that reads each request whole and answers 200 after `delay`; counts the
/// body bytes it received.
fn slow_server(delay: Duration) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    counter.fetch_add(length as u64, Ordering::Relaxed);
                    std::thread::sleep(delay);
                    if conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

#[test]
fn a_slow_sink_keeps_the_agent_within_its_channel_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (port, received) = slow_server(Duration::from_millis(50));
    let admin = free_port();
    let agent = Agent::start(
        dir.path(),
        "slow",
        &format!(
            "admin: {{ listen: '127.0.0.1:{admin}' }}
channels:
  mem: {{ type: memory, capacity: 100000, max_bytes: 8MiB }}
sources:
  gen: {{ type: generator, body_size: 64KiB, batch_size: 16, channels: [mem] }}
sinks:
  out:
    type: http
    url: 'http://127.0.0.1:{port}/in'
    mode: batch
    format: lines
    concurrency: 2
    batch_size: 16
    channel: mem
"
        ),
    );
    let pid = agent.pid().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing delivered:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let mut peak = 0;
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(15) {
        if let Some(r) = rss(pid) {
            peak = peak.max(r);
            samples += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let delivered = received.load(Ordering::Relaxed);
    let log = agent.stop_blocking();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "slow sink: peak RSS {:.1} MiB over {samples} samples; {:.1} MiB delivered in 15 s",
        mib(peak),
        mib(delivered)
    );
    assert!(samples > 100, "{log}");
    // The channel holds at most 8 MiB; the sink's two requests in flight and a source batch
    // being built add about 3 MiB more. 96 MiB leaves room for the runtime and allocator,
    // and is still far below what an unbounded buffer would reach (the generator offers
    // hundreds of MiB per second).
    assert!(
        peak < 96 << 20,
        "peak RSS {:.1} MiB: the channel's limits do not bound memory\n{log}",
        mib(peak)
    );
}
