//! One face for MQTT 3.1.1 and MQTT 5 clients. rumqttc has a module for each protocol, alike
//! in shape but with distinct types; the source and sink are written once against these
//! enums, which also reduce what the event loop reports to what they act on.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use rumqttc::{Outgoing, Transport, v5};

use sluice_core::tls::ClientTls;

use super::config::{Broker, Version};

/// The TLS configuration for `broker` (an `mqtts://` url), from the `tls:` settings.
pub(crate) fn tls_config(
    broker: &Broker,
    tls: Option<&ClientTls>,
    base: &std::path::Path,
) -> Result<Option<Arc<tokio_rustls::rustls::ClientConfig>>, String> {
    match (broker.tls, tls) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err("`tls` needs an mqtts:// url".into()),
        (true, Some(t)) if t.server_name.is_some() => Err(
            "`tls.server_name` is not supported by mqtt: connect by the name the broker's \
             certificate carries"
                .into(),
        ),
        (true, t) => {
            let none = ClientTls {
                ca: None,
                cert: None,
                key: None,
                server_name: None,
            };
            let config = crate::tls::client_config(t.unwrap_or(&none), base)?;
            Ok(Some(Arc::new(config)))
        }
    }
}

/// What a connection is opened with.
pub(crate) struct Options<'a> {
    pub broker: &'a Broker,
    pub version: Version,
    pub client_id: &'a str,
    pub keep_alive: Duration,
    pub max_packet_size: usize,
    /// `false`: a persistent session (MQTT 5: one that outlives the connection by
    /// `session_expiry`).
    pub clean: bool,
    pub session_expiry: Duration,
    pub manual_acks: bool,
    /// Requests queued between the client and its event loop.
    pub capacity: usize,
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

pub(crate) enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// Boxed: the two loops differ much in size.
pub(crate) enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// A message received.
pub(crate) enum Message {
    V4(rumqttc::Publish),
    V5(v5::mqttbytes::v5::Publish),
}

/// What the event loop reports, reduced to what the source and sink act on.
pub(crate) enum Happened {
    Connected {
        session_present: bool,
    },
    Message(Message),
    /// A publish of ours left with this packet id (in the order they were published).
    Sent {
        pkid: u16,
    },
    /// The broker ended the exchange of a publish of ours (PUBACK; PUBCOMP at QoS 2, or a
    /// refusing PUBREC): `refused` holds its reason when it did not take the message (MQTT 5
    /// only).
    Answered {
        pkid: u16,
        refused: Option<Refusal>,
    },
    SubscriptionRefused(String),
    Disconnecting,
    Other,
}

/// Why an MQTT 5 broker refused a publish.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub reason: String,
    /// Sending it again may succeed (a quota, an unspecified error) rather than never (not
    /// authorized, a bad topic or payload format).
    pub transient: bool,
}

pub(crate) fn connect(o: &Options<'_>) -> (Client, EventLoop) {
    let transport = || match &o.tls {
        Some(c) => Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::clone(c))),
        None => Transport::tcp(),
    };
    let keep_alive = o.keep_alive.max(Duration::from_secs(5));
    match o.version {
        Version::V3_1_1 => {
            let mut m =
                rumqttc::MqttOptions::new(o.client_id, o.broker.host.clone(), o.broker.port);
            m.set_keep_alive(keep_alive)
                .set_max_packet_size(o.max_packet_size, o.max_packet_size)
                .set_clean_session(o.clean)
                .set_manual_acks(o.manual_acks)
                .set_transport(transport());
            if let Some((u, p)) = &o.broker.credentials {
                m.set_credentials(u.clone(), p.clone());
            }
            let (c, l) = rumqttc::AsyncClient::new(m, o.capacity);
            (Client::V4(c), EventLoop::V4(Box::new(l)))
        }
        Version::V5 => {
            let mut m = v5::MqttOptions::new(o.client_id, o.broker.host.clone(), o.broker.port);
            let size = u32::try_from(o.max_packet_size).unwrap_or(u32::MAX);
            m.set_keep_alive(keep_alive)
                .set_max_packet_size(Some(size))
                .set_clean_start(o.clean)
                .set_manual_acks(o.manual_acks)
                .set_transport(transport());
            if !o.clean {
                let secs = u32::try_from(o.session_expiry.as_secs()).unwrap_or(u32::MAX);
                m.set_session_expiry_interval(Some(secs));
            }
            if let Some((u, p)) = &o.broker.credentials {
                m.set_credentials(u.clone(), p.clone());
            }
            let (c, l) = v5::AsyncClient::new(m, o.capacity);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
    }
}

