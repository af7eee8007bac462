//! `sluice plugin push|pull|inspect|new|build|test`: the plugin author's and operator's tools.
//!
//! Registry commands print the one value a script wants on stdout (a digest, a path) and
//! everything for people on stderr.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use clap::{Subcommand, ValueEnum};

use sluice_core::event::codec::{Codec as _, CodecName, decode_line, encode_into};
#[cfg(feature = "oci")]
use sluice_wasm::oci::{self, OciRef, Options, cache::Cache, inspect::inspect};
use sluice_wasm::{
    World,
    codec::WasmCodec,
    interceptor::WasmInterceptor,
    selector::WasmSelector,
    slot::PluginSlot,
    template::{Kind, Lang},
};

use crate::cli::EXIT_RUNTIME;

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Validate a plugin component and push it to an OCI registry (CNCF Wasm layout); prints
    /// the manifest digest to pin with `oci://registry/repo@<digest>`.
    #[cfg(feature = "oci")]
    Push {
        /// The component (`.wasm`).
        file: PathBuf,
        /// `registry/repo:tag` (an `oci://` prefix is accepted).
        reference: String,
        /// `org.opencontainers.image.source` annotation (where the code lives).
        #[arg(long)]
        source: Option<String>,
        /// `org.opencontainers.image.version` annotation.
        #[arg(long = "version-label", value_name = "VERSION")]
        version_label: Option<String>,
        /// Another manifest annotation, `key=value`. Repeatable.
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotations: Vec<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Pull a plugin (verified, and kept in the offline cache) and write the component.
    #[cfg(feature = "oci")]
    Pull {
        /// `registry/repo:tag` or `registry/repo@sha256:<digest>`.
        reference: String,
        /// Where to write it (default: `<repo name>.wasm`).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Describe a plugin: world, exports, imports, WIT version, size, digests, annotations.
    #[cfg(feature = "oci")]
    Inspect {
        /// A `.wasm` file, or a registry reference.
        target: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Create a ready-to-build plugin project (Rust, Python or JavaScript) using the guest
    /// SDK of its language, with its toolchain pinned, a unit test and a README.
    New {
        /// The plugin's (and its directory's) name.
        name: String,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// Parent directory (default: the current one).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin project (its language told by its files) into `dist/<name>.wasm`,
    /// installing its pinned toolchain the first time; prints the component's world, size
    /// and digest (and its path on stdout).
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin on sample events (NDJSON, `{"headers":{..},"body":".."}` per line) and
    /// print what it does with each, as JSON lines.
    Test {
        file: PathBuf,
        /// Events; `-` for stdin.
        #[arg(long)]
        input: PathBuf,
        /// The plugin's `config` as a JSON object.
        #[arg(long, default_value = "{}")]
        config: String,
        /// For a selector: the channel names it is given.
        #[arg(long, value_delimiter = ',', default_value = "a,b")]
        channels: Vec<String>,
        /// For a serde plugin: `decode` each line's body (default), or `encode` all events.
        #[arg(long, value_enum, default_value = "decode")]
        serde: SerdeMode,
        /// For decode: the content type passed to the plugin.
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
    },
}

#[cfg(feature = "oci")]
#[derive(clap::Args, Debug)]
pub struct NetArgs {
    /// Reach this registry (`host` or `host:port`) over plain HTTP. Loopback registries and
    /// hosts in SLUICE_INSECURE_REGISTRIES need not be listed.
    #[arg(long = "insecure", value_name = "REGISTRY")]
    insecure: Vec<String>,
}

#[cfg(feature = "oci")]
impl NetArgs {
    fn options(&self) -> Options {
        Options {
            insecure: self.insecure.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SerdeMode {
    Decode,
    Encode,
}

pub fn run(cmd: PluginCommand) -> ExitCode {
    let result = match cmd {
        #[cfg(feature = "oci")]
        PluginCommand::Push {
            file,
            reference,
            source,
            version_label,
            annotations,
            net,
        } => push(
            &file,
            &reference,
            source,
            version_label,
            &annotations,
            &net.options(),
        ),
        #[cfg(feature = "oci")]
        PluginCommand::Pull {
            reference,
            output,
            net,
        } => pull(&reference, output, &net.options()),
        #[cfg(feature = "oci")]
        PluginCommand::Inspect { target, json, net } => show(&target, json, &net.options()),
        PluginCommand::New {
            name,
            kind,
            lang,
            dir,
        } => sluice_wasm::template::create(&dir, &name, kind, lang).map(|path| {
            println!("{}", path.display());
            eprintln!(
                "next: cd {} && sluice plugin build (see its README.md)",
                path.display()
            );
        }),
        PluginCommand::Build { dir } => {
            super::plugin_build::build(&dir).map(|path| println!("{}", path.display()))
        }
        PluginCommand::Test {
            file,
            input,
            config,
            channels,
            serde,
            content_type,
        } => test(&file, &input, &config, channels, serde, &content_type),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

#[cfg(feature = "oci")]
fn parse_ref(s: &str) -> Result<OciRef, String> {
    OciRef::parse(s).map_err(|e| e.to_string())
}

#[cfg(feature = "oci")]
fn push(
    file: &Path,
    reference: &str,
    source: Option<String>,
    version: Option<String>,
    extra: &[String],
    opts: &Options,
) -> Result<(), String> {
    let r = parse_ref(reference)?;
    if r.digest.is_some() {
        return Err(format!(
            "push to a tag, not a digest ({reference}): the digest is the result"
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let info = inspect(&bytes).map_err(|e| format!("{} is not pushed: {e}", file.display()))?;
    let mut annotations = std::collections::BTreeMap::new();
    if let Some(name) = file.file_name().and_then(|n| n.to_str()) {
        annotations.insert("org.opencontainers.image.title".into(), name.to_owned());
    }
    if let Some(s) = source {
        annotations.insert("org.opencontainers.image.source".into(), s);
    }
    if let Some(v) = version {
        annotations.insert("org.opencontainers.image.version".into(), v);
    }
    for a in extra {
        let (k, v) = a
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("--annotation {a}: expected key=value"))?;
        annotations.insert(k.to_owned(), v.to_owned());
    }
    let digest = oci::block_on(oci::client::push(&r, bytes, &info, annotations, opts))
        .map_err(|e| e.to_string())?;
    eprintln!(
        "pushed {} ({} component, {} bytes) to {r}\n  pin it as oci://{}",
        file.display(),
        info.world,
        info.size,
        r.pinned(&digest)
    );
    println!("{digest}");
    Ok(())
}

#[cfg(feature = "oci")]
fn pull(reference: &str, output: Option<PathBuf>, opts: &Options) -> Result<(), String> {
    let r = parse_ref(reference)?;
    let cache = Cache::open_default().map_err(|e| e.to_string())?;
    let fetched =
        oci::block_on(oci::client::fetch(&r, &cache, opts, false)).map_err(|e| e.to_string())?;
    let out = output.unwrap_or_else(|| {
        let stem = r.repository.rsplit('/').next().unwrap_or("plugin");
        PathBuf::from(format!("{stem}.wasm"))
    });
    std::fs::copy(&fetched.path, &out)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("pulled oci://{} -> {}", fetched.pinned, out.display());
    println!("{}", fetched.manifest_digest);
    Ok(())
}

#[cfg(feature = "oci")]
fn show(target: &str, json: bool, opts: &Options) -> Result<(), String> {
    let path = Path::new(target);
    let local = path.exists() || (oci::path_ref(path).is_none() && !looks_remote(target));
    let (bytes, registry) = if local {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {target}: {e}"))?;
        (bytes, None)
    } else {
        let r = parse_ref(target)?;
        let cache = Cache::open_default().map_err(|e| e.to_string())?;
        let fetched =
            oci::block_on(oci::client::fetch(&r, &cache, opts, true)).map_err(|e| e.to_string())?;
        let bytes = cache
            .get(&fetched.layer_digest)
            .map_err(|e| e.to_string())?
            .ok_or("the pulled component vanished from the cache")?;
        let config = oci::client::cached_config(&fetched, &cache);
        (bytes, Some((fetched, config)))
    };
    let info = inspect(&bytes).map_err(|e| e.to_string())?;
    let mut doc = serde_json::to_value(&info).map_err(|e| e.to_string())?;
    if let Some((f, config)) = &registry {
        doc["reference"] = format!("{}", f.pinned).into();
        doc["manifest_digest"] = f.manifest_digest.clone().into();
        doc["annotations"] = serde_json::to_value(&f.manifest.annotations).unwrap_or_default();
        doc["config_media_type"] = f.manifest.config.media_type.clone().into();
        doc["config"] = config.clone().unwrap_or_default();
    }
    if json {
        println!("{doc}");
        return Ok(());
    }
    println!("world        {}", info.world);
    println!(
        "wit          {}",
        info.wit_version.as_deref().map_or(
            "(imports no sluice:plugin interface)".to_owned(),
            |v| format!("sluice:plugin@{v}")
        )
    );
    println!("size         {} bytes", info.size);
    println!("digest       {}", info.digest);
    if let Some((f, _)) = &registry {
        println!("manifest     {}", f.manifest_digest);
        println!("reference    oci://{}", f.pinned);
        for (k, v) in f.manifest.annotations.iter().flatten() {
            println!("annotation   {k}={v}");
        }
    }
    for e in &info.exports {
        println!("export       {e}");
    }
    for i in &info.imports {
        println!("import       {i}");
    }
    Ok(())
}

#[cfg(feature = "oci")]
/// A target that is not an existing file but parses as a registry reference.
fn looks_remote(target: &str) -> bool {
    OciRef::parse(target).is_ok()
}

fn test(
    file: &Path,
    input: &Path,
    config: &str,
    channels: Vec<String>,
    serde: SerdeMode,
    content_type: &str,
) -> Result<(), String> {
    let config: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("--config is not JSON: {e}"))?;
    let text = if input == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string())?
    } else {
        std::fs::read_to_string(input)
            .map_err(|e| format!("cannot read {}: {e}", input.display()))?
    };
    let mut events = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let e = decode_line(CodecName::Ndjson, line.as_bytes())
            .map_err(|e| format!("{} line {}: {e}", input.display(), i + 1))?;
        events.push(e);
    }
    let metrics = sluice_core::metrics::Metrics::new();
    let slot: Arc<PluginSlot> = PluginSlot::load(
        "test",
        file.to_owned(),
        &config,
        None,
        None,
        metrics.plugin("test"),
    )
    .map_err(|e| e.to_string())?;
    let ndjson = |e: &sluice_core::event::Event| -> serde_json::Value {
        let mut out = Vec::new();
        encode_into(CodecName::Ndjson, e, &mut out);
        serde_json::from_slice(&out).unwrap_or_default()
    };
    let emit = |v: serde_json::Value| println!("{v}");
    match slot.world() {
        w if w.is_interceptor() => {
            use sluice_core::interceptor::Interceptor as _;
            let mut ic = WasmInterceptor::new(slot).map_err(|e| e.to_string())?;
            for (i, e) in events.into_iter().enumerate() {
                let mut batch = vec![e];
                let mut rejected = Vec::new();
                let v = match ic.intercept(&mut batch, &mut rejected) {
                    Err(e) => {
                        serde_json::json!({"input": i, "verdict": "retry", "reason": e.to_string()})
                    }
                    Ok(()) if !rejected.is_empty() => serde_json::json!({
                        "input": i, "verdict": "reject", "reason": rejected[0].reason,
                    }),
                    Ok(()) => {
                        let verdict = match batch.len() {
                            0 => "drop",
                            1 => "keep",
                            _ => "split",
                        };
                        let out: Vec<_> = batch.iter().map(ndjson).collect();
                        serde_json::json!({"input": i, "verdict": verdict, "events": out})
                    }
                };
                emit(v);
            }
        }
        World::Serde => {
            let mut codec = WasmCodec::new(slot).map_err(|e| e.to_string())?;
            match serde {
                SerdeMode::Decode => {
                    for (i, e) in events.iter().enumerate() {
                        emit(match codec.decode_with_type(&e.body, content_type) {
                            Ok(out) => serde_json::json!({
                                "input": i, "events": out.iter().map(ndjson).collect::<Vec<_>>(),
                            }),
                            Err(why) => serde_json::json!({"input": i, "error": why}),
                        });
                    }
                }
                SerdeMode::Encode => emit(match encode_all(&mut codec, &events) {
                    Ok(bytes) => serde_json::json!({
                        "payload": String::from_utf8_lossy(&bytes),
                    }),
                    Err(why) => serde_json::json!({"error": why}),
                }),
            }
        }
        _ => {
            let mut sel = WasmSelector::new(slot, channels.clone()).map_err(|e| e.to_string())?;
            for (i, e) in events.iter().enumerate() {
                emit(match sel.routes(std::slice::from_ref(e)) {
                    Ok(routes) => {
                        let names = |ix: &[u32]| -> Vec<String> {
                            ix.iter()
                                .map(|&n| {
                                    channels
                                        .get(n as usize)
                                        .cloned()
                                        .unwrap_or_else(|| format!("#{n}"))
                                })
                                .collect()
                        };
                        let r = &routes[0];
                        serde_json::json!({
                            "input": i, "required": names(r.required.as_slice()),
                            "optional": names(r.optional.as_slice()),
                        })
                    }
                    Err(f) => serde_json::json!({"input": i, "error": f.to_string()}),
                });
            }
        }
    }
    Ok(())
}

fn encode_all(
    codec: &mut WasmCodec,
    events: &[sluice_core::event::Event],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    codec.encode(events, &mut out)?;
    Ok(out)
}
