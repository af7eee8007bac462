//! Host bindings for each plugin world, generated from the repository's `wit/` package.

/// The typed interceptor world (`intercept(list<event>) -> list<verdict>`).
pub mod interceptor {
    wasmtime::component::bindgen!({ path: "../../wit", world: "sluice:plugin/interceptor" });
}

// The other worlds reuse the interceptor world's `types` and `host` bindings, so there is one
// `Event` type and one host implementation for all of them.

/// The packed interceptor world (one byte buffer each way; see `wit/PACKED.md`).
pub mod packed {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sluice:plugin/packed-interceptor",
        with: {
            "sluice:plugin/types": super::interceptor::sluice::plugin::types,
            "sluice:plugin/host": super::interceptor::sluice::plugin::host,
        },
    });
}

/// The codec world.
pub mod serde {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sluice:plugin/serde",
        with: {
            "sluice:plugin/types": super::interceptor::sluice::plugin::types,
            "sluice:plugin/host": super::interceptor::sluice::plugin::host,
        },
    });
}

/// The selector world.
pub mod selector {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sluice:plugin/selector",
        with: {
            "sluice:plugin/types": super::interceptor::sluice::plugin::types,
            "sluice:plugin/host": super::interceptor::sluice::plugin::host,
        },
    });
}

/// The selector world with its export named `select-routes` (for componentize-py).
pub mod route_selector {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sluice:plugin/route-selector",
        with: {
            "sluice:plugin/types": super::interceptor::sluice::plugin::types,
            "sluice:plugin/host": super::interceptor::sluice::plugin::host,
        },
    });
}

pub use interceptor::sluice::plugin::types;

/// Copies an event into the typed bindings (typed worlds only; the packed world avoids this).
pub fn to_typed(e: &sluice_core::event::Event) -> types::Event {
    types::Event {
        headers: e
            .headers
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        body: e.body.to_vec(),
    }
}

pub fn from_typed(e: types::Event) -> sluice_core::event::Event {
    sluice_core::event::Event {
        headers: e.headers.into_iter().collect(),
        body: e.body.into(),
    }
}

/// Every world imports the same `host` interface; one implementation serves them all.
macro_rules! impl_host {
    ($($world:ident),*) => {$(
        impl $world::sluice::plugin::host::Host for super::sandbox::StoreState {
            fn log(&mut self, level: $world::sluice::plugin::host::Level, message: String) {
                use $world::sluice::plugin::host::Level as L;
                let level = match level {
                    L::Trace => tracing::Level::TRACE,
                    L::Debug => tracing::Level::DEBUG,
                    L::Info => tracing::Level::INFO,
                    L::Warn => tracing::Level::WARN,
                    L::Error => tracing::Level::ERROR,
                };
                self.host_log(level, &message);
            }

            fn counter_add(&mut self, name: String, delta: i64) {
                self.host_counter_add(&name, delta);
            }
        }

        impl $world::sluice::plugin::types::Host for super::sandbox::StoreState {}
    )*};
}

impl_host!(interceptor);
