//! The producer side shared by the `kafka` sink and channel: producer configuration (idempotent,
//! `acks=all` by default), events to records (topic and key templates, headers, event time),
//! producing a batch with every record in flight at once, and sorting failures per record
//! into rejected (dead-letter) and retriable.

use rdkafka::{
    ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};
use sluice_core::{
    event::{Event, template::Template},
    sink::DeliveryError,
};

use super::{
    client::{ClientLog, ClientSpec, HEADER_TIMESTAMP, client_config},
    config::{KafkaOptions, KafkaSecurity},
};

/// The producer both the sink and the channel use.
pub(crate) type KafkaProducer = FutureProducer<ClientLog>;

/// Producer properties: Sluice's defaults (`acks=all`, idempotence, a 30 s delivery timeout
/// so a down broker turns into a retry rather than a long wait), then the user's map.
pub(crate) fn producer_config(
    bootstrap_servers: &str,
    security: &KafkaSecurity,
    options: &KafkaOptions,
) -> Result<ClientConfig, String> {
    let acks = options
        .0
        .get("acks")
        .or_else(|| options.0.get("request.required.acks"));
    let idempotent = options
        .0
        .get("enable.idempotence")
        .is_none_or(|v| v == "true");
    if let Some(acks) = acks {
        if idempotent && acks != "all" && acks != "-1" {
            return Err(format!(
                "`producer.acks: {acks}` needs `enable.idempotence: false` (idempotence, on by default, requires acks=all)"
            ));
        }
    }
    client_config(&ClientSpec {
        field: "producer",
        bootstrap_servers,
        security,
        options,
        defaults: &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "30000"),
        ],
        managed: &[],
    })
}

/// Creates a producer (threads, no waiting on the network).
pub(crate) fn create_producer(
    config: &ClientConfig,
    component: &str,
) -> Result<KafkaProducer, String> {
    config
        .create_with_context(ClientLog::new(component))
        .map_err(|e| format!("kafka producer: {e}"))
}

// ---------------------------------------------------------------- events to records

/// How events become records.
pub(crate) struct Routing {
    pub(crate) topic: Template,
    pub(crate) key: Option<Template>,
    pub(crate) headers: HeaderFilter,
}

/// Which event headers become Kafka headers.
pub(crate) struct HeaderFilter {
    enabled: bool,
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl HeaderFilter {
    /// `exclude` holds exact names and `prefix*` patterns.
    pub(crate) fn new(enabled: bool, exclude: &[String]) -> Self {
        let mut f = HeaderFilter {
            enabled,
            exact: Vec::new(),
            prefixes: Vec::new(),
        };
        for x in exclude {
            match x.strip_suffix('*') {
                Some(prefix) => f.prefixes.push(prefix.to_owned()),
                None => f.exact.push(x.clone()),
            }
        }
        f
    }

    fn keeps(&self, name: &str) -> bool {
        !self.exact.iter().any(|x| x == name)
            && !self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// The Kafka headers for `e`, if any header is to be sent.
    pub(crate) fn kafka_headers(&self, e: &Event) -> Option<OwnedHeaders> {
        if !self.enabled || e.headers.is_empty() {
            return None;
        }
        let mut out: Option<OwnedHeaders> = None;
        for (k, v) in e.headers.iter().filter(|(k, _)| self.keeps(k)) {
            let h = out
                .take()
                .unwrap_or_else(|| OwnedHeaders::new_with_capacity(e.headers.len()));
            out = Some(h.insert(Header {
                key: k,
                value: Some(v),
            }));
        }
        out
    }
}

/// The record timestamp for `e`: its `timestamp` header, when that is epoch milliseconds.
fn event_time(e: &Event) -> Option<i64> {
    e.headers
        .get(HEADER_TIMESTAMP)?
        .parse::<i64>()
        .ok()
        .filter(|t| *t >= 0)
}

/// Sends every event of `batch` as a record — all in flight at once — then waits for every
/// delivery report. What failed is recorded in `failures` by index into `batch`.
pub(crate) async fn produce_batch(
    producer: &KafkaProducer,
    routing: &Routing,
    batch: &[Event],
    failures: &mut Failures,
) {
    // Rendering buffers, reused for every event (librdkafka copies what it keeps).
    let mut topic = String::new();
    let mut key = String::new();
    let mut pending: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(batch.len());
    for (i, e) in batch.iter().enumerate() {
        routing.topic.render(e, &mut topic);
        if topic.is_empty() {
            failures.reject(i, "the topic template rendered an empty name".to_owned());
            continue;
        }
        let keyed = match &routing.key {
            Some(t) => {
                t.render(e, &mut key);
                !key.is_empty()
            }
            None => false,
        };
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).payload(&e.body[..]);
        if keyed {
            record = record.key(key.as_bytes());
        }
        if let Some(h) = routing.headers.kafka_headers(e) {
            record = record.headers(h);
        }
        if let Some(ts) = event_time(e) {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push((i, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if !pending.is_empty() =>
                {
                    // librdkafka's local queue is full: wait for what is in flight, then
                    // send this record again.
                    settle(&mut pending, failures).await;
                    record = back;
                }
                Err((err, _)) => {
                    failures.add(i, &err);
                    break;
                }
            }
        }
    }
    settle(&mut pending, failures).await;
}

/// Waits for the delivery reports of `pending`, recording failures.
async fn settle(pending: &mut Vec<(usize, DeliveryFuture)>, failures: &mut Failures) {
    for (i, delivery) in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((err, _record))) => failures.add(i, &err),
            Err(_canceled) => failures.retry(
                i,
                "the producer closed before reporting delivery".to_owned(),
            ),
        }
    }
}

