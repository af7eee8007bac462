//! Webhook throughput: the real `sluice` binary with an http source (1 KiB JSON bodies, `raw`
//! codec) → memory channel → null sink, driven by an in-process load generator: N keep-alive
//! HTTP/1.1 connections (hyper client), each sending its next request as soon as the last
//! one is answered (closed loop).
//!
//! Reports requests/s, latency percentiles, and CPU — the agent's from /proc (utime+stime),
//! the load generator's from getrusage — for plain requests and for HMAC-signed ones; then
//! checks the agent's summary: every request answered 200 was committed, and nothing else.
//! Both processes share this machine's cores, so the figure includes the generator's cost.
//! `SLUICE_BENCH_SECS` (measured seconds, default 10, after 1 s of warm-up),
//! `SLUICE_BENCH_CONNS` (connections, default 64), `SLUICE_BENCH_CLIENT_THREADS` (default 1).
//! Run with `cargo bench --bench http`; under `cargo test` it runs a one-second smoke version.

use std::{
    io::Write,
    net::TcpStream as StdTcpStream,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use sha2::Sha256;

const SECRET: &str = "bench-secret";

#[path = "common/mod.rs"]
mod common;

use common::{cpu_of, env_or};

/// CPU seconds used by this process so far.
fn cpu_self() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn body_1k() -> Bytes {
    let head = r#"{"event":"order.created","id":"ord_0000000001","pad":""#;
    let tail = r#""}"#;
    let pad = "x".repeat(1024 - head.len() - tail.len());
    let b = format!("{head}{pad}{tail}");
    assert_eq!(b.len(), 1024);
    Bytes::from(b)
}

/// One measured configuration: authentication and channel kind.
#[derive(Clone, Copy)]
struct Case {
    label: &'static str,
    hmac: bool,
    /// A rocksdb channel (fsync per commit) instead of memory.
    durable: bool,
}

fn pipeline(port: u16, dir: &Path, Case { hmac, durable, .. }: Case) -> String {
    let auth = if hmac {
        "auth: { type: hmac, secret_env: BENCH_SECRET }"
    } else {
        ""
    };
    let channel = if durable {
        format!(
            "{{ type: rocksdb, path: '{}', capacity: 100000 }}",
            dir.join("channel").display()
        )
    } else {
        "{ type: memory, capacity: 100000 }".to_owned()
    };
    format!(
        "channels:\n  mem: {channel}\n\
         sources:\n  hook:\n    type: http\n    listen: '127.0.0.1:{port}'\n    paths: [/hook]\n    max_concurrent_requests: 4096\n    batch_size: 1000\n    {auth}\n    channels: [mem]\n\
         sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n"
    )
}

fn start_agent(dir: &Path, case: Case) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = dir.join(format!("bench-{}.yaml", case.label));
    std::fs::write(&file, pipeline(port, dir, case)).unwrap();
    let log = std::fs::File::create(dir.join(format!("bench-{}.log", case.label))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("-p")
        .arg(file)
        .args(["--log-level", "warn"])
        .env("BENCH_SECRET", SECRET)
        .env_remove("RUST_LOG")
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the agent never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

/// One closed-loop connection: (200s in total, latencies in µs after warm-up, non-200s).
async fn connection(
    port: u16,
    body: Bytes,
    signature: Option<String>,
    warm: Instant,
    stop: Instant,
) -> (u64, Vec<u32>, u64) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (mut ok, mut other) = (0u64, 0u64);
    let mut latencies = Vec::with_capacity(1 << 16);
    while Instant::now() < stop {
        let mut req = Request::post("/hook")
            .header("host", "bench")
            .header("content-type", "application/json");
        if let Some(s) = &signature {
            req = req.header("x-hub-signature-256", s.as_str());
        }
        let req = req.body(Full::new(body.clone())).unwrap();
        if sender.ready().await.is_err() {
            break;
        }
        let t0 = Instant::now();
        let Ok(resp) = sender.send_request(req).await else {
            break;
        };
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
        if status == 200 {
            ok += 1;
        } else {
            other += 1;
        }
        if t0 >= warm {
            latencies.push(us);
        }
    }
    (ok, latencies, other)
}

fn run(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    case: Case,
    conns: usize,
    (warmup, secs): (Duration, u64),
) {
    let (mut child, port) = start_agent(dir, case);
    let body = body_1k();
    let signature = case.hmac.then(|| {
        let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(&body);
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    });
    let start = Instant::now();
    let warm = start + warmup;
    let stop = warm + Duration::from_secs(secs);
    let (results, cpu_agent, cpu_gen) = rt.block_on(async {
        let tasks: Vec<_> = (0..conns)
            .map(|_| {
                tokio::spawn(connection(
                    port,
                    body.clone(),
                    signature.clone(),
                    warm,
                    stop,
                ))
            })
            .collect();
        tokio::time::sleep_until(warm.into()).await;
        let (agent0, gen0) = (cpu_of(child.id()), cpu_self());
        tokio::time::sleep_until(stop.into()).await;
        let (agent1, gen1) = (cpu_of(child.id()), cpu_self());
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        (results, agent1 - agent0, gen1 - gen0)
    });

    let ok_total: u64 = results.iter().map(|r| r.0).sum();
    let other: u64 = results.iter().map(|r| r.2).sum();
    let mut lat: Vec<u32> = results.into_iter().flat_map(|r| r.1).collect();
    lat.sort_unstable();
    let n = lat.len().max(1);
    let pct = |p: f64| {
        lat.get(((n as f64 * p) as usize).min(n - 1))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let rps = lat.len() as f64 / secs as f64;

    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let summary = std::fs::read_to_string(dir.join(format!("bench-{}.log", case.label))).unwrap();
    assert!(status.success(), "{summary}");
    let accepted: u64 = summary
        .split("accepted ")
        .nth(1)
        .and_then(|s| s.split(',').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary in:\n{summary}"));
    assert_eq!(
        accepted, ok_total,
        "every 200 committed, nothing else:\n{summary}"
    );

    println!(
        "  {:<12} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  agent {:.2} cores ({:.1} µs/req)  load generator {:.2} cores  non-200: {other}",
        case.label,
        rps,
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        cpu_agent / secs as f64,
        cpu_agent / lat.len().max(1) as f64 * 1e6,
        cpu_gen / secs as f64,
    );
    let _ = std::io::stdout().flush();
}

fn main() {
    // `cargo bench` passes `--bench`; other harness flags are ignored here.
    let benching = std::env::args().any(|a| a == "--bench");
    let secs: u64 = env_or("SLUICE_BENCH_SECS", if benching { 10 } else { 1 });
    let conns: usize = env_or("SLUICE_BENCH_CONNS", if benching { 64 } else { 4 });
    let warmup = Duration::from_millis(if benching { 1000 } else { 200 });
    let threads: usize = env_or("SLUICE_BENCH_CLIENT_THREADS", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "http: webhook source -> memory|rocksdb -> null, 1 KiB JSON bodies, {conns} keep-alive connections, {secs} s (+{warmup:?} warm-up), {} cores, load generator on {threads} thread(s)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let cases = [
        Case {
            label: "memory",
            hmac: false,
            durable: false,
        },
        Case {
            label: "memory+hmac",
            hmac: true,
            durable: false,
        },
        Case {
            label: "rocksdb",
            hmac: false,
            durable: true,
        },
    ];
    for case in cases {
        run(&rt, dir.path(), case, conns, (warmup, secs));
    }
}
