//! Kafka: a source (consumer group member, offsets committed after the put), a sink
//! (idempotent producer, `acks=all`; transactional with `delivery: exactly_once`) and a
//! channel (a topic as a durable buffer), over librdkafka. Behind the `kafka` feature.

pub mod channel;
pub mod client;
pub mod config;
pub mod producer;
pub mod sink;
pub mod source;
pub(crate) mod transaction;
