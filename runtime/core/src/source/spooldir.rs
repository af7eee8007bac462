//! The `spooldir` source: files dropped into a directory are read whole, oldest first, and
//! renamed with a suffix (or deleted) once their last batch is committed (Flume's
//! spooling-directory source). With `run_to_completion` the source ends when the directory
//! holds nothing more to read — a batch job over a drop of part files.
//!
//! Files must be complete when they appear (moved in, or written elsewhere and renamed);
//! one modified within `min_age` is left for a later scan. A `.gz` file is decompressed.
//! After every committed batch the source records how far into the current file it got
//! (`.sluice/<source>.json` in the directory), so after a crash it resumes there: a crash
//! repeats at most the batch in flight, and nothing is skipped.

use std::{
    fs::File,
    io::{BufReader, Read},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    Source, SourceContext, SourceError,
    feed::{self, Chunk, Frame, Item},
    framing::Framer,
    supervisor::sleep_or_cancelled,
};
use crate::{
    config::units::{ByteSize, HumanDuration},
    dlq::DeadLetter,
    event::{
        Event, HeaderText,
        codec::{Codec, CodecName, CodecRef, decode_into},
    },
    guarantee::Upstream,
    registry::{BuildCx, ReadCx, SourceSpec},
};

/// `type: spooldir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolDirConfig {
    /// The directory to read files from.
    pub path: PathBuf,
    /// Which file names to read (a glob); others are left alone.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Appended to a file's name once it is read (ignored with `delete`).
    #[serde(default = "default_suffix")]
    pub completed_suffix: String,
    /// Delete a file once it is read, instead of renaming it.
    #[serde(default)]
    pub delete: bool,
    /// End the source once the directory holds nothing more to read.
    #[serde(default)]
    pub run_to_completion: bool,
    /// `lines` (default), `ndjson` or a `serde` plugin, applied to each line.
    #[serde(default)]
    pub codec: CodecRef,
    /// How often the directory is scanned while it is empty.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// A file modified more recently than this is taken as still being written.
    #[serde(default = "default_min_age")]
    pub min_age: HumanDuration,
    /// Longer lines are cut to this and dead-lettered.
    #[serde(default = "default_max_line")]
    pub max_line_length: ByteSize,
    /// The header that gets the file's path (`~` for none).
    #[serde(default = "default_file_header")]
    pub file_header: Option<String>,
}

fn default_pattern() -> String {
    "*".into()
}
fn default_suffix() -> String {
    ".COMPLETED".into()
}
fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_min_age() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_max_line() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_file_header() -> Option<String> {
    Some("file".into())
}

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    cx.codec_field("codec", CodecName::NAMES);
    let cfg: SpoolDirConfig = cx.read()?;
    let mut ok = true;
    if let Err(e) = glob::Pattern::new(&cfg.pattern) {
        let pos = cx.field_pos("pattern");
        cx.error(pos, format!("not a glob pattern: {e}"));
        ok = false;
    }
    if !cfg.delete && cfg.completed_suffix.is_empty() {
        let pos = cx.field_pos("completed_suffix");
        cx.error(
            pos,
            "must not be empty (or set `delete: true`): a read file would be read again",
        );
        ok = false;
    }
    if cfg.completed_suffix.contains('/') {
        let pos = cx.field_pos("completed_suffix");
        cx.error(pos, "must not contain `/`");
        ok = false;
    }
    ok.then(|| Arc::new(cfg) as Arc<dyn SourceSpec>)
}

impl SourceSpec for SpoolDirConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let pattern = glob::Pattern::new(&self.pattern).map_err(|e| format!("pattern: {e}"))?;
        Ok(Box::new(SpoolDir {
            cfg: self.clone(),
            pattern,
            codec: cx.codec(&self.codec)?,
            batch_size: cx.batch_size.max(1),
            tracker: self.path.join(".sluice").join(format!("{}.json", cx.name)),
            place: Place::default(),
        }))
    }

    fn exclusive_paths(&self) -> Vec<(&'static str, &Path)> {
        vec![("path", &self.path)]
    }

    fn upstream(&self) -> Upstream {
        Upstream::AckAfterCommit(
            "its place in a file is saved, and the file renamed, only after a commit",
        )
    }
}

