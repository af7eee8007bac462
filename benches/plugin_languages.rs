//! The template interceptor (`sluice plugin new --kind interceptor`: drop `level=DEBUG`, set a
//! header on the rest — the filter Fluent Bit's own Wasm benchmark runs) built in each
//! language, against the same filter from built-ins, through the real agent on one thread:
//! 200,000 events of 256 bytes (a quarter of them DEBUG) generator → interceptor → memory →
//! null. Prints events/s, CPU-s per million events, and what the host did about the plugin's
//! limits (call sizes, deadline hits, recycles, bisections).
//!
//! `SLUICE_BENCH_LANGS=rust,python,js` makes each project as `sluice plugin new` does (under
//! `~/.cache/sluice-bench-plugins`, kept between runs) and builds it as `sluice plugin build`
//! does, installing its toolchain the first time; `scripts/bench-plugin-languages` runs it
//! pinned to one core. Under `cargo test` (no languages given) it runs nothing.

use std::{path::Path, time::Instant};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A 256-byte log line at `level`.
fn line(level: &str) -> String {
    let mut l = format!(
        "ts=2026-12-06T10:00:00.000Z host=web-1 app=shop level={level} msg=\"GET /cart 200\" user=4711 took_ms=12 "
    );
    while l.len() < 256 {
        l.push('x');
    }
    l
}

/// The pipeline: a quarter of the events from a DEBUG generator, the rest from an INFO one,
/// both through `filter` (a plugin name, or built-ins when `None`).
fn pipeline(events: u64, filter: Option<&Path>) -> String {
    let (plugins, chain) = match filter {
        Some(p) => (
            format!("plugins:\n  filter: {{ path: '{}' }}\n", p.display()),
            "[filter]".to_owned(),
        ),
        None => (
            String::new(),
            "[{ type: regex_filter, regex: 'level=DEBUG', exclude: true }, \
             { type: static, key: processed-by, value: filter, preserve_existing: false }]"
                .to_owned(),
        ),
    };
    let source = |name: &str, count: u64, level: &str| {
        format!(
            "  {name}: {{ type: generator, count: {count}, body: '{}', batch_size: 1000, channels: [mem], interceptors: {chain} }}\n",
            line(level)
        )
    };
    format!(
        "{plugins}channels:\n  mem: {{ type: memory, capacity: 20000 }}\nsources:\n{}{}\
         sinks:\n  out: {{ type: null, channel: mem, batch_size: 1000 }}\n",
        source("info", events - events / 4, "INFO"),
        source("debug", events / 4, "DEBUG"),
    )
}

fn main() {
    let Ok(langs) = std::env::var("SLUICE_BENCH_LANGS") else {
        eprintln!("skipping: SLUICE_BENCH_LANGS not set (scripts/bench-plugin-languages sets it)");
        return;
    };
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap());
    let work = home.join(".cache/sluice-bench-plugins");
    // Not the target dir `cargo bench` holds locked while this runs.
    // SAFETY (env): set before any thread of this process reads the environment.
    unsafe {
        std::env::set_var(
            "CARGO_TARGET_DIR",
            home.join(".cache/sluice-plugins-target"),
        )
    };
    let mut rows: Vec<(String, Option<std::path::PathBuf>)> = vec![("built-ins".into(), None)];
    for lang in langs.split(',').filter(|l| !l.is_empty()) {
        use clap::ValueEnum;
        let l = sluice_wasm::template::Lang::from_str(lang, true).expect("rust, python or js");
        let name = format!("filter-{lang}");
        let project = work.join(&name);
        if !project.exists() {
            std::fs::create_dir_all(&work).unwrap();
            sluice_wasm::template::create(
                &work,
                &name,
                sluice_wasm::template::Kind::Interceptor,
                l,
            )
            .unwrap();
        }
        let wasm = sluice::cli::plugin_build::build(&project).unwrap();
        rows.push((lang.to_owned(), Some(wasm)));
    }
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // One worker thread: the figure is per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "generator -> filter (drop level=DEBUG, add a header) -> memory -> null: {events} events of 256 bytes, a quarter DEBUG, one thread, best of {runs}"
    );
    for (lang, path) in &rows {
        let text = pipeline(events, path.as_deref());
        let mut best = (0.0f64, f64::NAN);
        let mut adjustments = String::new();
        // A first, unmeasured run compiles the component into the cache.
        for run in 0..=runs {
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
            assert_eq!(
                report.sinks[0].1,
                events - events / 4,
                "{lang}: every INFO event delivered, every DEBUG one dropped"
            );
            if run > 0 && events as f64 / wall > best.0 {
                best = (events as f64 / wall, cpu / events as f64 * 1e6);
                adjustments = report
                    .metrics_text
                    .lines()
                    .filter(|l| {
                        (l.starts_with("sluice_plugin_adjustments_total")
                            || l.starts_with("sluice_plugin_traps_total"))
                            && !l.ends_with(" 0")
                    })
                    .map(|l| {
                        l.split_once("kind=\"")
                            .map_or(l, |(_, k)| k)
                            .replace("\"} ", "=")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
            }
        }
        println!(
            "  {lang:>9}: {:>9.0} ev/s, {:.3} CPU-s/M events | {}",
            best.0,
            best.1,
            if adjustments.is_empty() {
                "no adjustment".to_owned()
            } else {
                adjustments
            }
        );
    }
}
