//! `route`: a routing selector choosing channels by a value in each event.
//!
//! ```yaml
//! sources:
//!   web:
//!     channels: [clicks, orders, audit, archive, other]
//!     selector:
//!       plugin: route
//! plugins:
//!   route:
//!     path: route.wasm
//!     config:
//!       field: /type              # a JSON pointer into the body, or instead:
//!       # header: kind            # a header name
//!       mapping:                  # value → required channels
//!         click: [clicks]
//!         order: [orders, audit]
//!       optional:                 # value → optional channels (failures counted, ignored)
//!         order: [archive]
//!       default: [other]          # for values with no `mapping` entry (and missing values)
//! ```
//!
//! The value is the header's, or the body field's: a string as it is, another value as its
//! compact JSON text (so `mapping: { "1": [...] }` matches `{"type": 1}`, and `"true"`
//! matches `true`). A body that is not JSON or lacks the field has no value and takes
//! `default`. `optional` channels are added whether or not the value has a `mapping` entry.
//! With no `default`, an unmatched event gets an empty route, which the host dead-letters.
//!
//! Channel names are resolved against the source's channel list once, at `init`: an unknown
//! name refuses the plugin, naming it. Events that took `default` are counted in the plugin
//! counter `defaulted`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::OnceLock,
};

use serde::Deserialize;
use serde_json::Value;
use sluice_guest::{Error, Event, Route};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// JSON pointer into the body whose value picks the route.
    #[serde(default)]
    pub field: Option<String>,
    /// Header whose value picks the route.
    #[serde(default)]
    pub header: Option<String>,
    /// Value → required channel names.
    #[serde(default)]
    pub mapping: BTreeMap<String, Vec<String>>,
    /// Value → optional channel names.
    #[serde(default)]
    pub optional: BTreeMap<String, Vec<String>>,
    /// Required channels for values with no `mapping` entry.
    #[serde(default)]
    pub default: Vec<String>,
}

#[derive(Debug)]
enum Key {
    Field(String),
    Header(String),
}

/// The configuration with channel names resolved to indices.
#[derive(Debug)]
pub struct Router {
    key: Key,
    routes: HashMap<String, Route>,
    /// `default` plus nothing optional: the route of an event with no value.
    fallback: Route,
    /// `default` plus the optional channels of values that have no `mapping` entry.
    optional_only: HashMap<String, Route>,
}

impl Router {
    pub fn new(channels: &[String], cfg: Config) -> Result<Self, Error> {
        let key = match (cfg.field, cfg.header) {
            (Some(f), None) if f.starts_with('/') => Key::Field(f),
            (Some(f), None) => {
                return Err(Error::new(format!("route: field: `{f}` is not a JSON pointer (it must start with `/`)")));
            }
            (None, Some(h)) if !h.is_empty() => Key::Header(h),
            (None, Some(_)) => return Err(Error::new("route: header: empty header name")),
            _ => return Err(Error::new("route: set exactly one of `field` (a JSON pointer) and `header`")),
        };
        let resolve = |what: &str, names: &[String]| -> Result<Vec<u32>, Error> {
            let mut out: Vec<u32> = Vec::with_capacity(names.len());
            for name in names {
                let i = channels.iter().position(|c| c == name).ok_or_else(|| {
                    Error::new(format!(
                        "route: {what}: unknown channel `{name}` (the source's channels: {})",
                        channels.join(", ")
                    ))
                })?;
                let i = u32::try_from(i).map_err(|_| Error::new("route: too many channels"))?;
                if !out.contains(&i) {
                    out.push(i);
                }
            }
            Ok(out)
        };
        let default = resolve("default", &cfg.default)?;
        let mut optional = HashMap::new();
        for (value, names) in &cfg.optional {
            optional.insert(value.clone(), resolve(&format!("optional.{value}"), names)?);
        }
        let route = |required: Vec<u32>, value: Option<&str>| {
            let optional = value
                .and_then(|v| optional.get(v))
                .map(|o| o.iter().copied().filter(|i| !required.contains(i)).collect())
                .unwrap_or_default();
            Route { required, optional }
        };
        let mut routes = HashMap::new();
        for (value, names) in &cfg.mapping {
            routes.insert(value.clone(), route(resolve(&format!("mapping.{value}"), names)?, Some(value)));
        }
        let optional_only = cfg
            .optional
            .keys()
            .filter(|v| !routes.contains_key(*v))
            .map(|v| (v.clone(), route(default.clone(), Some(v))))
            .collect();
        Ok(Router { key, routes, fallback: route(default, None), optional_only })
    }

    /// The route of one event, and whether it took `default`.
    pub fn route(&self, ev: &Event) -> (Route, bool) {
        let value = match &self.key {
            Key::Header(h) => ev.header(h).map(str::to_owned),
            Key::Field(p) => field_value(ev.body(), p),
        };
        let Some(value) = value else { return (self.fallback.clone(), true) };
        match self.routes.get(&value) {
            Some(r) => (r.clone(), false),
            None => (self.optional_only.get(&value).unwrap_or(&self.fallback).clone(), true),
        }
    }
}

