//! `comet-bench sse` and `comet-bench post`: the notifications bench's live load (issue 10) in
//! Rust, so that the load generator takes little of the two cores it shares with what it
//! measures (the Python asyncio clients used about a tenth of the machine at 1,000 events/s).
//!
//! - `sse`: one stream per user (or `per_user`), each opened with a one-use ticket and
//!   reopened with `Last-Event-ID` when it ends; records every `notification` event it reads as
//!   (event id, user index, arrival time). Driven over stdin/stdout by
//!   `api/bench/notifications_bench.py`: prints `{"ready":…}` once the streams are open,
//!   `{"n":…}` (events read so far) every 250 ms, and on `stop` (or end of input) writes
//!   `{"got":[[eventId, ix, t]…], "stats":{…}}` to `out` and exits.
//! - `post`: events open loop at `rate` per second over the ports in turn (event *i* is of
//!   type `bench.g<i mod groups>`, due at start + i/rate); writes each accepted event's id, the
//!   time its 202 was read and its group, with the latencies from the due times.
//!
//! Times are CLOCK_MONOTONIC seconds, the clock of Python's `time.monotonic()`, so the driver
//! compares them with its own.

use std::{
    io::BufRead as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::mono_ns;

fn mono_secs() -> f64 {
    mono_ns() as f64 / 1e9
}

/// Counters shared by the streams.
#[derive(Default)]
struct Stats {
    open: AtomicUsize,
    reconnects: AtomicU64,
    ticket_errors: AtomicU64,
    stream_errors: AtomicU64,
}

/// What the streams read: (event id, user index, arrival).
type Got = Arc<Mutex<Vec<(String, i64, f64)>>>;

/// `comet-bench sse`: one stream per user of `users` (JSON lines with `token` and `ix`), driven
/// over stdin/stdout (the module's documentation).
#[derive(Debug, clap::Args)]
pub(crate) struct SseArgs {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    users: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    per_user: usize,
    #[arg(long)]
    out: std::path::PathBuf,
}

/// `comet-bench sse`: see [`SseArgs`].
pub(crate) async fn sse(args: SseArgs) -> anyhow::Result<()> {
    let SseArgs {
        port,
        users,
        per_user,
        out,
    } = args;
    let text =
        std::fs::read_to_string(&users).with_context(|| format!("reading {}", users.display()))?;
    let users: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(64)
        .build()?;
    let stats = Arc::new(Stats::default());
    let got: Got = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for u in &users {
        let token = u["token"]
            .as_str()
            .context("a user without token")?
            .to_owned();
        let ix = u["ix"].as_i64().context("a user without ix")?;
        for _ in 0..per_user.max(1) {
            let (client, token, stats, got, stop) = (
                client.clone(),
                token.clone(),
                stats.clone(),
                got.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                stream(client, port, token, ix, stats, got, stop).await;
            }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let want = tasks.len();
    let t0 = Instant::now();
    while stats.open.load(Ordering::Relaxed) < want && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{}",
        json!({"ready": stats.open.load(Ordering::Relaxed), "wanted": want})
    );
    // stdin is read on a thread: a line ("stop") or its end stops the streams
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() != "stop" && !l.trim().is_empty() => continue,
                _ => break,
            }
        }
        let _ = tx.send(());
    });
    // every 250 ms until told to stop
    while tokio::time::timeout(Duration::from_millis(250), rx.recv())
        .await
        .is_err()
    {
        let n = got.lock().map_or(0, |g| g.len());
        println!("{}", json!({ "n": n }));
    }
    stop.store(true, Ordering::Relaxed);
    let got = std::mem::take(&mut *got.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let body = json!({
        "got": got.iter().map(|(e, ix, t)| json!([e, ix, t])).collect::<Vec<_>>(),
        "stats": {
            "open": stats.open.load(Ordering::Relaxed),
            "reconnects": stats.reconnects.load(Ordering::Relaxed),
            "ticket_errors": stats.ticket_errors.load(Ordering::Relaxed),
            "stream_errors": stats.stream_errors.load(Ordering::Relaxed),
            "driver_cpu_s": super::http::own_cpu_secs(),
        },
    });
    std::fs::write(&out, body.to_string()).with_context(|| format!("writing {}", out.display()))?;
    std::process::exit(0)
}

