//! The operator's tools on a running agent: live taps (`GET /tap`, `sluice tap`) — what each
//! point shows, filters, and that a client reading slowly loses samples but never slows or
//! loses an event of the pipeline — and `sluice top` in a pseudo-terminal.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    process::Stdio,
    time::{Duration, Instant},
};

use crate::common::{Agent, free_port, http, lines, seq, sluice, stderr};

/// Opens `GET /tap?<query>` and returns the stream positioned after the response head.
fn open_tap(port: u16, query: &str) -> BufReader<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            write!(
                s,
                "GET /tap?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut r = BufReader::new(s);
            let mut status = String::new();
            r.read_line(&mut status).unwrap();
            assert!(status.contains(" 200 "), "{status}");
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    return r;
                }
            }
        }
        assert!(Instant::now() < deadline, "the admin server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The next NDJSON sample of a chunked answer (chunk-size lines are skipped).
fn next_sample(r: &mut BufReader<TcpStream>) -> Option<serde_json::Value> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) {
            if v.is_object() {
                return Some(v);
            }
        }
    }
}

/// A generator pushing 100,000 events/s into a file while a client taps the source and
/// reads one sample every 20 ms: every event reaches the file, exactly once, and the tap
/// reports the samples it had to drop.
#[test]
fn a_slow_tap_drops_samples_and_the_pipeline_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("out.log");
    let events = 300_000;
    // 100,000 events/s for 3 s: the tap is attached well before the end.
    let agent = Agent::start(
        dir.path(),
        "tapped",
        &format!(
            "admin: {{ listen: '127.0.0.1:{port}' }}
channels:
  mem: {{ type: memory, capacity: 20000 }}
sources:
  gen: {{ type: generator, count: {events}, rate: 100000, batch_size: 500, channels: [mem] }}
sinks:
  out: {{ type: file, path: '{}', channel: mem }}
",
            out.display()
        ),
    );
    let mut slow = open_tap(port, "point=gen&queue=8");
    let mut seen = 0;
    let mut dropped = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let Some(v) = next_sample(&mut slow) else {
            break;
        };
        assert_eq!(v["point"], "gen:output");
        seq(v["body"].as_str().expect("a text body"));
        seen += 1;
        dropped = dropped.max(v["dropped"].as_u64().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen > 10, "only {seen} samples");
    assert!(dropped > 0, "a client this slow must have lost samples");
    drop(slow);
    let log = agent.stop_blocking();
    let got = lines(&out);
    let distinct: HashSet<u64> = got.iter().map(|l| seq(l)).collect();
    assert_eq!(got.len(), events, "{log}");
    assert_eq!(distinct.len(), events);
}

