//! The rolling file sink.
//!
//! The path is a template (`%{header}`, strftime escapes), so one sink may write many files.
//! Without roll settings each resolved path is appended to as is. With `roll_size`,
//! `roll_count` or `roll_interval`, files are `<path>.<N>`: on start the highest existing `N`
//! is continued, and each roll moves to `N+1`. A batch is flushed (and fsynced if asked) before
//! `deliver` returns, so a committed take means the events are in the file. Encoding, writes
//! and fsyncs run through [`crate::blocking::run`], so a long fsync never stalls the agent.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use serde::Deserialize;

use super::{Batch, DeliveryError, Sink};
use crate::{
    config::units::{ByteSize, HumanDuration},
    event::{
        Event,
        codec::{self, Codec, CodecName, CodecRef},
        template::Template,
    },
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
};

/// `type: file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Path template: `%{header}` and strftime escapes such as `%Y-%m-%d`.
    pub path: String,
    /// `lines`, `ndjson`, `parquet` (each batch's events for a file make a Parquet file of
    /// their own, `<path>.<N>`; see `parquet`), or the name of a `serde` plugin (one call per
    /// run of events going to the same file).
    #[serde(default)]
    pub format: CodecRef,
    /// Settings of `format: parquet` (columns, compression, row groups), read by the agent's
    /// Parquet writer.
    pub parquet: Option<serde_json::Value>,
    /// Start a new file after this many bytes.
    pub roll_size: Option<ByteSize>,
    /// Start a new file after this many events.
    pub roll_count: Option<u64>,
    /// Start a new file after this long.
    pub roll_interval: Option<HumanDuration>,
    /// fsync after every batch (slower; survives power loss).
    #[serde(default)]
    pub fsync: bool,
}

/// Formats the file sink takes besides plugins: the built-in codecs and the native `parquet`.
const FORMATS: &[&str] = &["lines", "ndjson", PARQUET];
const PARQUET: &str = "parquet";

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SinkSpec>> {
    cx.codec_field("format", FORMATS);
    plain_sink::<FileSinkConfig>(cx)
}

impl SinkSpec for FileSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let codec = match &self.format {
            CodecRef::Plugin(name) if name == PARQUET => {
                if self.roll_size.is_some()
                    || self.roll_count.is_some()
                    || self.roll_interval.is_some()
                {
                    return Err(
                        "`format: parquet` writes one file per batch and path (`<path>.<N>`): \
                         size files with `batch_size`, not `roll_size`/`roll_count`/`roll_interval`"
                            .into(),
                    );
                }
                cx.native_format(PARQUET, self.parquet.as_ref(), "aws-s3")?
            }
            _ if self.parquet.is_some() => {
                return Err("`parquet` settings need `format: parquet`".into());
            }
            format => cx.codec(format)?,
        };
        Ok(Box::new(FileSink::new(self, codec)?))
    }
}

/// Files kept open at once; the least recently opened is closed beyond this.
const MAX_OPEN: usize = 64;

pub struct FileSink {
    template: Template,
    codec: Box<dyn Codec>,
    roll_size: Option<u64>,
    roll_count: Option<u64>,
    roll_interval: Option<Duration>,
    fsync: bool,
    open: HashMap<String, OpenFile>,
    /// Roll index to use next for paths closed by the interval timer.
    next_index: HashMap<String, u64>,
    /// Rendered path of the current event (reused to avoid an allocation per event).
    path: String,
}

struct OpenFile {
    file: File,
    /// Encoded events not yet written.
    pending: Vec<u8>,
    /// Roll index (`None` when rolling is off).
    index: Option<u64>,
    bytes: u64,
    events: u64,
    opened: Instant,
}

impl FileSink {
    pub fn new(cfg: &FileSinkConfig, codec: Box<dyn Codec>) -> Result<Self, String> {
        Ok(FileSink {
            template: Template::parse(&cfg.path)?,
            codec,
            roll_size: cfg.roll_size.map(|b| b.0),
            roll_count: cfg.roll_count,
            roll_interval: cfg.roll_interval.map(|d| d.0),
            fsync: cfg.fsync,
            open: HashMap::new(),
            next_index: HashMap::new(),
            path: String::new(),
        })
    }

    fn rolling(&self) -> bool {
        self.roll_size.is_some() || self.roll_count.is_some() || self.roll_interval.is_some()
    }

