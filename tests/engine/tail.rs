//! The `file` source through the real binary: files grow, are rotated by rename + create and by
//! copy-truncate, new files appear, and the agent is stopped and restarted in the middle —
//! every line must arrive exactly once, in order per stream.
//!
//! Lines are `<stream> <seq>`; a stream continues across its file's rotations (a.log, then
//! the new a.log), so order is checked per stream, which is stricter than per file.

use crate::common::{json_lines, sluice, stderr};
use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

/// A running agent, killed if the test fails before stopping it.
struct Agent {
    child: Option<Child>,
}

impl Agent {
    fn start(pipeline: &Path, log: &Path) -> Agent {
        let child = sluice()
            .arg("-p")
            .arg(pipeline)
            .stderr(File::create(log).unwrap())
            .spawn()
            .unwrap();
        Agent { child: Some(child) }
    }

    /// SIGTERM, then wait: a clean stop.
    fn stop(mut self) -> Output {
        let child = self.child.take().unwrap();
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        child.wait_with_output().unwrap()
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

/// Numbered lines per stream, appended to whatever file the stream writes now.
struct Writer {
    logs: PathBuf,
    next: BTreeMap<&'static str, u64>,
}

impl Writer {
    fn append(&mut self, file: &str, stream: &'static str, n: u64) {
        let next = self.next.entry(stream).or_insert(0);
        let mut text = String::new();
        for seq in *next..*next + n {
            text.push_str(&format!("{stream} {seq:06} {}\n", "x".repeat(40)));
        }
        *next += n;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(file))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn total(&self) -> usize {
        self.next.values().sum::<u64>() as usize
    }
}

fn rename(logs: &Path, from: &str, to: &str) {
    std::fs::rename(logs.join(from), logs.join(to)).unwrap();
}

/// Complete lines in the output so far.
fn delivered(out: &Path) -> usize {
    std::fs::read(out)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn wait_for(out: &Path, n: usize, agent_log: &Path) {
    let t0 = Instant::now();
    while delivered(out) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "only {} of {n} lines delivered; agent log:\n{}",
            delivered(out),
            std::fs::read_to_string(agent_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rotation_truncation_and_restarts_deliver_every_line_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.ndjson");
    let pipeline = dir.path().join("tail.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  logs:\n    type: file\n    paths: ['{logs}/*.log']\n    position_file: '{d}/state/positions.json'\n    poll_interval: 50ms\n    rotate_wait: 500ms\n    batch_size: 100\n    channels: [mem]\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{out}', format: ndjson }}\n\
             shutdown_timeout: 10s\n",
            logs = logs.display(),
            d = dir.path().display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let mut w = Writer {
        logs: logs.clone(),
        next: BTreeMap::new(),
    };
    let log1 = dir.path().join("agent-1.log");
    let log2 = dir.path().join("agent-2.log");

    // Files that exist before the first start are read from their beginning.
    w.append("a.log", "a", 500);
    w.append("b.log", "b", 500);
    let agent = Agent::start(&pipeline, &log1);
    wait_for(&out, w.total(), &log1);

    // Growth in several writes, and a new file.
    for _ in 0..3 {
        w.append("a.log", "a", 100);
        w.append("b.log", "b", 100);
        std::thread::sleep(Duration::from_millis(30));
    }
    w.append("c.log", "c", 100);
    wait_for(&out, w.total(), &log1);

    // Rename + create: the writer still appends to the renamed file for a moment.
    rename(&logs, "a.log", "a.log.1");
    w.append("a.log.1", "a", 50);
    w.append("a.log", "a", 200);
    wait_for(&out, w.total(), &log1);

    // Copy-truncate, once everything is read (what is written between the copy and the
    // truncation is lost by design), then a pause so the truncation is seen before the file
    // grows past the old position.
    std::fs::copy(logs.join("b.log"), logs.join("b.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(logs.join("b.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    w.append("b.log", "b", 200);
    wait_for(&out, w.total(), &log1);

    // Stop in the middle of writing: whatever was not committed yet is read after the restart.
    w.append("a.log", "a", 100);
    w.append("b.log", "b", 100);
    let o = agent.stop();
    assert!(
        o.status.success(),
        "{}",
        std::fs::read_to_string(&log1).unwrap()
    );

    // While stopped: more lines, and a rotation whose old file leaves the globs.
    w.append("a.log", "a", 50);
    rename(&logs, "a.log", "a.log.2");
    w.append("a.log", "a", 100);
    w.append("b.log", "b", 100);
    w.append("c.log", "c", 100);

    let agent = Agent::start(&pipeline, &log2);
    w.append("a.log", "a", 100);
    w.append("b.log", "b", 100);
    wait_for(&out, w.total(), &log2);
    let o = agent.stop();
    let summary = std::fs::read_to_string(&log2).unwrap();
    assert!(o.status.success(), "{summary}");
    assert!(summary.contains("sluice: stopped in"), "{summary}");

    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let got = json_lines(&out);
    for (i, v) in got.iter().enumerate() {
        let body = v["body"].as_str().unwrap();
        let mut parts = body.split(' ');
        let stream = parts.next().unwrap().to_owned();
        let seq: u64 = parts.next().unwrap().parse().unwrap();
        let file = v["headers"]["file"].as_str().unwrap_or_default();
        assert!(
            file.starts_with(&logs.display().to_string()),
            "line {i} has file header {file:?}"
        );
        let want = next.entry(stream.clone()).or_insert(0);
        assert_eq!(
            seq, *want,
            "output line {i}: stream {stream} expected {want}, got {seq} (lost, duplicated or out of order)"
        );
        *want += 1;
    }
    let expected: BTreeMap<String, u64> =
        w.next.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    assert_eq!(next, expected, "every line of every stream, once");
    assert_eq!(got.len(), w.total());

    let positions: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/positions.json")).unwrap())
            .unwrap();
    assert_eq!(positions["version"], 1);
    assert!(positions["files"].as_array().unwrap().len() >= 3);
}

#[test]
fn the_example_validates() {
    let o = sluice()
        .args(["validate", "examples/tail.yaml"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}
