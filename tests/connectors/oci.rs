//! Black-box tests of plugins distributed through an OCI registry: a real registry (Debian's
//! `docker-registry`, the distribution v2 server container tooling uses) started on loopback
//! per test, the real `sluice` binary, and `skopeo` as an independent client.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::common::{dist, free_port, http, json_lines, sluice, stderr};
use sluice_wasm::test_guests::marker_guest;

/// A `docker-registry serve` on 127.0.0.1, storing under a temporary directory; stopped on
/// drop. `stop`/`start` keep the storage, as an outage does.
struct Registry {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// An htpasswd file: the registry then wants HTTP basic auth.
    htpasswd: Option<PathBuf>,
}

impl Registry {
    /// A registry that accepts only `user:password` (basic auth, bcrypt htpasswd).
    fn start_with_user(user: &str, password: &str) -> Registry {
        assert!(
            which("htpasswd").is_some(),
            "`htpasswd` is not installed (apt-get install apache2-utils, or run scripts/test)"
        );
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, &o.stdout).unwrap();
        let mut r = Registry {
            port: free_port(),
            dir,
            child: None,
            htpasswd: Some(file),
        };
        r.resume();
        r
    }

    fn start() -> Registry {
        assert!(
            which("docker-registry").is_some(),
            "`docker-registry` is not installed: these tests need a real OCI registry \
             (apt-get install docker-registry, or run scripts/test, which installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry {
            port: free_port(),
            dir,
            child: None,
            htpasswd: None,
        };
        r.resume();
        r
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn resume(&mut self) {
        let yml = self.dir.path().join("registry.yml");
        let auth = self.htpasswd.as_ref().map_or(String::new(), |f| {
            format!(
                "auth: {{ htpasswd: {{ realm: sluice-test, path: '{}' }} }}\n",
                f.display()
            )
        });
        std::fs::write(
            &yml,
            format!(
                "version: 0.1\nlog: {{ level: error, accesslog: {{ disabled: true }} }}\n\
                 storage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\n\
                 http: {{ addr: '127.0.0.1:{}' }}\n{auth}",
                self.data().display(),
                self.port
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&yml)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // 401 is the answer of a registry that wants credentials: it is up.
        while !matches!(http(self.port, "GET", "/v2/").map(|r| r.0), Some(200 | 401)) {
            assert!(Instant::now() < deadline, "the registry never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("127.0.0.1:{}/{repo_tag}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// The `sluice` binary with its own caches (compile cache and OCI cache) under `cache`.
fn sluice_in(cache: &Path) -> Command {
    let mut c = sluice();
    c.env("SLUICE_CACHE_DIR", cache)
        .env_remove("SLUICE_REGISTRY_TOKEN")
        .env_remove("SLUICE_REGISTRY_USERNAME")
        .env_remove("SLUICE_REGISTRY_PASSWORD")
        .env("DOCKER_CONFIG", cache.join("no-docker-config"));
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn push(cache: &Path, file: &Path, reference: &str) -> String {
    let o = run({
        let mut c = sluice_in(cache);
        c.args(["plugin", "push"]).arg(file).arg(reference).args([
            "--version-label",
            "1.0.0",
            "--source",
            "https://example.com/p",
        ]);
        c
    });
    let digest = ok(&o);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    digest
}

fn marker(dir: &Path, v: char) -> PathBuf {
    let p = dir.join(format!("marker-{v}.wasm"));
    std::fs::write(&p, wat::parse_str(marker_guest(v)).unwrap()).unwrap();
    p
}

#[test]
fn push_then_pull_by_tag_and_by_digest_is_byte_identical_and_skopeo_agrees() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let enrich = dist("enrich");
    let tag = reg.reference("sluice/enrich:v1");
    let digest = push(&cache, &enrich, &tag);
    let original = std::fs::read(&enrich).unwrap();

    for (i, r) in [
        format!("oci://{tag}"),
        reg.reference(&format!("sluice/enrich@{digest}")),
    ]
    .iter()
    .enumerate()
    {
        // A fresh cache each time: really from the registry.
        let out = dir.path().join(format!("pulled{i}.wasm"));
        let o = run({
            let mut c = sluice_in(&dir.path().join(format!("fresh{i}")));
            c.args(["plugin", "pull", r.as_str(), "-o"]).arg(&out);
            c
        });
        assert_eq!(ok(&o), digest, "pull prints the manifest digest");
        assert!(
            std::fs::read(&out).unwrap() == original,
            "{r}: byte-identical"
        );
    }

    // inspect, from the registry: world, digests, annotations, CNCF config.
    let o = run({
        let mut c = sluice_in(&cache);
        c.args(["plugin", "inspect", "--json", tag.as_str()]);
        c
    });
    let doc: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert!(
        doc["world"].as_str().unwrap().contains("interceptor"),
        "{doc}"
    );
    assert_eq!(doc["manifest_digest"], digest.as_str());
    assert_eq!(doc["size"], original.len());
    assert_eq!(
        doc["config_media_type"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(
        doc["annotations"]["org.opencontainers.image.version"],
        "1.0.0"
    );
    assert_eq!(
        doc["annotations"]["org.opencontainers.image.source"],
        "https://example.com/p"
    );
    assert_eq!(doc["config"]["architecture"], "wasm");
    // And of the local file.
    let o = run({
        let mut c = sluice_in(&cache);
        c.args(["plugin", "inspect"]).arg(&enrich);
        c
    });
    assert!(ok(&o).contains("world"), "{}", stderr(&o));

    // An independent client sees a CNCF Wasm artifact with the same digest.
    let skopeo = which("skopeo").unwrap_or_else(|| {
        panic!("`skopeo` is not installed (apt-get install skopeo, or run scripts/test)")
    });
    let o = Command::new(skopeo)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{tag}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(m["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    use sha2::Digest as _;
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&o.stdout))),
        digest,
        "the printed digest is the manifest's"
    );
}

#[test]
fn files_that_are_not_sluice_components_are_refused_before_pushing() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("text", b"hello".to_vec(), "not WebAssembly"),
        (
            "core-module",
            wat::parse_str("(module)").unwrap(),
            "not a loadable WebAssembly component",
        ),
        (
            "other-component",
            wat::parse_str("(component)").unwrap(),
            "not a Sluice plugin",
        ),
    ];
    for (name, bytes, why) in cases {
        let f = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&f, bytes).unwrap();
        let o = run({
            let mut c = sluice_in(&cache);
            c.args(["plugin", "push"])
                .arg(&f)
                .arg(reg.reference(&format!("bad/{name}:v1")));
            c
        });
        assert!(!o.status.success(), "{name} pushed");
        assert!(stderr(&o).contains(why), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains("is not pushed"), "{}", stderr(&o));
    }
    // Nothing reached the registry.
    let (_, body) = http(reg.port, "GET", "/v2/_catalog").unwrap();
    assert!(body.contains("\"repositories\":[]"), "{body}");
}

#[test]
fn a_tampered_artifact_or_a_wrong_digest_is_refused() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let plugin = marker(dir.path(), 'A');
    let digest = push(
        &dir.path().join("cache"),
        &plugin,
        &reg.reference("t/marker:v1"),
    );

    // A digest the registry does not have.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let o = run({
        let mut c = sluice_in(&dir.path().join("c1"));
        c.args([
            "plugin",
            "pull",
            reg.reference(&format!("t/marker@{wrong}")).as_str(),
        ]);
        c
    });
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&wrong), "{}", stderr(&o));

    // The registry's copy of the component altered behind its back: the layer digest in the
    // (pinned) manifest no longer matches what is served.
    let layer = sha256_hex(&std::fs::read(&plugin).unwrap());
    let blob = reg
        .data()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let out = dir.path().join("never.wasm");
    let o = run({
        let mut c = sluice_in(&dir.path().join("c2"));
        c.args([
            "plugin",
            "pull",
            reg.reference(&format!("t/marker@{digest}")).as_str(),
            "-o",
        ])
        .arg(&out);
        c
    });
    assert!(!o.status.success(), "a tampered component was accepted");
    assert!(stderr(&o).contains("digest mismatch"), "{}", stderr(&o));
    assert!(!out.exists());

    // So is a pipeline pinned to it.
    let p = pipeline(
        dir.path(),
        &format!("oci://{}", reg.reference(&format!("t/marker@{digest}"))),
        5,
        "",
    );
    let o = run({
        let mut c = sluice_in(&dir.path().join("c3"));
        c.arg("-p").arg(&p);
        c
    });
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("digest mismatch"), "{}", stderr(&o));
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// A pipeline running `marker` (from `path`) on `count` generated events into out.ndjson.
fn pipeline(dir: &Path, path: &str, count: u64, extra: &str) -> PathBuf {
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  marker: {{ path: '{path}'{extra} }}\nchannels:\n  mem: {{ type: memory }}\n\
             sources:\n  gen: {{ type: generator, count: {count}, batch_size: 10, body_size: 8, channels: [mem], interceptors: [marker] }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{}/out.ndjson', format: ndjson }}\n",
            dir.display()
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("out.ndjson"));
    p
}

