//! A `rocksdb` channel on a real full disk (a small tmpfs): puts are refused, and an agent
//! SIGKILLed while the disk is full starts again and drains what the channel holds. Needs
//! root to mount the tmpfs; elsewhere the test says so and passes without running.

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
            if body.contains("channel ch:") && body.contains("No space left on device") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the disk never filled up");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();

    // Restart on the still full disk, with a sink that works and a source that ends at once:
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
    assert!(
        drained.len() > 1000,
        "only {} events drained",
        drained.len()
    );
    let seqs: HashSet<u64> = drained.iter().map(|b| seq(b)).collect();
    assert_eq!(seqs.len(), drained.len(), "no event twice");
    let max = *seqs.iter().max().unwrap();
    assert_eq!(
        max + 1,
        seqs.len() as u64,
        "the channel held the generator's first events, every one of them"
    );
}
