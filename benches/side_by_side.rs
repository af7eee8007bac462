//! The side-by-side harness: the workloads of the performance table (BENCHMARKS.md) through one
//! or more builds of the `sluice` binary, each agent pinned to one core, so a change can be
//! checked against the table on the same machine in one run.
//!
//! Every figure is taken from outside the agent: wall time from process start until the sink
//! has counted every event (read from the admin server's `/metrics`), CPU time and peak RSS
//! from `/proc/<pid>`. The workloads (`SLUICE_BENCH_ONLY`, comma-separated; default all but
//! the Kafka ones):
//! - `generator`: generator → memory → null, 20 M events;
//! - `tail`: a 5 M-line file of 256-byte lines in tmpfs → memory → null;
//! - `filter`: the same file through `regex_filter` (drop `level=DEBUG`, a quarter of the
//!   lines) and `static` (add a header);
//! - `wasm`: the same filter as the Rust plugin `sluice plugin new` makes (built with
//!   `sluice plugin build`; `SLUICE_BENCH_WASM_FILTER` names another component);
//! - `http`: 1 KiB JSON POSTs from `wrk` on the other core, 16 keep-alive connections →
//!   memory → null; requests/s, agent CPU-µs per request, p50, and a check that every 2xx
//!   was committed;
//! - `http-rocksdb`: the same into a rocksdb channel (fsync per commit), 64 connections;
//! - `syslog-tcp`, `tcp`: 2 M RFC 5424 messages (256-byte message) or 256-byte lines over 4
//!   TCP connections from a thread on the other core → memory → null;
//! - `exec`: `cat` of the tail workload's file through the `exec` source;
//! - `spooldir`: the same file dropped into a spool directory, read to completion;
//! - `sql`: 1 M rows of a PostgreSQL table (`SLUICE_TEST_POSTGRES`) through the `sql` source,
//!   one poll per 5,000 rows, to completion (rows/s);
//! - `kafka-s3`: the seeds' headline, Kafka source → Kafka channel → S3 sink and Kafka →
//!   memory → S3, 1 M 256-byte records pre-produced to the broker at `SLUICE_TEST_KAFKA`, the
//!   bucket on `SLUICE_TEST_AWS`, gzipped NDJSON objects (`SLUICE_BENCH_S3_COMPRESSION`:
//!   `zstd` or `none` instead), source batches of 5,000 (`SLUICE_BENCH_KAFKA_BATCH`); the
//!   broker's and S3 server's CPU is reported beside the agent's.
//!
//! `SLUICE_BENCH_BINS=before=/path/a,after=/path/b` runs each workload on each build in turn
//! (default: this build); `label=path;VAR=value` adds environment to one (`LD_PRELOAD` of
//! another allocator, for instance); `SLUICE_BENCH_RUNS` (default 3) runs each, reporting the median and
//! the range; `SLUICE_BENCH_CPU` is the agent's core (default 1; load generators get the other).
//! `scripts/bench` installs `wrk` and the servers, builds, and runs it. Under `cargo test` a
//! small version of `generator`, `tail` and `filter` checks the harness itself.

