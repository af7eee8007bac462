//! The `kinesis` sink: each event becomes one record of a Kinesis data stream — the body is
//! the data, `partition_key` (a template) the partition key — written with `PutRecords`, up
//! to 500 records and 5 MiB a request, requests one after another so records keep the
//! batch's order as far as Kinesis keeps it.
//!
//! An event whose partition key renders empty or longer than 256 characters, or whose record
//! (data plus key) is over 1 MiB, is poison (DLQ) and is never sent. `PutRecords` reports
//! each record on its own: records it refused (throughput exceeded, internal failures, KMS
//! trouble — none of them the record's fault) are sent again, only they, after a short pause,
//! up to three times within one delivery; those still refused are retried by the runner.
//! A whole request failing on the network, throttling, a missing stream or credentials makes
//! its records and the rest of the batch retriable; a request refused for its content makes
//! its records poison, with the service's message. Records of a request that failed halfway
//! may have been written: delivery is at least once.

use std::{ops::Range, time::Duration};

use async_trait::async_trait;
use aws_sdk_kinesis::{Client, types::PutRecordsRequestEntry};
use aws_smithy_types::Blob;
use backon::{BackoffBuilder, ExponentialBuilder};

use sluice_core::{
    event::{Event, template::Template},
    sink::{Batch, DeliveryError, Sink},
};

use super::config::KinesisSinkConfig;
use crate::connectors::aws::{self, AwsConnection, ErrorClass};

/// Most records one `PutRecords` may carry.
const MAX_RECORDS: usize = 500;
/// Most bytes (data plus partition keys) one `PutRecords` may carry.
const MAX_REQUEST_BYTES: usize = 5 << 20;
/// Most bytes of one record (data plus partition key).
pub(crate) const MAX_RECORD_BYTES: usize = 1 << 20;
/// Most characters of a partition key.
const MAX_KEY_CHARS: usize = 256;
/// Resends of refused records within one delivery.
const RESENDS: usize = 3;

pub struct KinesisSink {
    name: String,
    aws: AwsConnection,
    stream: Option<String>,
    stream_arn: Option<String>,
    /// `None`: a random key per event.
    key: Option<Template>,
    /// The rendered key when the template cannot vary between events.
    constant_key: Option<String>,
    timeout: Duration,
    client: Option<Client>,
}

impl KinesisSink {
    /// Checks the settings and parses the template; connects on the first delivery.
    pub fn new(name: &str, cfg: &KinesisSinkConfig) -> Result<Self, String> {
        cfg.aws.check()?;
        match (&cfg.stream, &cfg.stream_arn) {
            (Some(_), Some(_)) => {
                return Err("give one of `stream` and `stream_arn`, not both".into());
            }
            (None, None) => return Err("`stream` or `stream_arn` is required".into()),
            (Some(s), None) if s.is_empty() => return Err("`stream` must not be empty".into()),
            (None, Some(a)) if !a.starts_with("arn:") => {
                return Err(format!(
                    "`stream_arn`: {a:?} is not an ARN (arn:aws:kinesis:...)"
                ));
            }
            _ => {}
        }
        let key = match &cfg.partition_key {
            None => None,
            Some(k) if k.is_empty() => {
                return Err(
                    "`partition_key` must not be empty (leave it out for random keys)".into(),
                );
            }
            Some(k) => Some(Template::parse(k).map_err(|e| format!("`partition_key`: {e}"))?),
        };
        let constant_key = match &key {
            Some(t) if t.is_constant() => {
                let mut k = String::new();
                t.render(&Event::default(), &mut k);
                check_key(&k).map_err(|e| format!("`partition_key`: {e}"))?;
                Some(k)
            }
            _ => None,
        };
        if cfg.timeout.0.is_zero() {
            return Err("`timeout` must be more than 0".into());
        }
        Ok(KinesisSink {
            name: name.to_owned(),
            aws: cfg.aws.clone(),
            stream: cfg.stream.clone(),
            stream_arn: cfg.stream_arn.clone(),
            key,
            constant_key,
            timeout: cfg.timeout.0,
            client: None,
        })
    }

    /// The client in hand, or a new one (no request is made).
    async fn client(&mut self) -> Client {
        if let Some(c) = &self.client {
            return c.clone();
        }
        let sdk = aws::sdk_config(&self.aws, self.timeout).await;
        let c = Client::new(&sdk);
        let stream = self.stream.as_deref().or(self.stream_arn.as_deref());
        tracing::info!(sink = %self.name, stream = %stream.unwrap_or_default(), region = %aws::region_name(&sdk), "kinesis client ready");
        self.client = Some(c.clone());
        c
    }

