//! The hop receiver's batch decoder: what another agent (or anyone reaching the port) sends.
//! Claimed lengths are checked before anything is allocated for them; an accepted batch has
//! exactly the events it claims.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::connectors::hop::{proto::SendRequest, wire::unpack};

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (head, events) = data.split_at(6);
    let claimed = u64::from(u32::from_le_bytes([head[2], head[3], head[4], head[5]]));
    let req = SendRequest {
        origin: "fuzz".into(),
        position: Some(1),
        count: u32::from(head[0]),
        compression: i32::from(head[1] % 4),
        decoded_len: if head[1] & 0x80 != 0 {
            events.len() as u64
        } else {
            claimed
        },
        events: Bytes::copy_from_slice(events),
    };
    if let Ok(batch) = unpack(&req, LIMIT) {
        assert_eq!(batch.len(), req.count as usize);
    }
});
