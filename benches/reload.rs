//! Live reload under load, the real `sluice` binary: path A (generator at 20,000 events/s in
//! batches of 20 → memory → file) never changes while path B's sink is replaced by SIGHUP
//! after SIGHUP (its file name changes each time).
//!
//! Reports (1) the longest gap between two growths of path A's file, first with no reload and
//! then around each reload — an unchanged sink must not notice a reload of another — and
//! (2) the time from SIGHUP until path B's new sink has written its first events. The file
//! is watched by polling its length every 100 µs, so gaps below that are not resolved.
//! Two layouts: both paths in one pipeline file, and each in its own pipeline of one agent
//! (`-p a.yaml -p b.yaml`; SIGHUP reloads both, only b changes).
//! `SLUICE_BENCH_RELOADS` (default 20; 3 under `cargo test`). Run with
//! `cargo bench --bench reload`.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

#[path = "common/mod.rs"]
mod common;

use common::env_or;

/// Path A's part of a pipeline file, and path B's in `generation`.
fn parts(dir: &Path, generation: usize) -> [(&'static str, String, String, String); 2] {
    let d = dir.display();
    [
        (
            "a",
            "  a: { type: memory, capacity: 100000 }\n".to_owned(),
            "  gen_a: { type: generator, rate: 20000, batch_size: 20, channels: [a] }\n".to_owned(),
            format!(
                "  out_a: {{ type: file, channel: a, path: '{d}/path-a.out', batch_size: 20 }}\n"
            ),
        ),
        (
            "b",
            "  b: { type: memory, capacity: 100000 }\n".to_owned(),
            "  gen_b: { type: generator, rate: 20000, batch_size: 20, channels: [b] }\n".to_owned(),
            format!(
                "  out_b: {{ type: file, channel: b, path: '{d}/path-b-{generation}.out', batch_size: 20 }}\n"
            ),
        ),
    ]
}

/// Writes the pipeline files of `generation`: `p.yaml` with both paths, or `a.yaml` and
/// `b.yaml` with one each.
fn write_pipelines(dir: &Path, generation: usize, split: bool) {
    let file = |parts: &[&(&str, String, String, String)]| {
        let mut s = String::from("channels:\n");
        parts.iter().for_each(|p| s += &p.1);
        s += "sources:\n";
        parts.iter().for_each(|p| s += &p.2);
        s += "sinks:\n";
        parts.iter().for_each(|p| s += &p.3);
        s
    };
    let [a, b] = parts(dir, generation);
    if split {
        std::fs::write(dir.join("a.yaml"), file(&[&a])).unwrap();
        std::fs::write(dir.join("b.yaml"), file(&[&b])).unwrap();
    } else {
        std::fs::write(dir.join("p.yaml"), file(&[&a, &b])).unwrap();
    }
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Polls `file` until `until`; the longest time its length stayed the same.
fn longest_gap(file: &Path, until: Instant) -> Duration {
    let (mut last_len, mut last_change, mut worst) = (len(file), Instant::now(), Duration::ZERO);
    while Instant::now() < until {
        let l = len(file);
        let now = Instant::now();
        if l != last_len {
            worst = worst.max(now - last_change);
            last_len = l;
            last_change = now;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    worst.max(Instant::now() - last_change)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let reloads: usize = env_or("SLUICE_BENCH_RELOADS", if benching { 20 } else { 3 });
    for split in [false, true] {
        let (baseline, mut gaps, mut applied) = scenario(reloads, split);
        gaps.sort();
        applied.sort();
        let median = |v: &[Duration]| v[v.len() / 2];
        let layout = if split {
            "A and B in two pipelines of one agent"
        } else {
            "A and B in one pipeline"
        };
        println!(
            "reload, {layout}: {reloads} SIGHUP reloads replacing path B's sink while path A (20,000 ev/s, batches of 20) runs on"
        );
        println!(
            "  path A, longest gap between writes: no reload {baseline:.2?}; around a reload median {:.2?}, max {:.2?}",
            median(&gaps),
            gaps[gaps.len() - 1]
        );
        println!(
            "  SIGHUP -> new sink's first write: median {:.2?}, max {:.2?}",
            median(&applied),
            applied[applied.len() - 1]
        );
    }
}

/// One run: path A's longest gap without reloads, then around each reload, and the time from
/// each SIGHUP to path B's first write.
fn scenario(reloads: usize, split: bool) -> (Duration, Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pipelines(d, 0, split);
    let mut cmd = if split {
        let mut c = common::agent(d, "a", &std::fs::read_to_string(d.join("a.yaml")).unwrap());
        c.arg("-p").arg(d.join("b.yaml"));
        c
    } else {
        common::agent(d, "p", &std::fs::read_to_string(d.join("p.yaml")).unwrap())
    };
    let log = if split { "a" } else { "p" };
    let mut agent = cmd.arg("--no-watch").spawn().expect("start sluice");
    let a = d.join("path-a.out");
    let deadline = Instant::now() + Duration::from_secs(30);
    while len(&a) == 0 {
        assert!(Instant::now() < deadline, "{}", common::agent_log(d, log));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let baseline = longest_gap(&a, Instant::now() + Duration::from_secs(2));

    let (mut gaps, mut applied) = (Vec::new(), Vec::new());
    for generation in 1..=reloads {
        write_pipelines(d, generation, split);
        let b = d.join(format!("path-b-{generation}.out"));
        let hup = Instant::now();
        assert!(
            Command::new("kill")
                .args(["-HUP", &agent.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        // Path A is watched while path B is replaced; B's first write is timed on the side.
        let mut first_write = None;
        let (mut last_len, mut last_change, mut worst) = (len(&a), hup, Duration::ZERO);
        let until = hup + Duration::from_millis(500);
        while Instant::now() < until {
            let now = Instant::now();
            let l = len(&a);
            if l != last_len {
                worst = worst.max(now - last_change);
                last_len = l;
                last_change = now;
            }
            if first_write.is_none() && len(&b) > 0 {
                first_write = Some(now - hup);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        gaps.push(worst);
        applied.push(first_write.unwrap_or_else(|| {
            panic!(
                "reload {generation} not applied in 500 ms:\n{}",
                common::agent_log(d, log)
            )
        }));
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    (baseline, gaps, applied)
}
