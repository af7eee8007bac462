//! Black-box tests of Wasm plugins in a running agent: hot swap under load, hostile plugins
//! beside healthy pipelines, and the `--plugin` flag. The plugins are real components: WAT
//! guests assembled here, and the first-party plugins built by `scripts/build-plugins`.

use std::{
    collections::HashMap,
    io::Write,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use crate::common::{dist, free_port, http, json_lines, sluice, stderr};
use sluice_wasm::test_guests::{PANIC, marker_guest, packed_guest};

fn assemble(path: &Path, wat: &str) {
    // Write then rename, so the agent's watcher never reads a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, wat::parse_str(wat).unwrap()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[test]
fn swapping_a_plugin_under_load_loses_and_duplicates_nothing() {
    const N: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("marker.wasm");
    assemble(&plugin, &marker_guest('A'));
    let port = free_port();
    let p = dir.path().join("swap.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  marker: {{ path: marker.wasm }}\nadmin: {{ listen: '127.0.0.1:{port}' }}\nchannels:\n  mem: {{ type: memory }}\n\
             sources:\n  gen: {{ type: generator, count: {N}, rate: 20000, batch_size: 100, body_size: 8, channels: [mem], interceptors: [marker] }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{}/out.ndjson', format: ndjson }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let child = sluice()
        .arg("-p")
        .arg(&p)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Swap A→B→A→… while events flow: by file (the watcher) and through the admin API.
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(port, "GET", "/ready").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "agent never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut swaps_by_api = 0;
    for (i, v) in ['B', 'A', 'B', 'A', 'B'].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(350));
        assemble(&plugin, &marker_guest(v));
        if i % 2 == 1 {
            let (status, body) = http(port, "POST", "/plugins/marker/reload").unwrap();
            assert_eq!(status, 200, "{body}");
            swaps_by_api += body.contains("\"swapped\"") as u32;
        }
    }
    // A broken version is refused and the running one keeps going.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&plugin, b"not a component").unwrap();
    let (status, body) = http(port, "POST", "/plugins/marker/reload").unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("keeps running"), "{body}");
    let (_, listing) = http(port, "GET", "/plugins").unwrap();
    assert!(
        listing.contains("\"world\":\"packed-interceptor\""),
        "{listing}"
    );
    let (_, metrics) = http(port, "GET", "/metrics").unwrap();
    for m in [
        "sluice_plugin_swaps_total{plugin=\"marker\"}",
        "sluice_plugin_swap_failures_total{plugin=\"marker\"} 1",
        "sluice_plugin_calls_total{plugin=\"marker\",digest=\"sha256:",
    ] {
        assert!(metrics.contains(m), "{m} missing in\n{metrics}");
    }

    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = json_lines(&dir.path().join("out.ndjson"));
    assert_eq!(out.len() as u64, N, "every event exactly once");
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut versions: HashMap<String, usize> = HashMap::new();
    for e in &out {
        let seq: u64 = e["body"]
            .as_str()
            .unwrap()
            .trim_end_matches('.')
            .parse()
            .unwrap();
        *seen.entry(seq).or_default() += 1;
        *versions
            .entry(
                e["headers"]["version"]
                    .as_str()
                    .expect("every event marked")
                    .to_owned(),
            )
            .or_default() += 1;
    }
    assert_eq!(seen.len() as u64, N, "no event lost");
    assert!(seen.values().all(|&c| c == 1), "no event duplicated");
    assert_eq!(
        versions.keys().len(),
        2,
        "both versions saw traffic: {versions:?}"
    );
    assert!(versions.contains_key("A") && versions.contains_key("B"));
    assert!(stderr(&o).contains("plugin swapped"), "{}", stderr(&o));
    let _ = swaps_by_api;
}

