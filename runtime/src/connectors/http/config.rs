//! Settings of the `http` source (webhook receiver) and `http` sink (REST / webhook delivery),
//! the secrets they use, and the checks that need more than types (each error points at the
//! offending field).
//!
//! Secrets are written inline (`secret: ...`, usually `"${NAME}"`) or named by environment
//! variable (`secret_env: NAME`, read when the pipeline is built, so `sluice validate` reports
//! an unset one). Either way they live in [`Secret`], whose `Debug` prints `***`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Deserializer};

use sluice_core::{
    config::{
        Node, Pos, Secret,
        node::NodeKind,
        units::{ByteSize, HumanDuration, ListenAddr},
    },
    event::template::Template,
};

/// How request bodies become events (source) and events become request bodies (sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCodec {
    /// The whole body is one event (source); the event body is the request body (sink).
    Raw,
    /// One event per non-empty line.
    Lines,
    /// One JSON object per line; the `{"headers":..,"body":..}` envelope round-trips an event.
    Ndjson,
    /// A JSON array, one event per element (a single JSON value is one event).
    Json,
}

/// A built-in body codec or a `serde` plugin by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpCodecRef {
    Builtin(HttpCodec),
    Plugin(String),
}

/// Names of the built-in body codecs (anything else names a plugin).
pub const HTTP_CODECS: &[&str] = &["raw", "lines", "ndjson", "json"];

impl Default for HttpCodecRef {
    fn default() -> Self {
        HttpCodecRef::Builtin(HttpCodec::Raw)
    }
}

impl<'de> Deserialize<'de> for HttpCodecRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "raw" => HttpCodecRef::Builtin(HttpCodec::Raw),
            "lines" => HttpCodecRef::Builtin(HttpCodec::Lines),
            "ndjson" => HttpCodecRef::Builtin(HttpCodec::Ndjson),
            "json" => HttpCodecRef::Builtin(HttpCodec::Json),
            _ => HttpCodecRef::Plugin(s),
        })
    }
}

// ---------------------------------------------------------------- auth and TLS

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// `Authorization: Bearer <token>`; several tokens may be valid at once (rotation).
    Bearer,
    /// `Authorization: Basic ...` with `username` and one of the secrets as password.
    Basic,
    /// GitHub-style `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    Hmac,
    /// Stripe-style `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">` within `tolerance`.
    Timestamped,
    /// The secret as the value of `header` (API keys; sink only).
    Header,
}

impl AuthKind {
    fn name(self) -> &'static str {
        match self {
            AuthKind::Bearer => "bearer",
            AuthKind::Basic => "basic",
            AuthKind::Hmac => "hmac",
            AuthKind::Timestamped => "timestamped",
            AuthKind::Header => "header",
        }
    }
}

/// Authentication of a source (checking requests) or a sink (adding credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub kind: AuthKind,
    pub secret: Option<Secret>,
    pub secret_env: Option<String>,
    /// More secrets, all accepted (source only: rotation).
    #[serde(default)]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub secrets_env: Vec<String>,
    /// `basic` only.
    pub username: Option<String>,
    /// Header carrying the signature (`hmac`, `timestamped`) or the secret (`header`).
    pub header: Option<String>,
    /// `timestamped` only: how far the signed time may be from now (default 5m).
    pub tolerance: Option<HumanDuration>,
}

