//! The `kafka` sink: produces every event as one record and reports success only when every
//! record of the batch is acknowledged.
//!
//! The topic and the optional key are templates over event headers; a key that renders empty
//! means no key (librdkafka then spreads records over partitions). Event headers become Kafka
//! headers (all of them unless `headers: false`, minus `exclude_headers`), and a numeric
//! `timestamp` header (epoch milliseconds, as the `kafka` source writes it) becomes the
//! record's timestamp, so event time survives a hop through Kafka. The body is the value.
//!
//! librdkafka's idempotent producer with `acks=all` is the default (the `producer` map may
//! change both): a record is acknowledged once every in-sync replica has it, and retries
//! inside librdkafka never duplicate or reorder records. Records are sent through rdkafka's
//! `FutureProducer` — one call per record, all of a batch in flight at once, the delivery
//! reports awaited at the end — so a batch costs one round of broker acknowledgements.
//!
//! Failures are sorted per record: what the broker can never take as it is (too large,
//! invalid, not authorized for the topic) is rejected to the dead-letter queue with the
//! error text; everything else — timeouts, a full local queue, leader changes, a topic that
//! does not exist yet — is retried by the runner. A fatal producer error (the idempotent
//! producer's state is lost) replaces the producer before the retry. Delivery is
//! at-least-once: a record whose acknowledgement was lost is sent again.
//!
//! The producer is created on the first delivery (so the agent starts while Kafka is down)
//! and closed on a thread of its own.

use async_trait::async_trait;
use rdkafka::ClientConfig;
use sluice_core::{
    event::template::Template,
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
    sink::{Batch, DeliveryError, Sink},
};

use super::{
    client::{check_topic_name, drop_detached},
    config::KafkaSinkConfig,
    producer::{
        Failures, HeaderFilter, KafkaProducer, Routing, create_producer, produce_batch,
        producer_config,
    },
};

/// `type: kafka` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SinkSpec>> {
    plain_sink::<KafkaSinkConfig>(cx)
}

impl SinkSpec for KafkaSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(KafkaSink::new(cx.name, self)?))
    }
}

pub struct KafkaSink {
    name: String,
    config: ClientConfig,
    routing: Routing,
    /// Created on the first delivery; replaced after a fatal error.
    producer: Option<KafkaProducer>,
}

impl KafkaSink {
    /// Checks the templates and builds the producer configuration; nothing connects here.
    pub fn new(name: &str, cfg: &KafkaSinkConfig) -> Result<Self, String> {
        let topic = Template::parse(&cfg.topic).map_err(|e| format!("`topic`: {e}"))?;
        if topic.is_constant() {
            check_topic_name("topic", &cfg.topic)?;
        }
        let key = cfg
            .key
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| format!("`key`: {e}"))?;
        Ok(KafkaSink {
            name: name.to_owned(),
            config: producer_config(&cfg.bootstrap_servers, &cfg.security, &cfg.producer)?,
            routing: Routing {
                topic,
                key,
                headers: HeaderFilter::new(cfg.headers, &cfg.exclude_headers),
            },
            producer: None,
        })
    }

    fn producer(&mut self) -> Result<KafkaProducer, DeliveryError> {
        if let Some(p) = &self.producer {
            return Ok(p.clone());
        }
        let p = create_producer(&self.config, &self.name).map_err(DeliveryError::retriable)?;
        self.producer = Some(p.clone());
        Ok(p)
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        let producer = self.producer()?;
        let mut failures = Failures::default();
        produce_batch(&producer, &self.routing, batch, &mut failures).await;
        // Never the last handle dropped here: closing a client may block.
        drop(producer);
        if failures.fatal {
            tracing::warn!(sink = %self.name, "fatal kafka producer error; replacing the producer");
            if let Some(p) = self.producer.take() {
                drop_detached(p);
            }
        }
        failures.into_result(batch.len())
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        // Every delivery awaited its acknowledgements, so nothing is left in flight.
        if let Some(p) = self.producer.take() {
            drop_detached(p);
        }
        Ok(())
    }
}