    fn is_full(&self, f: &OpenFile) -> bool {
        let pending = f.pending.len() as u64;
        self.roll_size.is_some_and(|max| f.bytes + pending >= max)
            || self.roll_count.is_some_and(|max| f.events >= max)
            || self
                .roll_interval
                .is_some_and(|max| f.opened.elapsed() >= max)
    }

    fn open_file(&self, resolved: &str, index: Option<u64>) -> std::io::Result<OpenFile> {
        let path = file_name(resolved, index);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .open(&path)?;
        if self.codec.builtin().is_some() {
            drop_torn_line(&file)?;
        }
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(OpenFile {
            file,
            pending: Vec::new(),
            index,
            bytes,
            events: 0,
            opened: Instant::now(),
        })
    }

    /// Delivery through a plugin codec: one encode call per file the batch goes to (events
    /// keep their order within a file), all encoded before anything is written so a failing
    /// encode (the events are poison) leaves the files untouched. Rolls happen between calls,
    /// so a file may pass `roll_size`/`roll_count` by up to one batch.
    fn deliver_per_file(&mut self, batch: &[Event]) -> Result<(), DeliveryError> {
        // Resolved path → indices of its events, in first-seen order.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        if self.template.is_constant() {
            let mut path = String::new();
            if let Some(first) = batch.first() {
                self.template.render(first, &mut path);
            }
            groups.push((path, (0..batch.len()).collect()));
        } else {
            let mut path = String::new();
            for (i, e) in batch.iter().enumerate() {
                path.clear();
                self.template.render(e, &mut path);
                match groups.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, idx)) => idx.push(i),
                    None => groups.push((path.clone(), vec![i])),
                }
            }
        }
        let mut encoded = Vec::with_capacity(groups.len());
        for (path, idx) in groups {
            let contiguous = idx.last().zip(idx.first()).map(|(l, f)| l - f + 1) == Some(idx.len());
            let bytes = if contiguous {
                let mut bytes = Vec::new();
                self.codec
                    .encode(&batch[idx[0]..idx[0] + idx.len()], &mut bytes)
                    .map(|()| bytes)
            } else {
                let events: Vec<Event> = idx.iter().map(|&i| batch[i].clone()).collect();
                let mut bytes = Vec::new();
                self.codec.encode(&events, &mut bytes).map(|()| bytes)
            }
            .map_err(DeliveryError::Permanent)?;
            encoded.push((path, idx.len(), bytes));
        }
        if self.codec.whole_file() {
            for (path, _, bytes) in encoded {
                self.write_whole_file(&path, &bytes)?;
            }
            return Ok(());
        }
        for (path, events, bytes) in encoded {
            self.path = path;
            let fsync = self.fsync;
            let f = self.file_for_current_path()?;
            f.pending.extend_from_slice(&bytes);
            f.events += events as u64;
            finish(f, fsync)?;
        }
        self.roll_expired()?;
        Ok(())
    }

    /// A whole-file format's payload (Parquet) as `<resolved>.<N>`, the next free `N`: written
    /// to `<resolved>.<N>.tmp`, flushed (and synced, with `fsync`), then renamed, so a reader
    /// never sees a part of one and a failed or interrupted write leaves no file behind under
    /// the final name (a retried batch writes its file again).
    fn write_whole_file(&mut self, resolved: &str, bytes: &[u8]) -> std::io::Result<()> {
        let index = match self.next_index.remove(resolved) {
            Some(i) => i,
            None => highest_index(resolved).map_or(0, |i| i + 1),
        };
        let path = file_name(resolved, Some(index));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.flush()?;
            if self.fsync {
                f.sync_all()?;
            }
            // Never over a finished file, even one another process wrote meanwhile.
            if path.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists already", path.display()),
                ));
            }
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        self.next_index.insert(resolved.to_owned(), index + 1);
        Ok(())
    }

    /// Finds (or opens) the file for `self.path`, rolling it first if it is full.
    fn file_for_current_path(&mut self) -> std::io::Result<&mut OpenFile> {
        let full = self.open.get(self.path.as_str()).map(|f| self.is_full(f));
        if full != Some(false) {
            // Slow path (a new path or a roll): owning the key here is fine.
            let key = self.path.clone();
            let index = match self.open.remove(&key) {
                Some(mut old) => {
                    finish(&mut old, self.fsync)?;
                    old.index.map(|i| i + 1)
                }
                None => {
                    if self.open.len() >= MAX_OPEN {
                        self.close_oldest()?;
                    }
                    match self.next_index.remove(&key) {
                        Some(i) => Some(i),
                        None => self.rolling().then(|| highest_index(&key).unwrap_or(0)),
                    }
                }
            };
            let f = self.open_file(&key, index)?;
            self.open.insert(key, f);
        }
        self.open
            .get_mut(self.path.as_str())
            .ok_or_else(|| std::io::Error::other("file sink: open file vanished"))
    }

    fn close_oldest(&mut self) -> std::io::Result<()> {
        if let Some(key) = self
            .open
            .iter()
            .min_by_key(|(_, f)| f.opened)
            .map(|(k, _)| k.clone())
        {
            if let Some(mut f) = self.open.remove(&key) {
                finish(&mut f, self.fsync)?;
            }
        }
        Ok(())
    }

    /// Closes files whose interval has passed, so a quiet file still rolls on time.
    fn roll_expired(&mut self) -> std::io::Result<()> {
        let Some(max) = self.roll_interval else {
            return Ok(());
        };
        let expired: Vec<String> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= max)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(mut f) = self.open.remove(&key) {
                finish(&mut f, self.fsync)?;
                // The next event for this path opens a new file.
                if let Some(i) = f.index {
                    self.next_index.insert(key, i + 1);
                }
            }
        }
        Ok(())
    }
}