struct SpoolDir {
    cfg: SpoolDirConfig,
    pattern: glob::Pattern,
    codec: Box<dyn Codec>,
    batch_size: usize,
    /// Where the place in the current file is kept.
    tracker: PathBuf,
    /// What `tracker` holds: read once when the source starts, then kept in step with it.
    place: Place,
}

/// How far into which file the committed batches got.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Place {
    file: String,
    /// Which file of that name: its inode and size when it was started (a later file of the
    /// same name is another file).
    #[serde(default)]
    inode: u64,
    #[serde(default)]
    size: u64,
    /// Bytes of the (decompressed) content already committed.
    offset: u64,
}

/// A file's inode and size (0 where there are no inodes).
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    (inode, meta.len())
}

/// A piece of a file: a batch of lines and the content offset after them.
struct Piece {
    items: Chunk,
    offset: u64,
    end: bool,
}

enum Outcome {
    Done,
    Stopped,
}

#[async_trait]
impl Source for SpoolDir {
    async fn run(mut self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let dir = self.cfg.path.clone();
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("spool directory {} does not exist", dir.display()),
            )
            .into());
        }
        self.place = self.load_place();
        let mut files_read = 0u64;
        loop {
            if cx.shutdown.is_cancelled() {
                return Ok(());
            }
            let (mut ready, waiting) = self.scan()?;
            // A file a stop interrupted is finished first, whatever its age.
            let place = &self.place;
            if let Some(i) = ready.iter().position(|p| {
                !place.file.is_empty()
                    && p.file_name().and_then(|n| n.to_str()) == Some(place.file.as_str())
            }) {
                let interrupted = ready.remove(i);
                ready.insert(0, interrupted);
            }
            let Some(file) = ready.into_iter().next() else {
                if self.cfg.run_to_completion && !waiting {
                    tracing::info!(source = %cx.name, files = files_read, dir = %dir.display(), "spool directory is empty; done");
                    return Ok(());
                }
                if sleep_or_cancelled(&cx.shutdown, self.cfg.poll_interval.0).await {
                    return Ok(());
                }
                continue;
            };
            match self.ingest(&file, &mut cx).await? {
                Outcome::Stopped => return Ok(()),
                Outcome::Done => files_read += 1,
            }
        }
    }
}

impl SpoolDir {
    /// Files ready to read, oldest first; and whether some are still too young.
    fn scan(&self) -> std::io::Result<(Vec<PathBuf>, bool)> {
        let now = SystemTime::now();
        let mut ready = Vec::new();
        let mut waiting = false;
        for entry in std::fs::read_dir(&self.cfg.path)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.')
                || (!self.cfg.delete && name.ends_with(&self.cfg.completed_suffix))
                || !self.pattern.matches(name)
            {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if now.duration_since(modified).unwrap_or_default() < self.cfg.min_age.0 {
                waiting = true;
                continue;
            }
            ready.push((modified, entry.path()));
        }
        ready.sort();
        Ok((ready.into_iter().map(|(_, p)| p).collect(), waiting))
    }