    /// The partition key of one event.
    fn partition_key(&self, e: &Event) -> String {
        match (&self.constant_key, &self.key) {
            (Some(k), _) => k.clone(),
            (None, Some(t)) => {
                let mut k = String::new();
                t.render(e, &mut k);
                k
            }
            (None, None) => uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// One `PutRecords` of the events `idx` (with their `keys`).
    async fn put(
        &self,
        client: &Client,
        batch: &[Event],
        keys: &[String],
        idx: &[usize],
    ) -> Result<aws_sdk_kinesis::operation::put_records::PutRecordsOutput, (ErrorClass, String)>
    {
        let records = idx
            .iter()
            .map(|&i| {
                // The blob shares the body's buffer: no copy.
                PutRecordsRequestEntry::builder()
                    .data(Blob::from_maybe_shared(batch[i].body.clone()))
                    .partition_key(keys[i].as_str())
                    .build()
                    .expect("data and partition key are set")
            })
            .collect();
        client
            .put_records()
            .set_stream_name(self.stream.clone())
            .set_stream_arn(self.stream_arn.clone())
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| (aws::classify(&e), aws::describe(&e)))
    }
}

#[async_trait]
impl Sink for KinesisSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        let client = self.client().await;
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut keys: Vec<String> = Vec::with_capacity(batch.len());
        let mut pending: Vec<usize> = Vec::with_capacity(batch.len());
        for (i, e) in batch.iter().enumerate() {
            let key = self.partition_key(e);
            match check_record(&key, e.body.len()) {
                Ok(()) => pending.push(i),
                Err(why) => rejected.push((i, why)),
            }
            keys.push(key);
        }

        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_jitter()
            .with_max_times(RESENDS)
            .build();
        // Events handed back to the runner, and the first reason.
        let mut retriable: Vec<usize> = Vec::new();
        let mut reason: Option<String> = None;
        while !pending.is_empty() {
            let mut refused: Vec<usize> = Vec::new();
            let size = |i: usize| batch[i].body.len() + keys[i].len();
            let mut runs = requests(&pending, size).into_iter();
            for r in runs.by_ref() {
                let idx = &pending[r];
                match self.put(&client, batch, &keys, idx).await {
                    Ok(out) => {
                        let results = out.records();
                        if results.len() != idx.len() {
                            reason.get_or_insert_with(|| {
                                format!(
                                    "PutRecords answered {} results for {} records",
                                    results.len(),
                                    idx.len()
                                )
                            });
                            refused.extend_from_slice(idx);
                            continue;
                        }
                        for (result, &i) in results.iter().zip(idx) {
                            if let Some(code) = result.error_code() {
                                refused.push(i);
                                reason.get_or_insert_with(|| match result.error_message() {
                                    Some(m) => format!("{code}: {m}"),
                                    None => code.to_owned(),
                                });
                            }
                        }
                    }
                    Err((ErrorClass::Permanent, why)) => {
                        rejected.extend(idx.iter().map(|&i| (i, why.clone())));
                    }
                    Err((ErrorClass::Retriable, why)) => {
                        // No point sending more now: this request and the rest go back.
                        retriable.extend_from_slice(idx);
                        reason.get_or_insert(why);
                        break;
                    }
                }
            }
            for r in runs {
                retriable.extend_from_slice(&pending[r]);
            }
            if refused.is_empty() {
                break;
            }
            match pauses.next() {
                Some(d) => {
                    tracing::debug!(sink = %self.name, records = refused.len(), "records refused; sending them again");
                    tokio::time::sleep(d).await;
                    pending = refused;
                }
                None => {
                    retriable.extend(refused);
                    break;
                }
            }
        }
        DeliveryError::outcome(batch.len(), rejected, retriable, reason)
    }
}

/// Checks a rendered partition key.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the partition key is empty".into());
    }
    let chars = key.chars().count();
    if chars > MAX_KEY_CHARS {
        return Err(format!(
            "the partition key has {chars} characters; at most {MAX_KEY_CHARS} are allowed"
        ));
    }
    Ok(())
}

/// Checks one record before it is sent; the error is the dead-letter reason.
fn check_record(key: &str, data_len: usize) -> Result<(), String> {
    check_key(key)?;
    let size = data_len + key.len();
    if size > MAX_RECORD_BYTES {
        return Err(format!(
            "the record is {size} bytes (data plus partition key); Kinesis takes at most {MAX_RECORD_BYTES}"
        ));
    }
    Ok(())
}

