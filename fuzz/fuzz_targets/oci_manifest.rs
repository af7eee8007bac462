//! What a registry sends: the reference a pipeline names and the manifest it resolves to. A
//! manifest that is accepted names exactly one layer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_wasm::oci::{OciRef, client::parse_manifest};

fuzz_target!(|data: &[u8]| {
    let (reference, manifest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"registry.local/plugins/fuzz:1"[..], data),
    };
    let Ok(reference) = std::str::from_utf8(reference) else {
        return;
    };
    let r = match OciRef::parse(reference) {
        Ok(r) => {
            let again = OciRef::parse(&r.to_string()).expect("a parsed reference parses again");
            assert_eq!(again.to_string(), r.to_string());
            r
        }
        Err(_) => OciRef::parse("registry.local/plugins/fuzz:1").expect("a valid reference"),
    };
    if let Ok(m) = parse_manifest(&r, manifest) {
        assert_eq!(m.layers.len(), 1);
    }
});
