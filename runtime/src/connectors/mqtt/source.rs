//! The `mqtt` source: subscribes on a persistent session (`clean_session: false`, or with
//! MQTT 5 `clean_start: false` and a session expiry; a stable client id) with manual
//! acknowledgements, gathers messages into batches (`batch_size`, or
//! `linger` after the first) and acknowledges them only after the batch is committed.
//!
//! The broker keeps the session while the agent is down and delivers what was published
//! meanwhile when it is back; a message delivered but not acknowledged (the agent crashed, the
//! connection broke) is delivered again, so delivery is at least once. The broker bounds how
//! many unacknowledged messages it sends at once (Mosquitto: `max_inflight_messages`, 20 by
//! default), which also bounds a batch.
//!
//! One task drives the client's event loop (which reconnects by itself, with the source's
//! backoff between attempts) and hands messages over with the connection they came on; an
//! acknowledgement is sent only on that same connection — after a reconnect the broker sends
//! the unacknowledged ones again, and an old packet id could name a different message now.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use sluice_core::{
    dlq::DeadLetter,
    event::{
        Event, HeaderText,
        codec::{Codec, CodecName, decode_into},
    },
    guarantee::Upstream,
    registry::{BuildCx, ReadCx, SourceSpec, plain_source},
    source::{
        Commit, Source, SourceContext, SourceError,
        supervisor::{Backoff, sleep_or_cancelled},
    },
};

use super::{
    config::{Broker, MqttSourceConfig, default_client_id, qos},
    session::{self, Client, EventLoop, Happened, Message},
};

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    cx.codec_field("codec", CodecName::NAMES);
    plain_source::<MqttSourceConfig>(cx)
}

impl SourceSpec for MqttSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let broker = Broker::parse(self.url.expose())?;
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return Err("`topics`: name at least one topic filter (none empty)".into());
        }
        if self.client_id.as_deref().is_some_and(str::is_empty) {
            return Err("`client_id` must not be empty: the broker keeps a session by it".into());
        }
        Ok(Box::new(MqttSource {
            qos: qos(self.qos)?,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| default_client_id("source", cx.name)),
            tls: session::tls_config(&broker, self.tls.as_ref(), cx.base_dir)?,
            codec: cx.codec(&self.codec)?,
            broker,
            cfg: self.clone(),
            batch_size: cx.batch_size.max(1),
        }))
    }

    fn upstream(&self) -> Upstream {
        if self.qos == 0 {
            Upstream::NoReplay("QoS 0 messages are not acknowledged")
        } else {
            Upstream::AckAfterCommit("messages are acknowledged only after a commit")
        }
    }
}

struct MqttSource {
    cfg: MqttSourceConfig,
    broker: Broker,
    client_id: String,
    qos: u8,
    batch_size: usize,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Each message's payload through it (`lines`, the default, keeps it whole as the body).
    codec: Box<dyn Codec>,
}

/// A message and the connection (counted from 1) it arrived on.
type Delivery = (u64, Message);

/// A batch ends when no message came for this long (or at `linger`, or when full).
const IDLE_GAP: Duration = Duration::from_millis(5);
/// How long a stop waits for the event loop to send the last acknowledgements.
const STOP_GRACE: Duration = Duration::from_secs(3);