// ---------------------------------------------------------------- errors

/// What a failed record calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The broker will never accept this record as it is: dead-letter it.
    Reject,
    /// Try again later.
    Retry,
    /// Try again with a new producer (the idempotent producer's state is lost).
    Fatal,
}

pub(crate) fn classify(err: &KafkaError) -> Class {
    err.rdkafka_error_code().map_or(Class::Retry, classify_code)
}

pub(crate) fn classify_code(code: RDKafkaErrorCode) -> Class {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidMessage
        | C::InvalidRecord
        | C::InvalidTopic
        | C::InvalidTimestamp
        | C::TopicAuthorizationFailed
        | C::UnsupportedForMessageFormat
        | C::PolicyViolation
        | C::BadMessage
        | C::InvalidArgument
        | C::KeySerialization
        | C::ValueSerialization => Class::Reject,
        // The idempotent producer's identity is no longer accepted (a broker fences it, e.g.
        // after an outage): no retry with this producer can succeed, a new one must be made.
        C::Fatal | C::ProducerFenced | C::InvalidProducerEpoch => Class::Fatal,
        // Timeouts, a full queue, leader elections, brokers down, and unknown topics or
        // partitions (a topic may be created later, or appear once metadata propagates).
        _ => Class::Retry,
    }
}

/// The failed records of a batch.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    pub(crate) rejected: Vec<(usize, String)>,
    pub(crate) retriable: Vec<usize>,
    /// Why the first retriable record failed.
    pub(crate) reason: Option<String>,
    /// The producer must be replaced.
    pub(crate) fatal: bool,
}

impl Failures {
    pub(crate) fn add(&mut self, i: usize, err: &KafkaError) {
        match classify(err) {
            Class::Reject => self.reject(i, err.to_string()),
            Class::Retry => self.retry(i, err.to_string()),
            Class::Fatal => {
                self.fatal = true;
                self.retry(i, err.to_string());
            }
        }
    }

    pub(crate) fn reject(&mut self, i: usize, why: String) {
        self.rejected.push((i, why));
    }

    pub(crate) fn retry(&mut self, i: usize, why: String) {
        self.reason.get_or_insert(why);
        self.retriable.push(i);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rejected.is_empty() && self.retriable.is_empty()
    }

    /// Any failure's reason (the first retriable one, else the first rejection).
    pub(crate) fn first_reason(&self) -> Option<&str> {
        self.reason
            .as_deref()
            .or_else(|| self.rejected.first().map(|(_, r)| r.as_str()))
    }

