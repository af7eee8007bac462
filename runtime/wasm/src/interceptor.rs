//! A Wasm plugin in a source's interceptor chain.
//!
//! Each chain owns its instance. Before each call it checks the slot's version and
//! re-instantiates after a swap (or when the instance is due for recycling), so a call is
//! always handled by exactly one version (the calls of one batch may straddle a swap). A batch
//! is cut into calls of the size the slot has learnt for the plugin ([`crate::pacing`]). When a
//! call fails the instance is dropped; after a deadline its events run again in smaller calls,
//! after any other failure (trap, memory limit, malformed answer) they are bisected: halves that
//! succeed continue, and the event(s) that fail on their own go to the DLQ with the failure,
//! plugin name and digest. A per-batch failure budget bounds the calls a hopeless batch costs.

use std::sync::Arc;

use super::{
    CallFailure, FailureKind,
    bindings::{from_typed, to_typed, types as typed},
    packed,
    slot::{Bound, Live, PluginSlot},
};
use sluice_core::{
    dlq::DeadLetter,
    event::Event,
    interceptor::{InterceptError, Interceptor},
};

pub struct WasmInterceptor {
    slot: Arc<PluginSlot>,
    live: Option<Live>,
    buf: Vec<u8>,
}

impl WasmInterceptor {
    pub fn new(slot: Arc<PluginSlot>) -> Result<Self, super::PluginError> {
        let live = slot.instantiate(&[])?;
        Ok(WasmInterceptor {
            slot,
            live: Some(live),
            buf: Vec::new(),
        })
    }

    /// Whether the next call runs on the async worker instead of stepping off it (see
    /// [`crate::offload`]).
    pub fn next_call_inline(&self) -> bool {
        self.live.as_ref().is_some_and(Live::runs_inline)
    }

    /// The live instance of the current version (re-created after a swap, a failure or when
    /// due for recycling).
    fn live(&mut self) -> Result<&mut Live, InterceptError> {
        let slot = &self.slot;
        slot.ready(&mut self.live, &[])
            .map_err(|e| InterceptError::Retry(format!("plugin `{}` cannot start: {e}", slot.name)))
    }

    /// One call over `events`; on failure the instance is discarded and the events handed
    /// back with the failure and the digest of the version that failed.
    #[allow(clippy::type_complexity)]
    fn call(
        &mut self,
        events: Vec<Event>,
        rejected: &mut Vec<DeadLetter>,
    ) -> Result<Result<packed::Applied, (Vec<Event>, CallFailure, String)>, InterceptError> {
        let slot = Arc::clone(&self.slot);
        let live = self.live()?;
        let digest = live.digest.clone();
        let n = events.len();
        let outcome = match live.bound {
            Bound::Packed(_) => {
                packed::encode_batch(&events, &mut self.buf);
                let buf = &self.buf;
                let live = self
                    .live
                    .as_mut()
                    .ok_or_else(|| InterceptError::Retry("plugin instance missing".into()))?;
                let answer = slot
                    .call(live, n, |store, bound| match bound {
                        Bound::Packed(b) => b.call_intercept_packed(store, buf),
                        _ => unreachable_world(),
                    })
                    .and_then(|r| {
                        r.map_err(|message| {
                            let f = CallFailure::new(FailureKind::GuestError, message);
                            slot.record_failure(&f);
                            f
                        })
                    });
                match answer {
                    Ok(out) => packed::apply(events, out, rejected).map_err(|(events, f)| {
                        slot.record_failure(&f);
                        (events, f)
                    }),
                    Err(f) => Err((events, f)),
                }
            }
            Bound::Typed(_) => {
                let input: Vec<typed::Event> = events.iter().map(to_typed).collect();
                let answer = slot.call(live, n, |store, bound| match bound {
                    Bound::Typed(b) => b.call_intercept(store, &input),
                    _ => unreachable_world(),
                });
                match answer.and_then(|v| {
                    apply_typed(&events, v, rejected).inspect_err(|f| slot.record_failure(f))
                }) {
                    Ok(applied) => Ok(applied),
                    Err(f) => Err((events, f)),
                }
            }
            Bound::Serde(_) | Bound::Selector(_) | Bound::RouteSelector(_) => {
                return Err(InterceptError::Retry(format!(
                    "plugin `{}` is not an interceptor",
                    slot.name
                )));
            }
        };
        Ok(match outcome {
            Ok(applied) => {
                slot.record_success();
                Ok(applied)
            }
            Err((events, failure)) => {
                self.live = None;
                Err((events, failure, digest))
            }
        })
    }

