//! The `mqtt` sink: publishes each event's body to a topic rendered from its headers, with QoS
//! 1 by default, and counts a batch delivered only when the broker has acknowledged every
//! message (PUBACK; PUBCOMP for QoS 2).
//!
//! A connection is one client and its event loop; when it breaks (or a batch's acknowledgements
//! do not come within `timeout`) it is dropped whole and the batch fails as retriable, so the
//! runner sends it again on a fresh connection: a message the broker took just before the
//! break is then published twice (at least once). A topic that renders empty or holds a
//! wildcard is refused for that event alone (dead-lettered).
//!
//! MQTT 5 brokers say when they do not take a message (a PUBACK reason code such as
//! `NotAuthorized`): that event is dead-lettered with the reason, or sent again when the
//! reason is transient (`QuotaExceeded`). The answer names a packet id; the driver maps ids
//! to the order messages left in, which is the order they were published (rumqttc sends in
//! order and reuses an id only once it is answered).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::Notify, task::JoinHandle};

use sluice_core::{
    event::template::Template,
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
    sink::{Batch, DeliveryError, Sink},
};

use super::{
    config::{Broker, MqttSinkConfig, default_client_id, qos},
    session::{self, Client, Happened, Refusal},
};

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    plain_sink::<MqttSinkConfig>(cx)
}

impl SinkSpec for MqttSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let broker = Broker::parse(self.url.expose())?;
        if self.version == super::config::Version::V5 && self.qos == 2 {
            // rumqttc does not release the in-flight slot of a QoS 2 publish an MQTT 5 broker
            // refuses (PUBREC with an error code), so refusals would stall the connection.
            return Err("`qos: 2` is not supported with `version: 5`; use qos 1".into());
        }
        Ok(Box::new(MqttSink {
            tls: session::tls_config(&broker, self.tls.as_ref(), cx.base_dir)?,
            broker,
            topic: Template::parse(&self.topic).map_err(|e| format!("`topic`: {e}"))?,
            qos: qos(self.qos)?,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| default_client_id("sink", cx.name)),
            cfg: self.clone(),
            name: cx.name.to_owned(),
            live: None,
        }))
    }
}

/// What the event loop's driver reports.
#[derive(Default)]
struct Progress {
    connected: AtomicBool,
    /// Set when the connection broke; the connection is then useless.
    failed: std::sync::Mutex<Option<String>>,
    /// Publishes the broker has answered on this connection.
    acked: AtomicU64,
    /// MQTT 5 refusals, by the message's place among this connection's publishes.
    refused: Mutex<Vec<(u64, Refusal)>>,
    changed: Notify,
}

struct Live {
    client: Client,
    progress: Arc<Progress>,
    driver: JoinHandle<()>,
    /// Publishes with acknowledgements sent on this connection.
    sent: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub struct MqttSink {
    cfg: MqttSinkConfig,
    name: String,
    broker: Broker,
    topic: Template,
    qos: u8,
    client_id: String,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    live: Option<Live>,
}

impl MqttSink {
    fn connect(&self) -> Live {
        let (client, mut eventloop) = session::connect(&session::Options {
            broker: &self.broker,
            version: self.cfg.version,
            client_id: &self.client_id,
            keep_alive: self.cfg.keep_alive.0,
            max_packet_size: self.cfg.max_packet_size,
            clean: true,
            session_expiry: Duration::ZERO,
            manual_acks: false,
            capacity: 1024,
            tls: self.tls.clone(),
        });
        let progress = Arc::new(Progress::default());
        let p = Arc::clone(&progress);
        let driver = tokio::spawn(async move {
            // Packet id -> place among this connection's publishes (QoS 1 and 2 only).
            let mut places: HashMap<u16, u64> = HashMap::new();
            let mut sent = 0u64;
            loop {
                match eventloop.poll().await {
                    Ok(Happened::Connected { .. }) => {
                        p.connected.store(true, Ordering::Release);
                    }
                    Ok(Happened::Sent { pkid }) if pkid != 0 => {
                        places.insert(pkid, sent);
                        sent += 1;
                        continue;
                    }
                    Ok(Happened::Answered { pkid, refused }) => {
                        let place = places.remove(&pkid);
                        if let (Some(r), Some(place)) = (refused, place) {
                            p.refused
                                .lock()
                                .unwrap_or_else(|x| x.into_inner())
                                .push((place, r));
                        }
                        p.acked.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        *p.failed.lock().unwrap_or_else(|x| x.into_inner()) = Some(e);
                        p.changed.notify_waiters();
                        return;
                    }
                }
                p.changed.notify_waiters();
            }
        });
        Live {
            client,
            progress,
            driver,
            sent: 0,
        }
    }