impl AuthConfig {
    /// Every configured secret, environment variables resolved through `env`. The error names
    /// the variable, never a value.
    pub fn resolve_secrets(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Secret>, String> {
        let mut out: Vec<Secret> = self.secret.iter().chain(&self.secrets).cloned().collect();
        for (field, name) in self
            .secret_env
            .iter()
            .map(|n| ("secret_env", n))
            .chain(self.secrets_env.iter().map(|n| ("secrets_env", n)))
        {
            match env(name) {
                Some(v) if !v.is_empty() => out.push(Secret::new(v)),
                Some(_) => {
                    return Err(format!(
                        "auth.{field}: environment variable `{name}` is empty"
                    ));
                }
                None => {
                    return Err(format!(
                        "auth.{field}: environment variable `{name}` is not set"
                    ));
                }
            }
        }
        if let Some(i) = out.iter().position(|s| s.expose().is_empty()) {
            return Err(format!("auth: secret #{} is empty", i + 1));
        }
        if out.is_empty() {
            return Err("auth: no secret configured".into());
        }
        Ok(out)
    }

    /// The tolerance of a timestamped signature.
    pub fn tolerance(&self) -> Duration {
        self.tolerance.map_or(Duration::from_secs(300), |t| t.0)
    }
}

/// A server certificate chain and its key, PEM files (relative to the pipeline file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a client verifies servers. Verification is on unless turned off explicitly.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// Extra trusted CA certificates (PEM bundle), besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (testing only; logged as a warning).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

// ---------------------------------------------------------------- source

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// `host:port`, or a port on 127.0.0.1.
    pub listen: ListenAddr,
    /// Request paths accepted (exact match).
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
    /// Request methods accepted.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// How a request body becomes events.
    #[serde(default)]
    pub codec: HttpCodecRef,
    /// Request headers copied into event headers (under their lower-case name).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameters copied into event headers.
    #[serde(default)]
    pub query: Vec<String>,
    /// Event header receiving the request path.
    pub path_header: Option<String>,
    /// Largest request body as received (compressed or not).
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Largest body after decompression (gzip, zstd).
    #[serde(default = "default_max_decoded_body")]
    pub max_decoded_body: ByteSize,
    /// Time allowed for a request's headers, and again for its body; idle keep-alive
    /// connections are closed after it too.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
    /// How long a request waits for room in a full channel before being answered busy.
    #[serde(default = "default_full_wait")]
    pub full_wait: HumanDuration,
    /// Status of a busy answer: 503 (default) or 429.
    #[serde(default = "default_busy_status")]
    pub busy_status: u16,
    /// `Retry-After` of a busy answer (whole seconds, at least 1).
    #[serde(default = "default_retry_after")]
    pub retry_after: HumanDuration,
    /// Requests handled at once; more are answered busy at once.
    #[serde(default = "default_max_requests")]
    pub max_concurrent_requests: usize,
    /// Connections held open at once; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    pub auth: Option<AuthConfig>,
    pub tls: Option<TlsServerConfig>,
}

