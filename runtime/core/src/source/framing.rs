//! Cutting a byte stream into frames (the socket sources, a command's output, spool files):
//! newline-terminated (netcat, syslog's non-transparent framing) and, for syslog over TCP, octet-counted (`LEN SP MSG`, RFC 6587), told apart per
//! frame by its first byte. Frames are slices of the read buffer, not copies.

use bytes::{Buf, Bytes, BytesMut};

/// What the framer found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    Frame(Bytes),
    /// A frame longer than the limit: its first `max` bytes, and its length (a lower bound
    /// for a newline-terminated frame, which is skipped to its end).
    TooLong {
        head: Bytes,
        len: usize,
    },
}

/// What is being skipped of a frame that was too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Nothing,
    ToNewline,
    Bytes(usize),
}

/// A stateful framer for one stream.
#[derive(Debug, Clone)]
pub struct Framer {
    octet_counting: bool,
    max: usize,
    skip: Skip,
}

/// Digits an octet count may have (a count past 10 digits is not a syslog frame length).
const MAX_COUNT_DIGITS: usize = 10;

impl Framer {
    /// Newline framing only, frames up to `max` bytes.
    pub fn lines(max: usize) -> Self {
        Framer {
            octet_counting: false,
            max: max.max(1),
            skip: Skip::Nothing,
        }
    }

    /// Octet counting when a frame starts with a digit, newline framing otherwise.
    pub fn syslog(max: usize) -> Self {
        Framer {
            octet_counting: true,
            ..Framer::lines(max)
        }
    }

    /// The next frame in `buf` (taken out of it), or `None` when more bytes are needed.
    /// Empty lines are skipped; a `\r` before a newline is cut off.
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Framed> {
        loop {
            match self.skip {
                Skip::Bytes(n) => {
                    let k = n.min(buf.len());
                    buf.advance(k);
                    if k < n {
                        self.skip = Skip::Bytes(n - k);
                        return None;
                    }
                    self.skip = Skip::Nothing;
                }
                Skip::ToNewline => match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.skip = Skip::Nothing;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                },
                Skip::Nothing => {}
            }
            if buf.is_empty() {
                return None;
            }
            if self.octet_counting && buf[0].is_ascii_digit() && buf[0] != b'0' {
                match octet_count(buf) {
                    Count::Need => return None,
                    Count::Len { digits, len } => {
                        if len > self.max {
                            buf.advance(digits + 1);
                            let k = self.max.min(buf.len());
                            let head = buf.split_to(k).freeze();
                            self.skip = Skip::Bytes(len - k);
                            return Some(Framed::TooLong { head, len });
                        }
                        if buf.len() < digits + 1 + len {
                            buf.reserve(digits + 1 + len - buf.len());
                            return None;
                        }
                        buf.advance(digits + 1);
                        let frame = buf.split_to(len).freeze();
                        return Some(Framed::Frame(trim_line_end(frame)));
                    }
                    // Not a count after all: a line that starts with a digit.
                    Count::NotCounted => {}
                }
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    let mut line = buf.split_to(i + 1);
                    line.truncate(i);
                    if line.len() > self.max {
                        let len = line.len();
                        line.truncate(self.max);
                        return Some(Framed::TooLong {
                            head: line.freeze(),
                            len,
                        });
                    }
                    let line = trim_line_end(line.freeze());
                    if line.is_empty() {
                        continue;
                    }
                    return Some(Framed::Frame(line));
                }
                None if buf.len() > self.max => {
                    let len = buf.len();
                    let head = buf.split_to(self.max).freeze();
                    buf.clear();
                    self.skip = Skip::ToNewline;
                    return Some(Framed::TooLong { head, len });
                }
                None => return None,
            }
        }
    }

    /// Whether it is in the middle of a frame that was too long (its rest is being skipped):
    /// a position taken now would point inside that frame.
    pub fn is_skipping(&self) -> bool {
        self.skip != Skip::Nothing
    }

    /// At the end of the stream: what is left, as a last frame (a line without its newline).
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Framed> {
        if self.skip != Skip::Nothing || buf.is_empty() {
            buf.clear();
            return None;
        }
        let rest = trim_line_end(buf.split().freeze());
        (!rest.is_empty()).then_some(Framed::Frame(rest))
    }
}

enum Count {
    Need,
    Len { digits: usize, len: usize },
    NotCounted,
}

fn octet_count(buf: &[u8]) -> Count {
    let digits = buf
        .iter()
        .take(MAX_COUNT_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > MAX_COUNT_DIGITS {
        return Count::NotCounted;
    }
    match buf.get(digits) {
        None => Count::Need,
        Some(b' ') => {
            let len = buf[..digits]
                .iter()
                .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
            Count::Len { digits, len }
        }
        Some(_) => Count::NotCounted,
    }
}

/// Cuts trailing `\r`, `\n` and NUL (some senders end frames with one).
fn trim_line_end(mut b: Bytes) -> Bytes {
    let keep = b
        .iter()
        .rposition(|c| !matches!(c, b'\r' | b'\n' | 0))
        .map_or(0, |i| i + 1);
    b.truncate(keep);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &mut Framer, input: &[&[u8]]) -> Vec<Framed> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in input {
            buf.extend_from_slice(part);
            while let Some(x) = f.next(&mut buf) {
                out.push(x);
            }
        }
        out.extend(f.finish(&mut buf));
        out
    }

    fn frame(s: &str) -> Framed {
        Framed::Frame(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn lines_across_reads_with_crlf_and_blank_lines() {
        let mut f = Framer::lines(100);
        let got = all(&mut f, &[b"one\r\ntw", b"o\n\n\nthr", b"ee"]);
        assert_eq!(got, vec![frame("one"), frame("two"), frame("three")]);
    }

    #[test]
    fn octet_counted_frames_may_hold_newlines_and_mix_with_lines() {
        let mut f = Framer::syslog(100);
        let got = all(
            &mut f,
            &[
                b"11 <13>1 a\nb c",
                b"<14>plain\n5 ab",
                b"cde3 xyz",
                b"\n<15>last\n",
            ],
        );
        assert_eq!(
            got,
            vec![
                frame("<13>1 a\nb c"),
                frame("<14>plain"),
                frame("abcde"),
                frame("xyz"),
                frame("<15>last"),
            ]
        );
    }

    #[test]
    fn too_long_frames_are_cut_reported_and_skipped() {
        let mut f = Framer::lines(4);
        let got = all(&mut f, &[b"abcdefg", b"hij\nok\n", b"123456\nend"]);
        assert_eq!(
            got,
            vec![
                Framed::TooLong {
                    head: Bytes::from_static(b"abcd"),
                    len: 7
                },
                frame("ok"),
                Framed::TooLong {
                    head: Bytes::from_static(b"1234"),
                    len: 6
                },
                frame("end"),
            ]
        );
        let mut f = Framer::syslog(4);
        let got = all(&mut f, &[b"9 abcde", b"fghi6 abcdef"]);
        assert_eq!(
            got,
            vec![
                Framed::TooLong {
                    head: Bytes::from_static(b"abcd"),
                    len: 9
                },
                Framed::TooLong {
                    head: Bytes::from_static(b"abcd"),
                    len: 6
                },
            ]
        );
    }

    #[test]
    fn a_count_without_its_space_is_a_line() {
        let mut f = Framer::syslog(100);
        let got = all(&mut f, &[b"12345678901 too many digits\n", b"42abc\n"]);
        assert_eq!(
            got,
            vec![frame("12345678901 too many digits"), frame("42abc")]
        );
    }
}
