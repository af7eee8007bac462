//! Path and key templates (`%{header}` and strftime escapes), written by users and rendered
//! against event headers that come from anywhere: parsing any text and rendering it against any
//! headers (a `timestamp` included) must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::event::{Event, template::Template};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, value) = text.split_once('\u{0}').unwrap_or((text, "1733500000000"));
    let Ok(t) = Template::parse(template) else {
        return;
    };
    let event = Event::new("body")
        .with_header("timestamp", value)
        .with_header("host", value);
    let mut out = String::new();
    t.render(&event, &mut out);
});
