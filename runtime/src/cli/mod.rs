//! The command line: `sluice --pipeline p.yaml`, `sluice validate p.yaml`,
//! `sluice channel inspect|fsck|purge <dir>` on a durable channel's directory, and
//! `sluice plugin push|pull|inspect|new|test` ([`crate::cli_plugin`]).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage (clap), 78 invalid configuration
//! (EX_CONFIG from sysexits.h), so scripts can tell a typo from an outage.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::config;

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
    /// Pipeline file to run.
    #[arg(long, short = 'p', value_name = "FILE")]
    pipeline: Option<PathBuf>,

    /// Wasm plugin to load: `path.wasm` (named by its file stem), `name=path.wasm`, or an
    /// `oci://registry/repo:tag` (named by the repository's last part, or `name=oci://…`);
    /// overrides a plugin of the same name in the pipeline file. Repeatable.
    #[arg(long = "plugin", value_name = "PLUGIN")]
    plugins: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a pipeline file and report every problem, without starting anything.
    Validate {
        /// Pipeline file to check.
        pipeline: PathBuf,
    },
    /// Look into a durable (rocksdb or spillable) channel's directory.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Write, test, inspect and distribute Wasm plugins (OCI registries).
    #[command(subcommand)]
    Plugin(crate::cli_plugin::PluginCommand),
}

#[derive(Subcommand, Debug)]
enum ChannelCommand {
    /// Events, stored bytes, sequence range, quarantine and the oldest few events. Read-only:
    /// safe beside a running agent.
    Inspect {
        /// The channel's `path`.
        path: PathBuf,
        /// How many of the oldest events to show.
        #[arg(long, default_value_t = 3)]
        samples: usize,
    },
    /// Verify every record's format version and checksum and list the corrupt ones. Exits 1
    /// if corrupt records remain in the queue.
    Fsck {
        path: PathBuf,
        /// Move corrupt records to the quarantine (the agent must be stopped).
        #[arg(long)]
        quarantine: bool,
    },
    /// Delete every queued event (the agent must be stopped). Without `--yes`, only says what
    /// it would delete.
    Purge {
        path: PathBuf,
        /// Also delete the quarantined records.
        #[arg(long)]
        include_quarantine: bool,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command {
        Some(Command::Validate { pipeline }) => validate(&pipeline),
        Some(Command::Channel(cmd)) => channel(cmd),
        Some(Command::Plugin(cmd)) => crate::cli_plugin::run(cmd),
        None => match cli.run.pipeline {
            Some(p) => run(&p, &cli.run.plugins),
            None => {
                eprintln!("error: --pipeline <FILE> is required (see `sluice --help`)");
                ExitCode::from(2)
            }
        },
    }
}

fn init_logging(level: &str) {
    // lapin logs every broker-closed channel (e.g. a 404 while an exchange is missing) at
    // error level on its own; the RabbitMQ connectors log those outcomes once, with context.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{level},lapin=off")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load(
    path: &std::path::Path,
    plugins: &[(String, PathBuf)],
) -> Result<config::Pipeline, ExitCode> {
    config::load_file_with_plugins(path, plugins).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{}: {} error(s)", path.display(), errors.0.len());
        ExitCode::from(EXIT_CONFIG)
    })
}

