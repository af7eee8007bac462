//! The `file` source: follows files matching glob patterns as they grow, like `tail -F`.
//!
//! Delivery is exact across restarts: each file's position advances only after the batch
//! holding its lines is committed to the channels, and is then saved (see [`position`]). A
//! batch that fails is read again from the files, so nothing is kept in memory for retries.
//! Rotation by rename is followed through the open descriptor ([`tracker`]); copy-truncate is
//! noticed as a file shorter than what was read, or whose first bytes changed, and the file is
//! read again from its start — lines written between the copy and the truncation are lost,
//! which no tailer can avoid. The source never ends on its own; the agent stops it.
//!
//! File reads happen on the blocking pool, one step (commit or rewind, look for files, read a
//! batch) at a time; a directory watcher wakes the loop early, polling covers the rest.

mod config;
mod position;
mod reader;
mod tracker;

use std::{
    io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use notify::{EventKind, RecursiveMode, Watcher, event::ModifyKind};
use tokio::sync::Notify;

pub(crate) use self::config::read;
pub use self::config::{FileHeaders, FileSourceConfig, MultilineConfig, StartAt};
use self::{
    position::PositionStore,
    reader::{Framing, Line, Multiline},
    tracker::{Outcome, Settings, Tracker},
};
use super::{ProcessError, Source, SourceContext, SourceError};
use crate::{
    dlq::DeadLetter,
    event::{
        Event, HeaderText, Headers,
        codec::{Codec, CodecName, decode_line_shared},
    },
};

pub struct FileSource {
    settings: Settings,
    batch_size: usize,
    poll_interval: Duration,
    file_header: Option<HeaderText>,
    offset_header: Option<HeaderText>,
    codec: Box<dyn Codec>,
}

impl FileSource {
    /// Checks what can be checked without touching the files (glob syntax, the multiline
    /// regex); an error is a config message. Relative paths are resolved here, against the
    /// working directory.
    pub fn new(
        cfg: &FileSourceConfig,
        batch_size: usize,
        codec: Box<dyn Codec>,
    ) -> Result<Self, String> {
        let cwd =
            std::env::current_dir().map_err(|e| format!("cannot resolve relative paths: {e}"))?;
        let mut globs = Vec::with_capacity(cfg.paths.len());
        for p in &cfg.paths {
            let abs = absolute_glob(&cwd, p);
            glob::Pattern::new(&abs)
                .map_err(|e| format!("invalid glob {p:?} in `paths`: {}", e.msg))?;
            globs.push(abs);
        }
        let multiline = match &cfg.multiline {
            Some(m) => Some(Multiline {
                start: regex::bytes::Regex::new(&m.start)
                    .map_err(|e| format!("invalid regex in `multiline.start`: {e}"))?,
                timeout: m.timeout.0,
            }),
            None => None,
        };
        Ok(FileSource {
            settings: Settings {
                globs,
                position_file: cwd.join(&cfg.position_file),
                start_at: cfg.start_at,
                rotate_wait: cfg.rotate_wait.0,
                framing: Framing {
                    max_bytes: usize::try_from(cfg.max_line_bytes.0).unwrap_or(usize::MAX),
                    multiline,
                },
            },
            batch_size,
            poll_interval: cfg.poll_interval.0,
            file_header: cfg.headers.file.as_deref().map(HeaderText::new),
            offset_header: cfg.headers.offset.as_deref().map(HeaderText::new),
            codec,
        })
    }
}

#[async_trait]
impl Source for FileSource {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let FileSource {
            settings,
            batch_size,
            poll_interval,
            file_header,
            offset_header,
            mut codec,
        } = *self;
        let idle = match &settings.framing.multiline {
            Some(m) => poll_interval.min(m.timeout),
            None => poll_interval,
        }
        .max(Duration::from_millis(1));
        let wake = Arc::new(Notify::new());
        let rescan = Arc::new(AtomicBool::new(false));
        let _watcher = watch(&settings, Arc::clone(&wake), Arc::clone(&rescan));
        let mut tracker = blocking(move || Tracker::open(settings)).await??;
        tracing::info!(source = %cx.name, files = tracker.files().len(), "following files");

        let mut outcome = Outcome::None;
        let mut last_scan = Instant::now();
        while !cx.shutdown.is_cancelled() {
            let scan =
                rescan.swap(false, Ordering::Relaxed) || last_scan.elapsed() >= poll_interval;
            if scan {
                last_scan = Instant::now();
            }
            let (t, lines) = blocking(move || {
                let r = tracker.step(outcome, scan, batch_size);
                (tracker, r)
            })
            .await?;
            tracker = t;
            let lines = lines?;
            if lines.is_empty() {
                outcome = Outcome::None;
                tokio::select! {
                    biased;
                    _ = cx.shutdown.cancelled() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
                continue;
            }
            let (events, malformed) = to_events(
                lines,
                codec.as_mut(),
                file_header.as_ref(),
                offset_header.as_ref(),
            );
            outcome = match deliver(&mut cx, events, malformed).await {
                Ok(()) => Outcome::Committed,
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    // The files still hold the batch: it is read again, not kept.
                    tracing::warn!(source = %cx.name, error = %e, "batch failed; reading it again");
                    tokio::select! {
                        _ = cx.shutdown.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    Outcome::Failed
                }
            };
        }
        // Stopping: the last batch was delivered (or not); save positions accordingly.
        let (_, saved) = blocking(move || {
            let r = tracker.step(outcome, false, 0);
            (tracker, r)
        })
        .await?;
        saved?;
        Ok(())
    }
}

/// Dead letters first, then the events; Ok means both are committed.
async fn deliver(
    cx: &mut SourceContext,
    events: Vec<Event>,
    malformed: Vec<DeadLetter>,
) -> Result<(), ProcessError> {
    if !malformed.is_empty() {
        cx.out.reject_malformed(malformed).await?;
    }
    if !events.is_empty() {
        cx.out.process(events).await?;
    }
    Ok(())
}

/// Lines into events with the path and offset headers. With the `lines` codec the line is the
/// body as read (no copy); other codecs decode it, and what they refuse is dead-lettered.
fn to_events(
    lines: Vec<Line>,
    codec: &mut dyn Codec,
    file_header: Option<&HeaderText>,
    offset_header: Option<&HeaderText>,
) -> (Vec<Event>, Vec<DeadLetter>) {
    let raw = codec.builtin() == Some(CodecName::Lines);
    let ndjson = codec.builtin() == Some(CodecName::Ndjson);
    let mut events = Vec::with_capacity(lines.len());
    let mut malformed = Vec::new();
    let mut num = itoa::Buffer::new();
    // The headers of the last file seen: its lines share them, no allocation per line.
    let mut file: Option<(HeaderText, Headers)> = None;
    for line in lines {
        let mut headers = match (&file, file_header) {
            (_, None) => Headers::default(),
            (Some((path, shared)), Some(_)) if *path == line.path => shared.clone(),
            (_, Some(h)) => {
                let shared: Headers = [(h.clone(), line.path.clone())].into_iter().collect();
                file = Some((line.path.clone(), shared.clone()));
                shared
            }
        };
        if let Some(h) = offset_header {
            headers.insert(h.clone(), num.format(line.offset));
        }
        if raw {
            events.push(Event {
                headers,
                body: line.body,
            });
            continue;
        }
        let decoded = if ndjson {
            // The built-in NDJSON codec keeps a plain object's line as the body, uncopied.
            decode_line_shared(CodecName::Ndjson, line.body.clone()).map(|e| vec![e])
        } else {
            codec.decode(&line.body)
        };
        match decoded {
            Ok(decoded) => events.extend(decoded.into_iter().map(|mut e| {
                e.headers.insert_all(&headers);
                e
            })),
            Err(reason) => malformed.push(DeadLetter {
                reason: format!("{} offset {}: {reason}", line.path, line.offset),
                event: Event {
                    headers,
                    body: line.body,
                },
            }),
        }
    }
    (events, malformed)
}

/// Runs one step of file work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("file source worker failed: {e}")))
}

