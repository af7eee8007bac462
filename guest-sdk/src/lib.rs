//! Write Sluice plugins in a few lines of Rust.
//!
//! A plugin is a WebAssembly component implementing one world of the `sluice:plugin` WIT
//! package. This crate hides the bindings: an attribute on a plain Rust function (or impl)
//! generates them, so plugin authors never depend on `wit-bindgen` themselves.
//!
//! ```ignore
//! use sluice_guest::{Event, Verdict, Error};
//!
//! #[sluice_guest::interceptor]
//! fn enrich(mut ev: Event) -> Result<Verdict, Error> {
//!     ev.set_header("region", "eu");
//!     Ok(Verdict::Keep(ev))
//! }
//! ```
//!
//! Forms:
//! - `#[interceptor]` on `fn(Event) -> Result<Verdict, Error>` (per event) or
//!   `#[interceptor(batch)]` on `fn(Vec<Event>) -> Result<Vec<Verdict>, Error>`;
//! - `#[serde]` on an `impl Codec for T` block;
//! - `#[selector]` on `fn(&[Event]) -> Result<Vec<Route>, Error>`;
//! - each takes `init = path` naming `fn(Config) -> Result<(), Error>` (for a selector,
//!   `fn(Vec<String>, Config)`), where `Config: serde::Deserialize` is read from the plugin's
//!   `config:` in the pipeline file.
//!
//! Functions are plain Rust, so native unit tests call them directly (see [`testing`]).
//! `println!` output goes to the agent's log.

// Guest code runs once per event: an error value built eagerly on the success path (an
// `ok_or(Error::new(..))`) once cost an allocation per field read.
#![warn(clippy::or_fun_call)]

#[cfg(test)]
mod counting_alloc;
mod event;
pub mod packed;
mod recycled;
pub mod testing;

pub use event::{Event, Route, Verdict};
pub use sluice_guest_macros::{interceptor, selector, serde};

/// A plugin error: its message reaches the agent's log, or the DLQ as a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(e.to_string())
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Self {
        Error(e.to_string())
    }
}

/// What a codec plugin implements (with `#[sluice_guest::serde]` on the impl block).
pub trait Codec {
    /// Reads the plugin's `config:` (a JSON object); the default accepts anything.
    fn init(_config: serde_json::Value) -> Result<(), Error> {
        Ok(())
    }
    /// One payload into events; an error dead-letters the whole payload.
    fn decode(payload: &[u8], content_type: &str) -> Result<Vec<Event>, Error>;
    /// A batch into one payload.
    fn encode(events: &[Event]) -> Result<Vec<u8>, Error>;
}

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes to the agent's log (to stderr when run natively).
pub fn log(level: Level, message: &str) {
    match __private::HOST.get() {
        Some(h) => (h.log)(level, message),
        None => eprintln!("[{level:?}] {message}"),
    }
}

/// Adds to the plugin counter `name` (a Prometheus counter on the agent).
pub fn counter_add(name: &str, delta: i64) {
    if let Some(h) = __private::HOST.get() {
        (h.counter_add)(name, delta)
    }
}

#[doc(hidden)]
pub mod __private {
    //! Used by the code the attribute macros generate; not a public API.
    use std::sync::OnceLock;

    pub use serde_json;
    pub use wit_bindgen;

    use super::{Error, Level};

    pub struct Host {
        pub log: fn(Level, &str),
        pub counter_add: fn(&str, i64),
    }

    pub static HOST: OnceLock<Host> = OnceLock::new();

    pub fn set_host(host: Host) {
        let _ = HOST.set(host);
    }

    /// Parses the plugin config JSON into the init function's parameter type.
    pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
        let text = if config.trim().is_empty() {
            "{}"
        } else {
            config
        };
        serde_json::from_str(text).map_err(|e| format!("invalid plugin config: {e}"))
    }

    pub fn err_string(e: Error) -> String {
        e.0
    }

    /// An event handed over whole (a codec's or selector's input).
    pub fn event(headers: Vec<(String, String)>, body: Vec<u8>) -> crate::Event {
        crate::Event::from_parts(headers, body)
    }
}
