//! The packed batch layout (`wit/PACKED.md`), host side: encode a batch, apply the verdicts.
//!
//! Everything read from the guest is checked against the buffer; a malformed answer is a
//! [`CallFailure`], handled like a trap.

use bytes::Bytes;

use super::CallFailure;
use sluice_core::{
    dlq::DeadLetter,
    event::{Event, HeaderText, Headers, SharedChange},
};

/// Encodes `events` into `out` (cleared first).
pub fn encode_batch(events: &[Event], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        encode_event(e, out);
    }
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_event(e: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(&(e.headers.len() as u16).to_le_bytes());
    for (k, v) in e.headers.iter() {
        put(out, k.as_bytes());
        put(out, v.as_bytes());
    }
    put(out, &e.body);
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CallFailure> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| CallFailure::bad_output("verdict buffer truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CallFailure> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CallFailure> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CallFailure> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CallFailure> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, CallFailure> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| CallFailure::bad_output("header is not UTF-8"))
    }
    fn event(&mut self, body_source: &Bytes) -> Result<Event, CallFailure> {
        let n = self.u16()? as usize;
        let mut headers = Headers::default();
        for _ in 0..n {
            let k = self.str()?;
            let v = self.str()?;
            headers.insert(k, v);
        }
        let body = self.bytes()?;
        Ok(Event {
            headers,
            body: slice_of(body_source, body),
        })
    }
}

/// `part` is a sub-slice of `whole`'s memory: share it instead of copying.
fn slice_of(whole: &Bytes, part: &[u8]) -> Bytes {
    if part.is_empty() {
        Bytes::new()
    } else {
        whole.slice_ref(part)
    }
}

/// What one call produced, in input order.
pub struct Applied {
    pub kept: Vec<Event>,
    /// Set when a verdict asked to retry the whole batch.
    pub retry: Option<String>,
}

/// A decoded, checked patch verdict. `ops` are `count` header changes, still in the wire
/// layout: replaying them from the buffer costs no allocation per event.
#[derive(Clone, Copy)]
struct Patch<'a> {
    ops: &'a [u8],
    count: u16,
    body: Option<&'a [u8]>,
}

/// One decoded verdict, not yet applied.
enum Action<'a> {
    Keep,
    Patch(Patch<'a>),
    Replace(Vec<Event>),
    Drop,
    Reject(&'a str),
    Retry(&'a str),
}

fn decode<'a>(r: &mut Reader<'a>, whole: &Bytes, n: usize) -> Result<Vec<Action<'a>>, CallFailure> {
    let count = r.u32()? as usize;
    if count != n {
        return Err(CallFailure::bad_output(format!(
            "{count} verdicts for {n} events"
        )));
    }
    let mut actions = Vec::with_capacity(n);
    // The last patch as written (after its tag) and as decoded: a filter usually sends the
    // same patch for every event it keeps, and a byte comparison replaces the checks.
    let mut last_patch: Option<(&'a [u8], Patch<'a>)> = None;
    for _ in 0..n {
        actions.push(match r.u8()? {
            0 => Action::Keep,
            1 => Action::Patch(match last_patch {
                Some((raw, p)) if r.buf[r.at..].starts_with(raw) => {
                    r.at += raw.len();
                    p
                }
                _ => {
                    let whole = r.at;
                    let p = patch(r)?;
                    last_patch = Some((&r.buf[whole..r.at], p));
                    p
                }
            }),
            2 => Action::Replace(vec![r.event(whole)?]),
            3 => Action::Drop,
            4 => Action::Reject(r.str()?),
            5 => Action::Retry(r.str()?),
            6 => {
                let k = r.u32()? as usize;
                let mut es = Vec::with_capacity(k.min(r.buf.len()));
                for _ in 0..k {
                    es.push(r.event(whole)?);
                }
                Action::Replace(es)
            }
            tag => {
                return Err(CallFailure::bad_output(format!(
                    "unknown verdict tag {tag}"
                )));
            }
        });
    }
    if r.at != r.buf.len() {
        return Err(CallFailure::bad_output("trailing bytes after the verdicts"));
    }
    Ok(actions)
}

/// Decodes and checks a patch verdict (after its tag).
fn patch<'a>(r: &mut Reader<'a>) -> Result<Patch<'a>, CallFailure> {
    let count = r.u16()?;
    let start = r.at;
    for _ in 0..count {
        match r.u8()? {
            0 => {
                r.str()?;
                r.str()?;
            }
            1 => {
                r.str()?;
            }
            op => {
                return Err(CallFailure::bad_output(format!("unknown header op {op}")));
            }
        }
    }
    let ops = &r.buf[start..r.at];
    let body = if r.u8()? == 1 { Some(r.bytes()?) } else { None };
    Ok(Patch { ops, count, body })
}

