//! Criterion micro-benchmarks: memory channel put + take + commit per batch.

use std::{hint::black_box, time::Duration};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_core::{
    channel::{Channel, memory::MemoryChannel},
    event::Event,
};

fn put_take(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = Bytes::from(vec![b'x'; 256]);
    let mut g = c.benchmark_group("memory_channel");
    for batch in [1usize, 100, 1000] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(
            BenchmarkId::new("put_take_commit", batch),
            &batch,
            |b, &n| {
                let ch = MemoryChannel::new(100_000, None);
                b.iter(|| {
                    rt.block_on(async {
                        let events: Vec<Event> = (0..n).map(|_| Event::new(body.clone())).collect();
                        ch.put(events).await.unwrap();
                        let lease = ch.take(n, Duration::ZERO).await.unwrap().unwrap();
                        black_box(lease.events().len());
                        lease.commit().await.unwrap();
                    })
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, put_take);
criterion_main!(benches);
