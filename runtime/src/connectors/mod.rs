//! Connectors: one folder per system, holding its settings, client plumbing, sources, sinks and
//! channels side by side, each folder behind the cargo feature of its system.
//!
//! [`register`] is the one place that lists them. Adding a connector is its folder, a line
//! here (through [`connector!`]) and a feature in `Cargo.toml`; nothing below the topology
//! names a connector.

#[cfg(any(
    feature = "aws-s3",
    feature = "aws-sqs",
    feature = "aws-dynamodb",
    feature = "aws-kinesis"
))]
pub mod aws;
#[cfg(feature = "fcm")]
pub mod fcm;
#[cfg(feature = "hop")]
pub mod hop;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sql-postgres", feature = "sql-mysql"))]
pub mod sql;

use sluice_core::registry::Registry;

/// Registers `$name` in `$table` with reader `$read` when `$feature` is compiled in, and as a
/// type that needs `$feature` otherwise.
macro_rules! connector {
    ($table:expr, $name:literal, $feature:literal, $read:path) => {
        #[cfg(feature = $feature)]
        $table.add($name, $read);
        #[cfg(not(feature = $feature))]
        $table.unavailable($name, $feature);
    };
}

/// Adds every connector's component types to `r`.
pub fn register(r: &mut Registry) {
    connector!(r.sources, "http", "http", http::read_source);
    connector!(r.sources, "sluice", "hop", hop::read_source);
    connector!(r.sources, "kafka", "kafka", kafka::source::read);
    connector!(r.sources, "mqtt", "mqtt", mqtt::source::read);
    connector!(r.sources, "nats", "nats", nats::source::read);
    connector!(r.sources, "rabbitmq", "rabbitmq", rabbitmq::source::read);
    connector!(r.sources, "redis", "redis", redis::source::read);
    connector!(r.sources, "sqs", "aws-sqs", aws::sqs::read);
    connector!(r.sources, "s3", "aws-s3", aws::s3::source::read);
    #[cfg(any(feature = "sql-postgres", feature = "sql-mysql"))]
    r.sources.add("sql", sql::source::read);
    #[cfg(not(any(feature = "sql-postgres", feature = "sql-mysql")))]
    r.sources.unavailable("sql", "sql-postgres` or `sql-mysql");

    connector!(r.sinks, "http", "http", http::read_sink);
    connector!(r.sinks, "sluice", "hop", hop::read_sink);
    connector!(r.sinks, "kafka", "kafka", kafka::sink::read);
    connector!(r.sinks, "mqtt", "mqtt", mqtt::sink::read);
    connector!(r.sinks, "nats", "nats", nats::sink::read);
    connector!(r.sinks, "rabbitmq", "rabbitmq", rabbitmq::sink::read);
    connector!(r.sinks, "redis", "redis", redis::sink::read);
    connector!(r.sinks, "s3", "aws-s3", aws::s3::read);
    connector!(r.sinks, "dynamodb", "aws-dynamodb", aws::dynamodb::read);
    connector!(r.sinks, "fcm", "fcm", fcm::sink::read);
    connector!(r.sinks, "kinesis", "aws-kinesis", aws::kinesis::read);
    #[cfg(any(feature = "sql-postgres", feature = "sql-mysql"))]
    r.sinks.add("sql", sql::read);
    // The message reads "need the `sql-postgres` or `sql-mysql` feature".
    #[cfg(not(any(feature = "sql-postgres", feature = "sql-mysql")))]
    r.sinks.unavailable("sql", "sql-postgres` or `sql-mysql");

    connector!(r.channels, "kafka", "kafka", kafka::channel::read);
}
