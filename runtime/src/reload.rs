//! What asks for a live reload of the pipeline file, and what it answers.
//!
//! Three things ask: SIGHUP, a change of the file (debounced, unless `--no-watch`) and
//! `POST /config/reload` on the admin server, which waits for the answer. Requests go to the
//! agent's main loop ([`crate::app`]) over one channel; requests that arrive while a reload
//! runs are answered by the next one, so none is lost or answered before its reload ran.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long the file must stay quiet before a change is acted on (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A request for a reload; `reply` gets the outcome.
pub struct Request {
    /// What asked: `SIGHUP`, `file` or `admin`.
    pub origin: &'static str,
    pub reply: Option<oneshot::Sender<Answer>>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The new configuration runs; the components named were started, stopped or rebuilt.
    Applied { changed: Vec<String> },
    /// The file says what already runs.
    Unchanged,
    /// Nothing was changed; the running pipeline keeps running. Each error as
    /// `file:line:col: component: message`.
    Refused { errors: Vec<String> },
}

impl Answer {
    pub fn refused(&self) -> bool {
        matches!(self, Answer::Refused { .. })
    }

    /// The `result` label of `sluice_config_reloads_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Answer::Applied { .. } => "applied",
            Answer::Unchanged => "unchanged",
            Answer::Refused { .. } => "refused",
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Answer::Applied { changed } => {
                serde_json::json!({ "result": "applied", "changed": changed })
            }
            Answer::Unchanged => serde_json::json!({ "result": "unchanged" }),
            Answer::Refused { errors } => serde_json::json!({
                "result": "refused; the running pipeline is unchanged",
                "errors": errors,
            }),
        }
    }
}

/// Sends a request on every SIGHUP until `stop`.
pub fn on_sighup(tx: mpsc::Sender<Request>, stop: CancellationToken) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install a SIGHUP handler; reload with POST /config/reload");
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            let _ = tx
                .send(Request {
                    origin: "SIGHUP",
                    reply: None,
                })
                .await;
        }
    });
    #[cfg(not(unix))]
    let _ = (tx, stop);
}

/// Sends a request when `file` changes (once it has been quiet for [`DEBOUNCE`]), until
/// `stop`. The directory is watched, not the file, so that editors and tools that replace the
/// file (write a temporary, rename it over) are seen too.
pub fn on_change(file: &Path, tx: mpsc::Sender<Request>, stop: CancellationToken) {
    let file: PathBuf = file.canonicalize().unwrap_or_else(|_| file.to_owned());
    let Some(dir) = file.parent().map(Path::to_owned) else {
        return;
    };
    let name = file.file_name().map(|n| n.to_owned());
    let watching = watch_dir(
        &dir,
        move |p| p.file_name() == name.as_deref(),
        move || {
            let tx = tx.clone();
            async move {
                tx.send(Request {
                    origin: "file",
                    reply: None,
                })
                .await
                .is_ok()
            }
        },
        stop,
    );
    if let Err(e) = watching {
        tracing::warn!(file = %file.display(), error = %e, "cannot watch the pipeline file; reload with SIGHUP or POST /config/reload");
    }
}

/// Sends `()` when a pipeline file (`*.yaml`, `*.yml`) in `dir` appears, changes or goes
/// away (debounced), until `stop`.
pub fn on_dir_change(dir: &Path, tx: mpsc::Sender<()>, stop: CancellationToken) {
    let watching = watch_dir(
        dir,
        |p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"),
        move || {
            let tx = tx.clone();
            async move { tx.send(()).await.is_ok() }
        },
        stop,
    );
    if let Err(e) = watching {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the pipeline directory; files added later are not run");
    }
}

/// Watches `dir` (not recursively) and calls `settled` once the writes to paths that `ours`
/// accepts have been quiet for [`DEBOUNCE`], until `stop` or until `settled` returns false.
fn watch_dir<F>(
    dir: &Path,
    ours: impl Fn(&Path) -> bool + Send + 'static,
    settled: impl Fn() -> F + Send + 'static,
    stop: CancellationToken,
) -> notify::Result<()>
where
    F: std::future::Future<Output = bool> + Send,
{
    use notify::{RecursiveMode, Watcher};
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if let Ok(ev) = r {
            let writes = !matches!(ev.kind, notify::EventKind::Access(_));
            if writes && ev.paths.iter().any(|p| ours(p)) {
                let _ = ev_tx.send(());
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        // Kept alive (and dropped, unwatching) with this task.
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = ev_rx.recv() => if got.is_none() { return },
            }
            // Wait for the writes to settle.
            loop {
                match tokio::time::timeout(DEBOUNCE, ev_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if !settled().await {
                return;
            }
        }
    });
    Ok(())
}

/// What `GET /pipelines` says of a pipeline: where it comes from, what runs, and how its last
/// reload went.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub name: String,
    /// The file, or the URL it is fetched from.
    pub source: String,
    /// The hash of the configuration that runs (`sluice_config_info{hash}`).
    pub hash: String,
    /// Unix seconds since that configuration runs.
    pub since: u64,
    /// Unix seconds, what asked, and the answer.
    pub last_reload: Option<(u64, &'static str, Answer)>,
}

impl Status {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "source": self.source,
            "state": "running",
            "config_hash": self.hash,
            "running_since": self.since,
            "last_reload": self.last_reload.as_ref().map(|(at, origin, a)| serde_json::json!({
                "at": at,
                "origin": origin,
                "outcome": a.to_json(),
            })),
        })
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
