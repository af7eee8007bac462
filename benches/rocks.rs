//! Durable channel benchmark: put + take + commit throughput of the RocksDB channel with
//! 256-byte events, per fsync policy and batch size, and the spillable channel under its memory
//! capacity against the memory channel.
//!
//! A producer task puts batches while a consumer task takes and commits them, so puts and
//! commits contend for the writer as they do in an agent. Reported per case: events/s
//! (committed by the consumer), fsyncs/s, p99 of put latency (the source's commit) and of
//! take-commit latency (the sink's), and write amplification (bytes RocksDB wrote to its log,
//! flushes and compactions over event payload bytes). The memory/spillable comparison runs in
//! lockstep instead, so the spillable channel stays under its memory capacity.
//!
//! Run with `cargo bench --bench rocks`; `SLUICE_BENCH_SECS` sets the time per case (default
//! 2). Not a criterion bench: the figures wanted are not per-iteration timings.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use sluice_core::{
    channel::{Channel, memory::MemoryChannel},
    event::Event,
};
use sluice_rocks::{Fsync, RocksChannel, RocksOptions, spillable::SpillableChannel};

const BODY: usize = 256;

struct Figures {
    events: u64,
    elapsed: Duration,
    put_p99: Duration,
    commit_p99: Duration,
}

fn p99(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// Puts batches of `batch` events for `secs` while a consumer drains; returns what the consumer
/// committed.
async fn run(ch: Arc<dyn Channel>, batch: usize, secs: Duration) -> Figures {
    let body = Bytes::from(vec![b'x'; BODY]);
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let ch = Arc::clone(&ch);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < secs {
                let events: Vec<Event> = (0..batch).map(|_| Event::new(body.clone())).collect();
                let t = Instant::now();
                ch.put(events).await.expect("put");
                lat.push(t.elapsed());
            }
            done.store(true, Ordering::Release);
            lat
        })
    };
    let consumer = {
        let ch = Arc::clone(&ch);
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut events = 0u64;
            // Takes up to the put batch size (at least 100), as a sink with that batch would.
            let take = batch.max(100);
            loop {
                let Some(lease) = ch
                    .take(take, Duration::from_millis(50))
                    .await
                    .expect("take")
                else {
                    if done.load(Ordering::Acquire) && ch.stats().events == 0 {
                        break;
                    }
                    continue;
                };
                let n = lease.events().len() as u64;
                if n == 0 {
                    continue;
                }
                let t = Instant::now();
                lease.commit().await.expect("commit");
                lat.push(t.elapsed());
                events += n;
            }
            (events, lat)
        })
    };
    let put_lat = producer.await.unwrap();
    let (events, commit_lat) = consumer.await.unwrap();
    Figures {
        events,
        elapsed: start.elapsed(),
        put_p99: p99(put_lat),
        commit_p99: p99(commit_lat),
    }
}

/// Put, take and commit one batch at a time for `secs`: the channel never holds more than one
/// batch, so a spillable channel stays under its memory capacity.
async fn lockstep(ch: Arc<dyn Channel>, batch: usize, secs: Duration) -> Figures {
    let body = Bytes::from(vec![b'x'; BODY]);
    let start = Instant::now();
    let (mut events, mut put_lat, mut commit_lat) = (0u64, Vec::new(), Vec::new());
    while start.elapsed() < secs {
        let batch_events: Vec<Event> = (0..batch).map(|_| Event::new(body.clone())).collect();
        let t = Instant::now();
        ch.put(batch_events).await.expect("put");
        put_lat.push(t.elapsed());
        let lease = ch
            .take(batch, Duration::ZERO)
            .await
            .expect("take")
            .expect("a batch");
        events += lease.events().len() as u64;
        let t = Instant::now();
        lease.commit().await.expect("commit");
        commit_lat.push(t.elapsed());
    }
    Figures {
        events,
        elapsed: start.elapsed(),
        put_p99: p99(put_lat),
        commit_p99: p99(commit_lat),
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks cases by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    // Under `cargo test` (no `--bench`) each case runs briefly, as a smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let secs = Duration::from_secs_f64(
        std::env::var("SLUICE_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if benching { 2.0 } else { 0.02 }),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));

    println!(
        "{:<34} {:>12} {:>10} {:>12} {:>12} {:>8}",
        "case", "events/s", "fsyncs/s", "put p99", "commit p99", "w-amp"
    );
    let policies = [
        ("per_commit", Fsync::PerCommit),
        ("interval_10ms", Fsync::Interval(Duration::from_millis(10))),
        ("never", Fsync::Never),
    ];
    for (policy, fsync) in policies {
        for batch in [1usize, 100, 1000, 10_000] {
            let name = format!("rocksdb/{policy}/batch_{batch}");
            if !wanted(&name) {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let ch = RocksChannel::open(
                dir.path(),
                RocksOptions {
                    capacity: 200_000,
                    fsync,
                    statistics: true,
                    ..RocksOptions::default()
                },
            )
            .unwrap();
            let ch = Arc::new(ch);
            let f = rt.block_on(run(Arc::clone(&ch) as Arc<dyn Channel>, batch, secs));
            let s = ch.storage_stats();
            let written = (s.wal_bytes + s.flush_bytes + s.compaction_bytes) as f64;
            let payload = (f.events * BODY as u64) as f64;
            println!(
                "{name:<34} {:>12.0} {:>10.0} {:>12?} {:>12?} {:>8.2}",
                rate(f.events, f.elapsed),
                rate(s.fsyncs, f.elapsed),
                f.put_p99,
                f.commit_p99,
                if payload > 0.0 {
                    written / payload
                } else {
                    0.0
                },
            );
        }
    }

    // Under its memory capacity the spillable channel should run near memory speed: measured
    // in lockstep (put, take, commit one batch at a time), so it never spills.
    for batch in [100usize, 1000] {
        let name = format!("memory/batch_{batch}");
        let memory = if wanted(&name) {
            let ch: Arc<dyn Channel> = Arc::new(MemoryChannel::new(10_000, None));
            let f = rt.block_on(lockstep(ch, batch, secs));
            let r = rate(f.events, f.elapsed);
            println!(
                "{name:<34} {r:>12.0} {:>10} {:>12?} {:>12?}",
                "-", f.put_p99, f.commit_p99
            );
            Some(r)
        } else {
            None
        };
        let name = format!("spillable/batch_{batch}");
        if !wanted(&name) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = RocksChannel::open(dir.path(), RocksOptions::default()).unwrap();
        let ch: Arc<dyn Channel> = Arc::new(SpillableChannel::new(10_000, disk));
        let f = rt.block_on(lockstep(ch, batch, secs));
        let r = rate(f.events, f.elapsed);
        let vs = memory.map_or(String::new(), |m| {
            format!("  ({:.0}% of memory)", 100.0 * r / m)
        });
        println!(
            "{name:<34} {r:>12.0} {:>10} {:>12?} {:>12?}{vs}",
            "-", f.put_p99, f.commit_p99
        );
    }
}
