//! The `dedup` interceptor's cost per event with 1,000,000 keys in its window: batches of
//! 1000 events keyed by their `sluice.id` header, run through `intercept`, `marks` and
//! `settled` as the processor does — new keys (each remembered, a mark each) and repeated
//! keys (each dropped, no mark). The RocksDB write of the marks is not included (see the
//! `rocks` bench for a channel's put cost). `SLUICE_BENCH_KEYS` sets the window size.
//! Run with `cargo bench --bench dedup`.

use std::time::{Duration, Instant};

use sluice_core::{
    config::{BuiltinInterceptor, units::HumanDuration},
    event::Event,
    interceptor,
};

fn batch(from: u64, n: u64) -> Vec<Event> {
    (from..from + n)
        .map(|i| Event::new(vec![b'.'; 256]).with_header("sluice.id", format!("{i:020}")))
        .collect()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let keys: u64 = std::env::var("SLUICE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1_000_000 } else { 20_000 });
    let mut d = interceptor::build(&BuiltinInterceptor::Dedup {
        header: "sluice.id".into(),
        body: false,
        json: None,
        ttl: HumanDuration(Duration::from_secs(3600)),
        max_keys: keys as usize * 2,
    })
    .unwrap();
    d.restore("bench/", Vec::new());
    let run = |d: &mut Box<dyn interceptor::Interceptor>, from: u64, total: u64| {
        let (mut kept, mut marks, mut spent) = (0usize, 0usize, Duration::ZERO);
        let mut at = from;
        while at < from + total {
            let mut b = batch(at, 1000);
            let mut m = Vec::new();
            let t = Instant::now();
            d.intercept(&mut b, &mut Vec::new()).unwrap();
            d.marks(&mut m);
            d.settled(true);
            spent += t.elapsed();
            kept += b.len();
            marks += m.len();
            at += 1000;
        }
        (kept, marks, spent)
    };
    // Fill the window.
    run(&mut d, 0, keys);
    let probe = keys.min(200_000);
    let (kept, marks, new) = run(&mut d, keys, probe);
    assert_eq!((kept, marks), (probe as usize, probe as usize));
    let (kept, marks, dup) = run(&mut d, 0, probe);
    assert_eq!((kept, marks), (0, 0), "every repeated key is dropped");
    println!("dedup: window of {keys} keys, batches of 1000 keyed by a header");
    println!(
        "  new keys:      {:>6.0} ns/event (remembered, one mark each)",
        new.as_nanos() as f64 / probe as f64
    );
    println!(
        "  repeated keys: {:>6.0} ns/event (dropped)",
        dup.as_nanos() as f64 / probe as f64
    );
}
