//! Helpers the kafka, s3, sqs and sql benches share (each includes this file by path), so
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

/// The `sluice` binary on `pipeline` (written to `<dir>/<label>.yaml`), its log in
/// `<dir>/<label>.log`, stdout discarded and `RUST_LOG` unset; stdin is left to the caller.
pub fn agent(dir: &Path, label: &str, pipeline: &str) -> Command {
    let file = dir.join(format!("{label}.yaml"));
    std::fs::write(&file, pipeline).unwrap();
    let log = File::create(dir.join(format!("{label}.log"))).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
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