    /// Runs `events` in calls of the plugin's current size; appends survivors to `out` in
    /// order.
    fn run_paced(
        &mut self,
        events: Vec<Event>,
        out: &mut Vec<Event>,
        rejected: &mut Vec<DeadLetter>,
        failures_left: &mut u32,
    ) -> Result<(), InterceptError> {
        let limit = self.slot.call_limit().max(1);
        if events.len() <= limit {
            return self.run(events, out, rejected, failures_left);
        }
        let mut events = events.into_iter();
        loop {
            if *failures_left == 0 {
                // The budget is spent: the rest goes in one last call (dead-lettered together
                // if that fails too), not in many more calls that may each take a deadline.
                let rest: Vec<Event> = events.collect();
                return self.run(rest, out, rejected, failures_left);
            }
            // Re-read: a slow call lowers the size for the rest of this batch too.
            let limit = self.slot.call_limit().max(1);
            let call: Vec<Event> = events.by_ref().take(limit).collect();
            if call.is_empty() {
                return Ok(());
            }
            self.run(call, out, rejected, failures_left)?;
        }
    }

    /// Runs `events` in one call; after a failure, runs them again in smaller calls (a
    /// deadline: the slot has lowered the size) or bisects them (anything else).
    fn run(
        &mut self,
        events: Vec<Event>,
        out: &mut Vec<Event>,
        rejected: &mut Vec<DeadLetter>,
        failures_left: &mut u32,
    ) -> Result<(), InterceptError> {
        if events.is_empty() {
            return Ok(());
        }
        match self.call(events, rejected)? {
            Ok(applied) => {
                if let Some(reason) = applied.retry {
                    return Err(InterceptError::Retry(format!(
                        "plugin `{}`: {reason}",
                        self.slot.name
                    )));
                }
                // A batch in one call (the usual case) hands over its survivors uncopied.
                if out.is_empty() {
                    *out = applied.kept;
                } else {
                    out.extend(applied.kept);
                }
                Ok(())
            }
            Err((mut events, failure, digest)) => {
                let spent = *failures_left == 0;
                // A single event that runs out of time spends the budget too: with calls sized
                // down to one event, a plugin hung on every event would otherwise pay a
                // deadline per event of every batch.
                if events.len() == 1 && failure.kind == FailureKind::Deadline {
                    *failures_left = failures_left.saturating_sub(1);
                }
                if events.len() == 1 || spent {
                    let why = if spent {
                        " (failure budget for this batch spent)"
                    } else {
                        ""
                    };
                    let reason = format!(
                        "plugin `{}` ({digest}) failed: {failure}{why}",
                        self.slot.name
                    );
                    rejected.extend(events.into_iter().map(|event| DeadLetter {
                        event,
                        reason: reason.clone(),
                    }));
                    return Ok(());
                }
                *failures_left -= 1;
                if failure.kind == FailureKind::Deadline {
                    return self.run_paced(events, out, rejected, failures_left);
                }
                self.slot.record_bisection(&digest, events.len(), &failure);
                let second = events.split_off(events.len() / 2);
                self.run(events, out, rejected, failures_left)?;
                self.run(second, out, rejected, failures_left)
            }
        }
    }
}

fn unreachable_world<T>() -> wasmtime::Result<T> {
    Err(wasmtime::Error::msg("instance bound to another world"))
}

impl Interceptor for WasmInterceptor {
    fn intercept(
        &mut self,
        batch: &mut Vec<Event>,
        rejected: &mut Vec<DeadLetter>,
    ) -> Result<(), InterceptError> {
        let events = std::mem::take(batch);
        // Bisection finds k poison events in about 2·k·log2(n) calls; past this budget the
        // rest of a hopeless batch is dead-lettered instead of paying a deadline per call.
        let mut failures_left = 2 * (usize::BITS - events.len().leading_zeros()) + 8;
        let mut out = Vec::new();
        self.run_paced(events, &mut out, rejected, &mut failures_left)?;
        *batch = out;
        Ok(())
    }
}

fn apply_typed(
    inputs: &[Event],
    verdicts: Vec<typed::Verdict>,
    rejected: &mut Vec<DeadLetter>,
) -> Result<packed::Applied, CallFailure> {
    if verdicts.len() != inputs.len() {
        return Err(CallFailure::bad_output(format!(
            "{} verdicts for {} events",
            verdicts.len(),
            inputs.len()
        )));
    }
    let mut kept = Vec::with_capacity(inputs.len());
    let mut retry = None;
    for (input, v) in inputs.iter().zip(verdicts) {
        match v {
            typed::Verdict::Keep(e) => kept.push(from_typed(e)),
            typed::Verdict::Split(es) => kept.extend(es.into_iter().map(from_typed)),
            typed::Verdict::Drop => {}
            typed::Verdict::Reject(reason) => rejected.push(DeadLetter {
                event: input.clone(),
                reason,
            }),
            typed::Verdict::Retry(reason) => {
                retry.get_or_insert(reason);
            }
        }
    }
    Ok(packed::Applied { kept, retry })
}
