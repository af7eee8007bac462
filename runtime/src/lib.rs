//! Sluice: a streaming pipeline runtime. Sources put batches into transactional channels;
//! sink runners take them out and deliver them, committing only after delivery.
//!
//! The binary (`main.rs`) is a thin shell over [`cli`]; everything else is this library so
//! tests and benchmarks can drive the same code.

pub mod app;
pub mod aws;
pub mod channel;
pub mod cli;
pub mod cli_plugin;
pub mod config;
pub mod dlq;
pub mod event;
pub mod interceptor;
pub mod metrics;
pub mod plugin;
pub mod selector;
pub mod sink;
pub mod source;
pub mod topology;
