//! The `exec` source: runs a command and makes each line it prints an event (Flume's exec
//! source), restarting it by policy with a growing pause.
//!
//! The command's output is read only as fast as the channels take it: when they are full the
//! pipe fills and the command blocks on its writes. Its exit status is logged; `stderr` lines
//! go to the agent's log (or become events, or are ignored). When the agent stops the command
//! gets SIGTERM, then SIGKILL after `stop_timeout`. A command cannot be asked to print again
//! what a crash interrupted.

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use async_trait::async_trait;
use bytes::BytesMut;
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use super::{
    Source, SourceContext, SourceError,
    feed::{self, Chunk, Frame, FrameDecoder, Item, QUEUE_CHUNKS},
    framing::{Framed, Framer},
    supervisor::{Backoff, sleep_or_cancelled},
};
use crate::{
    config::units::{ByteSize, HumanDuration},
    event::{
        Event,
        codec::{Codec, CodecName, CodecRef, decode_into},
    },
    guarantee::Upstream,
    registry::{BuildCx, ReadCx, SourceSpec},
};

/// `restart:` of an exec source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// The source ends when the command does.
    #[default]
    Never,
    /// Restarted after a non-zero exit or a signal; a clean exit ends the source.
    OnFailure,
    /// Restarted whenever it ends.
    Always,
}

/// Where the command's standard error goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StderrTo {
    /// Each line logged as a warning, with the source's name.
    #[default]
    Log,
    /// Each line an event, like standard output.
    Events,
    Ignore,
}

/// `type: exec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// A command line, run by `/bin/sh -c`.
    pub command: Option<String>,
    /// Or the program and its arguments, run without a shell.
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub restart: Restart,
    /// The first pause before a restart; it doubles up to `max_restart_backoff`, and starts
    /// over once the command ran longer than that.
    #[serde(default = "default_backoff")]
    pub restart_backoff: HumanDuration,
    #[serde(default = "default_max_backoff")]
    pub max_restart_backoff: HumanDuration,
    #[serde(default)]
    pub stderr: StderrTo,
    /// `lines` (default), `ndjson` or a `serde` plugin, applied to each line.
    #[serde(default)]
    pub codec: CodecRef,
    /// Longer lines are cut to this and dead-lettered.
    #[serde(default = "default_max_line")]
    pub max_line_length: ByteSize,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    /// How long the command has to exit after SIGTERM when the agent stops.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: HumanDuration,
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
}

fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_max_line() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_stop_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SourceSpec>> {
    cx.codec_field("codec", CodecName::NAMES);
    let cfg: ExecConfig = cx.read()?;
    let ok = match (&cfg.command, &cfg.args) {
        (Some(c), None) if !c.trim().is_empty() => true,
        (None, Some(a)) if !a.is_empty() && !a[0].is_empty() => true,
        (Some(_), Some(_)) => {
            let pos = cx.field_pos("args");
            cx.error(
                pos,
                "give `command` (a shell line) or `args` (a program and its arguments), not both",
            );
            false
        }
        _ => {
            let pos = cx.field_pos("command");
            cx.error(pos, "`command` (a shell line) or `args` (a program and its arguments) is required and must not be empty");
            false
        }
    };
    ok.then(|| std::sync::Arc::new(cfg) as std::sync::Arc<dyn SourceSpec>)
}

impl SourceSpec for ExecConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(Exec {
            cfg: self.clone(),
            codec: cx.codec(&self.codec)?,
            batch_size: cx.batch_size,
        }))
    }

    fn upstream(&self) -> Upstream {
        Upstream::NoReplay("a command cannot print again what a crash interrupted")
    }
}

struct Exec {
    cfg: ExecConfig,
    codec: Box<dyn Codec>,
    batch_size: usize,
}

struct Lines {
    codec: Box<dyn Codec>,
}

impl FrameDecoder for Lines {
    fn decode(&mut self, frame: Frame, out: &mut Vec<Event>) -> Result<(), String> {
        decode_into(self.codec.as_mut(), frame.payload, out)
    }
}

#[async_trait]
impl Source for Exec {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let Exec {
            cfg,
            codec,
            batch_size,
        } = *self;
        let (tx, mut rx) = mpsc::channel::<Chunk>(QUEUE_CHUNKS);
        let stop = cx.shutdown.child_token();
        let runner = tokio::spawn(run_command(cfg.clone(), tx, stop.clone(), cx.name.clone()));
        let mut decoder = Lines { codec };
        let fed = feed::run(&mut cx, &mut rx, &mut decoder, batch_size, cfg.linger.0).await;
        stop.cancel();
        // Wait for the command to be stopped (SIGTERM, then SIGKILL) before reporting.
        drop(rx);
        match runner.await {
            Ok(Err(e)) => {
                fed?;
                Err(e)
            }
            _ => fed,
        }
    }
}

