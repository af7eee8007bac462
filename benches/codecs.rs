//! The codec plugins inside the Wasm sandbox: encode (JSON-object events → the format) and
//! decode (the format → events) of ~256-byte records, through the agent's plugin host exactly
//! as a sink or source calls it (one call per batch of 1,024 events). The same logic natively is
//! each plugin's ignored `native_speed` unit test (`cargo test --release -p <plugin> --
//! --ignored --nocapture native_speed` in `plugins/`), on the same records.
//!
//! Needs `plugins/dist/<plugin>.wasm` (`scripts/build-plugins`) and, for `protobuf`, the
//! descriptor set in `plugins/protobuf/testdata`. Pin it: `taskset -c 1 cargo bench --bench
//! codecs`. Under `cargo test` it runs a tiny smoke version.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use sluice_core::{
    config::{
        model::{PluginConfig, PluginLimits},
        units::HumanDuration,
    },
    event::Event,
    metrics::Metrics,
};

/// Order `i` as JSON: about 256 bytes, the record the native figures use too.
fn order_json(i: u64) -> String {
    format!(
        r#"{{"id":"{}","customer":"customer-{i:08}","items":[{{"sku":"sku-{:06}","qty":{},"price":{}.25}},{{"sku":"sku-{:06}","qty":1,"price":9.5}}],"status":"PAID","token":"AQIDBAUGBwgJCgsMDQ4PEA==","labels":{{"zone":"eu-west-{}","channel":"web","campaign":"winter-sale-2026"}}}}"#,
        10_000_000_000 + i,
        i % 100_000,
        i % 7 + 1,
        i % 500,
        (i * 7) % 100_000,
        i % 3
    )
}

/// The XML plugin's record (its JSON mapping: attributes as `@` keys), about 256 bytes.
fn order_xml_json(i: u64) -> String {
    format!(
        r##"{{"@id":"{}","customer":"customer-{i:08}","item":[{{"@sku":"sku-{:06}","@qty":"{}","#text":"{}.25"}},{{"@sku":"sku-{:06}","@qty":"1","#text":"9.5"}}],"status":"PAID","zone":"eu-west-{}","channel":"web","campaign":"winter-sale-2026"}}"##,
        10_000_000_000 + i,
        i % 100_000,
        i % 7 + 1,
        i % 500,
        (i * 7) % 100_000,
        i % 3
    )
}

/// The Avro plugin's record (`plugins/avro/testdata/order.avsc`), about 256 bytes.
fn order_avro_json(i: u64) -> String {
    format!(
        r#"{{"id":{},"customer":"customer-{i:08}-of-the-winter-sale-campaign-2026","amount":{}.25,"status":"PAID","coupon":"WINTER-{:06}-EU-WEST","tags":["sku-{:06}","sku-{:06}","web","eu-west-{}","campaign-winter-2026","priority"]}}"#,
        10_000_000_000 + i,
        i % 500,
        i % 100_000,
        i % 100_000,
        (i * 7) % 100_000,
        i % 3
    )
}

struct Case {
    plugin: &'static str,
    files: &'static [(&'static str, &'static str)],
    config: serde_json::Value,
    record: fn(u64) -> String,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 500_000 } else { 2_048 });
    const BATCH: usize = 1024;
    let cases = [
        Case {
            plugin: "protobuf",
            files: &[("descriptor_set", "plugins/protobuf/testdata/orders.desc")],
            config: serde_json::json!({ "message": "shop.v1.Order" }),
            record: order_json,
        },
        Case {
            plugin: "xml",
            files: &[],
            config: serde_json::json!({ "record": "/orders/order", "root": "orders", "element": "order" }),
            record: order_xml_json,
        },
        Case {
            plugin: "avro",
            files: &[("schema", "plugins/avro/testdata/order.avsc")],
            config: serde_json::json!({ "codec": "deflate" }),
            record: order_avro_json,
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<10} {:>10} {:>14} {:>14} {:>12}",
        "plugin", "events", "encode ev/s", "decode ev/s", "bytes/event"
    );
    for case in cases {
        let wasm = root.join(format!("plugins/dist/{}.wasm", case.plugin));
        if !wasm.exists() {
            eprintln!(
                "skipping {}: {} missing (run scripts/build-plugins)",
                case.plugin,
                wasm.display()
            );
            continue;
        }
        let spec = PluginConfig {
            path: wasm,
            refresh: None,
            config: case
                .config
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .collect(),
            files: case
                .files
                .iter()
                .map(|(k, v)| (k.to_string(), root.join(v)))
                .collect::<BTreeMap<_, _>>(),
            // A throughput bench, not a limits test: the 50 ms default is too short for a
            // batch of 1,024 in a debug build on a loaded machine (the `cargo test` smoke run).
            limits: PluginLimits {
                deadline: Some(HumanDuration(Duration::from_secs(30))),
                ..Default::default()
            },
        };
        let batches: Vec<Vec<Event>> = (0..events)
            .collect::<Vec<_>>()
            .chunks(BATCH)
            .map(|c| c.iter().map(|&i| Event::new((case.record)(i))).collect())
            .collect();
        let (enc, dec, size) = rt.block_on(async {
            let metrics = Metrics::new();
            let mut host = (sluice_wasm::host::support().new_host)();
            host.load(case.plugin, &spec, &root, metrics.plugin(case.plugin))
                .unwrap_or_else(|e| panic!("{}: {e}", case.plugin));
            let mut codec = host.codec(case.plugin).unwrap();
            tokio::task::block_in_place(|| {
                let t0 = Instant::now();
                let mut payloads = Vec::with_capacity(batches.len());
                for b in &batches {
                    let mut out = Vec::new();
                    codec.encode(b, &mut out).unwrap();
                    payloads.push(out);
                }
                let enc = events as f64 / t0.elapsed().as_secs_f64();
                let size = payloads.iter().map(Vec::len).sum::<usize>() as f64 / events as f64;
                let t0 = Instant::now();
                let mut n = 0;
                for p in &payloads {
                    n += codec.decode(p).unwrap().len();
                }
                let dec = events as f64 / t0.elapsed().as_secs_f64();
                assert_eq!(n as u64, events, "{}: decode lost events", case.plugin);
                (enc, dec, size)
            })
        });
        println!(
            "{:<10} {:>10} {:>14.0} {:>14.0} {:>12.1}",
            case.plugin, events, enc, dec, size
        );
    }
}
