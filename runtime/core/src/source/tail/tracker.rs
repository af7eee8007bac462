//! Which files are followed, and in what order they are read.
//!
//! Files are found by globbing; each is known by its inode (see [`super::position`]), so a
//! rename is noticed as the same file under another name and a new file at an old name as a
//! new file. A file renamed away or deleted keeps being read through its open descriptor and
//! is dropped once it has been quiet for `rotate_wait`. Renamed files are read before the
//! others, oldest first: what a writer appended to `app.log` before it was rotated comes before
//! what it writes to the new `app.log`.
//!
//! Everything here is blocking file I/O; the source calls [`Tracker::step`] off the async
//! runtime, one batch at a time.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::config::StartAt;
use super::{
    position::{FileId, Position, PositionStore, read_prefix},
    reader::{Framing, Line, TailedFile},
};

/// What the tracker needs from the config, with paths made absolute.
pub struct Settings {
    pub globs: Vec<String>,
    pub position_file: PathBuf,
    pub start_at: StartAt,
    pub rotate_wait: Duration,
    pub framing: Framing,
}

/// What became of the batch the previous step handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was empty (or this is the first step).
    None,
    /// Committed to the channels: its positions may be saved.
    Committed,
    /// Not committed: it is read again.
    Failed,
}

pub struct Tracker {
    s: Settings,
    store: PositionStore,
    /// In discovery order (saved order first after a restart).
    files: Vec<TailedFile>,
    /// Where the round among non-rotated files starts, so none is always last.
    cursor: usize,
    /// Positions changed since the last save.
    dirty: bool,
    /// Paths that could not be opened, warned about once.
    unreadable: HashSet<PathBuf>,
}

impl Tracker {
    /// Loads the saved positions, finds the files to follow and saves where each starts (so a
    /// `start_at: end` decision survives a restart before the first commit).
    pub fn open(s: Settings) -> io::Result<Tracker> {
        let store = PositionStore::new(s.position_file.clone());
        let saved = store.load()?;
        let mut t = Tracker {
            s,
            store,
            files: Vec::new(),
            cursor: 0,
            dirty: true,
            unreadable: HashSet::new(),
        };
        t.discover(saved, Instant::now())?;
        t.save()?;
        Ok(t)
    }

    pub fn files(&self) -> &[TailedFile] {
        &self.files
    }

    /// Applies the previous batch's outcome (saving positions after a commit), then, unless
    /// `max` is 0, looks for new and rotated files (when `scan`) and hands out up to `max`
    /// lines. The caller must report what became of a non-empty result in the next step.
    pub fn step(&mut self, outcome: Outcome, scan: bool, max: usize) -> io::Result<Vec<Line>> {
        match outcome {
            Outcome::Committed => self.commit(),
            Outcome::Failed => self.rewind()?,
            Outcome::None => {}
        }
        if outcome != Outcome::Failed {
            // Nothing is in flight now: files whose last lines are committed can go.
            self.drop_finished();
        }
        self.save()?;
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let now = Instant::now();
        if scan {
            self.scan(now)?;
        }
        self.fill(now, max, &mut out)?;
        Ok(out)
    }

    fn commit(&mut self) {
        for f in &mut self.files {
            if f.in_flight() {
                f.commit();
                self.dirty = true;
            }
        }
    }

    fn drop_finished(&mut self) {
        let before = self.files.len();
        self.files.retain(|f| {
            if f.finished {
                tracing::info!(file = %f.path.display(), "rotated file read to its end; closed");
            }
            !f.finished
        });
        self.dirty |= self.files.len() != before;
    }

    fn rewind(&mut self) -> io::Result<()> {
        for f in &mut self.files {
            f.rewind()?;
        }
        Ok(())
    }

    fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let positions: Vec<Position> = self.files.iter().map(TailedFile::position).collect();
        self.store.save(&positions)?;
        self.dirty = false;
        Ok(())
    }

    /// Every regular file the globs match now, once each (the position file excepted).
    fn matches(&self) -> Vec<(PathBuf, FileId)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for pattern in &self.s.globs {
            // Patterns were checked when the source was built.
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for entry in paths {
                let path = match entry {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(error = %e, "glob skipped an unreadable directory");
                        continue;
                    }
                };
                if path == self.store.path() || path == self.store.tmp_path() {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let id = FileId::of(&path, &meta);
                if seen.insert(id) {
                    out.push((path, id));
                }
            }
        }
        out
    }

    /// Opens `path` if it still is the file `id` (it may have been replaced since it was seen).
    fn open_as(&mut self, path: &Path, id: FileId) -> Option<File> {
        match File::open(path) {
            Ok(file) => {
                let same = file.metadata().is_ok_and(|m| FileId::of(path, &m) == id);
                same.then_some(file)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None, // gone since the glob
            Err(e) => {
                if self.unreadable.insert(path.to_owned()) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot open a file matching the globs; skipping it");
                }
                None
            }
        }
    }

    /// The first look, at start-up: saved files resume where they were committed (if their
    /// content is still the one read); a saved file no longer matched is looked for in its
    /// old directory (renamed while the agent was stopped) and read to its end.
    fn discover(&mut self, saved: Option<Vec<Position>>, now: Instant) -> io::Result<()> {
        let first_run = saved.is_none();
        // (rank, position): saved files keep their saved order, new ones come after.
        let mut saved: Vec<(usize, Position)> =
            saved.unwrap_or_default().into_iter().enumerate().collect();
        let ranked = saved.len();
        let mut found: Vec<(usize, TailedFile)> = Vec::new();
        for (path, id) in self.matches() {
            let Some(file) = self.open_as(&path, id) else {
                continue;
            };
            let len = file.metadata()?.len();
            let (rank, offset, renamed) = match saved.iter().position(|(_, p)| p.id == id) {
                Some(i) => {
                    let (rank, p) = saved.remove(i);
                    (rank, resume_offset(&p, &file, len, &path)?, p.path != path)
                }
                None if first_run && self.s.start_at == StartAt::End => {
                    (ranked + found.len(), end_of_last_line(&file, len)?, false)
                }
                None => (ranked + found.len(), 0, false),
            };
            let mut f = TailedFile::open(path, file, id, offset, now)?;
            f.rotated = renamed;
            found.push((rank, f));
        }
        for (rank, p) in saved {
            let Some((path, file)) = find_renamed(&p) else {
                tracing::info!(file = %p.path.display(), "a followed file is gone; forgetting its position");
                continue;
            };
            let len = file.metadata()?.len();
            let offset = resume_offset(&p, &file, len, &path)?;
            tracing::info!(file = %path.display(), was = %p.path.display(), "following a file renamed while stopped to its end");
            let mut f = TailedFile::open(path, file, p.id, offset, now)?;
            f.rotated = true;
            f.gone_since = Some(now);
            found.push((rank, f));
        }
        found.sort_by_key(|(rank, _)| *rank);
        self.files = found.into_iter().map(|(_, f)| f).collect();
        Ok(())
    }

    /// Notices new files (read from their start), renamed and vanished ones, and rewritten ones.
    fn scan(&mut self, now: Instant) -> io::Result<()> {
        let index: HashMap<FileId, usize> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id, i))
            .collect();
        let mut present = vec![false; self.files.len()];
        let mut new = Vec::new();
        for (path, id) in self.matches() {
            let Some(&i) = index.get(&id) else {
                new.push((path, id));
                continue;
            };
            present[i] = true;
            let f = &mut self.files[i];
            if f.path != path {
                tracing::info!(from = %f.path.display(), to = %path.display(), "followed file renamed");
                f.set_path(path);
                f.rotated = true;
                self.dirty = true;
            }
        }
        for (f, here) in self.files.iter_mut().zip(present) {
            if here {
                f.gone_since = None;
            } else if f.gone_since.is_none() {
                tracing::info!(file = %f.path.display(), "file no longer matches the globs (renamed or deleted); reading it to its end");
                f.gone_since = Some(now);
                f.rotated = true;
            }
            f.check_content()?;
        }
        for (path, id) in new {
            let Some(file) = self.open_as(&path, id) else {
                continue;
            };
            tracing::info!(file = %path.display(), "following a new file");
            self.files.push(TailedFile::open(path, file, id, 0, now)?);
            self.dirty = true;
        }
        Ok(())
    }

    /// Hands out up to `max` lines: rotated files first, each to its end; then the others in
    /// turns, so one busy file cannot starve the rest.
    fn fill(&mut self, now: Instant, max: usize, out: &mut Vec<Line>) -> io::Result<()> {
        let framing = &self.s.framing;
        let rotate_wait = self.s.rotate_wait;
        // One look at each size per fill: growth, truncation, and how far to read.
        let mut limits = Vec::with_capacity(self.files.len());
        for f in &mut self.files {
            limits.push(if f.finished {
                f.read_pos()
            } else {
                f.observe(now)?
            });
        }

        for (f, &limit) in self.files.iter_mut().zip(&limits) {
            if !f.rotated || f.finished {
                continue;
            }
            let room = max.saturating_sub(out.len());
            if room == 0 {
                return Ok(());
            }
            self.dirty |= read_file(f, limit, framing, room, out, now)?;
            let quiet = f.gone_since.is_some_and(|gone| {
                now.saturating_duration_since(gone.max(f.last_growth)) >= rotate_wait
            });
            if quiet && f.read_pos() >= limit && out.len() + 2 <= max {
                out.extend(f.take_rest());
                f.finished = true;
            }
        }

        let active: Vec<usize> = (0..self.files.len())
            .filter(|&i| !self.files[i].rotated)
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        let first = self.cursor % active.len();
        self.cursor = self.cursor.wrapping_add(1);
        loop {
            let before = out.len();
            let share = (max.saturating_sub(out.len()) / active.len()).max(1);
            for &i in active.iter().cycle().skip(first).take(active.len()) {
                let room = max.saturating_sub(out.len()).min(share);
                if room == 0 {
                    return Ok(());
                }
                self.dirty |= read_file(&mut self.files[i], limits[i], framing, room, out, now)?;
            }
            if out.len() == before {
                return Ok(());
            }
        }
    }
}

