//! Sluice's engine: what every agent runs, whatever it connects to.
//!
//! Sources put batches into transactional channels; sink runners take them out and deliver
//! them, committing only after delivery. This crate holds the event model, the channel,
//! source and sink contracts with the memory channel and the built-in components (generator,
//! stdin and file sources; file, stdout, logger and null sinks), interceptors, selectors, the
//! DLQ, metrics, the pipeline file reader and the topology builder.
//!
//! It names no connector, no storage engine and no plugin runtime, and depends on no C or C++
//! code: Kafka, RocksDB or Wasmtime enter through the [`registry`] tables and the
//! [`plugin::PluginHost`] trait, filled in by the crates that own them.

pub mod blocking;
pub mod channel;
pub mod config;
pub mod dlq;
pub mod event;
pub mod graph;
pub mod guarantee;
pub mod interceptor;
pub mod metrics;
pub mod plugin;
pub mod registry;
pub mod selector;
pub mod sink;
pub mod source;
pub mod tap;
pub mod tls;
pub mod topology;
