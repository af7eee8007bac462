//! The listening sources through the real binary: `syslog` fed by util-linux `logger` (TCP and
//! UDP, RFC 5424 and RFC 3164, newline and octet-counted framing) and by a real rsyslogd
//! forwarding what it receives; `tcp` and `udp` lines from plain sockets. Malformed messages
//! and oversize lines must reach the dead-letter channel with their reason.

use std::{
    io::Write,
    net::{TcpStream, UdpSocket},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::common::{Agent, free_port, json_lines};

/// Complete lines in `path` so far.
fn count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn wait_lines(agent: &mut Agent, path: &Path, n: usize) {
    let t0 = Instant::now();
    while count(path) < n {
        agent.assert_running();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{}: {} of {n} lines:\n{}",
            path.display(),
            count(path),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the agent's log says it listens on `port`.
fn wait_listening(agent: &mut Agent, port: u16) {
    let t0 = Instant::now();
    while !agent.log().contains(&format!(":{port}")) {
        agent.assert_running();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not listening on {port}:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn logger(args: &[&str]) {
    let out = Command::new("logger")
        .args(args)
        .output()
        .expect("run logger (util-linux)");
    assert!(
        out.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn by_body<'a>(events: &'a [serde_json::Value], body: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["body"] == body)
        .unwrap_or_else(|| panic!("no event with body {body:?} in {events:#?}"))
}

#[test]
fn syslog_from_logger_over_tcp_and_udp_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (tcp, udp) = (free_port(), free_port());
    let mut agent = Agent::start(
        dir.path(),
        "syslog",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n  dead: {{ type: memory }}\n\
             sources:\n  tcp: {{ type: syslog, listen: '127.0.0.1:{tcp}', channels: [mem], dlq: dead, peer_header: peer }}\n  \
             udp: {{ type: syslog, listen: '127.0.0.1:{udp}', protocol: udp, channels: [mem], dlq: dead }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{d}/out.ndjson', format: ndjson }}\n  \
             dl: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}\n"
        ),
    );
    wait_listening(&mut agent, tcp);
    wait_listening(&mut agent, udp);
    let (tcp_s, udp_s) = (tcp.to_string(), udp.to_string());
    let server = ["-n", "127.0.0.1"];
    let t = |rest: &[&str]| {
        let mut a = server.to_vec();
        a.extend(["-P", &tcp_s, "-T"]);
        a.extend(rest);
        logger(&a);
    };
    let u = |rest: &[&str]| {
        let mut a = server.to_vec();
        a.extend(["-P", &udp_s, "-d"]);
        a.extend(rest);
        logger(&a);
    };
    t(&[
        "--rfc5424",
        "-t",
        "app5424",
        "--msgid",
        "M1",
        "--sd-id",
        "test@32473",
        "--sd-param",
        "k=\"v 1\"",
        "-p",
        "local3.err",
        "tcp 5424",
    ]);
    t(&[
        "--rfc3164",
        "-t",
        "app3164",
        "-i",
        "-p",
        "daemon.info",
        "tcp 3164",
    ]);
    t(&["--rfc5424", "--octet-count", "-t", "counted", "tcp counted"]);
    u(&[
        "--rfc5424",
        "-t",
        "appudp",
        "-p",
        "user.warning",
        "udp 5424",
    ]);
    u(&["--rfc3164", "-t", "appudp", "udp 3164"]);
    // Not syslog at all, over TCP: dead-lettered, and the connection goes on.
    let mut s = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    s.write_all(b"this is not syslog\n<13>1 - h a - - - after the bad one\n")
        .unwrap();
    drop(s);

    let out = dir.path().join("out.ndjson");
    wait_lines(&mut agent, &out, 6);
    wait_lines(&mut agent, &dir.path().join("dead.ndjson"), 1);
    agent.stop_blocking();
    let events = json_lines(&out);
    assert_eq!(events.len(), 6, "{events:#?}");
    let host = gethostname();

    let e = by_body(&events, "tcp 5424");
    let h = &e["headers"];
    assert_eq!(h["syslog.format"], "rfc5424");
    assert_eq!(h["syslog.app"], "app5424");
    assert_eq!(h["syslog.msgid"], "M1");
    assert_eq!(h["syslog.facility"], "local3");
    assert_eq!(h["syslog.severity"], "err");
    assert_eq!(h["syslog.priority"], (19 * 8 + 3).to_string());
    assert_eq!(h["syslog.sd.test@32473.k"], "v 1");
    assert_eq!(h["syslog.host"], host.as_str());
    assert!(h["timestamp"].as_str().unwrap().parse::<i64>().unwrap() > 1_700_000_000_000);
    assert!(h["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{h}");

    let h = &by_body(&events, "tcp 3164")["headers"];
    assert_eq!(h["syslog.format"], "rfc3164");
    assert_eq!(h["syslog.app"], "app3164");
    assert_eq!(h["syslog.facility"], "daemon");
    assert_eq!(h["syslog.severity"], "info");
    assert!(
        h["syslog.procid"].as_str().unwrap().parse::<u32>().is_ok(),
        "{h}"
    );
    assert_eq!(h["syslog.host"], host.as_str());

    assert_eq!(
        by_body(&events, "tcp counted")["headers"]["syslog.app"],
        "counted"
    );
    let h = &by_body(&events, "udp 5424")["headers"];
    assert_eq!(
        (h["syslog.format"].as_str(), h["syslog.severity"].as_str()),
        (Some("rfc5424"), Some("warning"))
    );
    assert_eq!(
        by_body(&events, "udp 3164")["headers"]["syslog.format"],
        "rfc3164"
    );
    by_body(&events, "after the bad one");

    let dead = json_lines(&dir.path().join("dead.ndjson"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["body"], "this is not syslog");
    let reason = dead[0]["headers"]["sluice.dlq.reason"].as_str().unwrap();
    assert!(reason.contains("<PRI>"), "{reason}");
}

fn gethostname() -> String {
    let out = Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn rsyslog_forwards_to_the_syslog_source() {
    let Some(rsyslogd) = which("rsyslogd") else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_RSYSLOG").is_none(),
            "rsyslogd is not installed (scripts/test installs it)"
        );
        eprintln!("skipped: rsyslogd is not installed (scripts/test installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (sluice_port, rsyslog_port) = (free_port(), free_port());
    let mut agent = Agent::start(
        dir.path(),
        "rsyslog",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  in: {{ type: syslog, listen: '127.0.0.1:{sluice_port}', channels: [mem] }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{d}/out.ndjson', format: ndjson }}\n"
        ),
    );
    wait_listening(&mut agent, sluice_port);
    let work = dir.path().join("rsyslog");
    std::fs::create_dir(&work).unwrap();
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{w}\")\n\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{rsyslog_port}\")\n\
             *.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{sluice_port}\" protocol=\"tcp\" \
             tcp_framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\")\n",
            w = work.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out.ndjson");
    relay_through_rsyslog(
        &rsyslogd,
        &conf,
        rsyslog_port,
        ("relayed", "mail.notice", "via rsyslog"),
        &out,
    );
    wait_lines(&mut agent, &out, 1);
    agent.stop_blocking();
    let events = json_lines(&out);
    // rsyslogd may forward notices of its own too.
    let e = events
        .iter()
        .find(|e| {
            e["body"]
                .as_str()
                .is_some_and(|b| b.contains("via rsyslog"))
        })
        .unwrap_or_else(|| panic!("no relayed message in {events:#?}"));
    // rsyslog keeps the space after the BSD tag's colon as the start of the message.
    assert!(
        e["body"]
            .as_str()
            .unwrap()
            .trim_start()
            .starts_with("via rsyslog"),
        "{e}"
    );
    let h = &e["headers"];
    // rsyslog re-sent it as RFC 5424, keeping what it parsed from the BSD message.
    assert_eq!(h["syslog.format"], "rfc5424", "{h}");
    assert_eq!(h["syslog.app"], "relayed");
    assert_eq!(h["syslog.facility"], "mail");
    assert_eq!(h["syslog.severity"], "notice");
}

/// Runs rsyslogd on `conf` (which listens on UDP `port` and forwards to the agent) and sends
/// it BSD messages with `logger` — `(tag, priority, text)`, numbered — until one reaches `out`
/// (rsyslogd needs a moment to open its input), then stops it.
fn relay_through_rsyslog(
    rsyslogd: &Path,
    conf: &Path,
    port: u16,
    (tag, priority, text): (&str, &str, &str),
    out: &Path,
) {
    let pid = conf.with_extension("pid");
    let mut rsyslog = Command::new(rsyslogd)
        .arg("-n")
        .arg("-f")
        .arg(conf)
        .arg("-i")
        .arg(&pid)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let port = port.to_string();
    let relayed = || std::fs::read_to_string(out).is_ok_and(|t| t.contains(text));
    let mut sent = 0;
    while !relayed() && t0.elapsed() < Duration::from_secs(20) {
        sent += 1;
        let line = format!("{text} {sent}");
        logger(&[
            "-n",
            "127.0.0.1",
            "-P",
            &port,
            "-d",
            "--rfc3164",
            "-t",
            tag,
            "-p",
            priority,
            &line,
        ]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = rsyslog.kill();
    let _ = rsyslog.wait();
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

#[test]
fn tcp_and_udp_lines_with_an_oversize_line_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (tcp, udp) = (free_port(), free_port());
    let mut agent = Agent::start(
        dir.path(),
        "lines",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n  dead: {{ type: memory }}\n\
             sources:\n  t: {{ type: tcp, listen: {tcp}, max_line_length: 100, channels: [mem], dlq: dead }}\n  \
             u: {{ type: udp, listen: {udp}, codec: ndjson, peer_header: from, channels: [mem], dlq: dead }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{d}/out.ndjson', format: ndjson }}\n  \
             dl: {{ type: file, channel: dead, path: '{d}/dead.ndjson', format: ndjson }}\n"
        ),
    );
    wait_listening(&mut agent, tcp);
    wait_listening(&mut agent, udp);
    // Two connections at once, lines split across writes.
    let mut a = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    let mut b = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    for i in 0..1000 {
        a.write_all(format!("a {i}\n").as_bytes()).unwrap();
        b.write_all(format!("b {i}").as_bytes()).unwrap();
        b.write_all(b"\r\n").unwrap();
    }
    a.write_all(format!("{}\nafter long\n", "x".repeat(500)).as_bytes())
        .unwrap();
    drop((a, b));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"{\"n\":1}\n{\"n\":2}\n", ("127.0.0.1", udp))
        .unwrap();
    sock.send_to(b"not json", ("127.0.0.1", udp)).unwrap();
    let out = dir.path().join("out.ndjson");
    wait_lines(&mut agent, &out, 2003);
    wait_lines(&mut agent, &dir.path().join("dead.ndjson"), 2);
    agent.stop_blocking();
    let events = json_lines(&out);
    assert_eq!(events.len(), 2003);
    for stream in ["a", "b"] {
        let seq: Vec<String> = events
            .iter()
            .filter_map(|e| e["body"].as_str())
            .filter(|b| b.starts_with(&format!("{stream} ")))
            .map(str::to_owned)
            .collect();
        let want: Vec<String> = (0..1000).map(|i| format!("{stream} {i}")).collect();
        assert_eq!(seq, want, "stream {stream} out of order or incomplete");
    }
    by_body(&events, "after long");
    let udp_events: Vec<_> = events
        .iter()
        .filter(|e| e["headers"]["from"].is_string())
        .collect();
    assert_eq!(udp_events.len(), 2);
    // A plain JSON object is the body as it was sent.
    assert_eq!(udp_events[0]["body"], r#"{"n":1}"#);
    assert_eq!(udp_events[1]["body"], r#"{"n":2}"#);
    let local = sock.local_addr().unwrap().to_string();
    assert_eq!(udp_events[0]["headers"]["from"], local.as_str());
    let dead = json_lines(&dir.path().join("dead.ndjson"));
    let reasons: Vec<&str> = dead
        .iter()
        .map(|e| e["headers"]["sluice.dlq.reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("size limit")),
        "{reasons:?}"
    );
    assert!(dead.iter().any(|e| e["body"] == "not json"), "{dead:#?}");
}

/// Syslog over TLS (RFC 5425) with mutual TLS: a real rsyslogd forwards through its GnuTLS
/// driver, presenting a client certificate the source's `client_ca` signed, and checking the
/// source's certificate by name; a Python client with a stranger's certificate (another CA)
/// and one with none are refused, and what they sent never arrives.
#[cfg(any(feature = "http", feature = "mqtt"))]
#[test]
fn syslog_over_mutual_tls_from_rsyslog_and_strangers_refused() {
    let gtls = Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so");
    let Some(rsyslogd) = which("rsyslogd").filter(|_| gtls.exists()) else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_RSYSLOG").is_none(),
            "rsyslogd or its TLS driver is not installed (scripts/test installs rsyslog-gnutls)"
        );
        eprintln!("skipped: rsyslogd or rsyslog-gnutls is not installed");
        return;
    };
    let certs = crate::common::repo_root().join("tests/fixtures/tls/hop");
    let c = |f: &str| certs.join(f).display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (sluice_port, rsyslog_port) = (free_port(), free_port());
    let mut agent = Agent::start(
        dir.path(),
        "syslog-tls",
        &format!(
            "channels:\n  mem: {{ type: memory }}\n\
             sources:\n  in:\n    type: syslog\n    listen: '127.0.0.1:{sluice_port}'\n    \
             peer_header: peer\n    channels: [mem]\n    \
             tls: {{ cert: '{}', key: '{}', client_ca: '{}' }}\n\
             sinks:\n  out: {{ type: file, channel: mem, path: '{d}/out.ndjson', format: ndjson }}\n",
            c("server.pem"),
            c("server-key.pem"),
            c("ca.pem"),
        ),
    );
    wait_listening(&mut agent, sluice_port);

    // Clients the source must refuse: a certificate from another CA, and none at all.
    let script = format!(
        r#"
import socket, ssl, sys
for cert, key in (("{stranger}", "{stranger_key}"), (None, None)):
    ctx = ssl.create_default_context(cafile="{ca}")
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", {sluice_port}), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                msg = b"<13>1 2026-12-07T10:00:00Z h app - - - from a stranger"
                s.sendall(str(len(msg)).encode() + b" " + msg)
                s.recv(1)
        print("not refused", cert)
    except (ssl.SSLError, ConnectionError) as e:
        print("refused", cert, type(e).__name__)
"#,
        stranger = c("stranger.pem"),
        stranger_key = c("stranger-key.pem"),
        ca = c("ca.pem"),
    );
    let out = Command::new(crate::common::python())
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run python3");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.matches("refused").count(), 2, "{said}");
    assert!(!said.contains("not refused"), "{said}");

    // rsyslogd forwards what `logger` sends it, over TLS with its client certificate.
    let work = dir.path().join("rsyslog");
    std::fs::create_dir(&work).unwrap();
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{w}\" defaultNetstreamDriver=\"gtls\"\n  \
             defaultNetstreamDriverCAFile=\"{ca}\" defaultNetstreamDriverCertFile=\"{cert}\"\n  \
             defaultNetstreamDriverKeyFile=\"{key}\")\n\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{rsyslog_port}\")\n\
             *.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{sluice_port}\" protocol=\"tcp\" \
             streamDriver=\"gtls\" streamDriverMode=\"1\" streamDriverAuthMode=\"x509/name\" \
             streamDriverPermittedPeers=\"localhost\" \
             tcp_framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\")\n",
            w = work.display(),
            ca = c("ca.pem"),
            cert = c("client.pem"),
            key = c("client-key.pem"),
        ),
    )
    .unwrap();
    let out = dir.path().join("out.ndjson");
    relay_through_rsyslog(
        &rsyslogd,
        &conf,
        rsyslog_port,
        ("secure", "auth.warning", "over tls"),
        &out,
    );
    wait_lines(&mut agent, &out, 1);
    let log = agent.stop_blocking();
    let events = json_lines(&out);
    let e = events
        .iter()
        .find(|e| e["body"].as_str().is_some_and(|b| b.contains("over tls")))
        .unwrap_or_else(|| panic!("nothing relayed over TLS in {events:#?}\n{log}"));
    let h = &e["headers"];
    assert_eq!(h["syslog.app"], "secure", "{h}");
    assert_eq!(h["syslog.facility"], "auth");
    assert_eq!(h["syslog.severity"], "warning");
    assert!(
        h["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{h}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["body"].as_str().is_some_and(|b| b.contains("stranger"))),
        "a refused client's message arrived: {events:#?}"
    );
    assert!(log.contains("TLS connection refused"), "{log}");
}

/// A `tls:` setting the source cannot use is refused when the pipeline is checked, naming the
/// file; on UDP it is refused outright.
#[test]
fn syslog_tls_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let check = |source: &str| {
        let p = dir.path().join("p.yaml");
        std::fs::write(
            &p,
            format!(
                "channels:\n  mem: {{ type: memory }}\n\
                 sources:\n  in: {{ type: syslog, listen: 0, channels: [mem], {source} }}\n\
                 sinks:\n  out: {{ type: null, channel: mem }}\n"
            ),
        )
        .unwrap();
        let o = crate::common::sluice()
            .arg("validate")
            .arg(&p)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{source}: accepted");
        crate::common::stderr(&o)
    };
    let missing = check("tls: { cert: /nonexistent/cert.pem, key: /nonexistent/key.pem }");
    if cfg!(feature = "http") {
        assert!(
            missing.contains("tls.cert /nonexistent/cert.pem"),
            "{missing}"
        );
    } else {
        assert!(
            missing.contains("`tls` needs a build with TLS"),
            "{missing}"
        );
    }
    let udp = check("protocol: udp, tls: { cert: c.pem, key: k.pem }");
    assert!(udp.contains("`tls` needs `protocol: tcp`"), "{udp}");
}
