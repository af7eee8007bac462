//! Hostile guests written in WAT: they need no toolchain and do exactly one bad thing each.

use std::{path::PathBuf, time::Instant};

use super::{
    CallFailure, FailureKind, PluginError,
    interceptor::WasmInterceptor,
    sandbox::Limits,
    slot::{Bound, PluginSlot, Reloaded},
};
use sluice_core::{event::Event, interceptor::Interceptor, metrics::Metrics};
use wasmtime::ResourceLimiter;

use super::test_guests::{
    BAD_POINTER, DEEP_RECURSION, INFINITE_LOOP, MEMORY_BOMB, PANIC, WRONG_COUNT, packed_guest,
};

fn write(dir: &tempfile::TempDir, name: &str, wat: &str) -> PathBuf {
    let p = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&p, wat::parse_str(wat).expect("valid WAT")).unwrap();
    p
}

fn slot(path: PathBuf) -> Result<std::sync::Arc<PluginSlot>, PluginError> {
    slot_with(path, &Metrics::new())
}

fn slot_with(path: PathBuf, m: &Metrics) -> Result<std::sync::Arc<PluginSlot>, PluginError> {
    PluginSlot::load(
        "hostile",
        path,
        &serde_json::json!({}),
        Some(16 << 20),
        None,
        m.plugin("hostile"),
    )
}

/// One call of a packed guest that is expected to fail, and its failure.
fn failed_call(slot: &PluginSlot) -> CallFailure {
    let mut live = slot.instantiate(&[]).unwrap();
    match slot.call(&mut live, 1, |store, bound| match bound {
        Bound::Packed(b) => b.call_intercept_packed(store, &[0, 0, 0, 0]),
        _ => Err(wasmtime::Error::msg("not a packed interceptor")),
    }) {
        Ok(answer) => panic!("the call succeeded: {answer:?}"),
        Err(f) => f,
    }
}

fn events(n: usize) -> Vec<Event> {
    (0..n).map(|i| Event::new(format!("e{i}"))).collect()
}

#[test]
fn every_hostile_guest_is_contained_and_its_events_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body, kind) in [
        ("wrong_count", WRONG_COUNT, "bad_output"),
        ("loop", INFINITE_LOOP, "deadline"),
        ("memory", MEMORY_BOMB, "memory"),
        ("recursion", DEEP_RECURSION, "stack_overflow"),
        ("panic", PANIC, "trap"),
        ("bad_pointer", BAD_POINTER, "trap"),
    ] {
        let slot = slot(write(&dir, name, &packed_guest(body))).unwrap();
        let mut i = WasmInterceptor::new(slot.clone()).unwrap();
        let mut batch = events(4);
        let mut rejected = Vec::new();
        let t0 = Instant::now();
        i.intercept(&mut batch, &mut rejected).unwrap();
        assert!(
            batch.is_empty(),
            "{name}: nothing survives a guest that always fails"
        );
        assert_eq!(
            rejected.len(),
            4,
            "{name}: every event dead-lettered, none lost"
        );
        let bodies: Vec<_> = rejected.iter().map(|d| d.event.body.clone()).collect();
        assert_eq!(
            bodies,
            events(4).into_iter().map(|e| e.body).collect::<Vec<_>>(),
            "{name}: order and bodies kept"
        );
        assert!(
            rejected[0].reason.contains("plugin `hostile` (sha256:"),
            "{name}: {}",
            rejected[0].reason
        );
        assert!(
            rejected[0].reason.contains(&format!("({kind})")),
            "{name}: {}",
            rejected[0].reason
        );
        assert!(
            !slot.healthy(),
            "{name}: repeated failures mark the plugin unhealthy"
        );
        if name == "loop" {
            // 4 events bisect into 7 calls, each stopped by the 50 ms deadline.
            assert!(
                t0.elapsed().as_secs() < 5,
                "deadline enforced: {:?}",
                t0.elapsed()
            );
        }
    }
}

