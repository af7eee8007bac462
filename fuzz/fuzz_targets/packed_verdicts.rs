//! The host's reader of what a guest returns in the packed layout (`wit/PACKED.md`): bytes a
//! plugin controls. A malformed answer must hand the batch back whole; an accepted one holds
//! no more events than its bytes can describe (a split verdict may add events).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::event::Event;

fuzz_target!(|data: &[u8]| {
    let Some((&n, answer)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8);
    let inputs: Vec<Event> = (0..n)
        .map(|i| Event::new(format!("event {i}")).with_header("k", i.to_string()))
        .collect();
    let mut rejected = Vec::new();
    match sluice_wasm::packed::apply(inputs, answer.to_vec(), &mut rejected) {
        Ok(applied) => {
            // Every event out costs at least a header count and a body length (6 bytes).
            let most = n + answer.len() / 6;
            assert!(
                applied.kept.len() + rejected.len() <= most,
                "events from nothing"
            );
        }
        Err((back, _)) => {
            assert_eq!(back.len(), n, "a refused answer hands the batch back");
            assert!(rejected.is_empty(), "a refused answer rejects nothing");
        }
    }
});
