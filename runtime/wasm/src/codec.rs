//! A Wasm `serde` plugin used as a codec: payloads into events (sources), events into
//! payloads (sinks). A failed call re-creates the instance and is reported as an error for
//! that payload or batch only. A payload cannot be cut into smaller calls the way an
//! interceptor's batch is (an encoder's output is one document), so a call that ran out of
//! time, perhaps only because the machine was busy, is tried again on a fresh instance before
//! its events are given up as poison.

use std::sync::Arc;

use super::{
    CallFailure, FailureKind,
    bindings::{from_typed, to_typed, types as typed},
    slot::{Bound, Live, PluginSlot},
};
use sluice_core::event::{Event, codec::Codec};

/// Calls a codec gets for one payload or batch when each runs out of time.
pub const DEADLINE_ATTEMPTS: u32 = 3;

pub struct WasmCodec {
    slot: Arc<PluginSlot>,
    live: Option<Live>,
}

impl WasmCodec {
    pub fn new(slot: Arc<PluginSlot>) -> Result<Self, super::PluginError> {
        let live = slot.instantiate(&[])?;
        Ok(WasmCodec {
            slot,
            live: Some(live),
        })
    }

    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// One call, made again (up to [`DEADLINE_ATTEMPTS`] in all, each on a fresh instance)
    /// while it runs out of time.
    fn call_with_retries<R: Send>(
        &mut self,
        f: impl Fn(&mut wasmtime::Store<super::sandbox::StoreState>, &Bound) -> wasmtime::Result<R>
        + Send
        + Sync,
    ) -> Result<Result<R, CallFailure>, String> {
        let slot = Arc::clone(&self.slot);
        let mut attempt = 1;
        loop {
            let live = self.live()?;
            match slot.call(live, 0, &f) {
                Err(failure)
                    if failure.kind == FailureKind::Deadline && attempt < DEADLINE_ATTEMPTS =>
                {
                    self.live = None;
                    attempt += 1;
                }
                r => return Ok(r),
            }
        }
    }

    fn live(&mut self) -> Result<&mut Live, String> {
        self.slot
            .ready(&mut self.live, &[])
            .map_err(|e| e.to_string())
    }
}

impl Codec for WasmCodec {
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<Event>, String> {
        self.decode_with_type(payload, "text/plain")
    }

    /// Decodes one payload; the error is the reason to dead-letter it.
    fn decode_with_type(
        &mut self,
        payload: &[u8],
        content_type: &str,
    ) -> Result<Vec<Event>, String> {
        let slot = Arc::clone(&self.slot);
        let r = self.call_with_retries(|store, bound| match bound {
            Bound::Serde(b) => b.call_decode(store, payload, content_type),
            _ => Err(wasmtime::Error::msg("not a serde plugin")),
        })?;
        match r {
            Ok(Ok(events)) => {
                slot.record_success();
                Ok(events.into_iter().map(from_typed).collect())
            }
            Ok(Err(reason)) => Err(format!("codec `{}`: {reason}", slot.name)),
            Err(f) => {
                self.live = None;
                Err(format!("codec `{}` failed: {f}", slot.name))
            }
        }
    }

    /// Encodes a batch into one payload, appended to `out`.
    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), String> {
        let slot = Arc::clone(&self.slot);
        let input: Vec<typed::Event> = events.iter().map(to_typed).collect();
        let r = self.call_with_retries(|store, bound| match bound {
            Bound::Serde(b) => b.call_encode(store, &input),
            _ => Err(wasmtime::Error::msg("not a serde plugin")),
        })?;
        match r {
            Ok(Ok(bytes)) => {
                slot.record_success();
                if out.is_empty() {
                    *out = bytes;
                } else {
                    out.extend_from_slice(&bytes);
                }
                Ok(())
            }
            Ok(Err(reason)) => Err(format!("codec `{}`: {reason}", slot.name)),
            Err(f) => {
                self.live = None;
                Err(format!("codec `{}` failed: {f}", slot.name))
            }
        }
    }
}
