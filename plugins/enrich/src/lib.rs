//! `enrich`: adds configured headers to every event, and optionally fields to JSON bodies.
//!
//! ```yaml
//! plugins:
//!   enrich: { path: enrich.wasm, config: { headers: { region: eu }, fields: { source: web } } }
//! ```
//! `overwrite: false` keeps existing headers/fields. A body that is not a JSON object is
//! rejected (dead-lettered) only when `fields` is set.

use std::{collections::BTreeMap, sync::OnceLock};

use serde::Deserialize;
use sluice_guest::{Error, Event, Verdict};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default = "yes")]
    pub overwrite: bool,
}

fn yes() -> bool {
    true
}

static CONFIG: OnceLock<Config> = OnceLock::new();

pub fn setup(cfg: Config) -> Result<(), Error> {
    CONFIG.set(cfg).map_err(|_| Error::new("enrich: init called twice"))
}

#[sluice_guest::interceptor(init = setup)]
pub fn enrich(mut ev: Event) -> Result<Verdict, Error> {
    let Some(cfg) = CONFIG.get() else { return Ok(Verdict::Keep(ev)) };
    for (k, v) in &cfg.headers {
        if cfg.overwrite || ev.header(k).is_none() {
            ev.set_header(k.as_str(), v.as_str());
        }
    }
    if !cfg.fields.is_empty() {
        let mut obj: serde_json::Map<String, serde_json::Value> = match ev.json() {
            Ok(o) => o,
            Err(e) => return Ok(Verdict::Reject(format!("enrich: body is not a JSON object: {e}"))),
        };
        for (k, v) in &cfg.fields {
            if cfg.overwrite || !obj.contains_key(k) {
                obj.insert(k.clone(), v.clone());
            }
        }
        ev.set_body(serde_json::to_vec(&obj)?);
    }
    Ok(Verdict::Keep(ev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{parts, run_interceptor};

    #[test]
    fn adds_headers_and_fields() {
        let _ = CONFIG.set(Config {
            headers: BTreeMap::from([("region".into(), "eu".into())]),
            fields: serde_json::from_str(r#"{"source":"web"}"#).unwrap(),
            overwrite: true,
        });
        let out = run_interceptor(enrich, &[Event::new(r#"{"a":1}"#), Event::new("nope")]).unwrap();
        let Verdict::Keep(e) = &out[0] else { panic!("{out:?}") };
        assert_eq!(parts(e), (vec![("region".into(), "eu".into())], r#"{"a":1,"source":"web"}"#.into()));
        assert!(matches!(&out[1], Verdict::Reject(r) if r.contains("not a JSON object")));
    }
}
