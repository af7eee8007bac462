//! `sluice top`: a terminal dashboard of a running agent, read from its admin server every
//! second (`/metrics`, `/plugins`, `/pipelines`): per source, channel and sink the event
//! rates, channel fill, DLQ counts and retries, and each plugin's health and version. `q`,
//! Esc or Ctrl-C quits.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Args;
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Cell, Gauge, Paragraph, Row, Table},
};

use super::EXIT_RUNTIME;

#[derive(Args, Debug)]
pub struct TopArgs {
    /// The agent's admin server: `HOST:PORT` or an `http(s)://` URL.
    #[arg(long, default_value = "127.0.0.1:9901", value_name = "ADDR")]
    admin: String,

    /// Environment variable holding the admin server's bearer token.
    #[arg(long, value_name = "NAME")]
    token_env: Option<String>,

    /// How often to refresh.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    every: Duration,
}

/// One scrape of `/metrics`: `(metric, component)` → value, and the DLQ series.
#[derive(Default)]
struct Scrape {
    at: Option<Instant>,
    values: BTreeMap<(String, String), f64>,
    /// `(component, stage, reason)` → events.
    dlq: BTreeMap<(String, String, String), f64>,
}

/// The labels of a Prometheus text sample, as pairs.
fn labels(s: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').trim(), value));
        rest = &after[end..];
    }
    out
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape {
            at: Some(Instant::now()),
            ..Scrape::default()
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, self::labels(l.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            let label = |k: &str| {
                labels
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let name = name.strip_prefix("sluice_").unwrap_or(name);
            if name == "dlq_events_total" {
                *s.dlq
                    .entry((label("component"), label("stage"), label("reason")))
                    .or_default() += value;
                continue;
            }
            let component = label("component");
            if !component.is_empty() {
                *s.values.entry((name.to_owned(), component)).or_default() += value;
            }
        }
        s
    }

    fn get(&self, metric: &str, component: &str) -> f64 {
        self.values
            .get(&(metric.to_owned(), component.to_owned()))
            .copied()
            .unwrap_or(0.0)
    }

    /// Components that have `metric`, in name order.
    fn components(&self, metric: &str) -> Vec<String> {
        self.values
            .keys()
            .filter(|(m, _)| m == metric)
            .map(|(_, c)| c.clone())
            .collect()
    }
}

/// What the screen shows: the last two scrapes (for rates) and the JSON answers.
#[derive(Default)]
struct View {
    now: Scrape,
    before: Scrape,
    plugins: Vec<serde_json::Value>,
    pipelines: Vec<serde_json::Value>,
    error: Option<String>,
}

impl View {
    /// Per second, between the last two scrapes.
    fn rate(&self, metric: &str, component: &str) -> f64 {
        let (Some(a), Some(b)) = (self.before.at, self.now.at) else {
            return 0.0;
        };
        let dt = b.duration_since(a).as_secs_f64();
        if dt <= 0.0 {
            return 0.0;
        }
        ((self.now.get(metric, component) - self.before.get(metric, component)) / dt).max(0.0)
    }

    fn dead(&self, component: &str) -> f64 {
        self.now
            .dlq
            .iter()
            .filter(|((c, _, _), _)| c == component)
            .fold(0.0, |sum, (_, n)| sum + n)
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    async fn get(&self, path: &str) -> Result<reqwest::Response, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        Ok(resp)
    }

