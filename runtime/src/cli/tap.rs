//! `sluice tap POINT`: prints the live events passing a point of a running agent, read from
//! its admin server's `/tap` (see `admin::tap`). The agent never waits for this client: when
//! it reads too slowly samples are dropped, and the count is shown.

use std::{
    io::Write,
    process::ExitCode,
    time::{Duration, UNIX_EPOCH},
};

use clap::{Args, ValueEnum};

use super::EXIT_RUNTIME;

#[derive(Args, Debug)]
pub struct TapArgs {
    /// `COMPONENT[:POINT]`: a source (`in`, `in:input`, `in:0` after its first interceptor,
    /// `in:output`), a channel's puts (`c`), a sink's deliveries (`out`), or `dlq`; with
    /// several pipelines, `<pipeline>/<component>`. Without it, the points are listed.
    point: Option<String>,

    /// The agent's admin server: `HOST:PORT` or an `http(s)://` URL.
    #[arg(long, default_value = "127.0.0.1:9901", value_name = "ADDR")]
    admin: String,

    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,

    /// At most this many events per second.
    #[arg(long, value_name = "N")]
    rate: Option<u32>,

    /// Only events whose header has this value.
    #[arg(long, value_name = "NAME=VALUE")]
    header: Option<String>,

    /// How to print each event.
    #[arg(long, value_enum, default_value_t = TapFormat::Ndjson)]
    format: TapFormat,

    /// Environment variable holding the admin server's bearer token.
    #[arg(long, value_name = "NAME")]
    token_env: Option<String>,

    /// CA certificate (PEM) to trust for an `https://` admin server.
    #[arg(long, value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum TapFormat {
    /// One JSON object per event (headers, body as text or `body_base64`).
    Ndjson,
    /// `time point headers | body`, for reading.
    Text,
}

pub fn run(args: TapArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match rt.block_on(tap(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `HOST:PORT` as an `http://` URL; URLs as they are.
pub(super) fn base_url(admin: &str) -> String {
    let admin = admin.trim_end_matches('/');
    if admin.starts_with("http://") || admin.starts_with("https://") {
        admin.to_owned()
    } else {
        format!("http://{admin}")
    }
}

async fn tap(args: TapArgs) -> Result<(), String> {
    let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &args.cacert {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
        client = client.add_root_certificate(cert);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(p) = &args.point {
        query.push(("point", p.clone()));
    }
    if let Some(n) = args.limit {
        query.push(("limit", n.to_string()));
    }
    if let Some(n) = args.rate {
        query.push(("rate", n.to_string()));
    }
    if let Some(h) = &args.header {
        query.push(("header", h.clone()));
    }
    let url = format!("{}/tap", base_url(&args.admin));
    let mut req = client.get(&url).query(&query);
    if let Some(var) = &args.token_env {
        let token = std::env::var(var).map_err(|_| format!("--token-env: {var} is not set"))?;
        req = req.bearer_auth(token);
    }
    let mut resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("{url}: {status}: {}", body.trim()));
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.point.is_none() {
        let names: Vec<String> = json(resp).await?;
        for n in names {
            // A closed stdout (`| head`) just ends the listing.
            if writeln!(out, "{n}").is_err() {
                break;
            }
        }
        return Ok(());
    }
    let mut pending = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let written = match args.format {
                TapFormat::Ndjson => out.write_all(&line),
                TapFormat::Text => out.write_all(readable(&line[..end]).as_bytes()),
            };
            if written.is_err() {
                return Ok(());
            }
        }
        if out.flush().is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A JSON answer of the admin server.
pub(super) async fn json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, String> {
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// `12:00:01.250 in:output host=a kind=x | body` (and the drop count when there is one).
fn readable(line: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return format!("{}\n", String::from_utf8_lossy(line));
    };
    let ms = v["time_ms"].as_i64().unwrap_or(0);
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let time: chrono::DateTime<chrono::Utc> = time.into();
    let mut s = format!(
        "{} {}",
        time.format("%H:%M:%S%.3f"),
        v["point"].as_str().unwrap_or("?")
    );
    if let Some(h) = v["headers"].as_object() {
        for (k, val) in h {
            s.push_str(&format!(" {k}={}", val.as_str().unwrap_or_default()));
        }
    }
    s.push_str(" | ");
    match (v["body"].as_str(), v["body_base64"].as_str()) {
        (Some(b), _) => s.push_str(b),
        (None, Some(b)) => s.push_str(&format!("(base64) {b}")),
        _ => {}
    }
    if let Some(d) = v["dropped"].as_u64() {
        s.push_str(&format!("  [{d} dropped: reading too slowly]"));
    }
    s.push('\n');
    s
}
