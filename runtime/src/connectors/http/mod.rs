//! HTTP: the webhook source (`http` sources, answered only after the put committed) and the
//! REST sink (`http` sinks, retrying 5xx/429 and honouring `Retry-After`). Behind the `http`
//! feature.

pub mod config;
pub mod sink;
pub mod source;

use std::sync::Arc;

use sluice_core::{
    registry::{BuildCx, ReadCx, SinkSpec, SourceSpec},
    sink::Sink,
    source::Source,
};
use tokio::sync::Mutex;

use self::{
    config::{HTTP_CODECS, HttpCodecRef, HttpSinkConfig, HttpSourceConfig},
    sink::{Format, HttpSink},
    source::{HttpSource, decode::Decoder},
};

/// `type: http` sources.
pub(crate) fn read_source(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    cx.codec_field("codec", HTTP_CODECS);
    cx.read_checked(config::check_source)
        .map(|c: HttpSourceConfig| Arc::new(c) as Arc<dyn SourceSpec>)
}

/// `type: http` sinks.
pub(crate) fn read_sink(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    cx.codec_field("format", HTTP_CODECS);
    cx.read_checked(config::check_sink)
        .map(|c: HttpSinkConfig| Arc::new(c) as Arc<dyn SinkSpec>)
}

impl SourceSpec for HttpSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let decoder = match &self.codec {
            HttpCodecRef::Builtin(codec) => Decoder::Builtin(*codec),
            HttpCodecRef::Plugin(p) => Decoder::Plugin(Box::new(Mutex::new(cx.plugin_codec(p)?))),
        };
        let env = |name: &str| cx.env(name);
        Ok(Box::new(HttpSource::new(
            self,
            cx.batch_size,
            decoder,
            cx.base_dir,
            &env,
        )?))
    }

    fn upstream(&self) -> sluice_core::guarantee::Upstream {
        sluice_core::guarantee::Upstream::AckAfterCommit(
            "a request is answered only after its events are committed (clients retry otherwise)",
        )
    }
}

impl SinkSpec for HttpSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let format = match &self.format {
            HttpCodecRef::Builtin(f) => Format::Builtin(*f),
            HttpCodecRef::Plugin(p) => Format::Plugin(cx.plugin_codec(p)?),
        };
        let env = |name: &str| cx.env(name);
        Ok(Box::new(HttpSink::new(
            cx.name,
            self,
            format,
            cx.base_dir,
            &env,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use std::{any::Any, path::Path};

    use sluice_core::config::{ConfigErrors, Pipeline, load_str};

    use super::config::*;

    fn registry() -> sluice_core::registry::Registry {
        let mut r = sluice_core::registry::Registry::builtin();
        r.sources.add("http", super::read_source);
        r.sinks.add("http", super::read_sink);
        r
    }

    fn errors(text: &str) -> Vec<(usize, usize, Option<String>, String)> {
        load_str(Path::new("p.yaml"), text, &|_| None, &registry())
            .expect_err("config should be rejected")
            .0
            .into_iter()
            .map(|e| (e.pos.line, e.pos.col, e.component, e.message))
            .collect()
    }

    #[allow(dead_code)]
    fn load(text: &str) -> Result<Pipeline, ConfigErrors> {
        load_str(Path::new("p.yaml"), text, &|_| None, &registry())
    }

    #[test]
    fn http_source_and_sink_load_and_secrets_never_show() {
        let text = "\
channels:
  mem: { type: memory }
sources:
  hook:
    type: http
    listen: 8080
    paths: [/a, /b]
    codec: json
    auth: { type: hmac, secret: \"${HOOK}\" }
    channels: [mem]
sinks:
  out:
    type: http
    channel: mem
    url: 'https://example.com/%{tenant}'
    mode: batch
    format: ndjson
    auth: { type: bearer, secret_env: TOKEN }
";
        let env = |n: &str| (n == "HOOK").then(|| "s3cret-value".to_owned());
        let p = load_str(Path::new("p.yaml"), text, &env, &registry()).unwrap();
        let any: &dyn Any = &*p.sources[0].spec.spec;
        let h = any
            .downcast_ref::<HttpSourceConfig>()
            .expect("an http source");
        assert_eq!(
            h.listen.0,
            "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap(),
            "a bare port listens on 127.0.0.1"
        );
        assert_eq!(h.codec, HttpCodecRef::Builtin(HttpCodec::Json));
        assert_eq!((h.max_body.0, h.busy_status), (1 << 20, 503));
        let any: &dyn Any = &*p.sinks[0].spec.spec;
        let s = any.downcast_ref::<HttpSinkConfig>().expect("an http sink");
        assert_eq!(s.mode, HttpSinkMode::Batch);
        let debug = format!("{p:?}");
        assert!(!debug.contains("s3cret-value"), "{debug}");
        assert!(debug.contains("***"));
    }

    #[test]
    fn http_settings_are_checked_where_they_are_written() {
        let text = "\
channels:
  mem: { type: memory }
sources:
  hook:
    type: http
    listen: nowhere
    channels: [mem]
  hook2:
    type: http
    listen: 9000
    paths: [/a, nope, /a]
    busy_status: 418
    auth: { type: basic, secret: x }
    channels: [mem]
sinks:
  out:
    type: http
    channel: mem
    url: 'not a url'
    mode: batch
    auth: { type: timestamped, secret: x }
";
        let errs = errors(text);
        let has = |line: usize, frag: &str| errs.iter().any(|e| e.0 == line && e.3.contains(frag));
        assert!(has(6, "invalid listen address"), "{errs:#?}");
        assert!(has(11, "path \"nope\" must start with `/`"), "{errs:#?}");
        assert!(has(11, "path \"/a\" is listed twice"), "{errs:#?}");
        assert!(has(12, "busy_status must be 429 or 503"), "{errs:#?}");
        assert!(has(13, "basic auth needs `username`"), "{errs:#?}");
        assert!(has(19, "invalid url"), "{errs:#?}");
        assert!(
            has(21, "auth type `timestamped` is not available on a sink"),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.3.contains("with `mode: batch`")),
            "{errs:#?}"
        );
    }
}
