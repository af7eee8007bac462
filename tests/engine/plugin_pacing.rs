//! Slow and leaky guests through a running agent: the host sizes calls to the plugin's speed
//! instead of bisecting batches that were merely large, recycles an instance whose memory
//! grows before the cap fails a call, and says so in the log. The guest is the real `chaos`
//! component (`slow:<µs>` spins per event, `leak:<bytes>` never frees).

use std::path::Path;

use crate::common::{dist, sluice, stderr};

/// Runs `count` generated events with `body` through `chaos` with `limits`; returns the log.
fn run_chaos(dir: &Path, body: &str, count: u64, limits: &str) -> String {
    let p = dir.join("pacing.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  chaos: {{ path: '{}', limits: {limits} }}\nchannels:\n  mem: {{ type: memory }}\n\
             sources:\n  gen: {{ type: generator, count: {count}, body: '{body}', batch_size: 1000, channels: [mem], interceptors: [chaos] }}\n\
             sinks:\n  out: {{ type: null, channel: mem }}\n",
            dist("chaos").display()
        ),
    )
    .unwrap();
    let o = sluice().arg("-p").arg(&p).output().unwrap();
    let log = stderr(&o);
    assert!(
        o.status.success(),
        "{}",
        &log[log.len().saturating_sub(4000)..]
    );
    let summary =
        format!("source  gen: received {count}, accepted {count}, dropped 0, dead-lettered 0");
    assert!(log.contains(&summary), "not `{summary}`:\n{log}");
    log
}

/// 100 µs per event: a 1000-event batch would take 100 ms against a 20 ms deadline. The
/// calls are cut to what fits a quarter of it, so every event goes through with no deadline
/// hit and no bisection, and the log says what size the plugin was given.
#[test]
fn a_slow_plugin_is_given_smaller_calls_instead_of_bisected_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = run_chaos(dir.path(), "slow:100", 100_000, "{ deadline: 20ms }");
    let lowered: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin call size lowered"))
        .collect();
    assert!(!lowered.is_empty(), "no adjustment logged:\n{log}");
    assert!(
        lowered[0].contains("plugin=\"chaos\"") || lowered[0].contains("plugin=chaos"),
        "{}",
        lowered[0]
    );
    assert!(lowered[0].contains("sha256:"), "no digest: {}", lowered[0]);
    assert!(
        !log.contains("splitting its events"),
        "a batch was bisected:\n{log}"
    );
}

/// 4 KiB leaked per event: an instance passes the recycling threshold (48 of 64 MiB) every
/// dozen calls and would hit the cap soon after; it is replaced first, every time.
#[test]
fn a_leaking_plugin_is_recycled_before_it_hits_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let log = run_chaos(dir.path(), "leak:4096", 60_000, "{ memory: 64MiB }");
    let recycled = log
        .lines()
        .filter(|l| l.contains("plugin instance recycled"))
        .collect::<Vec<_>>();
    assert!(!recycled.is_empty(), "never recycled:\n{log}");
    assert!(
        recycled[0].contains("memory passed the recycling threshold"),
        "{}",
        recycled[0]
    );
    assert!(
        !log.contains("hit its memory limit"),
        "the cap was hit:\n{log}"
    );
}

/// With recycling after N calls, an instance is replaced on schedule whatever its memory.
#[test]
fn an_instance_is_recycled_after_its_number_of_calls() {
    let dir = tempfile::tempdir().unwrap();
    let log = run_chaos(dir.path(), "ok", 20_000, "{ recycle_after_calls: 5 }");
    assert!(
        log.contains("plugin instance recycled (it reached its number of calls)"),
        "{log}"
    );
}

/// A plugin hung on every event: calls are sized down to one event, and each would take a
/// deadline; the batch's failure budget still bounds the calls, and every event is
/// dead-lettered with the reason, the last ones together once the budget is spent.
#[test]
fn a_plugin_hung_on_every_event_costs_a_bounded_number_of_calls() {
    use sluice_core::{event::Event, interceptor::Interceptor};
    let metrics = sluice_core::metrics::Metrics::new();
    let slot = sluice_wasm::slot::PluginSlot::load(
        "chaos",
        dist("chaos"),
        &serde_json::json!({}),
        None,
        Some(std::time::Duration::from_millis(5)),
        metrics.plugin("chaos"),
    )
    .unwrap();
    let mut chain = sluice_wasm::interceptor::WasmInterceptor::new(slot.clone()).unwrap();
    for round in 0..2 {
        let mut batch: Vec<Event> = (0..1000).map(|_| Event::new("loop")).collect();
        let mut rejected = Vec::new();
        chain.intercept(&mut batch, &mut rejected).unwrap();
        assert!(batch.is_empty(), "round {round}: nothing survives");
        assert_eq!(
            rejected.len(),
            1000,
            "round {round}: every event dead-lettered"
        );
        assert!(
            rejected
                .last()
                .unwrap()
                .reason
                .contains("failure budget for this batch spent"),
            "{}",
            rejected.last().unwrap().reason
        );
    }
    // 2·log2(1000)+8 = 28 failures and one last call per batch, not one per event.
    let calls = slot.describe()["calls"].as_u64().unwrap();
    assert!(calls <= 2 * 30, "{calls} calls for two hopeless batches");
}
