//! Talking to a registry: push a component as a CNCF Wasm artifact, resolve a tag, and fetch
//! an artifact into the cache with every digest verified.
//!
//! Digests: an `@sha256:` reference pins the *manifest* (as for container images; it is what
//! `push` prints and `skopeo inspect` shows). The manifest bytes are checked against it, and
//! the component against the layer digest the manifest lists, so one pinned digest covers
//! the code that runs.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use oci_client::{
    Client,
    client::{ClientConfig, ClientProtocol},
    errors::OciDistributionError,
    manifest::{OciDescriptor, OciImageManifest},
    secrets::RegistryAuth,
};

use super::{
    CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, OciRef, auth,
    cache::{Cache, CacheError, digest_of},
    inspect::ComponentInfo,
};

/// A push, resolve or fetch that failed; texts name the reference (as written, e.g.
/// `registry/repo:tag`), and for network errors the identity used (never the credentials).
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Encode(serde_json::Error),
    #[error("{what} {reference} failed (as {identity}): {source}")]
    Registry {
        what: String,
        reference: String,
        identity: &'static str,
        source: Box<OciDistributionError>,
    },
    /// Content whose digest is not the one asked for: never stored, never run.
    #[error(
        "digest mismatch for {reference}: the {what} should have digest {expected} but what \
         the registry sent has {actual}; refused (tampered or corrupted content)"
    )]
    Mismatch {
        reference: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// The same, found by oci-client's own verification.
    #[error(
        "digest mismatch for {reference}: expected {expected} but what the registry sent has \
         {actual}; refused (tampered or corrupted content)"
    )]
    Verification {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{reference}: not an OCI image manifest: {source}")]
    NotAManifest {
        reference: String,
        source: serde_json::Error,
    },
    #[error(
        "{reference} is not a Wasm component artifact: its config is `{config}`, expected \
         `{CONFIG_MEDIA_TYPE}`"
    )]
    NotWasm { reference: String, config: String },
    #[error(
        "{reference}: expected one `{LAYER_MEDIA_TYPE}` layer, found [{}]",
        .layers.join(", ")
    )]
    Layers {
        reference: String,
        layers: Vec<String>,
    },
    /// The registry was unreachable and the cached copy of the tag is damaged.
    #[error("{registry}; the cached copy is unusable: {cached}")]
    CachedCopyUnusable {
        #[source]
        registry: Box<OciError>,
        cached: Box<OciError>,
    },
    /// The registry was unreachable and the tag was never fetched.
    #[error("{0} (and no cached copy of this tag)")]
    NoCachedCopy(#[source] Box<OciError>),
}

/// Connection settings for one command or one agent.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Registries (`host` or `host:port`) reachable over plain HTTP beyond the loopback ones
    /// and `SLUICE_INSECURE_REGISTRIES` (the CLI's `--insecure`).
    pub insecure: Vec<String>,
}

/// An artifact available locally: its digests and the path of the verified component.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The reference pinned to the manifest digest.
    pub pinned: OciRef,
    pub manifest_digest: String,
    /// The component's digest (its layer).
    pub layer_digest: String,
    /// The component, in the cache.
    pub path: PathBuf,
    pub manifest: OciImageManifest,
    /// True when the registry could not be asked and the cache answered.
    pub offline: bool,
}

