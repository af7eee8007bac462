//! What the engine needs from a plugin host, without knowing how plugins run.
//!
//! Interceptors, codecs and selectors may be plugins: the topology asks the host for them by
//! name, and the admin server asks it to list and reload them. The Wasm host (`sluice-wasm`)
//! implements [`PluginHost`]; a build without one refuses `plugins:` when reading the file.

use std::path::Path;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{
    config::PluginConfig, event::codec::Codec, interceptor::Interceptor, metrics::PluginMetrics,
    selector::Selector,
};

/// A build's plugin host, as the registry carries it.
#[derive(Clone, Copy)]
pub struct PluginSupport {
    /// Makes the agent's host (once per topology).
    pub new_host: fn() -> Box<dyn PluginHost>,
    /// Checks a plugin's `path` when the file is read (e.g. the syntax of an `oci://`
    /// reference, or that this build can fetch one), so the error points at the field.
    pub check_path: fn(&Path) -> Result<(), String>,
}

/// What a reload request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    NotFound,
    /// The source holds the version already running.
    Unchanged,
    /// The new version runs from the next batch on.
    Swapped {
        from: String,
        to: String,
    },
    /// The new version failed to load; the previous one keeps running.
    Refused(String),
}

/// Loads plugins and hands out instances of them.
#[async_trait]
pub trait PluginHost: Send + Sync {
    /// Loads (fetches, compiles, links, initialises) the plugin `name`. `base_dir` is where
    /// relative paths start (the pipeline file's directory).
    fn load(
        &mut self,
        name: &str,
        spec: &PluginConfig,
        base_dir: &Path,
        metrics: PluginMetrics,
    ) -> Result<(), String>;

    /// A loaded plugin as an interceptor (an error when it is not one, or did not load).
    fn interceptor(&self, name: &str) -> Result<Box<dyn Interceptor>, String>;

    /// A loaded `serde` plugin as a codec.
    fn codec(&self, name: &str) -> Result<Box<dyn Codec>, String>;

    /// A loaded `selector` plugin routing into `channels` (indices into that list).
    fn selector(&self, name: &str, channels: Vec<String>) -> Result<Box<dyn Selector>, String>;

    /// Follows plugin sources (watched files, registry tags, SIGHUP) until `stop`, swapping in
    /// new versions.
    fn watch(&self, stop: CancellationToken);

    /// Each plugin's world, digest, version, calls, errors, swaps and health (`GET /plugins`).
    fn describe(&self) -> Vec<serde_json::Value>;

    /// Plugins reported unhealthy after repeated failures (`/health`).
    fn unhealthy(&self) -> Vec<String>;

    /// Reloads one plugin now (`POST /plugins/<name>/reload`).
    async fn reload(&self, name: &str) -> ReloadOutcome;

    /// A new host holding the plugins named in `keep`, as loaded here (shared, not loaded
    /// again), for a live reload that changes other plugins. `None`: this host cannot (it
    /// has no plugins); the reload makes a fresh one.
    fn carry_over(&self, keep: &std::collections::BTreeSet<String>) -> Option<Box<dyn PluginHost>> {
        let _ = keep;
        None
    }
}

/// The host of a build (or pipeline) with no plugins: every lookup fails.
pub struct NoPlugins;

#[async_trait]
impl PluginHost for NoPlugins {
    fn load(
        &mut self,
        name: &str,
        _: &PluginConfig,
        _: &Path,
        _: PluginMetrics,
    ) -> Result<(), String> {
        Err(format!(
            "cannot load plugin `{name}`: this build has no plugin host"
        ))
    }

    fn interceptor(&self, name: &str) -> Result<Box<dyn Interceptor>, String> {
        Err(format!("no plugin named `{name}`"))
    }

    fn codec(&self, name: &str) -> Result<Box<dyn Codec>, String> {
        Err(format!("no plugin named `{name}`"))
    }

    fn selector(&self, name: &str, _: Vec<String>) -> Result<Box<dyn Selector>, String> {
        Err(format!("no plugin named `{name}`"))
    }

    fn watch(&self, _: CancellationToken) {}

    fn describe(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }

    fn unhealthy(&self) -> Vec<String> {
        Vec::new()
    }

    async fn reload(&self, _: &str) -> ReloadOutcome {
        ReloadOutcome::NotFound
    }
}