/// The text of the last header a patch set: a filter's verdicts usually set the same header to
/// the same value on every event, so its text is checked and made once per call, and shared by
/// the events after (a comparison of the raw bytes instead of a UTF-8 check and two copies).
#[derive(Default)]
struct LastSet<'a> {
    raw: Option<(&'a [u8], &'a [u8])>,
    text: (HeaderText, HeaderText),
}

impl<'a> LastSet<'a> {
    /// `key` and `value` as header text; both were checked as UTF-8 by `decode`.
    fn text(&mut self, key: &'a [u8], value: &'a [u8]) -> (HeaderText, HeaderText) {
        if self.raw != Some((key, value)) {
            let utf8 = |b| std::str::from_utf8(b).unwrap_or_default();
            self.text = (HeaderText::new(utf8(key)), HeaderText::new(utf8(value)));
            self.raw = Some((key, value));
        }
        self.text.clone()
    }
}

/// Makes the `count` checked header changes of `ops` to `headers`.
fn replay<'a>(ops: &'a [u8], count: u16, headers: &mut Headers, last_set: &mut LastSet<'a>) {
    let mut r = Reader { buf: ops, at: 0 };
    for _ in 0..count {
        // Checked by `decode`: these reads cannot fail.
        let (Ok(op), Ok(k)) = (r.u8(), r.bytes()) else {
            break;
        };
        if op == 0 {
            let Ok(v) = r.bytes() else { break };
            let (k, v) = last_set.text(k, v);
            headers.insert(k, v);
        } else {
            headers.remove(std::str::from_utf8(k).unwrap_or_default());
        }
    }
}

