//! The `nats` source and sink through the real binary against the NATS server with
//! JetStream on this machine (`SLUICE_TEST_NATS`, default `nats://127.0.0.1:4222`), with the
//! official Python client (nats-py, installed by `scripts/test`) on the other end.
//!
//! Source: messages published while the agent is stopped arrive when it starts (the durable
//! consumer kept the position); a SIGKILL in the middle of a stream loses nothing. Sink: every
//! event is stored in the stream, on the subject rendered from its headers.

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::common::{Agent, json_lines, ndjson_bodies, python, unique};

fn url() -> String {
    std::env::var("SLUICE_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Runs `body` (Python, inside an async function with `js`, a JetStream context) and returns
/// what it printed.
fn py(body: &str) -> String {
    let script = format!(
        "import asyncio, sys, nats\n\
         async def main():\n\
         \x20   nc = await nats.connect({url:?})\n\
         \x20   js = nc.jetstream()\n\
         {body}\
         \x20   await nc.drain()\n\
         asyncio.run(main())\n",
        url = url(),
        body = body
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python with nats-py");
    assert!(
        out.status.success(),
        "python failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn create_stream(stream: &str, subject: &str) {
    py(&format!(
        "await js.add_stream(name={stream:?}, subjects=[{subject:?}])"
    ));
}

fn publish(subject: &str, from: usize, n: usize) {
    py(&format!(
        "for i in range({from}, {end}):\n    await js.publish({subject:?}, ('msg %05d' % i).encode())",
        end = from + n
    ));
}

fn distinct(out: &Path) -> usize {
    ndjson_bodies(out)
        .into_iter()
        .collect::<BTreeSet<_>>()
        .len()
}

fn source_pipeline(dir: &Path, stream: &str, subject: &str) -> String {
    let d = dir.display();
    format!(
        "channels:\n  disk: {{ type: rocksdb, path: '{d}/disk' }}\n\
         sources:\n  n: {{ type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: keep, ack_wait: 5s, channels: [disk], batch_size: 200, linger: 20ms }}\n\
         sinks:\n  out: {{ type: file, channel: disk, path: '{d}/out.ndjson', format: ndjson }}\n",
        url = url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_the_agent_is_down_arrive_and_a_sigkill_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("sluice").replace('-', "_");
    let (stream, subject) = (name.clone(), format!("{name}.events"));
    tokio::task::block_in_place(|| create_stream(&stream, &format!("{name}.>")));
    let pipeline = source_pipeline(dir.path(), &stream, &subject);
    let out = dir.path().join("out.ndjson");
    // The first run makes the durable consumer.
    let mut agent = Agent::start(dir.path(), "first", &pipeline);
    agent
        .wait_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            async || {
                if std::fs::read_to_string(dir.path().join("first.log"))
                    .unwrap_or_default()
                    .contains("consuming from NATS")
                {
                    Ok(())
                } else {
                    Err("not consuming yet".into())
                }
            },
        )
        .await;
    agent.stop().await;
    tokio::task::block_in_place(|| publish(&subject, 0, 300));
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
    let events = json_lines(&out);
    assert_eq!(events[0]["body"], "msg 00000");
    assert_eq!(events[0]["headers"]["nats.subject"], subject.as_str());
    // Now a stream with a SIGKILL in the middle.
    const N: usize = 3000;
    let publisher = {
        let subject = subject.clone();
        std::thread::spawn(move || publish(&subject, 300, N))
    };
    let t0 = Instant::now();
    while distinct(&out) < 800 {
        agent.assert_running();
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    agent.kill();
    let mut agent = Agent::start(dir.path(), "third", &pipeline);
    publisher.join().unwrap();
    agent
        .wait_until(
            Duration::from_secs(90),
            Duration::from_millis(100),
            async || {
                let n = distinct(&out);
                if n >= N + 300 {
                    Ok(())
                } else {
                    Err(format!("{n} of {} messages", N + 300))
                }
            },
        )
        .await;
    agent.stop().await;
    let got: BTreeSet<String> = ndjson_bodies(&out).into_iter().collect();
    let want: BTreeSet<String> = (0..N + 300).map(|i| format!("msg {i:05}")).collect();
    assert_eq!(got, want);
    tokio::task::block_in_place(|| py(&format!("await js.delete_stream({stream:?})")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_stores_every_event_in_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("sluice").replace('-', "_");
    tokio::task::block_in_place(|| create_stream(&name, &format!("{name}.>")));
    let mut agent = Agent::start(
        dir.path(),
        "sink",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  g: {{ type: generator, count: 500, body_size: 16, cycle: {{ header: dev, values: [d1, d2] }}, channels: [mem] }}\n\
             sinks:\n  n: {{ type: nats, url: '{url}', subject: '{name}.%{{dev}}', stream: {name}, channel: mem }}\n",
            url = url()
        ),
    );
    let counts = |_: ()| {
        py(&format!(
            "info = await js.stream_info({name:?}, subjects_filter='>')\nprint(info.state.messages)\nprint(sorted(info.state.subjects.items()))"
        ))
    };
    agent
        .wait_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            async || {
                let text = tokio::task::block_in_place(|| counts(()));
                if text.starts_with("500\n") {
                    Ok(())
                } else {
                    Err(format!("stream holds {text}"))
                }
            },
        )
        .await;
    let text = tokio::task::block_in_place(|| counts(()));
    assert!(
        text.contains(&format!("('{name}.d1', 250), ('{name}.d2', 250)")),
        "{text}"
    );
    tokio::task::block_in_place(|| py(&format!("await js.delete_stream({name:?})")));
}
