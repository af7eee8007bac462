//! `sluice dlq list|show|replay` on a real `rocksdb` dead-letter channel: poison events are
//! counted and shown with their reasons, and a selection is replayed into a pipeline's channel
//! that then delivers it — each event exactly once, the rest staying in the DLQ.

use std::{collections::HashSet, path::Path};

use crate::common::{json_lines, run_stdin, sluice, stderr};

fn dlq(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let o = sluice()
        .arg("dlq")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        o.status.code(),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)),
    )
}

#[test]
fn dead_letters_are_listed_shown_and_replayed_into_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 300 events, one kind in three unroutable: 100 dead letters in a durable DLQ that no sink
    // reads.
    run_stdin(
        d,
        &"dlq: dead
channels:
  ok: { type: memory }
  dead: { type: rocksdb, path: 'DIR/dead' }
sources:
  gen:
    type: generator
    count: 300
    cycle: { header: kind, values: [click, junk, view] }
    selector: { type: multiplexing, header: kind, mapping: { click: [ok], view: [ok] } }
sinks:
  out: { type: null, channel: ok }
"
        .replace("DIR", &d.display().to_string()),
        "",
    );
    let (code, out) = dlq(&["list", "dead"], d);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("100 dead letters selected"), "{out}");
    let row = out.lines().find(|l| l.contains(" gen ")).expect(&out);
    assert!(
        row.trim_start().starts_with("100") && row.contains("source") && row.contains("rejected"),
        "{row}"
    );

    let (code, out) = dlq(
        &[
            "show", "dead", "--limit", "2", "--stage", "source", "--since", "1h",
        ],
        d,
    );
    assert_eq!(code, Some(0), "{out}");
    let shown: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len(), 2);
    for e in &shown {
        assert_eq!(e["headers"]["kind"], "junk");
        assert!(
            e["headers"]["sluice.dlq.reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
        );
        assert!(
            e["headers"]["sluice.dlq.time"]
                .as_str()
                .is_some_and(|t| t.parse::<i64>().is_ok())
        );
    }
    let (_, none) = dlq(&["list", "dead", "--class", "plugin_trap"], d);
    assert!(none.contains("0 dead letters selected"), "{none}");

    // The fixed pipeline reads a durable `inbox` channel.
    std::fs::write(
        d.join("fixed.yaml"),
        "channels:
  inbox: { type: rocksdb, path: inbox }
sources:
  none: { type: stdin, channels: [inbox] }
sinks:
  out: { type: file, path: fixed.ndjson, format: ndjson, channel: inbox }
",
    )
    .unwrap();
    let replay = [
        "replay",
        "dead",
        "--pipeline",
        "fixed.yaml",
        "--channel",
        "inbox",
        "--limit",
        "60",
    ];
    let (code, out) = dlq(&replay, d);
    assert_eq!(code, Some(1), "without --yes nothing moves: {out}");
    assert!(out.contains("would replay 60"), "{out}");
    let (code, out) = dlq(&[&replay[..], &["--yes"]].concat(), d);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("replayed 60 dead letters") && out.contains("40 stay"),
        "{out}"
    );
    let (_, out) = dlq(&["list", "dead"], d);
    assert!(out.contains("40 dead letters selected"), "{out}");

    // The rest by directory; then the pipeline delivers all 100, once each, without the DLQ's
    // headers.
    let (code, out) = dlq(&["replay", "dead", "--to", "inbox", "--yes"], d);
    assert_eq!(code, Some(0), "{out}");
    let (_, out) = dlq(&["list", "dead"], d);
    assert!(out.contains("0 dead letters selected"), "{out}");
    let fixed = std::fs::read_to_string(d.join("fixed.yaml")).unwrap();
    run_stdin(
        d,
        &fixed
            .replace(
                "path: inbox",
                &format!("path: '{}'", d.join("inbox").display()),
            )
            .replace(
                "path: fixed.ndjson",
                &format!("path: '{}'", d.join("fixed.ndjson").display()),
            ),
        "",
    );
    let delivered = json_lines(&d.join("fixed.ndjson"));
    assert_eq!(delivered.len(), 100);
    let bodies: HashSet<String> = delivered
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies.len(), 100, "each dead letter delivered once");
    for e in &delivered {
        assert_eq!(e["headers"]["kind"], "junk");
        assert!(e["headers"].get("sluice.dlq.reason").is_none(), "{e}");
    }
}

/// A running agent's DLQ through the admin server: `GET /dlq` counts it by kind, `POST
/// /dlq/replay` moves a selection into another channel, whose sink then delivers it.
#[test]
fn a_running_agents_dead_letters_are_counted_and_replayed_through_the_admin_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    let out = dir.path().join("fixed.ndjson");
    let agent = crate::common::Agent::start(
        dir.path(),
        "live",
        &format!(
            "admin: {{ listen: '127.0.0.1:{port}' }}
dlq: dead
channels:
  ok: {{ type: memory }}
  dead: {{ type: memory }}
  inbox: {{ type: memory }}
sources:
  gen:
    type: generator
    rate: 300
    cycle: {{ header: kind, values: [click, junk] }}
    selector: {{ type: multiplexing, header: kind, mapping: {{ click: [ok] }} }}
sinks:
  out: {{ type: null, channel: ok }}
  fixed: {{ type: file, path: '{}', format: ndjson, channel: inbox }}
",
            out.display()
        ),
    );
    let body = |r: (u16, String)| -> (u16, serde_json::Value) {
        let text = &r.1[r.1.find("\r\n\r\n").unwrap() + 4..];
        (
            r.0,
            serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let counted = loop {
        if let Some(r) = crate::common::http(port, "GET", "/dlq?channel=dead&stage=source") {
            let (status, v) = body(r);
            if status == 200 && v[0]["events"].as_u64().is_some_and(|n| n >= 20) {
                break v;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(counted[0]["component"], "gen");
    assert_eq!(counted[0]["class"], "rejected");
    let (status, v) = body(
        crate::common::http(
            port,
            "POST",
            "/dlq/replay?channel=dead&to=inbox&limit=15&stage=source",
        )
        .unwrap(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replayed"], 15);
    let (status, _) =
        body(crate::common::http(port, "POST", "/dlq/replay?channel=dead&to=nowhere").unwrap());
    assert_eq!(status, 404);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 15 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = agent.stop_blocking();
    let delivered = json_lines(&out);
    assert_eq!(delivered.len(), 15, "{log}");
    for e in &delivered {
        assert_eq!(e["headers"]["kind"], "junk");
        assert!(e["headers"].get("sluice.dlq.stage").is_none());
    }
}
