//! File source throughput: lines/s read from 10 growing files, through the real source into a
//! memory channel drained by a null sink (100-byte lines, batches of 1000).
//!
//! Two phases. Backlog: 10 files of pre-written lines are read from their start — the most the
//! source can do. Follow: 10 writer threads append at a steady total rate (half the backlog
//! rate unless `SLUICE_BENCH_RATE` says otherwise) while the source follows; the lag (lines
//! written but not yet in the channel) is sampled every 500ms and should not grow.
//! `SLUICE_BENCH_LINES` sets the backlog (default 1,000,000 lines, ~100 MB on disk),
//! `SLUICE_BENCH_SECS` the follow phase (default 10). Under `cargo test` a tiny version runs.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sluice_core::{sink::runner::RunnerControl, source::SourceContext, topology::Topology};
use tokio_util::sync::CancellationToken;

const FILES: usize = 10;
const LINE: usize = 100;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends lines `from..from + n` of file number `file`, each exactly `LINE` bytes.
fn append(path: &Path, file: usize, from: u64, n: u64) {
    let mut buf = Vec::with_capacity(n as usize * LINE);
    for seq in from..from + n {
        let start = buf.len();
        write!(buf, "{file:02} {seq:012} ").unwrap();
        buf.resize(start + LINE - 1, b'.');
        buf.push(b'\n');
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(&buf).unwrap();
}

fn log_path(logs: &Path, i: usize) -> PathBuf {
    logs.join(format!("{i:02}.log"))
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let backlog: u64 = env_or(
        "SLUICE_BENCH_LINES",
        if benching { 1_000_000 } else { 20_000 },
    );
    let follow_for =
        Duration::from_secs(env_or("SLUICE_BENCH_SECS", if benching { 10 } else { 1 }));
    let per_file = backlog / FILES as u64;

    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    for i in 0..FILES {
        append(&log_path(&logs, i), i, 0, per_file);
    }
    let text = format!(
        "channels:\n  mem: {{ type: memory, capacity: 20000 }}\n\
         sources:\n  tail: {{ type: file, paths: ['{logs}/*.log'], position_file: '{d}/positions.json', batch_size: 1000, channels: [mem] }}\n\
         sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n",
        logs = logs.display(),
        d = dir.path().display(),
    );
    let p = sluice_core::config::load_str(
        Path::new("bench.yaml"),
        &text,
        &|_| None,
        sluice::registry(),
    )
    .unwrap();
    let metrics = sluice_core::metrics::Metrics::new();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("tail: {FILES} files, {LINE}-byte lines, batch 1000, memory channel -> null sink");
    rt.block_on(async {
        let Topology {
            sources, runners, ..
        } = sluice_core::topology::build(&p, &metrics, sluice::registry())
            .unwrap_or_else(|e| panic!("{e}"));
        let ctl = RunnerControl::default();
        let runner_tasks: Vec<_> = runners
            .into_iter()
            .map(|r| tokio::spawn(r.run(ctl.clone())))
            .collect();
        let s = sources.into_iter().next().unwrap();
        let accepted = s.metrics.accepted.clone();
        let stop = CancellationToken::new();
        let cx = SourceContext {
            name: s.name.clone(),
            out: s.processor,
            shutdown: stop.clone(),
        };

        // Backlog: read what is there as fast as possible.
        let total = per_file * FILES as u64;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let source_task = tokio::spawn(s.source.run(cx));
        while accepted.get() < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
        let capacity = total as f64 / wall;
        println!(
            "  backlog: {total} lines in {wall:.2}s: {capacity:>10.0} lines/s  {:>6.1} MiB/s  {:.3} CPU-s per M lines",
            capacity * LINE as f64 / (1 << 20) as f64,
            cpu / total as f64 * 1e6,
        );

        // Follow: steady writers, sampled lag.
        let rate: f64 = env_or(
            "SLUICE_BENCH_RATE",
            if benching {
                (capacity / 2.0).max(1000.0)
            } else {
                5000.0
            },
        );
        let written = Arc::new(AtomicU64::new(total));
        let running = Arc::new(AtomicBool::new(true));
        let writers: Vec<_> = (0..FILES)
            .map(|i| {
                let path = log_path(&logs, i);
                let (written, running) = (Arc::clone(&written), Arc::clone(&running));
                let per_sec = rate / FILES as f64;
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let (mut seq, mut done) = (per_file, 0u64);
                    while running.load(Ordering::Relaxed) {
                        let due = (start.elapsed().as_secs_f64() * per_sec) as u64;
                        if due > done {
                            append(&path, i, seq, due - done);
                            written.fetch_add(due - done, Ordering::Relaxed);
                            seq += due - done;
                            done = due;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        let (a0, t1) = (accepted.get(), Instant::now());
        let mut lags = Vec::new();
        while t1.elapsed() < follow_for {
            tokio::time::sleep(Duration::from_millis(500)).await;
            lags.push(written.load(Ordering::Relaxed).saturating_sub(accepted.get()));
        }
        running.store(false, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let follow_wall = t1.elapsed().as_secs_f64();
        let read = (accepted.get() - a0) as f64 / follow_wall;
        let end = written.load(Ordering::Relaxed);
        let t2 = Instant::now();
        while accepted.get() < end {
            assert!(t2.elapsed() < Duration::from_secs(120), "source never caught up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let catch_up = t2.elapsed();
        let quarter = (lags.len() / 4).max(1);
        let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
        let (early, late) = (mean(&lags[..quarter]), mean(&lags[lags.len() - quarter..]));
        // Lag within a quarter second of writing counts as steady.
        let verdict = if late <= early + rate / 4.0 {
            "steady"
        } else {
            "GROWING"
        };
        println!(
            "  follow:  writing {rate:>10.0} lines/s for {follow_wall:.1}s, read {read:>10.0} lines/s; lag first/last quarter {early:.0}/{late:.0} lines ({verdict}); caught up {catch_up:.2?} after writers stopped"
        );
        println!("  lag samples (every 500ms): {lags:?}");

        stop.cancel();
        source_task.await.unwrap().unwrap();
        ctl.drain.cancel();
        for t in runner_tasks {
            t.await.unwrap();
        }
    });
}
