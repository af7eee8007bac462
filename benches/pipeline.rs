//! End-to-end throughput: generator → memory channel → null sink, through the real agent
//! (`app::run`) on a single-threaded runtime, so the figure is per core.
//!
//! Reports events/s, MiB/s and CPU-seconds per million events (from getrusage, so time spent
//! waiting is not counted as work). Pin it for stable numbers: `taskset -c 1 cargo bench
//! --bench pipeline`. `SLUICE_BENCH_EVENTS` sets the event count (default 5,000,000).
//!
//! The last line runs the same pipeline while a client taps the source through the admin
//! server and reads one sample every 10 ms: what a live tap costs the pipeline.

use std::{path::Path, time::Instant};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn pipeline(events: u64, batch: usize, body: usize) -> String {
    format!(
        "channels:\n  mem: {{ type: memory, capacity: {cap} }}\n\
         sources:\n  gen: {{ type: generator, count: {events}, body_size: {body}, batch_size: {batch}, channels: [mem] }}\n\
         sinks:\n  out: {{ type: null, channel: mem, batch_size: {batch} }}\n",
        cap = batch * 20
    )
}

/// Connects to `/tap?point=gen` on `port` (retrying while the agent starts) and reads a few
/// bytes every 10 ms until `done` is set.
fn slow_tap(
    port: u16,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut s = loop {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let _ = write!(s, "GET /tap?point=gen HTTP/1.1\r\nHost: x\r\n\r\n");
        let (mut buf, mut total) = ([0u8; 256], 0u64);
        while let Ok(n @ 1..) = s.read(&mut buf) {
            total += n as u64;
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        total
    })
}

fn main() {
    // `cargo bench` passes `--bench`; other criterion-style flags are ignored here.
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("pipeline: generator -> memory -> null, 256-byte bodies, {events} events, one thread");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    for (batch, tapped) in [(100usize, false), (1000, false), (1000, true)] {
        let mut text = pipeline(events, batch, 256);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = tapped.then(|| {
            text.push_str(&format!("admin: {{ listen: '127.0.0.1:{port}' }}\n"));
            slow_tap(port, done.clone())
        });
        let p = sluice_core::config::load_str(
            Path::new("bench.yaml"),
            &text,
            &|_| None,
            sluice::registry(),
        )
        .unwrap();
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let report = rt.block_on(sluice::app::run(p)).unwrap();
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
        assert_eq!(report.sinks[0].1, events, "every event delivered");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let tap = match reader {
            Some(r) => format!(
                ", tapped by a slow client ({} bytes read)",
                r.join().unwrap()
            ),
            None => String::new(),
        };
        println!(
            "  batch {batch:>5}{tap}: {:>10.0} events/s  {:>7.1} MiB/s  {:.3} CPU-s per M events  ({wall:.2}s wall)",
            events as f64 / wall,
            events as f64 * 256.0 / wall / (1 << 20) as f64,
            cpu / events as f64 * 1e6,
        );
    }
}