/// Starts the command, feeds its lines, and restarts it by policy until the source is done
/// or `stop`. Dropping `tx` (returning) tells the feed loop there is no more.
async fn run_command(
    cfg: ExecConfig,
    tx: mpsc::Sender<Chunk>,
    stop: CancellationToken,
    source: String,
) -> Result<(), SourceError> {
    let mut backoff = Backoff::new(cfg.restart_backoff.0, cfg.max_restart_backoff.0);
    loop {
        let started = tokio::time::Instant::now();
        let mut child = match spawn(&cfg) {
            Ok(c) => c,
            Err(e) => {
                let what = describe(&cfg);
                if cfg.restart == Restart::Never {
                    return Err(
                        std::io::Error::new(e.kind(), format!("cannot run {what}: {e}")).into(),
                    );
                }
                let pause = backoff.next_delay();
                tracing::error!(source = %source, command = %what, error = %e, retry_in = ?pause, "cannot run the command");
                if sleep_or_cancelled(&stop, pause).await {
                    return Ok(());
                }
                continue;
            }
        };
        let pid = child.id();
        tracing::info!(source = %source, command = %describe(&cfg), pid, "command started");
        let max = cfg.max_line_length.0 as usize;
        let stdout = child
            .stdout
            .take()
            .map(|out| tokio::spawn(pump(out, Framer::lines(max), tx.clone(), stop.clone())));
        let stderr = child.stderr.take().map(|err| match cfg.stderr {
            StderrTo::Events => {
                tokio::spawn(pump(err, Framer::lines(max), tx.clone(), stop.clone()))
            }
            StderrTo::Log | StderrTo::Ignore => tokio::spawn(log_stderr(
                err,
                cfg.stderr == StderrTo::Log,
                max,
                source.clone(),
            )),
        });
        let status = tokio::select! {
            s = child.wait() => Some(s),
            _ = stop.cancelled() => None,
        };
        let Some(status) = status else {
            terminate(&mut child, cfg.stop_timeout.0, &source).await;
            return Ok(());
        };
        // Everything it printed before exiting is handed over before a restart or the end.
        for pump in [stdout, stderr].into_iter().flatten() {
            let _ = pump.await;
        }
        let status = status?;
        let ran = started.elapsed();
        let failed = !status.success();
        if failed {
            tracing::warn!(source = %source, pid, status = %status, ran = ?ran, "command failed");
        } else {
            tracing::info!(source = %source, pid, status = %status, ran = ?ran, "command exited");
        }
        let again = match cfg.restart {
            Restart::Never => false,
            Restart::OnFailure => failed,
            Restart::Always => true,
        };
        if !again {
            return Ok(());
        }
        if ran >= backoff.max() {
            backoff.reset();
        }
        let pause = backoff.next_delay();
        tracing::info!(source = %source, restart_in = ?pause, "restarting the command");
        if sleep_or_cancelled(&stop, pause).await {
            return Ok(());
        }
    }
}

fn describe(cfg: &ExecConfig) -> String {
    match (&cfg.command, &cfg.args) {
        (Some(c), _) => c.clone(),
        (None, Some(a)) => a.join(" "),
        (None, None) => String::new(),
    }
}

fn spawn(cfg: &ExecConfig) -> std::io::Result<Child> {
    let mut cmd = match (&cfg.command, &cfg.args) {
        (Some(line), _) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        (None, Some(args)) => {
            let mut c = Command::new(&args[0]);
            c.args(&args[1..]);
            c
        }
        (None, None) => return Err(std::io::Error::other("no command")),
    };
    cmd.envs(&cfg.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if cfg.stderr == StderrTo::Ignore {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .kill_on_drop(true);
    // Its own process group, so a stop reaches what a shell line started too.
    #[cfg(unix)]
    cmd.process_group(0);
    if let Some(dir) = &cfg.working_dir {
        cmd.current_dir(dir);
    }
    cmd.spawn()
}

/// SIGTERM to the command's process group, then SIGKILL to the group if it has not exited
/// in time.
async fn terminate(child: &mut Child, grace: Duration, source: &str) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let group = -(pid as libc::pid_t);
        // SAFETY: kill(2) on the process group this process started (the child leads it and
        // has not been reaped yet).
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            tracing::info!(source = %source, pid, status = ?status.ok(), "command stopped");
            return;
        }
        tracing::warn!(source = %source, pid, "command ignored SIGTERM; killing its process group");
        // SAFETY: as above.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

/// Reads a pipe, frames it into lines and hands them over (waiting while the queue is full).
async fn pump(
    mut out: impl AsyncRead + Unpin,
    mut framer: Framer,
    tx: mpsc::Sender<Chunk>,
    stop: CancellationToken,
) {
    const READ: usize = 64 * 1024;
    let mut buf = BytesMut::with_capacity(READ);
    loop {
        if buf.capacity() - buf.len() < READ / 4 {
            buf.reserve(READ);
        }
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            n = out.read_buf(&mut buf) => n.unwrap_or(0),
        };
        let mut chunk = Chunk::new();
        while let Some(f) = framer.next(&mut buf) {
            chunk.push(Item::framed(f, None, ""));
        }
        if n == 0 {
            chunk.extend(framer.finish(&mut buf).map(|f| Item::framed(f, None, "")));
        }
        if !chunk.is_empty() && tx.send(chunk).await.is_err() {
            return;
        }
        if n == 0 {
            return;
        }
    }
}

/// Logs (or drops) the command's standard error line by line, whatever bytes it writes, and
/// keeps reading to the end, so the command never blocks on a full stderr pipe.
async fn log_stderr(mut err: impl AsyncRead + Unpin, log: bool, max: usize, source: String) {
    let mut framer = Framer::lines(max);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        let n = err.read_buf(&mut buf).await.unwrap_or(0);
        let mut lines = Vec::new();
        while let Some(f) = framer.next(&mut buf) {
            lines.push(f);
        }
        if n == 0 {
            lines.extend(framer.finish(&mut buf));
        }
        if log {
            for f in lines {
                let (Framed::Frame(line) | Framed::TooLong { head: line, .. }) = f;
                tracing::warn!(source = %source, "command stderr: {}", String::from_utf8_lossy(&line));
            }
        }
        if n == 0 {
            return;
        }
    }
}
