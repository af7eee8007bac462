//! Syslog messages into events: RFC 5424 (strict) and RFC 3164 (the BSD format, which in the
//! wild is loose, so read leniently), with `format: auto` telling them apart by the version
//! digit after the priority.
//!
//! The message becomes the body (a slice of the frame, not a copy; a UTF-8 BOM cut off); the
//! rest becomes headers: `syslog.priority`, `syslog.facility` and `syslog.severity` (names,
//! as in syslog.conf), `syslog.format`, `syslog.version`, `syslog.timestamp` (as written),
//! `syslog.host`, `syslog.app`, `syslog.procid`, `syslog.msgid`, one
//! `syslog.sd.<SD-ID>.<PARAM>` per structured-data parameter, and Sluice's `timestamp` (epoch
//! milliseconds) when the time parses. A field left nil (`-`) or absent sets no header. A
//! message that is not syslog (no `<PRI>`, a broken RFC 5424 header) is refused with the
//! reason, for the dead-letter channel.

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Deserialize;

use crate::event::{Event, Headers};

/// `format:` of a syslog source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogFormat {
    /// RFC 5424 when a version follows the priority, RFC 3164 otherwise.
    #[default]
    Auto,
    Rfc5424,
    Rfc3164,
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Parses one message (a frame without its framing) into an event.
pub fn parse(frame: &Bytes, format: SyslogFormat) -> Result<Event, String> {
    let (pri, rest) = priority(frame)?;
    let mut headers = Headers::default();
    headers.insert("syslog.priority", itoa::Buffer::new().format(pri));
    headers.insert("syslog.facility", FACILITIES[usize::from(pri >> 3)]);
    headers.insert("syslog.severity", SEVERITIES[usize::from(pri & 7)]);
    let is_5424 = match format {
        SyslogFormat::Rfc5424 => true,
        SyslogFormat::Rfc3164 => false,
        SyslogFormat::Auto => {
            let b = &frame[rest..];
            let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
            (1..=2).contains(&digits) && b[0] != b'0' && b.get(digits) == Some(&b' ')
        }
    };
    let body = if is_5424 {
        headers.insert("syslog.format", "rfc5424");
        rfc5424(frame, rest, &mut headers).map_err(|e| format!("not RFC 5424 syslog: {e}"))?
    } else {
        headers.insert("syslog.format", "rfc3164");
        rfc3164(frame, rest, &mut headers, Utc::now())
    };
    Ok(Event { headers, body })
}

/// `<PRI>`: its value and where the rest starts.
fn priority(b: &[u8]) -> Result<(u8, usize), String> {
    if b.first() != Some(&b'<') {
        return Err("not syslog: a message starts with `<PRI>`".into());
    }
    let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=3).contains(&digits) || b.get(1 + digits) != Some(&b'>') {
        return Err("not syslog: `<PRI>` must be 1 to 3 digits between `<` and `>`".into());
    }
    let pri = b[1..1 + digits]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if pri > 191 || (digits > 1 && b[1] == b'0') {
        return Err(format!(
            "not syslog: priority {pri} is out of range (0 to 191)"
        ));
    }
    Ok((pri as u8, digits + 2))
}

/// A cursor over a header made of space-separated fields.
struct Fields<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    /// The next field up to a space (which is consumed); `None` at the end of the message.
    fn next(&mut self, name: &str) -> Result<&'a [u8], String> {
        let rest = &self.b[self.at..];
        if rest.is_empty() {
            return Err(format!("the message ends before {name}"));
        }
        let len = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        let field = &rest[..len];
        if field.is_empty() {
            return Err(format!("{name} is empty (two spaces at byte {})", self.at));
        }
        if let Some(bad) = field.iter().position(|c| !(33..=126).contains(c)) {
            return Err(format!(
                "{name} has a character that is not printable ASCII at byte {}",
                self.at + bad
            ));
        }
        self.at += len + usize::from(len < rest.len());
        Ok(field)
    }
}

fn text(b: &[u8]) -> &str {
    // The fields were checked to be printable ASCII.
    std::str::from_utf8(b).unwrap_or_default()
}

/// Sets `key` unless the field is the nil value.
fn field_header(headers: &mut Headers, key: &'static str, value: &[u8]) {
    if value != b"-" {
        headers.insert(key, text(value));
    }
}

