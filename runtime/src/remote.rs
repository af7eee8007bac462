//! Pipelines from a URL, for fleets: `--pipeline https://config.example/edge.yaml`.
//!
//! The file is fetched at start and then every `--config-poll` with `If-None-Match`, so an
//! unchanged file costs a 304. Every good copy is kept in a cache file, which is what the
//! agent actually reads: a restart while the config server is down runs the last good copy,
//! and a fetched change goes through the same live reload as a local file (built before
//! anything stops, refused as a whole when broken). `--config-sha256` pins the content;
//! `--config-token-env` names a bearer token for the server. Plain `http://` is accepted only
//! for loopback addresses, or with `--insecure`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::reload;

/// Where a pipeline is fetched from and kept.
pub struct Remote {
    url: reqwest::Url,
    client: reqwest::Client,
    token: Option<String>,
    pin: Option<[u8; 32]>,
    /// The last good copy, read by the agent.
    cache: PathBuf,
    /// The server's ETag of that copy.
    etag: PathBuf,
}

/// What a fetch found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The content changed; the cache holds the new copy.
    Changed,
    /// The server says the copy in the cache is current (or sent the same bytes again).
    Unchanged,
}

impl Remote {
    pub fn new(
        url: &str,
        insecure: bool,
        token: Option<String>,
        pin: Option<&str>,
        cache_dir: &Path,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("--pipeline {url}: {e}"))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if url.scheme() == "http" && !loopback && !insecure {
            return Err(format!(
                "--pipeline {url}: plain http is accepted only from a loopback address; use https, or --insecure"
            ));
        }
        let pin = pin
            .map(|p| {
                let bytes = hex::decode(p.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                bytes.ok_or_else(|| format!("--config-sha256 {p}: expected 64 hex digits"))
            })
            .transpose()?;
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| format!("config cache {}: {e}", cache_dir.display()))?;
        let key = hex::encode(&Sha256::digest(url.as_str().as_bytes())[..8]);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Remote {
            cache: cache_dir.join(format!("pipeline-{key}.yaml")),
            etag: cache_dir.join(format!("pipeline-{key}.etag")),
            url,
            client,
            token,
            pin,
        })
    }

    /// The copy the agent reads.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Fetches the pipeline; a new good copy replaces the cached one (atomically).
    pub async fn fetch(&self) -> Result<Fetched, String> {
        let mut req = self.client.get(self.url.clone());
        let cached = self.cache.exists();
        if let (true, Ok(tag)) = (cached, std::fs::read_to_string(&self.etag)) {
            req = req.header(reqwest::header::IF_NONE_MATCH, tag.trim());
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{}: {e}", self.url))?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED && cached {
            return Ok(Fetched::Unchanged);
        }
        if !resp.status().is_success() {
            return Err(format!("{}: {}", self.url, resp.status()));
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        if let Some(want) = &self.pin {
            let got: [u8; 32] = Sha256::digest(&body).into();
            if &got != want {
                return Err(format!(
                    "{}: content sha256 {} is not the pinned {}",
                    self.url,
                    hex::encode(got),
                    hex::encode(want)
                ));
            }
        }
        let same = std::fs::read(&self.cache).is_ok_and(|old| old == body);
        if !same {
            let tmp = self.cache.with_extension("yaml.tmp");
            std::fs::write(&tmp, &body)
                .and_then(|()| std::fs::rename(&tmp, &self.cache))
                .map_err(|e| format!("config cache {}: {e}", self.cache.display()))?;
        }
        match etag {
            Some(t) => {
                let _ = std::fs::write(&self.etag, t);
            }
            None => {
                let _ = std::fs::remove_file(&self.etag);
            }
        }
        Ok(if same {
            Fetched::Unchanged
        } else {
            Fetched::Changed
        })
    }

    /// Fetches every `every` until `stop`, asking for a reload when the content changed; a
    /// failed fetch is a warning (the running pipeline goes on).
    pub fn poll(self, every: Duration, tx: mpsc::Sender<reload::Request>, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                match self.fetch().await {
                    Ok(Fetched::Changed) => {
                        failing = false;
                        tracing::info!(url = %self.url, "the pipeline changed at its URL; reloading");
                        let _ = tx
                            .send(reload::Request {
                                origin: "url",
                                reply: None,
                            })
                            .await;
                    }
                    Ok(Fetched::Unchanged) => failing = false,
                    Err(e) => {
                        // Once per outage, not once per poll.
                        if !failing {
                            tracing::warn!(error = %e, "cannot fetch the pipeline; the running one goes on");
                        }
                        failing = true;
                    }
                }
            }
        });
    }
}
