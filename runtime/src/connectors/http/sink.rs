//! The `http` sink: REST / webhook delivery with reqwest (rustls, certificates verified
//! unless turned off explicitly).
//!
//! Method, URL and header values are templates over event headers. With `mode: event` each
//! event is one request whose body is encoded by `format` (`raw`: the event body as is);
//! with `mode: batch` the events of a take that render the same method, URL and headers go
//! in one request. Requests run `concurrency` at a time.
//!
//! Answers map onto the runner's classes: 2xx is delivered; connection errors, timeouts,
//! 408, 425, 429 and 5xx are retriable; anything else (3xx — redirects are not followed —
//! and other 4xx) is permanent, so those events go to the DLQ with the status and the start
//! of the response as the reason. After a 429 or 503 no further request of the batch is
//! started, and the next attempt waits out `Retry-After` (capped at `max_retry_after`).
//! A request that timed out may have been processed: delivery is at-least-once.

use std::{path::Path, time::Duration};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use tokio::{task::JoinSet, time::Instant};

use sluice_core::{
    config::Secret,
    event::{
        Event,
        codec::{Codec, CodecName, encode_into},
        template::Template,
    },
    sink::{Batch, DeliveryError, Sink},
};

use super::{
    config::{AuthConfig, AuthKind, HttpCodec, HttpSinkConfig, HttpSinkMode},
    source::auth::{HUB_SIGNATURE, hub_signature},
};

/// How the events of one request become its body.
pub enum Format {
    Builtin(HttpCodec),
    Plugin(Box<dyn Codec>),
}

/// Credentials added to every request.
enum Credentials {
    /// A fixed header (bearer, basic, API key), marked sensitive.
    Header(HeaderName, HeaderValue),
    /// A GitHub-style signature of each request body.
    Hmac(HeaderName, Secret),
}

pub struct HttpSink {
    client: reqwest::Client,
    url: Template,
    method: Template,
    headers: Vec<(HeaderName, Template)>,
    mode: HttpSinkMode,
    format: Format,
    /// `Content-Type` implied by the format, unless `headers` sets one.
    content_type: Option<HeaderValue>,
    credentials: Option<Credentials>,
    concurrency: usize,
    max_retry_after: Duration,
    /// No request before this instant (a server's `Retry-After`).
    not_before: Option<Instant>,
}

/// One request to make, for the events at `indices` of the batch.
struct Unit {
    indices: Vec<usize>,
    /// `Err` is why the request cannot be built (a permanent failure of its events).
    request: Option<Result<reqwest::RequestBuilder, String>>,
}

/// The rendered method, URL and header values of an event.
#[derive(PartialEq, Eq)]
struct Target {
    method: String,
    url: String,
    headers: Vec<String>,
}

enum Sent {
    Delivered,
    Retry {
        reason: String,
        after: Option<Duration>,
        /// The server is overloaded (429, 503): start no more requests of this batch.
        throttle: bool,
    },
    /// No connection could be made: the request never left.
    Unreachable(String),
    Reject(String),
}

