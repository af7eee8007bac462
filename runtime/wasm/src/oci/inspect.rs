//! What a component is, read from its own type: the world it implements, what it exports and
//! imports, and which version of the `sluice:plugin` WIT package it was built against.
//!
//! The same checks as loading a plugin (compile, allowed imports, a known world, links
//! against this host), so a push refuses exactly what an agent would refuse later.

use wasmtime::component::types::ComponentItem;

use crate::{PluginError, World, engine::PluginEngine, sandbox, slot};

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "sluice:plugin";

#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentInfo {
    pub world: &'static str,
    /// Version of `sluice:plugin` the component imports; `None` if it imports none of its
    /// interfaces (it then depends on no versioned host API).
    pub wit_version: Option<String>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub size: usize,
    /// `sha256:<hex>` of the component bytes (the layer digest once pushed).
    pub digest: String,
}

impl ComponentInfo {
    /// `sluice:plugin/<world>@<version>`: the CNCF config's `component.target`.
    pub fn target(&self) -> String {
        match &self.wit_version {
            Some(v) => format!("{WIT_PACKAGE}/{}@{v}", self.world),
            None => format!("{WIT_PACKAGE}/{}", self.world),
        }
    }
}

/// Validates `bytes` as a Sluice plugin component and describes it.
pub fn inspect(bytes: &[u8]) -> Result<ComponentInfo, PluginError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(PluginError::Invalid(
            "not a Sluice plugin: the file is not WebAssembly (no `\\0asm` header)".into(),
        ));
    }
    let engine = PluginEngine::shared()?;
    let (component, digest) = engine.load("component", bytes)?;
    sandbox::check_imports(&engine.engine, &component)?;
    let world: World = slot::detect_world(&engine, &component)?;
    let _linked = sandbox::linker(&engine.engine)?
        .instantiate_pre(&component)
        .map_err(|e| {
            PluginError::Invalid(format!(
                "not usable by this Sluice: it does not link against the host's `{WIT_PACKAGE}` \
                 interfaces: {e:#}"
            ))
        })?;
    let ty = component.component_type();
    let describe = |name: &str, item: &ComponentItem| match item {
        ComponentItem::ComponentFunc(_) => format!("{name} (func)"),
        ComponentItem::ComponentInstance(_) => format!("{name} (interface)"),
        ComponentItem::Type(_) => format!("{name} (type)"),
        _ => name.to_owned(),
    };
    let exports: Vec<String> = ty
        .exports(&engine.engine)
        .map(|(n, i)| describe(n, &i.ty))
        .collect();
    let import_names: Vec<String> = ty
        .imports(&engine.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let wit_version = import_names.iter().find_map(|n| {
        n.strip_prefix(WIT_PACKAGE)
            .and_then(|rest| rest.split_once('@'))
            .map(|(_, v)| v.to_owned())
    });
    let imports = ty
        .imports(&engine.engine)
        .map(|(n, i)| describe(n, &i.ty))
        .collect();
    Ok(ComponentInfo {
        world: world.name(),
        wit_version,
        exports,
        imports,
        size: bytes.len(),
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_is_described_and_anything_else_refused() {
        let wasm = wat::parse_str(crate::test_guests::marker_guest('A')).unwrap();
        let info = inspect(&wasm).unwrap();
        assert_eq!(info.world, "packed-interceptor");
        assert!(
            info.exports
                .iter()
                .any(|e| e.starts_with("intercept-packed"))
        );
        assert_eq!(info.size, wasm.len());
        let e = inspect(b"hello").unwrap_err().to_string();
        assert!(e.contains("not WebAssembly"), "{e}");
        let core = wat::parse_str("(module)").unwrap();
        let e = inspect(&core).unwrap_err().to_string();
        assert!(e.contains("component"), "{e}");
    }
}
