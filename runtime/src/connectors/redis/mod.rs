//! Redis: a source reading streams as a consumer group member (entries acknowledged after the
//! put), and a sink running one command per event, pipelined. Behind the `redis` feature.

pub mod config;
pub mod sink;
pub mod source;