impl HttpSink {
    /// Builds the client; secrets come through `env`, `tls.ca_file` is relative to `base_dir`.
    pub fn new(
        name: &str,
        cfg: &HttpSinkConfig,
        format: Format,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(cfg.timeout.0)
            .connect_timeout(cfg.timeout.0.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(cfg.concurrency)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
        b = with_tls(b, &cfg.tls, base_dir, name)?;
        let client = b.build().map_err(|e| format!("http client: {e}"))?;

        let headers = cfg
            .headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("{k:?} is not a valid header name"))?;
                Ok((
                    name,
                    Template::parse(v).map_err(|e| format!("header {k}: {e}"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let content_type = match &format {
            Format::Builtin(HttpCodec::Lines) => Some("text/plain; charset=utf-8"),
            Format::Builtin(HttpCodec::Ndjson) => Some("application/x-ndjson"),
            Format::Builtin(HttpCodec::Json) => Some("application/json"),
            Format::Builtin(HttpCodec::Raw) | Format::Plugin(_) => None,
        }
        .map(HeaderValue::from_static);
        let credentials = cfg.auth.as_ref().map(|a| credentials(a, env)).transpose()?;
        Ok(HttpSink {
            client,
            url: Template::parse(&cfg.url).map_err(|e| format!("url: {e}"))?,
            method: Template::parse(&cfg.method).map_err(|e| format!("method: {e}"))?,
            headers,
            mode: cfg.mode,
            format,
            content_type,
            credentials,
            concurrency: cfg.concurrency.max(1),
            max_retry_after: cfg.max_retry_after.0,
            not_before: None,
        })
    }

    fn target(&self, e: &Event) -> Target {
        let mut t = Target {
            method: String::new(),
            url: String::new(),
            headers: Vec::with_capacity(self.headers.len()),
        };
        self.method.render(e, &mut t.method);
        self.url.render(e, &mut t.url);
        for (_, tpl) in &self.headers {
            let mut v = String::new();
            tpl.render(e, &mut v);
            t.headers.push(v);
        }
        t
    }

    /// Splits the batch into requests and builds each (rendering, encoding, signing).
    fn plan(&mut self, batch: &[Event]) -> Vec<Unit> {
        let mut groups: Vec<(Target, Vec<usize>)> = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            let t = self.target(e);
            match self.mode {
                HttpSinkMode::Event => groups.push((t, vec![i])),
                HttpSinkMode::Batch => match groups.iter_mut().find(|(g, _)| *g == t) {
                    Some((_, idx)) => idx.push(i),
                    None => groups.push((t, vec![i])),
                },
            }
        }
        groups
            .into_iter()
            .map(|(target, indices)| {
                let request = if indices.len() == batch.len() {
                    self.build(&target, batch)
                } else if let [i] = indices[..] {
                    self.build(&target, std::slice::from_ref(&batch[i]))
                } else {
                    let events: Vec<Event> = indices.iter().map(|&i| batch[i].clone()).collect();
                    self.build(&target, &events)
                };
                Unit {
                    indices,
                    request: Some(request),
                }
            })
            .collect()
    }

    fn build(&mut self, t: &Target, events: &[Event]) -> Result<reqwest::RequestBuilder, String> {
        let method = Method::from_bytes(t.method.as_bytes())
            .map_err(|_| format!("invalid method {:?}", t.method))?;
        let url =
            reqwest::Url::parse(&t.url).map_err(|e| format!("invalid url {:?}: {e}", t.url))?;
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 2);
        for ((name, _), value) in self.headers.iter().zip(&t.headers) {
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name}"))?;
            headers.insert(name.clone(), v);
        }
        if !headers.contains_key(header::CONTENT_TYPE) {
            if let Some(ct) = &self.content_type {
                headers.insert(header::CONTENT_TYPE, ct.clone());
            }
        }
        let body = self.encode(events)?;
        match &self.credentials {
            Some(Credentials::Header(name, value)) => {
                headers.insert(name.clone(), value.clone());
            }
            Some(Credentials::Hmac(name, secret)) => {
                let sig = HeaderValue::from_str(&hub_signature(secret, &body))
                    .map_err(|e| format!("signature header: {e}"))?;
                headers.insert(name.clone(), sig);
            }
            None => {}
        }
        Ok(self.client.request(method, url).headers(headers).body(body))
    }

    /// The body of one request; an encoding failure is permanent for its events.
    fn encode(&mut self, events: &[Event]) -> Result<Bytes, String> {
        let codec = match &mut self.format {
            Format::Builtin(HttpCodec::Raw) => {
                return Ok(events.first().map(|e| e.body.clone()).unwrap_or_default());
            }
            Format::Builtin(HttpCodec::Lines) => CodecName::Lines,
            Format::Builtin(HttpCodec::Ndjson) => CodecName::Ndjson,
            Format::Builtin(HttpCodec::Json) => return Ok(json_array(events)),
            Format::Plugin(c) => {
                let mut out = Vec::new();
                c.encode(events, &mut out)?;
                return Ok(Bytes::from(out));
            }
        };
        let mut out = Vec::with_capacity(events.iter().map(|e| e.body.len() + 1).sum());
        for e in events {
            encode_into(codec, e, &mut out);
        }
        Ok(Bytes::from(out))
    }

    /// Folds the requests' outcomes into one delivery result.
    fn settle(
        &mut self,
        units: Vec<Unit>,
        sent: Vec<Option<Sent>>,
        total: usize,
    ) -> Result<(), DeliveryError> {
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut retriable: Vec<usize> = Vec::new();
        let mut first_reason: Option<String> = None;
        let mut after: Option<Duration> = None;
        // Whether every request that failed could not even connect.
        let mut unreachable = true;
        for (unit, s) in units.into_iter().zip(sent) {
            match s.unwrap_or_else(not_sent) {
                Sent::Delivered => {}
                Sent::Unreachable(reason) => {
                    retriable.extend(unit.indices);
                    first_reason.get_or_insert(reason);
                }
                Sent::Retry {
                    reason, after: a, ..
                } => {
                    unreachable = false;
                    retriable.extend(unit.indices);
                    first_reason.get_or_insert(reason);
                    if let Some(a) = a {
                        after = Some(after.map_or(a, |x| x.max(a)));
                    }
                }
                Sent::Reject(reason) => {
                    unreachable = false;
                    rejected.extend(unit.indices.into_iter().map(|i| (i, reason.clone())));
                }
            }
        }
        let after = after.map(|a| a.min(self.max_retry_after));
        self.not_before = after.map(|a| Instant::now() + a);
        if rejected.is_empty() && retriable.is_empty() {
            Ok(())
        } else if unreachable && retriable.len() == total {
            Err(DeliveryError::Unreachable(first_reason.unwrap_or_default()))
        } else if rejected.is_empty() && retriable.len() == total {
            Err(DeliveryError::Retriable {
                reason: first_reason.unwrap_or_default(),
                retry_after: after,
            })
        } else {
            Err(DeliveryError::Partial {
                rejected,
                retriable,
            })
        }
    }
}

fn not_sent() -> Sent {
    Sent::Retry {
        reason: "not sent: the server asked to slow down".into(),
        after: None,
        throttle: false,
    }
}

fn credentials(
    a: &AuthConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    let secret = a
        .resolve_secrets(env)?
        .into_iter()
        .next()
        .ok_or("auth: no secret configured")?;
    let sensitive = |v: String| {
        let mut v = HeaderValue::from_str(&v)
            .map_err(|_| "auth: the secret is not a valid header value".to_owned())?;
        v.set_sensitive(true);
        Ok::<_, String>(v)
    };
    let header_name = |default: &str| {
        HeaderName::from_bytes(a.header.as_deref().unwrap_or(default).as_bytes())
            .map_err(|e| format!("auth.header: {e}"))
    };
    Ok(match a.kind {
        AuthKind::Bearer => Credentials::Header(
            header::AUTHORIZATION,
            sensitive(format!("Bearer {}", secret.expose()))?,
        ),
        AuthKind::Basic => {
            let user = a.username.as_deref().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", secret.expose()));
            Credentials::Header(
                header::AUTHORIZATION,
                sensitive(format!("Basic {encoded}"))?,
            )
        }
        AuthKind::Header => Credentials::Header(
            header_name("x-api-key")?,
            sensitive(secret.expose().to_owned())?,
        ),
        AuthKind::Hmac => Credentials::Hmac(header_name(HUB_SIGNATURE)?, secret),
        AuthKind::Timestamped => {
            return Err("auth type `timestamped` is for sources".into());
        }
    })
}

/// A JSON array of the bodies: a body that is JSON is embedded as is, any other becomes a
/// JSON string.
fn json_array(events: &[Event]) -> Bytes {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.body.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&e.body).is_ok() {
            out.extend_from_slice(&e.body);
        } else {
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &String::from_utf8_lossy(&e.body));
        }
    }
    out.push(b']');
    Bytes::from(out)
}

