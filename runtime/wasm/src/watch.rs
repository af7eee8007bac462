//! Hot-swap triggers: a changed plugin file, SIGHUP, or an OCI plugin's `refresh` period
//! (its tag is re-resolved; a new digest is swapped in like a changed file). (The admin
//! server's `POST /plugins/<name>/reload` calls [`Registry::reload`] directly.)

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::slot::{PluginSlot, PluginSource, Reloaded};

/// Every configured plugin, by name.
#[derive(Clone, Default)]
pub struct Registry {
    pub slots: BTreeMap<String, Arc<PluginSlot>>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<&Arc<PluginSlot>> {
        self.slots.get(name)
    }

    /// Reloads one plugin off the async runtime (compiling may take a while).
    pub async fn reload(&self, name: &str) -> Option<Result<Reloaded, super::PluginError>> {
        let slot = Arc::clone(self.slots.get(name)?);
        Some(
            tokio::task::spawn_blocking(move || slot.reload())
                .await
                .unwrap_or_else(|e| {
                    Err(super::PluginError::Engine(format!(
                        "reload task failed: {e}"
                    )))
                }),
        )
    }

    pub async fn reload_all(&self) {
        for name in self.slots.keys() {
            let _ = self.reload(name).await;
        }
    }

    pub fn all_healthy(&self) -> bool {
        self.slots.values().all(|s| s.healthy())
    }
}

/// Watches plugin files and listens for SIGHUP until `stop`; each trigger reloads (a reload
/// whose file did not change is a no-op).
pub fn spawn(registry: Registry, stop: CancellationToken) {
    if registry.slots.is_empty() {
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let by_path: Vec<(std::path::PathBuf, String)> = registry
        .slots
        .iter()
        .filter_map(|(n, s)| match &s.source {
            PluginSource::File(path) => Some((
                std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
                n.clone(),
            )),
            PluginSource::Oci(_) => None,
        })
        .collect();
    for (name, slot) in &registry.slots {
        if let Some(every) = slot.refresh {
            let (tx, stop, name) = (tx.clone(), stop.clone(), name.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => { let _ = tx.send(Some(name.clone())); }
                        _ = stop.cancelled() => break,
                    }
                }
            });
        }
    }
    let file_tx = tx.clone();
    let paths = by_path.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if ev.kind.is_access() {
            return;
        }
        for p in &ev.paths {
            let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            for (path, name) in &paths {
                if *path == p {
                    let _ = file_tx.send(Some(name.clone()));
                }
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch plugin files; reload with SIGHUP or the admin API");
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        // Watch directories: editors and `cp` replace files, which a file watch would miss.
        let dirs: std::collections::BTreeSet<_> = by_path
            .iter()
            .filter_map(|(p, _)| p.parent().map(|d| d.to_owned()))
            .collect();
        for d in dirs {
            if let Err(e) = w.watch(&d, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot watch plugin directory");
            }
        }
    }

    #[cfg(unix)]
    {
        let tx = tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => { let _ = tx.send(None); }
                    _ = stop.cancelled() => break,
                }
            }
        });
    }

    tokio::spawn(async move {
        let _keep_watching = watcher;
        loop {
            let first = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
                _ = stop.cancelled() => break,
            };
            // Debounce: a file copy produces several events; wait until they settle.
            let mut names = std::collections::BTreeSet::new();
            let mut all = first.is_none();
            names.extend(first);
            let settle = tokio::time::sleep(Duration::from_millis(150));
            tokio::pin!(settle);
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(Some(n)) => { names.insert(n); }
                        Some(None) => all = true,
                        None => break,
                    },
                    _ = &mut settle => break,
                }
            }
            if all {
                tracing::info!("SIGHUP: reloading every plugin");
                registry.reload_all().await;
            } else {
                for n in names {
                    let _ = registry.reload(&n).await;
                }
            }
        }
    });
}
