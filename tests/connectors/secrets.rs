//! Secrets never leak: an agent configured with recognisable secret values — the admin token,
//! an `http` source's bearer token, a PostgreSQL and a Redis password in their URLs, an AWS
//! secret key (on the S3 sink, the SQS source, the DynamoDB and Kinesis sinks), an `http` sink's token, a RabbitMQ password in its URI, a Kafka SASL password,
//! the hop's tokens (a `sluice` source's and a `sluice` sink's that does not match it) — runs
//! against real servers with every sink failing (a missing table, a Redis and a RabbitMQ that
//! refuse the password, a missing bucket, an unreachable endpoint, a broker without SASL, a
//! collector that refuses the token) and requests with right and wrong tokens. Its whole log, `sluice validate`'s
//! output (also for a broken file) and every admin answer are then scanned for the values.

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use crate::common::{free_port, sluice, stderr};

const SECRETS: &[(&str, &str)] = &[
    ("LEAK_ADMIN_TOKEN", "leak-admin-7f3a90"),
    ("LEAK_HOOK_TOKEN", "leak-hook-91c2ee"),
    ("LEAK_SINK_TOKEN", "leak-sink-6e0f14"),
    ("LEAK_HOP_SERVER", "leak-hop-server-a81d"),
    ("LEAK_HOP_CLIENT", "leak-hop-client-77e2"),
];
const PG_PASSWORD: &str = "leak-pg-5d1e77";
const REDIS_PASSWORD: &str = "leak-redis-2b8c03";
const AWS_SECRET: &str = "leak-aws-c4d9a1";
const AMQP_PASSWORD: &str = "leak-amqp-3f6b52";
const KAFKA_PASSWORD: &str = "leak-kafka-90d4c8";

/// Every secret value, for the scan.
fn all_secrets() -> Vec<&'static str> {
    let mut v: Vec<&str> = SECRETS.iter().map(|(_, s)| *s).collect();
    v.extend([
        PG_PASSWORD,
        REDIS_PASSWORD,
        AWS_SECRET,
        AMQP_PASSWORD,
        KAFKA_PASSWORD,
    ]);
    v
}

/// One request; the whole answer (status line, headers, body).
fn request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The text without ANSI colour sequences (`ESC [ … m`).
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn no_secret_value_reaches_a_log_an_error_or_an_admin_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, hook, dead, hop) = (free_port(), free_port(), free_port(), free_port());
    let aws = crate::common::aws::endpoint();
    let pipeline = format!(
        r#"admin: {{ listen: '127.0.0.1:{admin}', token_env: LEAK_ADMIN_TOKEN }}
channels:
  a: {{ type: memory }}
  b: {{ type: memory }}
  c: {{ type: memory }}
  d: {{ type: memory }}
  e: {{ type: memory }}
  f: {{ type: memory }}
  g: {{ type: memory }}
  h: {{ type: memory }}
  i: {{ type: memory }}
  j: {{ type: memory }}
sources:
  hook:
    type: http
    listen: '127.0.0.1:{hook}'
    auth: {{ type: bearer, secret_env: LEAK_HOOK_TOKEN }}
    channels: [a, b, c, d, e, f, g, i, j]
  queue:
    type: sqs
    endpoint: '{aws}'
    region: us-east-1
    queue_name: sluice-no-such-queue-for-leaks
    access_key_id: test
    secret_access_key: '{AWS_SECRET}'
    channels: [h]
  collector:
    type: sluice
    listen: '127.0.0.1:{hop}'
    token_env: LEAK_HOP_SERVER
    channels: [h]
sinks:
  db:
    type: sql
    channel: a
    url: 'postgres://postgres:{PG_PASSWORD}@127.0.0.1:5432/test'
    table: sluice_no_such_table_for_leaks
    columns: {{ raw: body }}
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
  cache:
    type: redis
    channel: b
    url: 'redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0'
    command: set
    key: 'leak:%{{sluice.id}}'
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
  lake:
    type: s3
    channel: c
    bucket: sluice-no-such-bucket-for-leaks
    key: leaks/
    region: us-east-1
    endpoint: '{aws}'
    access_key_id: test
    secret_access_key: '{AWS_SECRET}'
    force_path_style: true
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
  hookout:
    type: http
    channel: d
    url: 'http://127.0.0.1:{dead}/in'
    auth: {{ type: bearer, secret_env: LEAK_SINK_TOKEN }}
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
  rabbit:
    type: rabbitmq
    channel: e
    uri: 'amqp://guest:{AMQP_PASSWORD}@127.0.0.1:5672/%2f'
    routing_key: leaks
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
  kafkaout:
    type: kafka
    channel: f
    bootstrap_servers: '127.0.0.1:9092'
    topic: leaks
    security: {{ protocol: sasl_plaintext, sasl_mechanism: PLAIN, sasl_username: leaker, sasl_password: '{KAFKA_PASSWORD}' }}
    producer: {{ message.timeout.ms: '2000' }}
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
  hopout:
    type: sluice
    channel: g
    endpoints: ['127.0.0.1:{hop}']
    token_env: LEAK_HOP_CLIENT
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
  collected:
    type: null
    channel: h
  table:
    type: dynamodb
    channel: i
    endpoint: '{aws}'
    region: us-east-1
    table: sluice_no_such_table_for_leaks
    key: [id]
    access_key_id: test
    secret_access_key: '{AWS_SECRET}'
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
  stream:
    type: kinesis
    channel: j
    endpoint: '{aws}'
    region: us-east-1
    stream: sluice-no-such-stream-for-leaks
    access_key_id: test
    secret_access_key: '{AWS_SECRET}'
    retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }}