    fn load_place(&self) -> Place {
        std::fs::read(&self.tracker)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Written to a new file and renamed over the old, so a crash leaves one or the other.
    /// Not synced: a lost update only means the batches since are read again.
    fn save_place(&mut self, place: Place) -> std::io::Result<()> {
        if let Some(dir) = self.tracker.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.tracker.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&place).unwrap_or_default())?;
        std::fs::rename(&tmp, &self.tracker)?;
        self.place = place;
        Ok(())
    }

    /// Reads one file to its end, committing batch by batch, then marks it done.
    async fn ingest(
        &mut self,
        path: &Path,
        cx: &mut SourceContext,
    ) -> Result<Outcome, SourceError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let (inode, size) = std::fs::metadata(path)
            .map(|m| identity(&m))
            .unwrap_or_default();
        let place = &self.place;
        let start = if place.file == name && place.inode == inode && place.size == size {
            place.offset
        } else {
            0
        };
        if start > 0 {
            tracing::info!(source = %cx.name, file = %path.display(), offset = start, "resuming a file a stop interrupted");
        } else {
            tracing::info!(source = %cx.name, file = %path.display(), "reading");
        }
        let header = self
            .cfg
            .file_header
            .as_deref()
            .map(|h| (HeaderText::new(h), HeaderText::new(path.to_string_lossy())));
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Piece>>(2);
        let reader = {
            let path = path.to_owned();
            let (max, batch) = (self.cfg.max_line_length.0 as usize, self.batch_size);
            tokio::task::spawn_blocking(move || read_file(&path, start, max, batch, &tx))
        };
        let mut events = Vec::with_capacity(self.batch_size);
        let mut malformed = Vec::new();
        let mut finished = false;
        while let Some(piece) = rx.recv().await {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("reading {}: {e}", path.display()),
                    )
                    .into());
                }
            };
            for item in piece.items {
                match item {
                    Item::Frame(Frame { payload, .. }) => {
                        let from = events.len();
                        if let Err(reason) =
                            decode_into(self.codec.as_mut(), payload.clone(), &mut events)
                        {
                            malformed.push(DeadLetter {
                                event: Event::new(payload),
                                reason: format!("{}: {reason}", path.display()),
                            });
                        }
                        if let Some((k, v)) = &header {
                            for e in &mut events[from..] {
                                e.headers.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    Item::Malformed(letter) => malformed.push(letter),
                }
            }
            feed::commit(cx, &mut events, &mut malformed, self.batch_size).await?;
            self.save_place(Place {
                file: name.clone(),
                inode,
                size,
                offset: piece.offset,
            })?;
            if piece.end {
                finished = true;
                break;
            }
            if cx.shutdown.is_cancelled() {
                break;
            }
        }
        drop(rx);
        let _ = reader.await;
        if !finished {
            return Ok(Outcome::Stopped);
        }
        // Forgotten before the file goes: a crash in between reads it again (duplicates)
        // rather than resuming a later file of the same name at this one's offset.
        self.save_place(Place::default())?;
        if self.cfg.delete {
            std::fs::remove_file(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot delete {}: {e}", path.display()))
            })?;
        } else {
            let done = path.with_file_name(format!("{name}{}", self.cfg.completed_suffix));
            if done.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is read, but {} already exists: a file of the same name was read \
                         before; move one of them away (the source stops rather than read it \
                         twice)",
                        path.display(),
                        done.display()
                    ),
                )
                .into());
            }
            std::fs::rename(path, &done)?;
        }
        tracing::info!(source = %cx.name, file = %path.display(), "file done");
        Ok(Outcome::Done)
    }
}

/// Reads `path` from content offset `start` in pieces of `batch` lines (a blocking thread).
fn read_file(
    path: &Path,
    start: u64,
    max: usize,
    batch: usize,
    tx: &mpsc::Sender<std::io::Result<Piece>>,
) {
    let origin = format!("{}: ", path.display());
    let run = || -> std::io::Result<()> {
        let file = File::open(path)?;
        let gz = path.extension().is_some_and(|e| e == "gz");
        let mut input: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(file)
        };
        // Skip what was committed before (a compressed file is decompressed up to there).
        let skipped = std::io::copy(&mut (&mut input).take(start), &mut std::io::sink())?;
        let mut offset = skipped;
        let mut framer = Framer::lines(max);
        let mut buf = BytesMut::with_capacity(256 * 1024);
        let mut items = Chunk::with_capacity(batch);
        loop {
            if buf.capacity() - buf.len() < 64 * 1024 {
                buf.reserve(256 * 1024);
            }
            let len = buf.len();
            buf.resize(buf.capacity(), 0);
            let n = input.read(&mut buf[len..]);
            buf.truncate(len + *n.as_ref().unwrap_or(&0));
            let n = n?;
            offset += n as u64;
            while let Some(f) = framer.next(&mut buf) {
                items.push(Item::framed(f, None, &origin));
                if items.len() >= batch && !framer.is_skipping() {
                    let piece = Piece {
                        items: std::mem::replace(&mut items, Chunk::with_capacity(batch)),
                        offset: offset - buf.len() as u64,
                        end: false,
                    };
                    if tx.blocking_send(Ok(piece)).is_err() {
                        return Ok(());
                    }
                }
            }
            if n == 0 {
                items.extend(
                    framer
                        .finish(&mut buf)
                        .map(|f| Item::framed(f, None, &origin)),
                );
                let _ = tx.blocking_send(Ok(Piece {
                    items,
                    offset,
                    end: true,
                }));
                return Ok(());
            }
        }
    };
    if let Err(e) = run() {
        let _ = tx.blocking_send(Err(e));
    }
}