#[test]
fn a_hostile_plugin_is_contained_and_the_pipeline_beside_it_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    assemble(&dir.path().join("bad.wasm"), &packed_guest(PANIC));
    assemble(&dir.path().join("good.wasm"), &marker_guest('G'));
    let p = dir.path().join("hostile.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  bad: {{ path: bad.wasm }}\n  good: {{ path: good.wasm }}\n\
             channels:\n  a: {{ type: memory }}\n  b: {{ type: memory }}\n  dead: {{ type: memory }}\n\
             sources:\n  poisoned: {{ type: generator, count: 50, batch_size: 10, channels: [a], interceptors: [bad], dlq: dead }}\n\
             \x20 healthy: {{ type: generator, count: 5000, channels: [b], interceptors: [good] }}\n\
             sinks:\n  sa: {{ type: file, channel: a, path: '{d}/a.log' }}\n  sb: {{ type: file, channel: b, path: '{d}/b.ndjson', format: ndjson }}\n\
             \x20 sd: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let o = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(o.status.success(), "the agent stays up: {}", stderr(&o));
    assert!(
        !dir.path().join("a.log").exists()
            || std::fs::read_to_string(dir.path().join("a.log"))
                .unwrap()
                .is_empty()
    );
    let dead = json_lines(&dir.path().join("dead.ndjson"));
    assert_eq!(
        dead.len(),
        50,
        "every event of the poisoned source is dead-lettered"
    );
    let reason = dead[0]["headers"]["sluice.dlq.reason"].as_str().unwrap();
    assert!(
        reason.contains("plugin `bad` (sha256:") && reason.contains("(trap)"),
        "{reason}"
    );
    let good = json_lines(&dir.path().join("b.ndjson"));
    assert_eq!(good.len(), 5000);
    assert!(good.iter().all(|e| e["headers"]["version"] == "G"));
}

#[test]
fn the_file_sink_encodes_through_a_plugin_codec_per_resolved_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("filecodec.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  json: {{ path: '{}', config: {{ format: array }} }}\n\
             channels:\n  mem: {{ type: memory }}\n\
             sources:\n  gen: {{ type: generator, count: 100, batch_size: 20, body: '{{\"a\":1}}', cycle: {{ header: kind, values: [x, y] }}, channels: [mem] }}\n\
             sinks:\n  out: {{ type: file, channel: mem, batch_size: 20, path: '{}/%{{kind}}.json', format: json }}\n",
            dist("json").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let o = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for kind in ["x", "y"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{kind}.json"))).unwrap();
        // One JSON array per encode call: one per file per delivered batch, not per event.
        let arrays: Vec<Vec<serde_json::Value>> = serde_json::Deserializer::from_str(&text)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{kind}: {e}: {text}"));
        let events: usize = arrays.iter().map(Vec::len).sum();
        assert_eq!(events, 50, "{kind}: {text}");
        assert!(arrays.len() < 50, "{kind}: one array per event: {text}");
        assert!(
            arrays.iter().flatten().all(|v| v["a"] == 1),
            "{kind}: {text}"
        );
    }
}