/// Splits `pending` into runs that fit one `PutRecords` (500 records, 5 MiB), in order.
fn requests(pending: &[usize], size: impl Fn(usize) -> usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (n, &i) in pending.iter().enumerate() {
        let s = size(i);
        if n > start && (n - start == MAX_RECORDS || bytes + s > MAX_REQUEST_BYTES) {
            out.push(start..n);
            (start, bytes) = (n, 0);
        }
        bytes += s;
    }
    if start < pending.len() {
        out.push(start..pending.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::units::HumanDuration;

    fn cfg(key: Option<&str>) -> KinesisSinkConfig {
        KinesisSinkConfig {
            aws: AwsConnection::default(),
            stream: Some("s".into()),
            stream_arn: None,
            partition_key: key.map(str::to_owned),
            timeout: HumanDuration(Duration::from_secs(10)),
        }
    }

    #[test]
    fn partition_keys_from_templates_or_random() {
        let e = Event::new("x").with_header("user", "u1");
        let s = KinesisSink::new("k", &cfg(Some("user-%{user}"))).unwrap();
        assert_eq!(s.partition_key(&e), "user-u1");
        assert_eq!(s.partition_key(&Event::new("x")), "user-");
        let s = KinesisSink::new("k", &cfg(Some("fixed"))).unwrap();
        assert_eq!(s.constant_key.as_deref(), Some("fixed"));
        assert_eq!(s.partition_key(&e), "fixed");
        let s = KinesisSink::new("k", &cfg(None)).unwrap();
        let (a, b) = (s.partition_key(&e), s.partition_key(&e));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn records_are_checked_before_sending() {
        assert!(check_record("k", 10).is_ok());
        assert_eq!(
            check_record("", 10).unwrap_err(),
            "the partition key is empty"
        );
        let long = "é".repeat(257);
        assert!(
            check_record(&long, 1)
                .unwrap_err()
                .contains("257 characters")
        );
        assert!(check_record(&"é".repeat(256), 1).is_ok());
        assert!(check_record("k", MAX_RECORD_BYTES - 1).is_ok());
        assert!(
            check_record("kk", MAX_RECORD_BYTES - 1)
                .unwrap_err()
                .contains("1048577 bytes")
        );
    }

    #[test]
    fn requests_keep_to_the_limits_and_the_order() {
        let pending: Vec<usize> = (0..1200).collect();
        let r = requests(&pending, |_| 10);
        assert_eq!(r, [0..500, 500..1000, 1000..1200]);
        // 1 MiB records: five fit one request.
        let r = requests(&pending[..12], |_| MAX_RECORD_BYTES);
        assert_eq!(r, [0..5, 5..10, 10..12]);
        let r = requests(&[7, 3], |i| if i == 7 { MAX_REQUEST_BYTES } else { 1 });
        assert_eq!(r, [0..1, 1..2]);
        assert!(requests(&[], |_| 1).is_empty());
    }

    #[test]
    fn settings_are_checked_by_field() {
        let err = |f: &dyn Fn(&mut KinesisSinkConfig)| {
            let mut c = cfg(Some("%{k}"));
            f(&mut c);
            KinesisSink::new("k", &c).err().unwrap_or_default()
        };
        assert_eq!(err(&|_| {}), "");
        assert!(err(&|c| c.stream_arn = Some("arn:aws:kinesis:x".into())).contains("not both"));
        assert!(err(&|c| c.stream = None).contains("is required"));
        assert!(
            err(&|c| {
                c.stream = None;
                c.stream_arn = Some("s".into());
            })
            .starts_with("`stream_arn`")
        );
        assert!(err(&|c| c.stream = Some(String::new())).starts_with("`stream`"));
        assert!(err(&|c| c.partition_key = Some("a%".into())).starts_with("`partition_key`"));
        assert!(err(&|c| c.partition_key = Some(String::new())).starts_with("`partition_key`"));
        assert!(err(&|c| c.partition_key = Some("x".repeat(300))).starts_with("`partition_key`"));
        assert!(err(&|c| c.timeout = HumanDuration(Duration::ZERO)).starts_with("`timeout`"));
    }

    #[test]
    fn outcomes() {
        assert!(DeliveryError::outcome(2, vec![], vec![], None).is_ok());
        assert!(matches!(
            DeliveryError::outcome(2, vec![], vec![0, 1], None),
            Err(DeliveryError::Retriable { .. })
        ));
        assert!(matches!(
            DeliveryError::outcome(3, vec![(1, "big".into())], vec![2], None),
            Err(DeliveryError::Partial { rejected, retriable }) if rejected.len() == 1 && retriable == [2]
        ));
    }
}