/// `VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]`.
fn rfc5424(frame: &Bytes, start: usize, headers: &mut Headers) -> Result<Bytes, String> {
    let mut f = Fields {
        b: frame,
        at: start,
    };
    let version = f.next("VERSION")?;
    if version != b"1" {
        return Err(format!(
            "VERSION `{}` is not 1",
            String::from_utf8_lossy(version)
        ));
    }
    headers.insert("syslog.version", "1");
    let ts = f.next("TIMESTAMP")?;
    if ts != b"-" {
        let t = DateTime::parse_from_rfc3339(text(ts))
            .map_err(|e| format!("TIMESTAMP `{}`: {e}", String::from_utf8_lossy(ts)))?;
        headers.insert("syslog.timestamp", text(ts));
        headers.insert(
            "timestamp",
            itoa::Buffer::new().format(t.timestamp_millis()),
        );
    }
    for (name, key, max) in [
        ("HOSTNAME", "syslog.host", 255),
        ("APP-NAME", "syslog.app", 48),
        ("PROCID", "syslog.procid", 128),
        ("MSGID", "syslog.msgid", 32),
    ] {
        let v = f.next(name)?;
        if v.len() > max {
            return Err(format!("{name} is longer than {max} characters"));
        }
        field_header(headers, key, v);
    }
    let at = structured_data(frame, f.at, headers)?;
    let msg = match frame.get(at) {
        None => at,
        Some(b' ') => at + 1,
        Some(_) => return Err(format!("a space must follow STRUCTURED-DATA (byte {at})")),
    };
    let msg = if frame[msg..].starts_with(b"\xEF\xBB\xBF") {
        msg + 3
    } else {
        msg
    };
    Ok(frame.slice(msg..))
}

/// `-` or `[ID PARAM="VALUE" ...]...`; returns where it ends.
fn structured_data(b: &[u8], mut at: usize, headers: &mut Headers) -> Result<usize, String> {
    match b.get(at) {
        Some(b'-') => return Ok(at + 1),
        Some(b'[') => {}
        _ => {
            return Err(format!(
                "STRUCTURED-DATA must be `-` or `[...]` (byte {at})"
            ));
        }
    }
    while b.get(at) == Some(&b'[') {
        at += 1;
        let id = sd_name(b, &mut at, "SD-ID")?;
        loop {
            match b.get(at) {
                Some(b']') => {
                    at += 1;
                    break;
                }
                Some(b' ') => at += 1,
                _ => return Err(format!("SD element `{id}` is not closed (byte {at})")),
            }
            let param = sd_name(b, &mut at, "PARAM-NAME")?;
            if b.get(at) != Some(&b'=') || b.get(at + 1) != Some(&b'"') {
                return Err(format!(
                    "SD element `{id}` is not closed, or its PARAM `{param}` has no =\"value\" (byte {at})"
                ));
            }
            at += 2;
            let mut value = Vec::new();
            loop {
                match b.get(at) {
                    None => return Err(format!("PARAM-VALUE of `{param}` is not closed")),
                    Some(b'"') => {
                        at += 1;
                        break;
                    }
                    Some(b'\\') if matches!(b.get(at + 1), Some(b'"' | b'\\' | b']')) => {
                        value.push(b[at + 1]);
                        at += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        at += 1;
                    }
                }
            }
            let value = String::from_utf8(value)
                .map_err(|_| format!("PARAM-VALUE of `{param}` is not UTF-8"))?;
            headers.insert(format!("syslog.sd.{id}.{param}"), value);
        }
    }
    Ok(at)
}

/// An SD-ID or PARAM-NAME: printable ASCII except `=`, space, `]` and `"`, up to 32.
fn sd_name<'a>(b: &'a [u8], at: &mut usize, what: &str) -> Result<&'a str, String> {
    let rest = &b[*at..];
    let len = rest
        .iter()
        .take_while(|&&c| (33..=126).contains(&c) && !matches!(c, b'=' | b']' | b'"'))
        .count();
    if len == 0 || len > 32 {
        return Err(format!("{what} must be 1 to 32 characters (byte {})", *at));
    }
    *at += len;
    Ok(text(&rest[..len]))
}

