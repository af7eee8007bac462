//! Helpers shared by the black-box tests: spawning the binary, reading outputs, tiny HTTP.

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The `sluice` binary, run from the repository root, with `RUST_LOG` unset.
pub fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.current_dir(repo_root()).env_remove("RUST_LOG");
    c
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn json_lines(p: &Path) -> Vec<serde_json::Value> {
    lines(p)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The number at the start of a generator body ("42....").
pub fn seq(body: &str) -> u64 {
    body.trim_end_matches('.')
        .parse()
        .unwrap_or_else(|_| panic!("not a generator body: {body:?}"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; `(status, whole response)`.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some((buf.split(' ').nth(1)?.parse().ok()?, buf))
}
