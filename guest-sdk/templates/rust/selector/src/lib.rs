//! `{{name}}`: a Sluice selector. It chooses the channels (of the source's `channels` list)
//! each event goes to: events whose `header` equals `value` to the first channel, the rest to
//! the last.
//!
//! ```yaml
//! plugins:
//!   {{name}}: { path: dist/{{name}}.wasm, config: { header: priority, value: high } }
//! sources:
//!   in: { ..., channels: [urgent, normal], selector: { type: wasm, plugin: {{name}} } }
//! ```

use std::sync::OnceLock;

use serde::Deserialize;
use sluice_guest::{Error, Event, Route};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub header: String,
    pub value: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header: "priority".into(),
            value: "high".into(),
        }
    }
}

/// The config and the index of the last channel.
static STATE: OnceLock<(Config, u32)> = OnceLock::new();

pub fn setup(channels: Vec<String>, cfg: Config) -> Result<(), Error> {
    let last = u32::try_from(channels.len()).unwrap_or(1).saturating_sub(1);
    let _ = STATE.set((cfg, last));
    Ok(())
}

/// One route per event.
#[sluice_guest::selector(init = setup)]
pub fn {{ident}}(events: &[Event]) -> Result<Vec<Route>, Error> {
    let (cfg, last) = STATE.get().ok_or_else(|| Error::new("not initialised"))?;
    Ok(events
        .iter()
        .map(|e| match e.header(&cfg.header) {
            Some(v) if v == cfg.value => Route::to([0]),
            _ => Route::to([*last]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_events_go_to_the_first_channel_and_the_rest_to_the_last() {
        setup(vec!["urgent".into(), "normal".into()], Config::default()).unwrap();
        let events = [
            Event::new(b"a".to_vec()).with_header("priority", "high"),
            Event::new(b"b".to_vec()),
        ];
        let routes = {{ident}}(&events).unwrap();
        assert_eq!(routes, vec![Route::to([0]), Route::to([1])]);
    }
}