    /// Waits until `done` holds, the connection fails, or `limit` passes.
    async fn wait(
        progress: &Progress,
        limit: Duration,
        done: impl Fn(&Progress) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = progress.changed.notified();
            if let Some(e) = progress
                .failed
                .lock()
                .unwrap_or_else(|x| x.into_inner())
                .clone()
            {
                return Err(e);
            }
            if done(progress) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(format!("no answer within {limit:?}"));
            }
        }
    }
}

#[async_trait]
impl Sink for MqttSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        let limit = self.cfg.timeout.0;
        if self.live.is_none() {
            let live = self.connect();
            if let Err(e) = Self::wait(&live.progress, limit, |p| {
                p.connected.load(Ordering::Acquire)
            })
            .await
            {
                return Err(DeliveryError::Unreachable(format!(
                    "cannot connect to the MQTT broker at {}: {e}",
                    self.broker.peer()
                )));
            }
            tracing::info!(sink = %self.name, peer = %self.broker.peer(), "connected to the MQTT broker");
            self.live = Some(live);
        }
        let Some(live) = self.live.as_mut() else {
            return Err(DeliveryError::retriable("not connected"));
        };
        let mut rejected = Vec::new();
        let mut retry = Vec::new();
        let mut topic = String::new();
        // The batch index of each message published, in order.
        let mut published: Vec<usize> = Vec::with_capacity(batch.len());
        let v5 = self.cfg.version == super::config::Version::V5;
        for (i, event) in batch.iter().enumerate() {
            topic.clear();
            self.topic.render(event, &mut topic);
            if topic.is_empty() || topic.contains(['+', '#', '\0']) || topic.len() > 65_535 {
                rejected.push((
                    i,
                    format!(
                        "topic {topic:?} is empty, too long, or holds a wildcard (`+`, `#`) or NUL"
                    ),
                ));
                continue;
            }
            let properties: Vec<(String, String)> = if v5 && self.cfg.copy_headers {
                event
                    .headers
                    .iter()
                    .filter(|(k, _)| !k.starts_with("mqtt."))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            } else {
                Vec::new()
            };
            // Past the packet limit the client would fail the connection, and the batch with it
            // (each user property costs its two strings, their lengths and an identifier).
            let size = event.body.len()
                + topic.len()
                + 16
                + properties
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 5)
                    .sum::<usize>();
            if size > self.cfg.max_packet_size {
                rejected.push((
                    i,
                    format!(
                        "a message of {size} bytes (with its topic and properties) does not fit max_packet_size ({} bytes)",
                        self.cfg.max_packet_size
                    ),
                ));
                continue;
            }
            if let Err(e) = live
                .client
                .publish(
                    &topic,
                    self.qos,
                    self.cfg.retain,
                    event.body.clone(),
                    properties,
                )
                .await
            {
                self.live = None;
                return Err(DeliveryError::retriable(format!("publishing failed: {e}")));
            }
            published.push(i);
        }
        if self.qos != 0 {
            let first = live.sent;
            live.sent += published.len() as u64;
            let target = live.sent;
            if let Err(e) = Self::wait(&live.progress, limit, |p| {
                p.acked.load(Ordering::Acquire) >= target
            })
            .await
            {
                self.live = None;
                return Err(DeliveryError::retriable(format!(
                    "the broker did not acknowledge the batch ({e}); sending it again on a new connection"
                )));
            }
            let mut refused = live
                .progress
                .refused
                .lock()
                .unwrap_or_else(|x| x.into_inner());
            for (place, r) in refused.drain(..) {
                let Some(&i) = place
                    .checked_sub(first)
                    .and_then(|k| published.get(k as usize))
                else {
                    continue;
                };
                if r.transient {
                    tracing::warn!(sink = %self.name, reason = %r.reason, "the broker refused a message for now; sending it again");
                    retry.push(i);
                } else {
                    rejected.push((
                        i,
                        format!("the MQTT broker refused the message: {}", r.reason),
                    ));
                }
            }
        }
        DeliveryError::outcome(batch.len(), rejected, retry, None)
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        if let Some(live) = self.live.take() {
            live.client.try_disconnect();
            // Give the event loop a moment to send the DISCONNECT.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}
