//! The stored form of one event, and the keys it is stored under.
//!
//! Keys are big-endian `u64` sequence numbers, so RocksDB's byte order is FIFO order. A value
//! is a 5-byte header — the format version, then a CRC-32 (little-endian) over the key and the
//! payload — followed by the payload:
//!
//! ```text
//! [version: u8 = 1][crc32: u32 LE][n_headers: varint]([len: varint][key][len: varint][value])*[body]
//! ```
//!
//! The body is the rest of the value, so it needs no length. The checksum covers the key too,
//! so a record that ends up under the wrong sequence number is caught like a flipped bit.
//! Changing any of this means a new version byte and keeping the decoder for version 1: the
//! fixture test (`tests/fixtures/rocks-v1`) fails otherwise.

use bytes::{Bytes, BytesMut};

use sluice_core::event::{Event, Headers};

/// The record format this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// Version byte + checksum.
pub const HEADER_LEN: usize = 5;

/// Why a stored value cannot be turned back into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its {HEADER_LEN}-byte header")]
    Truncated(usize),
    #[error("unknown record format version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u8),
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
    #[error("key is {0} bytes, not an 8-byte sequence number")]
    Key(usize),
}

/// The key of sequence number `seq`.
pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number of a stored key.
pub fn seq_of(key: &[u8]) -> Result<u64, RecordError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| RecordError::Key(key.len()))
}

/// The checksum a record under `seq` carries for `payload` (public for the fuzz targets, which
/// seal arbitrary payloads to reach the decoder behind the check).
pub fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&key(seq));
    h.update(payload);
    h.finalize()
}

/// Exact length of the record [`encode_into`] writes for `event`.
pub fn encoded_len(event: &Event) -> usize {
    let headers: usize = event
        .headers
        .iter()
        .map(|(k, v)| varint_len(k.len() as u64) + k.len() + varint_len(v.len() as u64) + v.len())
        .sum();
    HEADER_LEN + varint_len(event.headers.len() as u64) + headers + event.body.len()
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends the record of `event`, to be stored under `seq`, to `out`.
pub fn encode_into(seq: u64, event: &Event, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(encoded_len(event));
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0; 4]);
    put_varint(out, event.headers.len() as u64);
    for (k, v) in event.headers.iter() {
        put_varint(out, k.len() as u64);
        out.extend_from_slice(k.as_bytes());
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(&event.body);
    let crc = checksum(seq, &out[start + HEADER_LEN..]);
    out[start + 1..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Checks version and checksum; returns the payload.
pub fn verify(seq: u64, value: &[u8]) -> Result<&[u8], RecordError> {
    if value.len() < HEADER_LEN {
        return Err(RecordError::Truncated(value.len()));
    }
    if value[0] != FORMAT_VERSION {
        return Err(RecordError::Version(value[0]));
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&value[1..HEADER_LEN]);
    let stored = u32::from_le_bytes(stored);
    let payload = &value[HEADER_LEN..];
    let computed = checksum(seq, payload);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok(payload)
}

/// Decodes the record stored under `seq`. The body is copied into `bodies` and split off, so a
/// batch of bodies shares a few large allocations instead of one each.
pub fn decode(seq: u64, value: &[u8], bodies: &mut BytesMut) -> Result<Event, RecordError> {
    let mut p = verify(seq, value)?;
    let n = take_varint(&mut p)?;
    // Each header takes at least two bytes, so a count beyond that is garbage, not a reason to
    // allocate.
    if n > (p.len() / 2) as u64 {
        return Err(RecordError::Malformed("header count exceeds the record"));
    }
    let mut headers = Headers::default();
    for _ in 0..n {
        let k = take_str(&mut p)?;
        let v = take_str(&mut p)?;
        headers.insert(k, v);
    }
    Ok(Event {
        headers,
        body: copy_body(p, bodies),
    })
}

fn copy_body(body: &[u8], bodies: &mut BytesMut) -> Bytes {
    if body.is_empty() {
        return Bytes::new();
    }
    if bodies.capacity() < body.len() {
        bodies.reserve(body.len().max(64 * 1024));
    }
    bodies.extend_from_slice(body);
    bodies.split().freeze()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(p: &mut &[u8]) -> Result<u64, RecordError> {
    let mut v = 0u64;
    for (i, b) in p.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *p = &p[i + 1..];
            return Ok(v);
        }
    }
    Err(RecordError::Malformed("bad length"))
}

fn take_str<'a>(p: &mut &'a [u8]) -> Result<&'a str, RecordError> {
    let len = take_varint(p)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= p.len())
        .ok_or(RecordError::Malformed("header runs past the record"))?;
    let (s, rest) = p.split_at(len);
    *p = rest;
    std::str::from_utf8(s).map_err(|_| RecordError::Malformed("header is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(seq: u64, e: &Event) -> Event {
        let mut buf = Vec::new();
        encode_into(seq, e, &mut buf);
        assert_eq!(buf.len(), encoded_len(e));
        decode(seq, &buf, &mut BytesMut::new()).unwrap()
    }

    #[test]
    fn events_roundtrip() {
        let long = "k".repeat(300);
        for e in [
            Event::new(""),
            Event::new("hello"),
            Event::new(vec![0u8, 255, 10, 13]).with_header("a", ""),
            Event::new("x")
                .with_header("ünï", "cödé")
                .with_header(long.clone(), long.clone()),
        ] {
            assert_eq!(roundtrip(u64::MAX - 1, &e), e);
        }
    }

    #[test]
    fn the_v1_layout_is_pinned() {
        // Changing these bytes breaks every channel written so far: add a version instead.
        let mut buf = Vec::new();
        encode_into(7, &Event::new("hi").with_header("k", "v"), &mut buf);
        assert_eq!(
            hex::encode(&buf),
            format!(
                "01{}01016b01766869",
                hex::encode(crc(7, &buf[5..]).to_le_bytes())
            )
        );
        assert_eq!(&buf[5..], b"\x01\x01k\x01vhi");
    }

    fn crc(seq: u64, payload: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&seq.to_be_bytes());
        h.update(payload);
        h.finalize()
    }

    #[test]
    fn any_flipped_bit_or_wrong_key_is_detected() {
        let mut buf = Vec::new();
        encode_into(3, &Event::new("body").with_header("h", "v"), &mut buf);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode(3, &bad, &mut BytesMut::new()).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
        assert!(matches!(
            decode(4, &buf, &mut BytesMut::new()),
            Err(RecordError::Checksum { .. })
        ));
        assert_eq!(
            decode(3, &buf[..4], &mut BytesMut::new()),
            Err(RecordError::Truncated(4))
        );
        let mut future = buf.clone();
        future[0] = 2;
        assert_eq!(
            decode(3, &future, &mut BytesMut::new()),
            Err(RecordError::Version(2))
        );
    }

    #[test]
    fn a_valid_checksum_over_garbage_is_still_refused() {
        // A payload claiming more headers than it has, with a correct checksum.
        let payload = [0xff, 0xff, 0x03, 1, b'a'];
        let mut v = vec![FORMAT_VERSION];
        v.extend_from_slice(&crc(1, &payload).to_le_bytes());
        v.extend_from_slice(&payload);
        assert!(matches!(
            decode(1, &v, &mut BytesMut::new()),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn keys_sort_in_sequence_order() {
        assert!(key(255) < key(256));
        assert_eq!(seq_of(&key(42)), Ok(42));
        assert_eq!(seq_of(b"abc"), Err(RecordError::Key(3)));
    }
}
