//! The `mqtt` source and sink through the real binary against the Mosquitto broker on this
//! machine (`SLUICE_TEST_MQTT`, default `mqtt://127.0.0.1:1883`), with Mosquitto's own
//! clients (`mosquitto_pub`, `mosquitto_sub`) on the other end.
//!
//! Source: messages published at QoS 1 while the agent is stopped arrive when it starts (the
//! persistent session kept them); a SIGKILL in the middle of a stream loses nothing (what was
//! not acknowledged comes again; the RocksDB channel keeps what was committed). Sink: every
//! event arrives at a subscriber, on the topic rendered from its headers.

use std::{
    collections::BTreeSet,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{Agent, json_lines, ndjson_bodies, unique};

fn url() -> String {
    std::env::var("SLUICE_TEST_MQTT").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// `-h host -p port` of the broker, for Mosquitto's clients.
fn broker_args() -> Vec<String> {
    let u = url();
    let hostport = u.trim_start_matches("mqtt://").trim_end_matches('/');
    let (h, p) = hostport.rsplit_once(':').unwrap_or((hostport, "1883"));
    vec!["-h".into(), h.into(), "-p".into(), p.into()]
}

/// Publishes `lines` as messages (QoS 1) on `topic`, `pause` between them.
fn publish(topic: &str, lines: impl Iterator<Item = String>, pause: Duration) {
    let mut child = Command::new("mosquitto_pub")
        .args(broker_args())
        .args(["-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (mosquitto-clients)");
    {
        let stdin = child.stdin.as_mut().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

fn distinct(out: &Path) -> usize {
    ndjson_bodies(out)
        .into_iter()
        .collect::<BTreeSet<_>>()
        .len()
}

fn source_pipeline(dir: &Path, topic: &str, client: &str) -> String {
    let d = dir.display();
    format!(
        "channels:\n  disk: {{ type: rocksdb, path: '{d}/disk' }}\n\
         sources:\n  m: {{ type: mqtt, url: '{url}', topics: ['{topic}/#'], client_id: {client}, channels: [disk], batch_size: 200, linger: 20ms }}\n\
         sinks:\n  out: {{ type: file, channel: disk, path: '{d}/out.ndjson', format: ndjson }}\n",
        url = url()
    )
}

async fn wait_connected(agent: &mut Agent, times: usize) {
    let t0 = Instant::now();
    while agent.log().matches("connected to the MQTT broker").count() < times {
        agent.assert_running();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not connected {times} times:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_the_agent_is_down_arrive_after_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sluice-test");
    let client = unique("sluice-client");
    let pipeline = source_pipeline(dir.path(), &topic, &client);
    // The first run makes the session and its subscription.
    let mut agent = Agent::start(dir.path(), "first", &pipeline);
    wait_connected(&mut agent, 1).await;
    // Give the SUBACK a moment, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.stop().await;
    let t = format!("{topic}/a");
    tokio::task::spawn_blocking(move || {
        publish(&t, (0..300).map(|i| format!("offline {i}")), Duration::ZERO)
    })
    .await
    .unwrap();
    let out = dir.path().join("out.ndjson");
    assert_eq!(distinct(&out), 0);
    let mut agent = Agent::start(dir.path(), "second", &pipeline);
    agent
        .wait_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let n = distinct(&out);
                if n >= 300 {
                    Ok(())
                } else {
                    Err(format!("{n} of 300 messages"))
                }
            },
        )
        .await;
    agent.stop().await;
    let events = json_lines(&out);
    // In order, each once (the agent was stopped cleanly).
    let got: Vec<String> = events
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..300).map(|i| format!("offline {i}")).collect();
    assert_eq!(got, want);
    assert_eq!(events[0]["headers"]["mqtt.topic"], format!("{topic}/a"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sluice-test");
    let client = unique("sluice-client");
    let pipeline = source_pipeline(dir.path(), &topic, &client);
    let out = dir.path().join("out.ndjson");
    let mut agent = Agent::start(dir.path(), "first", &pipeline);
    wait_connected(&mut agent, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    const N: usize = 3000;
    let t = format!("{topic}/k");
    let publisher = std::thread::spawn(move || {
        publish(
            &t,
            (0..N).map(|i| format!("msg {i:05}")),
            Duration::from_millis(1),
        )
    });
    let t0 = Instant::now();
    while distinct(&out) < 500 {
        agent.assert_running();
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    agent.kill();
    let mut agent = Agent::start(dir.path(), "second", &pipeline);
    publisher.join().unwrap();
    agent
        .wait_until(
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                let n = distinct(&out);
                if n >= N {
                    Ok(())
                } else {
                    Err(format!("{n} of {N} messages"))
                }
            },
        )
        .await;
    agent.stop().await;
    let got: BTreeSet<String> = ndjson_bodies(&out).into_iter().collect();
    let want: BTreeSet<String> = (0..N).map(|i| format!("msg {i:05}")).collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_publishes_every_event_with_qos_1() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sluice-test");
    let got = dir.path().join("got.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args(broker_args())
        .args([
            "-q",
            "1",
            "-v",
            "-C",
            "500",
            "-W",
            "60",
            "-t",
            &format!("{topic}/#"),
        ])
        .stdout(std::fs::File::create(&got).unwrap())
        .spawn()
        .expect("mosquitto_sub (mosquitto-clients)");
    // mosquitto_sub needs a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = Agent::start(
        dir.path(),
        "sink",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  g: {{ type: generator, count: 500, body_size: 16, cycle: {{ header: dev, values: [d1, d2] }}, channels: [mem] }}\n\
             sinks:\n  m: {{ type: mqtt, url: '{url}', topic: '{topic}/%{{dev}}', channel: mem }}\n",
            url = url()
        ),
    );
    let status = tokio::task::spawn_blocking(move || sub.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "mosquitto_sub did not get 500 messages:\n{}",
        agent.log()
    );
    let text = std::fs::read_to_string(&got).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 500);
    let d1 = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{topic}/d1 ")))
        .count();
    let d2 = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{topic}/d2 ")))
        .count();
    assert_eq!((d1, d2), (250, 250), "{text}");
    drop(agent);
}
