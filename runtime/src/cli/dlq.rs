//! `sluice dlq list|show|replay`: a durable dead-letter channel, from outside. `list` counts
//! its events by component, stage, class and reason; `show` prints them with their reason
//! headers; `replay` moves a selection into another channel. `list` and `show` read the
//! directory read-only (beside a running agent too); `replay` needs the agent stopped.
//! A running agent's DLQ channels are reached through its admin server instead (`/dlq`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Subcommand;
use sluice_core::event::Event;
use sluice_rocks::{RocksChannel, RocksOptions, tools};

use super::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::dead_letters::{self, Selection, now_ms, replay as replay_into};

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Counts by component, stage, class and reason.
    List {
        /// The DLQ channel's `path` (a `rocksdb` channel).
        path: PathBuf,
        #[command(flatten)]
        select: Selection,
    },
    /// The dead letters as NDJSON (headers, including the `sluice.dlq.*` reason headers, and
    /// the body).
    Show {
        path: PathBuf,
        #[command(flatten)]
        select: Selection,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Move the selected dead letters into another channel (the agent must be stopped): the
    /// `sluice.dlq.*` headers are removed (`--keep-headers` keeps them).
    Replay {
        path: PathBuf,
        #[command(flatten)]
        select: Selection,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// The target channel's directory …
        #[arg(long, value_name = "DIR", conflicts_with_all = ["pipeline", "channel"])]
        to: Option<PathBuf>,
        /// … or a durable channel of a pipeline file, by name (with `--channel`).
        #[arg(long, value_name = "FILE", requires = "channel")]
        pipeline: Option<PathBuf>,
        #[arg(long, value_name = "NAME", requires = "pipeline")]
        channel: Option<String>,
        #[arg(long)]
        keep_headers: bool,
        /// Really move them; without it, only say how many would move.
        #[arg(long)]
        yes: bool,
    },
}

pub fn run(cmd: DlqCommand) -> ExitCode {
    let result = match cmd {
        DlqCommand::List { path, select } => list(&path, &select),
        DlqCommand::Show {
            path,
            select,
            limit,
        } => show(&path, &select, limit.unwrap_or(usize::MAX)),
        DlqCommand::Replay {
            path,
            select,
            limit,
            to,
            pipeline,
            channel,
            keep_headers,
            yes,
        } => {
            let target = match (to, pipeline, channel) {
                (Some(dir), _, _) => Ok(dir),
                (None, Some(p), Some(c)) => channel_dir(&p, &c),
                _ => Err("give the target: --to DIR, or --pipeline FILE --channel NAME".into()),
            };
            match target {
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
                Ok(target) => replay(
                    &path,
                    &target,
                    &select,
                    limit.unwrap_or(usize::MAX),
                    keep_headers,
                    yes,
                ),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The directory of durable channel `name` in pipeline file `pipeline`.
fn channel_dir(pipeline: &Path, name: &str) -> Result<PathBuf, String> {
    let p =
        sluice_core::config::load_file(pipeline, crate::registry()).map_err(|e| e.to_string())?;
    let c = p
        .channels
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("{}: no channel `{name}`", pipeline.display()))?;
    c.spec.storage_dir().map(Path::to_owned).ok_or_else(|| {
        format!(
            "{}: channel `{name}` is a `{}` channel: only a durable one can be written while the agent is stopped",
            pipeline.display(),
            c.kind
        )
    })
}

fn list(path: &Path, select: &Selection) -> Result<ExitCode, String> {
    let now = now_ms();
    let mut counts = BTreeMap::new();
    let (mut total, mut unreadable) = (0u64, 0u64);
    tools::for_each_event(path, |_, e| match e {
        Ok(e) if select.matches(&e, now) => {
            dead_letters::count(&mut counts, &e);
            total += 1;
        }
        Ok(_) => {}
        Err(_) => unreadable += 1,
    })
    .map_err(|e| e.to_string())?;
    println!(
        "{:>8}  {:<20} {:<12} {:<18} reason",
        "events", "component", "stage", "class"
    );
    for ((component, stage, class, reason), n) in &counts {
        println!("{n:>8}  {component:<20} {stage:<12} {class:<18} {reason}");
    }
    println!("{total} dead letters selected in {}", path.display());
    if unreadable > 0 {
        println!("{unreadable} records cannot be read (see `sluice channel fsck`)");
    }
    Ok(ExitCode::SUCCESS)
}

/// One event as a JSON line: headers, and the body as text or `body_base64`.
fn json_line(e: &Event) -> String {
    use base64::Engine;
    let headers: BTreeMap<&str, &str> = e.headers.iter().collect();
    let mut v = serde_json::json!({ "headers": headers });
    match std::str::from_utf8(&e.body) {
        Ok(t) => v["body"] = t.into(),
        Err(_) => {
            v["body_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&e.body)
                .into()
        }
    }
    v.to_string()
}

fn show(path: &Path, select: &Selection, limit: usize) -> Result<ExitCode, String> {
    let now = now_ms();
    let mut shown = 0;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut closed = false;
    tools::for_each_event(path, |_, e| {
        if let Ok(e) = e {
            if !closed && shown < limit && select.matches(&e, now) {
                shown += 1;
                use std::io::Write;
                // A closed stdout (`| head`) ends the listing quietly.
                closed = writeln!(out, "{}", json_line(&e)).is_err();
            }
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn open(path: &Path) -> Result<RocksChannel, String> {
    if !path.join("CURRENT").is_file() {
        return Err(format!(
            "{}: not a channel directory (no RocksDB CURRENT file)",
            path.display()
        ));
    }
    RocksChannel::open(
        path,
        RocksOptions {
            capacity: u32::MAX as usize,
            ..RocksOptions::default()
        },
    )
    .map_err(|e| format!("{}: {e} (is an agent still running on it?)", path.display()))
}

fn replay(
    path: &Path,
    target: &Path,
    select: &Selection,
    limit: usize,
    keep_headers: bool,
    yes: bool,
) -> Result<ExitCode, String> {
    let now = now_ms();
    if !yes {
        let mut n = 0usize;
        tools::for_each_event(path, |_, e| {
            if e.is_ok_and(|e| select.matches(&e, now)) {
                n += 1;
            }
        })
        .map_err(|e| e.to_string())?;
        println!(
            "{}: would replay {} dead letters into {}; nothing done (re-run with --yes)",
            path.display(),
            n.min(limit),
            target.display()
        );
        return Ok(ExitCode::from(EXIT_RUNTIME));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dlq = open(path)?;
    // The target is created when missing (a channel of a pipeline that has not run yet).
    let to = RocksChannel::open(target, RocksOptions::default()).map_err(|e| {
        format!(
            "{}: {e} (is an agent still running on it?)",
            target.display()
        )
    })?;
    let (moved, kept) = rt.block_on(replay_into(&dlq, &to, select, limit, keep_headers))?;
    println!(
        "{}: replayed {moved} dead letters into {}; {kept} stay",
        path.display(),
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}
