//! Live reload of the pipeline file through the binary: under load, unchanged paths keep
//! running untouched while others are added, removed and changed; broken files are refused
//! with the old pipeline still running; channels are replaced only when empty; SIGHUP and a
//! change of the file trigger it.

use std::{
    io::{Read, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{free_port, lines, seq, sluice};

/// An agent on `<dir>/p.yaml` with its log in `<dir>/agent.log`.
struct Agent {
    child: Child,
    dir: std::path::PathBuf,
}

impl Agent {
    fn start(dir: &Path, pipeline: &str, args: &[&str]) -> Agent {
        std::fs::write(dir.join("p.yaml"), pipeline).unwrap();
        let child = sluice()
            .arg("-p")
            .arg(dir.join("p.yaml"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
            .spawn()
            .unwrap();
        Agent {
            child,
            dir: dir.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "did not stop:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POST /config/reload: (status, body).
fn reload(admin: u16) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    write!(
        s,
        "POST /config/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split(' ').nth(1).unwrap().parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count_lines(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| lines(&e.path()).len())
        .sum()
}

/// The pipeline in variant `i` of the reload cycle: path A (gen_a → a → out_a) never
/// changes; path B's sink path, interceptor and an extra sink do.
fn variant(dir: &Path, admin: u16, i: usize) -> String {
    let d = dir.display();
    let (path, value, extra) = match i % 4 {
        0 => (i, i / 4, false),
        1 => (i - 1, i / 4 + 100, false),
        2 => (i - 2, i / 4 + 100, true),
        _ => (i - 3, i / 4 + 100, false),
    };
    let extra_sink = if extra {
        format!("  out_c: {{ type: file, channel: b, path: '{d}/b-extra-{i}.log' }}\n")
    } else {
        String::new()
    };
    format!(
        "admin: {{ listen: '127.0.0.1:{admin}' }}
shutdown_timeout: 20s
channels:
  a: {{ type: memory, capacity: 10000 }}
  b: {{ type: memory, capacity: 10000 }}
sources:
  gen_a: {{ type: generator, count: 40000, rate: 4000, batch_size: 50, channels: [a] }}
  gen_b:
    type: generator
    rate: 2000
    batch_size: 20
    channels: [b]
    interceptors: [ {{ type: static, key: v, value: 'v{value}' }} ]
sinks:
  out_a: {{ type: file, channel: a, path: '{d}/a.log' }}
  out_b: {{ type: file, channel: b, path: '{d}/b-{path}.log' }}
{extra_sink}"
    )
}

#[test]
fn reloads_under_load_leave_unchanged_paths_untouched_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = free_port();
    let agent = Agent::start(d, &variant(d, admin, 0), &["--no-watch"]);
    wait_for(
        "the agent answers",
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok(),
        || agent.log(),
    );
    let mut took = Vec::new();
    for i in 1..=20 {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(d.join("p.yaml"), variant(d, admin, i)).unwrap();
        let t = Instant::now();
        let (status, body) = reload(admin);
        took.push(t.elapsed());
        assert_eq!(status, 200, "reload {i}: {body}\n{}", agent.log());
        assert!(body.contains("\"applied\""), "reload {i}: {body}");
        assert!(
            !body.contains("gen_a") && !body.contains("out_a"),
            "reload {i} touched the unchanged path: {body}"
        );
    }
    // The same file again: nothing to do.
    let (status, body) = reload(admin);
    assert_eq!((status, body.contains("unchanged")), (200, true), "{body}");
    wait_for(
        "path A delivered everything",
        Duration::from_secs(60),
        || std::fs::metadata(d.join("a.log")).is_ok_and(|_| lines(&d.join("a.log")).len() >= 40000),
        || agent.log(),
    );
    let log = agent.stop();
    let a: Vec<u64> = lines(&d.join("a.log")).iter().map(|l| seq(l)).collect();
    assert_eq!(
        a,
        (0..40000).collect::<Vec<_>>(),
        "path A: every event once, in order"
    );
    // Path B: everything accepted into channel b was delivered by one of its sinks.
    let accepted: usize = log
        .lines()
        .find(|l| l.contains("source  gen_b:"))
        .and_then(|l| l.split("accepted ").nth(1)?.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary for gen_b:\n{log}"));
    let delivered = count_lines(d, "b-");
    assert_eq!(delivered, accepted, "path B: delivered = accepted\n{log}");
    assert!(log.contains("channel b: 0 events remaining"), "{log}");
    took.sort();
    eprintln!(
        "reload: 20 applied under load; POST /config/reload answered in {:?} (median) .. {:?} (max); path A 40000 in order, path B {delivered} = accepted",
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

#[test]
fn a_broken_file_is_refused_and_the_old_pipeline_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = free_port();
    let good = format!(
        "admin: {{ listen: '127.0.0.1:{admin}' }}
channels:
  a: {{ type: memory }}
sources:
  gen: {{ type: generator, rate: 1000, channels: [a] }}
sinks:
  out: {{ type: file, channel: a, path: '{}/out.log' }}
",
        d.display()
    );
    let agent = Agent::start(d, &good, &["--no-watch"]);
    let out = d.join("out.log");
    let grows = |agent: &Agent| {
        let before = std::fs::metadata(&out).map_or(0, |m| m.len());
        wait_for(
            "events keep flowing",
            Duration::from_secs(10),
            || std::fs::metadata(&out).map_or(0, |m| m.len()) > before,
            || agent.log(),
        );
    };
    grows(&agent);
    let broken = [
        (
            "bad YAML",
            good.replace("  a: { type: memory }", "  a: { type: memory"),
        ),
        (
            "an unknown type",
            good.replace("type: file", "type: nosuch"),
        ),
        (
            "a dangling channel",
            good.replace("channels: [a]", "channels: [zzz]"),
        ),
        (
            "a regex that does not compile (found only when building)",
            good.replace(
                "channels: [a] }",
                "channels: [a], interceptors: [ { type: regex_filter, regex: '(' } ] }",
            ),
        ),
    ];
    for (what, text) in broken {
        std::fs::write(d.join("p.yaml"), &text).unwrap();
        let (status, body) = reload(admin);
        assert_eq!(status, 422, "{what}: {body}");
        assert!(
            body.contains("p.yaml:"),
            "{what}: the answer names file:line:col: {body}"
        );
        grows(&agent);
    }
    let metrics = crate::common::http(admin, "GET", "/metrics").unwrap().1;
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"refused\"} 4"),
        "{metrics}"
    );
    agent.stop();
}

#[test]
fn a_channel_is_replaced_only_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = free_port();
    let pipeline = |capacity: usize, with_source: bool, sink_path: &str| {
        let source = if with_source {
            "  gen: { type: generator, rate: 2000, channels: [c] }\n"
        } else {
            "  idle: { type: generator, rate: 1, channels: [other] }\n"
        };
        format!(
            "admin: {{ listen: '127.0.0.1:{admin}' }}
channels:
  c: {{ type: memory, capacity: {capacity} }}
  other: {{ type: memory }}
sources:
{source}sinks:
  out: {{ type: file, channel: c, path: '{sink_path}', retry: {{ max_attempts: unlimited, initial_backoff: 10ms, max_backoff: 50ms }} }}
  sink_other: {{ type: null, channel: other }}
"
        )
    };
    // The sink cannot write (/dev/full): the channel fills.
    let agent = Agent::start(d, &pipeline(1000, true, "/dev/full"), &["--no-watch"]);
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(d.join("p.yaml"), pipeline(2000, true, "/dev/full")).unwrap();
    let (status, body) = reload(admin);
    assert_eq!(status, 422, "{body}\n{}", agent.log());
    assert!(
        body.contains("channels.c") && body.contains("holds"),
        "{body}"
    );
    // Stop feeding it and let a working sink drain it; then the change is applied.
    let out = d.join("out.log");
    std::fs::write(
        d.join("p.yaml"),
        pipeline(1000, false, &out.display().to_string()),
    )
    .unwrap();
    let (status, body) = reload(admin);
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    // Refused while events remain, applied once the sink has emptied the channel.
    std::fs::write(
        d.join("p.yaml"),
        pipeline(2000, false, &out.display().to_string()),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = reload(admin);
        if status == 200 {
            break body;
        }
        assert!(status == 422 && body.contains("holds"), "{body}");
        assert!(
            Instant::now() < deadline,
            "never applied: {body}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("channels.c"), "{body}");
    let metrics = crate::common::http(admin, "GET", "/metrics").unwrap().1;
    assert!(
        metrics.contains("sluice_channel_capacity_events{component=\"c\"} 2000"),
        "{metrics}"
    );
    agent.stop();
}

#[test]
fn a_change_of_the_file_and_sighup_reload_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pipeline = |sinks: &str| {
        format!(
            "channels:
  a: {{ type: memory }}
sources:
  gen: {{ type: generator, rate: 500, channels: [a] }}
sinks:
{sinks}"
        )
    };
    let first = format!(
        "  one: {{ type: file, channel: a, path: '{}/one.log' }}\n",
        d.display()
    );
    let second = format!(
        "  two: {{ type: file, channel: a, path: '{}/two.log' }}\n",
        d.display()
    );
    // Watched: writing the file is enough.
    let agent = Agent::start(d, &pipeline(&first), &[]);
    wait_for(
        "one.log",
        Duration::from_secs(10),
        || d.join("one.log").exists(),
        || agent.log(),
    );
    std::fs::write(d.join("p.yaml"), pipeline(&second)).unwrap();
    wait_for(
        "the watched file reloaded",
        Duration::from_secs(10),
        || d.join("two.log").exists(),
        || agent.log(),
    );
    agent.stop();

    // Not watched: only SIGHUP reloads.
    let d2 = tempfile::tempdir().unwrap();
    let d = d2.path();
    let first = first.replace(&dir.path().display().to_string(), &d.display().to_string());
    let second = second.replace(&dir.path().display().to_string(), &d.display().to_string());
    let agent = Agent::start(d, &pipeline(&first), &["--no-watch"]);
    wait_for(
        "one.log",
        Duration::from_secs(10),
        || d.join("one.log").exists(),
        || agent.log(),
    );
    std::fs::write(d.join("p.yaml"), pipeline(&second)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !d.join("two.log").exists(),
        "--no-watch still reloaded on a change"
    );
    Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .unwrap();
    wait_for(
        "SIGHUP reloaded",
        Duration::from_secs(10),
        || d.join("two.log").exists(),
        || agent.log(),
    );
    let log = agent.stop();
    assert!(log.contains("configuration reloaded"), "{log}");
}
