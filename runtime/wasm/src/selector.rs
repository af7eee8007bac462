//! A Wasm `selector` plugin choosing channels per event.
//!
//! Routes are checked (one per event, indices within the channel list). If a call fails,
//! the instance is re-created and the batch is routed one event at a time, so only the
//! events the plugin fails on are dead-lettered (as unroutable, with the failure).

use std::sync::Arc;

use super::{
    CallFailure, FailureKind,
    bindings::{to_typed, types as typed},
    slot::{Bound, Live, PluginSlot},
};
use sluice_core::{
    dlq::DeadLetter,
    event::Event,
    selector::{Routed, Selector},
};

pub struct WasmSelector {
    slot: Arc<PluginSlot>,
    channels: Vec<String>,
    live: Option<Live>,
}

impl WasmSelector {
    pub fn new(slot: Arc<PluginSlot>, channels: Vec<String>) -> Result<Self, super::PluginError> {
        let live = slot.instantiate(&channels)?;
        Ok(WasmSelector {
            slot,
            channels,
            live: Some(live),
        })
    }

    /// One route per event (also used by `sluice plugin test`).
    pub fn routes(&mut self, events: &[Event]) -> Result<Vec<typed::Route>, CallFailure> {
        let slot = Arc::clone(&self.slot);
        let live = slot
            .ready(&mut self.live, &self.channels)
            .map_err(|e| CallFailure::new(FailureKind::GuestError, e.to_string()))?;
        let input: Vec<typed::Event> = events.iter().map(to_typed).collect();
        let r = slot
            .call(live, events.len(), |store, bound| match bound {
                Bound::Selector(b) => b.call_select(store, &input),
                Bound::RouteSelector(b) => b.call_select_routes(store, &input),
                _ => Err(wasmtime::Error::msg("not a selector plugin")),
            })
            .and_then(|routes| {
                let n = self.channels.len() as u32;
                let bad = routes
                    .iter()
                    .flat_map(|r| r.required.iter().chain(&r.optional))
                    .find(|&&i| i >= n);
                if routes.len() != events.len() {
                    Err(CallFailure::bad_output(format!(
                        "{} routes for {} events",
                        routes.len(),
                        events.len()
                    )))
                } else if let Some(i) = bad {
                    Err(CallFailure::bad_output(format!(
                        "channel index {i} out of range (0..{n})"
                    )))
                } else {
                    Ok(routes)
                }
            });
        match &r {
            Ok(_) => slot.record_success(),
            Err(f) => {
                if f.kind == FailureKind::BadOutput {
                    slot.record_failure(f);
                }
                self.live = None;
            }
        }
        r
    }
}

fn place(e: Event, route: &typed::Route, out: &mut Routed, unroutable: &mut Vec<DeadLetter>) {
    if route.required.is_empty() && route.optional.is_empty() {
        unroutable.push(DeadLetter {
            event: e,
            reason: "selector plugin chose no channel".into(),
        });
        return;
    }
    for &i in &route.optional {
        out.optional[i as usize].push(e.clone());
    }
    for &i in &route.required {
        out.required[i as usize].push(e.clone());
    }
}

impl Selector for WasmSelector {
    /// Routes `batch` in calls of the plugin's current size ([`crate::pacing`]).
    fn select(&mut self, batch: Vec<Event>, out: &mut Routed, unroutable: &mut Vec<DeadLetter>) {
        if batch.len() <= self.slot.call_limit().max(1) {
            return self.select_call(batch, out, unroutable);
        }
        let mut events = batch.into_iter();
        loop {
            let call: Vec<Event> = events
                .by_ref()
                .take(self.slot.call_limit().max(1))
                .collect();
            if call.is_empty() {
                return;
            }
            self.select_call(call, out, unroutable);
        }
    }
}

impl WasmSelector {
    /// Routes `batch` in one call; if it fails, one event at a time.
    fn select_call(
        &mut self,
        batch: Vec<Event>,
        out: &mut Routed,
        unroutable: &mut Vec<DeadLetter>,
    ) {
        match self.routes(&batch) {
            Ok(routes) => {
                for (e, r) in batch.into_iter().zip(&routes) {
                    place(e, r, out, unroutable);
                }
            }
            Err(_) => {
                for e in batch {
                    match self.routes(std::slice::from_ref(&e)) {
                        Ok(r) => place(e, &r[0], out, unroutable),
                        Err(f) => unroutable.push(DeadLetter {
                            reason: format!("selector plugin `{}` failed: {f}", self.slot.name),
                            event: e,
                        }),
                    }
                }
            }
        }
    }
}
