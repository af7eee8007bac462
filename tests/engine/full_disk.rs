//! A `rocksdb` channel on a real full disk (a small tmpfs): puts are refused before RocksDB
//! itself runs out of room; an agent SIGKILLed while the disk is full (filled to the last
//! byte by another file) starts again and drains what the channel holds; and under an `http`
//! source nothing refused is acknowledged, and once the sink drains the channel the space
//! comes back and requests are accepted again. Needs root to mount the tmpfs; elsewhere the
//! tests say so and pass without running.

use std::{
    collections::HashSet,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{free_port, http, lines, seq, sluice};

/// Mounts a tmpfs of `size` at `dir`; false when this process may not mount.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount<'a>(&'a Path);

/// A child process killed when dropped (also when the test panics).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn an_agent_killed_on_a_full_disk_starts_again_and_drains() {
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    if !mount_tmpfs(&disk, "16m") {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Unmount(&disk);
    let channel = disk.join("ch");
    let port = free_port();
    // The sink cannot write (/dev/full), so the channel only fills, until the disk is full.
    let filling = work.path().join("fill.yaml");
    std::fs::write(
        &filling,
        format!(
            "admin: {{ listen: '127.0.0.1:{port}' }}
channels:
  ch: {{ type: rocksdb, path: '{}', capacity: 10000000 }}
sources:
  gen: {{ type: generator, body_size: 4KiB, batch_size: 100, channels: [ch] }}
sinks:
  out: {{ type: file, path: /dev/full, channel: ch }}
",
            channel.display()
        ),
    )
    .unwrap();
    let mut agent = sluice()
        .arg("-p")
        .arg(&filling)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Full: the channel refuses puts and the agent says it is not ready, naming the channel
    // and why (the generator can fill the 16 MiB within the first poll: /ready may never be
    // seen at 200).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((503, body)) = http(port, "GET", "/ready") {
            // Refused before RocksDB itself runs out of room (it keeps some for commits).
            if body.contains("channel ch:") && body.contains("No space left on device") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the disk never filled up");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    // Whatever room the channel kept, something else takes now: the disk is full for real.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(disk.join("filler")).unwrap();
        let block = vec![1u8; 64 << 10];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.sync_all();
    }

    // Restart on the full disk, with a sink that works and a source that ends at once:
    // the agent must open the channel and drain it, then exit.
    let out = work.path().join("out.log");
    let draining = work.path().join("drain.yaml");
    std::fs::write(
        &draining,
        format!(
            "channels:
  ch: {{ type: rocksdb, path: '{}', capacity: 10000000 }}
sources:
  none: {{ type: stdin, channels: [ch] }}
sinks:
  out: {{ type: file, path: '{}', channel: ch }}
",
            channel.display(),
            out.display()
        ),
    )
    .unwrap();
    let o = sluice()
        .arg("-p")
        .arg(&draining)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the agent could not start again on the full disk:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let drained = lines(&out);
    assert!(drained.len() > 500, "only {} events drained", drained.len());
    let seqs: HashSet<u64> = drained.iter().map(|b| seq(b)).collect();
    assert_eq!(seqs.len(), drained.len(), "no event twice");
    let max = *seqs.iter().max().unwrap();
    assert_eq!(
        max + 1,
        seqs.len() as u64,
        "the channel held the generator's first events, every one of them"
    );
}

/// An `http` source in front of a `rocksdb` channel on a real 16 MiB tmpfs, with a sink that
/// cannot write (/dev/full): once the disk is full, requests are refused (never a 200 for an
/// event that was not stored) and `/ready` says why. Then the sink is fixed by a live reload:
/// the channel drains, space comes back, requests are accepted again, and every event ever
/// answered 200 is delivered.
#[cfg(feature = "http")]
#[test]
fn a_full_disk_under_an_http_source_refuses_then_recovers_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    if !mount_tmpfs(&disk, "16m") {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Unmount(&disk);
    let (admin, port) = (free_port(), free_port());
    let out = work.path().join("out.log");
    let pipeline = |sink_path: &str| {
        format!(
            "admin: {{ listen: '127.0.0.1:{admin}' }}
channels:
  ch: {{ type: rocksdb, path: '{}', capacity: 10000000 }}
sources:
  in: {{ type: http, listen: '127.0.0.1:{port}', codec: raw, channels: [ch] }}
sinks:
  out:
    type: file
    path: '{sink_path}'
    channel: ch
    retry: {{ max_attempts: unlimited, initial_backoff: 50ms, max_backoff: 200ms }}
",
            disk.join("ch").display()
        )
    };
    let file = work.path().join("p.yaml");
    std::fs::write(&file, pipeline("/dev/full")).unwrap();
    let log = work.path().join("agent.log");
    let agent = sluice()
        .arg("-p")
        .arg(&file)
        .arg("--no-watch")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed if the test fails (the agent must not outlive it, holding the tmpfs).
    let mut agent = KillOnDrop(agent);
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text[text.len().saturating_sub(4000)..].to_owned()
    };
    let body = ".".repeat(4000);
    let post = |i: u64| -> Option<u16> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        let payload = format!("{i} {body}");
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        )
        .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        answer.split(' ').nth(1)?.parse().ok()
    };
    let mut acked = HashSet::new();
    let mut refused = 0u64;
    let mut i = 0u64;
    // Fill the disk: post until the source refuses in a row and /ready names the disk.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(
            Instant::now() < deadline,
            "the disk never filled: {} acked",
            acked.len()
        );
        match post(i) {
            Some(200) => {
                acked.insert(i);
                in_a_row = 0;
            }
            Some(_) => {
                refused += 1;
                in_a_row += 1;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
        i += 1;
    }
    let (status, ready) = http(admin, "GET", "/ready").unwrap();
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.contains("channel ch:") && ready.contains("No space left on device"),
        "{ready}"
    );
    eprintln!(
        "disk full after {} acknowledged, {refused} refused",
        acked.len()
    );

    // Space returns: the sink is fixed by a live reload and drains the channel.
    std::fs::write(&file, pipeline(&out.display().to_string())).unwrap();
    let (status, answer) = http(admin, "POST", "/config/reload").unwrap();
    assert_eq!(status, 200, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut accepted_again = 0;
    while accepted_again < 50 {
        assert!(
            Instant::now() < deadline,
            "no recovery: {accepted_again} accepted after the reload; /ready: {:?}\n{}",
            http(admin, "GET", "/ready"),
            log_tail()
        );
        match post(i) {
            Some(200) => {
                acked.insert(i);
                accepted_again += 1;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
            None => {}
        }
        i += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(admin, "GET", "/ready").map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "/ready never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    agent.0.wait().unwrap();
    let delivered: HashSet<u64> = lines(&out)
        .iter()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let lost: Vec<_> = acked.difference(&delivered).take(5).collect();
    assert!(
        lost.is_empty(),
        "acknowledged, never delivered: {lost:?} (of {})",
        acked.len()
    );
    let unexpected: Vec<_> = delivered.difference(&acked).take(5).collect();
    assert!(
        unexpected.is_empty(),
        "delivered, never acknowledged: {unexpected:?}"
    );
    eprintln!(
        "full disk under http: {} acknowledged, {refused} refused while full, {} delivered, 0 lost",
        acked.len(),
        delivered.len()
    );
}
