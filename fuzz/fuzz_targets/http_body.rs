//! An http source's request body: decompression (identity, gzip, zstd) under a size cap, then
//! the body codec (raw, lines, ndjson, json). The cap must hold whatever the bytes claim.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::connectors::http::{
    config::HttpCodec,
    source::{
        body::{Encoding, decompress},
        decode::decode,
    },
};

const CAP: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let encoding = match mode % 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        _ => Encoding::Zstd,
    };
    let codec = match (mode / 3) % 4 {
        0 => HttpCodec::Raw,
        1 => HttpCodec::Lines,
        2 => HttpCodec::Ndjson,
        _ => HttpCodec::Json,
    };
    let Ok(body) = decompress(encoding, rest, CAP) else {
        return;
    };
    assert!(body.len() <= CAP, "decompressed past the cap");
    let len = body.len();
    if let Ok(events) = decode(codec, Bytes::from(body)) {
        if matches!(codec, HttpCodec::Raw | HttpCodec::Lines) {
            let total: usize = events.iter().map(|e| e.body.len()).sum();
            assert!(total <= len, "events hold more than the body");
        }
    }
});
