//! The agent-to-agent hop through the binary: `sluice` sinks sending to `sluice` sources of
//! other agents on loopback — tiers of edges and collectors under SIGKILL, a reply lost on
//! the way back (recognised, not stored twice), failover and return, a full collector pushing
//! back, mutual TLS and tokens, compression and a decompression bomb.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::common::{Agent, free_port, http, repo_root, sluice, stderr, wait_until};

const SECOND: Duration = Duration::from_secs(1);

/// A collector: `sluice` source on `port` → rocksdb channel → file `<dir>/<name>/out.log`.
fn collector(dir: &Path, name: &str, port: u16, admin: u16, source_extra: &str) -> String {
    let d = dir.join(name);
    format!(
        "admin: {{ listen: '127.0.0.1:{admin}' }}
channels:
  disk: {{ type: rocksdb, path: '{ch}', capacity: 200000 }}
sources:
  in:
    type: sluice
    listen: '127.0.0.1:{port}'
    channels: [disk]
{source_extra}
sinks:
  out: {{ type: file, channel: disk, path: '{out}' }}
",
        ch = d.join("channel").display(),
        out = d.join("out.log").display(),
    )
}

/// The settings every test's `sluice` sink shares: quick backoffs, and retries that outlast
/// any outage in these tests rather than dead-lettering.
fn sender(endpoints: &[u16], extra: &str) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect();
    format!(
        "    type: sluice
    endpoints: [{}]
    backoff: {{ initial: 100ms, max: 1s }}
    timeout: 5s
    sticky_retry: 3s
    retry: {{ max_attempts: unlimited, initial_backoff: 50ms, max_backoff: 500ms }}
{extra}",
        list.join(", ")
    )
}

