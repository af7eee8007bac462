//! MQTT 3.1.1 (through rumqttc): a source that acknowledges each message only after its batch
//! is committed, on a persistent session so messages wait in the broker while the agent is
//! down, and a sink that publishes with QoS 1 and waits for every PUBACK.

pub mod config;
pub mod sink;
pub mod source;