"#
    );
    let file = dir.path().join("leaks.yaml");
    std::fs::write(&file, &pipeline).unwrap();
    let mut seen = Vec::new();

    // validate, with and without the environment, and a broken variant.
    for (env, text) in [
        (true, pipeline.clone()),
        (false, pipeline.clone()),
        (true, pipeline.replace("postgres://", "postgres:/")),
        (true, pipeline.replace("redis://", "rediss:/")),
    ] {
        std::fs::write(&file, &text).unwrap();
        let mut cmd = sluice();
        if env {
            cmd.envs(SECRETS.iter().copied());
        }
        let o = cmd.arg("validate").arg(&file).output().unwrap();
        seen.push((
            "validate".to_owned(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o),
        ));
    }
    std::fs::write(&file, &pipeline).unwrap();

    let log = dir.path().join("agent.log");
    let mut child = sluice()
        .arg("-p")
        .arg(&file)
        .args(["--log-level", "debug"])
        .envs(SECRETS.iter().copied())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !request(admin, "GET", "/health", None, "").contains(" 200 ") {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the agent did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..20 {
        let token = if i % 2 == 0 {
            "leak-hook-91c2ee"
        } else {
            "wrong"
        };
        request(hook, "POST", "/", Some(token), &format!("event {i}"));
    }
    // Let every sink fail and retry, then ask everything the admin server answers.
    std::thread::sleep(Duration::from_secs(3));
    let token = Some("leak-admin-7f3a90");
    for path in [
        "/metrics",
        "/plugins",
        "/pipelines",
        "/ready",
        "/health",
        "/graph",
        "/dlq/recent",
        "/tap",
        "/",
    ] {
        seen.push((path.to_owned(), request(admin, "GET", path, token, "")));
    }
    seen.push((
        "reload".to_owned(),
        request(admin, "POST", "/config/reload", token, ""),
    ));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let log = strip_colours(&std::fs::read_to_string(&log).unwrap());
    // Every sink failed, and said why, so the errors that could carry a secret were written.
    for failure in [
        "sink=db",
        "sluice_no_such_table_for_leaks",
        "sink=cache",
        "Password authentication failed",
        "sink=lake",
        "NoSuchBucket",
        "sink=hookout",
        "Connection refused",
        "sink=rabbit",
        "sink=hopout",
        "sink=table",
        "sink=stream",
        "sluice-no-such-queue-for-leaks",
    ] {
        assert!(log.contains(failure), "no `{failure}` in the log:\n{log}");
    }
    seen.push(("agent log".to_owned(), log));

    let mut leaks = Vec::new();
    for (place, text) in &seen {
        for secret in all_secrets() {
            // The hook's token was sent by the test client; it must not come back either.
            if let Some(at) = text.find(secret) {
                let from = at.saturating_sub(120);
                leaks.push(format!(
                    "{secret} in {place}: …{}…",
                    &text[text.floor_char_boundary(from)
                        ..text.ceil_char_boundary(at + secret.len())]
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
