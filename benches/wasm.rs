//! Wasm interceptor cost: generator → `enrich` plugin → memory → null, against the same logic
//! as a native interceptor (`static`), through the real agent on one thread.
//!
//! 256-byte bodies with 2 headers; the interceptor adds a third. Batch sizes 1, 64, 256, 1024.
//! Also reports cold load (compile) time, cached load time and swap time. Needs
//! `plugins/dist/enrich.wasm` (`scripts/build-plugins`). Pin it: `taskset -c 1 cargo bench
//! --bench wasm`. Under `cargo test` it runs a tiny smoke version.

use std::{path::Path, time::Instant};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn pipeline(events: u64, batch: usize, wasm: bool, plugin: &Path) -> String {
    let interceptor = if wasm {
        "enrich".to_owned()
    } else {
        "{ type: static, key: region, value: eu, preserve_existing: false }".to_owned()
    };
    format!(
        "plugins:\n  enrich: {{ path: '{}', config: {{ headers: {{ region: eu }} }} }}\n\
         channels:\n  mem: {{ type: memory, capacity: {cap} }}\n\
         sources:\n  gen: {{ type: generator, count: {events}, body_size: 256, batch_size: {batch}, headers: {{ host: web-1, app: shop }}, channels: [mem], interceptors: [{interceptor}] }}\n\
         sinks:\n  out: {{ type: null, channel: mem, batch_size: {batch} }}\n",
        plugin.display(),
        cap = (batch * 20).max(1000)
    )
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/enrich.wasm");
    if !plugin.exists() {
        eprintln!(
            "skipping: {} missing (run scripts/build-plugins)",
            plugin.display()
        );
        return;
    }
    // One worker thread: the figure is per core. (Multi-threaded flavour, because plugin calls
    // step out of the async context with `block_in_place`.)
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 2_000_000 } else { 5_000 });

    // Load and swap times.
    let bytes = std::fs::read(&plugin).unwrap();
    let cache = tempfile::tempdir().unwrap();
    // SAFETY (env): set before any plugin engine exists in this process.
    unsafe { std::env::set_var("SLUICE_CACHE_DIR", cache.path()) };
    let metrics = sluice_core::metrics::Metrics::new();
    let t0 = Instant::now();
    let slot = sluice_wasm::slot::PluginSlot::load(
        "enrich",
        plugin.clone(),
        &serde_json::json!({}),
        None,
        None,
        metrics.plugin("enrich"),
    )
    .unwrap();
    let cold = t0.elapsed();
    let t0 = Instant::now();
    let _again = sluice_wasm::slot::PluginSlot::load(
        "enrich",
        plugin.clone(),
        &serde_json::json!({}),
        None,
        None,
        metrics.plugin("enrich"),
    )
    .unwrap();
    let cached = t0.elapsed();
    let copy = cache.path().join("enrich.wasm");
    // Swap between two real versions: the same component with an extra custom section.
    let mut v2 = bytes.clone();
    v2.extend_from_slice(&[0x00, 0x04, 0x01, b'x', b'y', b'z']);
    std::fs::write(&copy, &bytes).unwrap();
    let swap_slot = sluice_wasm::slot::PluginSlot::load(
        "swap",
        copy.clone(),
        &serde_json::json!({}),
        None,
        None,
        metrics.plugin("swap"),
    )
    .unwrap();
    std::fs::write(&copy, &v2).unwrap();
    let t0 = Instant::now();
    let first_swap = swap_slot.reload().unwrap();
    let swap_cold = t0.elapsed();
    std::fs::write(&copy, &bytes).unwrap();
    let t0 = Instant::now();
    swap_slot.reload().unwrap();
    let swap_cached = t0.elapsed();
    println!(
        "enrich.wasm ({} KiB): cold load {cold:.1?}, cached load {cached:.2?}; swap to a new version {swap_cold:.1?} ({first_swap:?}), swap to a compiled one {swap_cached:.2?}",
        bytes.len() / 1024
    );
    drop(slot);

    println!(
        "pipeline: generator -> interceptor -> memory -> null, 256-byte bodies + 2 headers, {events} events, one thread"
    );
    // SLUICE_BENCH_BATCHES=256 (comma-separated) runs only those sizes, e.g. under `perf`.
    let batches: Vec<usize> = std::env::var("SLUICE_BENCH_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 64, 256, 1024]);
    // SLUICE_BENCH_ONLY_WASM=1 skips the native runs (to profile the Wasm path alone).
    let only_wasm = std::env::var_os("SLUICE_BENCH_ONLY_WASM").is_some();
    for batch in batches {
        let n = if batch == 1 { events / 10 } else { events };
        let mut row = Vec::new();
        for wasm in [false, true] {
            if only_wasm && !wasm {
                row.push((f64::NAN, f64::NAN));
                continue;
            }
            let text = pipeline(n, batch, wasm, &plugin);
            let p = sluice_core::config::load_str(
                Path::new("bench.yaml"),
                &text,
                &|_| None,
                sluice::registry(),
            )
            .unwrap();
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            let report = rt.block_on(sluice::app::run(p)).unwrap();
            let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
            assert_eq!(report.sinks[0].1, n, "every event delivered");
            row.push((n as f64 / wall, cpu / n as f64 * 1e6));
        }
        println!(
            "  batch {batch:>4}: native {:>9.0} ev/s ({:.3} CPU-s/M) | wasm {:>9.0} ev/s ({:.3} CPU-s/M) | wasm/native {:.2}",
            row[0].0,
            row[0].1,
            row[1].0,
            row[1].1,
            row[1].0 / row[0].0
        );
    }
}
