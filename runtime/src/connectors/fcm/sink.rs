//! The `fcm` sink: one FCM v1 `messages:send` request per event, `concurrency` at a time.
//!
//! The event's body is the message (a JSON object: `notification`, `data`, `android`, `apns`,
//! `webpush`, `fcm_options`); the target — `token`, `topic` or `condition` — is rendered from
//! the event's headers. `data` values that are not strings are sent as their JSON text (FCM
//! takes strings only).
//!
//! Answers, per message: success; `UNREGISTERED`, `INVALID_ARGUMENT` (any 400) and
//! `SENDER_ID_MISMATCH` → the event is dead-lettered with FCM's reason; `QUOTA_EXCEEDED`
//! (429), `UNAVAILABLE` (503), `INTERNAL`, other 5xx, and other 403/404 answers (a missing
//! permission, a wrong project: fixed by configuration, not by dropping the messages) → sent
//! again later, not before the answer's `Retry-After` (at most 5 minutes); 401 → the access
//! token is renewed and the message sent again at once (a token revoked or expired early).
//! When FCM cannot be reached at all, the batch waits without spending its attempts.

use std::{path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::{task::JoinSet, time::Instant};

use sluice_core::{
    event::{Event, template::Template},
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
    sink::{Batch, DeliveryError, Sink},
};

use super::{
    auth::{AccessToken, ServiceAccount, Tokens},
    config::FcmSinkConfig,
};

pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    plain_sink::<FcmSinkConfig>(cx)
}

/// Where messages go: the message field and its template.
struct Target {
    field: &'static str,
    template: Template,
}

impl SinkSpec for FcmSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        FcmSink::new(cx.name, self, cx.base_dir, &|n| cx.env(n))
            .map(|s| Box::new(s) as Box<dyn Sink>)
    }
}

pub struct FcmSink {
    name: String,
    client: reqwest::Client,
    tokens: Tokens,
    url: String,
    target: Target,
    validate_only: bool,
    concurrency: usize,
    not_before: Option<Instant>,
}

/// The longest `Retry-After` honoured (a larger one, or a far date, is cut to this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How FCM answered one message.
enum Answer {
    Sent,
    Refused(String),
    /// No connection could be made: the request never left.
    Unreachable(String),
    Later {
        reason: String,
        after: Option<Duration>,
    },
    /// 401: the access token is no longer good.
    Unauthenticated,
}

impl FcmSink {
    pub fn new(
        name: &str,
        cfg: &FcmSinkConfig,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let (json, from) = match (&cfg.credentials_file, &cfg.credentials_env) {
            (Some(f), None) => {
                let path = base_dir.join(f);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("credentials_file {}: {e}", path.display()))?;
                (text, format!("credentials_file {}", path.display()))
            }
            (None, Some(var)) => (
                env(var).ok_or_else(|| format!("credentials_env: ${var} is not set"))?,
                format!("credentials_env ${var}"),
            ),
            _ => return Err("name the service account key: `credentials_file` or `credentials_env` (one of them)".into()),
        };
        let account = ServiceAccount::parse(&json, &from)?;
        let project = cfg
            .project_id
            .clone()
            .or(account.project_id.clone())
            .ok_or("`project_id`: the key names no project; set it")?;
        let target = match (&cfg.token, &cfg.topic, &cfg.condition) {
            (Some(t), None, None) => ("token", t),
            (None, Some(t), None) => ("topic", t),
            (None, None, Some(t)) => ("condition", t),
            _ => return Err("name exactly one target: `token`, `topic` or `condition` (a template over headers)".into()),
        };
        let target = Target {
            field: target.0,
            template: Template::parse(target.1).map_err(|e| format!("`{}`: {e}", target.0))?,
        };
        let builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(cfg.timeout.0)
            .connect_timeout(cfg.timeout.0.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
        let client = crate::connectors::http::sink::with_tls(builder, &cfg.tls, base_dir, name)?
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let tokens = Tokens::new(account, cfg.token_url.clone(), client.clone())?;
        Ok(FcmSink {
            name: name.to_owned(),
            url: format!(
                "{}/v1/projects/{project}/messages:send",
                cfg.endpoint.trim_end_matches('/')
            ),
            client,
            tokens,
            target,
            validate_only: cfg.validate_only,
            concurrency: cfg.concurrency.max(1),
            not_before: None,
        })
    }

