//! A slow sink behind a small memory channel: the source must wait, memory stays bounded by
//! the channel's capacity, and every event arrives exactly once, in order.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use sluice_core::{
    channel::{Channel, memory::MemoryChannel},
    config::{RetryConfig, units::ByteSize},
    dlq::DeadLetters,
    metrics::Metrics,
    selector::Replicating,
    sink::{
        Batch, DeliveryError, Sink,
        group::{Member, SinkSet},
        runner::{RunnerControl, SinkRunner},
    },
    source::{
        ChannelProcessor, Source, SourceContext,
        generator::{Generator, GeneratorConfig},
    },
};
use tokio_util::sync::CancellationToken;

struct Slow {
    got: Arc<Mutex<Vec<u64>>>,
}

#[async_trait]
impl Sink for Slow {
    async fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), DeliveryError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut got = self.got.lock().unwrap();
        for e in batch {
            got.push(
                std::str::from_utf8(&e.body)
                    .unwrap()
                    .trim_end_matches('.')
                    .parse()
                    .unwrap(),
            );
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_bounds_memory_and_loses_nothing() {
    const N: u64 = 20_000;
    const CAPACITY: usize = 500;
    let metrics = Metrics::new();
    let channel = Arc::new(MemoryChannel::new(CAPACITY, None));
    let as_dyn: Arc<dyn Channel> = channel.clone();

    let got = Arc::new(Mutex::new(Vec::new()));
    let set = SinkSet::single(Member::new(
        "slow",
        Box::new(Slow { got: got.clone() }),
        metrics.sink("slow"),
        0,
    ));
    let runner = SinkRunner::new(
        "slow",
        as_dyn.clone(),
        set,
        DeadLetters::new(None, metrics.dlq(), "slow"),
        50,
        RetryConfig::default(),
    );
    let ctl = RunnerControl::default();
    let runner_task = tokio::spawn(runner.run(ctl.clone()));

    let processor = ChannelProcessor::new(
        Vec::new(),
        Box::new(Replicating::new(vec![false])),
        vec![("mem".into(), as_dyn)],
        DeadLetters::new(None, metrics.dlq(), "gen"),
        metrics.source("gen"),
    );
    let cfg = GeneratorConfig {
        count: Some(N),
        rate: None,
        body_size: ByteSize(16),
        body: None,
        headers: Default::default(),
        cycle: None,
    };
    let source = Box::new(Generator::new(cfg, 100));
    let cx = SourceContext {
        name: "gen".into(),
        out: processor,
        shutdown: CancellationToken::new(),
    };
    let source_task = tokio::spawn(source.run(cx));

    let mut peak = 0;
    while !source_task.is_finished() {
        peak = peak.max(channel.stats().events);
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    source_task.await.unwrap().unwrap();
    ctl.drain.cancel();
    runner_task.await.unwrap();

    assert!(
        peak <= CAPACITY,
        "channel held {peak} > capacity {CAPACITY}"
    );
    assert!(
        peak >= CAPACITY - 100,
        "the source really was held back (peak {peak})"
    );
    let got = got.lock().unwrap();
    assert_eq!(got.len() as u64, N);
    assert!(
        got.iter().enumerate().all(|(i, s)| *s == i as u64),
        "in order, exactly once"
    );
}
