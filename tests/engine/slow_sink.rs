//! A slow sink: the agent's memory stays bounded by its channel's limits. A generator pushes
//! 64 KiB events as fast as it can into a memory channel limited to 8 MiB, drained by an
//! `http` sink whose server answers each request after 50 ms. The source must wait (back
//! pressure), not buffer: the agent's RSS, sampled every 100 ms for 15 s, stays under a bound
//! far below what the generator offered, and every event the server received is whole.

use std::time::{Duration, Instant};

use crate::common::{
    Agent,
    faults::{HttpReceiver, rss},
    free_port,
};

#[test]
fn a_slow_sink_keeps_the_agent_within_its_channel_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpReceiver::start(Duration::from_millis(50), false);
    let (port, received) = (server.port, server.bytes.clone());
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
    while received.load(std::sync::atomic::Ordering::Relaxed) == 0 {
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
    let delivered = received.load(std::sync::atomic::Ordering::Relaxed);
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
