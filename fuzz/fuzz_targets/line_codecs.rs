//! The line codecs of the file, stdin, tail and stream sources (`lines`, `ndjson`): any line
//! decodes or is refused with a reason, and a decoded ndjson event survives its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::event::codec::{Codec, CodecName, decode_line};

fuzz_target!(|data: &[u8]| {
    let _ = decode_line(CodecName::Lines, data);
    if let Ok(event) = decode_line(CodecName::Ndjson, data) {
        let mut out = Vec::new();
        CodecName::Ndjson
            .encode(std::slice::from_ref(&event), &mut out)
            .expect("a decoded event encodes");
        let line = out.strip_suffix(b"\n").unwrap_or(&out);
        let back = decode_line(CodecName::Ndjson, line).expect("an encoded event decodes");
        assert_eq!(back.body, event.body);
        assert_eq!(
            back.headers.iter().collect::<Vec<_>>(),
            event.headers.iter().collect::<Vec<_>>()
        );
    }
});