    async fn refresh(&self, view: &mut View) {
        let metrics = match self.get("/metrics").await {
            Ok(r) => r.text().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match metrics {
            Ok(text) => {
                view.before = std::mem::replace(&mut view.now, Scrape::parse(&text));
                view.error = None;
            }
            Err(e) => view.error = Some(e),
        }
        if let Ok(r) = self.get("/plugins").await {
            view.plugins = super::tap::json(r).await.unwrap_or_default();
        }
        if let Ok(r) = self.get("/pipelines").await {
            view.pipelines = super::tap::json(r).await.unwrap_or_default();
        }
    }
}

fn rate(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M/s", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k/s", v / 1e3),
        v => format!("{v:.0}/s"),
    }
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn draw(f: &mut Frame, admin: &str, view: &View) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let sources = view.now.components("source_events_received_total");
    let channels = view.now.components("channel_events");
    let sinks = view.now.components("sink_events_drained_total");
    let areas = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(sources.len() as u16 + 3),
        Constraint::Length(channels.len() as u16 + 3),
        Constraint::Length(sinks.len() as u16 + 3),
        Constraint::Min(3),
    ])
    .split(f.area());

    let pipelines: Vec<String> = view
        .pipelines
        .iter()
        .map(|p| {
            format!(
                "{} ({}, {})",
                p["name"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["config_hash"]
                    .as_str()
                    .map(|h| &h[..h.len().min(12)])
                    .unwrap_or("?")
            )
        })
        .collect();
    let title = match &view.error {
        Some(e) => format!("sluice top — {admin} — {e}"),
        None => format!("sluice top — {admin} — q quits"),
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::styled(title, bold),
            Line::raw(format!("pipelines: {}", pipelines.join(", "))),
        ]),
        areas[0],
    );

    let rows = sources.iter().map(|c| {
        Row::new(vec![
            Cell::from(c.clone()),
            Cell::from(rate(view.rate("source_events_received_total", c))),
            Cell::from(rate(view.rate("source_events_accepted_total", c))),
            Cell::from(count(view.now.get("source_events_received_total", c))),
            Cell::from(count(view.now.get("source_events_dropped_total", c))),
            Cell::from(count(view.now.get("source_requests_rejected_total", c))),
            Cell::from(count(view.dead(c))),
        ])
    });
    let widths = [
        Constraint::Min(16),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(
                Row::new([
                    "source", "in", "accepted", "received", "dropped", "refused", "dlq",
                ])
                .style(bold),
            )
            .block(Block::bordered().title("sources")),
        areas[1],
    );

    let inner = Layout::vertical(vec![Constraint::Length(1); channels.len() + 1])
        .split(Block::bordered().inner(areas[2]));
    f.render_widget(Block::bordered().title("channels"), areas[2]);
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(
                "{:<20} {:>11} {:>11} {:>12}  fill",
                "channel", "put", "take", "events"
            ),
            bold,
        )),
        inner[0],
    );
    for (c, area) in channels.iter().zip(inner.iter().skip(1)) {
        let [text, bar] =
            Layout::horizontal([Constraint::Length(58), Constraint::Min(10)]).areas(*area);
        f.render_widget(
            Paragraph::new(format!(
                "{:<20} {:>11} {:>11} {:>12}",
                c,
                rate(view.rate("channel_put_total", c)),
                rate(view.rate("channel_take_total", c)),
                count(view.now.get("channel_events", c)),
            )),
            text,
        );
        let fill = view.now.get("channel_fill_ratio", c).clamp(0.0, 1.0);
        f.render_widget(Gauge::default().ratio(fill), bar);
    }

    let rows = sinks.iter().map(|c| {
        Row::new(vec![
            Cell::from(c.clone()),
            Cell::from(rate(view.rate("sink_events_drained_total", c))),
            Cell::from(count(view.now.get("sink_events_drained_total", c))),
            Cell::from(count(view.now.get("sink_retries_total", c))),
            Cell::from(count(view.now.get("sink_events_discarded_total", c))),
            Cell::from(count(view.dead(c))),
        ])
    });
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(16),
                Constraint::Length(11),
                Constraint::Length(12),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Length(9),
            ],
        )
        .header(Row::new(["sink", "out", "delivered", "retries", "discarded", "dlq"]).style(bold))
        .block(Block::bordered().title("sinks")),
        areas[3],
    );

    let rows = view.plugins.iter().map(|p| {
        let s = |k: &str| match &p[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            v => v.to_string(),
        };
        let digest = s("digest");
        Row::new(vec![
            Cell::from(s("name")),
            Cell::from(s("world")),
            Cell::from(s("version")),
            Cell::from(digest.chars().take(19).collect::<String>()),
            Cell::from(s("healthy")),
            Cell::from(s("swaps")),
        ])
    });
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(12),
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Length(20),
                Constraint::Length(8),
                Constraint::Length(6),
            ],
        )
        .header(Row::new(["plugin", "world", "version", "digest", "healthy", "swaps"]).style(bold))
        .block(Block::bordered().title("plugins")),
        areas[4],
    );
}

pub fn run(args: TopArgs) -> ExitCode {
    let token = match &args.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) => Some(t),
            Err(_) => {
                eprintln!("error: --token-env: {var} is not set");
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        None => None,
    };
    let base = super::tap::base_url(&args.admin);
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
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let client = Client { http, base, token };
    let mut view = View::default();
    rt.block_on(client.refresh(&mut view));
    let mut terminal = ratatui::init();
    let result = (|| -> std::io::Result<()> {
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                rt.block_on(client.refresh(&mut view));
                terminal.draw(|f| draw(f, &args.admin, &view))?;
                next = Instant::now() + args.every;
            }
            if event::poll(Duration::from_millis(100))? {
                if let Event::Key(k) = event::read()? {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_read_components_and_dlq_series() {
        let s = Scrape::parse(
            "# HELP x\nsluice_source_events_received_total{component=\"a/in\"} 12\n\
             sluice_channel_fill_ratio{component=\"c\"} 0.5\n\
             sluice_dlq_events_total{component=\"in\",stage=\"source\",reason=\"rejected\"} 3\n\
             sluice_config_info{pipeline=\"a\",hash=\"x\"} 1\n",
        );
        assert_eq!(s.get("source_events_received_total", "a/in"), 12.0);
        assert_eq!(s.get("channel_fill_ratio", "c"), 0.5);
        assert_eq!(
            s.dlq[&("in".into(), "source".into(), "rejected".into())],
            3.0
        );
        assert_eq!(s.components("channel_fill_ratio"), vec!["c".to_owned()]);
        assert_eq!(
            labels(r#"component="q\"x",stage="s""#),
            vec![("component", "q\"x".to_owned()), ("stage", "s".to_owned())]
        );
    }
}
