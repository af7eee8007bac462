//! One followed file: large buffered reads cut into lines (or multi-line events) without
//! copying, and the two offsets that make delivery exact — how far events were handed out, and
//! how far they were committed.
//!
//! The buffer always starts at the first byte not yet handed out, so "handed out" is simply
//! `start`. A commit moves `committed` up to it; a failed batch rewinds the file to `committed`
//! and the same bytes are read and cut again.

use std::{
    fs::File,
    io::{self, Seek, SeekFrom},
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};

use crate::event::HeaderText;

use super::position::{FileId, Fingerprint, Position, read_prefix};

/// Bytes asked of the OS per read.
const CHUNK: usize = 64 * 1024;

/// How bytes become events.
pub struct Framing {
    /// Longest event body; longer lines are split into pieces of this size.
    pub max_bytes: usize,
    pub multiline: Option<Multiline>,
}

/// Multi-line events: a line matching `start` begins a new event, any other line continues the
/// current one. The current event is complete when the next one starts, or when no line has
/// arrived for `timeout`.
pub struct Multiline {
    pub start: regex::bytes::Regex,
    pub timeout: Duration,
}

/// A line (or multi-line event) cut from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct Line {
    pub body: Bytes,
    pub path: HeaderText,
    /// Byte offset of its first byte in the file.
    pub offset: u64,
}

pub struct TailedFile {
    pub id: FileId,
    pub path: PathBuf,
    /// `path` as a string, shared by every line read from it.
    label: HeaderText,
    file: File,
    pub fingerprint: Fingerprint,
    /// Bytes read but not yet handed out; `buf[0]` is at offset `start`.
    buf: BytesMut,
    start: u64,
    /// How far the current line (from `held`) has been searched for a newline, so a long
    /// partial line is scanned once, not once per read.
    scanned: usize,
    /// Multiline: bytes of `buf` holding the complete lines of the event being assembled.
    held: usize,
    held_since: Instant,
    /// Every byte before this is in a committed event.
    pub committed: u64,
    /// The file's size when last looked at, and when it last grew.
    pub last_len: u64,
    pub last_growth: Instant,
    /// Renamed, or gone from the globs: read before the others (its successor continues it).
    pub rotated: bool,
    /// Since when the globs no longer match it (renamed away or deleted).
    pub gone_since: Option<Instant>,
    /// Its first bytes changed since they were fingerprinted: truncated and rewritten.
    pub rewritten: bool,
    /// Its last events were handed out; it is dropped once they are committed.
    pub finished: bool,
    /// Lines longer than `max_bytes` that were split.
    pub split_lines: u64,
}

impl TailedFile {
    /// Starts following `file` (already open at `path`) from `offset`.
    pub fn open(
        path: PathBuf,
        mut file: File,
        id: FileId,
        offset: u64,
        now: Instant,
    ) -> io::Result<TailedFile> {
        let fingerprint = Fingerprint::of(&read_prefix(&file)?);
        file.seek(SeekFrom::Start(offset))?;
        let len = file.metadata()?.len();
        Ok(TailedFile {
            id,
            label: label(&path),
            path,
            file,
            fingerprint,
            buf: BytesMut::new(),
            start: offset,
            scanned: 0,
            held: 0,
            held_since: now,
            committed: offset,
            last_len: len,
            last_growth: now,
            rotated: false,
            gone_since: None,
            rewritten: false,
            finished: false,
            split_lines: 0,
        })
    }

    pub fn set_path(&mut self, path: PathBuf) {
        self.label = label(&path);
        self.path = path;
    }