#[test]
fn the_plugin_flag_adds_a_plugin_named_by_its_file_stem() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("flag.yaml");
    std::fs::write(
        &p,
        format!(
            "channels:\n  mem: {{ type: memory }}\nsources:\n  gen: {{ type: generator, count: 10, body: '{{\"a\":1}}', channels: [mem], interceptors: [enrich] }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{}/out.ndjson', format: ndjson }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // Without the flag the reference dangles: a config error with its position.
    let o = sluice().arg("-p").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(
        stderr(&o).contains("unknown plugin `enrich`"),
        "{}",
        stderr(&o)
    );
    let o = sluice()
        .arg("-p")
        .arg(&p)
        .arg("--plugin")
        .arg(dist("enrich"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = json_lines(&dir.path().join("out.ndjson"));
    assert_eq!(out.len(), 10);
    assert_eq!(
        out[0]["body"], "{\"a\":1}",
        "enrich with no config changes nothing"
    );
}

/// `sluice validate --plugin` checks a pipeline whose plugin comes from the command line; a
/// bad `--plugin` is reported as the argument it is, not as a position in the file. The first
/// load of a component says it compiles (and a later start, from the cache, does not); a log
/// written to a pipe has no colour codes.
#[test]
fn validate_takes_plugins_and_names_a_bad_plugin_argument() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("flag.yaml");
    std::fs::write(
        &p,
        "channels:\n  mem: { type: memory }\nsources:\n  gen: { type: generator, count: 1, channels: [mem], interceptors: [enrich] }\n\
         sinks:\n  out: { type: null, channel: mem }\n",
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let validate = |plugin: &std::ffi::OsStr| {
        sluice()
            .arg("validate")
            .arg(&p)
            .arg("--plugin")
            .arg(plugin)
            .env("SLUICE_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let o = validate(dist("enrich").as_os_str());
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("compiling plugin enrich (cached afterwards)"),
        "{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log: {log:?}"
    );
    let again = stderr(&validate(dist("enrich").as_os_str()));
    assert!(!again.contains("compiling plugin"), "{again}");

    let missing = dir.path().join("missing.wasm");
    let o = validate(std::ffi::OsString::from(format!("enrich={}", missing.display())).as_os_str());
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("--plugin enrich={}", missing.display())),
        "{err}"
    );
    assert!(!err.contains(":0:0"), "{err}");
}

fn load(name: &str, config: serde_json::Value) -> std::sync::Arc<sluice_wasm::slot::PluginSlot> {
    let m = sluice_core::metrics::Metrics::new();
    sluice_wasm::slot::PluginSlot::load(
        name,
        dist(name),
        &config,
        Some(32 << 20),
        None,
        m.plugin(name),
    )
    .unwrap()
}

/// Once an instance's calls are short they run on the async worker, without stepping off it;
/// a guest that then prints, sleeps or reads the clock still works, because the WASI
/// functions that block step off the worker themselves (on the worker, wasmtime-wasi's
/// `block_on` would panic).
#[test]
fn a_fast_plugin_runs_on_the_worker_and_may_still_print_and_sleep() {
    use sluice_core::{event::Event, interceptor::Interceptor};
    use sluice_wasm::interceptor::WasmInterceptor;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let task = rt.spawn(async {
        let mut chain = WasmInterceptor::new(load("chaos", serde_json::json!({}))).unwrap();
        let mut rejected = Vec::new();
        assert!(
            !chain.next_call_inline(),
            "a first call steps off the worker"
        );
        // One short call is enough; a few more in case this machine descheduled one.
        for _ in 0..20 {
            let mut warm = vec![Event::new("warm")];
            chain.intercept(&mut warm, &mut rejected).unwrap();
            if chain.next_call_inline() {
                break;
            }
        }
        assert!(chain.next_call_inline(), "short calls run on the worker");
        let mut batch: Vec<Event> = ["print", "nap", "wasi-clock", "wasi-files"]
            .into_iter()
            .map(Event::new)
            .collect();
        chain.intercept(&mut batch, &mut rejected).unwrap();
        assert!(
            rejected.is_empty(),
            "{:?}",
            rejected.first().map(|d| &d.reason)
        );
        let header = |i: usize, k: &str| batch[i].headers.get(k).map(str::to_owned);
        assert_eq!(header(1, "slept").as_deref(), Some("1ms"));
        assert_eq!(
            header(2, "clock").as_deref(),
            Some("wall=true monotonic=true")
        );
        assert_eq!(
            header(3, "reached").as_deref(),
            Some("0"),
            "no file is reachable"
        );
    });
    rt.block_on(task).unwrap();
}

/// The chaos plugin with a 500 ms deadline, well above the default: on a loaded machine its
/// `oom` event must reach the memory cap (a few ms of work) before a descheduled thread runs
/// past the deadline, and a call may span several epoch ticks.
fn chaos_with_long_deadline() -> sluice_wasm::interceptor::WasmInterceptor {
    let slot = sluice_wasm::slot::PluginSlot::load(
        "chaos",
        dist("chaos"),
        &serde_json::json!({}),
        Some(32 << 20),
        Some(std::time::Duration::from_millis(500)),
        sluice_core::metrics::Metrics::new().plugin("chaos"),
    )
    .unwrap();
    sluice_wasm::interceptor::WasmInterceptor::new(slot).unwrap()
}

/// A deadline is kept by the clock, not by counting epoch ticks: a call that runs through
/// several ticks but ends within its deadline is not interrupted.
#[test]
fn a_call_spanning_several_epoch_ticks_within_its_deadline_completes() {
    use sluice_core::{event::Event, interceptor::Interceptor};
    use sluice_wasm::engine::EPOCH_TICK;
    let mut chain = chaos_with_long_deadline();
    let spin = EPOCH_TICK * 4;
    let mut batch = vec![Event::new(format!("slow:{}", spin.as_micros()))];
    let mut rejected = Vec::new();
    chain.intercept(&mut batch, &mut rejected).unwrap();
    assert!(
        rejected.is_empty(),
        "{:?}",
        rejected.first().map(|d| &d.reason)
    );
    assert_eq!(batch[0].headers.get("chaos"), Some("ok"));
}

#[test]
fn bisection_sends_only_the_poison_events_to_the_dlq() {
    use sluice_core::{event::Event, interceptor::Interceptor};
    let mut chain = chaos_with_long_deadline();
    let poison = [
        (7, "panic"),
        (40, "loop"),
        (41, "oom"),
        (90, "recurse"),
        (95, "reject"),
    ];
    let mut batch: Vec<Event> = (0..100)
        .map(|i| match poison.iter().find(|(at, _)| *at == i) {
            Some((_, what)) => Event::new(*what),
            None => Event::new(format!("e{i}")),
        })
        .collect();
    let mut rejected = Vec::new();
    chain.intercept(&mut batch, &mut rejected).unwrap();
    let kept: Vec<String> = batch
        .iter()
        .map(|e| String::from_utf8_lossy(&e.body).into_owned())
        .collect();
    let expected: Vec<String> = (0..100)
        .filter(|i| !poison.iter().any(|(at, _)| at == i))
        .map(|i| format!("e{i}"))
        .collect();
    assert_eq!(kept, expected, "the healthy events continue, in order");
    assert!(batch.iter().all(|e| e.headers.get("chaos") == Some("ok")));
    let mut dead: Vec<(String, String)> = rejected
        .iter()
        .map(|d| {
            (
                String::from_utf8_lossy(&d.event.body).into_owned(),
                d.reason.clone(),
            )
        })
        .collect();
    dead.sort();
    let kinds: Vec<(&str, &str)> = dead
        .iter()
        .map(|(b, r)| {
            let kind = [
                "(trap)",
                "(deadline)",
                "(memory)",
                "(stack_overflow)",
                "rejected on request",
            ]
            .into_iter()
            .find(|k| r.contains(k))
            .unwrap_or_else(|| panic!("unexpected reason for {b}: {r}"));
            (b.as_str(), kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("loop", "(deadline)"),
            ("oom", "(memory)"),
            ("panic", "(trap)"),
            ("recurse", "(stack_overflow)"),
            ("reject", "rejected on request")
        ]
    );
    // The next batch runs on a fresh instance.
    let mut next = vec![Event::new("after")];
    chain.intercept(&mut next, &mut rejected).unwrap();
    assert_eq!(next[0].headers.get("chaos"), Some("ok"));
}

#[test]
fn first_party_codecs_and_selector_run_through_the_runtime() {
    use sluice_core::{
        event::{Event, codec::Codec},
        selector::{Routed, Selector},
    };
    use sluice_wasm::{codec::WasmCodec, selector::WasmSelector};
    // Through the engine's `Codec` trait, as sources and sinks call a codec.
    let codec = |name: &str, config: serde_json::Value| -> Box<dyn Codec> {
        Box::new(WasmCodec::new(load(name, config)).unwrap())
    };
    // json: an array payload becomes events with a header from a JSON pointer.
    let mut json = codec(
        "json",
        serde_json::json!({ "headers": { "user": "/user/id" } }),
    );
    let events = json
        .decode(br#"[{"user":{"id":"u1"},"n":1},{"user":{"id":"u2"},"n":2}]"#)
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(&events[1].body[..], br#"{"user":{"id":"u2"},"n":2}"#);
    assert_eq!(events[0].headers.get("user"), Some("u1"));
    let mut out = Vec::new();
    json.encode(&events, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"user\":{\"id\":\"u1\"},\"n\":1}\n{\"user\":{\"id\":\"u2\"},\"n\":2}\n"
    );
    assert!(
        json.decode(b"{not json").unwrap_err().contains("json"),
        "bad payloads are reported, not trapped"
    );

    // csv: quoted fields, header row.
    let mut csv = codec("csv", serde_json::json!({}));
    let rows = csv
        .decode(b"name,note\nada,\"likes, commas\"\nbob,\"say \"\"hi\"\"\"\n")
        .unwrap();
    assert_eq!(rows.len(), 2);
    let v: serde_json::Value = serde_json::from_slice(&rows[0].body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({ "name": "ada", "note": "likes, commas" })
    );

    // kv-py (Python): key=value pairs to JSON and back.
    let mut kv = codec("kv-py", serde_json::json!({}));
    let evs = kv.decode(b"user=ada action=login").unwrap();
    assert_eq!(evs.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&evs[0].body).unwrap();
    assert_eq!(v["user"], "ada");
    assert_eq!(v["action"], "login");

    // route: by a JSON field with a default.
    let slot = load(
        "route",
        serde_json::json!({ "field": "/type", "mapping": { "click": ["clicks"] }, "default": ["other"] }),
    );
    let mut sel = WasmSelector::new(slot, vec!["clicks".into(), "other".into()]).unwrap();
    let mut routed = Routed::new(2);
    let mut unroutable = Vec::new();
    sel.select(
        vec![
            Event::new(r#"{"type":"click"}"#),
            Event::new(r#"{"type":"view"}"#),
            Event::new("x"),
        ],
        &mut routed,
        &mut unroutable,
    );
    assert_eq!(routed.required[0].len(), 1);
    assert_eq!(routed.required[1].len(), 2);
    assert!(unroutable.is_empty());

    // redact: masks a field at any depth.
    use sluice_core::interceptor::Interceptor;
    use sluice_wasm::interceptor::WasmInterceptor;
    let mut redact = WasmInterceptor::new(load(
        "redact",
        serde_json::json!({ "fields": ["password"] }),
    ))
    .unwrap();
    let mut batch = vec![Event::new(
        r#"{"user":"ada","auth":{"password":"hunter2"}}"#,
    )];
    redact.intercept(&mut batch, &mut Vec::new()).unwrap();
    assert_eq!(
        &batch[0].body[..],
        br#"{"user":"ada","auth":{"password":"***"}}"#
    );
}

#[test]
fn the_plugins_example_decodes_enriches_and_encodes() {
    let mut child = sluice()
        .args(["--pipeline", "examples/plugins.yaml", "--plugin"])
        .arg(dist("enrich"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"[{\"user\":\"ada\",\"action\":\"login\"},{\"user\":\"bob\",\"action\":\"view\"}]\nnot json\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        out,
        [
            serde_json::json!({ "user": "ada", "action": "login", "pipeline": "plugins-example" }),
            serde_json::json!({ "user": "bob", "action": "view", "pipeline": "plugins-example" }),
        ]
    );
    let err = stderr(&o);
    assert!(
        err.contains("source  in: received 3, accepted 2, dropped 0, dead-lettered 0"),
        "{err}"
    );
}

#[test]
fn plugin_stdout_goes_to_the_agent_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("print.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  chaos: {{ path: '{}' }}\nchannels:\n  mem: {{ type: memory }}\n\
             sources:\n  gen: {{ type: generator, count: 1, body: print, channels: [mem], interceptors: [chaos] }}\n\
             sinks:\n  out: {{ type: null, channel: mem }}\n",
            dist("chaos").display()
        ),
    )
    .unwrap();
    let o = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    let line = log
        .lines()
        .find(|l| l.contains("chaos says hello from inside the sandbox"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("plugin") && line.contains("chaos"), "{line}");
}

/// A live reload of the pipeline file that adds, changes and removes plugin definitions:
/// only the components that use a changed plugin are rebuilt, the new settings apply from
/// the next batch, nothing is lost, and a plugin that fails to load is refused with the old
/// pipeline still running.
#[test]
fn a_reload_adds_changes_and_removes_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = free_port();
    let variant = |plugins: &str, chain: &str| {
        format!(
            "admin: {{ listen: '127.0.0.1:{admin}' }}
shutdown_timeout: 20s
plugins:
  keep: {{ path: '{enrich}', config: {{ headers: {{ kept: yes }} }} }}
{plugins}
channels:
  a: {{ type: memory, capacity: 10000 }}
  b: {{ type: memory, capacity: 10000 }}
sources:
  gen_a: {{ type: generator, count: 30000, rate: 3000, batch_size: 30, channels: [a], interceptors: [keep] }}
  gen_b: {{ type: generator, count: 30000, rate: 3000, batch_size: 30, channels: [b], interceptors: [{chain}] }}
sinks:
  out_a: {{ type: file, channel: a, path: '{d}/a.out' }}
  out_b: {{ type: file, channel: b, format: ndjson, path: '{d}/b.out' }}
",
            enrich = dist("enrich").display(),
            d = d.display(),
        )
    };
    let enrich = |v: &str| {
        format!(
            "  tag: {{ path: '{}', config: {{ headers: {{ v: '{v}' }} }} }}",
            dist("enrich").display()
        )
    };
    let file = d.join("p.yaml");
    std::fs::write(&file, variant(&enrich("one"), "tag")).unwrap();
    let log = d.join("p.log");
    let mut child = sluice()
        .arg("-p")
        .arg(&file)
        .arg("--no-watch")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let tail = || std::fs::read_to_string(&log).unwrap_or_default();
    let reload = || {
        let (status, raw) = http(admin, "POST", "/config/reload").unwrap();
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    };
    let b_count = || std::fs::read_to_string(d.join("b.out")).map_or(0, |s| s.lines().count());
    let deadline = Instant::now() + Duration::from_secs(30);
    while b_count() < 100 {
        assert!(Instant::now() < deadline, "no events:\n{}", tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut marks = Vec::new();
    let steps = [
        // A changed setting: the plugin is loaded anew, gen_b takes it between two batches.
        (variant(&enrich("two"), "tag"), "plugins.tag loaded"),
        // A second plugin in the chain.
        (
            variant(
                &format!(
                    "{}\n  mask: {{ path: '{}', config: {{ fields: [nothing] }} }}",
                    enrich("two"),
                    dist("redact").display()
                ),
                "tag, mask",
            ),
            "plugins.mask loaded",
        ),
        // Both removed.
        (variant("", ""), "plugins.tag removed"),
    ];
    for (text, expect) in steps {
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&file, &text).unwrap();
        let (status, body) = reload();
        assert_eq!(status, 200, "{body}\n{}", tail());
        assert!(body.contains(expect), "{body}");
        assert!(
            body.contains("sources.gen_b rerouted") && !body.contains("gen_a"),
            "only gen_b uses the changed plugins: {body}"
        );
        marks.push(b_count());
    }
    // A plugin that cannot load, or whose `init` refuses its settings: refused, nothing
    // changed.
    let unknown_key = format!(
        "  tag: {{ path: '{}', config: {{ no_such_setting: 1 }} }}",
        dist("enrich").display()
    );
    for broken in [
        "  tag: { path: '/nonexistent/tag.wasm' }",
        unknown_key.as_str(),
    ] {
        std::fs::write(&file, variant(broken, "tag")).unwrap();
        let (status, body) = reload();
        assert_eq!(status, 422, "{broken}: {body}");
        assert!(body.contains("plugins.tag"), "{body}");
    }
    let (_, plugins) = http(admin, "GET", "/plugins").unwrap();
    assert!(
        plugins.contains("\"keep\"") && !plugins.contains("\"tag\""),
        "GET /plugins follows the reloads: {plugins}"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    while b_count() < 30000
        || std::fs::read_to_string(d.join("a.out")).map_or(0, |s| s.lines().count()) < 30000
    {
        assert!(Instant::now() < deadline, "not delivered:\n{}", tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "{}", tail());

    let a = std::fs::read_to_string(d.join("a.out")).unwrap();
    assert_eq!(a.lines().count(), 30000, "gen_a: every event once");
    let b = json_lines(&d.join("b.out"));
    let seqs: Vec<u64> = b
        .iter()
        .map(|e| crate::common::seq(e["body"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seqs,
        (0..30000).collect::<Vec<_>>(),
        "gen_b: every event once, in order"
    );
    let v = |e: &serde_json::Value| e["headers"]["v"].as_str().map(str::to_owned);
    // Before the first reload: v=one; after it v=two; after the removal: no v at all. Each
    // switch happens once, between the counts seen before and after its reload; the source
    // takes the new chain between two batches, so the batch it was running when the reload
    // answered (30 events) may still reach the file after the count was read.
    let in_flight = 30;
    assert_eq!(v(&b[0]).as_deref(), Some("one"));
    let first_two = b
        .iter()
        .position(|e| v(e).as_deref() == Some("two"))
        .unwrap();
    let first_none = b.iter().position(|e| v(e).is_none()).unwrap();
    assert!(
        first_two <= marks[0] + in_flight && first_two < first_none,
        "{first_two} {marks:?}"
    );
    assert!(
        b[first_two..first_none]
            .iter()
            .all(|e| v(e).as_deref() == Some("two"))
    );
    assert!(b[first_none..].iter().all(|e| v(e).is_none()));
    assert!(
        first_none <= marks[2] + in_flight && first_none >= marks[1],
        "{first_none} {marks:?}"
    );
}

/// A plugin that reaches for every WASI capability and abuses the host calls is contained:
/// no file, no environment, a sleep past its deadline fails the call at once instead of
/// blocking the agent, a huge random request fails its call, counter names are capped, and
/// the healthy events around the abusive ones go through.
#[test]
fn a_plugin_abusing_the_sandbox_is_contained() {
    use sluice_core::{event::Event, interceptor::Interceptor};
    use sluice_wasm::interceptor::WasmInterceptor;
    let m = sluice_core::metrics::Metrics::new();
    let slot = sluice_wasm::slot::PluginSlot::load(
        "chaos",
        dist("chaos"),
        &serde_json::json!({}),
        Some(32 << 20),
        Some(Duration::from_millis(200)),
        m.plugin("chaos"),
    )
    .unwrap();
    let mut chain = WasmInterceptor::new(slot).unwrap();
    let bodies = [
        "e0",
        "wasi-files",
        "wasi-env",
        "sleep",
        "wasi-clock",
        "nap",
        "random",
        "counter-spam",
        "e8",
    ];
    let batch: Vec<Event> = bodies.iter().map(|b| Event::new(*b)).collect();
    // On a thread of its own, so a sleep that blocks fails the test in 20 s, not in an hour.
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut batch, mut rejected) = (batch, Vec::new());
        chain.intercept(&mut batch, &mut rejected).unwrap();
        let _ = done.send((batch, rejected));
    });
    let (batch, rejected) = result
        .recv_timeout(Duration::from_secs(20))
        .expect("a plugin's sleep held the batch past 20 s");
    let by_body: HashMap<String, &Event> = batch
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.body).into_owned(), e))
        .collect();
    let header = |body: &str, h: &str| {
        by_body
            .get(body)
            .unwrap_or_else(|| panic!("{body} was not kept"))
            .headers
            .get(h)
            .map(str::to_owned)
    };
    assert_eq!(header("wasi-files", "reached").as_deref(), Some("0"));
    assert_eq!(header("wasi-env", "env").as_deref(), Some("0"));
    assert_eq!(
        header("wasi-clock", "clock").as_deref(),
        Some("wall=true monotonic=true")
    );
    assert_eq!(header("nap", "slept").as_deref(), Some("1ms"));
    assert_eq!(header("counter-spam", "counters").as_deref(), Some("5000"));
    assert_eq!(header("e0", "chaos").as_deref(), Some("ok"));
    assert_eq!(header("e8", "chaos").as_deref(), Some("ok"));
    let dead: HashMap<String, String> = rejected
        .iter()
        .map(|d| {
            (
                String::from_utf8_lossy(&d.event.body).into_owned(),
                d.reason.clone(),
            )
        })
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead["sleep"].contains("past its call's deadline"),
        "{}",
        dead["sleep"]
    );
    assert!(
        dead["random"].contains("exceeds limit"),
        "{}",
        dead["random"]
    );
    let metrics = m.encode();
    let names = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_plugin_counter_total{") && l.contains("chaos_counter_"))
        .count();
    assert_eq!(names, sluice_wasm::quota::MAX_COUNTER_NAMES, "{metrics}");
    let refused = metrics
        .lines()
        .find(|l| l.contains("plugin_limited_total") && l.contains("counter_name_refused"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        refused.ends_with(&format!(
            " {}",
            5000 - sluice_wasm::quota::MAX_COUNTER_NAMES
        )),
        "{refused}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("plugin_limited_total") && l.contains("sleep_refused")),
        "{metrics}"
    );
}

/// A plugin that floods its log (host `log` and stdout, short lines and one of 8 MiB) gets a
/// bounded number of lines into the agent's log, each cut to the line limit, and a line saying
/// how many were dropped; its events go through.
#[test]
fn a_plugin_flooding_the_log_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("flood.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  chaos: {{ path: '{}', limits: {{ deadline: 60s }} }}\nchannels:\n  mem: {{ type: memory }}\n\
             sources:\n  in: {{ type: stdin, batch_size: 1, channels: [mem], interceptors: [chaos] }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{}/out.ndjson', format: ndjson }}\n",
            dist("chaos").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = sluice()
        .arg("-p")
        .arg(&p)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"log-flood\nprint-flood\nlog-flood\nafter\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let log = stderr(&o);
    assert!(
        o.status.success(),
        "{}",
        &log[log.len().saturating_sub(4000)..]
    );
    let out = json_lines(&dir.path().join("out.ndjson"));
    // (A call past its deadline would dead-letter its event: the deadline is far above what
    // the flood takes, even on a loaded machine.)
    assert_eq!(
        out.len(),
        4,
        "every event goes through:\n{}",
        log.lines()
            .filter(|l| !l.contains("chaos flood line") && !l.contains("chaos print line"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let flood = log
        .lines()
        .filter(|l| l.contains("chaos flood line") || l.contains("chaos print line"))
        .count();
    // 80,000 lines asked for; the burst and what the rate earns while they run get through.
    assert!(
        (400..=3_000).contains(&flood),
        "{flood} flood lines reached the log"
    );
    assert!(
        log.contains("lines dropped"),
        "no line says lines were dropped"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 5_000, "a log line of {longest} bytes");
    assert!(log.contains("more bytes cut]"), "no line says it was cut");
}

/// A real component that reaches for the network (`plugins/escape`, built against
/// `wasi:sockets` by the Rust toolchain) is refused at load, naming the import; through the
/// agent, the pipeline is refused at start with the same reason.
#[test]
fn a_plugin_that_opens_sockets_is_refused_at_load() {
    let m = sluice_core::metrics::Metrics::new();
    let err = match sluice_wasm::slot::PluginSlot::load(
        "escape",
        dist("escape"),
        &serde_json::json!({}),
        None,
        None,
        m.plugin("escape"),
    ) {
        Ok(_) => panic!("a plugin importing wasi:sockets was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("wasi:sockets/"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("escape.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  escape: {{ path: '{}' }}\nchannels:\n  mem: {{ type: memory }}\n\
             sources:\n  gen: {{ type: generator, count: 1, channels: [mem], interceptors: [escape] }}\n\
             sinks:\n  out: {{ type: null, channel: mem }}\n",
            dist("escape").display()
        ),
    )
    .unwrap();
    let o = sluice().arg("-p").arg(&p).output().unwrap();
    assert!(!o.status.success(), "the agent ran a socket-opening plugin");
    assert!(stderr(&o).contains("wasi:sockets/"), "{}", stderr(&o));
}
