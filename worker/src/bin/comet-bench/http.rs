//! `comet-bench http`: an open-loop HTTP load generator for the API benches (events'
//! single-ingest phase). Request *i* is due at start + i/rate whatever the earlier answers; its
//! latency runs from that due time, so waiting for one of the connections counts.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::json;

use super::out;

/// This process's CPU time (user + system), in seconds, from `/proc/self/stat`.
pub(crate) fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command name (which may hold spaces) start at state (field 3)
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux)
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// `comet-bench http`: POSTs a body open loop at `rate` per second for `secs` seconds; latency
/// runs from each request's due time, so waiting for one of the `max_conns` connections counts.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// `Name: value`, repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The request body (JSON); empty without it.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 256)]
    max_conns: usize,
    /// Writes each request's due offset and latency (ms, one line each) to this file.
    #[arg(long)]
    series: Option<std::path::PathBuf>,
}

/// `comet-bench http`: see [`Args`]. Prints one JSON line.
pub(crate) async fn open_loop(args: Args) -> anyhow::Result<()> {
    let Args {
        url,
        rate,
        secs,
        headers,
        body_file,
        max_conns,
        series,
    } = args;
    let body = match body_file {
        Some(f) => std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
        None => Vec::new(),
    };
    let mut map = reqwest::header::HeaderMap::new();
    map.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    for h in &headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?} is not `Name: value`"))?;
        map.insert(
            reqwest::header::HeaderName::try_from(k.trim())?,
            reqwest::header::HeaderValue::try_from(v.trim())?,
        );
    }
    let client = reqwest::Client::builder()
        .default_headers(map)
        .http1_only()
        .pool_max_idle_per_host(max_conns)
        .timeout(Duration::from_secs(30))
        .build()?;
    let conns = Arc::new(tokio::sync::Semaphore::new(max_conns.max(1)));
    let n = rate * secs;
    let step = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let cpu0 = own_cpu_secs();
    let start = Instant::now() + Duration::from_millis(50);
    let mut inflight = tokio::task::JoinSet::new();
    for i in 0..n {
        let due = start + step * u32::try_from(i)?;
        tokio::time::sleep_until(due.into()).await;
        let (client, url, body, conns) = (client.clone(), url.clone(), body.clone(), conns.clone());
        inflight.spawn(async move {
            let _conn = conns.acquire_owned().await;
            let status = match client.post(&url).body(body).send().await {
                Ok(r) => {
                    let s = r.status().as_u16();
                    match r.bytes().await {
                        Ok(_) => s,
                        Err(_) => 0,
                    }
                }
                Err(_) => 0,
            };
            (i, status, due.elapsed())
        });
    }
    let mut lats = Vec::with_capacity(n as usize);
    let mut each = Vec::with_capacity(n as usize);
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    while let Some(r) = inflight.join_next().await {
        let (i, status, lat) = r?;
        lats.push(lat);
        each.push((i, lat));
        *statuses.entry(status.to_string()).or_default() += 1;
    }
    if let Some(path) = &series {
        // one line per request in sending order: its due offset and latency, in ms
        each.sort_unstable();
        let lines: String = each
            .iter()
            .map(|(i, l)| {
                format!(
                    "{:.3} {:.3}\n",
                    (step * u32::try_from(*i).unwrap_or(0)).as_secs_f64() * 1e3,
                    l.as_secs_f64() * 1e3
                )
            })
            .collect();
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    let wall = start.elapsed().as_secs_f64();
    lats.sort_unstable();
    let pct = |p: f64| {
        lats.get(((lats.len() as f64 * p / 100.0).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    out(json!({
        "http": true, "n": n, "offered": rate, "secs": secs,
        "achieved": lats.len() as f64 / wall,
        "p50_ms": pct(50.0), "p99_ms": pct(99.0), "max_ms": pct(100.0),
        "statuses": statuses, "max_conns": max_conns,
        "driver_cpu_s": own_cpu_secs() - cpu0,
    }));
    Ok(())
}