/// `TIMESTAMP SP HOSTNAME SP TAG[PID]: MSG`, leniently: an RFC 3339 time is accepted in place
/// of `Mmm dd hh:mm:ss`; without a time the rest is all message; a missing host is noticed by
/// the tag's `:` or `[`. The classic time has no year and no zone: it is taken as UTC in the
/// year that puts it closest to now (a December message read in January is last year's).
fn rfc3164(frame: &Bytes, start: usize, headers: &mut Headers, now: DateTime<Utc>) -> Bytes {
    let b = &frame[start..];
    let (ts_len, millis) = if let Some(ms) = bsd_time(b, now) {
        (15, Some(ms))
    } else {
        let token = &b[..memchr::memchr(b' ', b).unwrap_or(b.len())];
        match std::str::from_utf8(token)
            .ok()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            Some(t) => (token.len(), Some(t.timestamp_millis())),
            None => (0, None),
        }
    };
    if ts_len == 0 || b.get(ts_len) != Some(&b' ') {
        return frame.slice(start..);
    }
    headers.insert("syslog.timestamp", &*String::from_utf8_lossy(&b[..ts_len]));
    if let Some(ms) = millis {
        headers.insert("timestamp", itoa::Buffer::new().format(ms));
    }
    let mut at = start + ts_len + 1;
    let word = |at: usize| {
        let rest = &frame[at..];
        &rest[..memchr::memchr(b' ', rest).unwrap_or(rest.len())]
    };
    let is_tag = |w: &[u8]| w.ends_with(b":") || w.contains(&b'[');
    let host = word(at);
    if !host.is_empty() && !is_tag(host) && frame.len() > at + host.len() {
        headers.insert("syslog.host", &*String::from_utf8_lossy(host));
        at += host.len() + 1;
    }
    let tag = word(at);
    if is_tag(tag) && tag.len() <= 128 {
        let tag = tag.strip_suffix(b":").unwrap_or(tag);
        let (app, pid) = match memchr::memchr(b'[', tag) {
            Some(i) if tag.ends_with(b"]") => (&tag[..i], Some(&tag[i + 1..tag.len() - 1])),
            _ => (tag, None),
        };
        if !app.is_empty() {
            headers.insert("syslog.app", &*String::from_utf8_lossy(app));
        }
        if let Some(pid) = pid.filter(|p| !p.is_empty()) {
            headers.insert("syslog.procid", &*String::from_utf8_lossy(pid));
        }
        at += word(at).len();
        if frame.get(at) == Some(&b' ') {
            at += 1;
        }
    }
    frame.slice(at..)
}