#[test]
fn a_pipeline_pinned_by_digest_runs_and_restarts_from_the_cache_with_the_registry_down() {
    let mut reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plugin = marker(dir.path(), 'A');
    let digest = push(
        &dir.path().join("push-cache"),
        &plugin,
        &reg.reference("p/marker:v1"),
    );
    let pinned = format!("oci://{}", reg.reference(&format!("p/marker@{digest}")));
    let tagged = format!("oci://{}", reg.reference("p/marker:v1"));

    for path in [&pinned, &tagged] {
        let p = pipeline(dir.path(), path, 20, "");
        let o = run({
            let mut c = sluice_in(&cache);
            c.arg("-p").arg(&p);
            c
        });
        assert!(o.status.success(), "{path}: {}", stderr(&o));
        let out = json_lines(&dir.path().join("out.ndjson"));
        assert_eq!(out.len(), 20);
        assert!(out.iter().all(|e| e["headers"]["version"] == "A"));
    }

    reg.stop();
    for path in [&pinned, &tagged] {
        let p = pipeline(dir.path(), path, 20, "");
        let o = run({
            let mut c = sluice_in(&cache);
            c.arg("-p").arg(&p);
            c
        });
        assert!(o.status.success(), "offline {path}: {}", stderr(&o));
        assert_eq!(json_lines(&dir.path().join("out.ndjson")).len(), 20);
        if path == &tagged {
            assert!(
                stderr(&o).contains("using the cached version"),
                "{}",
                stderr(&o)
            );
        }
    }
    // Without a cache there is nothing to fall back to: a clear error, not a hang.
    let p = pipeline(dir.path(), &pinned, 20, "");
    let o = run({
        let mut c = sluice_in(&dir.path().join("empty-cache"));
        c.arg("-p").arg(&p);
        c
    });
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot fetch plugin oci://"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn retagging_and_reloading_swaps_the_plugin_without_losing_events() {
    const N: u64 = 40_000;
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let push_cache = dir.path().join("push-cache");
    let tag = reg.reference("live/marker:stable");
    push(&push_cache, &marker(dir.path(), 'A'), &tag);
    let port = free_port();
    let p = dir.path().join("swap.yaml");
    std::fs::write(
        &p,
        format!(
            "plugins:\n  marker: {{ path: 'oci://{tag}', refresh: 300ms }}\nadmin: {{ listen: '127.0.0.1:{port}' }}\n\
             channels:\n  mem: {{ type: memory }}\n\
             sources:\n  gen: {{ type: generator, count: {N}, rate: 8000, batch_size: 100, body_size: 8, channels: [mem], interceptors: [marker] }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{}/out.ndjson', format: ndjson }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let child = sluice_in(&cache)
        .arg("-p")
        .arg(&p)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/ready").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "agent never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Re-tag to B and reload through the admin API.
    std::thread::sleep(Duration::from_millis(500));
    let b = push(&push_cache, &marker(dir.path(), 'B'), &tag);
    let (status, body) = http(port, "POST", "/plugins/marker/reload").unwrap();
    assert_eq!(status, 200, "{body}");
    // The 300ms `refresh` may have picked B up between the push and this call.
    assert!(
        body.contains("swapped") || body.contains("unchanged"),
        "{body}"
    );
    let (_, listing) = http(port, "GET", "/plugins").unwrap();
    assert!(
        listing.contains(&b),
        "the manifest digest is shown: {listing}"
    );
    // Re-tag to C: the `refresh` period picks it up on its own.
    std::thread::sleep(Duration::from_millis(800));
    push(&push_cache, &marker(dir.path(), 'C'), &tag);

    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = json_lines(&dir.path().join("out.ndjson"));
    assert_eq!(out.len() as u64, N, "every event exactly once");
    let mut seen = std::collections::HashSet::new();
    let mut versions: HashMap<String, usize> = HashMap::new();
    for e in &out {
        assert!(
            seen.insert(e["body"].as_str().unwrap().to_owned()),
            "duplicate"
        );
        *versions
            .entry(e["headers"]["version"].as_str().expect("marked").to_owned())
            .or_default() += 1;
    }
    for v in ["A", "B", "C"] {
        assert!(versions.contains_key(v), "{v} saw no traffic: {versions:?}");
    }
    assert!(stderr(&o).contains("plugin swapped"), "{}", stderr(&o));
}

#[test]
fn plugin_test_runs_a_component_on_sample_events() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    std::fs::write(
        &input,
        "{\"headers\":{\"k\":\"v\"},\"body\":\"{\\\"a\\\":1}\"}\n{\"headers\":{},\"body\":\"[1]\"}\n",
    )
    .unwrap();
    let o = run({
        let mut c = sluice_in(&dir.path().join("cache"));
        c.args(["plugin", "test"])
            .arg(dist("enrich"))
            .arg("--input")
            .arg(&input)
            .args([
                "--config",
                r#"{"headers":{"region":"eu"},"fields":{"x":2}}"#,
            ]);
        c
    });
    let text = ok(&o);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["verdict"], "keep", "{text}");
    assert_eq!(lines[0]["events"][0]["headers"]["region"], "eu", "{text}");
    assert_eq!(
        lines[1]["verdict"], "reject",
        "a non-object body with `fields`: {text}"
    );
}

