//! Replicating: every event to every channel (Flume's default selector).

use super::{Routed, Selector};
use crate::{dlq::DeadLetter, event::Event};

pub struct Replicating {
    /// `true` at index i when channel i is optional.
    optional: Vec<bool>,
}

impl Replicating {
    pub fn new(optional: Vec<bool>) -> Self {
        Replicating { optional }
    }
}

impl Selector for Replicating {
    fn select(&mut self, batch: Vec<Event>, out: &mut Routed, _: &mut Vec<DeadLetter>) {
        let last = self.optional.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, &optional) in self.optional.iter().enumerate() {
            // Clone for all but the last channel; the last one takes the batch itself.
            let events = if i == last {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            if optional {
                out.optional[i] = events
            } else {
                out.required[i] = events
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_to_all_channels_marking_optional_ones() {
        let mut s = Replicating::new(vec![false, true, false]);
        let mut out = Routed::new(3);
        s.select(
            vec![Event::new("a"), Event::new("b")],
            &mut out,
            &mut Vec::new(),
        );
        assert_eq!(out.required[0].len(), 2);
        assert_eq!(out.optional[1].len(), 2);
        assert!(out.required[1].is_empty());
        assert_eq!(out.required[2], out.required[0]);
    }
}
