//! Black-box tests of the `http` source and sink: the real `sluice` binary, real HTTP clients
//! (reqwest, raw TCP for misbehaving clients) and a real HTTP server (axum) on 127.0.0.1;
//! outputs checked event by event.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::common::{self, free_port, json_lines, lines, repo_root, sluice};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "hook-secret-7f3a9c-never-logged";

/// Hex HMAC-SHA256 of the concatenated parts, computed here independently of the agent.
fn sign(key: &str, parts: &[&[u8]]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn fixture(name: &str) -> String {
    repo_root()
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

/// One exchange over a raw socket, for clients reqwest will not imitate (chunked bodies that
/// lie, stalls). Returns what the server sent before closing, and how long that took.
fn raw_exchange(port: u16, head: &str, body: &[u8], wait: Duration) -> (String, Duration) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    (String::from_utf8_lossy(&buf).into_owned(), t0.elapsed())
}

/// The `sluice` binary on a pipeline written for a temp dir (and, for `Agent::start`, a free
/// port), its stderr in `<dir>/stderr.log`.
struct Agent {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Agent {
    fn spawn(
        pipeline: impl FnOnce(u16, &str) -> String,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display().to_string();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, pipeline(port, &d)).unwrap();
        let log = File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = sluice();
        cmd.arg("-p")
            .arg(file)
            .args(args)
            .stderr(log)
            .env("NO_PROXY", "*");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().unwrap(),
            port,
            dir,
        }
    }

    /// Spawns and waits until the source listens.
    fn start(
        pipeline: impl FnOnce(u16, &str) -> String,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Agent {
        let mut a = Agent::spawn(pipeline, env, args);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", a.port)).is_err() {
            if let Some(status) = a.child.try_wait().unwrap() {
                panic!("sluice exited ({status}):\n{}", a.stderr());
            }
            assert!(Instant::now() < deadline, "never listened on {}", a.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap()
    }

    /// Waits for the agent to end on its own (batch runs), at most `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sluice did not finish in {limit:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for a clean exit; returns stderr (with the summary).
    fn stop(mut self) -> (String, Agent) {
        assert!(
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        let status = self.wait(Duration::from_secs(30));
        let err = self.stderr();
        assert!(status.success(), "{err}");
        (err, self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_are_delivered_and_unsigned_ones_refused() {
    let agent = Agent::start(
        |port, d| {
            format!(
                r#"
channels:
  mem: {{ type: memory }}
sources:
  hook:
    type: http
    listen: '127.0.0.1:{port}'
    paths: [/github, /other]
    headers: [X-GitHub-Event]
    query: [tenant]
    path_header: http.path
    auth: {{ type: hmac, secret_env: HOOK_SECRET }}
    channels: [mem]
sinks:
  out: {{ type: file, channel: mem, path: '{d}/out.ndjson', format: ndjson }}
"#
            )
        },
        &[("HOOK_SECRET", SECRET)],
        &["--log-level", "debug"],
    );
    let c = client();
    let body = r#"{"action":"opened","n":1}"#;
    let good = format!("sha256={}", sign(SECRET, &[body.as_bytes()]));

    let r = c
        .post(agent.url("/github?tenant=acme&other=1"))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", &good)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), r#"{"accepted":1}"#);

    let wrong_key = format!("sha256={}", sign("not the secret", &[body.as_bytes()]));
    for (sig, what) in [
        (Some(wrong_key.as_str()), "signed with another secret"),
        (Some(good.as_str()), "tampered body"),
        (None, "unsigned"),
        (Some("sha256=nothex"), "malformed signature"),
    ] {
        let mut req = c
            .post(agent.url("/github"))
            .body(if what == "tampered body" {
                r#"{"action":"opened","n":2}"#
            } else {
                body
            });
        if let Some(s) = sig {
            req = req.header("X-Hub-Signature-256", s);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }

    let body2 = r#"{"action":"closed"}"#;
    let r = c
        .post(agent.url("/other?tenant=x"))
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", sign(SECRET, &[body2.as_bytes()])),
        )
        .body(body2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = c.get(agent.url("/github")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c.post(agent.url("/nope")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 404);

    let (err, agent) = agent.stop();
    let out = json_lines(&agent.path("out.ndjson"));
    assert_eq!(out.len(), 2, "only the two signed requests: {out:?}");
    assert_eq!(out[0]["body"], body);
    assert_eq!(out[0]["headers"]["x-github-event"], "push");
    assert_eq!(out[0]["headers"]["tenant"], "acme");
    assert_eq!(out[0]["headers"]["http.path"], "/github");
    assert!(
        out[0]["headers"].get("other").is_none(),
        "only listed query parameters"
    );
    assert_eq!(out[1]["body"], body2);
    assert_eq!(out[1]["headers"]["http.path"], "/other");
    assert!(
        err.contains("source  hook: received 2, accepted 2"),
        "{err}"
    );
    assert!(
        !err.contains(SECRET),
        "the secret leaked into the log:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamped_signatures_outside_the_window_are_refused() {
    let agent = Agent::start(
        |port, d| {
            format!(
                r#"
channels:
  mem: {{ type: memory }}
sources:
  hook:
    type: http
    listen: {port}
    codec: json
    auth: {{ type: timestamped, secret: "${{HOOK_SECRET}}", header: X-Signature, tolerance: 1m }}
    channels: [mem]
sinks:
  out: {{ type: file, channel: mem, path: '{d}/out.log' }}
"#
            )
        },
        &[("HOOK_SECRET", SECRET)],
        &[],
    );
    let c = client();
    let body = r#"[{"id":1},{"id":2}]"#;
    let header = |t: i64, key: &str| {
        format!(
            "t={t},v1={}",
            sign(key, &[t.to_string().as_bytes(), b".", body.as_bytes()])
        )
    };
    let send = |sig: String| {
        c.post(agent.url("/"))
            .header("X-Signature", sig)
            .body(body)
            .send()
    };
    let r = send(header(now(), SECRET)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), r#"{"accepted":2}"#);
    for (sig, what) in [
        (header(now() - 120, SECRET), "expired"),
        (header(now() + 120, SECRET), "from the future"),
    ] {
        let r = send(sig).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert!(r.text().await.unwrap().contains("tolerance"), "{what}");
    }
    let r = send(header(now(), "other")).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = send(format!("v1={}", sign(SECRET, &[body.as_bytes()])))
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no timestamp");

    let (err, agent) = agent.stop();
    assert_eq!(
        lines(&agent.path("out.log")),
        [r#"{"id":1}"#, r#"{"id":2}"#]
    );
    assert!(!err.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_rotated_bearer_tokens() {
    let (cert, key) = (fixture("cert.pem"), fixture("key.pem"));
    let agent = Agent::start(
        |port, d| {
            format!(
                r#"
channels:
  mem: {{ type: memory }}
sources:
  hook:
    type: http
    listen: '127.0.0.1:{port}'
    tls: {{ cert: '{cert}', key: '{key}' }}
    auth: {{ type: bearer, secrets: [old-token], secrets_env: [NEW_TOKEN] }}
    channels: [mem]
sinks:
  out: {{ type: file, channel: mem, path: '{d}/out.log' }}
"#
            )
        },
        &[("NEW_TOKEN", "new-token")],
        &[],
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/", agent.port);
    for (i, token) in ["old-token", "new-token"].iter().enumerate() {
        let r = c
            .post(url.as_str())
            .bearer_auth(token)
            .body(format!("event {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{token}");
    }
    let r = c
        .post(url.as_str())
        .bearer_auth("guess")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = c.post(url.as_str()).body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        client().post(url.as_str()).body("x").send().await.is_err(),
        "a client that does not trust the CA refuses the server"
    );
    assert!(
        c.post(agent.url("/")).body("x").send().await.is_err(),
        "no plain HTTP on a TLS port"
    );
    let (_, agent) = agent.stop();
    assert_eq!(lines(&agent.path("out.log")), ["event 0", "event 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_compression_and_slow_clients() {
    let agent = Agent::start(
        |port, d| {
            format!(
                r#"
channels:
  mem: {{ type: memory }}
sources:
  hook:
    type: http
    listen: '127.0.0.1:{port}'
    codec: ndjson
    max_body: 2MiB
    max_decoded_body: 1MiB
    read_timeout: 500ms
    auth: {{ type: basic, username: hook, secret_env: HOOK_SECRET }}
    channels: [mem]
sinks:
  out: {{ type: file, channel: mem, path: '{d}/out.ndjson', format: ndjson }}
"#
            )
        },
        &[("HOOK_SECRET", SECRET)],
        &[],
    );
    let c = client();
    let url = agent.url("/");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("hook:{SECRET}"))
    );

    let r = c.post(url.as_str()).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401, "no credentials");
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let r = c
        .post(url.as_str())
        .basic_auth("hook", Some("wrong"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "wrong password");

    // Declared too large: refused before reading.
    let r = c
        .post(url.as_str())
        .header("Authorization", &basic)
        .body(vec![b'x'; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Chunked (no declared length) and too large: refused while reading.
    let chunk = vec![b'y'; 3 << 19];
    let mut chunked = Vec::new();
    for _ in 0..2 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let (resp, _) = raw_exchange(agent.port, &head, &chunked, Duration::from_secs(10));
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");

    // Compressed bodies.
    let r = c
        .post(url.as_str())
        .header("Authorization", &basic)
        .header("Content-Encoding", "gzip")
        .body(gzip(b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().trim(), r#"{"accepted":3}"#);
    let r = c
        .post(url.as_str())
        .header("Authorization", &basic)
        .header("Content-Encoding", "zstd")
        .body(zstd::stream::encode_all(&b"{\"n\":4}\n{\"n\":5}\n"[..], 3).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().trim(), r#"{"accepted":2}"#);
    let r = c
        .post(url.as_str())
        .header("Authorization", &basic)
        .header("Content-Encoding", "br")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // A gzip bomb: ~1 MiB on the wire, 1000 MiB expanded. Refused at the 1 MiB cap.
    let bomb = gzip(&vec![0u8; 1 << 20]).repeat(1000);
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    let r = c
        .post(url.as_str())
        .header("Authorization", &basic)
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("max_decoded_body"));
    let peak = peak_rss_kib(agent.child.id());
    assert!(
        peak < 200 * 1024,
        "peak RSS {peak} KiB: the bomb was expanded"
    );

    // Malformed ndjson: 400 naming the line; nothing of the request is kept.
    let r = c
        .post(url.as_str())
        .header("Authorization", &basic)
        .body("{\"n\":6}\nnot json\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("line 2"));

    // A client that stops sending its body gets 408 after read_timeout.
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\nContent-Length: 100\r\n\r\n"
    );
    let (resp, took) = raw_exchange(agent.port, &head, b"{\"n\":", Duration::from_secs(10));
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // One that never finishes its headers is disconnected.
    let (_, took) = raw_exchange(
        agent.port,
        "POST / HTTP/1.1\r\nHost: x\r\n",
        b"",
        Duration::from_secs(10),
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    let (err, agent) = agent.stop();
    let out = json_lines(&agent.path("out.ndjson"));
    let bodies: Vec<&str> = out.iter().map(|v| v["body"].as_str().unwrap()).collect();
    assert_eq!(
        bodies,
        [
            r#"{"n":1}"#,
            r#"{"n":2}"#,
            r#"{"n":3}"#,
            r#"{"n":4}"#,
            r#"{"n":5}"#
        ]
    );
    assert!(err.contains("received 5, accepted 5"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_answers_busy_and_every_acknowledged_request_is_delivered() {
    let agent = Agent::start(
        |port, d| {
            // The sink writes under `blocked`, which is a file for now: every write fails
            // (retriably) and the channel fills up.
            std::fs::write(format!("{d}/blocked"), "").unwrap();
            format!(
                r#"
channels:
  mem: {{ type: memory, capacity: 20 }}
sources:
  hook: {{ type: http, listen: '127.0.0.1:{port}', full_wait: 200ms, busy_status: 429, retry_after: 2s, channels: [mem] }}
sinks:
  out:
    type: file
    channel: mem
    path: '{d}/blocked/out.log'
    batch_size: 5
    retry: {{ max_attempts: 1000000, initial_backoff: 20ms, max_backoff: 100ms }}
"#
            )
        },
        &[],
        &["--log-level", "error"],
    );
    let c = client();
    let mut acked: Vec<String> = Vec::new();
    for i in 0.. {
        assert!(i < 100, "the channel never filled");
        let body = format!("req-{i}");
        let r = c
            .post(agent.url("/"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => acked.push(body),
            429 => {
                assert_eq!(r.headers()["retry-after"], "2");
                break;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(acked.len(), 20, "capacity counts leased events too");

    // A burst while full: each waits full_wait, then is refused; none is committed.
    let burst: Vec<String> = (0..10).map(|k| format!("burst-{k}")).collect();
    let mut waits = Vec::new();
    for body in burst.clone() {
        let (c, url) = (c.clone(), agent.url("/"));
        waits.push(tokio::spawn(async move {
            c.post(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for w in waits {
        assert_eq!(w.await.unwrap(), 429);
    }

    // Unblock the sink; the refused requests are retried and accepted, and more follow.
    std::fs::remove_file(agent.path("blocked")).unwrap();
    let more: Vec<String> = (0..30).map(|k| format!("more-{k}")).collect();
    for body in burst.iter().chain(&more) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = c
                .post(agent.url("/"))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => {
                    acked.push(body.clone());
                    break;
                }
                429 => {
                    assert!(Instant::now() < deadline, "never drained");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                s => panic!("unexpected status {s}"),
            }
        }
    }

    let (err, agent) = agent.stop();
    let mut delivered = lines(&agent.path("blocked/out.log"));
    assert_eq!(
        delivered.len(),
        acked.len(),
        "exactly the acknowledged requests"
    );
    delivered.sort();
    acked.sort();
    assert_eq!(delivered, acked);
    assert!(err.contains(&format!("accepted {},", acked.len())), "{err}");
}

/// What the test server saw.
#[derive(Default)]
struct Seen {
    attempts: BTreeMap<u64, u32>,
    delivered: Vec<u64>,
    first_429: BTreeMap<u64, Instant>,
    waited_after_429: Vec<Duration>,
    bad_requests: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

/// Fails some events on purpose: n%10==3 always 400; n%10==5 500 once; n%25==7 429 once
/// (Retry-After: 1); everything else 200.
async fn flaky(
    State(seen): State<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = seen.lock().unwrap();
    if headers.get("authorization").map(|v| v.as_bytes()) != Some(&b"Bearer sink-token"[..])
        || headers.get("x-kind").map(|v| v.as_bytes()) != Some(kind.as_bytes())
    {
        s.bad_requests.push(format!("{headers:?}"));
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let n: u64 = std::str::from_utf8(&body)
        .unwrap()
        .trim_end_matches('.')
        .parse()
        .unwrap();
    let attempt = {
        let a = s.attempts.entry(n).or_default();
        *a += 1;
        *a
    };
    if n % 10 == 3 {
        return (StatusCode::BAD_REQUEST, "unknown field").into_response();
    }
    if n % 10 == 5 && attempt == 1 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response();
    }
    if n % 25 == 7 {
        if attempt == 1 {
            s.first_429.insert(n, Instant::now());
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response();
        }
        let waited = s.first_429[&n].elapsed();
        s.waited_after_429.push(waited);
    }
    s.delivered.push(n);
    StatusCode::NO_CONTENT.into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_delivers_every_event_once_or_dead_letters_it() {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/ingest/{kind}", post(flaky))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    const N: u64 = 100;
    let mut agent = Agent::spawn(
        |_, d| {
            format!(
                r#"
channels:
  mem: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  gen: {{ type: generator, count: {N}, body_size: 8, cycle: {{ header: kind, values: [click, view] }}, channels: [mem] }}
sinks:
  hook:
    type: http
    channel: mem
    url: 'http://127.0.0.1:{server_port}/ingest/%{{kind}}'
    headers: {{ X-Kind: '%{{kind}}', Content-Type: text/plain }}
    concurrency: 4
    batch_size: 20
    dlq: dead
    retry: {{ max_attempts: 10, initial_backoff: 10ms, max_backoff: 200ms }}
    auth: {{ type: bearer, secret_env: SINK_TOKEN }}
  dead_letters: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}
"#
            )
        },
        &[("SINK_TOKEN", "sink-token")],
        &[],
    );
    let status = tokio::task::block_in_place(|| agent.wait(Duration::from_secs(60)));
    let err = agent.stderr();
    assert!(status.success(), "{err}");

    let s = seen.lock().unwrap();
    assert!(s.bad_requests.is_empty(), "{:?}", s.bad_requests);
    let delivered: BTreeSet<u64> = s.delivered.iter().copied().collect();
    assert_eq!(
        delivered.len(),
        s.delivered.len(),
        "an event was delivered twice"
    );
    let dead: Vec<serde_json::Value> = json_lines(&agent.path("dead.ndjson"));
    let dead_seqs: BTreeSet<u64> = dead
        .iter()
        .map(|v| common::seq(v["body"].as_str().unwrap()))
        .collect();
    assert_eq!(dead_seqs.len(), dead.len());
    assert!(delivered.is_disjoint(&dead_seqs));
    let all: BTreeSet<u64> = delivered.union(&dead_seqs).copied().collect();
    assert_eq!(all, (0..N).collect::<BTreeSet<u64>>(), "none lost");
    assert_eq!(
        dead_seqs,
        (0..N).filter(|n| n % 10 == 3).collect::<BTreeSet<u64>>()
    );
    for d in &dead {
        let reason = d["headers"]["sluice.dlq.reason"].as_str().unwrap();
        assert!(
            reason.starts_with("HTTP 400 Bad Request: unknown field"),
            "{reason}"
        );
        assert_eq!(d["headers"]["sluice.dlq.class"], "permanent");
    }
    assert_eq!(s.waited_after_429.len(), 4);
    for w in &s.waited_after_429 {
        assert!(
            *w >= Duration::from_millis(950),
            "Retry-After not honoured: {w:?}"
        );
    }
    assert!(
        err.contains("sink    hook: delivered 90, dead-lettered 10"),
        "{err}"
    );
    assert!(!err.contains("sink-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_to_sluice_over_tls_with_signed_batches() {
    let (cert, key) = (fixture("cert.pem"), fixture("key.pem"));
    let receiver = Agent::start(
        |port, d| {
            format!(
                r#"
channels:
  mem: {{ type: memory }}
sources:
  inbox:
    type: http
    listen: '127.0.0.1:{port}'
    paths: [/batches]
    codec: ndjson
    tls: {{ cert: '{cert}', key: '{key}' }}
    auth: {{ type: hmac, secret_env: HOOK_SECRET }}
    channels: [mem]
sinks:
  out: {{ type: file, channel: mem, path: '{d}/out.ndjson', format: ndjson }}
"#
            )
        },
        &[("HOOK_SECRET", SECRET)],
        &[],
    );
    let ca = fixture("ca.pem");
    let sender = |count: u64, trust: bool| {
        let tls = if trust {
            format!("tls: {{ ca_file: '{ca}' }}")
        } else {
            String::new()
        };
        let port = receiver.port;
        Agent::spawn(
            move |_, d| {
                format!(
                    r#"
channels:
  mem: {{ type: memory }}
  dead: {{ type: memory }}
sources:
  gen: {{ type: generator, count: {count}, body_size: 8, cycle: {{ header: kind, values: [a, b] }}, channels: [mem] }}
sinks:
  ship:
    type: http
    channel: mem
    url: 'https://127.0.0.1:{port}/batches'
    mode: batch
    format: ndjson
    batch_size: 16
    dlq: dead
    retry: {{ max_attempts: 2, initial_backoff: 10ms }}
    auth: {{ type: hmac, secret_env: HOOK_SECRET }}
    {tls}
  dead_letters: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}
"#
                )
            },
            &[("HOOK_SECRET", SECRET)],
            &[],
        )
    };

    let mut ok = sender(50, true);
    let status = ok.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", ok.stderr());
    assert!(!ok.path("dead.ndjson").exists(), "{}", ok.stderr());

    // Without the CA the receiver's certificate is not trusted: nothing is sent.
    let mut untrusted = sender(3, false);
    let status = untrusted.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", untrusted.stderr());
    let dead = json_lines(&untrusted.path("dead.ndjson"));
    assert_eq!(dead.len(), 3);
    let reason = dead[0]["headers"]["sluice.dlq.reason"].as_str().unwrap();
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");

    let (_, receiver) = receiver.stop();
    let out = json_lines(&receiver.path("out.ndjson"));
    assert_eq!(out.len(), 50);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(common::seq(v["body"].as_str().unwrap()), i as u64);
        assert_eq!(
            v["headers"]["kind"],
            if i % 2 == 0 { "a" } else { "b" },
            "headers travel in the envelope"
        );
    }
}

/// The example buffers webhooks in a `rocksdb` channel.
#[cfg(feature = "rocksdb")]
#[test]
fn the_webhook_example_validates_and_needs_its_secret() {
    let o = sluice()
        .args(["validate", "examples/webhook.yaml"])
        .env("WEBHOOK_SECRET", "x")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = sluice()
        .args(["validate", "examples/webhook.yaml"])
        .env_remove("WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(
        common::stderr(&o).contains(
            "sources.github: auth.secret_env: environment variable `WEBHOOK_SECRET` is not set"
        ),
        "{}",
        common::stderr(&o)
    );
}

/// `admin.tls`: the admin server speaks HTTPS only (a client that trusts the test CA gets its
/// answers, the bearer token still required); a certificate that cannot be read refuses the
/// start, naming `admin.tls`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_server_serves_https_with_admin_tls() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pipeline = |cert: &str| {
        format!(
            "admin: {{ listen: '127.0.0.1:{port}', token_env: SLUICE_TEST_ADMIN_TOKEN, tls: {{ cert: '{cert}', key: '{}' }} }}
channels:
  mem: {{ type: memory }}
sources:
  gen: {{ type: generator, rate: 100, channels: [mem] }}
sinks:
  out: {{ type: null, channel: mem }}
",
            fixture("key.pem")
        )
    };
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, pipeline("/nonexistent/cert.pem")).unwrap();
    let o = sluice()
        .arg("-p")
        .arg(&bad)
        .env("SLUICE_TEST_ADMIN_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("admin.tls: tls.cert /nonexistent/cert.pem"),
        "{}",
        common::stderr(&o)
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, pipeline(&fixture("cert.pem"))).unwrap();
    let mut child = sluice()
        .arg("-p")
        .arg(&good)
        .env("SLUICE_TEST_ADMIN_TOKEN", "s3cret")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match https.get(url("/ready")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => {
                assert!(Instant::now() < deadline, "no HTTPS answer");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(https.get(url("/pipelines")).send().await.unwrap()),
        401
    );
    let listing = https
        .get(url("/pipelines"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    assert!(listing.text().await.unwrap().contains("\"good\""));
    // Plain HTTP gets no answer from an HTTPS listener.
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "{plain:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