#[async_trait]
impl Source for MqttSource {
    async fn run(mut self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let (client, eventloop) = session::connect(&session::Options {
            broker: &self.broker,
            version: self.cfg.version,
            client_id: &self.client_id,
            keep_alive: self.cfg.keep_alive.0,
            max_packet_size: self.cfg.max_packet_size,
            clean: false,
            session_expiry: self.cfg.session_expiry.0,
            manual_acks: true,
            // The request queue holds the acknowledgements of a few batches and the
            // subscriptions; acknowledgements are queued without waiting (see below).
            capacity: self.batch_size * 4 + 64,
            tls: self.tls.clone(),
        });
        let client = Arc::new(client);
        let (tx, mut rx) = mpsc::channel::<Delivery>(self.batch_size * 2);
        let connection = Arc::new(AtomicU64::new(0));
        // Not the agent's stop signal: at a stop the event loop still has to send the last
        // batch's acknowledgements and the DISCONNECT.
        let stop = CancellationToken::new();
        let driver = tokio::spawn(drive(
            eventloop,
            Arc::clone(&client),
            self.cfg.topics.clone(),
            self.qos,
            tx,
            Arc::clone(&connection),
            stop.clone(),
            cx.name.clone(),
            self.broker.peer(),
        ));
        let topic_header = self.cfg.topic_header.as_deref().map(HeaderText::new);
        let linger = self.cfg.linger.0.max(Duration::from_millis(1));
        let result = async {
            loop {
                let first = tokio::select! {
                    biased;
                    _ = cx.shutdown.cancelled() => return Ok(()),
                    d = rx.recv() => match d {
                        Some(d) => d,
                        None => return Ok(()),
                    },
                };
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + linger;
                // The broker sends only its in-flight window (Mosquitto: 20) before it has
                // acknowledgements, so a pause in arrivals ends the batch early rather than
                // waiting out `linger` for messages that cannot come.
                while batch.len() < self.batch_size {
                    let wait = (tokio::time::Instant::now() + IDLE_GAP).min(deadline);
                    match tokio::time::timeout_at(wait, rx.recv()).await {
                        Ok(Some(d)) => batch.push(d),
                        _ => break,
                    }
                }
                let mut events: Vec<Event> = Vec::with_capacity(batch.len());
                let mut malformed = Vec::new();
                for (_, m) in &batch {
                    let from = events.len();
                    if let Err(reason) =
                        decode_into(self.codec.as_mut(), m.payload().clone(), &mut events)
                    {
                        let mut e = Event::new(m.payload().clone());
                        if let Some(h) = &topic_header {
                            e.headers.insert(h.clone(), m.topic());
                        }
                        malformed.push(DeadLetter {
                            event: e,
                            reason: format!("{}: {reason}", m.topic()),
                        });
                        continue;
                    }
                    for e in &mut events[from..] {
                        // Properties first, so a publisher cannot set the topic header, nor
                        // the agent's own `sluice.*` headers.
                        if self.cfg.copy_headers {
                            for (k, v) in m.user_properties() {
                                if !k.starts_with("sluice.") {
                                    e.headers.insert(k.as_str(), v.as_str());
                                }
                            }
                        }
                        if let Some(h) = &topic_header {
                            e.headers.insert(h.clone(), m.topic());
                        }
                    }
                }
                // Dead letters first: the message is acknowledged with its batch, so what
                // could not be decoded must be kept before that.
                if !malformed.is_empty() {
                    cx.out.reject_malformed(malformed).await?;
                }
                match cx.commit_or_stop(events).await {
                    Ok(Commit::Done) => {}
                    Ok(Commit::Stopped) => return Ok(()),
                    Err(e) => return Err(e),
                }
                let now = connection.load(Ordering::Acquire);
                for (conn, message) in &batch {
                    if *conn == now && message.needs_ack() {
                        // Queued for the event loop without waiting (the event loop may itself
                        // be waiting for this loop to take a message); sent on this connection
                        // unless it breaks first, and then the broker delivers the message
                        // again. A full queue leaves it unacknowledged: delivered again.
                        if let Err(e) = client.try_ack(message) {
                            tracing::debug!(source = %cx.name, error = %e, "acknowledgement not queued; the message will come again");
                        }
                    }
                }
            }
        }
        .await;
        // The event loop sends the queued acknowledgements, then the DISCONNECT, then ends.
        drop(rx);
        client.try_disconnect();
        let mut driver = driver;
        if tokio::time::timeout(STOP_GRACE, &mut driver).await.is_err() {
            stop.cancel();
            let _ = driver.await;
        }
        result
    }
}

/// Drives the event loop: subscribes on every new connection, hands messages over, and
/// pauses (growing) between failed connection attempts.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut eventloop: EventLoop,
    client: Arc<Client>,
    topics: Vec<String>,
    qos: u8,
    tx: mpsc::Sender<Delivery>,
    connection: Arc<AtomicU64>,
    stop: CancellationToken,
    source: String,
    peer: String,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Happened::Connected { session_present }) => {
                let n = connection.fetch_add(1, Ordering::AcqRel) + 1;
                backoff.reset();
                tracing::info!(source = %source, peer = %peer, session_present, connection = n, "connected to the MQTT broker");
                for t in &topics {
                    if let Err(e) = client.try_subscribe(t, qos) {
                        tracing::error!(source = %source, topic = %t, error = %e, "cannot subscribe");
                    }
                }
            }
            Ok(Happened::Message(m)) => {
                let conn = connection.load(Ordering::Acquire);
                // Waiting here while the channels are full holds the event loop: the broker
                // stops sending (its in-flight window is full); a wait past the keep-alive
                // breaks the connection, and the unacknowledged messages come again. Once the
                // source stops taking, messages are left unacknowledged (they come again).
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.send((conn, m)) => {}
                }
            }
            Ok(Happened::Disconnecting) => return,
            Ok(Happened::SubscriptionRefused(why)) => {
                tracing::error!(source = %source, peer = %peer, reason = %why, "the broker refused a subscription");
            }
            Ok(_) => {}
            Err(e) => {
                let pause = backoff.next_delay();
                tracing::warn!(source = %source, peer = %peer, error = %e, retry_in = ?pause, "MQTT connection failed; reconnecting");
                if sleep_or_cancelled(&stop, pause).await {
                    return;
                }
            }
        }
    }
}
