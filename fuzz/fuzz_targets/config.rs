//! The pipeline config reader: YAML → checked pipeline, with every connector's reader of the
//! agent built here (http, hop and the engine's built-ins). Any text must give a pipeline or
//! errors that name a place in the file, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "FUZZ").then(|| "value".to_owned());
    if let Err(errors) =
        sluice_core::config::load_str(Path::new("fuzz.yaml"), text, &env, sluice::registry())
    {
        assert!(!errors.0.is_empty(), "a refused pipeline says why");
        // YAML breaks lines at `\n`, `\r` and `\r\n`: counting both bounds every real line.
        let lines = text.bytes().filter(|&b| b == b'\n' || b == b'\r').count() + 2;
        for e in &errors.0 {
            assert!(e.pos.line <= lines, "error past the end of the file: {e}");
        }
    }
});
