//! The pipeline file: YAML → typed config, with every problem reported at once.
//!
//! Loading never stops at the first mistake: each component is read on its own and all errors
//! (syntax, unknown fields, bad values, dangling references) are collected, each naming the
//! file, line, column and component. A component's `type` is looked up in the
//! [`Registry`](crate::registry::Registry) the caller passes, whose entry reads the type's own
//! settings; positions survive deserialization (see [`de`]).

pub mod de;
pub mod model;
pub mod node;
mod read;
mod secret;
pub mod units;
mod validate;

use std::{
    fmt,
    path::{Path, PathBuf},
};

pub use model::*;
pub use node::{Node, Pos};
pub use secret::Secret;

use crate::registry::Registry;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub pos: Pos,
    /// `section.name` of the component, when the problem belongs to one.
    pub component: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: not from the file (a command-line flag, or the file as a whole).
        if self.pos.line == 0 {
            write!(f, "{}: ", self.file.display())?;
        } else {
            write!(f, "{}:{}: ", self.file.display(), self.pos)?;
        }
        if let Some(c) = &self.component {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found in a pipeline file (never empty).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a pipeline file, resolving `${ENV}` from the process environment and
/// component types from `registry`.
pub fn load_file(path: &Path, registry: &Registry) -> Result<Pipeline, ConfigErrors> {
    load_file_with_plugins(path, &[], registry)
}

/// Like [`load_file`], with plugins added or re-pointed from the command line
/// (`(name, path)`) before validation, so the file may refer to them.
pub fn load_file_with_plugins(
    path: &Path,
    extra: &[(String, PathBuf)],
    registry: &Registry,
) -> Result<Pipeline, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            pos: Pos { line: 0, col: 0 },
            component: None,
            message: format!("cannot read pipeline file: {e}"),
        }])
    })?;
    load_str_with_plugins(
        path,
        &text,
        &|name| std::env::var(name).ok(),
        extra,
        registry,
    )
}

/// Parses and validates pipeline text; `file` is only used in messages.
pub fn load_str(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
) -> Result<Pipeline, ConfigErrors> {
    load_str_with_plugins(file, text, env, &[], registry)
}

/// The plugin names a pipeline file declares under `plugins:` (none when it cannot be read;
/// loading it reports why).
pub fn declared_plugins(path: &Path) -> std::collections::BTreeSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Default::default();
    };
    let Ok(root) = Node::parse(&text, &|name| std::env::var(name).ok()) else {
        return Default::default();
    };
    root.get("plugins")
        .map(|p| {
            p.entries()
                .iter()
                .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn load_str_with_plugins(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    extra: &[(String, PathBuf)],
    registry: &Registry,
) -> Result<Pipeline, ConfigErrors> {
    let mut cx = Collector {
        file: file.to_owned(),
        errors: Vec::new(),
    };
    let root = match Node::parse(text, env) {
        Ok(root) => root,
        Err(errs) => {
            for e in errs {
                cx.push(e.pos, None, e.message);
            }
            return Err(ConfigErrors(cx.errors));
        }
    };
    let mut pipeline = read::read_pipeline(&root, &mut cx, registry);
    if !extra.is_empty() && registry.plugins.is_none() {
        cx.push(
            Pos::default(),
            None,
            format!(
                "--plugin needs the `wasm` feature; this build has: {}",
                registry.features_list()
            ),
        );
    }
    for (name, path) in extra {
        match pipeline.plugins.iter_mut().find(|p| &p.name == name) {
            Some(existing) => existing.spec.path = path.clone(),
            None => {
                pipeline
                    .declared
                    .push((model::RefKind::Plugin, name.clone()));
                pipeline.plugins.push(Named {
                    name: name.clone(),
                    pos: Pos::default(),
                    kind: "plugin".into(),
                    spec: PluginConfig {
                        path: path.clone(),
                        refresh: None,
                        config: Default::default(),
                        files: Default::default(),
                        limits: Default::default(),
                    },
                });
            }
        }
    }
    files_in_fingerprints(&mut pipeline, file);
    validate::check(&pipeline, &mut cx);
    if cx.errors.is_empty() {
        Ok(pipeline)
    } else {
        cx.errors.sort_by_key(|e| (e.pos.line, e.pos.col));
        Err(ConfigErrors(cx.errors))
    }
}

/// Gathers errors while reading; never stops early.
pub(crate) struct Collector {
    file: PathBuf,
    errors: Vec<ConfigError>,
}

impl Collector {
    pub(crate) fn push(&mut self, pos: Pos, component: Option<&str>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            pos,
            component: component.map(str::to_owned),
            message: message.into(),
        });
    }

    /// Deserializes `node` as `T`, recording an error (and returning `None`) on failure.
    pub(crate) fn read<T: serde::de::DeserializeOwned>(
        &mut self,
        node: &Node,
        component: Option<&str>,
    ) -> Option<T> {
        match de::from_node(node) {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e.pos.unwrap_or(node.pos), component, e.message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Mixes the contents of each plugin's `files:` into the plugin's fingerprint, so a live
/// reload loads the plugin again when a schema or descriptor set changed on disk, not only
/// when its definition did. (An unreadable file is hashed as such; loading it reports it.)
fn files_in_fingerprints(pipeline: &mut Pipeline, file: &Path) {
    use std::hash::{Hash, Hasher};
    let base = file.parent().unwrap_or(Path::new(""));
    for pc in &pipeline.plugins {
        if pc.spec.files.is_empty() {
            continue;
        }
        let key = format!("plugins.{}", pc.name);
        let mut h = std::hash::DefaultHasher::new();
        pipeline.fingerprints.get(&key).hash(&mut h);
        for (name, path) in &pc.spec.files {
            name.hash(&mut h);
            std::fs::read(base.join(path)).ok().hash(&mut h);
        }
        pipeline.fingerprints.insert(key, h.finish());
    }
}