    /// Offset of the next byte a read returns.
    pub fn read_pos(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// True when events were handed out that are not committed yet.
    pub fn in_flight(&self) -> bool {
        self.start != self.committed
    }

    /// Looks at the file's size (one fstat), noting growth; returns the size.
    pub fn observe(&mut self, now: Instant) -> io::Result<u64> {
        let len = self.file.metadata()?.len();
        if len > self.last_len {
            self.last_growth = now;
        }
        self.last_len = len;
        Ok(len)
    }

    /// Re-reads the first bytes: a changed beginning marks the file rewritten; a grown one
    /// extends the fingerprint (until it covers the full length).
    pub fn check_content(&mut self) -> io::Result<()> {
        if self.finished || self.rewritten {
            return Ok(());
        }
        let prefix = read_prefix(&self.file)?;
        if !self.fingerprint.matches(&prefix) {
            self.rewritten = true;
        } else if prefix.len() > self.fingerprint.len as usize {
            self.fingerprint = Fingerprint::of(&prefix);
        }
        Ok(())
    }

    /// The batch was committed: what was handed out is now safe.
    pub fn commit(&mut self) {
        self.committed = self.start;
    }

    /// The batch failed: forget what was handed out since the last commit and read it again.
    pub fn rewind(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(self.committed))?;
        self.start = self.committed;
        self.buf.clear();
        self.scanned = 0;
        self.held = 0;
        self.finished = false;
        Ok(())
    }

    /// The file was truncated (copy-truncate) or rewritten: follow it again from its start.
    pub fn restart(&mut self) -> io::Result<()> {
        self.committed = 0;
        self.rewind()?;
        self.rewritten = false;
        self.fingerprint = Fingerprint::of(&read_prefix(&self.file)?);
        self.last_len = self.file.metadata()?.len();
        Ok(())
    }

    pub fn position(&self) -> Position {
        Position {
            path: self.path.clone(),
            id: self.id,
            fingerprint: self.fingerprint,
            offset: self.committed,
        }
    }

    /// Hands out up to `max` events from the file's content up to offset `limit` (its size
    /// when this fill began). An assembled multi-line event whose writer has paused for the
    /// timeout is complete.
    pub fn fill(
        &mut self,
        limit: u64,
        framing: &Framing,
        max: usize,
        out: &mut Vec<Line>,
        now: Instant,
    ) -> io::Result<()> {
        let mut n = 0;
        while n < max {
            if let Some(line) = self.next_event(framing, now) {
                out.push(line);
                n += 1;
                continue;
            }
            if self.read_chunk(limit)? == 0 {
                break;
            }
        }
        if n < max {
            if let Some(ml) = &framing.multiline {
                if self.held > 0 && now.saturating_duration_since(self.held_since) >= ml.timeout {
                    out.push(self.take(self.held, true));
                }
            }
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                // At the end with nothing pending: give the buffer back until the file grows.
                self.buf = BytesMut::new();
            }
        }
        Ok(())
    }

    /// Everything still buffered, as final events: the assembled multi-line event, then an
    /// unterminated last line. For a file that will not be written again.
    pub fn take_rest(&mut self) -> Vec<Line> {
        let mut rest = Vec::new();
        if self.held > 0 {
            rest.push(self.take(self.held, true));
        }
        if !self.buf.is_empty() {
            rest.push(self.take(self.buf.len(), false));
        }
        rest
    }

    /// Reads one more chunk into the buffer, not past `limit`; 0 at the limit.
    fn read_chunk(&mut self, limit: u64) -> io::Result<usize> {
        let pos = self.read_pos();
        if pos >= limit {
            return Ok(0);
        }
        let want = usize::try_from(limit - pos)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        self.buf.reserve(want);
        let n = loop {
            match read_into_spare(&mut self.file, &mut self.buf, want) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(n)
    }

    /// Cuts the next complete event off the buffer, if there is one.
    fn next_event(&mut self, framing: &Framing, now: Instant) -> Option<Line> {
        let max = framing.max_bytes;
        loop {
            // The current line starts at `held`.
            let from = self.scanned.max(self.held);
            let Some(nl) = memchr::memchr(b'\n', &self.buf[from..]).map(|i| from + i) else {
                self.scanned = self.buf.len();
                if self.buf.len() - self.held <= max {
                    return None; // a partial line: wait for the rest
                }
                // Over-long and still unterminated: hand out what is held, then a piece.
                return Some(self.over_long(max));
            };
            if nl - self.held > max {
                self.scanned = nl;
                return Some(self.over_long(max));
            }
            let Some(ml) = &framing.multiline else {
                return Some(self.take(nl + 1, true));
            };
            let line = trim_cr(&self.buf[self.held..nl]);
            if self.held > 0 && (ml.start.is_match(line) || nl > max) {
                // This line starts the next event (or would make this one too long).
                self.scanned = nl;
                return Some(self.take(self.held, true));
            }
            self.held = nl + 1;
            self.scanned = self.held;
            self.held_since = now;
        }
    }

    /// A line longer than the limit: the held event first, if any, else the first piece.
    fn over_long(&mut self, max: usize) -> Line {
        if self.held > 0 {
            return self.take(self.held, true);
        }
        self.split_lines += 1;
        if self.split_lines == 1 {
            tracing::warn!(
                file = %self.path.display(),
                max_bytes = max,
                "line longer than max_line_bytes; it is split into several events"
            );
        }
        self.take(max, false)
    }

    /// Hands out the first `n` bytes as an event (without the line end when `trim`).
    fn take(&mut self, n: usize, trim: bool) -> Line {
        let offset = self.start;
        let mut body = self.buf.split_to(n);
        if trim && body.last() == Some(&b'\n') {
            body.truncate(body.len() - 1);
            if body.last() == Some(&b'\r') {
                body.truncate(body.len() - 1);
            }
        }
        self.start += n as u64;
        self.scanned = self.scanned.saturating_sub(n);
        self.held = self.held.saturating_sub(n);
        Line {
            body: body.freeze(),
            path: self.label.clone(),
            offset,
        }
    }
}

