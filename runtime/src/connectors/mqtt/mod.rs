//! MQTT 3.1.1 and 5 (through rumqttc), over TCP or TLS (`mqtts://`): a source that
//! acknowledges each message only after its batch is committed, on a persistent session so
//! messages wait in the broker while the agent is down, and a sink that publishes with QoS 1
//! and waits for every PUBACK. With MQTT 5, user properties and event headers map onto each
//! other, and a message the broker refuses is dead-lettered with its reason code.

pub mod config;
pub(crate) mod session;
pub mod sink;
pub mod source;
