//! Kafka helpers of the benches that talk to a broker (`kafka.rs`, `side_by_side.rs`): the
//! broker's address, topic creation and pre-producing numbered records. Included by path, like
//! `common/mod.rs`, only by benches built with the `kafka` feature.

// Each bench uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    producer::{FutureProducer, FutureRecord},
};

/// `SLUICE_TEST_KAFKA`, default the test broker on loopback.
pub fn broker() -> String {
    std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin
        .create_topics([&topic], &opts)
        .await
        .expect("create_topics")
    {
        if let Err((t, e)) = r {
            panic!("creating topic {t}: {e}");
        }
    }
}

/// An idempotent `acks=all` producer (Sluice's own defaults).
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Writes `m` numbered records of `body` bytes, spread evenly over the partitions.
pub async fn preproduce(topic: &str, m: usize, partitions: i32, body: usize) {
    let p = producer();
    let mut value = vec![b'x'; body];
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..m {
        let n = format!("{i:>12}");
        value[..n.len()].copy_from_slice(n.as_bytes());
        let rec = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(&value[..])
            .partition((i % partitions as usize) as i32);
        pending.push(p.send_result(rec).map_err(|(e, _)| e).expect("enqueue"));
        if pending.len() == 10_000 {
            for d in pending.drain(..) {
                d.await.expect("report").expect("delivered");
            }
        }
    }
    for d in pending {
        d.await.expect("report").expect("delivered");
    }
}