/// Each point shows what passed it: after each interceptor, a channel's puts (by selector), a
/// sink's deliveries, the DLQ with its reason; a header filter and `limit` apply; an unknown
/// point is a 404 listing the known ones; `sluice tap` prints the same as text.
#[test]
fn each_point_shows_what_passed_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agent = Agent::start(
        dir.path(),
        "points",
        &format!(
            "admin: {{ listen: '127.0.0.1:{port}' }}
dlq: dead
channels:
  clicks: {{ type: memory }}
  views: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  gen:
    type: generator
    rate: 200
    body_size: 20
    cycle: {{ header: kind, values: [click, view, junk] }}
    interceptors: [{{ type: static, key: stage, value: one }}]
    selector: {{ type: multiplexing, header: kind, mapping: {{ click: [clicks], view: [views] }} }}
sinks:
  c: {{ type: null, channel: clicks }}
  v: {{ type: null, channel: views }}
  d: {{ type: null, channel: dead }}
"
        ),
    );
    let first = |query: &str, n: usize| -> Vec<serde_json::Value> {
        let mut r = open_tap(port, &format!("{query}&limit={n}"));
        let got: Vec<_> = std::iter::from_fn(|| next_sample(&mut r)).collect();
        assert_eq!(got.len(), n, "{query}: limit ends the stream after {n}");
        got
    };
    for s in first("point=gen:input", 3) {
        assert!(
            s["headers"].get("stage").is_none(),
            "before the interceptor: {s}"
        );
    }
    for s in first("point=gen:0", 3) {
        assert_eq!(s["headers"]["stage"], "one", "{s}");
    }
    for s in first("point=gen&header=kind%3Dview", 5) {
        assert_eq!(s["headers"]["kind"], "view", "{s}");
    }
    for s in first("point=clicks", 5) {
        assert_eq!(
            (s["point"].as_str(), s["headers"]["kind"].as_str()),
            (Some("clicks:put"), Some("click"))
        );
    }
    for s in first("point=v", 3) {
        assert_eq!(
            (s["point"].as_str(), s["headers"]["kind"].as_str()),
            (Some("v:delivered"), Some("view"))
        );
    }
    for s in first("point=dlq", 3) {
        assert_eq!(s["headers"]["kind"], "junk", "{s}");
        assert_eq!(s["headers"]["sluice.dlq.stage"], "source", "{s}");
    }
    let (status, body) = http(port, "GET", "/tap?point=nowhere").unwrap();
    assert_eq!(status, 404);
    assert!(
        body.contains("gen:output") && body.contains("clicks:put"),
        "{body}"
    );

    let o = sluice()
        .args([
            "tap",
            "--admin",
            &format!("127.0.0.1:{port}"),
            "--limit",
            "4",
        ])
        .args(["--format", "text", "--header", "kind=click", "gen"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    for l in text.lines() {
        assert!(
            l.contains(" gen:output ") && l.contains("kind=click") && l.contains(" | "),
            "{l}"
        );
    }
    let o = sluice()
        .args(["tap", "--admin", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    for p in [
        "gen:input",
        "gen:0",
        "gen:output",
        "views:put",
        "d:delivered",
        "dlq",
    ] {
        assert!(listed.lines().any(|l| l == p), "{p} not listed:\n{listed}");
    }
    agent.assert_running();
}

/// `sluice top` in a pseudo-terminal (util-linux `script`) against a running agent: it draws
/// every component with its rates, and `q` ends it cleanly.
#[test]
fn top_draws_the_components_and_quits_on_q() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agent = Agent::start(
        dir.path(),
        "watched",
        &format!(
            "admin: {{ listen: '127.0.0.1:{port}' }}
channels:
  buffer_mem: {{ type: memory }}
sources:
  gen_source: {{ type: generator, rate: 2000, channels: [buffer_mem] }}
sinks:
  null_sink: {{ type: null, channel: buffer_mem }}
"
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/ready").map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let bin = env!("CARGO_BIN_EXE_sluice");
    let mut top = std::process::Command::new("script")
        .args(["-qfec"])
        .arg(format!(
            "stty cols 120 rows 40; exec {bin} top --admin 127.0.0.1:{port} --every 300ms"
        ))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    top.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while top.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = top.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}{}", stderr(&o));
    for name in [
        "sources",
        "channels",
        "sinks",
        "plugins",
        "gen_source",
        "buffer_mem",
        "null_sink",
        "watched",
        "(running,",
    ] {
        assert!(screen.contains(name), "{name} not drawn:\n{screen}");
    }
    // Rates appear once two scrapes are in: the generator's 2000/s shows as a rate.
    assert!(screen.contains("/s"), "{screen}");
    agent.assert_running();
}

/// The web console in a real browser (headless Chromium, installed by `scripts/test`): the
/// page draws every component of the running pipeline, its config hash, and the latest dead
/// letters, and the delivered totals rise between two loads while the generator runs. A
/// screenshot is kept in the target directory.
#[test]
fn the_console_draws_the_running_topology_in_a_browser() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_BROWSER").is_none(),
            "no chromium: `apt install chromium` (scripts/test does)"
        );
        eprintln!("SKIPPED: no chromium here (scripts/test installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agent = Agent::start(
        dir.path(),
        "console",
        &format!(
            "admin: {{ listen: '127.0.0.1:{port}' }}
dlq: dead
channels:
  clicks: {{ type: memory }}
  views: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  web_gen:
    type: generator
    rate: 3000
    cycle: {{ header: kind, values: [click, view, junk] }}
    interceptors: [{{ type: timestamp }}]
    selector: {{ type: multiplexing, header: kind, mapping: {{ click: [clicks], view: [views] }} }}
sinks:
  click_out: {{ type: null, channel: clicks }}
  view_out: {{ type: null, channel: views }}
  dead_out: {{ type: null, channel: dead }}
"
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/ready").map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let browse = |extra: &[String]| {
        let o = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args(["--window-size=1400,1000", "--virtual-time-budget=3000"])
            .args(extra)
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let total = |dom: &str, component: &str| -> u64 {
        let row = dom
            .split("<tr ")
            .find(|r| r.starts_with(&format!("data-component=\"{component}\"")))
            .unwrap_or_else(|| panic!("no row for {component} in:\n{dom}"));
        let cell = row.split("<td class=\"total\">").nth(1).unwrap();
        cell[..cell.find('<').unwrap()].parse().unwrap()
    };
    let first = browse(&["--dump-dom".into()]);
    for name in [
        "web_gen",
        "timestamp",
        "clicks",
        "views",
        "dead",
        "click_out",
        "view_out",
        "dead_out",
    ] {
        assert!(
            first.contains(&format!(">{name}<")),
            "{name} not drawn:\n{first}"
        );
    }
    let (_, pipelines) = http(port, "GET", "/pipelines").unwrap();
    let body = &pipelines[pipelines.find("\r\n\r\n").unwrap() + 4..];
    let hash: serde_json::Value = serde_json::from_str(body).unwrap();
    let hash = hash[0]["config_hash"].as_str().unwrap();
    assert!(first.contains(&hash[..12]), "config hash {hash} not shown");
    assert!(
        first.contains("class=\"edge dead\""),
        "DLQ edges drawn dashed"
    );
    // The unroutable `junk` events: counted on the source, listed with their reason.
    let dead_rows = first.split("<table id=\"dead\">").nth(1).unwrap();
    assert!(
        dead_rows.contains(">web_gen<") && dead_rows.contains(">source<"),
        "{dead_rows}"
    );
    let before = total(&first, "view_out");
    std::thread::sleep(Duration::from_millis(1500));
    let second = browse(&["--dump-dom".into()]);
    let after = total(&second, "view_out");
    assert!(
        after > before,
        "delivered totals must rise: {before} then {after}"
    );
    browse(&[format!("--screenshot={}", shot.display())]);
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot at {}",
        shot.display()
    );
    eprintln!("console screenshot: {}", shot.display());
    agent.assert_running();
}
