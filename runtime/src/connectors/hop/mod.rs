//! The agent-to-agent hop: `sluice` sinks send batches to `sluice` sources of other agents
//! over gRPC (the protocol is `proto/sluice/hop/v1/hop.proto`), so that edge agents can
//! forward to collector tiers with load balancing, failover, compression, TLS and no
//! duplicate after a lost answer. Behind the `hop` feature.

pub mod config;
pub mod sink;
pub mod source;
pub mod window;
pub mod wire;

use std::sync::Arc;

use sluice_core::{
    registry::{BuildCx, ReadCx, SinkSpec, SourceSpec},
    sink::Sink,
    source::Source,
};

use self::{
    config::{HopSinkConfig, HopSourceConfig},
    sink::HopSink,
    source::HopSource,
};

/// The generated protocol types, client and server.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("sluice.hop.v1");
}

/// The bearer token in the environment variable a `token_env` names.
fn token(
    env: &dyn Fn(&str) -> Option<String>,
    name: Option<&str>,
) -> Result<Option<String>, String> {
    name.map(|n| env(n).ok_or_else(|| format!("token_env: ${n} is not set")))
        .transpose()
}

/// A PEM file of a `tls` setting (relative to the pipeline file's directory), read when the
/// pipeline is built so that a missing one is a configuration error.
fn read_pem(
    base_dir: &std::path::Path,
    field: &str,
    path: &std::path::Path,
) -> Result<Vec<u8>, String> {
    let p = base_dir.join(path);
    std::fs::read(&p).map_err(|e| format!("tls.{field} {}: {e}", p.display()))
}

/// `type: sluice` sources.
pub(crate) fn read_source(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SourceSpec>> {
    cx.read_checked(config::check_source)
        .map(|c: HopSourceConfig| Arc::new(c) as Arc<dyn SourceSpec>)
}

/// `type: sluice` sinks.
pub(crate) fn read_sink(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    cx.read_checked(config::check_sink)
        .map(|c: HopSinkConfig| Arc::new(c) as Arc<dyn SinkSpec>)
}

impl SourceSpec for HopSourceConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Source>, String> {
        let env = |name: &str| cx.env(name);
        Ok(Box::new(HopSource::new(
            self,
            cx.base_dir,
            &env,
            cx.metrics.origins(cx.name),
        )?))
    }

    fn upstream(&self) -> sluice_core::guarantee::Upstream {
        sluice_core::guarantee::Upstream::AckAfterCommit(
            "a sending agent's batch is acknowledged only after it is committed",
        )
    }
}

impl SinkSpec for HopSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let env = |name: &str| cx.env(name);
        Ok(Box::new(HopSink::new(
            cx.name,
            self,
            cx.channel_id.as_deref(),
            cx.base_dir,
            &env,
            cx.metrics.endpoints(cx.name),
        )?))
    }

    fn idempotent(&self) -> Option<sluice_core::guarantee::Idempotence> {
        Some(sluice_core::guarantee::Idempotence::Positional(
            "the receiving agent drops a batch it committed before (by sender and channel position)"
                .to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::{any::Any, path::Path};

    use sluice_core::config::load_str;

    use super::config::*;

    fn registry() -> sluice_core::registry::Registry {
        let mut r = sluice_core::registry::Registry::builtin();
        r.sources.add("sluice", super::read_source);
        r.sinks.add("sluice", super::read_sink);
        r
    }

    #[test]
    fn hop_settings_load_with_defaults() {
        let text = "\
channels:
  mem: { type: memory }
sources:
  in:
    type: sluice
    listen: 7400
    channels: [mem]
sinks:
  out:
    type: sluice
    channel: mem
    endpoints: [collector:7400, '[::1]:7401', 10.0.0.5:7402]
    strategy: failover
";
        let p = load_str(Path::new("p.yaml"), text, &|_| None, &registry()).unwrap();
        let any: &dyn Any = &*p.sources[0].spec.spec;
        let s = any.downcast_ref::<HopSourceConfig>().unwrap();
        assert_eq!(s.listen.0.port(), 7400);
        assert_eq!(s.max_decoded_batch_bytes.0, 64 << 20);
        let any: &dyn Any = &*p.sinks[0].spec.spec;
        let k = any.downcast_ref::<HopSinkConfig>().unwrap();
        assert_eq!(k.strategy, Strategy::Failover);
        assert_eq!(k.compression, Compression::Zstd);
        assert_eq!(split_host_port(&k.endpoints[1]), Some(("::1", 7401)));
    }

    #[test]
    fn hop_mistakes_are_reported_where_they_are_written() {
        let text = "\
channels:
  mem: { type: memory }
sinks:
  out:
    type: sluice
    channel: mem
    endpoints: [nohost, 'a:notaport']
    compression: lz4
  out2:
    type: sluice
    channel: mem
    endpoints: []
    tls: { ca: ca.pem, cert: c.pem }
";
        let errs: Vec<(usize, String)> =
            load_str(Path::new("p.yaml"), text, &|_| None, &registry())
                .expect_err("rejected")
                .0
                .into_iter()
                .map(|e| (e.pos.line, e.message))
                .collect();
        let has = |line: usize, frag: &str| errs.iter().any(|e| e.0 == line && e.1.contains(frag));
        assert!(has(8, "lz4"), "{errs:#?}");
        assert!(has(12, "at least one"), "{errs:#?}");
        assert!(has(13, "both `cert` and `key`"), "{errs:#?}");
    }
}
