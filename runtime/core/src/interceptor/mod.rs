//! Interceptors: per-source chains that modify, drop or reject events in each batch.
//!
//! Interceptors work on whole batches in place. A dropped event is simply removed; a rejected
//! one moves to `rejected` with a reason and reaches the dead-letter channel; an error asks the
//! source to retry the whole batch later. Built-ins are Flume's set; Wasm plugins implement the
//! same trait.

mod body;
pub mod dedup;
mod headers;

use crate::{channel::Mark, config::BuiltinInterceptor, dlq::DeadLetter, event::Event};

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The batch cannot be processed now; the source should retry it.
    #[error("interceptor asked to retry: {0}")]
    Retry(String),
    #[error("invalid interceptor config: {0}")]
    Config(String),
}

pub trait Interceptor: Send {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        rejected: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError>;

    /// True for an interceptor with state that must be committed with the events (a
    /// de-duplication window): the processor then calls the three methods below.
    fn keeps_marks(&self) -> bool {
        false
    }

    /// Once, before the first batch: its marks (keys under `prefix`) as the channels
    /// committed them.
    fn restore(&mut self, prefix: &str, marks: Vec<Mark>) {
        let _ = (prefix, marks);
    }

    /// The marks the batch just intercepted needs written in the same commit as its puts.
    fn marks(&mut self, out: &mut Vec<Mark>) {
        let _ = out;
    }

    /// Whether that batch was committed (its marks with it) or not.
    fn settled(&mut self, committed: bool) {
        let _ = committed;
    }
}

/// Builds a built-in interceptor from its config.
pub fn build(cfg: &BuiltinInterceptor) -> Result<Box<dyn Interceptor>, InterceptError> {
    use BuiltinInterceptor as B;
    Ok(match cfg {
        B::Timestamp {
            header,
            preserve_existing,
        } => Box::new(headers::Timestamp {
            header: header.clone(),
            preserve: *preserve_existing,
        }),
        B::Host {
            header,
            preserve_existing,
        } => Box::new(headers::Static {
            key: header.clone(),
            value: gethostname::gethostname().to_string_lossy().into_owned(),
            preserve: *preserve_existing,
        }),
        B::Static {
            key,
            value,
            preserve_existing,
        } => Box::new(headers::Static {
            key: key.clone(),
            value: value.clone(),
            preserve: *preserve_existing,
        }),
        B::RemoveHeader { names, matching } => Box::new(headers::RemoveHeader {
            names: names.clone(),
            matching: matching.as_deref().map(compile_str).transpose()?,
        }),
        B::Uuid {
            header,
            preserve_existing,
        } => Box::new(headers::Uuid {
            header: header.clone(),
            preserve: *preserve_existing,
        }),
        B::RegexFilter { regex, exclude } => Box::new(body::RegexFilter {
            regex: compile(regex)?,
            exclude: *exclude,
        }),
        B::RegexExtractor { regex, headers } => {
            let regex = compile(regex)?;
            let groups = regex.captures_len() - 1;
            if groups != headers.len() {
                return Err(InterceptError::Config(format!(
                    "regex_extractor: the regex has {groups} capture groups but {} header names",
                    headers.len()
                )));
            }
            Box::new(body::RegexExtractor {
                regex,
                headers: headers.clone(),
            })
        }
        B::SearchReplace { search, replace } => Box::new(body::SearchReplace {
            search: compile(search)?,
            replace: replace.clone().into_bytes(),
        }),
        B::Dedup {
            header,
            body,
            json,
            ttl,
            max_keys,
        } => {
            let key = match (body, json) {
                (true, Some(_)) => {
                    return Err(InterceptError::Config(
                        "dedup: use one of `header`, `body: true` or `json`".into(),
                    ));
                }
                (true, None) => dedup::Key::Body,
                (false, Some(p)) => dedup::Key::Json(p.clone()),
                (false, None) => dedup::Key::Header(header.clone()),
            };
            Box::new(dedup::Dedup::new(key, ttl.0, *max_keys))
        }
    })
}

fn compile(re: &str) -> Result<regex::bytes::Regex, InterceptError> {
    regex::bytes::Regex::new(re)
        .map_err(|e| InterceptError::Config(format!("bad regex {re:?}: {e}")))
}