fn label(path: &std::path::Path) -> HeaderText {
    HeaderText::new(path.to_string_lossy())
}

/// Appends up to `want` bytes read from `file` to `buf` (which has room for them), without
/// zero-filling the room first: that cost as much as cutting the lines out of it.
#[cfg(unix)]
fn read_into_spare(file: &mut File, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let want = want.min(spare.len());
    // SAFETY: the kernel writes at most `want` bytes into the spare capacity, which is at
    // least that long.
    let r = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the `r` bytes past the old length were just written by `read`.
    unsafe { buf.set_len(buf.len() + r as usize) };
    Ok(r as usize)
}

/// Appends up to `want` bytes read from `file` to `buf`.
#[cfg(not(unix))]
fn read_into_spare(file: &mut File, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
    use std::io::Read;
    let old = buf.len();
    buf.resize(old + want, 0);
    let r = file.read(&mut buf[old..]);
    buf.truncate(old + *r.as_ref().unwrap_or(&0));
    r
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs::OpenOptions, io::Write};

    fn framing(max: usize, multiline: Option<&str>) -> Framing {
        Framing {
            max_bytes: max,
            multiline: multiline.map(|re| Multiline {
                start: regex::bytes::Regex::new(re).unwrap(),
                timeout: Duration::from_millis(100),
            }),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("app.log");
            File::create(&path).unwrap();
            Fixture { _dir: dir, path }
        }

        fn append(&self, bytes: &[u8]) {
            let mut f = OpenOptions::new().append(true).open(&self.path).unwrap();
            f.write_all(bytes).unwrap();
        }

        fn open(&self, offset: u64) -> TailedFile {
            let file = File::open(&self.path).unwrap();
            let meta = file.metadata().unwrap();
            TailedFile::open(
                self.path.clone(),
                file,
                FileId::of(&self.path, &meta),
                offset,
                Instant::now(),
            )
            .unwrap()
        }
    }

    /// Fills up to `max` and returns the bodies.
    fn read(t: &mut TailedFile, f: &Framing, max: usize, now: Instant) -> Vec<String> {
        let len = t.observe(now).unwrap();
        let mut out = Vec::new();
        t.fill(len, f, max, &mut out, now).unwrap();
        out.iter()
            .map(|l| String::from_utf8(l.body.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn complete_lines_only_with_offsets_and_crlf_trimmed() {
        let fx = Fixture::new();
        fx.append(b"one\ntwo\r\nthr");
        let mut t = fx.open(0);
        let f = framing(1024, None);
        let now = Instant::now();
        let mut out = Vec::new();
        let len = t.observe(now).unwrap();
        t.fill(len, &f, 10, &mut out, now).unwrap();
        let got: Vec<_> = out.iter().map(|l| (&l.body[..], l.offset)).collect();
        assert_eq!(got, vec![(&b"one"[..], 0), (&b"two"[..], 4)]);
        assert_eq!(
            t.read_pos(),
            12,
            "the partial line is buffered, not handed out"
        );
        fx.append(b"ee\n");
        assert_eq!(read(&mut t, &f, 10, now), vec!["three"]);
        assert!(t.in_flight());
        t.commit();
        assert_eq!(t.position().offset, 15);
    }

    #[test]
    fn batches_stop_at_max_and_rewind_hands_out_the_same_lines_again() {
        let fx = Fixture::new();
        fx.append(b"a\nb\nc\nd\n");
        let mut t = fx.open(0);
        let f = framing(1024, None);
        let now = Instant::now();
        assert_eq!(read(&mut t, &f, 2, now), vec!["a", "b"]);
        t.commit();
        assert_eq!(read(&mut t, &f, 2, now), vec!["c", "d"]);
        t.rewind().unwrap();
        assert_eq!(read(&mut t, &f, 10, now), vec!["c", "d"]);
        t.commit();
        assert_eq!(t.committed, 8);
        // Resuming from a saved position reads only what follows it.
        fx.append(b"e\n");
        let mut again = fx.open(8);
        assert_eq!(read(&mut again, &f, 10, now), vec!["e"]);
    }

    #[test]
    fn long_lines_are_split_at_max_bytes() {
        let fx = Fixture::new();
        fx.append(b"0123456789ab\nxy\n");
        let mut t = fx.open(0);
        let f = framing(5, None);
        let now = Instant::now();
        assert_eq!(
            read(&mut t, &f, 10, now),
            vec!["01234", "56789", "ab", "xy"]
        );
        assert_eq!(t.split_lines, 2);
        // Unterminated and already too long: split without waiting for the end.
        fx.append(b"abcdefgh");
        assert_eq!(read(&mut t, &f, 10, now), vec!["abcde"]);
    }

    #[test]
    fn multiline_joins_continuations_and_flushes_after_the_timeout() {
        let fx = Fixture::new();
        fx.append(b"ERROR boom\n  at a\n  at b\nINFO ok\n  more\n");
        let mut t = fx.open(0);
        let f = framing(1024, Some(r"^[A-Z]"));
        let now = Instant::now();
        assert_eq!(
            read(&mut t, &f, 10, now),
            vec!["ERROR boom\n  at a\n  at b"]
        );
        // "INFO ok\n  more" is held until the next start line or the timeout.
        assert_eq!(t.read_pos(), t.start + 15);
        let later = now + Duration::from_millis(150);
        assert_eq!(read(&mut t, &f, 10, later), vec!["INFO ok\n  more"]);
        fx.append(b"WARN x\n");
        let l = later + Duration::from_millis(1);
        assert!(read(&mut t, &f, 10, l).is_empty(), "a new event, held");
        t.commit();
        assert_eq!(t.committed, 40, "committed stops before the held event");
        t.rewind().unwrap();
        assert!(read(&mut t, &f, 10, l).is_empty(), "read again, held again");
        assert_eq!(
            read(&mut t, &f, 10, l + Duration::from_millis(150)),
            vec!["WARN x"]
        );
    }

    #[test]
    fn take_rest_hands_out_held_and_partial_bytes() {
        let fx = Fixture::new();
        fx.append(b"A1\n cont\nunterminated");
        let mut t = fx.open(0);
        let f = framing(1024, Some("^[A-Z]"));
        let now = Instant::now();
        assert!(read(&mut t, &f, 10, now).is_empty());
        let rest: Vec<_> = t
            .take_rest()
            .into_iter()
            .map(|l| String::from_utf8(l.body.to_vec()).unwrap())
            .collect();
        assert_eq!(rest, vec!["A1\n cont", "unterminated"]);
        assert_eq!(t.start, 21);
    }

    #[test]
    fn a_rewritten_beginning_is_noticed() {
        let fx = Fixture::new();
        fx.append(b"first line\n");
        let mut t = fx.open(0);
        let now = Instant::now();
        t.observe(now).unwrap();
        t.check_content().unwrap();
        assert!(!t.rewritten);
        std::fs::write(&fx.path, b"other line\nand more\n").unwrap();
        t.observe(now).unwrap();
        t.check_content().unwrap();
        assert!(t.rewritten);
        t.restart().unwrap();
        assert!(!t.rewritten);
        assert_eq!(
            read(&mut t, &framing(1024, None), 10, now),
            vec!["other line", "and more"]
        );
    }
}
