//! Working with a dead-letter channel's events: selecting them by their `sluice.dlq.*`
//! headers, counting them by component, stage, class and reason, and replaying a selection
//! into another channel. Shared by `sluice dlq` (a stopped agent's directory) and the admin
//! server's `/dlq` endpoints (a running agent's channels).
//!
//! A replay never loses an event: each batch is put (and committed) into the target channel
//! before it leaves the DLQ, and the events not selected are put back into the DLQ, in order,
//! in the same round. A crash in between leaves an event in both (delivered twice), never in
//! neither.

use std::{collections::BTreeMap, time::Duration};

use sluice_core::{
    channel::Channel,
    dlq::{
        HEADER_CLASS, HEADER_COMPONENT, HEADER_PREFIX, HEADER_REASON, HEADER_STAGE, HEADER_TIME,
    },
    event::Event,
};

/// Which dead letters a command is about (all given filters must match).
#[derive(clap::Args, serde::Deserialize, Debug, Default)]
pub struct Selection {
    /// The reason contains this text.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// `source`, `interceptor` or `sink`.
    #[arg(long)]
    pub stage: Option<String>,
    /// `malformed`, `rejected`, `permanent`, `attempts_exhausted`, `plugin_trap`, `too_large`.
    #[arg(long)]
    pub class: Option<String>,
    /// The component that dead-lettered it.
    #[arg(long)]
    pub component: Option<String>,
    /// Dead-lettered at most this long ago (`10m`, `2h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub since: Option<Duration>,
}

/// `since=10m` in a query string.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Selection {
    pub fn matches(&self, e: &Event, now_ms: i64) -> bool {
        let h = |k| e.headers.get(k).unwrap_or_default();
        self.reason
            .as_ref()
            .is_none_or(|r| h(HEADER_REASON).contains(r.as_str()))
            && self.stage.as_ref().is_none_or(|s| h(HEADER_STAGE) == s)
            && self.class.as_ref().is_none_or(|c| h(HEADER_CLASS) == c)
            && self
                .component
                .as_ref()
                .is_none_or(|c| h(HEADER_COMPONENT) == c)
            && self.since.is_none_or(|d| {
                h(HEADER_TIME)
                    .parse::<i64>()
                    .is_ok_and(|t| now_ms - t <= d.as_millis() as i64)
            })
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `(component, stage, class, reason)` of a dead letter.
pub type Kind = (String, String, String, String);

/// Adds `e` to `counts` under its kind.
pub fn count(counts: &mut BTreeMap<Kind, u64>, e: &Event) {
    let h = |k| e.headers.get(k).unwrap_or("?").to_owned();
    *counts
        .entry((
            h(HEADER_COMPONENT),
            h(HEADER_STAGE),
            h(HEADER_CLASS),
            h(HEADER_REASON),
        ))
        .or_default() += 1;
}

/// Moves at most `limit` selected events of `dlq` into `to` (without their `sluice.dlq.*`
/// headers unless `keep_headers`); returns `(moved, kept)`.
pub async fn replay(
    dlq: &dyn Channel,
    to: &dyn Channel,
    select: &Selection,
    limit: usize,
    keep_headers: bool,
) -> Result<(usize, usize), String> {
    let now = now_ms();
    let mut left = dlq.stats().events;
    let (mut moved, mut kept) = (0usize, 0usize);
    while left > 0 {
        let Some(lease) = dlq
            .take(left.min(1000), Duration::ZERO)
            .await
            .map_err(|e| e.to_string())?
        else {
            break;
        };
        left = left.saturating_sub(lease.events().len());
        let (mut chosen, mut others) = (Vec::new(), Vec::new());
        for e in lease.events() {
            if moved + chosen.len() < limit && select.matches(e, now) {
                let mut e = e.clone();
                if !keep_headers {
                    e.headers.retain(|k, _| !k.starts_with(HEADER_PREFIX));
                }
                chosen.push(e);
            } else {
                others.push(e.clone());
            }
        }
        moved += chosen.len();
        kept += others.len();
        // Into the target first: only then may the batch leave the DLQ.
        if !chosen.is_empty() {
            to.put(chosen).await.map_err(|e| e.to_string())?;
        }
        if !others.is_empty() {
            dlq.put(others).await.map_err(|e| e.to_string())?;
        }
        lease.commit().await.map_err(|e| e.to_string())?;
    }
    Ok((moved, kept))
}

/// Counts what `dlq` holds (taken, then rolled back: the channel is left as it was).
pub async fn census(dlq: &dyn Channel, select: &Selection) -> Result<BTreeMap<Kind, u64>, String> {
    let now = now_ms();
    let mut counts = BTreeMap::new();
    let lease = dlq
        .take(dlq.stats().events.max(1), Duration::ZERO)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(lease) = lease {
        for e in lease.events().iter().filter(|e| select.matches(e, now)) {
            count(&mut counts, e);
        }
        lease.rollback().await.map_err(|e| e.to_string())?;
    }
    Ok(counts)
}
