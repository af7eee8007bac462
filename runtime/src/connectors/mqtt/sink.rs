//! The `mqtt` sink: publishes each event's body to a topic rendered from its headers, with QoS
//! 1 by default, and counts a batch delivered only when the broker has acknowledged every
//! message (PUBACK; PUBCOMP for QoS 2).
//!
//! A connection is one client and its event loop; when it breaks (or a batch's acknowledgements
//! do not come within `timeout`) it is dropped whole and the batch fails as retriable, so the
//! runner sends it again on a fresh connection: a message the broker took just before the
//! break is then published twice (at least once). A topic that renders empty or holds a
//! wildcard is refused for that event alone (dead-lettered).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event as MqttEvent, Packet, QoS};
use tokio::{sync::Notify, task::JoinHandle};

use sluice_core::{
    event::template::Template,
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
    sink::{Batch, DeliveryError, Sink},
};

use super::config::{Broker, MqttSinkConfig, default_client_id, qos};

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    plain_sink::<MqttSinkConfig>(cx)
}

impl SinkSpec for MqttSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        Ok(Box::new(MqttSink {
            broker: Broker::parse(self.url.expose())?,
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
    /// Publishes the broker has acknowledged on this connection.
    acked: AtomicU64,
    changed: Notify,
}

struct Live {
    client: AsyncClient,
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
    qos: QoS,
    client_id: String,
    live: Option<Live>,
}

impl MqttSink {
    fn connect(&self) -> Live {
        let mut options = self.broker.options(
            &self.client_id,
            self.cfg.keep_alive.0,
            self.cfg.max_packet_size,
        );
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let progress = Arc::new(Progress::default());
        let p = Arc::clone(&progress);
        let driver = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        p.connected.store(true, Ordering::Release);
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                        p.acked.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        *p.failed.lock().unwrap_or_else(|x| x.into_inner()) = Some(e.to_string());
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
        let mut topic = String::new();
        let mut published = 0u64;
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
            // Past the packet limit the client would fail the connection, and the batch with it.
            if event.body.len() + topic.len() + 16 > self.cfg.max_packet_size {
                rejected.push((
                    i,
                    format!(
                        "a message of {} bytes does not fit max_packet_size ({} bytes)",
                        event.body.len(),
                        self.cfg.max_packet_size
                    ),
                ));
                continue;
            }
            if let Err(e) = live
                .client
                .publish_bytes(topic.clone(), self.qos, self.cfg.retain, event.body.clone())
                .await
            {
                self.live = None;
                return Err(DeliveryError::retriable(format!("publishing failed: {e}")));
            }
            published += 1;
        }
        if self.qos != QoS::AtMostOnce {
            live.sent += published;
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
        }
        DeliveryError::outcome(batch.len(), rejected, Vec::new(), None)
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        if let Some(live) = self.live.take() {
            let _ = live.client.try_disconnect();
            // Give the event loop a moment to send the DISCONNECT.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}