fn compile_str(re: &str) -> Result<regex::Regex, InterceptError> {
    regex::Regex::new(re).map_err(|e| InterceptError::Config(format!("bad regex {re:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BuiltinInterceptor as B;

    fn run(cfg: B, batch: Vec<Event>) -> (Vec<Event>, Vec<DeadLetter>) {
        let mut i = build(&cfg).unwrap();
        let mut batch = batch;
        let mut rejected = Vec::new();
        i.intercept(&mut batch, &mut rejected).unwrap();
        (batch, rejected)
    }

    fn body(e: &Event) -> &str {
        std::str::from_utf8(&e.body).unwrap()
    }

    #[test]
    fn header_interceptors() {
        let evs = vec![Event::new("a").with_header("env", "dev"), Event::new("b")];
        let (out, _) = run(
            B::Static {
                key: "env".into(),
                value: "prod".into(),
                preserve_existing: true,
            },
            evs.clone(),
        );
        assert_eq!(out[0].headers.get("env"), Some("dev"));
        assert_eq!(out[1].headers.get("env"), Some("prod"));
        let (out, _) = run(
            B::Static {
                key: "env".into(),
                value: "prod".into(),
                preserve_existing: false,
            },
            evs,
        );
        assert_eq!(out[0].headers.get("env"), Some("prod"));

        let (out, _) = run(
            B::Timestamp {
                header: "ts".into(),
                preserve_existing: false,
            },
            vec![Event::new("x")],
        );
        let ts: i64 = out[0].headers.get("ts").unwrap().parse().unwrap();
        assert!((ts - chrono::Utc::now().timestamp_millis()).abs() < 60_000);

        let (out, _) = run(
            B::Host {
                header: "host".into(),
                preserve_existing: false,
            },
            vec![Event::new("x")],
        );
        assert!(!out[0].headers.get("host").unwrap().is_empty());

        let (out, _) = run(
            B::Uuid {
                header: "id".into(),
                preserve_existing: true,
            },
            vec![Event::new("x"), Event::new("y")],
        );
        let (a, b) = (
            out[0].headers.get("id").unwrap(),
            out[1].headers.get("id").unwrap(),
        );
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);

        let e = Event::new("x")
            .with_header("a", "1")
            .with_header("secret_1", "s")
            .with_header("keep", "k");
        let (out, _) = run(
            B::RemoveHeader {
                names: vec!["a".into()],
                matching: Some("^secret_".into()),
            },
            vec![e],
        );
        assert_eq!(out[0].headers.iter().collect::<Vec<_>>(), [("keep", "k")]);
    }

    #[test]
    fn body_interceptors() {
        let evs = || {
            vec![
                Event::new("error: disk"),
                Event::new("info: ok"),
                Event::new("error: net"),
            ]
        };
        let (out, _) = run(
            B::RegexFilter {
                regex: "^error".into(),
                exclude: false,
            },
            evs(),
        );
        assert_eq!(
            out.iter().map(body).collect::<Vec<_>>(),
            ["error: disk", "error: net"]
        );
        let (out, _) = run(
            B::RegexFilter {
                regex: "^error".into(),
                exclude: true,
            },
            evs(),
        );
        assert_eq!(out.iter().map(body).collect::<Vec<_>>(), ["info: ok"]);

        let (out, _) = run(
            B::RegexExtractor {
                regex: r"^(\w+): (\w+)".into(),
                headers: vec!["level".into(), "what".into()],
            },
            evs(),
        );
        assert_eq!(out[1].headers.get("level"), Some("info"));
        assert_eq!(out[2].headers.get("what"), Some("net"));

        let (out, _) = run(
            B::SearchReplace {
                search: r"\d{4}-\d{4}".into(),
                replace: "XXXX".into(),
            },
            vec![Event::new("card 1234-5678 ok")],
        );
        assert_eq!(body(&out[0]), "card XXXX ok");
    }

    #[test]
    fn config_errors() {
        assert!(
            build(&B::RegexFilter {
                regex: "(".into(),
                exclude: false
            })
            .is_err()
        );
        let e = build(&B::RegexExtractor {
            regex: "(a)(b)".into(),
            headers: vec!["x".into()],
        });
        assert!(matches!(e, Err(InterceptError::Config(m)) if m.contains("2 capture groups")));
    }
}