    /// The request body for `event`, or why it cannot be sent.
    fn message(&self, event: &Event) -> Result<Vec<u8>, String> {
        let mut message: Map<String, Value> = match serde_json::from_slice(&event.body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("the body is not a JSON object (the FCM message)".into()),
            Err(e) => return Err(format!("the body is not JSON: {e}")),
        };
        let mut to = String::new();
        self.target.template.render(event, &mut to);
        if to.is_empty() {
            return Err(format!(
                "the `{}` template renders empty",
                self.target.field
            ));
        }
        for field in ["token", "topic", "condition"] {
            message.remove(field);
        }
        message.insert(self.target.field.into(), Value::String(to));
        if let Some(Value::Object(data)) = message.get_mut("data") {
            for v in data.values_mut() {
                if !v.is_string() {
                    *v = Value::String(v.to_string());
                }
            }
        }
        let mut request = Map::new();
        request.insert("message".into(), Value::Object(message));
        if self.validate_only {
            request.insert("validate_only".into(), Value::Bool(true));
        }
        serde_json::to_vec(&request).map_err(|e| e.to_string())
    }

    /// Sends `pending` (batch index, body) with `token`, `concurrency` at a time.
    async fn send_all(
        &self,
        pending: Vec<(usize, bytes::Bytes)>,
        token: &AccessToken,
    ) -> Vec<(usize, bytes::Bytes, Answer)> {
        let mut running = JoinSet::new();
        // A task that fails (panics) still has its message retried: found by its task id.
        let mut tasks = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(pending.len());
        let mut queue = pending.into_iter();
        let bearer = token.bearer();
        loop {
            while running.len() < self.concurrency {
                let Some((i, body)) = queue.next() else { break };
                let request = self
                    .client
                    .post(&self.url)
                    .header(reqwest::header::AUTHORIZATION, &bearer)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                let task = running.spawn(async move { send(request).await });
                tasks.insert(task.id(), (i, body));
            }
            match running.join_next_with_id().await {
                Some(Ok((id, answer))) => {
                    if let Some((i, body)) = tasks.remove(&id) {
                        out.push((i, body, answer));
                    }
                }
                Some(Err(e)) => {
                    tracing::error!(sink = %self.name, error = %e, "an FCM request task failed");
                    if let Some((i, body)) = tasks.remove(&e.id()) {
                        let reason = format!("the request task failed: {e}");
                        out.push((
                            i,
                            body,
                            Answer::Later {
                                reason,
                                after: None,
                            },
                        ));
                    }
                }
                None => return out,
            }
        }
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let resp = match request.send().await {
        Ok(r) => r,
        Err(e) if crate::connectors::http::sink::unreachable(&e) => {
            return Answer::Unreachable(format!("cannot connect to FCM: {e}"));
        }
        Err(e) => {
            return Answer::Later {
                reason: format!("FCM request failed: {e}"),
                after: None,
            };
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Answer::Sent;
    }
    let after = crate::connectors::http::sink::retry_after(resp.headers());
    let body = resp.bytes().await.unwrap_or_default();
    classify(status.as_u16(), after, &body)
}

/// FCM's answer to one message: its error's `errorCode` (in `details`) decides, else the
/// HTTP status.
fn classify(status: u16, after: Option<Duration>, body: &[u8]) -> Answer {
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .unwrap_or(Value::Null);
    let code = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str())
        .or_else(|| error["status"].as_str())
        .unwrap_or("")
        .to_owned();
    let message = error["message"].as_str().unwrap_or("");
    let reason = format!("FCM answered {status} {code}: {message}");
    match (status, code.as_str()) {
        (401, _) | (_, "UNAUTHENTICATED") => Answer::Unauthenticated,
        // The message itself can never be sent.
        (_, "UNREGISTERED" | "INVALID_ARGUMENT" | "SENDER_ID_MISMATCH") | (400, _) => {
            Answer::Refused(reason)
        }
        // Quotas, outages, and what configuration fixes (permissions, a wrong project).
        _ => Answer::Later { reason, after },
    }
}

#[async_trait]
impl Sink for FcmSink {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        if let Some(t) = self.not_before.take() {
            tokio::time::sleep_until(t).await;
        }
        let mut rejected = Vec::new();
        let mut pending = Vec::with_capacity(batch.len());
        for (i, event) in batch.iter().enumerate() {
            match self.message(event) {
                Ok(body) => pending.push((i, bytes::Bytes::from(body))),
                Err(reason) => rejected.push((i, reason)),
            }
        }
        let mut retry = Vec::new();
        let mut wait: Option<Duration> = None;
        let mut last = None;
        let mut unreachable = 0usize;
        let mut reached = false;
        // A 401 renews the token and sends those messages again, once.
        for attempt in 0..2 {
            if pending.is_empty() {
                break;
            }
            let token = match self.tokens.get().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(sink = %self.name, error = %e, "no FCM access token");
                    retry.extend(pending.iter().map(|(i, _)| *i));
                    last = Some(e);
                    break;
                }
            };
            let answers = self.send_all(std::mem::take(&mut pending), &token).await;
            let mut unauthenticated = false;
            for (i, body, answer) in answers {
                if !matches!(answer, Answer::Unreachable(_)) {
                    reached = true;
                }
                match answer {
                    Answer::Sent => {}
                    Answer::Refused(reason) => rejected.push((i, reason)),
                    Answer::Unreachable(reason) => {
                        unreachable += 1;
                        last = Some(reason);
                        retry.push(i);
                    }
                    Answer::Later { reason, after } => {
                        wait = wait.max(after.map(|a| a.min(MAX_RETRY_AFTER)));
                        last = Some(reason);
                        retry.push(i);
                    }
                    Answer::Unauthenticated if attempt == 0 => {
                        unauthenticated = true;
                        pending.push((i, body));
                    }
                    Answer::Unauthenticated => {
                        last = Some("FCM refused a fresh access token (401)".into());
                        retry.push(i);
                    }
                }
            }
            if unauthenticated {
                tracing::info!(sink = %self.name, "FCM refused the access token; renewing it");
                self.tokens.invalidate();
            }
        }
        // Nothing reached FCM: an outage, which spends none of the batch's attempts.
        if unreachable > 0 && !reached && rejected.is_empty() {
            return Err(DeliveryError::Unreachable(
                last.unwrap_or_else(|| "cannot connect to FCM".into()),
            ));
        }
        if let Some(w) = wait {
            tracing::info!(sink = %self.name, retry_after = ?w, retrying = retry.len(), "FCM asked to slow down");
            if rejected.is_empty() && retry.len() == batch.len() {
                // All of it waits: the runner sleeps (and can be stopped meanwhile).
                return Err(DeliveryError::Retriable {
                    reason: last.unwrap_or_else(|| "FCM asked to slow down".into()),
                    retry_after: Some(w),
                });
            }
            self.not_before = Some(Instant::now() + w);
        }
        DeliveryError::outcome(batch.len(), rejected, retry, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_error_code() {
        let body = |status: &str, code: &str| {
            format!(
                r#"{{"error": {{"code": 1, "message": "m", "status": "{status}", "details": [{{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "{code}"}}]}}}}"#
            )
        };
        assert!(matches!(
            classify(404, None, body("NOT_FOUND", "UNREGISTERED").as_bytes()),
            Answer::Refused(r) if r.contains("UNREGISTERED")
        ));
        assert!(matches!(
            classify(
                400,
                None,
                body("INVALID_ARGUMENT", "INVALID_ARGUMENT").as_bytes()
            ),
            Answer::Refused(_)
        ));
        assert!(matches!(
            classify(429, Some(Duration::from_secs(2)), body("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED").as_bytes()),
            Answer::Later { after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(classify(503, None, b"oops"), Answer::Later { .. }));
        assert!(matches!(classify(401, None, b""), Answer::Unauthenticated));
        assert!(matches!(classify(403, None, b"{}"), Answer::Later { .. }));
        assert!(matches!(
            classify(
                403,
                None,
                body("PERMISSION_DENIED", "SENDER_ID_MISMATCH").as_bytes()
            ),
            Answer::Refused(_)
        ));
        assert!(matches!(
            classify(404, None, body("NOT_FOUND", "").as_bytes()),
            Answer::Later { .. }
        ));
    }
}