/// Writes what is pending and flushes (and fsyncs, if asked).
fn finish(f: &mut OpenFile, fsync: bool) -> std::io::Result<()> {
    if !f.pending.is_empty() {
        f.file.write_all(&f.pending)?;
        f.bytes += f.pending.len() as u64;
        f.pending.clear();
    }
    f.file.flush()?;
    if fsync {
        f.file.sync_data()?;
    }
    Ok(())
}

fn file_name(resolved: &str, index: Option<u64>) -> PathBuf {
    match index {
        Some(i) => PathBuf::from(format!("{resolved}.{i}")),
        None => PathBuf::from(resolved),
    }
}

/// The highest `N` among existing `<resolved>.<N>` files.
fn highest_index(resolved: &str) -> Option<u64> {
    let path = Path::new(resolved);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{}.", path.file_name()?.to_string_lossy());
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()
        })
        .max()
}

impl FileSink {
    fn write_batch(&mut self, batch: &[Event]) -> Result<(), DeliveryError> {
        let Some(codec) = self.codec.builtin() else {
            return self.deliver_per_file(batch);
        };
        // The file of the current run of events with one path is held out of the map while
        // the run lasts, so an event costs no hash lookup (a fifth of a file pipeline's time).
        let mut current: Option<(String, OpenFile)> = None;
        let written = self.write_runs(codec, batch, &mut current);
        if let Some((path, f)) = current {
            self.open.insert(path, f);
        }
        written?;
        for f in self.open.values_mut() {
            finish(f, self.fsync)?;
        }
        self.roll_expired()?;
        Ok(())
    }

    fn write_runs(
        &mut self,
        codec: CodecName,
        batch: &[Event],
        current: &mut Option<(String, OpenFile)>,
    ) -> Result<(), DeliveryError> {
        let constant = self.template.is_constant();
        for (i, e) in batch.iter().enumerate() {
            if !constant || i == 0 {
                let mut path = std::mem::take(&mut self.path);
                self.template.render(e, &mut path);
                self.path = path;
            }
            let same = current
                .as_ref()
                .is_some_and(|(p, f)| *p == self.path && !self.is_full(f));
            if !same {
                if let Some((path, f)) = current.take() {
                    self.open.insert(path, f);
                }
                // Opens, or rolls, the file for `self.path`.
                self.file_for_current_path()?;
                if let Some(f) = self.open.remove(self.path.as_str()) {
                    *current = Some((self.path.clone(), f));
                }
            }
            let Some((_, f)) = current.as_mut() else {
                return Err(std::io::Error::other("file sink: open file vanished").into());
            };
            codec::encode_into(codec, e, &mut f.pending);
            f.events += 1;
            // Keep per-file buffers bounded and roll boundaries exact.
            let over_size = self
                .roll_size
                .is_some_and(|m| f.bytes + f.pending.len() as u64 >= m);
            if f.pending.len() >= 1 << 20
                || over_size
                || self.roll_count.is_some_and(|m| f.events >= m)
            {
                finish(f, self.fsync)?;
            }
        }
        Ok(())
    }