    /// The sink's answer for a batch of `n` events.
    pub(crate) fn into_result(mut self, n: usize) -> Result<(), DeliveryError> {
        if self.is_empty() {
            return Ok(());
        }
        if self.rejected.is_empty() && self.retriable.len() == n {
            return Err(DeliveryError::Retriable {
                reason: self.reason.unwrap_or_default(),
                retry_after: None,
            });
        }
        self.rejected.sort_by_key(|(i, _)| *i);
        self.retriable.sort_unstable();
        Err(DeliveryError::Partial {
            rejected: self.rejected,
            retriable: self.retriable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers as _;

    #[test]
    fn permanent_and_retriable_errors() {
        let class = |c| classify(&KafkaError::MessageProduction(c));
        assert_eq!(class(RDKafkaErrorCode::MessageSizeTooLarge), Class::Reject);
        assert_eq!(class(RDKafkaErrorCode::InvalidRecord), Class::Reject);
        assert_eq!(
            class(RDKafkaErrorCode::TopicAuthorizationFailed),
            Class::Reject
        );
        assert_eq!(class(RDKafkaErrorCode::MessageTimedOut), Class::Retry);
        assert_eq!(class(RDKafkaErrorCode::QueueFull), Class::Retry);
        assert_eq!(
            class(RDKafkaErrorCode::UnknownTopicOrPartition),
            Class::Retry
        );
        assert_eq!(class(RDKafkaErrorCode::UnknownTopic), Class::Retry);
        assert_eq!(class(RDKafkaErrorCode::NotEnoughReplicas), Class::Retry);
        assert_eq!(class(RDKafkaErrorCode::Fatal), Class::Fatal);
        assert_eq!(class(RDKafkaErrorCode::ProducerFenced), Class::Fatal);
        assert_eq!(class(RDKafkaErrorCode::InvalidProducerEpoch), Class::Fatal);
        assert_eq!(classify(&KafkaError::Canceled), Class::Retry);
    }

    #[test]
    fn failures_map_onto_delivery_errors() {
        assert!(Failures::default().into_result(3).is_ok());

        let mut all = Failures::default();
        for i in 0..2 {
            all.add(
                i,
                &KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            );
        }
        assert!(matches!(
            all.into_result(2),
            Err(DeliveryError::Retriable { .. })
        ));

        let mut some = Failures::default();
        some.add(
            2,
            &KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
        );
        some.add(
            0,
            &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        some.add(1, &KafkaError::MessageProduction(RDKafkaErrorCode::Fatal));
        assert!(some.fatal);
        match some.into_result(4) {
            Err(DeliveryError::Partial {
                rejected,
                retriable,
            }) => {
                assert_eq!(rejected.len(), 1);
                assert_eq!(rejected[0].0, 0);
                assert!(
                    rejected[0].1.contains("MessageSizeTooLarge"),
                    "{}",
                    rejected[0].1
                );
                assert_eq!(retriable, [1, 2]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn headers_are_copied_except_excluded_ones() {
        let e = Event::new("x")
            .with_header("app", "web")
            .with_header("kafka.offset", "7")
            .with_header("secret", "s")
            .with_header(HEADER_TIMESTAMP, "1700000000000");
        let f = HeaderFilter::new(true, &["kafka.*".to_owned(), "secret".to_owned()]);
        let h = f.kafka_headers(&e).unwrap();
        let got: Vec<(String, Vec<u8>)> = h
            .iter()
            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                ("app".to_owned(), b"web".to_vec()),
                (HEADER_TIMESTAMP.to_owned(), b"1700000000000".to_vec()),
            ]
        );
        assert!(HeaderFilter::new(false, &[]).kafka_headers(&e).is_none());
        let only_excluded = Event::new("y").with_header("secret", "s");
        assert!(f.kafka_headers(&only_excluded).is_none());
        assert_eq!(event_time(&e), Some(1_700_000_000_000));
        assert_eq!(
            event_time(&Event::new("z").with_header(HEADER_TIMESTAMP, "soon")),
            None
        );
    }

    #[test]
    fn acks_other_than_all_need_idempotence_off() {
        let sec = KafkaSecurity::default();
        let opts = |pairs: &[(&str, &str)]| {
            KafkaOptions(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let c = producer_config("127.0.0.1:9092", &sec, &opts(&[])).unwrap();
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert!(producer_config("h:1", &sec, &opts(&[("acks", "1")])).is_err());
        assert!(
            producer_config(
                "h:1",
                &sec,
                &opts(&[("acks", "1"), ("enable.idempotence", "false")])
            )
            .is_ok()
        );
    }
}
