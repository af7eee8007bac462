//! The packed batch layout of the `packed-interceptor` world (see `wit/PACKED.md`), guest side.

use std::sync::Arc;

use crate::{
    Error, Verdict,
    event::{Event, Received, Repr},
    recycled::RecycledBuf,
};

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| Error::new("packed batch truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    #[inline]
    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    #[inline]
    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// Steps over a length-prefixed field. Header text is UTF-8-checked where it is read
    /// (most plugins never read most headers), not here.
    #[inline]
    fn skip_field(&mut self) -> Result<(), Error> {
        self.bytes().map(drop)
    }
}

/// The events of a host batch, decoded one at a time as ranges into the batch (no copies).
pub struct Events {
    batch: Arc<Vec<u8>>,
    at: usize,
    left: u32,
}

impl Events {
    pub fn new(batch: Vec<u8>) -> Result<Events, Error> {
        let mut r = Reader { buf: &batch, at: 0 };
        let left = r.u32()?;
        let at = r.at;
        Ok(Events {
            batch: Arc::new(batch),
            at,
            left,
        })
    }

    /// How many events the host sent.
    pub fn len(&self) -> usize {
        self.left as usize
    }

    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    #[inline]
    fn decode_next(&mut self) -> Result<Event, Error> {
        let mut r = Reader {
            buf: &self.batch,
            at: self.at,
        };
        let header_count = r.u16()?;
        let start = r.at;
        for _ in 0..header_count {
            r.skip_field()?;
            r.skip_field()?;
        }
        let headers = (start, r.at);
        let len = r.u32()? as usize;
        let body_start = r.at;
        r.take(len)?;
        let body = (body_start, r.at);
        self.at = r.at;
        Ok(Event(Repr::Received(Received {
            batch: Arc::clone(&self.batch),
            headers,
            header_count,
            body,
            ops: RecycledBuf::default(),
            op_count: 0,
            new_body: None,
        })))
    }
}

impl Iterator for Events {
    type Item = Result<Event, Error>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let e = self.decode_next();
        if e.is_err() {
            self.left = 0;
        }
        Some(e)
    }
}

/// Decodes the host's whole batch into events (which refer into it, uncopied).
pub fn decode_batch(batch: Vec<u8>) -> Result<Vec<Event>, Error> {
    Events::new(batch)?.collect()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Encodes a whole event (input layout), as split and replace verdicts carry them.
pub fn encode_event(out: &mut Vec<u8>, e: &Event) {
    match &e.0 {
        Repr::Received(r) if r.op_count == 0 => {
            // The header block goes back as the host wrote it.
            out.extend_from_slice(&r.header_count.to_le_bytes());
            out.extend_from_slice(&r.batch[r.headers.0..r.headers.1]);
        }
        _ => {
            let count = out.len();
            out.extend_from_slice(&[0, 0]);
            let mut n = 0u16;
            for (k, v) in e.headers() {
                put_bytes(out, k.as_bytes());
                put_bytes(out, v.as_bytes());
                n += 1;
            }
            out[count..count + 2].copy_from_slice(&n.to_le_bytes());
        }
    }
    put_bytes(out, e.body());
}

/// Encodes a batch (input layout), as the host does; for tests.
pub fn encode_batch(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        encode_event(&mut out, e);
    }
    out
}

/// Appends one verdict in the output layout.
#[inline]
pub fn encode_verdict(out: &mut Vec<u8>, v: Verdict) {
    match v {
        Verdict::Keep(e) => match &e.0 {
            Repr::Received(r) if r.op_count == 0 && r.new_body.is_none() => out.push(0),
            Repr::Received(r) => {
                out.push(1);
                out.extend_from_slice(&r.op_count.to_le_bytes());
                out.extend_from_slice(&r.ops);
                match &r.new_body {
                    Some(b) => {
                        out.push(1);
                        put_bytes(out, b);
                    }
                    None => out.push(0),
                }
            }
            Repr::Fresh { .. } => {
                out.push(2);
                encode_event(out, &e);
            }
        },
        Verdict::Drop => out.push(3),
        Verdict::Reject(r) => {
            out.push(4);
            put_bytes(out, r.as_bytes());
        }
        Verdict::Retry(r) => {
            out.push(5);
            put_bytes(out, r.as_bytes());
        }
        Verdict::Split(events) => {
            out.push(6);
            out.extend_from_slice(&(events.len() as u32).to_le_bytes());
            for e in &events {
                encode_event(out, e);
            }
        }
    }
}