use std::{
    io::{BufWriter, Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Helpers shared by the benches.
#[path = "common/mod.rs"]
mod common;
/// The broker helpers shared with `kafka.rs`.
#[path = "common/kafka.rs"]
mod kafka_support;
use common::{cpu_of, env_or, free_port};

/// Payload size of every event-based workload.
const BODY: usize = 256;
/// A run that has not finished after this long fails the bench.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// One build of the agent under a label, with extra environment (`LD_PRELOAD` of another
/// allocator, say).
struct Build {
    label: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

/// One measured run of one workload on one build.
#[derive(Clone, Copy, Default)]
struct Figures {
    /// Events (or requests) per second.
    rate: f64,
    /// Agent CPU-seconds per million events (or CPU-µs per request for http).
    cpu_per: f64,
    /// Peak resident set of the agent, MiB.
    rss_mib: f64,
    /// Workload-specific extra figure (p50 latency in ms for http, broker+S3 CPU for kafka-s3).
    extra: f64,
}

/// Settings shared by all workloads of one harness run.
struct Bench {
    /// Full sizes (`--bench`) or the small check (`cargo test`).
    full: bool,
    cpu: usize,
    other_cpu: usize,
    work: PathBuf,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let builds: Vec<Build> = match std::env::var("SLUICE_BENCH_BINS") {
        Ok(list) => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (label, rest) = s
                    .split_once('=')
                    .expect("SLUICE_BENCH_BINS: label=path[;VAR=value...],...");
                let mut parts = rest.split(';');
                let bin = PathBuf::from(parts.next().unwrap_or_default());
                let env = parts
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                Build {
                    label: label.to_owned(),
                    bin,
                    env,
                }
            })
            .collect(),
        Err(_) => vec![Build {
            label: "this".to_owned(),
            bin: PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
            env: Vec::new(),
        }],
    };
    let default_only = if full {
        "generator,tail,filter,wasm,http,http-rocksdb,syslog-tcp,tcp,exec,spooldir,sql"
    } else {
        "generator,tail,filter,syslog-tcp,exec,spooldir"
    };
    let only = std::env::var("SLUICE_BENCH_ONLY").unwrap_or_else(|_| default_only.to_owned());
    let runs: usize = env_or("SLUICE_BENCH_RUNS", if full { 3 } else { 1 });
    let cpu: usize = env_or("SLUICE_BENCH_CPU", 1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The small check under `cargo test` keeps to a directory of its own.
    let scratch = tempfile::tempdir().unwrap();
    let bench = Bench {
        full,
        cpu: cpu % cores,
        other_cpu: (cpu + 1) % cores,
        // tmpfs, so the figures are the agent's and not the disk's.
        work: match std::env::var("SLUICE_BENCH_DIR") {
            Ok(dir) => PathBuf::from(dir),
            Err(_) if full => PathBuf::from("/dev/shm/sluice-bench"),
            Err(_) => scratch.path().to_owned(),
        },
    };
    std::fs::create_dir_all(&bench.work).unwrap();
    println!(
        "side by side: agent on core {}, load generators on core {}, {runs} run(s) each (median, range)",
        bench.cpu, bench.other_cpu
    );
    for workload in only.split(',').filter(|w| !w.is_empty()) {
        // Runs alternate between builds, so drift in the machine's speed hits each alike.
        let mut all: Vec<Vec<Figures>> = builds.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs {
            for (build, figures) in builds.iter().zip(&mut all) {
                figures.push(match workload {
                    "generator" => bench.generator(build),
                    "tail" => bench.tail(build, Filter::None),
                    "filter" => bench.tail(build, Filter::BuiltIns),
                    "wasm" => bench.tail(build, Filter::Wasm),
                    "http" => bench.http(build, false, 16),
                    "http-rocksdb" => bench.http(build, true, 64),
                    "syslog-tcp" => bench.socket(build, true),
                    "tcp" => bench.socket(build, false),
                    "exec" => bench.exec(build),
                    "spooldir" => bench.spooldir(build),
                    "sql" => bench.sql(build),
                    "kafka-s3" => bench.kafka_s3(build, true),
                    "kafka-memory-s3" => bench.kafka_s3(build, false),
                    other => panic!("unknown workload {other}"),
                });
            }
        }
        let first = median(&all[0], |f| f.rate);
        for (build, figures) in builds.iter().zip(&all) {
            report(workload, &build.label, figures, first);
        }
    }
}

/// The median of one figure over `runs`.
fn median(runs: &[Figures], f: fn(&Figures) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Prints the medians of `runs`, the range of the rate, and the rate against `first` (the
/// first build's median).
fn report(workload: &str, label: &str, runs: &[Figures], first: f64) {
    let rate = median(runs, |f| f.rate);
    let lo = runs.iter().map(|f| f.rate).fold(f64::INFINITY, f64::min);
    let hi = runs.iter().map(|f| f.rate).fold(0.0, f64::max);
    let (cpu, rss, extra) = (
        median(runs, |f| f.cpu_per),
        median(runs, |f| f.rss_mib),
        median(runs, |f| f.extra),
    );
    let (unit, cpu_unit, extra_text) = match workload {
        "http" | "http-rocksdb" => ("req/s", "CPU-µs/req", format!(", p50 {extra:.2} ms")),
        w if w.starts_with("kafka") => (
            "ev/s",
            "CPU-s/M",
            format!(", broker+S3 server {extra:.2} CPU-s/M"),
        ),
        _ => ("ev/s", "CPU-s/M", String::new()),
    };
    println!(
        "  {workload:>15} {label:>8}: {rate:>11.0} {unit} ({lo:.0}–{hi:.0}, {:>+4.0}%), {cpu:.3} {cpu_unit}, peak RSS {rss:.0} MiB{extra_text}",
        (rate / first - 1.0) * 100.0
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Filter {
    None,
    BuiltIns,
    Wasm,
}

/// A 256-byte log line body (without its newline) at `level`, numbered `seq`.
fn log_line(seq: u64, level: &str) -> String {
    let mut l = format!(
        "ts=2026-12-06T10:00:00.000Z host=web-1 app=shop level={level} msg=\"GET /cart 200\" user=4711 seq={seq} "
    );
    l.truncate(BODY);
    while l.len() < BODY {
        l.push('x');
    }
    l
}

/// Peak resident set of `pid` in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The sum of the `sluice_sink_events_drained_total` series of sink `sink`, read from the
/// admin server on `port`; `None` while it does not answer.
fn drained(port: u16, sink: &str) -> Option<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let label = format!("component=\"{sink}\"");
    Some(
        text.lines()
            .filter(|l| l.starts_with("sluice_sink_events_drained_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Pins the process about to be executed to `cpu`.
fn pin(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sched_setaffinity is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running agent under measurement.
struct Agent {
    child: Child,
    started: Instant,
    admin: u16,
    log: PathBuf,
}

impl Agent {
    /// Starts `build` on `pipeline` (an admin server is added), pinned to the agent's core.
    fn start(bench: &Bench, build: &Build, name: &str, pipeline: &str) -> Agent {
        let dir = bench.work.join(format!("{name}-{}", build.label));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let admin = free_port();
        let file = dir.join("pipeline.yaml");
        let text = format!("admin: {{ listen: '127.0.0.1:{admin}' }}\n{pipeline}")
            .replace("{dir}", &dir.display().to_string());
        std::fs::write(&file, text).unwrap();
        let log = dir.join("agent.log");
        let mut cmd = Command::new(&build.bin);
        cmd.arg("-p")
            .arg(&file)
            .args(["--log-level", "warn"])
            .env_remove("RUST_LOG")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .envs(build.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        pin(&mut cmd, bench.cpu);
        let started = Instant::now();
        let child = cmd.spawn().expect("start sluice");
        Agent {
            child,
            started,
            admin,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the agent's log if it has exited or `RUN_LIMIT` has passed.
    fn check_alive(&mut self, what: &str) {
        let exited = self.child.try_wait().unwrap();
        if exited.is_some() || self.started.elapsed() > RUN_LIMIT {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let _ = self.child.kill();
            panic!("{what}: agent exited ({exited:?}) or ran out of time; its log:\n{log}");
        }
    }

    /// Waits until sink `out` has drained `expected` events; returns the seconds since start.
    fn wait_drained(&mut self, expected: u64) -> f64 {
        loop {
            if drained(self.admin, "out").is_some_and(|n| n >= expected) {
                return self.started.elapsed().as_secs_f64();
            }
            self.check_alive(&format!("waiting for {expected} events"));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the agent (SIGTERM, then SIGKILL after 30 s).
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Figures for `events` events drained since start.
    fn finish(mut self, events: u64) -> Figures {
        let wall = self.wait_drained(events);
        let (cpu, rss) = (cpu_of(self.pid()), peak_rss_mib(self.pid()));
        self.stop();
        Figures {
            rate: events as f64 / wall,
            cpu_per: cpu / events as f64 * 1e6,
            rss_mib: rss,
            extra: 0.0,
        }
    }
}

/// A bench that fails part way does not leave a pinned agent running.
impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Bench {
    fn generator(&self, build: &Build) -> Figures {
        let events: u64 = env_or(
            "SLUICE_BENCH_EVENTS",
            if self.full { 20_000_000 } else { 100_000 },
        );
        let pipeline = format!(
            "channels:\n  mem: {{ type: memory, capacity: 20000 }}\n\
             sources:\n  gen: {{ type: generator, count: {events}, body_size: {BODY}, batch_size: 1000, channels: [mem] }}\n\
             sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n"
        );
        Agent::start(self, build, "generator", &pipeline).finish(events)
    }

    /// The tail workloads' input: `lines` 256-byte lines, every fourth `level=DEBUG`, written
    /// once and kept in the work directory.
    fn log_file(&self, lines: u64) -> PathBuf {
        let path = self.work.join(format!("tail-{lines}.log"));
        let size = lines * (BODY as u64 + 1);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            return path;
        }
        let tmp = path.with_extension("partial");
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).unwrap());
        for seq in 0..lines {
            let level = if seq % 4 == 3 { "DEBUG" } else { "INFO" };
            w.write_all(log_line(seq, level).as_bytes()).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.into_inner().unwrap().sync_all().unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    fn tail(&self, build: &Build, filter: Filter) -> Figures {
        let lines: u64 = env_or(
            "SLUICE_BENCH_LINES",
            if self.full { 5_000_000 } else { 40_000 },
        );
        let file = self.log_file(lines);
        let (plugins, chain, expected, name) = match filter {
            Filter::None => (String::new(), "[]".to_owned(), lines, "tail"),
            Filter::BuiltIns => (
                String::new(),
                "[{ type: regex_filter, regex: 'level=DEBUG', exclude: true }, \
                 { type: static, key: processed-by, value: filter, preserve_existing: false }]"
                    .to_owned(),
                lines - lines / 4,
                "filter",
            ),
            Filter::Wasm => (
                format!(
                    "plugins:\n  filter: {{ path: '{}' }}\n",
                    self.wasm_filter(build).display()
                ),
                "[filter]".to_owned(),
                lines - lines / 4,
                "wasm",
            ),
        };
        let pipeline = format!(
            "{plugins}channels:\n  mem: {{ type: memory, capacity: 20000 }}\n\
             sources:\n  tail: {{ type: file, paths: ['{file}'], position_file: '{{dir}}/positions.json', batch_size: 1000, channels: [mem], interceptors: {chain} }}\n\
             sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n",
            file = file.display()
        );
        Agent::start(self, build, name, &pipeline).finish(expected)
    }

    /// The Rust template interceptor as `sluice plugin new` and `sluice plugin build` of
    /// `build` make it (the project is kept under `~/.cache/sluice-bench-plugins/<label>`:
    /// remove it after changing the template), or `SLUICE_BENCH_WASM_FILTER`.
    fn wasm_filter(&self, build: &Build) -> PathBuf {
        if let Ok(path) = std::env::var("SLUICE_BENCH_WASM_FILTER") {
            return PathBuf::from(path);
        }
        // Built once per harness run and build.
        static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
        if let Some((_, path)) = BUILT
            .lock()
            .unwrap()
            .iter()
            .find(|(l, _)| *l == build.label)
        {
            return path.clone();
        }
        let home = PathBuf::from(std::env::var("HOME").unwrap());
        let parent = home.join(".cache/sluice-bench-plugins").join(&build.label);
        let project = parent.join("filter_rust");
        if !project.exists() {
            std::fs::create_dir_all(&parent).unwrap();
            let ok = Command::new(&build.bin)
                .args([
                    "plugin",
                    "new",
                    "filter_rust",
                    "--kind",
                    "interceptor",
                    "--lang",
                    "rust",
                ])
                .current_dir(&parent)
                .status()
                .unwrap()
                .success();
            assert!(ok, "sluice plugin new failed");
        }
        let out = Command::new(&build.bin)
            .args(["plugin", "build"])
            .arg(&project)
            // Not the target dir `cargo bench` holds locked while this runs.
            .env(
                "CARGO_TARGET_DIR",
                home.join(".cache/sluice-plugins-target"),
            )
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "sluice plugin build failed");
        let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        BUILT
            .lock()
            .unwrap()
            .push((build.label.clone(), path.clone()));
        path
    }

    /// http source → channel → null under `wrk` on the other core.
    fn http(&self, build: &Build, durable: bool, connections: usize) -> Figures {
        let port = free_port();
        let channel = if durable {
            "{ type: rocksdb, path: '{dir}/channel', capacity: 100000 }"
        } else {
            "{ type: memory, capacity: 100000 }"
        };
        let pipeline = format!(
            "channels:\n  mem: {channel}\n\
             sources:\n  hook: {{ type: http, listen: '127.0.0.1:{port}', paths: [/hook], max_concurrent_requests: 4096, batch_size: 1000, channels: [mem] }}\n\
             sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n"
        );
        let name = if durable { "http-rocksdb" } else { "http" };
        let mut agent = Agent::start(self, build, name, &pipeline);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            agent.check_alive("waiting for the http source to listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        let script = self.work.join("post-1k.lua");
        std::fs::write(&script, wrk_script()).unwrap();
        let secs: u64 = env_or("SLUICE_BENCH_SECS", 10);
        let cpu0 = cpu_of(agent.pid());
        let mut wrk = Command::new("wrk");
        wrk.args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
            .args(["--latency", "-s"])
            .arg(&script)
            .arg(format!("http://127.0.0.1:{port}/hook"));
        pin(&mut wrk, self.other_cpu);
        let out = wrk.output().expect("wrk (scripts/bench installs it)");
        let cpu = cpu_of(agent.pid()) - cpu0;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "wrk failed:\n{text}");
        let requests = wrk_figure(&text, " requests in ").expect("wrk's request count") as u64;
        let failed = wrk_figure(&text, "Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
        let rate = wrk_figure(&text, "Requests/sec:").expect("wrk's rate");
        let p50 = wrk_latency_ms(&text, "50%").unwrap_or(f64::NAN);
        // Every answered 2xx was committed: the sink drains exactly that many (requests cut
        // off by wrk's stop may add a few, never fewer).
        let ok = requests - failed;
        agent.wait_drained(ok);
        let rss = peak_rss_mib(agent.pid());
        agent.stop();
        assert!(ok > 0, "no request succeeded:\n{text}");
        Figures {
            rate,
            cpu_per: cpu / ok as f64 * 1e6,
            rss_mib: rss,
            extra: p50,
        }
    }

    /// `syslog` (RFC 5424, newline-framed) or `tcp` (lines) source → memory → null, the
    /// messages written over 4 connections by threads pinned to the other core.
    fn socket(&self, build: &Build, syslog: bool) -> Figures {
        let messages: u64 = env_or(
            "SLUICE_BENCH_MESSAGES",
            if self.full { 2_000_000 } else { 20_000 },
        );
        let port = free_port();
        let source = if syslog {
            format!(
                "{{ type: syslog, listen: '127.0.0.1:{port}', batch_size: 1000, channels: [mem] }}"
            )
        } else {
            format!(
                "{{ type: tcp, listen: '127.0.0.1:{port}', batch_size: 1000, channels: [mem] }}"
            )
        };
        let pipeline = format!(
            "channels:\n  mem: {{ type: memory, capacity: 20000 }}\n\
             sources:\n  net: {source}\n\
             sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n"
        );
        const CONNECTIONS: u64 = 4;
        let per = messages / CONNECTIONS;
        let mut data = Vec::with_capacity(per as usize * (BODY + 80));
        for seq in 0..per {
            if syslog {
                data.extend_from_slice(
                    b"<134>1 2026-12-07T05:30:00.123Z web-1.example.com nginx 1234 ACCESS - ",
                );
            }
            data.extend_from_slice(log_line(seq, "INFO").as_bytes());
            data.push(b'\n');
        }
        let data = std::sync::Arc::new(data);
        let mut agent = Agent::start(
            self,
            build,
            if syslog { "syslog-tcp" } else { "tcp" },
            &pipeline,
        );
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            agent.check_alive("waiting for the source to listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        let other = self.other_cpu;
        let writers: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let data = std::sync::Arc::clone(&data);
                std::thread::spawn(move || {
                    pin_thread(other);
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    for chunk in data.chunks(256 * 1024) {
                        s.write_all(chunk).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        agent.finish(per * CONNECTIONS)
    }

    /// `exec` of `cat` on the tail workload's file → memory → null.
    fn exec(&self, build: &Build) -> Figures {
        let lines: u64 = env_or(
            "SLUICE_BENCH_LINES",
            if self.full { 5_000_000 } else { 40_000 },
        );
        let file = self.log_file(lines);
        let pipeline = format!(
            "channels:\n  mem: {{ type: memory, capacity: 20000 }}\n\
             sources:\n  cmd: {{ type: exec, args: [cat, '{file}'], batch_size: 1000, channels: [mem] }}\n\
             sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n",
            file = file.display()
        );
        Agent::start(self, build, "exec", &pipeline).finish(lines)
    }

    /// The tail workload's file in a spool directory, read to completion → memory → null.
    fn spooldir(&self, build: &Build) -> Figures {
        let lines: u64 = env_or(
            "SLUICE_BENCH_LINES",
            if self.full { 5_000_000 } else { 40_000 },
        );
        let file = self.log_file(lines);
        let spool = self.work.join(format!("spool-{}", build.label));
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::copy(&file, spool.join("part-0.log")).unwrap();
        let pipeline = format!(
            "channels:\n  mem: {{ type: memory, capacity: 20000 }}\n\
             sources:\n  spool: {{ type: spooldir, path: '{spool}', min_age: 0s, delete: true, run_to_completion: true, batch_size: 1000, channels: [mem] }}\n\
             sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n",
            spool = spool.display()
        );
        Agent::start(self, build, "spooldir", &pipeline).finish(lines)
    }

    /// A PostgreSQL table of 1 M rows (id, 256 bytes of text) through the `sql` source.
    fn sql(&self, build: &Build) -> Figures {
        let rows: u64 = env_or(
            "SLUICE_BENCH_ROWS",
            if self.full { 1_000_000 } else { 10_000 },
        );
        let url = std::env::var("SLUICE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let table = format!("bench_rows_{rows}");
        let psql = |sql: &str| {
            let out = Command::new("psql")
                .arg(&url)
                .args(["-qtAc", sql])
                .output()
                .expect("psql");
            assert!(
                out.status.success(),
                "psql: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let have = psql(&format!(
            "SELECT count(*) FROM pg_tables WHERE tablename = '{table}'"
        ));
        if have != "1" {
            psql(&format!(
                "CREATE TABLE {table} (id BIGINT PRIMARY KEY, body TEXT NOT NULL); \
                 INSERT INTO {table} SELECT g, repeat('x', {BODY}) FROM generate_series(1, {rows}) g"
            ));
        }
        let pipeline = format!(
            "channels:\n  mem: {{ type: memory, capacity: 20000 }}\n\
             sources:\n  rows: {{ type: sql, url: '{url}', table: {table}, tracking_column: id, position_file: '{{dir}}/pos.json', run_to_completion: true, batch_size: 5000, channels: [mem] }}\n\
             sinks:\n  out: {{ type: null, channel: mem, batch_size: 5000 }}\n"
        );
        Agent::start(self, build, "sql", &pipeline).finish(rows)
    }

    /// Kafka → (Kafka | memory) channel → S3 (gzipped NDJSON), on 1 M pre-produced records.
    fn kafka_s3(&self, build: &Build, kafka_channel: bool) -> Figures {
        let records: usize = env_or("SLUICE_BENCH_KAFKA_MESSAGES", 1_000_000);
        let partitions: i32 = env_or("SLUICE_BENCH_KAFKA_PARTITIONS", 4);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let broker = kafka_support::broker();
        // The input is produced once per harness run, then read by a fresh group each time.
        static INPUT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let input = INPUT.get_or_init(|| {
            let topic = format!("bench-in-{}", std::process::id());
            rt.block_on(async {
                kafka_support::create_topic(&topic, partitions).await;
                let t0 = Instant::now();
                kafka_support::preproduce(&topic, records, partitions, BODY).await;
                println!(
                    "  kafka-s3: {records} records of {BODY} bytes pre-produced to {partitions} partitions in {:.1}s",
                    t0.elapsed().as_secs_f64()
                );
            });
            topic
        });
        let run = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        let s3 = std::env::var("SLUICE_TEST_AWS").unwrap_or("http://127.0.0.1:4566".into());
        let bucket = format!("bench-{run}");
        create_bucket(&s3, &bucket);
        let channel = if kafka_channel {
            let topic = format!("bench-channel-{run}");
            rt.block_on(kafka_support::create_topic(&topic, partitions));
            format!("{{ type: kafka, bootstrap_servers: '{broker}', topic: {topic} }}")
        } else {
            "{ type: memory, capacity: 100000 }".to_owned()
        };
        let compression =
            std::env::var("SLUICE_BENCH_S3_COMPRESSION").unwrap_or_else(|_| "gzip".into());
        let source_batch: usize = env_or("SLUICE_BENCH_KAFKA_BATCH", 5000);
        let pipeline = format!(
            "channels:\n  ch: {channel}\n\
             sources:\n  in: {{ type: kafka, bootstrap_servers: '{broker}', group_id: 'bench-{run}', topics: [{input}], start_at: earliest, batch_size: {source_batch}, channels: [ch] }}\n\
             sinks:\n  out: {{ type: s3, channel: ch, batch_size: 20000, endpoint: '{s3}', force_path_style: true, region: us-east-1, bucket: {bucket}, key: 'bench/', format: ndjson, compression: {compression}, roll_size: 8MiB, roll_interval: 1s }}\n"
        );
        let servers = || server_cpu(&["tansu", "moto_server"]);
        let servers0 = servers();
        let name = if kafka_channel {
            "kafka-s3"
        } else {
            "kafka-memory-s3"
        };
        let agent = Agent::start(self, build, name, &pipeline);
        let mut f = agent.finish(records as u64);
        f.extra = (servers() - servers0) / records as f64 * 1e6;
        f
    }
}

/// Pins the calling thread to `cpu` (the load generator's core).
fn pin_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU seconds used so far by every process whose command line mentions one of `names`.
fn server_cpu(names: &[&str]) -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if names.iter().any(|n| cmd.contains(n)) {
            total += cpu_of(pid);
        }
    }
    total
}

/// Creates `bucket` on the S3 API at `endpoint` (moto takes unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(host).expect("the S3 server");
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {answer}"
    );
}

/// wrk's Lua script: POST a 1 KiB JSON body.
fn wrk_script() -> String {
    let head = r#"{"event":"order.created","id":"ord_0000000001","pad":""#;
    let tail = r#""}"#;
    let body = format!("{head}{}{tail}", "x".repeat(1024 - head.len() - tail.len()));
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{body}'\n"
    )
}

/// The number after `key` in wrk's report (`1234 requests in`, `Requests/sec: 5.6`).
fn wrk_figure(text: &str, key: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(key))?;
    if key.starts_with(' ') {
        // The count comes before the key.
        line.split(key).next()?.trim().parse().ok()
    } else {
        line.split(key)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// A latency percentile from wrk's `--latency` table, in ms.
fn wrk_latency_ms(text: &str, percentile: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(percentile))?;
    let v = line.split_whitespace().nth(1)?;
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}
