//! Helpers the kafka, s3, sqs, sql, http and hop benches share (each includes this file by path), so
//! none keeps its own copy of them. What the tests have too (unique names, the test servers)
//! comes from the tests' helpers, `tests/common/mod.rs`, which those benches include by path
//! as `test_support`.

// Each bench uses only some of it.
#![allow(dead_code)]

use std::{
    fs::File,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The variable `name` parsed as a `T`, or `default` when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One timed run: `count` records (events, messages) in `elapsed`.
pub struct Measure {
    pub count: u64,
    pub elapsed: Duration,
}

impl Measure {
    /// `count` records from `t0` to `now`, at least 1 ms apart.
    pub fn between(count: u64, t0: Instant, now: Instant) -> Measure {
        Measure {
            count,
            elapsed: now
                .saturating_duration_since(t0)
                .max(Duration::from_millis(1)),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU seconds a process has used so far (utime + stime from /proc/<pid>/stat).
pub fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The `sluice` binary on `pipeline` (written to `<dir>/<label>.yaml`), its log in
/// `<dir>/<label>.log`, stdout discarded and `RUST_LOG` unset; stdin is left to the caller.
pub fn agent(dir: &Path, label: &str, pipeline: &str) -> Command {
    let file = dir.join(format!("{label}.yaml"));
    std::fs::write(&file, pipeline).unwrap();
    let log = File::create(dir.join(format!("{label}.log"))).unwrap();
    // Another build of the agent, for before/after figures in one session.
    let bin = std::env::var("SLUICE_BENCH_BIN").unwrap_or(env!("CARGO_BIN_EXE_sluice").into());
    let mut c = Command::new(bin);
    c.arg("-p")
        .arg(&file)
        .args(["--log-level", "warn"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log);
    c
}

/// [`agent`] started, with stdin inherited.
pub fn spawn_agent(dir: &Path, label: &str, pipeline: &str) -> Child {
    agent(dir, label, pipeline).spawn().expect("start sluice")
}

/// What the agent run under `label` has logged so far (empty if nothing).
pub fn agent_log(dir: &Path, label: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{label}.log"))).unwrap_or_default()
}
