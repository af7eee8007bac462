//! Plugins distributed through OCI registries, as container images are.
//!
//! A plugin is an OCI artifact in the CNCF Wasm layout: one `application/wasm` layer (the
//! component) and a `application/vnd.wasm.config.v0+json` config describing it. A pipeline
//! names it `oci://registry/repo:tag` or `oci://registry/repo@sha256:<manifest digest>`; what
//! is pulled is verified against its digests and kept in a content-addressed cache
//! ([`cache`]), so an agent restarts with the registry down.
//!
//! Plain HTTP is used only for loopback registries and hosts the operator listed as insecure:
//! a typo must not silently send credentials in the clear.
//!
//! References, the cache and inspection are always here; talking to registries (the fetcher,
//! `push`/`pull`, credentials) is the `oci` feature, so a plugin host can be built without
//! an HTTP client.

#[cfg(feature = "oci")]
pub mod auth;
pub mod cache;
#[cfg(feature = "oci")]
pub mod client;
pub mod inspect;

use std::fmt;

#[cfg(feature = "oci")]
pub use client::{Fetched, Options};

/// Media type of the manifest (OCI image manifest v1).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Config media type of the CNCF Wasm OCI artifact layout.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of the CNCF Wasm OCI artifact layout: the component itself.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";

/// The scheme a pipeline's plugin `path` uses to name an OCI artifact.
pub const SCHEME: &str = "oci://";

/// A reference [`OciRef::parse`] refuses: the text as given and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OCI reference `{reference}`: {problem}")]
pub struct RefError {
    pub reference: String,
    pub problem: RefProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefProblem {
    #[error("the digest must be `sha256:<64 hex digits>`")]
    Digest,
    #[error("expected registry/repository[:tag], e.g. ghcr.io/org/plugin:1.0")]
    NoRepository,
    #[error("the first part must be a registry host (with a dot or a port, or `localhost`)")]
    NoRegistry,
    #[error("the repository is lower-case letters, digits, `.`, `_`, `-` and `/`")]
    Repository,
    #[error("a tag is up to 128 letters, digits, `.`, `_`, `-` (not first)")]
    Tag,
}

/// An artifact in a registry: `registry/repository` and a tag or a manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// `host` or `host:port`.
    pub registry: String,
    pub repository: String,
    /// `latest` when neither a tag nor a digest was given; kept beside a digest for messages.
    pub tag: Option<String>,
    /// `sha256:<hex>`: pins the manifest.
    pub digest: Option<String>,
}

impl OciRef {
    /// Parses `[oci://]registry/repo[:tag][@sha256:<hex>]`. The registry is required (a host
    /// with a dot or a port, or `localhost`): an implicit Docker Hub would be a surprise.
    pub fn parse(s: &str) -> Result<OciRef, RefError> {
        let bad = |problem| RefError {
            reference: s.to_owned(),
            problem,
        };
        let rest = s.strip_prefix(SCHEME).unwrap_or(s);
        let (name, digest) = match rest.split_once('@') {
            Some((n, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad(RefProblem::Digest))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(RefProblem::Digest));
                }
                (n, Some(format!("sha256:{}", hex.to_ascii_lowercase())))
            }
            None => (rest, None),
        };
        let (registry, path) = name
            .split_once('/')
            .ok_or_else(|| bad(RefProblem::NoRepository))?;
        if registry.is_empty()
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            return Err(bad(RefProblem::NoRegistry));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t)),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !repo_ok {
            return Err(bad(RefProblem::Repository));
        }
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && !t.starts_with(['.', '-'])
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad(RefProblem::Tag));
            }
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(OciRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The same artifact pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> OciRef {
        OciRef {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The reference oci-client addresses: the digest when there is one, else the tag.
    #[cfg(feature = "oci")]
    pub(crate) fn to_client(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.clone(),
            ),
            (None, t) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The `oci://` reference a plugin path names, if it names one.
pub fn path_ref(path: &std::path::Path) -> Option<&str> {
    path.to_str().filter(|s| s.starts_with(SCHEME))
}

/// Whether `registry` may be reached over plain HTTP: loopback hosts always (a registry on
/// the same machine, as in tests and local development), others only when listed in
/// `SLUICE_INSECURE_REGISTRIES` (comma-separated `host` or `host:port`) or given `extra`.
pub fn is_insecure(registry: &str, extra: &[String]) -> bool {
    let host = host_of(registry);
    if matches!(host, "localhost" | "::1")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return true;
    }
    let listed = std::env::var("SLUICE_INSECURE_REGISTRIES").unwrap_or_default();
    listed
        .split(',')
        .map(str::trim)
        .chain(extra.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .any(|s| s == registry || s == host)
}

/// `host` of `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// Runs `fut` to completion from synchronous code, wherever that code runs: on the agent's
/// multi-thread runtime (a pipeline being built, a reload task) through that runtime, with the
/// calling worker's other tasks handed on (`block_in_place`); elsewhere (a plain CLI thread,
/// a current-thread runtime) on a scoped thread with its own small runtime, so it never blocks
/// inside, or nests, another runtime.
pub fn block_on<F: std::future::Future + Send>(fut: F) -> F::Output
where
    F::Output: Send,
{
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            return tokio::task::block_in_place(|| h.block_on(fut));
        }
    }
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
                .block_on(fut)
        });
        match t.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_tag_digest_and_scheme() {
        let r = OciRef::parse("oci://127.0.0.1:5000/sluice/enrich:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "sluice/enrich");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);
        let d = format!("sha256:{}", "a".repeat(64));
        let r = OciRef::parse(&format!("ghcr.io/org/p@{d}")).unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        assert_eq!(
            OciRef::parse("localhost/p").unwrap().tag.as_deref(),
            Some("latest")
        );
        assert_eq!(
            OciRef::parse("oci://r.io/a/b:1.0").unwrap().to_string(),
            "r.io/a/b:1.0"
        );
        for (bad, problem) in [
            ("enrich:v1", RefProblem::NoRepository),
            ("docker/enrich", RefProblem::NoRegistry),
            ("r.io/Upper", RefProblem::Repository),
            ("r.io/p@sha256:abc", RefProblem::Digest),
            ("r.io/p@md5:00", RefProblem::Digest),
            ("r.io/p:-x", RefProblem::Tag),
        ] {
            let e = OciRef::parse(bad).unwrap_err();
            assert_eq!(e.problem, problem, "{bad}");
            assert_eq!(e.reference, bad);
        }
        assert_eq!(
            OciRef::parse("oci://docker/enrich")
                .unwrap_err()
                .to_string(),
            "invalid OCI reference `oci://docker/enrich`: the first part must be a registry host \
             (with a dot or a port, or `localhost`)"
        );
    }

    #[test]
    fn plain_http_only_for_loopback_or_listed_hosts() {
        assert!(is_insecure("127.0.0.1:5000", &[]));
        assert!(is_insecure("localhost:5000", &[]));
        assert!(is_insecure("[::1]:5000", &[]));
        assert!(!is_insecure("ghcr.io", &[]));
        assert!(!is_insecure("10.0.0.1:5000", &[]));
        assert!(is_insecure("10.0.0.1:5000", &["10.0.0.1".into()]));
        assert!(!is_insecure("127.0.0.1.example.com", &[]));
    }
}
