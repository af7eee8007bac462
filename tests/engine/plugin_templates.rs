//! What a new plugin author does, in Python and in JavaScript: `sluice plugin new` for each
//! kind, `sluice plugin build` (which installs the pinned toolchain into the project from the
//! registries), then the three components in one running agent — the interceptor filtering
//! and tagging, the selector routing, the codec encoding a sink's output — and the codec
//! decoding through `sluice plugin test`. `print` and `console.log` in the plugins must reach
//! the agent's log. Each project's own unit tests (unittest, `node --test`, `cargo test`)
//! pass as generated.
//!
//! Needs `python3` (with venv) and `npm`; `scripts/test` installs them.

use std::path::{Path, PathBuf};

use crate::common::{json_lines, sluice, stderr};

/// `sluice plugin new` then `sluice plugin build`; returns the component.
fn new_and_build(dir: &Path, name: &str, kind: &str, lang: &str, world: &str) -> PathBuf {
    let o = sluice()
        .args([
            "plugin", "new", name, "--kind", kind, "--lang", lang, "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "new {name}: {}", stderr(&o));
    let project = dir.join(name);
    let o = sluice()
        .args(["plugin", "build"])
        .arg(&project)
        .env("CARGO_TARGET_DIR", plugins_target_dir())
        .output()
        .unwrap();
    let log = stderr(&o);
    assert!(o.status.success(), "build {name}: {log}");
    let built = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_eq!(built, project.join("dist").join(format!("{name}.wasm")));
    assert!(
        log.contains(&format!("world   sluice:plugin/{world}@0.1.0")),
        "{log}"
    );
    assert!(log.contains("digest  sha256:"), "{log}");
    // The project's own unit tests, in its language's runner, pass as generated.
    let (runner, args): (PathBuf, &[&str]) = match lang {
        "python" => (project.join(".venv/bin/python"), &["-m", "unittest", "-q"]),
        "js" => ("npm".into(), &["test", "--silent"]),
        _ => ("cargo".into(), &["test", "--quiet"]),
    };
    let o = std::process::Command::new(runner)
        .args(args)
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", plugins_target_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{name}'s own tests: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    built
}

/// A Rust plugin builds in the first-party plugins' target dir: not the one this test
/// binary's cargo holds locked, and warm after scripts/build-plugins.
fn plugins_target_dir() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sluice-plugins-target")
}

fn templates_run_in_the_agent(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let filter = new_and_build(d, "my-filter", "interceptor", lang, "packed-interceptor");
    let lines = new_and_build(d, "my-lines", "serde", lang, "serde");
    let selector_world = if lang == "python" {
        "route-selector"
    } else {
        "selector"
    };
    let router = new_and_build(d, "my-router", "selector", lang, selector_world);

    // The interceptor drops `level=DEBUG` and tags the rest; the selector sends
    // `priority: high` to its first channel and the rest to its last; the codec writes one
    // body per line. Deadlines well above the 50 ms default: this checks what the templates
    // do, and a JavaScript codec's call can take longer than that on a loaded machine.
    let p = d.join("pipeline.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  my-filter: {{ path: '{}', limits: {{ deadline: 5s }} }}\n  my-lines: {{ path: '{}', limits: {{ deadline: 5s }} }}\n  my-router: {{ path: '{}', limits: {{ deadline: 5s }} }}\n\
             channels:\n  high: {{ type: memory }}\n  rest: {{ type: memory }}\n\
             sources:\n  info: {{ type: generator, count: 3000, batch_size: 1000, body: 'level=INFO hello', cycle: {{ header: priority, values: [high, low, low] }}, channels: [high, rest], interceptors: [my-filter], selector: {{ type: wasm, plugin: my-router }} }}\n  \
             debug: {{ type: generator, count: 500, body: 'level=DEBUG noise', channels: [rest], interceptors: [my-filter] }}\n\
             sinks:\n  high_out: {{ type: file, channel: high, path: '{d}/high.txt', format: my-lines }}\n  \
             rest_out: {{ type: file, channel: rest, path: '{d}/rest.ndjson', format: ndjson }}\n",
            filter.display(),
            lines.display(),
            router.display(),
            d = d.display(),
        ),
    )
    .unwrap();
    let o = sluice().arg("-p").arg(&p).output().unwrap();
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("source  info: received 3000, accepted 3000, dropped 0, dead-lettered 0"),
        "{log}"
    );
    assert!(
        log.contains("source  debug: received 500, accepted 0, dropped 500, dead-lettered 0"),
        "{log}"
    );
    assert!(
        log.contains("sink    high_out: delivered 1000, dead-lettered 0"),
        "{log}"
    );
    let high = std::fs::read_to_string(d.join("high.txt")).unwrap();
    assert_eq!(high.lines().count(), 1000, "{high:.300}");
    assert!(high.lines().all(|l| l == "level=INFO hello"), "{high:.300}");
    let rest = json_lines(&d.join("rest.ndjson"));
    assert_eq!(rest.len(), 2000);
    assert!(
        rest.iter()
            .all(|e| e["headers"]["processed-by"] == "my-filter"
                && e["headers"]["priority"] == "low"),
        "{:?}",
        &rest[..2]
    );
    // The interceptor's `print`/`console.log` in init, tagged with the plugin's name.
    let ready = log
        .lines()
        .find(|l| l.contains("my-filter ready"))
        .unwrap_or_else(|| panic!("no print line from the plugin:\n{log}"));
    assert!(ready.contains("my-filter"), "{ready}");

    // The codec decodes too (one event per non-empty line).
    let input = d.join("payloads.ndjson");
    std::fs::write(&input, "{\"body\":\"a\\n\\nb\\nc\\n\"}\n").unwrap();
    let o = sluice()
        .args(["plugin", "test"])
        .arg(&lines)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for body in ["\"a\"", "\"b\"", "\"c\""] {
        assert!(out.contains(body), "{out}");
    }
}

#[test]
fn python_plugins_of_every_kind_build_from_the_templates_and_run_in_the_agent() {
    templates_run_in_the_agent("python");
}

#[test]
fn javascript_plugins_of_every_kind_build_from_the_templates_and_run_in_the_agent() {
    templates_run_in_the_agent("js");
}

#[test]
fn rust_plugins_of_every_kind_build_from_the_templates_and_run_in_the_agent() {
    templates_run_in_the_agent("rust");
}