fn validate(path: &std::path::Path) -> ExitCode {
    let p = match load(path, &[]) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // Building catches what only construction can (regexes, templates); nothing is started.
    let metrics = crate::metrics::Metrics::new();
    match crate::topology::check(&p, &metrics) {
        Ok(_) => {
            println!(
                "{}: ok ({} sources, {} channels, {} sinks, {} sink groups)",
                path.display(),
                p.sources.len(),
                p.channels.len(),
                p.sinks.len(),
                p.sink_groups.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Parses `--plugin path.wasm` (named by its file stem) and `--plugin name=path.wasm`.
/// Paths on the command line are relative to the working directory; an `oci://` reference
/// is kept as it is (named by its repository's last part).
fn plugin_flags(flags: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    use crate::plugin::oci;
    flags
        .iter()
        .map(|flag| {
            if flag.starts_with(oci::SCHEME) {
                let r = oci::OciRef::parse(flag).map_err(|e| format!("--plugin {flag}: {e}"))?;
                let name = r.repository.rsplit('/').next().unwrap_or_default();
                return Ok((name.to_owned(), PathBuf::from(flag)));
            }
            if let Some((n, r)) = flag
                .split_once('=')
                .filter(|(n, r)| !n.is_empty() && r.starts_with(oci::SCHEME))
            {
                oci::OciRef::parse(r).map_err(|e| format!("--plugin {flag}: {e}"))?;
                return Ok((n.to_owned(), PathBuf::from(r)));
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

fn channel(cmd: ChannelCommand) -> ExitCode {
    use crate::channel::rocks::tools;
    let result = match cmd {
        ChannelCommand::Inspect { path, samples } => {
            tools::inspect(&path, samples).map(|i| print_inspection(&path, &i))
        }
        ChannelCommand::Fsck { path, quarantine } => {
            tools::fsck(&path, quarantine).map(|r| print_fsck(&path, &r, quarantine))
        }
        ChannelCommand::Purge {
            path,
            include_quarantine,
            yes: false,
        } => tools::inspect(&path, 0).map(|i| {
            let q = if include_quarantine {
                format!(" and {} quarantined records", i.quarantined)
            } else {
                String::new()
            };
            println!(
                "{}: would delete {} events{q}; nothing done (re-run with --yes)",
                path.display(),
                i.events
            );
            ExitCode::from(EXIT_RUNTIME)
        }),
        ChannelCommand::Purge {
            path,
            include_quarantine,
            yes: true,
        } => tools::purge(&path, include_quarantine).map(|p| {
            println!(
                "{}: deleted {} events and {} quarantined records",
                path.display(),
                p.events,
                p.quarantined
            );
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_RUNTIME)
    })
}

fn print_inspection(
    path: &std::path::Path,
    i: &crate::channel::rocks::tools::Inspection,
) -> ExitCode {
    let format = match i.format.as_deref() {
        Some([v]) => v.to_string(),
        Some(other) => format!("{other:?}"),
        None => "unset".into(),
    };
    println!(
        "{}: rocksdb channel, record format {format}",
        path.display()
    );
    println!(
        "  events       {} ({} stored)",
        i.events,
        bytesize::ByteSize(i.bytes)
    );
    if let (Some(a), Some(b)) = (i.oldest, i.newest) {
        println!("  sequence     {a} ..= {b}");
    }
    println!(
        "  quarantined  {} ({})",
        i.quarantined,
        bytesize::ByteSize(i.quarantined_bytes)
    );
    if !i.samples.is_empty() {
        println!("  oldest {}:", i.samples.len());
    }
    for (seq, e) in &i.samples {
        match e {
            Ok(event) => {
                let mut line = Vec::new();
                crate::event::codec::encode_into(config::CodecName::Ndjson, event, &mut line);
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                let shown: String = text.chars().take(200).collect();
                let more = if shown.len() < text.len() { "…" } else { "" };
                println!("    {seq:>12}  {shown}{more}");
            }
            Err(why) => println!("    {seq:>12}  CORRUPT: {why}"),
        }
    }
    ExitCode::SUCCESS
}

fn print_fsck(
    path: &std::path::Path,
    r: &crate::channel::rocks::tools::FsckReport,
    quarantine: bool,
) -> ExitCode {
    println!(
        "{}: checked {} records: {} ok, {} corrupt",
        path.display(),
        r.checked,
        r.checked - r.corrupt.len() as u64,
        r.corrupt.len()
    );
    for (key, why) in r.corrupt.iter().take(100) {
        match crate::channel::rocks::record::seq_of(key) {
            Ok(seq) => println!("  {seq:>12}  {why}"),
            Err(_) => println!("  key {}  {why}", hex::encode(key)),
        }
    }
    if r.corrupt.len() > 100 {
        println!("  … and {} more", r.corrupt.len() - 100);
    }
    if r.corrupt.is_empty() {
        ExitCode::SUCCESS
    } else if quarantine {
        println!("moved {} records to the quarantine", r.quarantined);
        ExitCode::SUCCESS
    } else {
        println!("re-run with --quarantine (agent stopped) to move them aside");
        ExitCode::from(EXIT_RUNTIME)
    }
}

fn run(path: &std::path::Path, plugins: &[String]) -> ExitCode {
    let extra = match plugin_flags(plugins) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let p = match load(path, &extra) {
        Ok(p) => p,
        Err(code) => return code,
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
    match rt.block_on(crate::app::run(p)) {
        Ok(report) => {
            eprint!("{}", report.render());
            if report.ok() {
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