/// One user's stream: a ticket, the stream, and again with `Last-Event-ID` when it ends.
async fn stream(
    client: reqwest::Client,
    port: u16,
    token: String,
    ix: i64,
    stats: Arc<Stats>,
    got: Got,
    stop: Arc<AtomicBool>,
) {
    let base = format!("http://127.0.0.1:{port}/api/v1/notifications");
    let mut last: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let ticket = async {
            let r = client
                .post(format!("{base}/stream-ticket"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            let v: Value = r.json().await.ok()?;
            v["data"]["ticket"].as_str().map(str::to_owned)
        }
        .await;
        let Some(ticket) = ticket else {
            stats.ticket_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut req = client
            .get(format!("{base}/stream?ticket={ticket}"))
            .header("accept", "text/event-stream");
        if let Some(id) = &last {
            req = req.header("last-event-id", id.as_str());
        }
        let mut resp = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            _ => {
                stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        stats.open.fetch_add(1, Ordering::Relaxed);
        let mut buf: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let t = mono_secs();
            buf.extend_from_slice(&chunk);
            // complete events end with a blank line
            while let Some(end) = find(&buf, b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                read_event(&event, ix, t, &got, &mut last);
            }
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if !stop.load(Ordering::Relaxed) {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One SSE event: its `id:` is the resume point; a `notification` is recorded by its event id.
fn read_event(event: &[u8], ix: i64, t: f64, got: &Got, last: &mut Option<String>) {
    let text = String::from_utf8_lossy(event);
    let mut kind = "message";
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            *last = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if kind != "notification" {
        return;
    }
    if let Ok(v) = serde_json::from_str::<Value>(&data)
        && let Some(id) = v["eventId"].as_str()
        && let Ok(mut g) = got.lock()
    {
        g.push((id.to_owned(), ix, t));
    }
}

/// `comet-bench post`: events open loop over the ports in turn (the module's documentation).
#[derive(Debug, clap::Args)]
pub(crate) struct PostArgs {
    /// Repeatable: the API ports, used in turn.
    #[arg(long = "port")]
    ports: Vec<u16>,
    #[arg(long)]
    api_key: String,
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    secs: u64,
    #[arg(long, default_value_t = 20)]
    groups: u64,
    /// Connections per port.
    #[arg(long, default_value_t = 128)]
    max_conns: usize,
    #[arg(long)]
    out: std::path::PathBuf,
}

/// `comet-bench post`: see [`PostArgs`]. Writes one JSON object to `out`.
pub(crate) async fn post(args: PostArgs) -> anyhow::Result<()> {
    let PostArgs {
        ports,
        api_key,
        rate,
        secs,
        groups,
        max_conns,
        out,
    } = args;
    anyhow::ensure!(!ports.is_empty(), "no --port");
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(max_conns)
        .timeout(Duration::from_secs(30))
        .build()?;
    let conns: Vec<_> = ports
        .iter()
        .map(|_| Arc::new(tokio::sync::Semaphore::new(max_conns.max(1))))
        .collect();
    let n = rate * secs;
    let step = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let cpu0 = super::http::own_cpu_secs();
    let start = Instant::now() + Duration::from_millis(50);
    let mut inflight = tokio::task::JoinSet::new();
    for i in 0..n {
        let due = start + step * u32::try_from(i)?;
        tokio::time::sleep_until(due.into()).await;
        let k = usize::try_from(i)? % ports.len();
        let url = format!("http://127.0.0.1:{}/api/v1/events", ports[k]);
        let group = i % groups.max(1);
        let body = json!({"type": format!("bench.g{group}"), "source": "bench",
                          "payload": {"n": i}})
        .to_string();
        let (client, key, conns) = (client.clone(), api_key.clone(), conns[k].clone());
        inflight.spawn(async move {
            let _conn = conns.acquire_owned().await;
            let answer = async {
                let r = client
                    .post(&url)
                    .header("x-api-key", key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .ok()?;
                let status = r.status().as_u16();
                let v: Value = r.json().await.ok()?;
                Some((status, v["data"]["eventId"].as_str().map(str::to_owned)))
            }
            .await;
            let t = mono_secs();
            (answer, t, due.elapsed(), group)
        });
    }
    let t_last_due = mono_secs();
    let mut lats = Vec::with_capacity(usize::try_from(n)?);
    let mut sent = Vec::with_capacity(usize::try_from(n)?);
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    while let Some(r) = inflight.join_next().await {
        let (answer, t, lat, group) = r?;
        lats.push(lat);
        let status = answer.as_ref().map_or(0, |a| a.0);
        *statuses.entry(status.to_string()).or_default() += 1;
        if let Some((202, Some(id))) = answer {
            sent.push(json!([id, t, group]));
        }
    }
    let wall = start.elapsed().as_secs_f64();
    lats.sort_unstable();
    let pct = |p: f64| {
        lats.get(((lats.len() as f64 * p / 100.0).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| (d.as_secs_f64() * 1e5).round() / 100.0)
    };
    let body = json!({
        "n": n, "statuses": statuses,
        "achieved_per_s": (n as f64 / wall * 10.0).round() / 10.0,
        "post_p50_ms": pct(50.0), "post_p99_ms": pct(99.0),
        "t_last_due": t_last_due, "sent": sent,
        "driver_cpu_s": super::http::own_cpu_secs() - cpu0,
    });
    std::fs::write(&out, body.to_string()).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
