//! The hop's batch format: events encoded as the `EventBatch` message of
//! `proto/sluice/hop/v1/hop.proto`, compressed, with limits checked before anything large is
//! allocated.
//!
//! Encoding is written by hand against the `.proto` (one pass over borrowed events into one
//! buffer, no intermediate message per event); decoding uses the generated types, whose
//! `bytes` bodies are slices of the received buffer. A test checks both agree with prost.

use std::io::Read;

use bytes::Bytes;
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint},
};

use sluice_core::event::{Event, Headers};

use super::{config::Compression, proto};

/// Why a received batch was refused (never retried: the same bytes would fail again).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("batch decodes to {claimed} bytes, above max_decoded_batch_bytes ({limit})")]
    TooLarge { claimed: u64, limit: u64 },
    #[error("batch is not the {0:?} it claims to be: {1}")]
    Corrupt(proto::Compression, String),
    #[error("batch decompressed to {actual} bytes, not the {claimed} it claimed")]
    WrongLength { claimed: u64, actual: u64 },
    #[error("batch is not an EventBatch: {0}")]
    Undecodable(#[from] prost::DecodeError),
    #[error("batch holds {actual} events, not the {claimed} it claimed")]
    WrongCount { claimed: u32, actual: usize },
    #[error("unknown compression {0}")]
    UnknownCompression(i32),
}

/// Field numbers of `Event` and `Header` (and `EventBatch.events`).
const BATCH_EVENTS: u32 = 1;
const EVENT_HEADERS: u32 = 1;
const EVENT_BODY: u32 = 2;
const HEADER_KEY: u32 = 1;
const HEADER_VALUE: u32 = 2;

fn field_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

fn header_len(k: &str, v: &str) -> usize {
    field_len(HEADER_KEY, k.len()) + field_len(HEADER_VALUE, v.len())
}

fn event_len(e: &Event) -> usize {
    let headers: usize = e
        .headers
        .iter()
        .map(|(k, v)| {
            let n = header_len(k, v);
            prost::encoding::key_len(EVENT_HEADERS) + encoded_len_varint(n as u64) + n
        })
        .sum();
    headers + field_len(EVENT_BODY, e.body.len())
}

/// Bytes `events` take as an encoded `EventBatch` (what `max_batch_bytes` limits).
pub fn encoded_len(events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| {
            let n = event_len(e);
            prost::encoding::key_len(BATCH_EVENTS) + encoded_len_varint(n as u64) + n
        })
        .sum()
}

fn put_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// Appends `events` to `buf` as an encoded `EventBatch`.
pub fn encode_into(events: &[Event], buf: &mut Vec<u8>) {
    buf.reserve(encoded_len(events));
    for e in events {
        encode_key(BATCH_EVENTS, WireType::LengthDelimited, buf);
        encode_varint(event_len(e) as u64, buf);
        for (k, v) in e.headers.iter() {
            encode_key(EVENT_HEADERS, WireType::LengthDelimited, buf);
            encode_varint(header_len(k, v) as u64, buf);
            put_field(buf, HEADER_KEY, k.as_bytes());
            put_field(buf, HEADER_VALUE, v.as_bytes());
        }
        put_field(buf, EVENT_BODY, &e.body);
    }
}

/// An encoded batch compressed for the wire.
pub struct Packed {
    pub compression: proto::Compression,
    pub decoded_len: u64,
    pub bytes: Bytes,
}

/// Compresses an encoded batch. Level 1 zstd: the hop is usually inside one network, where
/// CPU is scarcer than bandwidth. Uncompressed, the buffer itself is sent (and `encoded` left
/// empty); compressed, it is left as it was, for the caller to reuse.
pub fn pack(encoded: &mut Vec<u8>, how: Compression) -> std::io::Result<Packed> {
    let decoded_len = encoded.len() as u64;
    let (compression, bytes) = match how {
        Compression::None => (proto::Compression::None, std::mem::take(encoded)),
        Compression::Zstd => (proto::Compression::Zstd, zstd::bulk::compress(encoded, 1)?),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(encoded.len() / 3),
                flate2::Compression::fast(),
            );
            std::io::Write::write_all(&mut enc, encoded)?;
            (proto::Compression::Gzip, enc.finish()?)
        }
    };
    Ok(Packed {
        compression,
        decoded_len,
        bytes: Bytes::from(bytes),
    })
}