/// The value at `pointer` in a JSON body: strings as they are, anything else as JSON text.
fn field_value(body: &[u8], pointer: &str) -> Option<String> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    match doc.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

static ROUTER: OnceLock<Router> = OnceLock::new();

pub fn setup(channels: Vec<String>, cfg: Config) -> Result<(), Error> {
    ROUTER.set(Router::new(&channels, cfg)?).map_err(|_| Error::new("route: init called twice"))
}

#[sluice_guest::selector(init = setup)]
pub fn route(events: &[Event]) -> Result<Vec<Route>, Error> {
    let Some(router) = ROUTER.get() else {
        return Err(Error::new("route: not initialised"));
    };
    let mut defaulted = 0;
    let routes = events
        .iter()
        .map(|ev| {
            let (r, took_default) = router.route(ev);
            defaulted += i64::from(took_default);
            r
        })
        .collect();
    if defaulted > 0 {
        sluice_guest::counter_add("defaulted", defaulted);
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> Vec<String> {
        ["clicks", "orders", "audit", "archive", "other"].map(String::from).into()
    }

    fn router(config: &str) -> Result<Router, Error> {
        Router::new(&channels(), serde_json::from_str(config).unwrap())
    }

    fn r(required: &[u32], optional: &[u32]) -> Route {
        Route { required: required.to_vec(), optional: optional.to_vec() }
    }

    const CONFIG: &str = r#"{
        "field": "/type",
        "mapping": {"click": ["clicks"], "order": ["orders", "audit", "orders"], "1": ["audit"], "true": ["archive"]},
        "optional": {"order": ["archive", "audit"], "view": ["archive"]},
        "default": ["other"]
    }"#;

    #[test]
    fn routes_by_body_field() {
        let rt = router(CONFIG).unwrap();
        let route = |body: &str| rt.route(&Event::new(body));
        assert_eq!(route(r#"{"type":"click"}"#), (r(&[0], &[]), false));
        assert_eq!(route(r#"{"type":"order"}"#), (r(&[1, 2], &[3]), false), "dedup; optional minus required");
        assert_eq!(route(r#"{"type":1}"#), (r(&[2], &[]), false), "numbers match by their JSON text");
        assert_eq!(route(r#"{"type":true}"#), (r(&[3], &[]), false));
        assert_eq!(route(r#"{"type":"view"}"#), (r(&[4], &[3]), true), "optional without mapping adds to default");
        assert_eq!(route(r#"{"type":"other"}"#), (r(&[4], &[]), true));
        assert_eq!(route(r#"{"kind":"click"}"#), (r(&[4], &[]), true), "missing field");
        assert_eq!(route("click"), (r(&[4], &[]), true), "not JSON");
    }

    #[test]
    fn routes_by_header_and_without_default() {
        let rt = router(r#"{"header": "kind", "mapping": {"click": ["clicks"]}}"#).unwrap();
        assert_eq!(rt.route(&Event::new("{}").with_header("kind", "click")).0, r(&[0], &[]));
        assert_eq!(rt.route(&Event::new(r#"{"kind":"click"}"#)).0, r(&[], &[]), "no header, no default: empty route");
        assert_eq!(rt.route(&Event::new("{}").with_header("kind", "nope")).0, r(&[], &[]));
    }

    #[test]
    fn unknown_channels_are_named_at_init() {
        let err = router(r#"{"field": "/t", "mapping": {"a": ["clicks", "clickz"]}}"#).unwrap_err();
        assert_eq!(
            err.0,
            "route: mapping.a: unknown channel `clickz` (the source's channels: clicks, orders, audit, archive, other)"
        );
        assert!(router(r#"{"field": "/t", "default": ["x"]}"#).unwrap_err().0.contains("default: unknown channel `x`"));
        assert!(
            router(r#"{"field": "/t", "optional": {"a": ["y"]}}"#)
                .unwrap_err()
                .0
                .contains("optional.a: unknown channel `y`")
        );
    }

    #[test]
    fn key_must_be_one_field_pointer_or_one_header() {
        assert!(router(r#"{"mapping": {}}"#).unwrap_err().0.contains("exactly one"));
        assert!(router(r#"{"field": "/a", "header": "b"}"#).unwrap_err().0.contains("exactly one"));
        assert!(router(r#"{"field": "type"}"#).unwrap_err().0.contains("not a JSON pointer"));
        assert!(router(r#"{"header": ""}"#).is_err());
        assert!(serde_json::from_str::<Config>(r#"{"header": "a", "defaults": []}"#).is_err(), "unknown keys");
    }

    #[test]
    fn selector_entry_point_returns_one_route_per_event() {
        assert!(route(&[Event::new("{}")]).is_err(), "not initialised yet");
        setup(channels(), serde_json::from_str(CONFIG).unwrap()).unwrap();
        let events = [Event::new(r#"{"type":"click"}"#), Event::new("x"), Event::new(r#"{"type":"order"}"#)];
        assert_eq!(route(&events).unwrap(), [r(&[0], &[]), r(&[4], &[]), r(&[1, 2], &[3])]);
        assert!(setup(channels(), Config::default()).is_err(), "a second init is refused");
    }
}
