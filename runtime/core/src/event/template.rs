//! Flume-style path and key templates: `%{header}` plus strftime escapes such as `%Y-%m-%d`.
//!
//! A template is parsed once into parts, so rendering per event does no parsing. The time
//! comes from the `timestamp` header (epoch milliseconds) when present, else the local clock,
//! as Flume's HDFS sink does.

use chrono::{DateTime, Local, TimeZone};

use super::Event;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Header(String),
    /// A chrono strftime fragment such as `%Y` or `%H:%M`.
    Time(String),
}

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    uses_time: bool,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            match chars.next() {
                Some('{') => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    if name.is_empty() {
                        return Err(format!("empty %{{}} in template {text:?}"));
                    }
                    flush(&mut lit, &mut parts);
                    parts.push(Part::Header(name));
                }
                Some('%') => lit.push('%'),
                Some(spec) if spec.is_ascii_alphabetic() => {
                    let frag = format!("%{spec}");
                    // Validate the escape once so rendering cannot fail later.
                    if chrono::format::StrftimeItems::new(&frag)
                        .any(|i| matches!(i, chrono::format::Item::Error))
                    {
                        return Err(format!("unknown escape %{spec} in template {text:?}"));
                    }
                    flush(&mut lit, &mut parts);
                    parts.push(Part::Time(frag));
                }
                _ => {
                    return Err(format!(
                        "dangling % in template {text:?} (write %% for a percent sign)"
                    ));
                }
            }
        }
        flush(&mut lit, &mut parts);
        let uses_time = parts.iter().any(|p| matches!(p, Part::Time(_)));
        Ok(Template { parts, uses_time })
    }

    /// True when the output cannot vary between events.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Renders for `event`; a missing header renders as an empty string (as in Flume).
    pub fn render(&self, event: &Event, out: &mut String) {
        out.clear();
        let time = self.uses_time.then(|| event_time(event));
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Header(h) => out.push_str(event.headers.get(h).unwrap_or("")),
                Part::Time(f) => {
                    if let Some(t) = &time {
                        use std::fmt::Write;
                        let _ = write!(out, "{}", t.format(f));
                    }
                }
            }
        }
    }
}

fn flush(lit: &mut String, parts: &mut Vec<Part>) {
    if !lit.is_empty() {
        parts.push(Part::Literal(std::mem::take(lit)));
    }
}

fn event_time(event: &Event) -> DateTime<Local> {
    event
        .headers
        .get("timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .unwrap_or_else(Local::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_time_escapes() {
        let t = Template::parse("logs/%{type}/%Y-%m-%d/%%x").unwrap();
        let ts = Local
            .with_ymd_and_hms(2024, 3, 9, 10, 0, 0)
            .unwrap()
            .timestamp_millis();
        let e = Event::new("b")
            .with_header("type", "click")
            .with_header("timestamp", ts.to_string());
        let mut s = String::new();
        t.render(&e, &mut s);
        assert_eq!(s, "logs/click/2024-03-09/%x");
        t.render(
            &Event::new("b").with_header("timestamp", ts.to_string()),
            &mut s,
        );
        assert_eq!(s, "logs//2024-03-09/%x");
        assert!(!t.is_constant());
        assert!(Template::parse("plain").unwrap().is_constant());
    }

    #[test]
    fn bad_templates() {
        assert!(Template::parse("a%").is_err());
        assert!(Template::parse("%{}").is_err());
        assert!(Template::parse("%Q").is_err());
    }
}
