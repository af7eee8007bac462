//! Exactly-once Kafka → Kafka: a `kafka` sink with `delivery: exactly_once` writes each batch
//! and the consumed offsets of the `kafka` source feeding it in one Kafka transaction
//! (KIP-98 / KIP-447: `send_offsets_to_transaction` with the consumer's group metadata), so
//! the output records and the input position move together or not at all.
//!
//! The source and the sink are separate components, linked here by the source's metrics label:
//! the source publishes its live consumer (whose group metadata carries the generation, so a
//! rebalanced-away member's offsets are refused by the broker) and never commits an offset
//! itself; the sink reads the batch's offsets from the `kafka.topic`, `kafka.partition` and
//! `kafka.offset` headers the source puts on every event. The channel between them keeps
//! nothing across a crash (a `memory` channel): after a crash the source reads again from the
//! offsets of the last committed transaction, and the crashed producer's open transaction is
//! aborted by the broker when the new producer with the same `transactional.id` starts
//! (zombie fencing).
//!
//! Not handled yet: a rebalance that revokes partitions while batches of theirs still wait in
//! the memory channel. Their offsets carry the old generation, the broker refuses them, and
//! those batches are retried until the sink's `retry.max_attempts` sends them to the DLQ
//! (nothing is committed twice, but they do not reach the output). One agent per consumer
//! group, or a stable assignment, avoids it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, LazyLock, Mutex, Weak},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{Consumer, ConsumerGroupMetadata, StreamConsumer},
};
use sluice_core::event::Event;

use super::{
    client::ConsumerCtx,
    source::{HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC},
};

/// What a source shares with the sink that commits its offsets.
#[derive(Default)]
pub(crate) struct OffsetLink {
    consumer: Mutex<Weak<StreamConsumer<ConsumerCtx>>>,
}

impl OffsetLink {
    /// The source's current consumer (replaced when the source reconnects).
    pub(crate) fn publish(&self, consumer: &Arc<StreamConsumer<ConsumerCtx>>) {
        *self.consumer.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(consumer);
    }

    /// The group metadata of the live consumer; `None` while it is not subscribed yet.
    pub(crate) fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        let consumer = self
            .consumer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()?;
        consumer.group_metadata()
    }
}

static LINKS: LazyLock<Mutex<HashMap<String, Arc<OffsetLink>>>> = LazyLock::new(Mutex::default);

/// The link of the source labelled `source` (made by whichever of the two is built first; a
/// reload that rebuilds either finds the same one).
pub(crate) fn link(source: &str) -> Arc<OffsetLink> {
    LINKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(source.to_owned())
        .or_default()
        .clone()
}

/// The offsets a delivered batch commits: per topic and partition, the offset after its
/// highest record. Every event must carry the `kafka` source's position headers.
pub(crate) fn offsets_of(events: &[Event]) -> Result<TopicPartitionList, String> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for e in events {
        let (Some(topic), Some(partition), Some(offset)) = (
            e.headers.get(HEADER_TOPIC),
            e.headers.get(HEADER_PARTITION).and_then(|p| p.parse().ok()),
            e.headers
                .get(HEADER_OFFSET)
                .and_then(|o| o.parse::<i64>().ok()),
        ) else {
            return Err(format!(
                "an event without the kafka source's {HEADER_TOPIC}, {HEADER_PARTITION} and {HEADER_OFFSET} headers cannot be written exactly once"
            ));
        };
        let slot = next.entry((topic, partition)).or_insert(0);
        *slot = (*slot).max(offset + 1);
    }
    let mut tpl = TopicPartitionList::with_capacity(next.len());
    for ((topic, partition), offset) in next {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| e.to_string())?;
    }
    Ok(tpl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: i32, offset: i64) -> Event {
        let mut e = Event::new("x");
        e.headers.insert(HEADER_TOPIC, topic);
        e.headers.insert(HEADER_PARTITION, partition.to_string());
        e.headers.insert(HEADER_OFFSET, offset.to_string());
        e
    }

    #[test]
    fn a_batch_commits_the_offset_after_its_last_record_per_partition() {
        let tpl =
            offsets_of(&[at("a", 0, 7), at("a", 1, 3), at("a", 0, 9), at("b", 0, 0)]).unwrap();
        let got: Vec<(String, i32, Offset)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), 0, Offset::Offset(10)),
                ("a".into(), 1, Offset::Offset(4)),
                ("b".into(), 0, Offset::Offset(1)),
            ]
        );
        assert!(offsets_of(&[Event::new("no headers")]).is_err());
    }
}