#[test]
fn forbidden_imports_and_non_plugins_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let sneaky = write(
        &dir,
        "sneaky",
        r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#,
    );
    let e = slot(sneaky).err().unwrap().to_string();
    assert!(e.contains("imports `wasi:sockets/tcp@0.2.0`"), "{e}");
    let evil = write(
        &dir,
        "evil",
        r#"(component (import "evil:host/steal" (func)))"#,
    );
    let e = slot(evil).err().unwrap().to_string();
    assert!(e.contains("imports `evil:host/steal`"), "{e}");
    let empty = write(&dir, "empty", "(component)");
    let e = slot(empty).err().unwrap().to_string();
    assert!(e.contains("not a Sluice plugin"), "{e}");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let e = slot(junk).err().unwrap().to_string();
    assert!(e.contains("not a loadable WebAssembly component"), "{e}");
}

#[test]
fn a_broken_new_version_leaves_the_old_one_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "p", &packed_guest(WRONG_COUNT));
    let slot = slot(path.clone()).unwrap();
    let v1 = slot.version();
    assert_eq!(slot.reload().unwrap(), Reloaded::Unchanged);
    std::fs::write(&path, b"garbage").unwrap();
    assert!(slot.reload().is_err());
    assert_eq!(slot.version(), v1, "refused version not published");
    std::fs::write(&path, wat::parse_str(packed_guest(PANIC)).unwrap()).unwrap();
    assert!(matches!(slot.reload().unwrap(), Reloaded::Swapped { .. }));
    assert_eq!(slot.version(), v1 + 1);
}

#[test]
fn a_memory_bomb_is_recognised_by_the_limiter_flag() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    let slot = slot_with(write(&dir, "bomb", &packed_guest(MEMORY_BOMB)), &m).unwrap();
    let f = failed_call(&slot);
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f}");
    assert!(f.to_string().ends_with("(memory)"), "{f}");
    let text = m.encode();
    assert!(
        text.lines()
            .any(|l| l.starts_with("sluice_plugin_traps_total{")
                && l.contains(r#"kind="memory""#)
                && l.ends_with(" 1")),
        "{text}"
    );
}

#[test]
fn an_error_that_only_mentions_memory_is_not_a_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let slot = slot(write(&dir, "pointer", &packed_guest(BAD_POINTER))).unwrap();
    let f = failed_call(&slot);
    assert!(f.message.contains("memory"), "the case being tested: {f}");
    assert_eq!(f.kind, FailureKind::Trap, "{f}");
    let e = wasmtime::Error::msg("forcing trap when growing memory to 1 bytes");
    assert_eq!(
        CallFailure::from_wasmtime(&e, false).kind,
        FailureKind::Trap
    );
    assert_eq!(
        CallFailure::from_wasmtime(&wasmtime::Error::msg("x"), true).kind,
        FailureKind::MemoryLimit
    );
}

#[test]
fn the_limiter_records_a_refused_growth_until_taken() {
    let mut l = Limits::new(1 << 20);
    assert!(l.memory_growing(0, 1 << 20, None).unwrap());
    assert!(!l.take_memory_refused(), "growth within the limit");
    assert!(l.memory_growing(1 << 20, 2 << 20, None).is_err(), "traps");
    assert!(l.take_memory_refused());
    assert!(!l.take_memory_refused(), "cleared once taken");
    assert!(
        l.memory_growing(0, 64 << 10, Some(0)).is_err(),
        "past the guest's own maximum"
    );
    assert!(l.take_memory_refused());
}

#[test]
fn failure_kinds_keep_their_metric_labels() {
    let labels: Vec<_> = [
        FailureKind::Trap,
        FailureKind::Deadline,
        FailureKind::MemoryLimit,
        FailureKind::StackOverflow,
        FailureKind::GuestError,
        FailureKind::BadOutput,
    ]
    .iter()
    .map(|k| k.as_str())
    .collect();
    assert_eq!(
        labels,
        [
            "trap",
            "deadline",
            "memory",
            "stack_overflow",
            "error",
            "bad_output"
        ]
    );
}
