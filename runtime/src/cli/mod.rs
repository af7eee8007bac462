//! The command line: `sluice --pipeline p.yaml`, `sluice validate p.yaml`, `sluice graph
//! p.yaml`, `sluice test tests.yaml` ([`crate::pipeline_test`]), `sluice tap POINT` (live
//! events of a running agent), `sluice top`, `sluice channel inspect|fsck|purge <dir>` on a
//! durable channel's directory, `sluice dlq list|show|replay` on a durable DLQ, and
//! `sluice plugin push|pull|inspect|new|test` ([`plugin`]). The `channel` and `plugin`
//! commands exist when the build has the `rocksdb` and `wasm` features.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage (clap), 3 (`import-flume`) some items
//! not translated, 78 invalid configuration
//! (EX_CONFIG from sysexits.h), so scripts can tell a typo from an outage.

#[cfg(feature = "rocksdb")]
mod channel;
#[cfg(feature = "rocksdb")]
mod dlq;
pub mod import_flume;
#[cfg(feature = "wasm")]
pub mod plugin;
#[cfg(feature = "wasm")]
pub mod plugin_build;
#[cfg(feature = "cli-tools")]
mod tap;
#[cfg(feature = "cli-tools")]
mod top;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use sluice_core::{config, metrics::Metrics, topology};

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Streaming pipeline runtime: sources → transactional channels → sinks",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,

    /// Log level or tracing filter (e.g. `debug`, `sluice=trace`); RUST_LOG takes precedence.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Pipeline to run: a file, a URL, or a directory (each `*.yaml`/`*.yml` in it).
    /// Repeatable: each pipeline (named by its file's stem) has its own components, reloads
    /// and metrics (`component="<pipeline>/<name>"`), in one agent.
    #[arg(long, short = 'p', value_name = "FILE|URL|DIR")]
    pipeline: Vec<PathBuf>,

    /// Wasm plugin to load: `path.wasm` (named by its file stem), `name=path.wasm`, or an
    /// `oci://registry/repo:tag` (named by the repository's last part, or `name=oci://…`);
    /// overrides a plugin of the same name in the pipeline file. Repeatable. With several
    /// pipelines it replaces the plugin of that name wherever one is declared.
    #[arg(long = "plugin", value_name = "PLUGIN")]
    plugins: Vec<String>,

    /// Do not reload the pipeline when its file changes (SIGHUP and
    /// `POST /config/reload` still reload it).
    #[arg(long)]
    no_watch: bool,

    /// With a pipeline URL: how often it is fetched again (an unchanged file costs a 304).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    config_poll: std::time::Duration,

    /// With a pipeline URL: the SHA-256 (hex) its content must have.
    #[arg(long, value_name = "HEX")]
    config_sha256: Option<String>,

    /// With a pipeline URL: environment variable holding a bearer token for the server.
    #[arg(long, value_name = "NAME")]
    config_token_env: Option<String>,

    /// With a pipeline URL: where the last good copy is kept (default
    /// `$XDG_CACHE_HOME/sluice/config`, else `~/.cache/sluice/config`).
    #[arg(long, value_name = "DIR")]
    config_cache: Option<PathBuf>,

    /// Accept a plain `http://` pipeline URL from a non-loopback address.
    #[arg(long)]
    insecure: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a pipeline file and report every problem, without starting anything.
    Validate {
        /// Pipeline file to check.
        pipeline: PathBuf,
        /// A Wasm plugin, as for running (`path.wasm`, `name=path.wasm` or `oci://…`): it
        /// is loaded and checked with the pipeline. Repeatable.
        #[arg(long = "plugin", value_name = "PLUGIN")]
        plugins: Vec<String>,
    },
    /// Run a pipeline's unit tests: events injected at sources, conditions on what reaches
    /// channels, sinks and the DLQ (real interceptors and plugins; sinks captured).
    Test {
        /// Test files (YAML, each naming its `pipeline:`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Translate one agent of an Apache Flume configuration (`.properties`) into a Sluice
    /// pipeline, printed on stdout; what cannot be translated is listed on stderr with its
    /// line. Exit code 0: everything translated; 3: some items were left out; 78: nothing to
    /// translate (no such agent, or no component could be).
    ImportFlume {
        /// The Flume configuration file.
        properties: PathBuf,
        /// The agent's name (`-n` of `flume-ng agent`).
        #[arg(long, short = 'n', value_name = "NAME")]
        agent: String,
    },
    /// Print a pipeline's topology as Graphviz DOT (default) or Mermaid text.
    Graph {
        /// Pipeline file to draw.
        pipeline: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print live events passing a point of a running agent (through its admin server).
    #[cfg(feature = "cli-tools")]
    Tap(tap::TapArgs),
    /// A terminal dashboard of a running agent: rates, channel fill, DLQ, plugins.
    #[cfg(feature = "cli-tools")]
    Top(top::TopArgs),
    /// Look into a durable (rocksdb or spillable) channel's directory.
    #[cfg(feature = "rocksdb")]
    #[command(subcommand)]
    Channel(channel::ChannelCommand),
    /// Count, show and replay the dead letters of a durable DLQ channel.
    #[cfg(feature = "rocksdb")]
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Write, test, inspect and distribute Wasm plugins (OCI registries).
    #[cfg(feature = "wasm")]
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum GraphFormat {
    /// `sluice graph p.yaml | dot -Tsvg > p.svg`
    Dot,
    /// A `flowchart` for Markdown (GitHub, GitLab).
    Mermaid,
}

/// `--version`: the version and the optional features compiled in (built once per process,
/// hence leaked: clap wants a `'static` string).
fn version() -> &'static str {
    let features = crate::features();
    let text = format!(
        "{} (features: {})",
        env!("CARGO_PKG_VERSION"),
        if features.is_empty() {
            "none".to_owned()
        } else {
            features.join(", ")
        }
    );
    Box::leak(text.into_boxed_str())
}

pub fn main() -> ExitCode {
    let matches = Cli::command().version(version()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(&cli.log_level);
    match cli.command {
        Some(Command::Validate { pipeline, plugins }) => validate(&pipeline, &plugins),
        Some(Command::Graph { pipeline, format }) => graph(&pipeline, format),
        Some(Command::Test { files }) => unit_tests(&files),
        Some(Command::ImportFlume { properties, agent }) => import_flume(&properties, &agent),
        #[cfg(feature = "cli-tools")]
        Some(Command::Tap(args)) => tap::run(args),
        #[cfg(feature = "cli-tools")]
        Some(Command::Top(args)) => top::run(args),
        #[cfg(feature = "rocksdb")]
        Some(Command::Channel(cmd)) => channel::run(cmd),
        #[cfg(feature = "rocksdb")]
        Some(Command::Dlq(cmd)) => dlq::run(cmd),
        #[cfg(feature = "wasm")]
        Some(Command::Plugin(cmd)) => plugin::run(cmd),
        None if cli.run.pipeline.is_empty() => {
            eprintln!("error: --pipeline <FILE> is required (see `sluice --help`)");
            ExitCode::from(2)
        }
        None => run(&cli.run),
    }
}

fn init_logging(level: &str) {
    // lapin logs every broker-closed channel (e.g. a 404 while an exchange is missing) at
    // error level on its own; the RabbitMQ connectors log those outcomes once, with context.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{level},lapin=off")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

fn load(
    path: &std::path::Path,
    plugins: &[(String, PathBuf)],
) -> Result<config::Pipeline, ExitCode> {
    config::load_file_with_plugins(path, plugins, crate::registry()).map_err(|errors| {
        print_errors(path, &errors);
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Every error of a pipeline file, then how many.
fn print_errors(path: &std::path::Path, errors: &config::ConfigErrors) {
    eprintln!("{errors}");
    eprintln!("{}: {} error(s)", path.display(), errors.0.len());
}

fn validate(path: &std::path::Path, plugins: &[String]) -> ExitCode {
    let plugins = match plugin_flags(plugins) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let p = match load(path, &plugins) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // Building catches what only construction can (regexes, templates); nothing is started.
    let metrics = Metrics::new();
    match topology::check(&p, &metrics, crate::registry()) {
        Ok(_) => {
            println!(
                "{}: ok ({} sources, {} channels, {} sinks, {} sink groups)",
                path.display(),
                p.sources.len(),
                p.channels.len(),
                p.sinks.len(),
                p.sink_groups.len()
            );
            let paths = sluice_core::guarantee::paths(&p);
            if !paths.is_empty() {
                println!("what each path guarantees if the agent crashes:");
                for path in paths {
                    println!("  {path}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Runs every test of every file; prints one line per test and each failure under it.
fn unit_tests(files: &[PathBuf]) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        match rt.block_on(crate::pipeline_test::run_file(file)) {
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Ok(results) => {
                for (name, failures) in results {
                    if failures.is_empty() {
                        passed += 1;
                        println!("{}: {name} ... ok", file.display());
                    } else {
                        failed += 1;
                        println!("{}: {name} ... FAILED", file.display());
                        for f in failures {
                            println!("    {f}");
                        }
                    }
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

/// Exit code of `import-flume` when the YAML was written but some items were left out.
pub const EXIT_PARTIAL: u8 = 3;

fn import_flume(path: &std::path::Path, agent: &str) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let t = import_flume::translate(&text, agent);
    if t.components == 0 {
        let agents = import_flume::agents(&text);
        eprintln!(
            "error: {}: agent `{agent}` has no component that can be translated (agents in the file: {})",
            path.display(),
            if agents.is_empty() {
                "none".to_owned()
            } else {
                agents.join(", ")
            }
        );
        print_skipped(path, &t.skipped);
        return ExitCode::from(EXIT_CONFIG);
    }
    print!("{}", t.yaml);
    if t.skipped.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{}: {} item(s) left out of the translation:",
        path.display(),
        t.skipped.len()
    );
    print_skipped(path, &t.skipped);
    ExitCode::from(EXIT_PARTIAL)
}

/// `file:line: key: why`, one per item left out.
fn print_skipped(path: &std::path::Path, skipped: &[import_flume::Skipped]) {
    for s in skipped {
        eprintln!("  {}:{}: {}: {}", path.display(), s.line, s.key, s.why);
    }
}

fn graph(path: &std::path::Path, format: GraphFormat) -> ExitCode {
    let p = match load(path, &[]) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let g = sluice_core::graph::Graph::of(&p);
    let title = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("pipeline");
    print!(
        "{}",
        match format {
            GraphFormat::Dot => g.to_dot(title),
            GraphFormat::Mermaid => g.to_mermaid(),
        }
    );
    ExitCode::SUCCESS
}

/// Parses `--plugin path.wasm` (named by its file stem) and `--plugin name=path.wasm`.
/// Paths on the command line are relative to the working directory; an `oci://` reference
/// is kept as it is (named by its repository's last part).
fn plugin_flags(flags: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    flags
        .iter()
        .map(|flag| {
            #[cfg(feature = "wasm")]
            if let Some(named) = oci_flag(flag)? {
                return Ok(named);
            }
            let (name, path) = match flag.split_once('=') {
                Some((n, p)) if !n.is_empty() => (n.to_owned(), PathBuf::from(p)),
                _ => {
                    let path = PathBuf::from(flag);
                    let stem = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .filter(|s| !s.is_empty());
                    let name = stem.ok_or_else(|| {
                        format!("--plugin {flag}: cannot name a plugin from this path")
                    })?;
                    (name.to_owned(), path)
                }
            };
            let path = std::env::current_dir()
                .map(|d| d.join(&path))
                .unwrap_or(path);
            Ok((name, path))
        })
        .collect()
}

/// `--plugin oci://…` (named by the repository's last part) or `--plugin name=oci://…`.
#[cfg(feature = "wasm")]
fn oci_flag(flag: &str) -> Result<Option<(String, PathBuf)>, String> {
    use sluice_wasm::oci;
    if flag.starts_with(oci::SCHEME) {
        let r = oci::OciRef::parse(flag).map_err(|e| format!("--plugin {flag}: {e}"))?;
        let name = r.repository.rsplit('/').next().unwrap_or_default();
        return Ok(Some((name.to_owned(), PathBuf::from(flag))));
    }
    if let Some((n, r)) = flag
        .split_once('=')
        .filter(|(n, r)| !n.is_empty() && r.starts_with(oci::SCHEME))
    {
        oci::OciRef::parse(r).map_err(|e| format!("--plugin {flag}: {e}"))?;
        return Ok(Some((n.to_owned(), PathBuf::from(r))));
    }
    Ok(None)
}

/// The pipeline files `--pipeline` names (files and URLs as given, directories as the
/// `*.yaml`/`*.yml` files in them, sorted), and the directories (followed while running).
fn pipeline_paths(given: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for path in given {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let found = crate::app::pipeline_files(path)
            .map_err(|e| format!("--pipeline {}: {e}", path.display()))?;
        if found.is_empty() {
            return Err(format!(
                "--pipeline {}: the directory holds no *.yaml or *.yml file",
                path.display()
            ));
        }
        files.extend(found);
        dirs.push(path.clone());
    }
    let mut seen = std::collections::BTreeMap::new();
    for p in &files {
        let name = crate::app::pipeline_name(p);
        if let Some(other) = seen.insert(name.clone(), p.clone()) {
            return Err(format!(
                "two pipelines are named `{name}` ({} and {}); a pipeline is named by its file's stem",
                other.display(),
                p.display()
            ));
        }
    }
    Ok((files, dirs))
}

/// How the agent reads a pipeline file, at start and for a file that appears later in a
/// watched directory.
#[derive(Clone)]
struct Reader {
    plugins: Vec<(String, PathBuf)>,
    /// With several pipelines, `--plugin` replaces declared plugins only (it does not add
    /// one to every pipeline).
    several: bool,
    watch: bool,
}

impl Reader {
    /// The `--plugin` flags that apply to `file`.
    fn plugins_for(&self, file: &std::path::Path) -> Vec<(String, PathBuf)> {
        if !self.several {
            return self.plugins.clone();
        }
        let declared = config::declared_plugins(file);
        self.plugins
            .iter()
            .filter(|(n, _)| declared.contains(n))
            .cloned()
            .collect()
    }

    /// Reads `file` (the cached copy of `shown` when that is a URL) with the `--plugin` flags
    /// `extra` (see [`plugins_for`](Self::plugins_for)) and what reloads it.
    fn open(
        &self,
        shown: &std::path::Path,
        file: PathBuf,
        extra: Vec<(String, PathBuf)>,
        trigger: Option<crate::app::Trigger>,
    ) -> Result<(config::Pipeline, crate::app::Reloads), config::ConfigErrors> {
        let p = config::load_file_with_plugins(&file, &extra, crate::registry())?;
        let reloads = crate::app::Reloads {
            name: crate::app::pipeline_name(shown),
            source: shown.display().to_string(),
            reread: {
                let file = file.clone();
                std::sync::Arc::new(move || {
                    config::load_file_with_plugins(&file, &extra, crate::registry())
                })
            },
            watch: self.watch && trigger.is_none(),
            file,
            trigger,
        };
        Ok((p, reloads))
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let extra = match plugin_flags(&args.plugins) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (paths, dirs) = match pipeline_paths(&args.pipeline) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let several = paths.len() > 1 || !dirs.is_empty();
    let reader = Reader {
        plugins: extra.clone(),
        several,
        watch: !args.no_watch,
    };
    let mut list = Vec::new();
    let mut failed = false;
    let mut used = std::collections::BTreeSet::new();
    for path in &paths {
        // A URL is fetched into a cache file; that file is what runs and reloads.
        let (file, trigger) = match path.to_str().filter(|s| crate::remote_url(s)) {
            Some(url) => match fetched(&rt, url, args) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
            None => (path.to_owned(), None),
        };
        let extra = reader.plugins_for(&file);
        used.extend(extra.iter().map(|(n, _)| n.clone()));
        match reader.open(path, file, extra, trigger) {
            Ok((p, reloads)) => list.push((p, Some(reloads))),
            Err(errors) => {
                print_errors(path, &errors);
                failed = true;
            }
        }
    }
    if failed {
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some((n, _)) = extra.iter().find(|(n, _)| !used.contains(n)) {
        eprintln!("error: --plugin {n}: no pipeline declares a plugin named `{n}`");
        return ExitCode::from(EXIT_CONFIG);
    }
    let dirs = dirs
        .into_iter()
        .map(|dir| {
            let reader = reader.clone();
            crate::app::PipelineDir {
                dir,
                open: std::sync::Arc::new(move |file: &std::path::Path| {
                    reader.open(file, file.to_owned(), reader.plugins_for(file), None)
                }),
            }
        })
        .collect();
    match rt.block_on(crate::app::run_agent(list, dirs)) {
        Ok(reports) => {
            let mut ok = true;
            for (name, report) in &reports {
                if several {
                    eprintln!("pipeline {name}:");
                }
                eprint!("{}", report.render());
                ok &= report.ok();
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_RUNTIME)
            }
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Fetches a pipeline URL (falling back to the last good copy when the server cannot be
/// reached); returns the cached file and the poller that keeps it current.
#[cfg(feature = "http")]
fn fetched(
    rt: &tokio::runtime::Runtime,
    url: &str,
    args: &RunArgs,
) -> Result<(PathBuf, Option<crate::app::Trigger>), String> {
    let token = args
        .config_token_env
        .as_deref()
        .map(|n| std::env::var(n).map_err(|_| format!("--config-token-env: ${n} is not set")))
        .transpose()?;
    let cache = args.config_cache.clone().unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("sluice/config")
    });
    let remote = crate::remote::Remote::new(
        url,
        args.insecure,
        token,
        args.config_sha256.as_deref(),
        &cache,
    )?;
    if let Err(e) = rt.block_on(remote.fetch()) {
        if !remote.cache().exists() {
            return Err(format!("{e} (and there is no cached copy to run)"));
        }
        tracing::warn!(error = %e, cache = %remote.cache().display(), "cannot fetch the pipeline; running the last good copy");
    }
    let file = remote.cache().to_owned();
    let every = args.config_poll;
    let poll: crate::app::Trigger = Box::new(move |tx, stop| remote.poll(every, tx, stop));
    Ok((file, Some(poll)))
}

#[cfg(not(feature = "http"))]
fn fetched(
    _: &tokio::runtime::Runtime,
    url: &str,
    _: &RunArgs,
) -> Result<(PathBuf, Option<crate::app::Trigger>), String> {
    Err(format!(
        "--pipeline {url}: pipelines from a URL need the `http` feature; this build has: {}",
        crate::features().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