#[test]
fn plugin_new_writes_a_project() {
    let dir = tempfile::tempdir().unwrap();
    let o = run({
        let mut c = sluice_in(&dir.path().join("cache"));
        c.args([
            "plugin",
            "new",
            "my-filter",
            "--kind",
            "interceptor",
            "--dir",
        ])
        .arg(dir.path());
        c
    });
    let root = PathBuf::from(ok(&o));
    assert!(root.join("Cargo.toml").exists() && root.join("src/lib.rs").exists());
    let o = run({
        let mut c = sluice_in(&dir.path().join("cache"));
        c.args(["plugin", "new", "my-filter", "--kind", "serde", "--dir"])
            .arg(dir.path());
        c
    });
    assert!(
        !o.status.success(),
        "an existing project is never overwritten"
    );
}

/// Every kind `plugin new` writes builds as is into a component of the right world.
#[test]
fn plugin_new_projects_build_into_components_of_their_world() {
    let dir = tempfile::tempdir().unwrap();
    // The first-party plugins' target dir: the SDK is already built there for wasm32-wasip2.
    let target = std::env::var_os("SLUICE_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/sluice-plugins-target")
        });
    for (kind, world) in [
        ("interceptor", "packed-interceptor"),
        ("serde", "serde"),
        ("selector", "selector"),
    ] {
        let name = format!("new-{kind}");
        let o = run({
            let mut c = sluice_in(&dir.path().join("cache"));
            c.args(["plugin", "new", &name, "--kind", kind, "--dir"])
                .arg(dir.path());
            c
        });
        let root = PathBuf::from(ok(&o));
        let built = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let wasm = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let o = run({
            let mut c = sluice_in(&dir.path().join("cache"));
            c.args(["plugin", "inspect"]).arg(&wasm);
            c
        });
        let text = ok(&o);
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.split_whitespace().eq(["world", world])),
            "{kind}: {text}"
        );
    }
}