/// An error and its causes (reqwest's own message leaves out why a connection failed, e.g.
/// an unknown certificate issuer).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn classify(status: StatusCode, after: Option<Duration>, body: &str) -> Sent {
    if status.is_success() {
        return Sent::Delivered;
    }
    let reason = if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    };
    match status.as_u16() {
        408 | 425 | 429 | 500..=599 => Sent::Retry {
            reason,
            after,
            throttle: matches!(status.as_u16(), 429 | 503),
        },
        _ => Sent::Reject(reason),
    }
}

/// `b` trusting `tls.ca_file` as well (relative to `base_dir`), or, with
/// `insecure_skip_verify`, any certificate (logged).
pub(crate) fn with_tls(
    mut b: reqwest::ClientBuilder,
    tls: &super::config::TlsClientConfig,
    base_dir: &Path,
    name: &str,
) -> Result<reqwest::ClientBuilder, String> {
    if let Some(ca) = &tls.ca_file {
        let path = base_dir.join(ca);
        let pem =
            std::fs::read(&path).map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if tls.insecure_skip_verify {
        tracing::warn!(sink = %name, "TLS certificate verification is OFF (tls.insecure_skip_verify)");
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
}

/// Whether `e` failed before reaching the server at all: the connection was refused, or the
/// host or network cannot be reached. A TLS failure is not one (the server was reached and
/// the configuration is wrong), so it still spends the batch's attempts.
pub(crate) fn unreachable(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind as K;
    if !e.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::NetworkDown
                    | K::AddrNotAvailable
            );
        }
        source = s.source();
    }
    false
}