    fn close_all(&mut self) -> std::io::Result<()> {
        for f in self.open.values_mut() {
            finish(f, self.fsync)?;
        }
        self.open.clear();
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        crate::blocking::run(|| self.write_batch(batch))
    }

    async fn idle(&mut self) -> Result<(), DeliveryError> {
        Ok(crate::blocking::run(|| self.roll_expired())?)
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        Ok(crate::blocking::run(|| self.close_all())?)
    }
}

/// Cuts a line-framed file back to its last complete line. A write that a SIGKILL stops part
/// way (the kernel returns short between pages) leaves part of a batch that was never
/// committed, so it will be written again; appending after the fragment would glue it to the
/// next line.
fn drop_torn_line(file: &File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = [0u8; 4096];
    let mut f = file;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(
            bytes = len - end,
            "cutting an incomplete last line (from a crash) off the file"
        );
        file.set_len(end)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_last_line_is_cut_off_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        for (before, after) in [
            ("a\nb\npart", "a\nb\n"),
            ("a\nb\n", "a\nb\n"),
            ("part", ""),
            ("", ""),
        ] {
            std::fs::write(&path, before).unwrap();
            let f = OpenOptions::new()
                .append(true)
                .read(true)
                .open(&path)
                .unwrap();
            drop_torn_line(&f).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{before:?}");
        }
    }

    fn cfg(path: &Path) -> FileSinkConfig {
        FileSinkConfig {
            path: path.to_string_lossy().into_owned(),
            format: CodecRef::Builtin(CodecName::Lines),
            parquet: None,
            roll_size: None,
            roll_count: None,
            roll_interval: None,
            fsync: false,
        }
    }

    fn read(p: impl AsRef<Path>) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[tokio::test]
    async fn rolls_by_count_exactly_and_continues_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(&dir.path().join("out.log"));
        c.roll_count = Some(3);
        let mut s = FileSink::new(&c, Box::new(CodecName::Lines)).unwrap();
        let evs: Vec<Event> = (0..7).map(|i| Event::new(format!("e{i}"))).collect();
        s.deliver(&Batch::new(&evs)).await.unwrap();
        s.close().await.unwrap();
        let p = |i| dir.path().join(format!("out.log.{i}"));
        assert_eq!(read(p(0)), "e0\ne1\ne2\n");
        assert_eq!(read(p(1)), "e3\ne4\ne5\n");
        assert_eq!(read(p(2)), "e6\n");
        // A restarted sink continues the highest file.
        let mut s = FileSink::new(&c, Box::new(CodecName::Lines)).unwrap();
        s.deliver(&Batch::new(&[Event::new("e7")])).await.unwrap();
        s.close().await.unwrap();
        assert_eq!(read(p(2)), "e6\ne7\n");
    }

    #[tokio::test]
    async fn rolls_by_size_and_interval_and_templates_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(&dir.path().join("%{kind}/x"));
        c.roll_size = Some(ByteSize(6));
        c.roll_interval = Some(HumanDuration(Duration::from_millis(50)));
        let mut s = FileSink::new(&c, Box::new(CodecName::Lines)).unwrap();
        let evs = [
            Event::new("aa").with_header("kind", "k1"),
            Event::new("bb").with_header("kind", "k2"),
            Event::new("cc").with_header("kind", "k1"),
            Event::new("dd").with_header("kind", "k1"),
        ];
        s.deliver(&Batch::new(&evs)).await.unwrap();
        assert_eq!(read(dir.path().join("k1/x.0")), "aa\ncc\n");
        assert_eq!(read(dir.path().join("k1/x.1")), "dd\n");
        assert_eq!(read(dir.path().join("k2/x.0")), "bb\n");
        tokio::time::sleep(Duration::from_millis(60)).await;
        s.idle().await.unwrap();
        s.deliver(&Batch::new(&[Event::new("ee").with_header("kind", "k2")]))
            .await
            .unwrap();
        assert_eq!(
            read(dir.path().join("k2/x.1")),
            "ee\n",
            "interval roll starts a new file"
        );
    }

    #[tokio::test]
    async fn write_errors_are_retriable() {
        let mut s =
            FileSink::new(&cfg(Path::new("/dev/full")), Box::new(CodecName::Lines)).unwrap();
        let e = s
            .deliver(&Batch::new(&[Event::new("x")]))
            .await
            .unwrap_err();
        assert!(matches!(e, DeliveryError::Retriable { .. }), "{e:?}");
    }
}
