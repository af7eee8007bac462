//! `{{name}}`: a Sluice interceptor. It sees every event of every batch a source receives.
//!
//! As generated it drops events whose body contains `drop`, dead-letters empty ones and tags
//! the rest with a header:
//!
//! ```yaml
//! plugins:
//!   {{name}}: { path: dist/{{name}}.wasm, config: { drop: "level=DEBUG", header: processed-by, value: {{name}} } }
//! ```

use std::sync::OnceLock;

use memchr::memmem::Finder;
use serde::Deserialize;
use sluice_guest::{Error, Event, Verdict};

/// The plugin's `config:` mapping from the pipeline file; unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Events whose body contains this are dropped (nothing is dropped when empty).
    pub drop: String,
    /// The header set on every event kept, and its value.
    pub header: String,
    pub value: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            drop: "level=DEBUG".into(),
            header: "processed-by".into(),
            value: "{{name}}".into(),
        }
    }
}

/// The config, and a searcher for `drop` prepared once (a substring search per event is most
/// of this plugin's work).
struct State {
    cfg: Config,
    drop: Finder<'static>,
}

impl State {
    fn new(cfg: Config) -> State {
        let drop = Finder::new(cfg.drop.as_bytes()).into_owned();
        State { cfg, drop }
    }
}

static STATE: OnceLock<State> = OnceLock::new();

pub fn setup(cfg: Config) -> Result<(), Error> {
    println!("{{name}} ready (drop: {:?})", cfg.drop);
    let _ = STATE.set(State::new(cfg));
    Ok(())
}

/// Keep (possibly changed), drop, reject (dead-letter, with a reason) or split each event.
#[sluice_guest::interceptor(init = setup)]
pub fn {{ident}}(mut ev: Event) -> Result<Verdict, Error> {
    let state = STATE.get_or_init(|| State::new(Config::default()));
    let (cfg, body) = (&state.cfg, ev.body());
    if body.is_empty() {
        return Ok(Verdict::Reject("empty body".into()));
    }
    if !cfg.drop.is_empty() && state.drop.find(body).is_some() {
        return Ok(Verdict::Drop);
    }
    ev.set_header(&cfg.header, &cfg.value);
    Ok(Verdict::Keep(ev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_lines_are_dropped_and_the_rest_tagged() {
        let kept = {{ident}}(Event::new(b"level=INFO msg=hi".to_vec())).unwrap();
        let Verdict::Keep(ev) = kept else {
            panic!("kept: {kept:?}")
        };
        assert_eq!(ev.header("processed-by"), Some("{{name}}"));
        let dropped = {{ident}}(Event::new(b"level=DEBUG msg=hi".to_vec())).unwrap();
        assert!(matches!(dropped, Verdict::Drop), "{dropped:?}");
        let empty = {{ident}}(Event::new(Vec::new())).unwrap();
        assert!(matches!(empty, Verdict::Reject(_)), "{empty:?}");
    }
}
