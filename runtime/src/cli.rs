//! The command line: `sluice --pipeline p.yaml`, `sluice validate p.yaml`.
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

    /// Wasm plugin to load: `path.wasm` (named by its file stem) or `name=path.wasm`;
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
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command {
        Some(Command::Validate { pipeline }) => validate(&pipeline),
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
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
/// Paths on the command line are relative to the working directory.
fn plugin_flags(flags: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    flags
        .iter()
        .map(|flag| {
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