/// Basic auth against a registry that requires it: anonymous is refused, credentials from the
/// environment push, the Docker config file's pull byte-identically, wrong ones are refused
/// with the registry's answer — and the password never appears in any output.
#[test]
fn registry_credentials_come_from_the_environment_or_the_docker_config() {
    let reg = Registry::start_with_user("alice", "pa55-w0rd");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let reference = reg.reference("auth/enrich:v1");
    let push = |env: &[(&str, &str)]| {
        let mut c = sluice_in(&cache);
        c.args(["plugin", "push"])
            .arg(dist("enrich"))
            .arg(&reference);
        for (k, v) in env {
            c.env(k, v);
        }
        run(c)
    };
    let o = push(&[]);
    assert!(!o.status.success(), "anonymous push accepted");
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    let o = push(&[
        ("SLUICE_REGISTRY_USERNAME", "alice"),
        ("SLUICE_REGISTRY_PASSWORD", "pa55-w0rd"),
    ]);
    let digest = ok(&o);
    assert!(digest.starts_with("sha256:"), "{digest}");

    // A Docker config file as `docker login` writes it.
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "alice:pa55-w0rd",
    );
    std::fs::write(
        docker.join("config.json"),
        format!(
            "{{\"auths\":{{\"127.0.0.1:{}\":{{\"auth\":\"{auth}\"}}}}}}",
            reg.port
        ),
    )
    .unwrap();
    let out = dir.path().join("pulled.wasm");
    let o = run({
        let mut c = sluice_in(&dir.path().join("fresh-cache"));
        c.env("DOCKER_CONFIG", &docker)
            .args(["plugin", "pull"])
            .arg(&reference)
            .arg("-o")
            .arg(&out);
        c
    });
    ok(&o);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(dist("enrich")).unwrap()
    );

    let o = run({
        let mut c = sluice_in(&dir.path().join("other-cache"));
        c.env("SLUICE_REGISTRY_USERNAME", "alice")
            .env("SLUICE_REGISTRY_PASSWORD", "wrong-one")
            .args(["plugin", "pull"])
            .arg(&reference)
            .arg("-o")
            .arg(dir.path().join("nope.wasm"));
        c
    });
    assert!(!o.status.success(), "a wrong password was accepted");
    let text = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(
        text.contains("Not authorized") || text.contains("401"),
        "{text}"
    );
    assert!(!text.contains("wrong-one"), "the password leaked: {text}");
}