/// A relative pattern is relative to the working directory, which is escaped so that its own
/// `[` or `*` are taken literally.
fn absolute_glob(cwd: &Path, pattern: &str) -> String {
    if Path::new(pattern).is_absolute() {
        return pattern.to_owned();
    }
    let mut rel = pattern;
    while let Some(r) = rel.strip_prefix("./") {
        rel = r;
    }
    let base = glob::Pattern::escape(&cwd.to_string_lossy());
    format!("{}/{rel}", base.trim_end_matches('/'))
}

/// The directory to watch for a pattern: its longest literal prefix, recursively when a
/// directory part has a wildcard. A plain path watches its parent.
fn watch_root(pattern: &str) -> (PathBuf, RecursiveMode) {
    let parts: Vec<_> = Path::new(pattern).components().collect();
    let literal = parts
        .iter()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .count();
    let mut base: PathBuf = parts[..literal].iter().collect();
    if literal == parts.len() {
        base.pop();
        return (base, RecursiveMode::NonRecursive);
    }
    let mode = if literal + 1 < parts.len() {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    (base, mode)
}

/// Wakes the source when something changes where its files are; a create, rename or delete
/// also asks for a rescan. Without a watcher (or for what it misses) polling does the job.
fn watch(
    settings: &Settings,
    wake: Arc<Notify>,
    rescan: Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    let store = PositionStore::new(settings.position_file.clone());
    let own = [store.path().to_owned(), store.tmp_path().to_owned()];
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        // Saving positions must not wake the loop that saved them.
        if ev.kind.is_access() || (!ev.paths.is_empty() && ev.paths.iter().all(|p| own.contains(p)))
        {
            return;
        }
        let content_only = matches!(
            ev.kind,
            EventKind::Modify(
                ModifyKind::Data(_) | ModifyKind::Metadata(_) | ModifyKind::Any | ModifyKind::Other
            )
        );
        if !content_only {
            rescan.store(true, Ordering::Relaxed);
        }
        wake.notify_one();
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for file changes; polling only");
            return None;
        }
    };
    let mut roots: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for g in &settings.globs {
        let root = watch_root(g);
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    for (dir, mode) in roots {
        if let Err(e) = watcher.watch(&dir, mode) {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory; polling it");
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_globs_are_anchored_at_the_working_directory_escaped() {
        let cwd = Path::new("/srv/app[1]");
        assert_eq!(
            absolute_glob(cwd, "./logs/*.log"),
            "/srv/app[[]1[]]/logs/*.log"
        );
        assert_eq!(absolute_glob(cwd, "/var/log/x.log"), "/var/log/x.log");
        let p = glob::Pattern::new(&absolute_glob(cwd, "logs/*.log")).unwrap();
        assert!(p.matches("/srv/app[1]/logs/a.log"));
    }

    #[test]
    fn watch_roots() {
        assert_eq!(
            watch_root("/var/log/app/*.log"),
            (PathBuf::from("/var/log/app"), RecursiveMode::NonRecursive)
        );
        assert_eq!(
            watch_root("/var/log/*/x.log"),
            (PathBuf::from("/var/log"), RecursiveMode::Recursive)
        );
        assert_eq!(
            watch_root("/var/log/syslog"),
            (PathBuf::from("/var/log"), RecursiveMode::NonRecursive)
        );
    }

    #[test]
    fn lines_become_events_with_headers_and_bad_ndjson_is_dead_lettered() {
        let line = |body: &'static str, offset| Line {
            body: bytes::Bytes::from_static(body.as_bytes()),
            path: HeaderText::new("/l/a.log"),
            offset,
        };
        let mut lines_codec = CodecName::Lines;
        let (events, bad) = to_events(
            vec![line("hello", 0), line("world", 6)],
            &mut lines_codec,
            Some(&HeaderText::new("file")),
            Some(&HeaderText::new("offset")),
        );
        assert!(bad.is_empty());
        assert_eq!(events[1].headers.get("file"), Some("/l/a.log"));
        assert_eq!(events[1].headers.get("offset"), Some("6"));
        assert_eq!(&events[1].body[..], b"world");

        let mut ndjson = CodecName::Ndjson;
        let (events, bad) = to_events(
            vec![line("{\"body\":\"x\"}", 0), line("nope", 13)],
            &mut ndjson,
            Some(&HeaderText::new("file")),
            None,
        );
        assert_eq!(events.len(), 1);
        assert_eq!(&events[0].body[..], b"x");
        assert_eq!(events[0].headers.get("file"), Some("/l/a.log"));
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0]
                .reason
                .starts_with("/l/a.log offset 13: invalid JSON"),
            "{}",
            bad[0].reason
        );
    }

    #[test]
    fn bad_globs_and_regexes_are_config_errors() {
        let p = crate::config::load_str(
            Path::new("p.yaml"),
            "channels:\n  mem: { type: memory }\nsources:\n  a: { type: file, paths: ['logs/[x.log'], position_file: a.json, channels: [mem] }\n  b: { type: file, paths: [x.log], position_file: b.json, multiline: { start: '(' }, channels: [mem] }\n",
            &|_| None,
            &crate::registry::Registry::builtin(),
        )
        .unwrap();
        let registry = crate::registry::Registry::builtin();
        let errs = match crate::topology::build(&p, &crate::metrics::Metrics::new(), &registry) {
            Ok(_) => panic!("should not build"),
            Err(e) => e.0,
        };
        let msgs: Vec<_> = errs
            .iter()
            .map(|e| {
                (
                    e.pos.line,
                    e.component.clone().unwrap_or_default(),
                    e.message.clone(),
                )
            })
            .collect();
        assert!(
            msgs.iter().any(|(l, c, m)| *l == 4
                && c == "sources.a"
                && m.contains("invalid glob \"logs/[x.log\"")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter().any(|(l, c, m)| *l == 5
                && c == "sources.b"
                && m.contains("invalid regex in `multiline.start`")),
            "{msgs:#?}"
        );
    }
}
