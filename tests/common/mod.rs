//! Helpers shared by the integration tests (each of `tests/engine`, `tests/connectors` and
//! `tests/crash` includes this module as `common`; some benches include it by path too):
//! spawning the binary, reading outputs, tiny HTTP, waiting, unique names.

// Shared test support: every binary that includes it uses only part of it.
#![allow(dead_code)]

// The AWS test server (moto) and the SQL servers, for the connector tests and benches; only
// when their client crates are in the build (the engine tests run with no features at all).
#[cfg(any(
    feature = "aws-s3",
    feature = "aws-sqs",
    feature = "aws-dynamodb",
    feature = "aws-kinesis"
))]
pub mod aws;
pub mod faults;
pub mod jepsen;
#[cfg(all(feature = "sql-postgres", feature = "sql-mysql"))]
pub mod sql;

use std::{
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The `sluice` binary, run from the repository root, with `RUST_LOG` unset.
pub fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.current_dir(repo_root()).env_remove("RUST_LOG");
    c
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn json_lines(p: &Path) -> Vec<serde_json::Value> {
    lines(p)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A first-party plugin built by `scripts/build-plugins` (`plugins/dist/<name>.wasm`); panics
/// saying so when it is missing.
pub fn dist(name: &str) -> PathBuf {
    let p = repo_root()
        .join("plugins/dist")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-plugins first",
        p.display()
    );
    p
}

/// The number at the start of a generator body ("42....").
pub fn seq(body: &str) -> u64 {
    body.trim_end_matches('.')
        .parse()
        .unwrap_or_else(|_| panic!("not a generator body: {body:?}"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; `(status, whole response)`.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some((buf.split(' ').nth(1)?.parse().ok()?, buf))
}

/// The `sluice` binary on `pipeline` (written to `<dir>/p.yaml`) with `input` on its stdin,
/// run until it has drained and exited by itself (at most 120 s); its log is
/// `<dir>/stderr.log`. Panics with the log unless the whole input was written and it exited
/// cleanly; returns the log. Blocking: from async tests, call it in `spawn_blocking`.
pub fn run_stdin(dir: &Path, pipeline: &str, input: impl AsRef<[u8]>) -> String {
    let file = dir.join("p.yaml");
    std::fs::write(&file, pipeline).unwrap();
    let log_path = dir.join("stderr.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut child = sluice()
        .arg("-p")
        .arg(&file)
        .args(["--log-level", "info"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(File::create(&log_path).unwrap())
        .spawn()
        .expect("start sluice");
    // Written whole, then stdin is closed (the temporary is dropped): the stdin source ends.
    let written = child.stdin.take().unwrap().write_all(input.as_ref());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice did not finish in 120 s:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "sluice failed ({status}):\n{}", log());
    written.unwrap_or_else(|e| panic!("writing stdin: {e}\n{}", log()));
    log()
}

/// One ndjson envelope line (`{"headers": {..}, "body": ".."}` and a newline), the input the
/// `stdin` source's `ndjson` codec reads.
pub fn envelope(headers: &[(&str, String)], body: &str) -> String {
    let h: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({ "headers": h, "body": body }).to_string() + "\n"
}

/// The Python interpreter with the test clients (confluent-kafka, nats-py, boto3, pyarrow)
/// that `scripts/test` installs.
pub fn python() -> String {
    std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/sluice-tools/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

/// The bodies of an NDJSON file sink's output so far (none before it exists).
pub fn ndjson_bodies(p: &Path) -> Vec<String> {
    if !p.exists() {
        return Vec::new();
    }
    json_lines(p)
        .iter()
        .map(|e| e["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `prefix` plus a random suffix (`<prefix>-<uuid>`), so runs never share a topic, queue,
/// bucket, table, stream or key.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A `sluice` agent in the background on a pipeline written to `<dir>/<name>.yaml`, its log
/// in `<dir>/<name>.log`; killed when dropped.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    pub fn start(dir: &Path, name: &str, pipeline: &str) -> Agent {
        Agent::start_env(dir, name, pipeline, &[])
    }

    /// [`start`](Agent::start) with more environment variables.
    pub fn start_env(dir: &Path, name: &str, pipeline: &str, env: &[(&str, &str)]) -> Agent {
        Agent::start_with(dir, name, pipeline, env, &[])
    }

    /// [`start`](Agent::start) with more environment variables and command-line arguments.
    pub fn start_with(
        dir: &Path,
        name: &str,
        pipeline: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Agent {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, pipeline).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = sluice()
            .envs(env.iter().copied())
            .arg("-p")
            .arg(&file)
            .args(args)
            .args(["--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start sluice");
        Agent {
            child: Some(child),
            log,
        }
    }

    /// The end of the log (the last 12 kB), for failure messages.
    pub fn log(&self) -> String {
        log_tail(&self.log)
    }

    /// [`wait_until`] with this agent's log in the panic message, which also fails at once,
    /// with the agent's exit status, when the agent has exited while `check` is still waiting.
    pub async fn wait_until<T>(
        &mut self,
        limit: Duration,
        every: Duration,
        mut check: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        // The log is read by path: the check below holds the agent mutably.
        let path = self.log.clone();
        let log = move || log_tail(&path);
        wait_until(limit, every, log, async || {
            let r = check().await;
            if r.is_err() {
                self.assert_running();
            }
            r
        })
        .await
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("sluice exited ({status}):\n{}", self.log());
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to acknowledge, commit, close or flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then a clean exit within 30 s; returns the log. An agent still starting is
    /// given up to 30 s to run its pipelines first (before that a SIGTERM ends the process
    /// by default, not by a clean stop).
    pub fn stop_blocking(mut self) -> String {
        let mut child = self.child.take().expect("agent already stopped");
        let deadline = Instant::now() + Duration::from_secs(30);
        let running =
            |log: &Path| std::fs::read_to_string(log).is_ok_and(|l| l.contains("pipeline running"));
        while !running(&self.log)
            && child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sluice did not stop in 30s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log();
        assert!(status.success(), "sluice exited with {status}:\n{log}");
        log
    }

    /// [`stop_blocking`](Agent::stop_blocking) without blocking the runtime.
    pub async fn stop(self) -> String {
        tokio::task::spawn_blocking(move || self.stop_blocking())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last 12 kB of the log at `path` (empty if there is none).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let cut = text.len().saturating_sub(12_000);
    let cut = (cut..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[cut..].to_owned()
}

/// Polls `check` every `every` until it gives `Ok`, and returns that. `Err` says what is still
/// awaited (and how far it got); after `limit` that and `log()` (the agent's log, say) are the
/// panic message, so a test that times out shows why without a rerun.
pub async fn wait_until<T>(
    limit: Duration,
    every: Duration,
    log: impl Fn() -> String,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(t) => return t,
            Err(pending) => assert!(
                Instant::now() < deadline,
                "after {limit:?}: {pending}:\n{}",
                log()
            ),
        }
        tokio::time::sleep(every).await;
    }
}
