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
//!
//! With `delivery: exactly_once` (fed by a `kafka` source through a memory channel: see
//! [`super::transaction`]) the producer is transactional: each batch is one transaction
//! holding its records and the source's offsets after them. Any failure aborts it and the
//! batch is retried whole in a new one (records the broker rejects for good are
//! dead-lettered first), so the output topic's committed records and the consumer group's
//! committed offsets always agree.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use rdkafka::{ClientConfig, error::KafkaError, producer::Producer};
use sluice_core::{
    event::template::Template,
    guarantee::Delivery,
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
    transaction::{self, OffsetLink},
};

/// How long a transaction step (init, offsets, commit, abort) may wait for the broker.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// `type: kafka` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<std::sync::Arc<dyn SinkSpec>> {
    plain_sink::<KafkaSinkConfig>(cx)
}

impl SinkSpec for KafkaSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let mut sink = KafkaSink::new(cx.name, self)?;
        if cx.delivery == Some(Delivery::ExactlyOnce) {
            let [source] = cx.transactional_sources.as_slice() else {
                return Err(format!(
                    "`delivery: exactly_once` needs exactly one `kafka` source writing into this sink's channel (found {})",
                    cx.transactional_sources.len()
                ));
            };
            let id = self
                .transactional_id
                .clone()
                .unwrap_or_else(|| format!("sluice-{}", cx.metrics.component(cx.name)));
            sink.config.set("transactional.id", &id);
            sink.txn = Some(transaction::link(source));
        } else if self.transactional_id.is_some() {
            return Err("`transactional_id` is only used with `delivery: exactly_once`".into());
        }
        Ok(Box::new(sink))
    }

    fn transactions(&self) -> Option<&'static str> {
        Some("writes each batch and the kafka source's offsets after it in one Kafka transaction")
    }
}

pub struct KafkaSink {
    name: String,
    config: ClientConfig,
    routing: Routing,
    /// Created on the first delivery; replaced after a fatal error.
    producer: Option<KafkaProducer>,
    /// `delivery: exactly_once`: the source whose offsets each transaction commits.
    txn: Option<Arc<OffsetLink>>,
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
            txn: None,
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

    /// A transactional producer, initialised: the broker fences an earlier producer with the
    /// same `transactional.id` (a crashed agent's) and aborts its open transaction.
    async fn transactional_producer(&mut self) -> Result<KafkaProducer, DeliveryError> {
        if let Some(p) = &self.producer {
            return Ok(p.clone());
        }
        let p = create_producer(&self.config, &self.name).map_err(DeliveryError::retriable)?;
        blocking(&p, |p| p.init_transactions(TXN_TIMEOUT))
            .await
            .map_err(|e| {
                drop_detached(p.clone());
                DeliveryError::retriable(format!("kafka init_transactions: {e}"))
            })?;
        tracing::info!(sink = %self.name, "kafka transactions ready");
        self.producer = Some(p.clone());
        Ok(p)
    }

    /// One batch, one transaction: records, then the source's offsets, then the commit.
    async fn deliver_in_transaction(
        &mut self,
        link: &OffsetLink,
        batch: &Batch<'_>,
    ) -> Result<(), DeliveryError> {
        let offsets = transaction::offsets_of(batch.events).map_err(DeliveryError::Permanent)?;
        let Some(group) = link.group_metadata() else {
            return Err(DeliveryError::retriable(
                "the kafka source has no consumer group membership yet",
            ));
        };
        let producer = self.transactional_producer().await?;
        let step = async {
            producer
                .begin_transaction()
                .map_err(|e| Step::Failed(format!("begin: {e}"), e))?;
            let mut failures = Failures::default();
            produce_batch(&producer, &self.routing, batch, &mut failures).await;
            if !failures.is_empty() {
                return Err(Step::Records(failures));
            }
            blocking(&producer, move |p| {
                p.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)
            })
            .await
            .map_err(|e| Step::Failed(format!("send offsets: {e}"), e))?;
            blocking(&producer, |p| p.commit_transaction(TXN_TIMEOUT))
                .await
                .map_err(|e| Step::Failed(format!("commit: {e}"), e))
        };
        let outcome = step.await;
        let Err(failed) = outcome else {
            return Ok(());
        };
        // Whatever failed, the transaction is aborted (a fenced or broken producer cannot
        // abort: it is replaced, and its transaction is aborted by the broker).
        let fatal = matches!(&failed, Step::Failed(_, e) if is_fatal(e))
            || matches!(&failed, Step::Records(f) if f.fatal);
        if fatal
            || blocking(&producer, |p| p.abort_transaction(TXN_TIMEOUT))
                .await
                .is_err()
        {
            tracing::warn!(sink = %self.name, "replacing the transactional kafka producer");
            if let Some(p) = self.producer.take() {
                drop_detached(p);
            }
        }
        drop(producer);
        match failed {
            Step::Failed(why, _) => Err(DeliveryError::retriable(format!(
                "kafka transaction aborted ({why}); the batch is retried in a new one"
            ))),
            // Rejected records go to the dead-letter queue; the rest is retried in a new
            // transaction (this one, aborted, wrote nothing).
            Step::Records(mut f) => {
                if f.rejected.is_empty() {
                    return Err(DeliveryError::Retriable {
                        reason: format!(
                            "kafka transaction aborted: {}",
                            f.first_reason().unwrap_or("a record failed")
                        ),
                        retry_after: None,
                    });
                }
                f.rejected.sort_by_key(|(i, _)| *i);
                let retriable = (0..batch.len())
                    .filter(|i| f.rejected.binary_search_by_key(i, |(k, _)| *k).is_err())
                    .collect();
                Err(DeliveryError::Partial {
                    rejected: f.rejected,
                    retriable,
                })
            }
        }
    }
}

/// Why a transaction did not commit.
enum Step {
    /// A transaction call failed.
    Failed(String, KafkaError),
    /// Records failed.
    Records(Failures),
}

fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    }
}

/// Runs one of librdkafka's blocking transaction calls off the async runtime.
async fn blocking<T: Send + 'static>(
    producer: &KafkaProducer,
    call: impl FnOnce(&KafkaProducer) -> rdkafka::error::KafkaResult<T> + Send + 'static,
) -> rdkafka::error::KafkaResult<T> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || call(&p))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

#[async_trait]
impl Sink for KafkaSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(link) = self.txn.clone() {
            return self.deliver_in_transaction(&link, batch).await;
        }
        let producer = self.producer()?;
        let mut failures = Failures::default();
        produce_batch(&producer, &self.routing, batch, &mut failures).await;
        // librdkafka may also have raised a fatal error of its own (reported on the client).
        let fatal = failures.fatal || producer.client().fatal_error().is_some();
        // Never the last handle dropped here: closing a client may block.
        drop(producer);
        if fatal {
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
