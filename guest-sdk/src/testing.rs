//! Native test helpers: run plugin functions on sample events without Wasm.
//!
//! Plugin functions are plain Rust, so a test can call them directly; these helpers add the
//! checks the host makes (one verdict per event) and turn events into readable tuples.

use crate::{
    Error, Event, Verdict,
    packed::{decode_batch, encode_batch},
};

/// `events` as the plugin receives them from the host (read from a packed batch).
pub fn as_received(events: &[Event]) -> Vec<Event> {
    decode_batch(encode_batch(events)).expect("a batch this crate encoded decodes")
}

/// Runs a per-event interceptor over `events` as the host would (in order, stopping at the
/// first error, which the host would treat as a failed batch).
pub fn run_interceptor(
    mut f: impl FnMut(Event) -> Result<Verdict, Error>,
    events: &[Event],
) -> Result<Vec<Verdict>, Error> {
    as_received(events).into_iter().map(&mut f).collect()
}

/// Runs a batch interceptor, checking that it returns one verdict per event.
pub fn run_batch_interceptor(
    f: impl FnOnce(Vec<Event>) -> Result<Vec<Verdict>, Error>,
    events: &[Event],
) -> Result<Vec<Verdict>, Error> {
    let v = f(as_received(events))?;
    if v.len() != events.len() {
        return Err(Error::new(format!(
            "{} verdicts for {} events",
            v.len(),
            events.len()
        )));
    }
    Ok(v)
}

/// `(headers, body as text)` of an event, for assertions.
pub fn parts(e: &Event) -> (Vec<(String, String)>, String) {
    (
        e.headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        String::from_utf8_lossy(e.body()).into_owned(),
    )
}