fn default_paths() -> Vec<String> {
    vec!["/".into()]
}
fn default_methods() -> Vec<String> {
    vec!["POST".into()]
}
fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_max_decoded_body() -> ByteSize {
    ByteSize(8 << 20)
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_full_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_busy_status() -> u16 {
    503
}
fn default_retry_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_max_requests() -> usize {
    1024
}
fn default_max_connections() -> usize {
    4096
}

// ---------------------------------------------------------------- sink

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpSinkMode {
    /// One request per event.
    #[default]
    Event,
    /// One request per batch (per distinct method, URL and headers within the batch).
    Batch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// URL template (`%{header}`, strftime escapes; `%%` for a literal `%`).
    pub url: String,
    /// Method template.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers: name → value template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub mode: HttpSinkMode,
    /// How the events of one request become its body.
    #[serde(default)]
    pub format: HttpCodecRef,
    /// Whole-request timeout (connect, send, response).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Longest `Retry-After` honoured; longer ones are shortened to this.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after: HumanDuration,
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub tls: TlsClientConfig,
}

fn default_method() -> String {
    "POST".into()
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_concurrency() -> usize {
    8
}
fn default_max_retry_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

// ---------------------------------------------------------------- checks

/// Position of `key` in `node` (its value), else of the node itself.
fn at(node: &Node, key: &str) -> Pos {
    node.get(key).map_or(node.pos, |n| n.pos)
}

/// Position of item `i` of the list under `key`.
fn item_at(node: &Node, key: &str, i: usize) -> Pos {
    match node.get(key).map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items.get(i).map_or(node.pos, |n| n.pos),
        _ => at(node, key),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks an http source's settings; `node` is its mapping. Returns the problems found.
pub(super) fn check_source(cfg: &HttpSourceConfig, node: &Node) -> Vec<(Pos, String)> {
    let mut errs = Vec::new();
    let mut push = |pos: Pos, msg: String| errs.push((pos, msg));
    if cfg.paths.is_empty() {
        push(at(node, "paths"), "`paths` needs at least one path".into());
    }
    let mut seen = BTreeSet::new();
    for (i, p) in cfg.paths.iter().enumerate() {
        if !p.starts_with('/') || p.contains(['?', '#']) || p.chars().any(char::is_whitespace) {
            push(
                item_at(node, "paths", i),
                format!("path {p:?} must start with `/` and contain no query, fragment or spaces"),
            );
        } else if !seen.insert(p.as_str()) {
            push(
                item_at(node, "paths", i),
                format!("path {p:?} is listed twice"),
            );
        }
    }
    if cfg.methods.is_empty() {
        push(
            at(node, "methods"),
            "`methods` needs at least one method".into(),
        );
    }
    for (i, m) in cfg.methods.iter().enumerate() {
        if !is_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
            push(
                item_at(node, "methods", i),
                format!("{m:?} is not an HTTP method (write it in capitals, e.g. POST)"),
            );
        }
    }
    for (i, h) in cfg.headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            push(
                item_at(node, "headers", i),
                format!("{h:?} is not a valid header name"),
            );
        }
    }
    for (i, q) in cfg.query.iter().enumerate() {
        if q.is_empty() {
            push(
                item_at(node, "query", i),
                "empty query parameter name".into(),
            );
        }
    }
    if cfg.path_header.as_deref() == Some("") {
        push(
            at(node, "path_header"),
            "`path_header` must not be empty".into(),
        );
    }
    if !matches!(cfg.busy_status, 429 | 503) {
        push(
            at(node, "busy_status"),
            format!("busy_status must be 429 or 503, not {}", cfg.busy_status),
        );
    }
    for (key, v) in [
        ("max_body", cfg.max_body.0),
        ("max_decoded_body", cfg.max_decoded_body.0),
        (
            "max_concurrent_requests",
            cfg.max_concurrent_requests as u64,
        ),
        ("max_connections", cfg.max_connections as u64),
    ] {
        if v == 0 {
            push(at(node, key), format!("{key} must be at least 1"));
        }
    }
    if cfg.read_timeout.0.is_zero() {
        push(
            at(node, "read_timeout"),
            "read_timeout must be more than 0".into(),
        );
    }
    if let (Some(auth), Some(auth_node)) = (&cfg.auth, node.get("auth")) {
        check_auth(auth, auth_node, true, &mut errs);
    }
    errs
}

