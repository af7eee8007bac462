//! The offline cache of pulled artifacts, content-addressed like a registry's own storage.
//!
//! `blobs/sha256/<hex>` holds manifests, configs and components alike, each under the digest
//! of its bytes; `refs/<registry>/<repo>/<tag>` records the manifest digest a tag last
//! resolved to. Writes are atomic (temporary file + rename) and every read is verified
//! against the name, so a torn or tampered entry is never loaded: it is removed and treated
//! as missing. The root is `$SLUICE_CACHE_DIR/oci` (default `~/.cache/sluice/oci`), beside
//! the compile cache.

use std::{
    io,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::OciRef;

pub struct Cache {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("no cache directory: set SLUICE_CACHE_DIR (or HOME)")]
    NoDirectory,
    #[error("unsupported digest `{0}` (only sha256 is)")]
    UnsupportedDigest(String),
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The bytes to store are not what their digest names.
    #[error("digest mismatch: expected {expected}, the content has {actual}")]
    Mismatch { expected: String, actual: String },
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Cache {
    /// The default cache (see the module documentation).
    pub fn open_default() -> Result<Cache, CacheError> {
        let base = std::env::var_os("SLUICE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice")))
            .ok_or(CacheError::NoDirectory)?;
        Ok(Cache::at(base.join("oci")))
    }

    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// Where the blob of `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, CacheError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| CacheError::UnsupportedDigest(digest.to_owned()))?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// The blob of `digest`, verified; `None` if absent (or corrupt, which is then removed).
    pub fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.blob_path(digest)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let actual = digest_of(&bytes);
        if actual != digest {
            tracing::warn!(path = %path.display(), expected = digest, %actual, "corrupt OCI cache entry removed");
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Stores `bytes`, which must have `digest` (checked: the cache never holds a lie).
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, CacheError> {
        let actual = digest_of(bytes);
        if actual != digest {
            return Err(CacheError::Mismatch {
                expected: digest.to_owned(),
                actual,
            });
        }
        let path = self.blob_path(digest)?;
        match write_atomically(&path, bytes) {
            Ok(()) => Ok(path),
            Err(source) => Err(CacheError::Write { path, source }),
        }
    }

    fn ref_path(&self, r: &OciRef) -> Option<PathBuf> {
        let tag = r.tag.as_deref()?;
        Some(
            self.root
                .join("refs")
                .join(sanitize(&r.registry))
                .join(&r.repository)
                .join(tag),
        )
    }

    /// The manifest digest `r`'s tag last resolved to.
    pub fn tag(&self, r: &OciRef) -> Option<String> {
        let text = std::fs::read_to_string(self.ref_path(r)?).ok()?;
        let d = text.trim();
        self.blob_path(d).ok().map(|_| d.to_owned())
    }

    /// Records that `r`'s tag resolves to `digest`.
    pub fn set_tag(&self, r: &OciRef, digest: &str) -> Result<(), CacheError> {
        let Some(path) = self.ref_path(r) else {
            return Ok(());
        };
        write_atomically(&path, format!("{digest}\n").as_bytes())
            .map_err(|source| CacheError::Write { path, source })
    }
}

/// A registry name as one directory name (`[::1]:5000` has no path separators, but be sure).
fn sanitize(registry: &str) -> String {
    registry.replace(['/', '\\'], "_")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_on_write_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let d = digest_of(b"component");
        let e = cache.put(&d, b"tampered").unwrap_err();
        assert!(matches!(&e, CacheError::Mismatch { expected, .. } if *expected == d));
        assert_eq!(
            e.to_string(),
            format!(
                "digest mismatch: expected {d}, the content has {}",
                digest_of(b"tampered")
            )
        );
        assert!(matches!(
            cache.get("md5:00"),
            Err(CacheError::UnsupportedDigest(_))
        ));
        let path = cache.put(&d, b"component").unwrap();
        assert_eq!(cache.get(&d).unwrap().as_deref(), Some(&b"component"[..]));
        std::fs::write(&path, b"flipped").unwrap();
        assert_eq!(cache.get(&d).unwrap(), None, "a corrupt entry is a miss");
        assert!(!path.exists(), "and is removed");

        let r = OciRef::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(cache.tag(&r), None);
        cache.set_tag(&r, &d).unwrap();
        assert_eq!(cache.tag(&r).as_deref(), Some(d.as_str()));
    }
}
