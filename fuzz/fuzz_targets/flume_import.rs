//! `sluice import-flume`: a Flume `.properties` file from anywhere. Every agent it names is
//! translated without a panic, and what is translated is YAML the config reader can parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::cli::import_flume::{agents, translate};
use sluice_core::config::node::Node;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for agent in agents(text).iter().take(4) {
        let t = translate(text, agent);
        if t.components > 0 {
            if let Err(e) = Node::parse(&t.yaml, &|_| Some("x".to_owned())) {
                panic!("translation of {agent} is not YAML: {e:?}\n{}", t.yaml);
            }
        }
    }
});