/// Checks an http sink's settings; `node` is its mapping. Returns the problems found.
pub(super) fn check_sink(cfg: &HttpSinkConfig, node: &Node) -> Vec<(Pos, String)> {
    let mut errs = Vec::new();
    let mut push = |pos: Pos, msg: String| errs.push((pos, msg));
    match Template::parse(&cfg.url) {
        Err(e) => push(at(node, "url"), format!("url: {e}")),
        Ok(t) if t.is_constant() => {
            if let Err(e) = reqwest::Url::parse(&cfg.url) {
                push(at(node, "url"), format!("invalid url {:?}: {e}", cfg.url));
            }
        }
        Ok(_) => {}
    }
    match Template::parse(&cfg.method) {
        Err(e) => push(at(node, "method"), format!("method: {e}")),
        Ok(t) if t.is_constant() && !is_token(&cfg.method) => {
            push(
                at(node, "method"),
                format!("{:?} is not an HTTP method", cfg.method),
            );
        }
        Ok(_) => {}
    }
    let headers = node.get("headers");
    for (name, value) in &cfg.headers {
        let pos = headers
            .and_then(|h| h.key(name))
            .map_or(at(node, "headers"), |k| k.pos);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            push(pos, format!("{name:?} is not a valid header name"));
        }
        if let Err(e) = Template::parse(value) {
            push(pos, format!("header {name}: {e}"));
        }
    }
    if cfg.mode == HttpSinkMode::Batch && cfg.format == HttpCodecRef::Builtin(HttpCodec::Raw) {
        push(
            at(node, "format"),
            "`format: raw` sends one event's body; with `mode: batch` use lines, ndjson, json or a serde plugin".into(),
        );
    }
    if cfg.concurrency == 0 {
        push(
            at(node, "concurrency"),
            "concurrency must be at least 1".into(),
        );
    }
    if cfg.timeout.0.is_zero() {
        push(at(node, "timeout"), "timeout must be more than 0".into());
    }
    if let (Some(auth), Some(auth_node)) = (&cfg.auth, node.get("auth")) {
        check_auth(auth, auth_node, false, &mut errs);
    }
    errs
}

fn check_auth(auth: &AuthConfig, node: &Node, source: bool, errs: &mut Vec<(Pos, String)>) {
    let mut push = |pos: Pos, msg: String| errs.push((pos, msg));
    let kind = auth.kind;
    let allowed: &[AuthKind] = if source {
        &[
            AuthKind::Bearer,
            AuthKind::Basic,
            AuthKind::Hmac,
            AuthKind::Timestamped,
        ]
    } else {
        &[
            AuthKind::Bearer,
            AuthKind::Basic,
            AuthKind::Hmac,
            AuthKind::Header,
        ]
    };
    if !allowed.contains(&kind) {
        let names: Vec<&str> = allowed.iter().map(|k| k.name()).collect();
        push(
            at(node, "type"),
            format!(
                "auth type `{}` is not available on {}; expected one of: {}",
                kind.name(),
                if source { "a source" } else { "a sink" },
                names.join(", ")
            ),
        );
        return;
    }
    let count = usize::from(auth.secret.is_some())
        + usize::from(auth.secret_env.is_some())
        + auth.secrets.len()
        + auth.secrets_env.len();
    if count == 0 {
        push(
            node.pos,
            "auth needs a secret: `secret_env: NAME` (or `secret:`, `secrets:`, `secrets_env:`)"
                .into(),
        );
    }
    if !source && count > 1 {
        push(
            node.pos,
            "a sink sends one secret: give `secret` or `secret_env`".into(),
        );
    }
    match (kind, &auth.username) {
        (AuthKind::Basic, None) => push(node.pos, "basic auth needs `username`".into()),
        (AuthKind::Basic, Some(u)) if u.contains(':') => push(
            at(node, "username"),
            "a basic-auth username cannot contain `:`".into(),
        ),
        (AuthKind::Basic, Some(_)) | (_, None) => {}
        (_, Some(_)) => push(
            at(node, "username"),
            "`username` is for basic auth only".into(),
        ),
    }
    match (kind, &auth.header) {
        (AuthKind::Header, None) => push(
            node.pos,
            "header auth needs `header` (e.g. X-Api-Key)".into(),
        ),
        (AuthKind::Hmac | AuthKind::Timestamped | AuthKind::Header, Some(h)) => {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                push(
                    at(node, "header"),
                    format!("{h:?} is not a valid header name"),
                );
            }
        }
        (_, Some(_)) => push(
            at(node, "header"),
            "`header` is for hmac, timestamped and header auth only".into(),
        ),
        (_, None) => {}
    }
    if auth.tolerance.is_some() && kind != AuthKind::Timestamped {
        push(
            at(node, "tolerance"),
            "`tolerance` is for timestamped auth only".into(),
        );
    }
}
