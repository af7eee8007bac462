//! `sluice plugin new`: a ready-to-build plugin project, so a first plugin is one command and
//! one `cargo build` away.
//!
//! The project depends on the guest SDK by path when it can find this repository (the new
//! directory is inside a checkout, or the binary was built from one on this machine);
//! otherwise by a git URL the author fills in. It has its own `[workspace]` so creating it
//! inside another workspace does not break either.

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Interceptor,
    Serde,
    Selector,
}

/// Writes the project `dir/name`; returns its path. Refuses to overwrite anything.
pub fn create(dir: &Path, name: &str, kind: Kind) -> Result<PathBuf, String> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(format!(
            "`{name}`: a plugin name is lower-case letters, digits, `-` and `_`, starting with a letter"
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    std::fs::create_dir_all(root.join("src"))
        .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let abs = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
    let sdk = match find_sdk(&abs) {
        Some(p) => format!("sluice-guest = {{ path = \"{}\" }}", p.display()),
        None => "# The Sluice guest SDK: point this at your Sluice checkout's `guest-sdk`\n\
                 # (or its git repository).\n\
                 sluice-guest = { path = \"../sluice/guest-sdk\" }"
            .to_owned(),
    };
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("src/lib.rs", lib_rs(name, kind)),
        ("README.md", readme(name, kind)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (file, text) in files {
        let path = root.join(file);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(root)
}

/// The guest SDK of the Sluice checkout `project` is in, else of the one this binary was
/// built from, as a path relative to `project` when possible.
fn find_sdk(project: &Path) -> Option<PathBuf> {
    let is_sdk = |d: &Path| {
        std::fs::read_to_string(d.join("guest-sdk/Cargo.toml"))
            .is_ok_and(|t| t.contains("name = \"sluice-guest\""))
    };
    if let Some((up, _)) = project
        .ancestors()
        .enumerate()
        .skip(1)
        .find(|(_, d)| is_sdk(d))
    {
        let mut rel = PathBuf::new();
        for _ in 0..up {
            rel.push("..");
        }
        return Some(rel.join("guest-sdk"));
    }
    // This crate is runtime/wasm of the checkout it was built from.
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?;
    is_sdk(built_from).then(|| built_from.join("guest-sdk"))
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A plugin is a WebAssembly component: cargo build --release --target wasm32-wasip2
[lib]
crate-type = ["cdylib"]

[dependencies]
{sdk}
serde = {{ version = "1", features = ["derive"] }}

# Its own workspace, so it builds wherever it is created.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
"#
    )
}

fn lib_rs(name: &str, kind: Kind) -> String {
    let ident = name.replace('-', "_");
    match kind {
        Kind::Interceptor => format!(
            r#"//! `{name}`: a Sluice interceptor. It sees every event of every batch a source receives.

use serde::Deserialize;
use sluice_guest::{{Error, Event, Verdict}};

/// The plugin's `config:` mapping from the pipeline file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {{
    /// Header set on every event (default `{name}`).
    #[serde(default)]
    pub header: Option<String>,
}}

static HEADER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn setup(cfg: Config) -> Result<(), Error> {{
    let _ = HEADER.set(cfg.header.unwrap_or_else(|| "{name}".into()));
    Ok(())
}}

/// Keep (possibly changed), drop, reject (dead-letter, with a reason) or split each event.
#[sluice_guest::interceptor(init = setup)]
pub fn {ident}(mut ev: Event) -> Result<Verdict, Error> {{
    if ev.body().is_empty() {{
        return Ok(Verdict::Reject("empty body".into()));
    }}
    ev.set_header(HEADER.get().map_or("{name}", String::as_str), "seen");
    Ok(Verdict::Keep(ev))
}}
"#
        ),
        Kind::Serde => format!(
            r#"//! `{name}`: a Sluice serde plugin (a codec): payloads to events and back.

use sluice_guest::{{Codec, Error, Event}};

pub struct Lines;

/// One event per non-empty line; encoding writes one body per line.
#[sluice_guest::serde]
impl Codec for Lines {{
    fn decode(payload: &[u8], _content_type: &str) -> Result<Vec<Event>, Error> {{
        Ok(payload
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Event::new(l.to_vec()))
            .collect())
    }}

    fn encode(events: &[Event]) -> Result<Vec<u8>, Error> {{
        let mut out = Vec::new();
        for e in events {{
            out.extend_from_slice(e.body());
            out.push(b'\n');
        }}
        Ok(out)
    }}
}}
"#
        ),
        Kind::Selector => format!(
            r#"//! `{name}`: a Sluice selector. It chooses the channels (of the source's `channels`
//! list) each event goes to.

use serde::Deserialize;
use sluice_guest::{{Error, Event, Route}};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {{
    /// Events whose `priority` header is this go to the first channel (default `high`).
    #[serde(default)]
    pub priority: Option<String>,
}}

static STATE: std::sync::OnceLock<(String, u32)> = std::sync::OnceLock::new();

pub fn setup(channels: Vec<String>, cfg: Config) -> Result<(), Error> {{
    let last = u32::try_from(channels.len()).unwrap_or(1).saturating_sub(1);
    let _ = STATE.set((cfg.priority.unwrap_or_else(|| "high".into()), last));
    Ok(())
}}

/// One route per event: `priority` events to the first channel, the rest to the last.
#[sluice_guest::selector(init = setup)]
pub fn {ident}(events: &[Event]) -> Result<Vec<Route>, Error> {{
    let (priority, last) = STATE.get().ok_or_else(|| Error::new("not initialised"))?;
    Ok(events
        .iter()
        .map(|e| match e.header("priority") {{
            Some(p) if p == priority.as_str() => Route::to([0]),
            _ => Route::to([*last]),
        }})
        .collect())
}}
"#
        ),
    }
}