/// `Mmm dd hh:mm:ss` (day space- or zero-padded) as epoch milliseconds.
fn bsd_time(b: &[u8], now: DateTime<Utc>) -> Option<i64> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let t = b.get(..15)?;
    let month = MONTHS.iter().position(|m| *m == &t[..3])? as u32 + 1;
    let num = |s: &[u8]| -> Option<u32> {
        let s = std::str::from_utf8(s).ok()?.trim_start();
        s.parse().ok()
    };
    if t[3] != b' ' || t[6] != b' ' || t[9] != b':' || t[12] != b':' {
        return None;
    }
    let (day, h, m, s) = (
        num(&t[4..6])?,
        num(&t[7..9])?,
        num(&t[10..12])?,
        num(&t[13..15])?,
    );
    let at = |year: i32| {
        NaiveDate::from_ymd_opt(year, month, day)
            .and_then(|d| d.and_hms_opt(h, m, s))
            .map(|dt| Utc.from_utc_datetime(&dt))
    };
    let this_year = at(now.year());
    let best = [at(now.year() - 1), this_year, at(now.year() + 1)]
        .into_iter()
        .flatten()
        .min_by_key(|t| (*t - now).num_seconds().abs())?;
    Some(best.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str, format: SyslogFormat) -> Event {
        parse(&Bytes::copy_from_slice(s.as_bytes()), format).unwrap()
    }

    fn h<'a>(e: &'a Event, k: &str) -> Option<&'a str> {
        e.headers.get(k)
    }

    #[test]
    fn rfc5424_with_structured_data_and_bom() {
        let e = parsed(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 \
             [exampleSDID@32473 iut=\"3\" eventSource=\"Appli\\\"cation\"][x@1 a=\"b\\]\"] \u{feff}An app event",
            SyslogFormat::Auto,
        );
        assert_eq!(e.body, "An app event");
        assert_eq!(h(&e, "syslog.format"), Some("rfc5424"));
        assert_eq!(h(&e, "syslog.priority"), Some("165"));
        assert_eq!(h(&e, "syslog.facility"), Some("local4"));
        assert_eq!(h(&e, "syslog.severity"), Some("notice"));
        assert_eq!(h(&e, "syslog.host"), Some("mymachine.example.com"));
        assert_eq!(h(&e, "syslog.app"), Some("evntslog"));
        assert_eq!(h(&e, "syslog.procid"), None);
        assert_eq!(h(&e, "syslog.msgid"), Some("ID47"));
        assert_eq!(h(&e, "syslog.sd.exampleSDID@32473.iut"), Some("3"));
        assert_eq!(
            h(&e, "syslog.sd.exampleSDID@32473.eventSource"),
            Some("Appli\"cation")
        );
        assert_eq!(h(&e, "syslog.sd.x@1.a"), Some("b]"));
        assert_eq!(h(&e, "timestamp"), Some("1065910455003"));
        assert_eq!(h(&e, "syslog.timestamp"), Some("2003-10-11T22:14:15.003Z"));
    }

    #[test]
    fn rfc5424_nil_fields_and_no_message() {
        let e = parsed("<13>1 - - - - - -", SyslogFormat::Rfc5424);
        assert_eq!(e.body, "");
        assert_eq!(h(&e, "syslog.host"), None);
        assert_eq!(h(&e, "timestamp"), None);
        assert_eq!(h(&e, "syslog.severity"), Some("notice"));
        assert_eq!(h(&e, "syslog.facility"), Some("user"));
    }

    #[test]
    fn rfc5424_refusals_say_why() {
        let bad = |s: &str| parse(&Bytes::copy_from_slice(s.as_bytes()), SyslogFormat::Auto);
        let e = bad("<13>1 yesterday host app - - - msg").unwrap_err();
        assert!(e.contains("TIMESTAMP"), "{e}");
        let e = bad("<13>1 - host app - - [unclosed a=\"b\" msg").unwrap_err();
        assert!(e.contains("not closed"), "{e}");
        let e = bad("<13>1 - host app - -").unwrap_err();
        assert!(e.contains("STRUCTURED-DATA"), "{e}");
        let e = bad("no priority here").unwrap_err();
        assert!(e.contains("<PRI>"), "{e}");
        let e = bad("<192>Dec  7 10:00:00 host app: x").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = parse(&Bytes::from_static(b"<13>Dec  7 x"), SyslogFormat::Rfc5424).unwrap_err();
        assert!(e.contains("VERSION"), "{e}");
    }

    #[test]
    fn rfc3164_as_logger_and_daemons_write_it() {
        let e = parsed(
            "<30>Dec  7 05:30:01 web-1 nginx[1234]: GET / 200",
            SyslogFormat::Auto,
        );
        assert_eq!(e.body, "GET / 200");
        assert_eq!(h(&e, "syslog.format"), Some("rfc3164"));
        assert_eq!(h(&e, "syslog.facility"), Some("daemon"));
        assert_eq!(h(&e, "syslog.severity"), Some("info"));
        assert_eq!(h(&e, "syslog.host"), Some("web-1"));
        assert_eq!(h(&e, "syslog.app"), Some("nginx"));
        assert_eq!(h(&e, "syslog.procid"), Some("1234"));
        assert_eq!(h(&e, "syslog.timestamp"), Some("Dec  7 05:30:01"));
        assert!(h(&e, "timestamp").is_some());

        // No host (a local socket's message), RFC 3339 time (rsyslog's forward format).
        let e = parsed("<13>Dec 17 05:30:01 root: hello", SyslogFormat::Rfc3164);
        assert_eq!(
            (h(&e, "syslog.host"), h(&e, "syslog.app")),
            (None, Some("root"))
        );
        assert_eq!(e.body, "hello");
        let e = parsed(
            "<13>2026-12-07T05:30:01.5+01:00 h1 cron: job done",
            SyslogFormat::Auto,
        );
        assert_eq!(h(&e, "syslog.host"), Some("h1"));
        assert_eq!(h(&e, "timestamp"), Some("1796617801500"));
        assert_eq!(e.body, "job done");

        // No time: all of it is the message.
        let e = parsed("<13>just text", SyslogFormat::Auto);
        assert_eq!(e.body, "just text");
        assert_eq!(h(&e, "syslog.host"), None);
    }

    #[test]
    fn bsd_time_takes_the_year_closest_to_now() {
        let now = Utc.with_ymd_and_hms(2027, 1, 2, 0, 0, 0).unwrap();
        let ms = bsd_time(b"Dec 31 23:00:00", now).unwrap();
        assert_eq!(
            ms,
            Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0)
                .unwrap()
                .timestamp_millis()
        );
        let ms = bsd_time(b"Jan  2 01:00:00", now).unwrap();
        assert_eq!(
            ms,
            Utc.with_ymd_and_hms(2027, 1, 2, 1, 0, 0)
                .unwrap()
                .timestamp_millis()
        );
        assert_eq!(bsd_time(b"Foo  2 01:00:00", now), None);
    }
}
