//! The `fcm` sink against a local HTTPS stand-in for FCM HTTP v1 and Google's OAuth2 token
//! endpoint (`tests/fcm/fake_fcm.py`, which checks the service account's JWT signature with
//! its public key): a batch with valid, unregistered and invalid tokens, a 429 with
//! `Retry-After`, and access tokens revoked mid-run. No FCM is reachable from here.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use crate::common::{envelope, json_lines, python, repo_root, run_stdin};

/// A fresh RSA service account: `sa.json` (Google's key file layout) and `public.pem`.
fn service_account(dir: &std::path::Path) {
    let out = Command::new(python())
        .current_dir(dir)
        .arg("-c")
        .arg(
            r#"
import json
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                      serialization.NoEncryption()).decode()
json.dump({"type": "service_account", "project_id": "demo", "private_key_id": "k1",
           "private_key": pem, "client_email": "sluice-test@demo.iam.gserviceaccount.com",
           "token_uri": "https://oauth2.googleapis.com/token"}, open("sa.json", "w"))
open("public.pem", "wb").write(k.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
"#,
        )
        .output()
        .expect("python with cryptography (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct FakeFcm {
    child: std::process::Child,
    port: u16,
}

impl Drop for FakeFcm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fake_fcm(dir: &std::path::Path, revoke_after: u32) -> FakeFcm {
    let tls = repo_root().join("tests/fixtures/tls");
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/fcm/fake_fcm.py"))
        .arg(dir.join("public.pem"))
        .arg(tls.join("cert.pem"))
        .arg(tls.join("key.pem"))
        .arg(dir.join("fcm.jsonl"))
        .args(["--revoke-after", &revoke_after.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("fake FCM did not start: {line:?}"));
    FakeFcm { child, port }
}

#[test]
fn fcm_sends_refuses_and_retries_per_message_and_renews_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    service_account(d);
    let fcm = fake_fcm(d, 25);
    let mut input = String::new();
    let mut tokens = Vec::new();
    for i in 0..90 {
        tokens.push(format!("dev-{i}"));
    }
    for t in [
        "bad-1",
        "bad-2",
        "bad-3",
        "bad-4",
        "bad-5",
        "invalid-1",
        "invalid-2",
        "invalid-3",
        "quota-1",
        "quota-2",
    ] {
        tokens.push(t.to_owned());
    }
    for (i, t) in tokens.iter().enumerate() {
        let body = serde_json::json!({
            "notification": { "title": "order shipped", "body": format!("order {i}") },
            "data": { "order": format!("{i}"), "n": i, "express": i % 2 == 0 },
        });
        input.push_str(&envelope(&[("device", t.clone())], &body.to_string()));
    }
    input.push_str(&envelope(&[("device", "dev-x".into())], "not json"));
    let log = run_stdin(
        d,
        &format!(
            "channels:\n  mem: {{ type: memory }}\n  dead: {{ type: memory }}\n\
             sources:\n  in: {{ type: stdin, codec: ndjson, channels: [mem] }}\n\
             sinks:\n  push:\n    type: fcm\n    channel: mem\n    dlq: dead\n    batch_size: 20\n    \
             credentials_file: sa.json\n    token: '%{{device}}'\n    \
             endpoint: 'https://localhost:{port}'\n    token_url: 'https://localhost:{port}/token'\n    \
             tls: {{ ca_file: '{ca}' }}\n    concurrency: 8\n  \
             dl: {{ type: file, channel: dead, path: '{p}/dead.ndjson', format: ndjson }}\n",
            port = fcm.port,
            ca = repo_root().join("tests/fixtures/tls/ca.pem").display(),
            p = d.display(),
        ),
        input,
    );
    drop(fcm);

    let records = json_lines(&d.join("fcm.jsonl"));
    let delivered: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r.get("message").is_some())
        .collect();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for r in &delivered {
        *count
            .entry(r["message"]["token"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let want: Vec<String> = tokens
        .iter()
        .filter(|t| t.starts_with("dev-") || t.starts_with("quota-"))
        .cloned()
        .collect();
    assert_eq!(count.len(), want.len(), "{count:?}");
    for t in &want {
        assert_eq!(
            count.get(t),
            Some(&1),
            "{t} delivered {:?} times",
            count.get(t)
        );
    }
    // The message as built: data values as strings, the notification as given.
    let m = &delivered
        .iter()
        .find(|r| r["message"]["token"] == "dev-7")
        .unwrap()["message"];
    assert_eq!(m["data"]["n"], "7");
    assert_eq!(m["data"]["express"], "false");
    assert_eq!(m["notification"]["body"], "order 7");
    // Retry-After honoured: each quota token delivered at least a second after its 429.
    for t in ["quota-1", "quota-2"] {
        let refused = records.iter().find(|r| r["quota_refused"] == t).unwrap()["at"]
            .as_f64()
            .unwrap();
        let sent = delivered
            .iter()
            .find(|r| r["message"]["token"] == t)
            .unwrap()["at"]
            .as_f64()
            .unwrap();
        assert!(
            sent - refused >= 0.95,
            "{t}: sent {:.3} s after the 429",
            sent - refused
        );
    }
    // Tokens were revoked every 25 deliveries and renewed each time.
    let bearers: std::collections::BTreeSet<&str> = delivered
        .iter()
        .map(|r| r["bearer"].as_str().unwrap())
        .collect();
    assert!(bearers.len() >= 4, "access tokens used: {bearers:?}");

    let dead = json_lines(&d.join("dead.ndjson"));
    let reason = |e: &serde_json::Value| {
        e["headers"]["sluice.dlq.reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let by_device: BTreeMap<String, String> = dead
        .iter()
        .map(|e| {
            (
                e["headers"]["device"].as_str().unwrap().to_owned(),
                reason(e),
            )
        })
        .collect();
    assert_eq!(by_device.len(), 9, "{by_device:#?}");
    for i in 1..=5 {
        assert!(
            by_device[&format!("bad-{i}")].contains("UNREGISTERED"),
            "{by_device:#?}"
        );
    }
    for i in 1..=3 {
        assert!(
            by_device[&format!("invalid-{i}")].contains("INVALID_ARGUMENT"),
            "{by_device:#?}"
        );
    }
    assert!(by_device["dev-x"].contains("not JSON"), "{by_device:#?}");

    // Neither the key nor any access token reached the log.
    let key = std::fs::read_to_string(d.join("sa.json")).unwrap();
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let key_line = key["private_key"].as_str().unwrap().lines().nth(3).unwrap();
    assert!(
        !log.contains(key_line),
        "the private key leaked into the log"
    );
    assert!(
        !log.contains("ya29."),
        "an access token leaked into the log:\n{log}"
    );
    assert!(log.contains("renewing it"), "{log}");
}