fn client_for(r: &OciRef, opts: &Options) -> Client {
    // reqwest is built without a bundled crypto provider; use the ring one the rest of the
    // agent uses (a no-op once installed).
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let protocol = if super::is_insecure(&r.registry, &opts.insecure) {
        ClientProtocol::HttpsExcept(vec![r.registry.clone()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(5)),
        read_timeout: Some(Duration::from_secs(60)),
        user_agent: concat!("sluice/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

async fn authed(r: &OciRef, opts: &Options) -> (Client, RegistryAuth) {
    let client = client_for(r, opts);
    let creds = auth::for_registry(&r.registry);
    client.store_auth_if_needed(&r.registry, &creds).await;
    (client, creds)
}

fn net_error(r: &OciRef, what: &str, e: OciDistributionError, creds: &RegistryAuth) -> OciError {
    OciError::Registry {
        what: what.to_owned(),
        reference: r.to_string(),
        identity: auth::describe(creds),
        source: Box::new(e),
    }
}

/// Pushes `component` (already validated, described by `info`) to `r`; returns the manifest
/// digest. `annotations` go on the manifest (`org.opencontainers.image.*` and the like).
pub async fn push(
    r: &OciRef,
    component: Vec<u8>,
    info: &ComponentInfo,
    mut annotations: BTreeMap<String, String>,
    opts: &Options,
) -> Result<String, OciError> {
    let (client, creds) = authed(r, opts).await;
    let reference = r.to_client();
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let layer_digest = digest_of(&component);
    // The CNCF `application/vnd.wasm.config.v0+json` document.
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": {
            "target": info.target(),
            "exports": info.exports,
            "imports": info.imports,
        },
    }))
    .map_err(OciError::Encode)?;
    annotations
        .entry("org.opencontainers.image.created".into())
        .or_insert(created);
    annotations.insert("dev.sluice.plugin.world".into(), info.world.into());
    if let Some(v) = &info.wit_version {
        annotations.insert("dev.sluice.plugin.wit".into(), format!("sluice:plugin@{v}"));
    }
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: OciDescriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: digest_of(&config),
            size: config.len() as i64,
            ..Default::default()
        },
        layers: vec![OciDescriptor {
            media_type: LAYER_MEDIA_TYPE.into(),
            digest: layer_digest.clone(),
            size: component.len() as i64,
            ..Default::default()
        }],
        subject: None,
        artifact_type: None,
        annotations: Some(annotations),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(OciError::Encode)?;
    let manifest_digest = digest_of(&manifest_bytes);
    let config_digest = manifest.config.digest.clone();
    client
        .push_blob(&reference, component, &layer_digest)
        .await
        .map_err(|e| net_error(r, "pushing the component to", e, &creds))?;
    client
        .push_blob(&reference, config, &config_digest)
        .await
        .map_err(|e| net_error(r, "pushing the config to", e, &creds))?;
    client
        .push_manifest_raw(
            &reference,
            manifest_bytes,
            http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
        )
        .await
        .map_err(|e| net_error(r, "pushing the manifest to", e, &creds))?;
    Ok(manifest_digest)
}

/// Asks the registry which manifest digest `r` (a tag) names now.
pub async fn resolve_tag(r: &OciRef, opts: &Options) -> Result<String, OciError> {
    let (client, creds) = authed(r, opts).await;
    client
        .fetch_manifest_digest(&r.to_client(), &creds)
        .await
        .map_err(|e| net_error(r, "resolving", e, &creds))
}

/// Makes `r` available locally, verified. A digest reference already in the cache needs no
/// registry at all; a tag is resolved against the registry, and if that fails and
/// `offline_ok`, the digest it last resolved to is used from the cache (with a warning), so a
/// restart works with the registry down.
pub async fn fetch(
    r: &OciRef,
    cache: &Cache,
    opts: &Options,
    offline_ok: bool,
) -> Result<Fetched, OciError> {
    if let Some(d) = &r.digest {
        if let Some(f) = from_cache(r, d, cache, false)? {
            return Ok(f);
        }
        return download(r, d, cache, opts).await;
    }
    match resolve_tag(r, opts).await {
        Ok(d) => {
            let f = match from_cache(r, &d, cache, false)? {
                Some(f) => f,
                None => download(r, &d, cache, opts).await?,
            };
            cache.set_tag(r, &d)?;
            Ok(f)
        }
        Err(e) if !offline_ok => Err(e),
        Err(e) => {
            let cached = cache
                .tag(r)
                .and_then(|d| from_cache(r, &d, cache, true).transpose());
            match cached {
                Some(Ok(f)) => {
                    tracing::warn!(reference = %r, digest = %f.manifest_digest, error = %e,
                        "registry unreachable: using the cached version this tag last resolved to");
                    Ok(f)
                }
                Some(Err(ce)) => Err(OciError::CachedCopyUnusable {
                    registry: Box::new(e),
                    cached: Box::new(ce),
                }),
                None => Err(OciError::NoCachedCopy(Box::new(e))),
            }
        }
    }
}

/// The cached artifact with manifest `digest`, if the manifest and its component are both
/// there and intact.
fn from_cache(
    r: &OciRef,
    digest: &str,
    cache: &Cache,
    offline: bool,
) -> Result<Option<Fetched>, OciError> {
    let Some(bytes) = cache.get(digest)? else {
        return Ok(None);
    };
    let manifest = parse_manifest(r, &bytes)?;
    let layer = &manifest.layers[0];
    if cache.get(&layer.digest)?.is_none() {
        return Ok(None);
    }
    Ok(Some(Fetched {
        pinned: r.pinned(digest),
        manifest_digest: digest.to_owned(),
        layer_digest: layer.digest.clone(),
        path: cache.blob_path(&layer.digest)?,
        manifest,
        offline,
    }))
}

