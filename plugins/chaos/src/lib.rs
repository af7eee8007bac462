//! `chaos`: a test plugin that misbehaves on purpose, event by event, so tests can check that
//! the host isolates exactly the poison events. Body `panic` panics, `loop` spins forever,
//! `oom` allocates without bound, `recurse` overflows the stack, `reject` is rejected, `print` writes to stdout (the agent's log); any
//! other event is kept with header `chaos: ok`. Not for production pipelines.
//!
//! Bodies that probe the sandbox (each keeps the event with a header saying what it got):
//! `wasi-files` tries to read, write and list host files (`reached`: how many worked),
//! `wasi-env` counts environment variables and arguments (`env`), `wasi-clock` reads the
//! clocks (`clock`), `nap` sleeps 1 ms (within any deadline), `sleep` asks to sleep an hour,
//! `random` asks for 4 GiB of random bytes, `log-flood` logs 20,000 lines and one of 8 MiB,
//! `print-flood` prints the same to stdout, `counter-spam` reports 5,000 counter names.
//!
//! Bodies for the host's pacing and recycling: `slow:<µs>` spins that long (a slow guest),
//! `leak:<bytes>` allocates that much and never frees it (a leaky one); text after a space
//! is ignored.

use std::time::{Duration, SystemTime};

use sluice_guest::{Error, Event, Level, Verdict};

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
        b"wasi-files" => {
            let reached = [
                std::fs::read("/etc/passwd").is_ok(),
                std::fs::read("Cargo.toml").is_ok(),
                std::fs::write("/tmp/sluice-chaos-escape", b"x").is_ok(),
                std::fs::read_dir("/").is_ok(),
                std::fs::create_dir("escape").is_ok(),
                std::env::current_dir().is_ok_and(|d| d.read_dir().is_ok()),
            ];
            ev.set_header("reached", reached.iter().filter(|r| **r).count().to_string());
            Ok(Verdict::Keep(ev))
        }
        b"wasi-env" => {
            let n = std::env::vars_os().count() + std::env::args_os().count();
            ev.set_header("env", n.to_string());
            Ok(Verdict::Keep(ev))
        }
        b"wasi-clock" => {
            let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).is_ok();
            let start = std::time::Instant::now();
            let moved = (0..1000).any(|_| start.elapsed() > Duration::ZERO);
            ev.set_header("clock", format!("wall={wall} monotonic={moved}"));
            Ok(Verdict::Keep(ev))
        }
        b"nap" => {
            std::thread::sleep(Duration::from_millis(1));
            ev.set_header("slept", "1ms");
            Ok(Verdict::Keep(ev))
        }
        b"sleep" => {
            std::thread::sleep(Duration::from_secs(3600));
            ev.set_header("slept", "1h");
            Ok(Verdict::Keep(ev))
        }
        b"random" => {
            let bytes = wasip2::random::random::get_random_bytes(4 << 30);
            ev.set_header("random", bytes.len().to_string());
            Ok(Verdict::Keep(ev))
        }
        b"log-flood" => {
            for i in 0..20_000 {
                sluice_guest::log(Level::Info, &format!("chaos flood line {i}"));
            }
            sluice_guest::log(Level::Warn, &"L".repeat(8 << 20));
            ev.set_header("flooded", "log");
            Ok(Verdict::Keep(ev))
        }
        b"print-flood" => {
            for i in 0..20_000 {
                println!("chaos print line {i}");
            }
            println!("{}", "P".repeat(8 << 20));
            ev.set_header("flooded", "stdout");
            Ok(Verdict::Keep(ev))
        }
        b"counter-spam" => {
            for i in 0..5_000 {
                sluice_guest::counter_add(&format!("chaos_counter_{i}"), 1);
            }
            ev.set_header("counters", "5000");
            Ok(Verdict::Keep(ev))
        }
        body if body.starts_with(b"slow:") => {
            let micros = number(&body[5..])?;
            let until = std::time::Instant::now() + Duration::from_micros(micros);
            while std::time::Instant::now() < until {
                std::hint::black_box(&ev);
            }
            ev.set_header("chaos", "ok");
            Ok(Verdict::Keep(ev))
        }
        body if body.starts_with(b"leak:") => {
            let bytes = number(&body[5..])? as usize;
            std::mem::forget(std::hint::black_box(vec![1u8; bytes]));
            ev.set_header("chaos", "ok");
            Ok(Verdict::Keep(ev))
        }
        _ => {
            ev.set_header("chaos", "ok");
            Ok(Verdict::Keep(ev))
        }
    }
}

/// The number after `slow:` or `leak:`, up to a space (the rest of a body is padding).
fn number(digits: &[u8]) -> Result<u64, Error> {
    let end = digits.iter().position(|&b| b == b' ').unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end])
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Error::new("chaos: `slow:` and `leak:` take a number"))
}