/// Every line of every file given, counted.
fn count_lines(files: &[PathBuf]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for f in files {
        for l in std::fs::read_to_string(f).unwrap_or_default().lines() {
            *seen.entry(l.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

/// A Prometheus sample's value (summed over label sets containing `labels`).
fn metric(admin: u16, name: &str, labels: &str) -> f64 {
    let Some((200, text)) = http(admin, "GET", "/metrics") else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn listening(port: u16) {
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        String::new,
        async || {
            TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| format!("port {port}: {e}"))
        },
    )
    .await;
}

/// An edge whose generator makes `count` events and ends; the agent then drains its channel
/// (for up to 5 minutes) before it exits.
fn generator_edge(admin: u16, count: u64, rate: u64, sink: &str) -> String {
    format!(
        "admin: {{ listen: '127.0.0.1:{admin}' }}
shutdown_timeout: 5m
channels:
  mem: {{ type: memory, capacity: 2000 }}
sources:
  gen: {{ type: generator, count: {count}, rate: {rate}, batch_size: 100, body_size: 64, channels: [mem] }}
sinks:
  out:
    channel: mem
{sink}"
    )
}

fn expect_generated(seen: &HashMap<String, usize>, count: u64) -> Result<usize, String> {
    let ids: std::collections::HashSet<u64> = seen.keys().map(|b| crate::common::seq(b)).collect();
    let missing = (0..count)
        .filter(|i| !ids.contains(i))
        .take(5)
        .collect::<Vec<_>>();
    if !missing.is_empty() || ids.len() as u64 != count {
        return Err(format!(
            "{} of {count} distinct events arrived; missing e.g. {missing:?}",
            ids.len()
        ));
    }
    Ok(seen.values().map(|n| n - 1).sum())
}

/// A TCP proxy that lets everything through, except that it closes the first connection on
/// which the server starts an HTTP/2 response (a HEADERS frame on a stream): the request was
/// received and committed, its answer is lost.
async fn reply_eater(listen: u16, to: u16) -> Arc<AtomicBool> {
    let eaten = Arc::new(AtomicBool::new(false));
    let l = TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
    let flag = eaten.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)).await else {
                continue;
            };
            let flag = flag.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                // Server → client, frame by frame.
                let mut head = [0u8; 9];
                loop {
                    if sr.read_exact(&mut head).await.is_err() {
                        break;
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let mut payload = vec![0u8; len];
                    if sr.read_exact(&mut payload).await.is_err() {
                        break;
                    }
                    if head[3] == 0x1 && stream != 0 && !flag.swap(true, Ordering::SeqCst) {
                        // Drop the answer and the connection.
                        break;
                    }
                    if cw.write_all(&head).await.is_err() || cw.write_all(&payload).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    eaten
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_retried_on_the_same_collector_and_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (port, proxy, admin_c, admin_e) = (free_port(), free_port(), free_port(), free_port());
    let mut c = Agent::start(
        dir.path(),
        "collector",
        &collector(dir.path(), "c", port, admin_c, ""),
    );
    listening(port).await;
    let eaten = reply_eater(proxy, port).await;
    let count = 3000;
    // A source that never ends keeps the edge up once its generator is done (about a second),
    // so its metrics can still be read when the collector has everything.
    let idle = free_port();
    let edge = generator_edge(
        admin_e,
        count,
        3000,
        &sender(&[proxy], "    compression: none\n"),
    )
    .replace(
        "sources:\n",
        &format!(
            "sources:\n  idle: {{ type: tcp, listen: '127.0.0.1:{idle}', channels: [mem] }}\n"
        ),
    );
    let mut e = Agent::start(dir.path(), "edge", &edge);
    let out = vec![dir.path().join("c/out.log")];
    let dups = c
        .wait_until(
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || expect_generated(&count_lines(&out), count),
        )
        .await;
    assert!(eaten.load(Ordering::SeqCst), "the proxy never ate a reply");
    assert_eq!(dups, 0, "a retried batch was stored twice");
    let seen_dup = metric(
        admin_c,
        "sluice_source_origin_duplicates_total",
        "component=\"in\"",
    );
    let told = metric(
        admin_e,
        "sluice_sink_endpoint_duplicates_total",
        "component=\"out\"",
    );
    assert!(
        seen_dup > 0.0 && told == seen_dup,
        "the collector should have recognised the retry (collector {seen_dup}, edge {told}):\n{}\n{}",
        c.log(),
        e.log()
    );
    e.assert_running();
}

/// Three edges tail files into rocksdb channels and balance over two collectors; collector A
/// is SIGKILLed and restarted three times and edge 0 once while lines are written. Every line
/// written arrives; duplicates are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_of_agents_lose_nothing_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ports = [free_port(), free_port()];
    let admins = [free_port(), free_port()];
    let start_collector = |i: usize| {
        Agent::start(
            d,
            &format!("collector{i}"),
            &collector(d, &format!("c{i}"), ports[i], admins[i], ""),
        )
    };
    let mut collectors = vec![start_collector(0), start_collector(1)];
    listening(ports[0]).await;
    listening(ports[1]).await;
    let edge_pipeline = |i: usize| {
        let e = d.join(format!("e{i}"));
        format!(
            "channels:
  disk: {{ type: rocksdb, path: '{ch}' }}
sources:
  logs: {{ type: file, paths: ['{inp}/*.log'], position_file: '{pos}', channels: [disk] }}
sinks:
  out:
    channel: disk
{sink}",
            ch = e.join("channel").display(),
            inp = e.join("in").display(),
            pos = e.join("positions.json").display(),
            sink = sender(&ports, &format!("    origin: edge{i}\n")),
        )
    };
    let mut edges: Vec<Agent> = (0..3)
        .map(|i| {
            std::fs::create_dir_all(d.join(format!("e{i}/in"))).unwrap();
            Agent::start(d, &format!("edge{i}"), &edge_pipeline(i))
        })
        .collect();

    let (rounds, per_round) = (20, 500);
    let mut writers: Vec<std::fs::File> = (0..3)
        .map(|i| std::fs::File::create(d.join(format!("e{i}/in/app.log"))).unwrap())
        .collect();
    for round in 0..rounds {
        for (i, w) in writers.iter_mut().enumerate() {
            let mut chunk = String::new();
            for k in 0..per_round {
                chunk.push_str(&format!("edge{i}-{:06}\n", round * per_round + k));
            }
            std::io::Write::write_all(w, chunk.as_bytes()).unwrap();
        }
        match round {
            3 | 9 | 15 => {
                collectors[0].kill();
                tokio::time::sleep(SECOND).await;
                collectors[0] = start_collector(0);
            }
            6 => {
                edges[0].kill();
                edges[0] = Agent::start(d, "edge0", &edge_pipeline(0));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total = 3 * rounds * per_round;
    let outs = vec![d.join("c0/out.log"), d.join("c1/out.log")];
    let started = Instant::now();
    let dups = wait_until(
        Duration::from_secs(120),
        Duration::from_millis(250),
        || {
            format!(
                "{}\n{}\n{}",
                collectors[0].log(),
                collectors[1].log(),
                edges[0].log()
            )
        },
        async || {
            let seen = count_lines(&outs);
            if seen.len() < total {
                return Err(format!("{} of {total} distinct lines arrived", seen.len()));
            }
            Ok(seen.values().map(|n| n - 1).sum::<usize>())
        },
    )
    .await;
    let seen = count_lines(&outs);
    assert_eq!(seen.len(), total, "only written lines arrive");
    let per_collector: Vec<usize> = outs.iter().map(|f| crate::common::lines(f).len()).collect();
    eprintln!(
        "tiers: {total} lines through 3 edges → 2 collectors, 3 collector kills + 1 edge kill: \
         0 lost, {dups} duplicates; per collector {per_collector:?}; drained {:?} after the last write",
        started.elapsed()
    );
    assert!(
        per_collector.iter().all(|&n| n > total / 10),
        "both collectors took traffic: {per_collector:?}"
    );
    for c in &mut collectors {
        c.assert_running();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_moves_to_the_secondary_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (p1, p2) = (free_port(), free_port());
    let (a1, a2, ae) = (free_port(), free_port(), free_port());
    let mut primary = Agent::start(d, "primary", &collector(d, "p", p1, a1, ""));
    let mut secondary = Agent::start(d, "secondary", &collector(d, "s", p2, a2, ""));
    listening(p1).await;
    listening(p2).await;
    let count = 30_000;
    let edge = Agent::start(
        d,
        "edge",
        &generator_edge(
            ae,
            count,
            1500,
            &sender(&[p1, p2], "    strategy: failover\n"),
        ),
    );
    let (pout, sout) = (d.join("p/out.log"), d.join("s/out.log"));
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    tokio::time::sleep(3 * SECOND).await;
    assert!(size(&pout) > 0, "the primary takes traffic first");
    assert_eq!(
        size(&sout),
        0,
        "the secondary is idle while the primary is up"
    );
    primary.kill();
    tokio::time::sleep(10 * SECOND).await;
    assert!(size(&sout) > 0, "the secondary took over:\n{}", edge.log());
    let before = size(&pout);
    primary = Agent::start(d, "primary", &collector(d, "p", p1, a1, ""));
    let outs = vec![pout.clone(), sout.clone()];
    // Waited on the secondary, which stays up: the edge ends once its generator is done and
    // the last batch is acknowledged, possibly before the collectors' files show it.
    let dups = secondary
        .wait_until(
            Duration::from_secs(60),
            Duration::from_millis(250),
            async || expect_generated(&count_lines(&outs), count),
        )
        .await;
    assert!(
        size(&pout) > before,
        "the primary took traffic again after coming back:\n{}",
        edge.log()
    );
    eprintln!("failover: {count} events, 0 lost, {dups} duplicates");
    primary.assert_running();
    secondary.assert_running();
}

/// A collector whose channel stays full answers RESOURCE_EXHAUSTED; the edge backs off with
/// bounded memory, and once the collector's own downstream appears everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_collector_pushes_back_and_nothing_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (pc, pf, ac, ae) = (free_port(), free_port(), free_port(), free_port());
    // The collector forwards to a final agent that is not there yet: its channel fills up.
    let mut c = Agent::start(
        d,
        "collector",
        &format!(
            "admin: {{ listen: '127.0.0.1:{ac}' }}
channels:
  mem: {{ type: memory, capacity: 500 }}
sources:
  in: {{ type: sluice, listen: '127.0.0.1:{pc}', channels: [mem], full_wait: 200ms }}
sinks:
  fwd:
    channel: mem
{}",
            sender(&[pf], "")
        ),
    );
    listening(pc).await;
    let count = 20_000;
    let e = Agent::start(
        d,
        "edge",
        &generator_edge(ae, count, 100_000, &sender(&[pc], "")),
    );
    c.wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || {
            let full = metric(
                ac,
                "sluice_source_requests_rejected_total",
                "reason=\"channel_full\"",
            );
            (full > 0.0)
                .then_some(())
                .ok_or("no batch refused as full yet".to_owned())
        },
    )
    .await;
    tokio::time::sleep(2 * SECOND).await;
    let rss = rss_kib(e.pid().unwrap());
    assert!(rss < 150 * 1024, "edge RSS {rss} KiB while backing off");
    assert!(metric(ae, "sluice_sink_endpoint_failures_total", "") > 0.0);
    let out = d.join("final/out.log");
    let mut f = Agent::start(
        d,
        "final",
        &format!(
            "channels:
  mem: {{ type: memory }}
sources:
  in: {{ type: sluice, listen: '127.0.0.1:{pf}', channels: [mem] }}
sinks:
  out: {{ type: file, channel: mem, path: '{}' }}
",
            out.display()
        ),
    );
    let outs = vec![out];
    let dups = f
        .wait_until(
            Duration::from_secs(60),
            Duration::from_millis(250),
            async || expect_generated(&count_lines(&outs), count),
        )
        .await;
    assert_eq!(dups, 0);
    eprintln!("full collector: edge RSS {rss} KiB while refused; {count} events, 0 lost");
    // The edge's run ended once its channel was drained; the collector keeps running.
    c.assert_running();
    drop(e);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn tls_file(name: &str) -> String {
    repo_root()
        .join("tests/fixtures/tls/hop")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_the_token_keep_strangers_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, ac) = (free_port(), free_port());
    let mut c = Agent::start_env(
        d,
        "collector",
        &collector(
            d,
            "c",
            port,
            ac,
            &format!(
                "    token_env: HOP_TOKEN\n    tls: {{ cert: '{}', key: '{}', client_ca: '{}' }}\n",
                tls_file("server.pem"),
                tls_file("server-key.pem"),
                tls_file("ca.pem")
            ),
        ),
        &[("HOP_TOKEN", "right")],
    );
    listening(port).await;
    let tls = |cert: Option<(&str, &str)>| {
        let mut t = format!("    tls: {{ ca: '{}'", tls_file("ca.pem"));
        if let Some((cert, key)) = cert {
            t += &format!(", cert: '{}', key: '{}'", tls_file(cert), tls_file(key));
        }
        t + ", server_name: localhost }\n    token_env: HOP_TOKEN\n"
    };
    let cases = [
        ("no client certificate", tls(None), "right"),
        (
            "a certificate from another CA",
            tls(Some(("stranger.pem", "stranger-key.pem"))),
            "right",
        ),
        (
            "a wrong token",
            tls(Some(("client.pem", "client-key.pem"))),
            "wrong",
        ),
    ];
    for (what, t, token) in &cases {
        let ae = free_port();
        let mut e = Agent::start_env(
            d,
            "edge",
            &generator_edge(ae, 100, 1000, &sender(&[port], t)),
            &[("HOP_TOKEN", token)],
        );
        e.wait_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            async || {
                let f = metric(ae, "sluice_sink_endpoint_failures_total", "");
                (f >= 2.0)
                    .then_some(())
                    .ok_or(format!("{what}: no refusal yet"))
            },
        )
        .await;
        assert_eq!(
            metric(ae, "sluice_sink_endpoint_acknowledged_total", ""),
            0.0,
            "{what}: acknowledged"
        );
        e.kill();
        assert_eq!(
            metric(ac, "sluice_channel_put_total", "component=\"disk\""),
            0.0,
            "{what}: reached the channel"
        );
    }
    assert!(
        metric(
            ac,
            "sluice_source_requests_rejected_total",
            "reason=\"unauthorized\""
        ) > 0.0,
        "the wrong token was refused by the source itself"
    );
    let ae = free_port();
    let mut e = Agent::start_env(
        d,
        "edge",
        &generator_edge(
            ae,
            100,
            1000,
            &sender(&[port], &tls(Some(("client.pem", "client-key.pem")))),
        ),
        &[("HOP_TOKEN", "right")],
    );
    let out = vec![d.join("c/out.log")];
    c.wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || expect_generated(&count_lines(&out), 100),
    )
    .await;
    e.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_carries_the_same_events_and_a_bomb_is_refused() {
    use sluice::connectors::hop::proto::{self, hop_client::HopClient};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, ac) = (free_port(), free_port());
    let mut c = Agent::start(
        d,
        "collector",
        &collector(d, "c", port, ac, "    max_decoded_batch_bytes: 1MiB\n"),
    );
    listening(port).await;
    let count = 2000;
    for how in ["none", "gzip", "zstd"] {
        let ae = free_port();
        let mut e = Agent::start(
            d,
            &format!("edge-{how}"),
            &generator_edge(
                ae,
                count,
                100_000,
                &sender(
                    &[port],
                    &format!("    compression: {how}\n    origin: {how}\n"),
                ),
            ),
        );
        let out = vec![d.join("c/out.log")];
        // Each edge sends the same bodies: after it, each body is there once more.
        let round = ["none", "gzip", "zstd"]
            .iter()
            .position(|h| *h == how)
            .unwrap()
            + 1;
        c.wait_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            async || {
                let seen = count_lines(&out);
                expect_generated(&seen, count)?;
                match seen.values().all(|&n| n == round) {
                    true => Ok(()),
                    false => Err(format!("{how}: not every body arrived {round} times yet")),
                }
            },
        )
        .await;
        e.kill();
    }

    // 64 MiB of zeros, compressed to a few kB, against a 1 MiB limit: told the truth or
    // lied about, it is refused as invalid and nothing is stored.
    let mut client = HopClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let zeros = vec![0u8; 64 << 20];
    let mut encoded = Vec::new();
    sluice::connectors::hop::wire::encode_into(
        &[sluice_core::event::Event::new(zeros)],
        &mut encoded,
    );
    let decoded_len = encoded.len() as u64;
    let bomb = bytes::Bytes::from(zstd::bulk::compress(&encoded, 3).unwrap());
    assert!(bomb.len() < 1 << 20);
    let puts = metric(ac, "sluice_channel_put_total", "component=\"disk\"");
    for claimed in [decoded_len, 1000] {
        let r = client
            .send(proto::SendRequest {
                origin: "bomb".into(),
                position: Some(0),
                count: 1,
                compression: proto::Compression::Zstd as i32,
                decoded_len: claimed,
                events: bomb.clone(),
            })
            .await;
        let status = r.expect_err("a bomb is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    assert_eq!(
        metric(ac, "sluice_channel_put_total", "component=\"disk\""),
        puts,
        "the bomb stored nothing"
    );
    c.assert_running();
}

/// The tier examples are valid pipelines (with the tokens they require set).
#[test]
fn the_tier_examples_validate() {
    for ex in ["edge.yaml", "collector.yaml"] {
        let o = sluice()
            .args(["validate", &format!("examples/tiers/{ex}")])
            .envs([("HOP_TOKEN", "t"), ("SLUICE_ADMIN_TOKEN", "t")])
            .output()
            .unwrap();
        assert!(o.status.success(), "{ex}: {}", stderr(&o));
    }
}

/// Ids given at the edge (`event_id: true`) arrive unchanged at the collector, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_given_at_the_edge_cross_the_hop_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, ac) = (free_port(), free_port());
    let out = d.join("c/out.ndjson");
    let mut c = Agent::start(
        d,
        "collector",
        &format!(
            "admin: {{ listen: '127.0.0.1:{ac}' }}
channels:
  mem: {{ type: memory }}
sources:
  in: {{ type: sluice, listen: '127.0.0.1:{port}', channels: [mem] }}
sinks:
  out: {{ type: file, channel: mem, path: '{}', format: ndjson }}
",
            out.display()
        ),
    );
    listening(port).await;
    let count = 3000;
    let _e = Agent::start(
        d,
        "edge",
        &format!(
            "channels:
  mem: {{ type: memory }}
sources:
  gen: {{ type: generator, count: {count}, batch_size: 100, channels: [mem], event_id: true }}
sinks:
  out:
    channel: mem
{}",
            sender(&[port], "")
        ),
    );
    let outs = vec![out.clone()];
    c.wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || {
            let n = count_lines(&outs).len();
            (n == count as usize)
                .then_some(())
                .ok_or(format!("{n} of {count}"))
        },
    )
    .await;
    let ids: Vec<String> = crate::common::json_lines(&out)
        .iter()
        .map(|v| {
            v["headers"]["sluice.id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), count as usize, "one distinct id per event");
    assert!(
        ids.iter()
            .all(|i| i.len() == 36 && i.as_bytes()[14] == b'7'),
        "UUIDv7s: {:?}",
        &ids[..3]
    );
}

/// An HA pair: two edges send the same events; the collector's `dedup` interceptor keeps one
/// copy, and its window — kept in the rocksdb channel with the events — survives a restart,
/// so a third copy sent afterwards is dropped too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_window_keeps_one_copy_of_an_ha_pair_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, ac) = (free_port(), free_port());
    let start_collector = || {
        Agent::start(
            d,
            "collector",
            &collector(
                d,
                "c",
                port,
                ac,
                "    interceptors: [ { type: dedup, body: true, ttl: 1h } ]\n",
            ),
        )
    };
    let mut c = start_collector();
    listening(port).await;
    let count = 5000;
    let edge = |name: &str| {
        Agent::start(
            d,
            name,
            &generator_edge(
                free_port(),
                count,
                20_000,
                &sender(&[port], &format!("    origin: {name}\n")),
            ),
        )
    };
    let (_a, _b) = (edge("edge-a"), edge("edge-b"));
    let outs = vec![d.join("c/out.log")];
    c.wait_until(
        Duration::from_secs(60),
        Duration::from_millis(250),
        async || {
            let dropped = metric(ac, "sluice_source_events_dropped_total", "component=\"in\"");
            let seen = count_lines(&outs);
            expect_generated(&seen, count)?;
            (dropped >= count as f64)
                .then_some(())
                .ok_or(format!("{dropped} duplicates dropped so far"))
        },
    )
    .await;
    assert_eq!(expect_generated(&count_lines(&outs), count), Ok(0));
    c.stop().await;
    let mut c = start_collector();
    listening(port).await;
    let _late = edge("edge-late");
    c.wait_until(
        Duration::from_secs(60),
        Duration::from_millis(250),
        async || {
            let dropped = metric(ac, "sluice_source_events_dropped_total", "component=\"in\"");
            (dropped >= count as f64)
                .then_some(())
                .ok_or(format!("{dropped} of the late copy dropped so far"))
        },
    )
    .await;
    assert_eq!(
        expect_generated(&count_lines(&outs), count),
        Ok(0),
        "the late copy was dropped: the window survived the restart"
    );
}