fn readme(name: &str, kind: Kind) -> String {
    let (kind_name, use_it) = match kind {
        Kind::Interceptor => ("interceptor", "interceptors: ["),
        Kind::Serde => ("serde", "codec: "),
        Kind::Selector => ("selector", "selector: { type: wasm, plugin: "),
    };
    let close = match kind {
        Kind::Interceptor => "]",
        Kind::Serde => "",
        Kind::Selector => " }",
    };
    format!(
        r#"# {name}

A Sluice `{kind_name}` plugin (a WebAssembly component built with the `sluice-guest` SDK).

```sh
rustup target add wasm32-wasip2          # once
cargo build --release --target wasm32-wasip2
sluice plugin inspect target/wasm32-wasip2/release/{ident}.wasm
sluice plugin test target/wasm32-wasip2/release/{ident}.wasm --input events.ndjson
sluice plugin push target/wasm32-wasip2/release/{ident}.wasm registry.example.com/plugins/{name}:0.1.0
```

`events.ndjson` holds one event per line: `{{"headers":{{"k":"v"}},"body":"text"}}`.
Then, in a pipeline:

```yaml
plugins:
  {name}: {{ path: "oci://registry.example.com/plugins/{name}@sha256:<digest printed by push>" }}
sources:
  in: {{ ..., {use_it}{name}{close} }}
```
"#,
        ident = name.replace('-', "_"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_written_for_each_kind_and_never_over_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind, mac) in [
            (
                "my-tagger",
                Kind::Interceptor,
                "#[sluice_guest::interceptor",
            ),
            ("my-codec", Kind::Serde, "#[sluice_guest::serde]"),
            ("my-router", Kind::Selector, "#[sluice_guest::selector"),
        ] {
            let root = create(dir.path(), name, kind).unwrap();
            let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
            assert!(cargo.contains("crate-type = [\"cdylib\"]"), "{cargo}");
            assert!(cargo.contains("sluice-guest = { path = "), "{cargo}");
            let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
            assert!(lib.contains(mac), "{lib}");
            let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
            assert!(readme.contains("--target wasm32-wasip2"), "{readme}");
            assert!(create(dir.path(), name, kind).is_err(), "no overwrite");
        }
        assert!(create(dir.path(), "Bad Name", Kind::Serde).is_err());
    }
}
