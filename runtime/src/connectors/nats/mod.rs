//! NATS JetStream (through async-nats): a source reading a durable pull consumer that
//! acknowledges each message only after its batch is committed, and a sink that publishes to
//! a stream and waits for the stream's acknowledgement of every message.

pub mod config;
pub mod sink;
pub mod source;
