//! Integration tests against real servers, through the `sluice` binary and the servers' own
//! clients: Kafka (`kafka`), RabbitMQ (`rabbitmq`), Redis (`redis`), S3, SQS, DynamoDB and
//! Kinesis on moto (`s3`, `aws_streams`), PostgreSQL and MariaDB (`sql`), and an OCI registry
//! (`oci`, `docker-registry` and `skopeo` on this machine).
//!
//! Needs every connector feature (`required-features` in `runtime/Cargo.toml`) and the servers
//! `scripts/test` starts; a server that is not there fails its tests, naming it.

#[path = "../common/mod.rs"]
mod common;

mod aws_streams;
mod kafka;
mod mqtt;
mod nats;
mod oci;
mod rabbitmq;
mod rabbitmq_to_kafka;
mod redis;
mod s3;
mod s3_source;
mod secrets;
mod sql;
mod sql_source;
