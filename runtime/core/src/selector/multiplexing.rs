//! Multiplexing: channels chosen by the value of one header, with a default.

use std::collections::HashMap;

use super::{Routed, Selector};
use crate::{dlq::DeadLetter, event::Event};

/// Channel indices for one header value.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub required: Vec<usize>,
    pub optional: Vec<usize>,
}

pub struct Multiplexing {
    header: String,
    mapping: HashMap<String, Targets>,
    default: Targets,
}

impl Multiplexing {
    pub fn new(header: String, mapping: HashMap<String, Targets>, default: Targets) -> Self {
        Multiplexing {
            header,
            mapping,
            default,
        }
    }
}

impl Selector for Multiplexing {
    fn select(&mut self, batch: Vec<Event>, out: &mut Routed, unroutable: &mut Vec<DeadLetter>) {
        for e in batch {
            let t = e
                .headers
                .get(&self.header)
                .and_then(|v| self.mapping.get(v))
                .unwrap_or(&self.default);
            if t.required.is_empty() && t.optional.is_empty() {
                let reason = match e.headers.get(&self.header) {
                    Some(v) => format!("no channel for {}={v:?} and no default", self.header),
                    None => format!("header {} missing and no default channel", self.header),
                };
                unroutable.push(DeadLetter { event: e, reason });
                continue;
            }
            for &i in &t.optional {
                out.optional[i].push(e.clone());
            }
            if let Some((&last, rest)) = t.required.split_last() {
                for &i in rest {
                    out.required[i].push(e.clone());
                }
                out.required[last].push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_header_with_default_and_unroutable() {
        let mapping = HashMap::from([
            (
                "click".to_string(),
                Targets {
                    required: vec![0],
                    optional: vec![2],
                },
            ),
            (
                "view".to_string(),
                Targets {
                    required: vec![0, 1],
                    optional: vec![],
                },
            ),
        ]);
        let mut s = Multiplexing::new(
            "type".into(),
            mapping,
            Targets {
                required: vec![1],
                optional: vec![],
            },
        );
        let mut out = Routed::new(3);
        let mut bad = Vec::new();
        let batch = vec![
            Event::new("1").with_header("type", "click"),
            Event::new("2").with_header("type", "view"),
            Event::new("3").with_header("type", "other"),
            Event::new("4"),
        ];
        s.select(batch, &mut out, &mut bad);
        let bodies = |v: &Vec<Event>| {
            v.iter()
                .map(|e| String::from_utf8_lossy(&e.body).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(bodies(&out.required[0]), ["1", "2"]);
        assert_eq!(bodies(&out.required[1]), ["2", "3", "4"]);
        assert_eq!(bodies(&out.optional[2]), ["1"]);
        assert!(bad.is_empty());

        let mut s = Multiplexing::new("type".into(), HashMap::new(), Targets::default());
        out.clear();
        s.select(
            vec![Event::new("5").with_header("type", "x")],
            &mut out,
            &mut bad,
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].reason.contains("no channel for type=\"x\""));
    }
}
