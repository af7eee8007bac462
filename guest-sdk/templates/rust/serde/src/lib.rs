//! `{{name}}`: a Sluice serde plugin (a codec): payloads to events and back.
//!
//! ```yaml
//! plugins:
//!   {{name}}: { path: dist/{{name}}.wasm }
//! sources:
//!   in: { type: http, codec: {{name}}, ... }
//! ```

use sluice_guest::{Codec, Error, Event};

pub struct Lines;

/// One event per non-empty line; encoding writes each body and a newline.
#[sluice_guest::serde]
impl Codec for Lines {
    fn decode(payload: &[u8], _content_type: &str) -> Result<Vec<Event>, Error> {
        Ok(payload
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Event::new(l.to_vec()))
            .collect())
    }

    fn encode(events: &[Event]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        for e in events {
            out.extend_from_slice(e.body());
            out.push(b'\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let events = Lines::decode(b"a\n\nb\n", "text/plain").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(Lines::encode(&events).unwrap(), b"a\nb\n");
    }
}