/// Applies packed verdicts to `inputs`. The whole answer is decoded and checked first, so a
/// malformed one hands `inputs` back untouched with the failure. Replaced bodies share the
/// output buffer's memory. Rejected events go to `rejected`.
pub fn apply(
    inputs: Vec<Event>,
    output: Vec<u8>,
    rejected: &mut Vec<DeadLetter>,
) -> Result<Applied, (Vec<Event>, CallFailure)> {
    let output = Bytes::from(output);
    let actions = match decode(
        &mut Reader {
            buf: &output,
            at: 0,
        },
        &output,
        inputs.len(),
    ) {
        Ok(a) => a,
        Err(f) => return Err((inputs, f)),
    };
    let mut kept = Vec::with_capacity(inputs.len());
    let mut retry = None;
    let mut last_set = LastSet::default();
    // The last header changes and their results: events that shared a map before the same
    // changes share the result too (a file's lines, all given the same header).
    let mut changes: (&[u8], SharedChange) = (&[], SharedChange::default());
    for (mut e, action) in inputs.into_iter().zip(actions) {
        match action {
            Action::Keep => kept.push(e),
            Action::Patch(Patch { ops, count, body }) => {
                // A repeated patch refers to the same bytes: no comparison.
                if !std::ptr::eq(changes.0, ops) && changes.0 != ops {
                    changes = (ops, SharedChange::default());
                }
                changes.1.apply(&mut e.headers, |headers| {
                    replay(ops, count, headers, &mut last_set)
                });
                if let Some(b) = body {
                    e.body = slice_of(&output, b);
                }
                kept.push(e);
            }
            Action::Replace(es) => kept.extend(es),
            Action::Drop => {}
            Action::Reject(reason) => rejected.push(DeadLetter {
                event: e,
                reason: reason.to_owned(),
            }),
            Action::Retry(reason) => {
                retry.get_or_insert_with(|| reason.to_owned());
            }
        }
    }
    Ok(Applied { kept, retry })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_every_verdict_kind() {
        let inputs = vec![
            Event::new("a").with_header("k", "1"),
            Event::new("b").with_header("k", "2"),
            Event::new("c"),
            Event::new("d"),
            Event::new("e"),
        ];
        let mut out = 5u32.to_le_bytes().to_vec();
        out.push(0); // keep a
        out.push(1); // patch b: set x=y, remove k, new body
        out.extend_from_slice(&2u16.to_le_bytes());
        out.push(0);
        put(&mut out, b"x");
        put(&mut out, b"y");
        out.push(1);
        put(&mut out, b"k");
        out.push(1);
        put(&mut out, b"B!");
        out.push(3); // drop c
        out.push(4); // reject d
        put(&mut out, b"bad d");
        out.push(6); // split e into two
        out.extend_from_slice(&2u32.to_le_bytes());
        encode_event(&Event::new("e1"), &mut out);
        encode_event(&Event::new("e2").with_header("h", "v"), &mut out);
        let mut rejected = Vec::new();
        let a = apply(inputs, out, &mut rejected).map_err(|e| e.1).unwrap();
        let bodies: Vec<&[u8]> = a.kept.iter().map(|e| &e.body[..]).collect();
        assert_eq!(bodies, [&b"a"[..], b"B!", b"e1", b"e2"]);
        assert_eq!(a.kept[1].headers.iter().collect::<Vec<_>>(), [("x", "y")]);
        assert_eq!(a.kept[3].headers.get("h"), Some("v"));
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            (&rejected[0].event.body[..], rejected[0].reason.as_str()),
            (&b"d"[..], "bad d")
        );
        assert!(a.retry.is_none());
    }

    #[test]
    fn malformed_answers_are_failures_not_panics() {
        let inputs = || vec![Event::new("a")];
        let mut rejected = Vec::new();
        let (back, _) = apply(inputs(), 2u32.to_le_bytes().to_vec(), &mut rejected)
            .err()
            .unwrap();
        assert_eq!(back, inputs(), "inputs handed back untouched");
        let mut out = 1u32.to_le_bytes().to_vec();
        out.push(9);
        assert!(apply(inputs(), out, &mut rejected).is_err(), "unknown tag");
        let mut out = 1u32.to_le_bytes().to_vec();
        out.push(4);
        out.extend_from_slice(&1000u32.to_le_bytes());
        assert!(
            apply(inputs(), out, &mut rejected).is_err(),
            "length past the end"
        );
        let mut out = 1u32.to_le_bytes().to_vec();
        out.extend_from_slice(&[0, 0]);
        assert!(
            apply(inputs(), out, &mut rejected).is_err(),
            "trailing bytes"
        );
        assert!(rejected.is_empty());
    }

    #[test]
    fn a_repeated_patch_is_applied_like_the_first_and_a_near_repeat_is_decoded() {
        let patch = |out: &mut Vec<u8>, body: Option<&[u8]>| {
            out.push(1);
            out.extend_from_slice(&1u16.to_le_bytes());
            out.push(0);
            put(out, b"k");
            put(out, b"v");
            match body {
                Some(b) => {
                    out.push(1);
                    put(out, b);
                }
                None => out.push(0),
            }
        };
        let mut out = 5u32.to_le_bytes().to_vec();
        patch(&mut out, None);
        patch(&mut out, None);
        // The same bytes as the patch before, then a body: not the same verdict.
        patch(&mut out, Some(b"new"));
        patch(&mut out, None);
        out.push(3);
        let inputs: Vec<Event> = (0..5).map(|i| Event::new(format!("{i}"))).collect();
        let a = apply(inputs.clone(), out.clone(), &mut Vec::new())
            .ok()
            .unwrap();
        let bodies: Vec<&[u8]> = a.kept.iter().map(|e| &e.body[..]).collect();
        assert_eq!(bodies, [&b"0"[..], b"1", b"new", b"3"]);
        for e in &a.kept {
            assert_eq!(e.headers.iter().collect::<Vec<_>>(), [("k", "v")]);
        }
        // A repeat cut short is still refused.
        let mut short = 3u32.to_le_bytes().to_vec();
        patch(&mut short, None);
        patch(&mut short, None);
        short.extend_from_slice(&[1, 1, 0, 0]);
        assert!(apply(inputs[..3].to_vec(), short, &mut Vec::new()).is_err());
    }

    #[test]
    fn repeated_header_sets_share_text_and_differing_ones_do_not() {
        let set = |out: &mut Vec<u8>, k: &[u8], v: &[u8]| {
            out.push(1);
            out.extend_from_slice(&1u16.to_le_bytes());
            out.push(0);
            put(out, k);
            put(out, v);
            out.push(0);
        };
        let mut out = 4u32.to_le_bytes().to_vec();
        set(&mut out, b"env", b"prod");
        set(&mut out, b"env", b"prod");
        set(&mut out, b"env", b"dev");
        set(&mut out, b"zone", b"dev");
        let want = [
            vec![("env", "prod")],
            vec![("env", "prod")],
            vec![("env", "dev")],
            vec![("env", "old"), ("zone", "dev")],
        ];
        // Each event with a map of its own, then all four sharing one (a file's lines): the
        // shared result of one change must not reach an event given another.
        let own: Vec<Event> = (0..4)
            .map(|i| Event::new(format!("{i}")).with_header("env", "old"))
            .collect();
        let one = Event::new("x").with_header("env", "old").headers;
        let shared: Vec<Event> = (0..4)
            .map(|i| Event {
                headers: one.clone(),
                body: format!("{i}").into(),
            })
            .collect();
        for inputs in [own, shared] {
            let a = apply(inputs, out.clone(), &mut Vec::new()).ok().unwrap();
            let got: Vec<Vec<(&str, &str)>> =
                a.kept.iter().map(|e| e.headers.iter().collect()).collect();
            assert_eq!(got, want);
        }
        assert_eq!(
            one.iter().collect::<Vec<_>>(),
            [("env", "old")],
            "untouched"
        );
    }
}