fn qos4(n: u8) -> rumqttc::QoS {
    match n {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(n: u8) -> v5::mqttbytes::QoS {
    match n {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    pub fn try_subscribe(&self, filter: &str, qos: u8) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe(filter, qos4(qos))
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, qos5(qos))
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues the acknowledgement of `m` without waiting.
    pub fn try_ack(&self, m: &Message) -> Result<(), String> {
        match (self, m) {
            (Client::V4(c), Message::V4(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            (Client::V5(c), Message::V5(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            _ => Err("a message of one protocol version acknowledged on another".into()),
        }
    }

    /// Publishes (queued for the event loop; waits only for room in its queue). MQTT 5
    /// carries `properties` as user properties; 3.1.1 has nowhere to put them.
    pub async fn publish(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: Bytes,
        properties: Vec<(String, String)>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .publish_bytes(topic, qos4(qos), retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) if properties.is_empty() => c
                .publish_bytes(topic, qos5(qos), retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let p = v5::mqttbytes::v5::PublishProperties {
                    user_properties: properties,
                    ..Default::default()
                };
                c.publish_bytes_with_properties(topic, qos5(qos), retain, payload, p)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    pub fn try_disconnect(&self) {
        match self {
            Client::V4(c) => drop(c.try_disconnect()),
            Client::V5(c) => drop(c.try_disconnect()),
        }
    }
}

impl EventLoop {
    /// The next thing that happened; an error is a broken (or refused) connection, which the
    /// next call tries to open again.
    pub async fn poll(&mut self) -> Result<Happened, String> {
        match self {
            EventLoop::V4(l) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode};
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Happened::Connected {
                        session_present: a.session_present,
                    },
                    Event::Incoming(Packet::Publish(p)) => Happened::Message(Message::V4(p)),
                    Event::Incoming(Packet::PubAck(a)) => Happened::Answered {
                        pkid: a.pkid,
                        refused: None,
                    },
                    Event::Incoming(Packet::PubComp(a)) => Happened::Answered {
                        pkid: a.pkid,
                        refused: None,
                    },
                    Event::Incoming(Packet::SubAck(a))
                        if a.return_codes
                            .iter()
                            .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                    {
                        Happened::SubscriptionRefused("failure".into())
                    }
                    Event::Outgoing(Outgoing::Publish(pkid)) => Happened::Sent { pkid },
                    Event::Outgoing(Outgoing::Disconnect) => Happened::Disconnecting,
                    _ => Happened::Other,
                })
            }
            EventLoop::V5(l) => {
                use v5::{
                    Event,
                    mqttbytes::v5::{Packet, PubAckReason, PubRecReason, SubscribeReasonCode},
                };
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Happened::Connected {
                        session_present: a.session_present,
                    },
                    Event::Incoming(Packet::Publish(p)) => Happened::Message(Message::V5(p)),
                    Event::Incoming(Packet::PubAck(a)) => Happened::Answered {
                        pkid: a.pkid,
                        refused: match a.reason {
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                            r => Some(Refusal {
                                transient: matches!(
                                    r,
                                    PubAckReason::QuotaExceeded
                                        | PubAckReason::UnspecifiedError
                                        | PubAckReason::ImplementationSpecificError
                                        | PubAckReason::PacketIdentifierInUse
                                ),
                                reason: format!("{r:?}"),
                            }),
                        },
                    },
                    Event::Incoming(Packet::PubRec(a)) => match a.reason {
                        PubRecReason::Success | PubRecReason::NoMatchingSubscribers => {
                            Happened::Other
                        }
                        r => Happened::Answered {
                            pkid: a.pkid,
                            refused: Some(Refusal {
                                transient: matches!(
                                    r,
                                    PubRecReason::QuotaExceeded
                                        | PubRecReason::UnspecifiedError
                                        | PubRecReason::ImplementationSpecificError
                                        | PubRecReason::PacketIdentifierInUse
                                ),
                                reason: format!("{r:?}"),
                            }),
                        },
                    },
                    Event::Incoming(Packet::PubComp(a)) => Happened::Answered {
                        pkid: a.pkid,
                        refused: None,
                    },
                    Event::Incoming(Packet::SubAck(a)) => {
                        match a
                            .return_codes
                            .iter()
                            .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                        {
                            Some(c) => Happened::SubscriptionRefused(format!("{c:?}")),
                            None => Happened::Other,
                        }
                    }
                    Event::Outgoing(Outgoing::Publish(pkid)) => Happened::Sent { pkid },
                    Event::Outgoing(Outgoing::Disconnect) => Happened::Disconnecting,
                    _ => Happened::Other,
                })
            }
        }
    }
}

impl Message {
    /// The topic (MQTT 5 topics are UTF-8 by the protocol; anything else reads as empty).
    pub fn topic(&self) -> &str {
        match self {
            Message::V4(p) => &p.topic,
            Message::V5(p) => std::str::from_utf8(&p.topic).unwrap_or(""),
        }
    }

    pub fn payload(&self) -> &Bytes {
        match self {
            Message::V4(p) => &p.payload,
            Message::V5(p) => &p.payload,
        }
    }

    /// Whether the broker waits for an acknowledgement (QoS 1 or 2).
    pub fn needs_ack(&self) -> bool {
        match self {
            Message::V4(p) => p.qos != rumqttc::QoS::AtMostOnce,
            Message::V5(p) => p.qos != v5::mqttbytes::QoS::AtMostOnce,
        }
    }

    /// MQTT 5 user properties (none in 3.1.1).
    pub fn user_properties(&self) -> &[(String, String)] {
        match self {
            Message::V4(_) => &[],
            Message::V5(p) => p
                .properties
                .as_ref()
                .map_or(&[][..], |p| p.user_properties.as_slice()),
        }
    }
}