/// Downloads manifest `digest` and its component, verifies both, and stores them.
async fn download(
    r: &OciRef,
    digest: &str,
    cache: &Cache,
    opts: &Options,
) -> Result<Fetched, OciError> {
    let pinned = r.pinned(digest);
    let (client, creds) = authed(&pinned, opts).await;
    let reference = pinned.to_client();
    let (bytes, _) = client
        .pull_manifest_raw(&reference, &creds, &[MANIFEST_MEDIA_TYPE])
        .await
        .map_err(|e| refused_or(r, digest, e, &creds))?;
    let actual = digest_of(&bytes);
    if actual != digest {
        return Err(mismatch(r, "manifest", digest, actual));
    }
    let manifest = parse_manifest(r, &bytes)?;
    let layer = manifest.layers[0].clone();
    let mut component = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0));
    client
        .pull_blob(&reference, &layer, &mut component)
        .await
        .map_err(|e| refused_or(r, &layer.digest, e, &creds))?;
    let actual = digest_of(&component);
    if actual != layer.digest {
        return Err(mismatch(r, "component", &layer.digest, actual));
    }
    // The config is small and describes the component; keep it for `inspect`, best effort.
    let mut config = Vec::new();
    if client
        .pull_blob(&reference, &manifest.config, &mut config)
        .await
        .is_ok()
    {
        let _ = cache.put(&manifest.config.digest, &config);
    }
    let path = cache.put(&layer.digest, &component)?;
    cache.put(digest, &bytes)?;
    Ok(Fetched {
        pinned,
        manifest_digest: digest.to_owned(),
        layer_digest: layer.digest,
        path,
        manifest,
        offline: false,
    })
}

fn mismatch(r: &OciRef, what: &'static str, expected: &str, actual: String) -> OciError {
    OciError::Mismatch {
        reference: r.to_string(),
        what,
        expected: expected.to_owned(),
        actual,
    }
}

/// oci-client verifies digests itself too; say so plainly when that is what failed.
fn refused_or(r: &OciRef, digest: &str, e: OciDistributionError, creds: &RegistryAuth) -> OciError {
    use oci_client::errors::DigestError;
    match e {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            OciError::Verification {
                reference: r.to_string(),
                expected,
                actual,
            }
        }
        e => net_error(r, &format!("pulling {digest} of"), e, creds),
    }
}

/// A manifest in the CNCF Wasm layout: the right config type and exactly one component layer.
pub fn parse_manifest(r: &OciRef, bytes: &[u8]) -> Result<OciImageManifest, OciError> {
    let m: OciImageManifest =
        serde_json::from_slice(bytes).map_err(|source| OciError::NotAManifest {
            reference: r.to_string(),
            source,
        })?;
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(OciError::NotWasm {
            reference: r.to_string(),
            config: m.config.media_type,
        });
    }
    match m.layers.as_slice() {
        [l] if l.media_type == LAYER_MEDIA_TYPE => Ok(m),
        layers => Err(OciError::Layers {
            reference: r.to_string(),
            layers: layers.iter().map(|l| l.media_type.clone()).collect(),
        }),
    }
}

/// The config document of a fetched artifact, if cached.
pub fn cached_config(f: &Fetched, cache: &Cache) -> Option<serde_json::Value> {
    let bytes = cache.get(&f.manifest.config.digest).ok()??;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        let descriptor = |media_type: &str| OciDescriptor {
            media_type: media_type.into(),
            digest: digest_of(media_type.as_bytes()),
            size: 1,
            ..Default::default()
        };
        serde_json::to_vec(&OciImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            config: descriptor(config),
            layers: layers.iter().map(|l| descriptor(l)).collect(),
            subject: None,
            artifact_type: None,
            annotations: None,
        })
        .unwrap()
    }

    #[test]
    fn manifests_of_other_artifacts_are_refused_with_what_they_hold() {
        let r = OciRef::parse("127.0.0.1:5000/a/b:v1").unwrap();
        let e = parse_manifest(&r, b"{").unwrap_err();
        assert!(matches!(e, OciError::NotAManifest { .. }), "{e:?}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the JSON error is kept"
        );

        let image = manifest(
            "application/vnd.oci.image.config.v1+json",
            &[LAYER_MEDIA_TYPE],
        );
        assert_eq!(
            parse_manifest(&r, &image).unwrap_err().to_string(),
            "127.0.0.1:5000/a/b:v1 is not a Wasm component artifact: its config is \
             `application/vnd.oci.image.config.v1+json`, expected \
             `application/vnd.wasm.config.v0+json`"
        );
        let two = manifest(CONFIG_MEDIA_TYPE, &[LAYER_MEDIA_TYPE, "text/plain"]);
        assert_eq!(
            parse_manifest(&r, &two).unwrap_err().to_string(),
            "127.0.0.1:5000/a/b:v1: expected one `application/wasm` layer, found \
             [application/wasm, text/plain]"
        );
        assert!(parse_manifest(&r, &manifest(CONFIG_MEDIA_TYPE, &[LAYER_MEDIA_TYPE])).is_ok());
    }
}
