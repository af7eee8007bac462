//! Live reload of the pipeline file through the binary: under load, unchanged paths keep
//! running untouched while others are added, removed and changed; broken files are refused
//! with the old pipeline still running; channels are replaced only when empty; SIGHUP and a
//! change of the file trigger it.

use std::{
    io::{Read, Write},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::common::{Agent, free_port, lines, seq};

/// POST /config/reload: (status, body).
pub(crate) fn reload(admin: u16) -> (u16, String) {
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

/// The agent's `/metrics` has this sample.
fn assert_metric(admin: u16, sample: &str) {
    let metrics = crate::common::http(admin, "GET", "/metrics").unwrap().1;
    assert!(metrics.contains(sample), "no `{sample}` in:\n{metrics}");
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
    let agent = Agent::start_with(d, "p", &variant(d, admin, 0), &[], &["--no-watch"]);
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
        if i % 4 == 1 {
            // An interceptor change: the source keeps running with its new route.
            assert!(
                body.contains("sources.gen_b rerouted") && !body.contains("gen_b stopped"),
                "reload {i}: {body}"
            );
        }
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
    let log = agent.stop_blocking();
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
    // gen_b was never restarted (its changes were routes): its sequence is whole, each once.
    let mut b: Vec<u64> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("b-"))
        .flat_map(|e| lines(&e.path()))
        .map(|l| seq(&l))
        .collect();
    b.sort_unstable();
    assert_eq!(
        b,
        (0..accepted as u64).collect::<Vec<_>>(),
        "path B: every event once"
    );
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
    let agent = Agent::start_with(d, "p", &good, &[], &["--no-watch"]);
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
    // A durable channel whose directory cannot be made (a file stands in its way).
    #[cfg(feature = "rocksdb")]
    let broken = {
        std::fs::write(d.join("in-the-way"), "").unwrap();
        let mut b = broken.to_vec();
        b.push((
            "a channel path that cannot be opened",
            good.replace(
                "  a: { type: memory }",
                &format!(
                    "  a: {{ type: memory }}\n  disk: {{ type: rocksdb, path: '{}/in-the-way/disk' }}",
                    d.display()
                ),
            ),
        ));
        b
    };
    let count = broken.len();
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
    assert_metric(
        admin,
        &format!("sluice_config_reloads_total{{pipeline=\"p\",result=\"refused\"}} {count}"),
    );
    let v = pipelines(admin);
    assert_eq!(v[0]["name"], "p", "{v}");
    assert_eq!(v[0]["state"], "running", "{v}");
    assert!(
        v[0]["last_reload"]["outcome"]["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("refused")),
        "{v}"
    );
    agent.stop_blocking();
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
    let agent = Agent::start_with(
        d,
        "p",
        &pipeline(1000, true, "/dev/full"),
        &[],
        &["--no-watch"],
    );
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
    assert_metric(
        admin,
        "sluice_channel_capacity_events{component=\"c\"} 2000",
    );
    agent.stop_blocking();
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
  gen: {{ type: generator, rate: 500, batch_size: 10, channels: [a] }}
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
    let agent = Agent::start_with(d, "p", &pipeline(&first), &[], &[]);
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
    agent.stop_blocking();

    // Not watched: only SIGHUP reloads.
    let d2 = tempfile::tempdir().unwrap();
    let d = d2.path();
    let first = first.replace(&dir.path().display().to_string(), &d.display().to_string());
    let second = second.replace(&dir.path().display().to_string(), &d.display().to_string());
    let agent = Agent::start_with(d, "p", &pipeline(&first), &[], &["--no-watch"]);
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
        .args(["-HUP", &agent.pid().unwrap().to_string()])
        .status()
        .unwrap();
    wait_for(
        "SIGHUP reloaded",
        Duration::from_secs(10),
        || d.join("two.log").exists(),
        || agent.log(),
    );
    let log = agent.stop_blocking();
    assert!(log.contains("configuration reloaded"), "{log}");
}

/// A tiny HTTP server for one pipeline file: `ETag` = a hash of the content, `304` for a
/// matching `If-None-Match`. Serves until `up` is cleared.
#[cfg(feature = "http")]
struct ConfigServer {
    port: u16,
    content: std::sync::Arc<std::sync::Mutex<String>>,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    not_modified: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(feature = "http")]
impl ConfigServer {
    fn start(text: &str) -> ConfigServer {
        use std::sync::{
            Arc, Mutex,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let content = Arc::new(Mutex::new(text.to_owned()));
        let up = Arc::new(AtomicBool::new(true));
        let not_modified = Arc::new(AtomicUsize::new(0));
        let (c, u, n) = (content.clone(), up.clone(), not_modified.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if !u.load(Ordering::SeqCst) {
                    return; // the listener is dropped: connections are refused from now on
                }
                let Ok(mut s) = s else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let req = String::from_utf8_lossy(&req).to_lowercase();
                let body = c.lock().unwrap().clone();
                let tag = format!("\"{:x}\"", {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::hash::DefaultHasher::new();
                    body.hash(&mut h);
                    h.finish()
                });
                let reply = if req.contains(&format!("if-none-match: {tag}")) {
                    n.fetch_add(1, Ordering::SeqCst);
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nContent-Length: 0\r\n\r\n")
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nETag: {tag}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = s.write_all(reply.as_bytes());
            }
        });
        ConfigServer {
            port,
            content,
            up,
            not_modified,
        }
    }

    fn stop(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[cfg(feature = "http")]
#[test]
fn a_pipeline_from_a_url_is_polled_cached_and_pinned() {
    use crate::common::sluice;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pipeline = |sinks: &[&str]| {
        let mut s = "channels:\n  a: { type: memory }\nsources:\n  gen: { type: generator, rate: 500, batch_size: 10, channels: [a] }\nsinks:\n".to_owned();
        for name in sinks {
            s += &format!(
                "  {name}: {{ type: file, channel: a, path: '{}/{name}.log' }}\n",
                d.display()
            );
        }
        s
    };
    let server = ConfigServer::start(&pipeline(&["one"]));
    let url = format!("http://127.0.0.1:{}/p.yaml", server.port);
    let cache = d.join("cache");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "-p".to_owned(),
            url.clone(),
            "--config-poll".into(),
            "200ms".into(),
            "--config-cache".into(),
            cache.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let start = |name: &str, a: Vec<String>| {
        sluice()
            .args(a)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join(name)).unwrap())
            .spawn()
            .unwrap()
    };
    let log = |name: &str| std::fs::read_to_string(d.join(name)).unwrap_or_default();
    let mut agent = start("first.log", args(&[]));
    wait_for(
        "one.log",
        Duration::from_secs(10),
        || d.join("one.log").exists(),
        || log("first.log"),
    );
    // A change at the URL is picked up by the next poll; unchanged polls are 304s.
    *server.content.lock().unwrap() = pipeline(&["one", "two"]);
    wait_for(
        "the change applied",
        Duration::from_secs(10),
        || d.join("two.log").exists(),
        || log("first.log"),
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        server
            .not_modified
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "no conditional request"
    );
    // The server goes away: a warning, nothing else changes.
    server.stop();
    std::thread::sleep(Duration::from_millis(800));
    assert!(agent.try_wait().unwrap().is_none(), "{}", log("first.log"));
    assert!(
        log("first.log").contains("cannot fetch the pipeline"),
        "{}",
        log("first.log")
    );
    let _ = agent.kill();
    let _ = agent.wait();
    // Restarted while the server is down: it runs the last good copy (with sink two).
    std::fs::remove_file(d.join("two.log")).unwrap();
    let mut again = start("second.log", args(&[]));
    wait_for(
        "ran from the cache",
        Duration::from_secs(10),
        || d.join("two.log").exists(),
        || log("second.log"),
    );
    assert!(
        log("second.log").contains("running the last good copy"),
        "{}",
        log("second.log")
    );
    let _ = again.kill();
    let _ = again.wait();
    // A pin that does not match is refused at start.
    let server = ConfigServer::start(&pipeline(&["one"]));
    let url = format!("http://127.0.0.1:{}/p.yaml", server.port);
    let o = sluice()
        .args([
            "-p",
            &url,
            "--config-cache",
            &d.join("cache2").display().to_string(),
        ])
        .args(["--config-sha256", &"00".repeat(32)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", crate::common::stderr(&o));
    assert!(
        crate::common::stderr(&o).contains("is not the pinned"),
        "{}",
        crate::common::stderr(&o)
    );
    // Plain http from anywhere but loopback needs --insecure.
    let o = sluice()
        .args([
            "-p",
            "http://192.0.2.1/p.yaml",
            "--config-cache",
            &d.join("cache3").display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(
        crate::common::stderr(&o).contains("--insecure"),
        "{}",
        crate::common::stderr(&o)
    );
}

fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

#[test]
fn fifty_reloads_leak_neither_descriptors_nor_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = free_port();
    let pipeline = |i: usize| {
        format!(
            "admin: {{ listen: '127.0.0.1:{admin}' }}
channels:
  a: {{ type: memory }}
  b: {{ type: memory }}
sources:
  gen: {{ type: generator, rate: 5000, channels: [a] }}
  gen_b: {{ type: generator, rate: 1000, channels: [b], interceptors: [ {{ type: static, key: k, value: 'v{}' }} ] }}
sinks:
  out: {{ type: file, channel: a, path: '{}/a.log' }}
  out_b: {{ type: file, channel: b, path: '{}/b-{}.log' }}
",
            i % 2,
            d.display(),
            d.display(),
            i % 3
        )
    };
    let agent = Agent::start_with(d, "p", &pipeline(0), &[], &["--no-watch"]);
    let pid = agent.pid().unwrap();
    let apply = |i: usize| {
        std::fs::write(d.join("p.yaml"), pipeline(i)).unwrap();
        let (status, body) = reload(admin);
        assert_eq!(status, 200, "reload {i}: {body}");
    };
    wait_for(
        "the agent answers",
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok(),
        || agent.log(),
    );
    for i in 1..=10 {
        apply(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = fds_and_rss(pid);
    for i in 11..=60 {
        apply(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = fds_and_rss(pid);
    eprintln!(
        "50 reloads: fds {} -> {}, RSS {} -> {} KiB",
        before.0, after.0, before.1, after.1
    );
    assert!(
        after.0 <= before.0 + 2,
        "descriptors leak: {before:?} -> {after:?}"
    );
    assert!(
        after.1 <= before.1 + 16 * 1024,
        "memory grows: {before:?} -> {after:?}"
    );
    agent.stop_blocking();
}

/// `POST path` on the admin server: (status, body).
fn post(admin: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, raw) = crate::common::http(admin, "POST", path).unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// `GET /pipelines` on the admin server, as JSON (`Null` when it does not answer).
fn pipelines(admin: u16) -> serde_json::Value {
    crate::common::http(admin, "GET", "/pipelines")
        .filter(|(status, _)| *status == 200)
        .and_then(|(_, raw)| serde_json::from_str(raw.split("\r\n\r\n").nth(1)?).ok())
        .unwrap_or_default()
}

#[test]
fn two_pipelines_in_one_agent_reload_independently() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = free_port();
    // The same component names in both files: each pipeline has its own namespace.
    let pipeline = |admin_line: &str, out: &str, rate: u32| {
        format!(
            "{admin_line}
channels:
  mem: {{ type: memory, capacity: 10000 }}
sources:
  gen: {{ type: generator, count: 20000, rate: {rate}, batch_size: 20, channels: [mem] }}
sinks:
  out: {{ type: file, channel: mem, path: '{}/{out}' }}
",
            d.display()
        )
    };
    let a = pipeline(
        &format!("admin: {{ listen: '127.0.0.1:{admin}' }}"),
        "a.out",
        4000,
    );
    let b = |out: &str| pipeline("", out, 2000);
    std::fs::write(d.join("b.yaml"), b("b-0.out")).unwrap();
    let b_file = d.join("b.yaml").display().to_string();
    let agent = Agent::start_with(d, "a", &a, &[], &["-p", &b_file, "--no-watch"]);
    wait_for(
        "the agent answers",
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok(),
        || agent.log(),
    );
    let listing = pipelines(admin);
    assert_eq!(
        (listing[0]["name"].as_str(), listing[1]["name"].as_str()),
        (Some("a"), Some("b")),
        "{listing}"
    );
    let a_hash = listing[0]["config_hash"].clone();
    assert_metric(admin, "component=\"a/gen\"");
    assert_metric(admin, "component=\"b/out\"");

    // Reloading b (a new sink path) leaves a alone.
    for i in 1..=5 {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(d.join("b.yaml"), b(&format!("b-{i}.out"))).unwrap();
        let (status, answer) = post(admin, "/pipelines/b/reload");
        assert_eq!(status, 200, "{answer}\n{}", agent.log());
        assert_eq!(answer["result"], "applied", "{answer}");
        assert_eq!(
            answer["changed"],
            serde_json::json!(["sinks.out stopped", "sinks.out started"]),
            "{answer}"
        );
    }
    // A broken b is refused; a reload of all answers per pipeline, a unchanged.
    std::fs::write(d.join("b.yaml"), "channels: [").unwrap();
    let (status, answer) = post(admin, "/config/reload");
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["pipelines"]["a"]["result"], "unchanged", "{answer}");
    assert!(
        answer["pipelines"]["b"]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("b.yaml:2:1: invalid YAML")),
        "{answer}"
    );
    assert_metric(
        admin,
        "sluice_config_reloads_total{pipeline=\"b\",result=\"refused\"} 1",
    );
    assert_metric(
        admin,
        "sluice_config_reloads_total{pipeline=\"a\",result=\"applied\"} 0",
    );
    let listing = pipelines(admin);
    assert_eq!(listing[0]["config_hash"], a_hash, "{listing}");
    assert_eq!(listing[0]["state"], "running", "{listing}");
    assert_eq!(listing[1]["state"], "running", "{listing}");
    assert_eq!(post(admin, "/pipelines/nosuch/reload").0, 404);

    // Both run to their end: a without a gap or a repeat, b across its six files.
    wait_for(
        "both pipelines delivered everything",
        Duration::from_secs(60),
        || {
            std::fs::metadata(d.join("a.out")).is_ok()
                && lines(&d.join("a.out")).len() >= 20000
                && count_lines(d, "b-") >= 20000
        },
        || agent.log(),
    );
    let log = agent.stop_blocking();
    let a_out: Vec<u64> = lines(&d.join("a.out")).iter().map(|l| seq(l)).collect();
    assert_eq!(
        a_out,
        (0..20000).collect::<Vec<_>>(),
        "pipeline a: every event once"
    );
    let mut b_out: Vec<u64> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("b-"))
        .flat_map(|e| lines(&e.path()))
        .map(|l| seq(&l))
        .collect();
    b_out.sort_unstable();
    assert_eq!(
        b_out,
        (0..20000).collect::<Vec<_>>(),
        "pipeline b: every event once"
    );
    assert!(
        log.contains("pipeline a:") && log.contains("pipeline b:"),
        "{log}"
    );
}

/// An empty durable channel whose settings change in place is refused with what to do (its
/// directory stays locked while the running pipeline uses it); under a new path it is
/// replaced at once.
#[cfg(feature = "rocksdb")]
#[test]
fn an_empty_durable_channel_is_replaced_under_a_new_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = free_port();
    let pipeline = |capacity: usize, path: &str| {
        format!(
            "admin: {{ listen: '127.0.0.1:{admin}' }}
channels:
  c: {{ type: rocksdb, path: '{}/{path}', capacity: {capacity} }}
sources:
  gen: {{ type: generator, count: 100, channels: [c] }}
  idle: {{ type: generator, rate: 1, channels: [c] }}
sinks:
  out: {{ type: file, channel: c, path: '{}/out.log' }}
",
            d.display(),
            d.display()
        )
    };
    let agent = Agent::start_with(d, "p", &pipeline(1000, "c1"), &[], &["--no-watch"]);
    wait_for(
        "the first events are delivered",
        Duration::from_secs(30),
        || {
            std::fs::metadata(d.join("out.log"))
                .is_ok_and(|_| lines(&d.join("out.log")).len() >= 100)
        },
        || agent.log(),
    );
    // `idle` writes one event a second: wait for a moment when the channel is empty.
    let apply = |text: String, want: u16, says: &str| {
        std::fs::write(d.join("p.yaml"), text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = reload(admin);
            if status == want && body.contains(says) {
                return;
            }
            assert!(body.contains("holds"), "{body}");
            assert!(Instant::now() < deadline, "{body}\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    apply(pipeline(2000, "c1"), 422, "give it a new `path`");
    apply(pipeline(2000, "c2"), 200, "channels.c opened");
    assert_metric(
        admin,
        "sluice_channel_capacity_events{component=\"c\"} 2000",
    );
    agent.stop_blocking();
}

/// `--pipeline DIR`: every pipeline file in it runs; a file added later starts a pipeline, a
/// file removed stops its pipeline (drained: everything it accepted is delivered), and a
/// broken new file is refused while the others run on.
#[test]
fn a_directory_of_pipelines_follows_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pipes = d.join("pipelines");
    std::fs::create_dir(&pipes).unwrap();
    let admin = free_port();
    let pipeline = |admin_line: &str, name: &str| {
        format!(
            "{admin_line}
channels:
  mem: {{ type: memory }}
sources:
  gen: {{ type: generator, rate: 1000, batch_size: 10, channels: [mem] }}
sinks:
  out: {{ type: file, channel: mem, path: '{}/{name}.out' }}
",
            d.display()
        )
    };
    std::fs::write(
        pipes.join("a.yaml"),
        pipeline(&format!("admin: {{ listen: '127.0.0.1:{admin}' }}"), "a"),
    )
    .unwrap();
    std::fs::write(pipes.join("b.yaml"), pipeline("", "b")).unwrap();
    let log = d.join("agent.log");
    let mut child = crate::common::sluice()
        .arg("-p")
        .arg(&pipes)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let tail = || std::fs::read_to_string(&log).unwrap_or_default();
    let names = || -> Vec<String> {
        pipelines(admin)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let grows = |name: &str| {
        let f = d.join(format!("{name}.out"));
        let before = std::fs::metadata(&f).map_or(0, |m| m.len());
        wait_for(
            &format!("{name} delivers"),
            Duration::from_secs(20),
            || std::fs::metadata(&f).map_or(0, |m| m.len()) > before,
            tail,
        );
    };
    wait_for(
        "a and b run",
        Duration::from_secs(30),
        || names() == ["a", "b"],
        tail,
    );
    grows("a");
    grows("b");

    // A new file starts a pipeline; a broken one is refused (logged, counted).
    std::fs::write(pipes.join("c.yaml"), pipeline("", "c")).unwrap();
    std::fs::write(pipes.join("broken.yaml"), "sources: [").unwrap();
    wait_for(
        "c runs",
        Duration::from_secs(20),
        || names() == ["a", "b", "c"],
        tail,
    );
    grows("c");
    wait_for(
        "the broken file is refused",
        Duration::from_secs(10),
        || tail().contains("new pipeline file refused"),
        tail,
    );
    assert_metric(
        admin,
        "sluice_config_reloads_total{pipeline=\"broken\",result=\"refused\"}",
    );
    assert_metric(admin, "component=\"c/gen\"");

    // A removed file stops its pipeline; a and c run on.
    std::fs::remove_file(pipes.join("b.yaml")).unwrap();
    wait_for(
        "b stops",
        Duration::from_secs(20),
        || names() == ["a", "c"],
        tail,
    );
    let b_lines = lines(&d.join("b.out")).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lines(&d.join("b.out")).len(),
        b_lines,
        "b delivers nothing more"
    );
    grows("a");
    grows("c");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "{}", tail());
    let log = tail();
    for name in ["a", "b", "c"] {
        // Each pipeline's summary: what its source accepted, its sink delivered.
        let section = log
            .split(&format!("pipeline {name}:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no summary of {name}:\n{log}"));
        let accepted: u64 = section
            .split("accepted ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{section}"));
        let delivered = lines(&d.join(format!("{name}.out"))).len() as u64;
        assert_eq!(
            accepted, delivered,
            "{name}: all it accepted was delivered\n{log}"
        );
        let seqs: Vec<u64> = lines(&d.join(format!("{name}.out")))
            .iter()
            .map(|l| seq(l))
            .collect();
        assert_eq!(
            seqs,
            (0..delivered).collect::<Vec<_>>(),
            "{name}: in order, once"
        );
    }
}
