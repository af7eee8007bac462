//! How far each followed file has been committed, kept in a small JSON file.
//!
//! A file is known by its device and inode, which survive a rename, plus a fingerprint of its
//! first bytes, which tells a reused inode (or a file rewritten after a copy-truncate) from the
//! file that was read. The store is rewritten whole after each committed batch — to a temporary
//! file, then renamed over the old one — so a crash leaves the old positions or the new ones,
//! never a torn file; at worst the last batch is read again (at-least-once). There is no fsync:
//! after a power loss the file may be older than the last commit, which again means duplicates,
//! not loss.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Leading bytes of a file that identify its content.
pub const FINGERPRINT_LEN: usize = 256;

/// Format of the position file; a different number is refused rather than misread.
const VERSION: u32 = 1;

/// A file's identity on its device: the same across renames, different for a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    #[cfg(unix)]
    pub fn of(_path: &Path, meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// Without inodes a file is known by its path, so a renamed file counts as a new one.
    #[cfg(not(unix))]
    pub fn of(path: &Path, _meta: &std::fs::Metadata) -> FileId {
        let d = Sha256::digest(path.to_string_lossy().as_bytes());
        let mut h = [0u8; 8];
        h.copy_from_slice(&d[..8]);
        FileId {
            dev: 0,
            ino: u64::from_le_bytes(h),
        }
    }
}

/// A hash of a file's first `len` bytes (`len` < [`FINGERPRINT_LEN`] while the file is shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    pub fn of(prefix: &[u8]) -> Fingerprint {
        let prefix = &prefix[..prefix.len().min(FINGERPRINT_LEN)];
        let d = Sha256::digest(prefix);
        let mut h = [0u8; 8];
        h.copy_from_slice(&d[..8]);
        Fingerprint {
            len: prefix.len() as u32,
            hash: u64::from_le_bytes(h),
        }
    }

    /// True when `prefix` (a file's first bytes now) still begins with the content this
    /// fingerprint was taken of. A file shorter than that was truncated.
    pub fn matches(&self, prefix: &[u8]) -> bool {
        let n = self.len as usize;
        // Nothing was seen (an empty file): any content may follow.
        n == 0 || (prefix.len() >= n && Fingerprint::of(&prefix[..n]).hash == self.hash)
    }
}

/// Reads a file's first bytes (up to [`FINGERPRINT_LEN`]), leaving its cursor where it was.
pub fn read_prefix(file: &File) -> io::Result<Vec<u8>> {
    let mut f = file;
    let here = f.stream_position()?;
    f.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(FINGERPRINT_LEN);
    let read = f.take(FINGERPRINT_LEN as u64).read_to_end(&mut buf);
    // Put the cursor back even if the read failed: the reader relies on it.
    f.seek(SeekFrom::Start(here))?;
    read?;
    Ok(buf)
}

/// One file's committed position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Where the file was last seen: for people, and to find it again if it was renamed out of
    /// the globs while the agent was stopped.
    pub path: PathBuf,
    pub id: FileId,
    pub fingerprint: Fingerprint,
    /// Every byte before this offset is in a committed event.
    pub offset: u64,
}

#[derive(Deserialize)]
struct Stored {
    version: u32,
    files: Vec<Position>,
}

#[derive(Serialize)]
struct StoredRef<'a> {
    version: u32,
    files: &'a [Position],
}

/// The position file of one source.
pub struct PositionStore {
    path: PathBuf,
    tmp: PathBuf,
    dir_ready: bool,
}

impl PositionStore {
    pub fn new(path: PathBuf) -> Self {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        PositionStore {
            path,
            tmp: PathBuf::from(tmp),
            dir_ready: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file a save writes before renaming it into place.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The saved positions; `None` when there is no position file yet (a first run).
    pub fn load(&self) -> io::Result<Option<Vec<Position>>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let unreadable = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "position file {} is unreadable ({why}); move it away to start over",
                    self.path.display()
                ),
            )
        };
        let stored: Stored =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
        if stored.version != VERSION {
            return Err(unreadable(format!(
                "format version {}, expected {VERSION}",
                stored.version
            )));
        }
        Ok(Some(stored.files))
    }

    /// Replaces the saved positions: write a temporary file, then rename it over the old one.
    pub fn save(&mut self, files: &[Position]) -> io::Result<()> {
        if !self.dir_ready {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            self.dir_ready = true;
        }
        let json = serde_json::to_vec_pretty(&StoredRef {
            version: VERSION,
            files,
        })
        .map_err(io::Error::other)?;
        std::fs::write(&self.tmp, json)?;
        std::fs::rename(&self.tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pos(path: &str, ino: u64, offset: u64) -> Position {
        Position {
            path: PathBuf::from(path),
            id: FileId { dev: 1, ino },
            fingerprint: Fingerprint::of(b"hello"),
            offset,
        }
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = PositionStore::new(dir.path().join("sub/positions.json"));
        assert_eq!(store.load().unwrap(), None, "no file yet: a first run");
        let files = vec![pos("/l/a.log", 7, 120), pos("/l/b.log", 8, 0)];
        store.save(&files).unwrap();
        assert_eq!(store.load().unwrap(), Some(files.clone()));
        assert!(!store.tmp_path().exists());
        store.save(&files[..1]).unwrap();
        assert_eq!(store.load().unwrap(), Some(files[..1].to_vec()));
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.json");
        std::fs::write(&path, b"{\"version\":1,\"files\":[").unwrap();
        let e = PositionStore::new(path.clone()).load().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("move it away"), "{e}");
        std::fs::write(&path, b"{\"version\":99,\"files\":[]}").unwrap();
        let e = PositionStore::new(path).load().unwrap_err();
        assert!(e.to_string().contains("format version 99"), "{e}");
    }

    #[test]
    fn fingerprints_match_a_grown_file_but_not_a_rewritten_or_truncated_one() {
        let fp = Fingerprint::of(b"2024-01-01 first line\n");
        assert!(fp.matches(b"2024-01-01 first line\nsecond line\n"));
        assert!(!fp.matches(b"2024-01-02 other line\nsecond line\n"));
        assert!(!fp.matches(b"2024-01-01"), "shorter than what was seen");
        assert!(
            Fingerprint::default().matches(b"anything"),
            "an empty file told nothing"
        );
        let long = [b'x'; 1000];
        assert_eq!(Fingerprint::of(&long).len as usize, FINGERPRINT_LEN);
    }

    #[test]
    fn read_prefix_keeps_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[b'a'; 300]).unwrap();
        let mut f = File::open(&path).unwrap();
        f.seek(SeekFrom::Start(123)).unwrap();
        assert_eq!(read_prefix(&f).unwrap().len(), FINGERPRINT_LEN);
        assert_eq!(f.stream_position().unwrap(), 123);
    }
}