/// Decompresses and decodes a received batch, refusing anything that would decode to more
/// than `limit` bytes before allocating for it.
pub fn unpack(req: &proto::SendRequest, limit: u64) -> Result<Vec<Event>, WireError> {
    let claimed = req.decoded_len;
    if claimed > limit {
        return Err(WireError::TooLarge { claimed, limit });
    }
    let compression = proto::Compression::try_from(req.compression)
        .map_err(|_| WireError::UnknownCompression(req.compression))?;
    let decoded: Bytes = match compression {
        proto::Compression::None => req.events.clone(),
        proto::Compression::Zstd => {
            // Never writes past `claimed` bytes: a bomb fails here, within the limit.
            let v = zstd::bulk::decompress(&req.events, claimed as usize)
                .map_err(|e| WireError::Corrupt(compression, e.to_string()))?;
            Bytes::from(v)
        }
        proto::Compression::Gzip => {
            let mut v = Vec::with_capacity(claimed as usize);
            flate2::read::GzDecoder::new(&req.events[..])
                .take(claimed + 1)
                .read_to_end(&mut v)
                .map_err(|e| WireError::Corrupt(compression, e.to_string()))?;
            Bytes::from(v)
        }
    };
    if decoded.len() as u64 != claimed {
        return Err(WireError::WrongLength {
            claimed,
            actual: decoded.len() as u64,
        });
    }
    let batch = proto::EventBatch::decode(decoded)?;
    if batch.events.len() != req.count as usize {
        return Err(WireError::WrongCount {
            claimed: req.count,
            actual: batch.events.len(),
        });
    }
    Ok(batch
        .events
        .into_iter()
        .map(|e| Event {
            headers: e
                .headers
                .into_iter()
                .map(|h| (h.key, h.value))
                .collect::<Headers>(),
            body: e.body,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Event> {
        vec![
            Event::new("plain"),
            Event::new("").with_header("k", "v"),
            Event::new(vec![0u8, 255, 10, 13])
                .with_header("empty", "")
                .with_header("ü", "ß".repeat(200)),
            Event::new("x".repeat(100_000)),
        ]
    }

    fn request(events: &[Event], how: Compression) -> proto::SendRequest {
        let mut buf = Vec::new();
        encode_into(events, &mut buf);
        let p = pack(&mut buf, how).unwrap();
        proto::SendRequest {
            origin: "o".into(),
            position: Some(7),
            count: events.len() as u32,
            compression: p.compression as i32,
            decoded_len: p.decoded_len,
            events: p.bytes,
        }
    }

    #[test]
    fn hand_encoding_is_what_prost_encodes_and_decodes() {
        let evs = events();
        let mut mine = Vec::new();
        encode_into(&evs, &mut mine);
        assert_eq!(mine.len(), encoded_len(&evs));
        let generated = proto::EventBatch {
            events: evs
                .iter()
                .map(|e| proto::Event {
                    headers: e
                        .headers
                        .iter()
                        .map(|(k, v)| proto::Header {
                            key: k.into(),
                            value: v.into(),
                        })
                        .collect(),
                    body: e.body.clone(),
                })
                .collect(),
        };
        assert_eq!(mine, generated.encode_to_vec());
    }

    /// A newer version's fields are ignored here, and this version's messages read fine in a
    /// newer one: agents of different versions can be mixed during a rolling upgrade.
    #[test]
    fn unknown_fields_are_ignored_both_ways() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct HeaderV2 {
            #[prost(string, tag = "1")]
            key: String,
            #[prost(string, tag = "2")]
            value: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct EventV2 {
            #[prost(message, repeated, tag = "1")]
            headers: Vec<HeaderV2>,
            #[prost(bytes = "bytes", tag = "2")]
            body: Bytes,
            #[prost(uint64, tag = "3")]
            event_time: u64,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct BatchV2 {
            #[prost(message, repeated, tag = "1")]
            events: Vec<EventV2>,
            #[prost(string, tag = "2")]
            schema: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct SendRequestV2 {
            #[prost(string, tag = "1")]
            origin: String,
            #[prost(uint64, optional, tag = "2")]
            position: Option<u64>,
            #[prost(uint32, tag = "3")]
            count: u32,
            #[prost(int32, tag = "4")]
            compression: i32,
            #[prost(uint64, tag = "5")]
            decoded_len: u64,
            #[prost(bytes = "bytes", tag = "6")]
            events: Bytes,
            #[prost(string, tag = "7")]
            trace_id: String,
        }

        // Newer sender, this receiver.
        let batch = BatchV2 {
            events: vec![EventV2 {
                headers: vec![HeaderV2 {
                    key: "k".into(),
                    value: "v".into(),
                }],
                body: Bytes::from_static(b"body"),
                event_time: 42,
            }],
            schema: "s".into(),
        }
        .encode_to_vec();
        let req = SendRequestV2 {
            origin: "o".into(),
            position: Some(9),
            count: 1,
            compression: 0,
            decoded_len: batch.len() as u64,
            events: Bytes::from(batch),
            trace_id: "t".into(),
        };
        let mine = proto::SendRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            unpack(&mine, 1 << 20).unwrap(),
            vec![Event::new("body").with_header("k", "v")]
        );

        // This sender, newer receiver.
        let evs = events();
        let mut buf = Vec::new();
        encode_into(&evs, &mut buf);
        let newer = BatchV2::decode(buf.as_slice()).unwrap();
        assert_eq!(newer.events.len(), evs.len());
        assert_eq!(newer.events[1].headers[0].value, "v");
        assert_eq!(
            (newer.events[3].body.len(), newer.events[3].event_time),
            (100_000, 0)
        );
        let old = request(&evs, Compression::Zstd).encode_to_vec();
        let newer = SendRequestV2::decode(old.as_slice()).unwrap();
        assert_eq!((newer.position, newer.trace_id.as_str()), (Some(7), ""));
    }

    #[test]
    fn every_compression_round_trips() {
        let evs = events();
        for how in [Compression::None, Compression::Zstd, Compression::Gzip] {
            let back = unpack(&request(&evs, how), 1 << 20).unwrap();
            assert_eq!(back, evs, "{how:?}");
        }
    }

    #[test]
    fn a_bomb_or_a_lie_is_refused_within_the_limit() {
        // 64 MiB of zeros compress to a few kB.
        let big = vec![Event::new(vec![0u8; 64 << 20])];
        for how in [Compression::Zstd, Compression::Gzip] {
            let mut req = request(&big, how);
            assert!(req.events.len() < 1 << 20, "{}", req.events.len());
            assert!(matches!(
                unpack(&req, 1 << 20),
                Err(WireError::TooLarge { .. })
            ));
            // Lying about the size does not help: decompression stops at the claim.
            req.decoded_len = 1000;
            assert!(
                matches!(
                    unpack(&req, 1 << 20),
                    Err(WireError::Corrupt(..) | WireError::WrongLength { .. })
                ),
                "{how:?}"
            );
        }
        let mut req = request(&events(), Compression::None);
        req.count = 3;
        assert!(matches!(
            unpack(&req, 1 << 20),
            Err(WireError::WrongCount { .. })
        ));
        req.events = Bytes::from_static(b"\xff\xff\xff");
        req.decoded_len = 3;
        assert!(unpack(&req, 1 << 20).is_err());
    }
}
