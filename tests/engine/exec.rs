//! The `exec` source through the real binary: a command that prints and exits ends a batch
//! run; a failing command is restarted with its exit status logged; stderr goes to the log.

use std::time::{Duration, Instant};

use crate::common::{Agent, lines, sluice, stderr};

#[test]
fn a_command_that_ends_ends_the_run_with_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  cmd: {{ type: exec, args: [seq, '1', '20000'], channels: [mem], batch_size: 500 }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{d}/out.txt' }}\n"
        ),
    )
    .unwrap();
    let out = sluice().arg("-p").arg(&pipeline).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let got = lines(&dir.path().join("out.txt"));
    let want: Vec<String> = (1..=20000).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    let log = stderr(&out);
    assert!(log.contains("command exited"), "{log}");
}

#[test]
fn a_failing_command_is_restarted_and_its_stderr_logged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let runs = dir.path().join("runs");
    let mut agent = Agent::start(
        dir.path(),
        "exec",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  cmd:\n    type: exec\n    command: \"echo run >> '{runs}'; n=$(wc -l < '{runs}'); for i in 1 2 3; do echo \\\"run $n line $i\\\"; done; echo oops >&2; exit 3\"\n    \
             restart: on_failure\n    restart_backoff: 50ms\n    channels: [mem]\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{d}/out.txt' }}\n",
            runs = runs.display()
        ),
    );
    let out = dir.path().join("out.txt");
    let t0 = Instant::now();
    while std::fs::read_to_string(&out).map_or(0, |s| s.lines().count()) < 9 {
        agent.assert_running();
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.stop_blocking();
    let got = lines(&out);
    // Whole runs in order: run 1's three lines, then run 2's, ...
    for (k, line) in got.iter().enumerate() {
        assert_eq!(
            line,
            &format!("run {} line {}", k / 3 + 1, k % 3 + 1),
            "{got:?}"
        );
    }
    assert!(log.contains("command failed"), "{log}");
    assert!(log.contains("exit status: 3"), "{log}");
    assert!(log.contains("command stderr: oops"), "{log}");
    assert!(log.contains("restarting the command"), "{log}");
}

#[test]
fn commands_are_checked_when_the_pipeline_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        "channels:\n  mem: { type: memory }\nsources:\n  cmd: { type: exec, channels: [mem] }\nsinks:\n  out: { type: null, channel: mem }\n",
    )
    .unwrap();
    let out = sluice().arg("validate").arg(&pipeline).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("p.yaml:4") && err.contains("`command`"),
        "{err}"
    );
}