/// Sends one request and classifies the answer. The response body is read (so the
/// connection can be reused) keeping only its start, for error reasons.
async fn send(request: reqwest::RequestBuilder) -> Sent {
    const KEEP: usize = 256;
    const READ_AT_MOST: usize = 1 << 20;
    let mut resp = match request.send().await {
        Ok(r) => r,
        Err(e) if unreachable(&e) => {
            return Sent::Unreachable(format!("cannot connect: {}", with_causes(&e)));
        }
        Err(e) => {
            return Sent::Retry {
                reason: format!("request failed: {}", with_causes(&e)),
                after: None,
                throttle: false,
            };
        }
    };
    let status = resp.status();
    let after = retry_after(resp.headers());
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Ok(Some(chunk)) = resp.chunk().await {
        total += chunk.len();
        let room = KEEP.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if total > READ_AT_MOST {
            break;
        }
    }
    classify(status, after, String::from_utf8_lossy(&kept).trim())
}

#[async_trait]
impl Sink for HttpSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if let Some(t) = self.not_before.take() {
            tokio::time::sleep_until(t).await;
        }
        let mut units = self.plan(batch);
        let mut sent: Vec<Option<Sent>> = (0..units.len()).map(|_| None).collect();
        let mut running: JoinSet<(usize, Sent)> = JoinSet::new();
        let (mut next, mut throttled) = (0, false);
        loop {
            while !throttled && next < units.len() && running.len() < self.concurrency {
                let k = next;
                next += 1;
                match units[k].request.take() {
                    Some(Ok(request)) => {
                        running.spawn(async move { (k, send(request).await) });
                    }
                    Some(Err(reason)) => sent[k] = Some(Sent::Reject(reason)),
                    None => {}
                }
            }
            match running.join_next().await {
                None => break,
                Some(Ok((k, s))) => {
                    throttled |= matches!(s, Sent::Retry { throttle: true, .. });
                    sent[k] = Some(s);
                }
                // Its events stay unsent, hence retriable.
                Some(Err(e)) => tracing::error!(error = %e, "http request task failed"),
            }
        }
        self.settle(units, sent, batch.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_delivery_classes() {
        assert!(matches!(
            classify(StatusCode::OK, None, ""),
            Sent::Delivered
        ));
        assert!(matches!(
            classify(StatusCode::NO_CONTENT, None, ""),
            Sent::Delivered
        ));
        for s in [408u16, 429, 500, 502, 503] {
            assert!(
                matches!(
                    classify(StatusCode::from_u16(s).unwrap(), None, ""),
                    Sent::Retry { .. }
                ),
                "{s}"
            );
        }
        for s in [301u16, 400, 401, 404, 422] {
            match classify(StatusCode::from_u16(s).unwrap(), None, "nope") {
                Sent::Reject(r) => {
                    assert!(r.starts_with(&format!("HTTP {s}")) && r.ends_with("nope"))
                }
                _ => panic!("{s} should be permanent"),
            }
        }
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, None, ""),
            Sent::Retry { throttle: true, .. }
        ));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = chrono::Utc::now() + chrono::TimeDelta::try_seconds(30).unwrap();
        let date = later.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(header::RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");
    }

    #[test]
    fn json_arrays_embed_json_bodies_and_quote_others() {
        let events = [
            Event::new(r#"{"a":1}"#),
            Event::new("plain \"text\""),
            Event::new("3"),
        ];
        assert_eq!(&json_array(&events)[..], br#"[{"a":1},"plain \"text\"",3]"#);
    }
}
