//! `chaos`: a test plugin that misbehaves on purpose, event by event, so tests can check that
//! the host isolates exactly the poison events. Body `panic` panics, `loop` spins forever,
//! `oom` allocates without bound, `recurse` overflows the stack, `reject` is rejected, `print` writes to stdout (the agent's log); any
//! other event is kept with header `chaos: ok`. Not for production pipelines.

use sluice_guest::{Error, Event, Verdict};

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == u64::MAX { n } else { recurse(n + 1).wrapping_add(std::hint::black_box(1)) }
}

#[sluice_guest::interceptor]
pub fn chaos(mut ev: Event) -> Result<Verdict, Error> {
    match ev.body() {
        b"panic" => panic!("chaos: asked to panic"),
        b"loop" => loop {
            std::hint::black_box(&ev);
        },
        b"oom" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hog);
            }
        }
        b"recurse" => {
            let n = recurse(0);
            ev.set_header("depth", n.to_string());
            Ok(Verdict::Keep(ev))
        }
        b"reject" => Ok(Verdict::Reject("chaos: rejected on request".into())),
        b"print" => {
            println!("chaos says hello from inside the sandbox");
            Ok(Verdict::Keep(ev))
        }
        _ => {
            ev.set_header("chaos", "ok");
            Ok(Verdict::Keep(ev))
        }
    }
}
