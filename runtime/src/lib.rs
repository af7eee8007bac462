//! The Sluice agent: the engine (`sluice-core`) plus the connectors, durable channels and
//! plugin host this build was compiled with, the admin server and the command line.
//!
//! Which components exist is decided here, once: [`registry`] lists every component type,
//! each connector behind its cargo feature. The binary (`main.rs`) is a thin shell over
//! [`cli`]; everything else is this library so tests and benchmarks can drive the same code.

pub mod admin;
pub mod app;
pub mod cli;
pub mod connectors;
pub mod dead_letters;
#[cfg(feature = "aws-s3")]
pub mod parquet;
pub mod pipeline_test;
pub mod reload;
#[cfg(feature = "http")]
pub mod remote;
#[cfg(any(feature = "http", feature = "mqtt"))]
pub mod tls;

/// True for `http(s)://` pipeline arguments (pipelines from a URL).
pub fn remote_url(arg: &str) -> bool {
    arg.starts_with("https://") || arg.starts_with("http://")
}

use std::sync::OnceLock;

use sluice_core::registry::Registry;

/// Every optional feature, in the order `--version` lists them.
const FEATURES: &[(&str, bool)] = &[
    ("kafka", cfg!(feature = "kafka")),
    ("rabbitmq", cfg!(feature = "rabbitmq")),
    ("redis", cfg!(feature = "redis")),
    ("aws-s3", cfg!(feature = "aws-s3")),
    ("aws-sqs", cfg!(feature = "aws-sqs")),
    ("aws-dynamodb", cfg!(feature = "aws-dynamodb")),
    ("aws-kinesis", cfg!(feature = "aws-kinesis")),
    ("sql-postgres", cfg!(feature = "sql-postgres")),
    ("sql-mysql", cfg!(feature = "sql-mysql")),
    ("http", cfg!(feature = "http")),
    ("hop", cfg!(feature = "hop")),
    ("mqtt", cfg!(feature = "mqtt")),
    ("nats", cfg!(feature = "nats")),
    ("fcm", cfg!(feature = "fcm")),
    ("rocksdb", cfg!(feature = "rocksdb")),
    ("wasm", cfg!(feature = "wasm")),
    ("oci", cfg!(feature = "oci")),
    ("cli-tools", cfg!(feature = "cli-tools")),
];

/// The cargo features this build was compiled with.
pub fn features() -> Vec<&'static str> {
    FEATURES
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| name)
        .copied()
        .collect()
}

/// Every component type this agent knows: the engine's built-ins plus the connectors,
/// durable channels and plugin host compiled in. Types whose feature is off are listed as
/// unavailable, so a pipeline naming one is told which feature it needs.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::builtin();
        r.features = features();
        connectors::register(&mut r);
        #[cfg(any(feature = "http", feature = "mqtt"))]
        {
            r.tls = Some(std::sync::Arc::new(tls::Listeners));
        }
        #[cfg(feature = "aws-s3")]
        r.formats.push(parquet::native_format());
        #[cfg(feature = "rocksdb")]
        sluice_rocks::config::register(&mut r);
        #[cfg(not(feature = "rocksdb"))]
        {
            r.channels.unavailable("rocksdb", "rocksdb");
            r.channels.unavailable("spillable", "rocksdb");
        }
        #[cfg(feature = "wasm")]
        {
            r.plugins = Some(sluice_wasm::host::support());
        }
        r
    })
}
