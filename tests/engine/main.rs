//! Integration tests that need no external server: the `sluice` binary end to end on examples
//! and generated pipelines (`e2e`, `tail`, `http`, `plugins`), the engine driven through the
//! library (`backpressure`, `channel_model`, `spillable_pipeline`) and the RocksDB channel's
//! storage (`rocks_storage`).
//!
//! Builds and passes with no cargo features (`cargo test --test engine --no-default-features`):
//! a module, or a single test, that needs an optional component is compiled only with the
//! feature that brings it (`rocksdb`, `wasm`, `http`, and the connectors some examples use).
//! `plugins` also needs the first-party plugins built (`scripts/build-plugins`).

#[path = "../common/mod.rs"]
mod common;

mod backpressure;
mod channel_model;
mod e2e;
mod exec;
mod net_sources;
mod reload;
mod spooldir;
mod tail;

#[cfg(feature = "rocksdb")]
mod chaos;
#[cfg(all(feature = "wasm", feature = "http"))]
mod codecs;
#[cfg(feature = "rocksdb")]
mod dlq_tools;
#[cfg(feature = "fcm")]
mod fcm;
#[cfg(feature = "rocksdb")]
mod full_disk;
#[cfg(all(feature = "hop", feature = "rocksdb"))]
mod hop;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "wasm")]
mod plugin_pacing;
#[cfg(feature = "wasm")]
mod plugin_templates;
#[cfg(feature = "wasm")]
mod plugins;
#[cfg(feature = "rocksdb")]
mod rocks_storage;
#[cfg(feature = "http")]
mod slow_sink;
#[cfg(feature = "rocksdb")]
mod spillable_pipeline;
#[cfg(feature = "cli-tools")]
mod tools;
