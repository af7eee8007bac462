//! The packed batch layout of the `packed-interceptor` world (see `wit/PACKED.md`), guest side.

use crate::{
    Error,
    event::{Event, HeaderOp, Verdict},
};

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Error::new("packed batch truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, Error> {
        Ok(std::str::from_utf8(self.bytes()?)?.to_owned())
    }
}

/// Decodes the host's batch into events.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<Event>, Error> {
    let mut r = Reader { buf, at: 0 };
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(buf.len()));
    for _ in 0..n {
        let nh = r.u16()? as usize;
        let mut headers = Vec::with_capacity(nh);
        for _ in 0..nh {
            let k = r.string()?;
            let v = r.string()?;
            headers.push((k, v));
        }
        let body = r.bytes()?.to_vec();
        out.push(Event::received(headers, body));
    }
    Ok(out)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Encodes a whole event (input layout); used by hosts' tests and split/replace verdicts.
pub fn encode_event(out: &mut Vec<u8>, headers: &[(String, String)], body: &[u8]) {
    out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
    for (k, v) in headers {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
    put_bytes(out, body);
}

/// Encodes a batch (input layout), for tests.
pub fn encode_batch(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        let h: Vec<(String, String)> = e
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        encode_event(&mut out, &h, e.body());
    }
    out
}

fn encode_whole(out: &mut Vec<u8>, e: Event) {
    let (h, b) = e.into_parts();
    encode_event(out, &h, &b);
}

/// Encodes one verdict per input event.
pub fn encode_verdicts(verdicts: Vec<Verdict>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + verdicts.len() * 8);
    out.extend_from_slice(&(verdicts.len() as u32).to_le_bytes());
    for v in verdicts {
        match v {
            Verdict::Keep(e) if e.is_unchanged() => out.push(0),
            Verdict::Keep(e) if e.fresh => {
                out.push(2);
                encode_whole(&mut out, e);
            }
            Verdict::Keep(e) => {
                out.push(1);
                out.extend_from_slice(&(e.ops.len() as u16).to_le_bytes());
                for op in &e.ops {
                    match op {
                        HeaderOp::Set(k, v) => {
                            out.push(0);
                            put_bytes(&mut out, k.as_bytes());
                            put_bytes(&mut out, v.as_bytes());
                        }
                        HeaderOp::Remove(k) => {
                            out.push(1);
                            put_bytes(&mut out, k.as_bytes());
                        }
                    }
                }
                if e.body_changed {
                    out.push(1);
                    put_bytes(&mut out, e.body());
                } else {
                    out.push(0);
                }
            }
            Verdict::Drop => out.push(3),
            Verdict::Reject(r) => {
                out.push(4);
                put_bytes(&mut out, r.as_bytes());
            }
            Verdict::Retry(r) => {
                out.push(5);
                put_bytes(&mut out, r.as_bytes());
            }
            Verdict::Split(events) => {
                out.push(6);
                out.extend_from_slice(&(events.len() as u32).to_le_bytes());
                for e in events {
                    encode_whole(&mut out, e);
                }
            }
        }
    }
    out
}

/// Runs a per-event interceptor over a packed batch.
pub fn run_per_event(
    batch: &[u8],
    mut f: impl FnMut(Event) -> Result<Verdict, Error>,
) -> Result<Vec<u8>, Error> {
    let events = decode_batch(batch)?;
    let verdicts = events
        .into_iter()
        .map(&mut f)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(encode_verdicts(verdicts))
}

/// Runs a batch interceptor over a packed batch.
pub fn run_batch(
    batch: &[u8],
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
        let out = run_per_event(&batch, |mut e| {
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
    fn truncated_input_is_an_error_not_a_panic() {
        let batch = encode_batch(&[Event::new("abc")]);
        for cut in 0..batch.len() {
            assert!(decode_batch(&batch[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn batch_form_checks_the_verdict_count() {
        let batch = encode_batch(&[Event::new("a"), Event::new("b")]);
        let e = run_batch(&batch, |_| Ok(vec![Verdict::Drop])).unwrap_err();
        assert!(e.0.contains("1 verdicts for 2 events"));
    }
}