/// Reads one file up to `limit`, at most `room` lines. A file now shorter than what was read,
/// or whose beginning changed, was truncated (copy-truncate) or rewritten: what is still
/// buffered of its old content is handed out, and it is followed again from its start.
/// Returns whether that happened (its position changed). Should this batch then fail, those
/// last old lines cannot be read again: the truncation took them.
fn read_file(
    f: &mut TailedFile,
    limit: u64,
    framing: &Framing,
    room: usize,
    out: &mut Vec<Line>,
    now: Instant,
) -> io::Result<bool> {
    let mut room = room;
    let mut restarted = false;
    if limit < f.read_pos() || f.rewritten {
        if room < 2 {
            return Ok(false); // next time, with room for the old content's last lines
        }
        tracing::warn!(
            file = %f.path.display(),
            "file was truncated or rewritten (copy-truncate?); reading it again from its start"
        );
        let rest = f.take_rest();
        room -= rest.len();
        out.extend(rest);
        f.restart()?;
        restarted = true;
    }
    f.fill(limit, framing, room, out, now)?;
    Ok(restarted)
}

/// Where to resume a saved file: its offset if the content is still the one that was read,
/// else its start (an inode reused by another file, or a file truncated while stopped).
fn resume_offset(p: &Position, file: &File, len: u64, path: &Path) -> io::Result<u64> {
    if !p.fingerprint.matches(&read_prefix(file)?) {
        tracing::info!(file = %path.display(), "not the content read before (inode reused or file rewritten); reading it from its start");
        return Ok(0);
    }
    if p.offset > len {
        tracing::info!(file = %path.display(), "file truncated while stopped; reading it from its start");
        return Ok(0);
    }
    Ok(p.offset)
}