/// Encodes one verdict per input event.
pub fn encode_verdicts(verdicts: Vec<Verdict>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + verdicts.len() * 8);
    out.extend_from_slice(&(verdicts.len() as u32).to_le_bytes());
    for v in verdicts {
        encode_verdict(&mut out, v);
    }
    out
}

/// Runs a per-event interceptor over a packed batch: each event is decoded, handed over and
/// its verdict encoded before the next, so no list of events or verdicts is built.
pub fn run_per_event(
    batch: Vec<u8>,
    mut f: impl FnMut(Event) -> Result<Verdict, Error>,
) -> Result<Vec<u8>, Error> {
    let events = Events::new(batch)?;
    let mut out = Vec::with_capacity(4 + events.len() * 8);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        encode_verdict(&mut out, f(e?)?);
    }
    Ok(out)
}

/// Runs a batch interceptor over a packed batch.
pub fn run_batch(
    batch: Vec<u8>,
    f: impl FnOnce(Vec<Event>) -> Result<Vec<Verdict>, Error>,
) -> Result<Vec<u8>, Error> {
    let events = decode_batch(batch)?;
    let n = events.len();
    let verdicts = f(events)?;
    if verdicts.len() != n {
        return Err(Error::new(format!(
            "interceptor returned {} verdicts for {n} events",
            verdicts.len()
        )));
    }
    Ok(encode_verdicts(verdicts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_events_cost_one_byte_and_patches_carry_only_changes() {
        let batch = encode_batch(&[Event::new("a").with_header("k", "v"), Event::new("b")]);
        let out = run_per_event(batch, |mut e| {
            if e.body() == b"b" {
                e.set_header("x", "1");
            }
            Ok(Verdict::Keep(e))
        })
        .unwrap();
        // count, tag 0, tag 1 + 1 op (set x=1) + body unchanged
        let mut expected = 2u32.to_le_bytes().to_vec();
        expected.push(0);
        expected.push(1);
        expected.extend_from_slice(&1u16.to_le_bytes());
        expected.push(0);
        put_bytes(&mut expected, b"x");
        put_bytes(&mut expected, b"1");
        expected.push(0);
        assert_eq!(out, expected);
    }

    #[test]
    fn a_call_allocates_per_batch_not_per_event() {
        let events: Vec<Event> = (0..200)
            .map(|i| {
                Event::new(format!("{i:0>256}"))
                    .with_header("host", "web-1")
                    .with_header("app", "shop")
            })
            .collect();
        let batch = encode_batch(&events);
        let add_header = |mut e: Event| {
            e.set_header("region", "eu");
            Ok(Verdict::Keep(e))
        };
        // The first call leaves a change buffer on the free list.
        run_per_event(batch.clone(), add_header).unwrap();
        let before = crate::counting_alloc::allocations();
        let out = run_per_event(batch, add_header).unwrap();
        let made = crate::counting_alloc::allocations() - before;
        // The shared batch, and the answer buffer growing to fit: a handful, whatever the count.
        assert!(made <= 12, "{made} allocations for 200 events");
        assert_eq!(out[..4], 200u32.to_le_bytes(), "one verdict per event");
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let batch = encode_batch(&[Event::new("abc")]);
        for cut in 0..batch.len() {
            assert!(decode_batch(batch[..cut].to_vec()).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn batch_form_checks_the_verdict_count() {
        let batch = encode_batch(&[Event::new("a"), Event::new("b")]);
        let e = run_batch(batch, |_| Ok(vec![Verdict::Drop])).unwrap_err();
        assert!(e.0.contains("1 verdicts for 2 events"));
    }
}
