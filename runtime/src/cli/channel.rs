//! `sluice channel inspect|fsck|purge <dir>`: a durable channel's directory, from outside.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use sluice_core::event::codec::{CodecName, encode_into};
use sluice_rocks::{record, tools};

use super::EXIT_RUNTIME;

#[derive(Subcommand, Debug)]
pub enum ChannelCommand {
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

pub fn run(cmd: ChannelCommand) -> ExitCode {
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

fn print_inspection(path: &std::path::Path, i: &tools::Inspection) -> ExitCode {
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
                encode_into(CodecName::Ndjson, event, &mut line);
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

fn print_fsck(path: &std::path::Path, r: &tools::FsckReport, quarantine: bool) -> ExitCode {
    println!(
        "{}: checked {} records: {} ok, {} corrupt",
        path.display(),
        r.checked,
        r.checked - r.corrupt.len() as u64,
        r.corrupt.len()
    );
    for (key, why) in r.corrupt.iter().take(100) {
        match record::seq_of(key) {
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