/// A saved file that no longer matches the globs, looked for by inode next to where it was.
fn find_renamed(p: &Position) -> Option<(PathBuf, File)> {
    let dir = p.path.parent()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && FileId::of(&path, &meta) == p.id {
            let file = File::open(&path).ok()?;
            return Some((path, file));
        }
    }
    None
}

/// Just past the last complete line, so `start_at: end` skips what is there but not the rest
/// of a line being written.
fn end_of_last_line(file: &File, len: u64) -> io::Result<u64> {
    const LOOK_BACK: u64 = 64 * 1024;
    let from = len.saturating_sub(LOOK_BACK);
    let mut f = file;
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.take(len - from).read_to_end(&mut tail)?;
    Ok(match memchr::memrchr(b'\n', &tail) {
        Some(i) => from + i as u64 + 1,
        None if from == 0 => 0,
        None => len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs::OpenOptions, io::Write};

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("logs")).unwrap();
            Fixture { dir }
        }

        fn log(&self, name: &str) -> PathBuf {
            self.dir.path().join("logs").join(name)
        }

        fn append(&self, name: &str, text: &str) {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }

        fn settings(&self, start_at: StartAt) -> Settings {
            Settings {
                globs: vec![format!("{}/*.log", self.dir.path().join("logs").display())],
                position_file: self.dir.path().join("positions.json"),
                start_at,
                rotate_wait: Duration::ZERO,
                framing: Framing {
                    max_bytes: 1 << 20,
                    multiline: None,
                },
            }
        }

        fn open(&self) -> Tracker {
            Tracker::open(self.settings(StartAt::Beginning)).unwrap()
        }

        fn saved(&self) -> Vec<Position> {
            PositionStore::new(self.dir.path().join("positions.json"))
                .load()
                .unwrap()
                .unwrap()
        }
    }

    fn bodies(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8(l.body.to_vec()).unwrap())
            .collect()
    }

    /// One step that commits the previous batch and returns the next one's bodies.
    fn next(t: &mut Tracker, outcome: Outcome) -> Vec<String> {
        bodies(&t.step(outcome, true, 100).unwrap())
    }

    #[test]
    fn follows_growth_and_new_files_and_resumes_exactly_after_a_restart() {
        let fx = Fixture::new();
        fx.append("a.log", "a1\na2\n");
        let mut t = fx.open();
        assert_eq!(next(&mut t, Outcome::None), vec!["a1", "a2"]);
        assert!(next(&mut t, Outcome::Committed).is_empty());
        fx.append("a.log", "a3\n");
        fx.append("b.log", "b1\n");
        let mut got = next(&mut t, Outcome::None);
        got.sort();
        assert_eq!(got, vec!["a3", "b1"]);
        assert!(next(&mut t, Outcome::Committed).is_empty());
        drop(t);
        fx.append("a.log", "a4\n");
        let mut t = fx.open();
        assert_eq!(next(&mut t, Outcome::None), vec!["a4"]);
        assert_eq!(t.files().len(), 2);
    }

    #[test]
    fn a_failed_batch_is_read_again_and_only_commits_are_saved() {
        let fx = Fixture::new();
        fx.append("a.log", "x\ny\n");
        let mut t = fx.open();
        assert_eq!(next(&mut t, Outcome::None), vec!["x", "y"]);
        assert_eq!(fx.saved()[0].offset, 0, "nothing committed yet");
        assert_eq!(next(&mut t, Outcome::Failed), vec!["x", "y"]);
        assert!(next(&mut t, Outcome::Committed).is_empty());
        assert_eq!(fx.saved()[0].offset, 4);
    }

    #[test]
    fn rename_rotation_reads_the_old_file_to_its_end_before_the_new_one() {
        let fx = Fixture::new();
        fx.append("a.log", "1\n2\n");
        let mut t = fx.open();
        assert_eq!(next(&mut t, Outcome::None), vec!["1", "2"]);
        std::fs::rename(fx.log("a.log"), fx.log("a.log.1")).unwrap();
        fx.append("a.log.1", "3\n"); // a writer that has not reopened yet
        fx.append("a.log", "4\n");
        assert_eq!(next(&mut t, Outcome::Committed), vec!["3", "4"]);
        assert!(next(&mut t, Outcome::Committed).is_empty());
        assert_eq!(t.files().len(), 1, "the rotated file was closed");
        let saved = fx.saved();
        assert_eq!(saved.len(), 1);
        assert_eq!(
            (saved[0].path.clone(), saved[0].offset),
            (fx.log("a.log"), 2)
        );
    }

    #[test]
    fn copy_truncate_and_rewrites_start_the_file_over() {
        let fx = Fixture::new();
        fx.append("b.log", "old1\nold2\n");
        let mut t = fx.open();
        assert_eq!(next(&mut t, Outcome::None), vec!["old1", "old2"]);
        std::fs::copy(fx.log("b.log"), fx.log("b.log.1")).unwrap();
        OpenOptions::new()
            .write(true)
            .open(fx.log("b.log"))
            .unwrap()
            .set_len(0)
            .unwrap();
        fx.append("b.log", "new1\n");
        assert_eq!(next(&mut t, Outcome::Committed), vec!["new1"]);
        // Rewritten in place and already longer than the position: the beginning changed.
        std::fs::write(fx.log("b.log"), "REWRITTEN and longer\nnext\n").unwrap();
        assert_eq!(
            next(&mut t, Outcome::Committed),
            vec!["REWRITTEN and longer", "next"]
        );
        assert!(next(&mut t, Outcome::Committed).is_empty());
        assert_eq!(fx.saved()[0].offset, 26);
    }

    #[test]
    fn a_rotation_while_stopped_is_followed_and_a_rewritten_file_starts_over() {
        let fx = Fixture::new();
        fx.append("a.log", "1\n2\n");
        fx.append("c.log", "hello\n");
        let mut t = fx.open();
        assert_eq!(next(&mut t, Outcome::None).len(), 3);
        assert!(next(&mut t, Outcome::Committed).is_empty());
        drop(t);
        fx.append("a.log", "3\n");
        std::fs::rename(fx.log("a.log"), fx.log("a.log.1")).unwrap();
        fx.append("a.log", "4\n");
        std::fs::write(fx.log("c.log"), "HELLO world\n").unwrap();
        let mut t = fx.open();
        let got = next(&mut t, Outcome::None);
        assert_eq!(
            got,
            vec!["3", "HELLO world", "4"],
            "renamed first, then by saved order"
        );
        assert!(next(&mut t, Outcome::Committed).is_empty());
        assert_eq!(t.files().len(), 2);
    }

    #[test]
    fn start_at_end_skips_complete_lines_on_the_first_run_only() {
        let fx = Fixture::new();
        fx.append("a.log", "old\npart");
        let mut t = Tracker::open(fx.settings(StartAt::End)).unwrap();
        assert!(next(&mut t, Outcome::None).is_empty());
        fx.append("a.log", "ial\nnew\n");
        fx.append("b.log", "b1\n");
        let mut got = next(&mut t, Outcome::None);
        got.sort();
        assert_eq!(
            got,
            vec!["b1", "new", "partial"],
            "new files from their start"
        );
        assert!(next(&mut t, Outcome::Committed).is_empty());
        drop(t);
        fx.append("d.log", "d1\n");
        let mut t = Tracker::open(fx.settings(StartAt::End)).unwrap();
        assert_eq!(
            next(&mut t, Outcome::None),
            vec!["d1"],
            "after the first run, unknown files were created while stopped"
        );
    }

    #[test]
    fn the_position_file_is_never_followed() {
        let fx = Fixture::new();
        fx.append("a.log", "x\n");
        let mut s = fx.settings(StartAt::Beginning);
        s.globs = vec![format!("{}/*", fx.dir.path().join("logs").display())];
        s.position_file = fx.log("positions.json");
        let mut t = Tracker::open(s).unwrap();
        assert_eq!(next(&mut t, Outcome::None), vec!["x"]);
        assert!(next(&mut t, Outcome::Committed).is_empty());
        assert!(next(&mut t, Outcome::None).is_empty());
        assert_eq!(t.files().len(), 1);
    }
}
