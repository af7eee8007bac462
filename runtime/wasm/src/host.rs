//! The engine's view of this crate: [`WasmHost`] implements `sluice_core`'s `PluginHost`, so
//! the topology asks it for interceptors, codecs and selectors by plugin name, and the admin
//! server asks it to list and reload plugins.

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use sluice_core::{
    config::PluginConfig,
    event::codec::Codec,
    interceptor::Interceptor,
    metrics::PluginMetrics,
    plugin::{PluginHost, PluginSupport, ReloadOutcome},
    selector::Selector,
};
use tokio_util::sync::CancellationToken;

use crate::{
    World,
    codec::WasmCodec,
    interceptor::WasmInterceptor,
    oci,
    selector::WasmSelector,
    slot::{PluginSlot, PluginSource, Reloaded, SlotLimits},
    watch::{self, Registry},
};

/// What the agent's registry carries to use this host.
pub fn support() -> PluginSupport {
    PluginSupport {
        new_host: || Box::new(WasmHost::default()),
        check_path,
    }
}

/// Checks an `oci://` reference's syntax when the pipeline is read (a file path is checked
/// when it is loaded).
fn check_path(path: &Path) -> Result<(), String> {
    match oci::path_ref(path) {
        Some(r) => oci::OciRef::parse(r).map(|_| ()).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// The Wasm plugins of one agent.
#[derive(Default)]
pub struct WasmHost {
    pub registry: Registry,
}

impl WasmHost {
    /// The plugin `name` if it implements a world accepted by `ok`.
    fn slot(
        &self,
        name: &str,
        role: &str,
        ok: fn(World) -> bool,
    ) -> Result<Arc<PluginSlot>, String> {
        let slot = self
            .registry
            .get(name)
            .ok_or_else(|| format!("no plugin named `{name}`"))?;
        let world = slot.world();
        if ok(world) {
            Ok(Arc::clone(slot))
        } else {
            Err(format!(
                "plugin `{name}` is a `{}` component; {role} needs another kind",
                world.name()
            ))
        }
    }
}

#[async_trait]
impl PluginHost for WasmHost {
    fn load(
        &mut self,
        name: &str,
        spec: &PluginConfig,
        base_dir: &Path,
        metrics: PluginMetrics,
    ) -> Result<(), String> {
        let source = match oci::path_ref(&spec.path) {
            Some(r) => PluginSource::Oci(oci::OciRef::parse(r).map_err(|e| e.to_string())?),
            None if spec.path.is_absolute() => PluginSource::File(spec.path.clone()),
            None => PluginSource::File(base_dir.join(&spec.path)),
        };
        let mut config: serde_json::Map<String, serde_json::Value> =
            spec.config.clone().into_iter().collect();
        if !spec.files.is_empty() {
            if config.contains_key("files") {
                return Err(
                    "`files` is both a plugin setting and a key of its `config`; rename one".into(),
                );
            }
            config.insert("files".into(), read_files(&spec.files, base_dir)?);
        }
        let config = serde_json::Value::Object(config);
        let bytes = |b: Option<sluice_core::config::units::ByteSize>| {
            b.map(|m| usize::try_from(m.0).unwrap_or(usize::MAX))
        };
        let limits = SlotLimits {
            memory: bytes(spec.limits.memory),
            deadline: spec.limits.deadline.map(|d| d.0),
            recycle_after_calls: spec.limits.recycle_after_calls,
            recycle_memory: bytes(spec.limits.recycle_memory),
        };
        let slot = PluginSlot::load_from(
            name,
            source,
            &config,
            limits,
            spec.refresh.map(|d| d.0),
            metrics,
        )
        .map_err(|e| e.to_string())?;
        self.registry.slots.insert(name.to_owned(), slot);
        Ok(())
    }

    fn interceptor(&self, name: &str) -> Result<Box<dyn Interceptor>, String> {
        let slot = self.slot(name, "an interceptor chain", World::is_interceptor)?;
        Ok(Box::new(
            WasmInterceptor::new(slot).map_err(|e| e.to_string())?,
        ))
    }

    fn codec(&self, name: &str) -> Result<Box<dyn Codec>, String> {
        let slot = self.slot(name, "a codec", |w| w == World::Serde)?;
        Ok(Box::new(WasmCodec::new(slot).map_err(|e| e.to_string())?))
    }

    fn selector(&self, name: &str, channels: Vec<String>) -> Result<Box<dyn Selector>, String> {
        let slot = self.slot(name, "a selector", World::is_selector)?;
        Ok(Box::new(
            WasmSelector::new(slot, channels).map_err(|e| e.to_string())?,
        ))
    }

    fn watch(&self, stop: CancellationToken) {
        watch::spawn(self.registry.clone(), stop);
    }

    fn describe(&self) -> Vec<serde_json::Value> {
        self.registry.slots.values().map(|p| p.describe()).collect()
    }

    fn unhealthy(&self) -> Vec<String> {
        self.registry
            .slots
            .iter()
            .filter(|(_, p)| !p.healthy())
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn carry_over(&self, keep: &std::collections::BTreeSet<String>) -> Option<Box<dyn PluginHost>> {
        let slots = self
            .registry
            .slots
            .iter()
            .filter(|(n, _)| keep.contains(*n))
            .map(|(n, s)| (n.clone(), Arc::clone(s)))
            .collect();
        Some(Box::new(WasmHost {
            registry: Registry { slots },
        }))
    }

    async fn reload(&self, name: &str) -> ReloadOutcome {
        match self.registry.reload(name).await {
            None => ReloadOutcome::NotFound,
            Some(Ok(Reloaded::Unchanged)) => ReloadOutcome::Unchanged,
            Some(Ok(Reloaded::Swapped { from, to })) => ReloadOutcome::Swapped { from, to },
            Some(Err(e)) => ReloadOutcome::Refused(e.to_string()),
        }
    }
}

/// The plugin's `files:`, read and base64-encoded for its config (the plugin cannot open
/// files itself). Read when the plugin is loaded: at start, and at a live reload when its
/// definition or a file's content changed (the files count in its fingerprint); a hot swap
/// of the component keeps the config it was loaded with.
fn read_files(
    files: &std::collections::BTreeMap<String, std::path::PathBuf>,
    base_dir: &Path,
) -> Result<serde_json::Value, String> {
    use base64::Engine;
    let mut out = serde_json::Map::new();
    for (name, path) in files {
        let path = base_dir.join(path);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("files.{name}: cannot read {}: {e}", path.display()))?;
        out.insert(
            name.clone(),
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        );
    }
    Ok(serde_json::Value::Object(out))
}
