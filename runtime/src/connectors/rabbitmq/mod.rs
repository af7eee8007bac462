//! RabbitMQ (AMQP 0-9-1, through lapin): a source that acknowledges deliveries after the put,
//! and a sink that publishes with confirms. Behind the `rabbitmq` feature.

pub mod config;
pub mod sink;
pub mod source;
