//! `comet-bench`: Comet's side of the queue benchmarks (driven by `worker/bench/run.sh`).
//!
//! Mirrors the BullMQ peer script (`../shared/bench/peers/bullmq/bullmq_bench.js`) shape for
//! shape, so both systems are measured the same way:
//!
//! - `enqueue --mode bulk|single|single-par --n N [--chunk 1000] [--par 64]`
//! - `fill --n N [--pad P] [--report]` (untimed bulk enqueue, for `work`; `--report` prints the
//!   Redis bytes per waiting job, `--pad` adds P bytes of text to each payload)
//! - `work --n N --concurrency C` (one worker drains N jobs; timed from worker start to the N-th
//!   completed ack written in Redis)
//! - `--partitions P` (before the subcommand): the bench queue split into P partitions
//!   (`QUEUE_PARTITIONS`); `fill` and `work` also run on a Redis Cluster (`redis+cluster://`),
//!   without the one-server readings (memory, Redis CPU)
//! - `lat-worker --n N --concurrency C` (prints `READY` on stderr once subscribed, then the
//!   pickup-latency percentiles)
//! - `lat-producer --rate R --duration S` (open-loop single enqueues at R jobs/s)
//! - `clean` (deletes every key under the bench prefix, and only those)
//! - `http --url U --rate R --secs S [--header K:V] [--body-file F]` (an HTTP load generator for
//!   the API benches: POSTs open loop, latency from each request's due time; no Redis)
//! - `sse --port P --users F --out O` and `post --port P… --api-key K --rate R --secs S --out O`
//!   (the notifications bench's SSE clients and event poster: `live.rs`; no Redis)
//!
//! Every timed subcommand prints one JSON line on stdout, starting `{"system":"comet"`.
//!
//! The worker side is the production path: [`QueueBackend`] under an apalis `WorkerBuilder` with
//! the layers of `worker/src/registry.rs` (concurrency, timeout, catch-panic, the backend's ack
//! middleware), leases, heartbeats, fencing tokens, retries, maintenance and wake-ups all on, the
//! production tracing subscriber (JSON, `info`) and Prometheus recorder installed.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use apalis::prelude::WorkerBuilderExt;
use apalis_core::{
    error::BoxDynError, monitor::Monitor, task::data::Data, worker::builder::WorkerBuilder,
};
use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{
    config::{LogFormat, QueueSettings},
    jobs::{EnqueueOptions, Job},
    queue::{
        NewJob, Queues, RetryPolicy,
        backend::{BackendOptions, QueueBackend},
    },
};
use tokio::sync::Notify;
use uuid::Uuid;

mod http;
mod live;

/// The no-op benchmark job: `i` is its number, `t` the producer's CLOCK_MONOTONIC (ns) taken
/// just before the enqueue call (latency runs only).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchJob {
    i: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<u64>,
}

/// The tenant every bench job belongs to.
const PROJECT: Uuid = Uuid::from_u128(0x000b_e9c4_0000_4000_8000_0000_0000_0001);

impl Job for BenchJob {
    const QUEUE: &'static str = "bench";
    // The same policy as `ping`, the production no-op job.
    const POLICY: RetryPolicy = shared::jobs::Ping::POLICY;
    fn project_id(&self) -> Uuid {
        PROJECT
    }
}

#[derive(Parser)]
#[command(about = "Comet queue benchmarks (see BENCHMARKS.md)")]
struct Cli {
    /// Redis to use (only keys under --prefix are touched).
    #[arg(
        long,
        env = "BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Key prefix of the benchmark's queues.
    #[arg(long, env = "BENCH_PREFIX", default_value = "bench-comet")]
    prefix: String,
    /// Most jobs one fetch leases (`JOB_FETCH_BATCH`; default: the production default).
    #[arg(long, env = "JOB_FETCH_BATCH")]
    fetch_batch: Option<usize>,
    /// Replicas every enqueue and outcome waits for (`REDIS_WAIT_REPLICAS`; default 0: off).
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0)]
    wait_replicas: u32,
    /// Partitions of the bench queue (`QUEUE_PARTITIONS`; default 1).
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    partitions: u16,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Bulk,
    Single,
    SinglePar,
}

#[derive(Subcommand)]
enum Cmd {
    /// Timed enqueue of N jobs.
    Enqueue {
        #[arg(long, value_enum, default_value = "bulk")]
        mode: Mode,
        #[arg(long, default_value_t = 50_000)]
        n: u64,
        /// Jobs per bulk call.
        #[arg(long, default_value_t = 1000)]
        chunk: u64,
        /// Enqueues in flight for single-par.
        #[arg(long, default_value_t = 64)]
        par: usize,
    },
    /// Untimed bulk enqueue of N jobs (for `work`).
    Fill {
        #[arg(long, default_value_t = 50_000)]
        n: u64,
        /// Adds a text field of this many bytes to every job's payload (what a bigger payload
        /// costs in Redis).
        #[arg(long, default_value_t = 0)]
        pad: usize,
        /// Prints the Redis bytes per waiting job (`MEMORY USAGE` over the prefix's keys).
        #[arg(long)]
        report: bool,
    },
    /// One worker drains N jobs at the given concurrency.
    Work {
        #[arg(long, default_value_t = 50_000)]
        n: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Runs a worker until N jobs were picked up; prints pickup-latency percentiles.
    LatWorker {
        #[arg(long, default_value_t = 5000)]
        n: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Enqueues single jobs open-loop at `rate` per second for `duration` seconds.
    LatProducer {
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Deletes every key under the prefix.
    Clean,
    /// POSTs a body open loop (the API benches' load generator: `http.rs`).
    Http(http::Args),
    /// The notifications bench's SSE clients (`live.rs`).
    Sse(live::SseArgs),
    /// The notifications bench's event poster (`live.rs`).
    Post(live::PostArgs),
}

/// CLOCK_MONOTONIC in ns: the same clock in every process (Node's `process.hrtime` too).
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn out(fields: serde_json::Value) {
    let mut o = json!({"system": "comet", "version": env!("CARGO_PKG_VERSION")});
    if let (Some(o), serde_json::Value::Object(f)) = (o.as_object_mut(), fields) {
        o.extend(f);
    }
    println!("{o}");
}

/// Redis server counters: CPU seconds, commands processed, script calls.
#[derive(Clone, Copy)]
struct RedisCounters {
    cpu: f64,
    cmds: u64,
    scripts: u64,
}

/// Bytes held by the bench's own keys: the sum of `MEMORY USAGE` over every key under the
/// prefix, as the BullMQ peer measures its own (`prefixMemory`). Returns (bytes, keys).
async fn prefix_memory(queues: &Queues) -> anyhow::Result<(u64, u64)> {
    let mut conn = queues.connection();
    let (mut cursor, mut bytes, mut keys) = (0u64, 0u64, 0u64);
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", queues.prefix()))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !page.is_empty() {
            let mut pipe = redis::pipe();
            for k in &page {
                pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
            }
            let sizes: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
            bytes += sizes.into_iter().flatten().sum::<u64>();
            keys += page.len() as u64;
        }
        cursor = next;
        if cursor == 0 {
            return Ok((bytes, keys));
        }
    }
}

async fn redis_counters(queues: &Queues) -> anyhow::Result<RedisCounters> {
    let mut conn = queues.connection();
    let info: String = redis::cmd("INFO").arg("all").query_async(&mut conn).await?;
    let mut c = RedisCounters {
        cpu: 0.0,
        cmds: 0,
        scripts: 0,
    };
    for line in info.lines() {
        if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            c.cpu += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("total_commands_processed:") {
            c.cmds = v.trim().parse().unwrap_or(0);
        } else if let Some(rest) = ["evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"]
            .iter()
            .find_map(|c| line.strip_prefix(&format!("cmdstat_{c}:calls=")))
        {
            let calls = rest.split(',').next().unwrap_or("0");
            c.scripts += calls.parse::<u64>().unwrap_or(0);
        }
    }
    Ok(c)
}

fn per_job(before: RedisCounters, after: RedisCounters, n: f64) -> serde_json::Value {
    json!({
        "redis_cpu_us_per_job": (after.cpu - before.cpu) * 1e6 / n,
        "redis_cmds_per_job": (after.cmds - before.cmds) as f64 / n,
        "redis_scripts_per_job": (after.scripts - before.scripts) as f64 / n,
    })
}

fn new_job(i: u64, t: Option<u64>) -> anyhow::Result<NewJob> {
    Ok(BenchJob { i, t }.to_new_job(EnqueueOptions::default())?)
}

async fn waiting(queues: &Queues) -> anyhow::Result<u64> {
    Ok(queues.counts(BenchJob::QUEUE).await?.waiting)
}

async fn bulk(queues: &Queues, n: u64, chunk: u64) -> anyhow::Result<()> {
    bulk_padded(queues, n, chunk, 0).await
}

/// [`bulk`] with `pad` bytes of text added to every payload (`p`).
async fn bulk_padded(queues: &Queues, n: u64, chunk: u64, pad: usize) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let end = n.min(i + chunk.max(1));
        let jobs = (i..end)
            .map(|j| {
                let mut job = new_job(j, None)?;
                if pad > 0 {
                    job.payload["p"] = serde_json::Value::String("x".repeat(pad));
                }
                Ok(job)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        queues.push_many(BenchJob::QUEUE, &jobs).await?;
        i = end;
    }
    Ok(())
}

async fn enqueue(
    queues: &Queues,
    mode: Mode,
    n: u64,
    chunk: u64,
    par: usize,
) -> anyhow::Result<()> {
    queues.ping().await?;
    let rc0 = redis_counters(queues).await?;
    let t0 = Instant::now();
    match mode {
        Mode::Bulk => bulk(queues, n, chunk).await?,
        Mode::Single => {
            for i in 0..n {
                queues.push(&new_job(i, None)?).await?;
            }
        }
        Mode::SinglePar => {
            // `par` independent producers on one multiplexed connection, each awaiting its own
            // single enqueues (BullMQ: 64 lanes of `await queue.add()`).
            let next = Arc::new(AtomicUsize::new(0));
            let mut lanes = tokio::task::JoinSet::new();
            for _ in 0..par {
                let (queues, next) = (queues.clone(), next.clone());
                lanes.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                        if i >= n {
                            return Ok::<_, anyhow::Error>(());
                        }
                        queues.push(&new_job(i, None)?).await?;
                    }
                });
            }
            while let Some(r) = lanes.join_next().await {
                r??;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let rc1 = redis_counters(queues).await?;
    let w = waiting(queues).await?;
    if w != n {
        bail!("expected {n} waiting jobs, found {w}");
    }
    let (op, conc) = match mode {
        Mode::Bulk => ("enqueue-bulk", json!(format!("chunk{chunk}"))),
        Mode::Single => ("enqueue-single", json!(1)),
        Mode::SinglePar => ("enqueue-single-par", json!(par)),
    };
    let mut o =
        json!({"op": op, "conc": conc, "n": n, "secs": secs, "jobs_per_s": n as f64 / secs});
    if let (Some(o), serde_json::Value::Object(f)) =
        (o.as_object_mut(), per_job(rc0, rc1, n as f64))
    {
        o.extend(f);
    }
    out(o);
    Ok(())
}

/// What the bench handler reports to the driver.
struct Probe {
    /// Handler runs so far.
    ran: AtomicUsize,
    /// Runs to wait for.
    target: usize,
    all_ran: Notify,
    /// Pickup latencies (ns), latency runs only.
    pickups: Mutex<Vec<u64>>,
}

/// The bench handler: a no-op that returns a small result (stored, like BullMQ's `job.data.i`).
async fn run_bench(job: BenchJob, probe: Data<Arc<Probe>>) -> Result<u64, BoxDynError> {
    if let Some(t) = job.t {
        let now = mono_ns();
        probe
            .pickups
            .lock()
            .expect("pickups")
            .push(now.saturating_sub(t));
    }
    if probe.ran.fetch_add(1, Ordering::SeqCst) + 1 == probe.target {
        probe.all_ran.notify_one();
    }
    Ok(job.i)
}

/// The monitor with one bench worker, built exactly like `registry::monitor` builds `ping`'s.
fn monitor(queues: &Queues, concurrency: usize, probe: &Arc<Probe>) -> Monitor {
    let process = comet_worker::process_name();
    let opts = BackendOptions {
        concurrency,
        policy: BenchJob::POLICY,
        dead_hook: false,
    };
    let (queues, probe) = (queues.clone(), probe.clone());
    Monitor::new().register(move |run| {
        let name = format!("{}@{process}#{run}", BenchJob::QUEUE);
        let backend =
            QueueBackend::<BenchJob>::new(queues.clone(), BenchJob::QUEUE, &name, opts.clone());
        WorkerBuilder::new(name)
            .backend(backend)
            .concurrency(opts.concurrency)
            .timeout(BenchJob::POLICY.timeout)
            .layer(comet_worker::registry::catch_panics())
            .data(probe.clone())
            .build(run_bench)
    })
}

/// Production telemetry: the tracing subscriber and the Prometheus recorder.
fn production_telemetry() {
    shared::telemetry::init_tracing(LogFormat::Json);
    let _ = shared::telemetry::metrics_handle();
}

/// Waits until `n` jobs of the bench queue are completed in Redis (acks written).
async fn completed(queues: &Queues, n: u64, limit: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let c = queues.counts(BenchJob::QUEUE).await?;
        if c.completed >= n {
            return Ok(());
        }
        if t0.elapsed() > limit {
            bail!(
                "only {} of {n} jobs completed after {limit:?}: {c:?}",
                c.completed
            );
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Runs `driver` beside a monitor running the bench worker; stops the monitor when the driver
/// ends and returns the driver's result.
async fn with_worker<T>(
    queues: &Queues,
    concurrency: usize,
    probe: &Arc<Probe>,
    driver: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = monitor(queues, concurrency, probe)
        .shutdown_timeout(Duration::from_secs(30))
        .run_with_signal(async move {
            let _ = stop_rx.await;
            Ok(())
        });
    let driver = async move {
        let r = driver.await;
        let _ = stop_tx.send(());
        r
    };
    let (ran, r) = tokio::join!(run, driver);
    ran.context("monitor")?;
    r
}

async fn work(queues: &Queues, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let w = waiting(queues).await?;
    if w != n as u64 {
        bail!("expected {n} waiting jobs (run `fill` first), found {w}");
    }
    // what the n waiting jobs hold, before any runs (the BullMQ peer's `redis_mb_before`)
    let cluster = queues.client().is_cluster();
    let (waiting_bytes, waiting_keys) = if cluster {
        (0, 0) // one server's reading
    } else {
        prefix_memory(queues).await?
    };
    production_telemetry();
    let probe = Arc::new(Probe {
        ran: AtomicUsize::new(0),
        target: n,
        all_ran: Notify::new(),
        pickups: Mutex::new(Vec::new()),
    });
    let counters = || async {
        if cluster {
            Ok(None)
        } else {
            redis_counters(queues).await.map(Some)
        }
    };
    let rc0 = counters().await?;
    let t0 = Instant::now();
    let (secs, rc1) = with_worker(queues, concurrency, &probe, async {
        probe.all_ran.notified().await;
        completed(queues, n as u64, Duration::from_secs(60)).await?;
        let secs = t0.elapsed().as_secs_f64();
        Ok((secs, counters().await?))
    })
    .await?;
    let c = queues.counts(BenchJob::QUEUE).await?;
    let mut o = json!({
        "op": "process-keepResults", "conc": concurrency, "n": n, "secs": secs,
        "jobs_per_s": n as f64 / secs, "fetch_batch": queues.settings().fetch_batch,
        "completed": c.completed, "runs": probe.ran.load(Ordering::SeqCst),
        "redis_mb_before": waiting_bytes as f64 / f64::from(1u32 << 20),
        "redis_keys_before": waiting_keys,
        "partitions": queues.partitions(BenchJob::QUEUE), "cluster": cluster,
    });
    if let (Some(o), Some(rc0), Some(rc1)) = (o.as_object_mut(), rc0, rc1)
        && let serde_json::Value::Object(f) = per_job(rc0, rc1, n as f64)
    {
        o.extend(f);
    }
    out(o);
    Ok(())
}

fn pct(sorted: &[u64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)] as f64 / 1e6
}

async fn lat_worker(queues: &Queues, n: usize, concurrency: usize) -> anyhow::Result<()> {
    production_telemetry();
    let probe = Arc::new(Probe {
        ran: AtomicUsize::new(0),
        target: n,
        all_ran: Notify::new(),
        pickups: Mutex::new(Vec::with_capacity(n)),
    });
    let channel = format!("{}wake", queues.base(BenchJob::QUEUE));
    with_worker(queues, concurrency, &probe, async {
        // Ready once the worker listens for wake-ups (BullMQ: after `worker.run()`).
        let mut conn = queues.connection();
        loop {
            let subs: (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await?;
            if subs.1 > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("READY");
        tokio::time::timeout(Duration::from_secs(300), probe.all_ran.notified())
            .await
            .context("timed out waiting for the producer's jobs")?;
        completed(queues, n as u64, Duration::from_secs(60)).await
    })
    .await?;
    let mut pickups = std::mem::take(&mut *probe.pickups.lock().expect("pickups"));
    pickups.sort_unstable();
    out(json!({
        "op": "latency", "conc": concurrency, "n": n,
        "p50_ms": pct(&pickups, 50), "p99_ms": pct(&pickups, 99),
        "max_ms": pickups.last().map_or(f64::NAN, |m| *m as f64 / 1e6),
    }));
    Ok(())
}

async fn lat_producer(queues: &Queues, rate: u64, duration: u64) -> anyhow::Result<()> {
    queues.ping().await?;
    let n = rate * duration;
    let step = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let start = Instant::now();
    // The clock runs on its own thread (nanosleep, no busy loop); each add is sent off at once
    // and not awaited before the next one (open loop).
    let pacer = std::thread::spawn(move || {
        for i in 0..n {
            let target = start + step * i as u32;
            let now = Instant::now();
            if target > now {
                std::thread::sleep(target - now);
            }
            if tx.send((i, mono_ns())).is_err() {
                return;
            }
        }
    });
    let mut inflight = tokio::task::JoinSet::new();
    while let Some((i, t)) = rx.recv().await {
        let job = new_job(i, Some(t))?;
        let queues = queues.clone();
        inflight.spawn(async move { queues.push(&job).await });
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = pacer.join();
    eprintln!(
        "{}",
        json!({"producer": true, "n": n, "secs": secs, "achieved_rate": n as f64 / secs})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // the HTTP load generators need no Redis
    match cli.cmd {
        Cmd::Http(args) => return http::open_loop(args).await,
        Cmd::Sse(args) => return live::sse(args).await,
        Cmd::Post(args) => return live::post(args).await,
        _ => {}
    }
    let mut settings = QueueSettings {
        wait_replicas: cli.wait_replicas,
        ..QueueSettings::default()
    };
    settings
        .partitions
        .insert(BenchJob::QUEUE.to_owned(), cli.partitions.into());
    if let Some(b) = cli.fetch_batch {
        settings.fetch_batch = b.clamp(1, 1000);
    }
    // Keep every completed job of a run: `work` waits until all N are completed.
    if let Cmd::Work { n, .. } | Cmd::LatWorker { n, .. } = &cli.cmd {
        settings.max_completed = settings.max_completed.max(*n as u64);
    }
    let client = shared::redis_client::RedisClient::open(cli.redis_url.as_str())
        .context("Failed to parse the Redis URL")?;
    // its memory, INFO and PUBSUB readings are one server's: on a cluster, only the untimed fill,
    // the processing run (throughput) and the clean-up
    let cluster_ok = matches!(
        cli.cmd,
        Cmd::Fill { report: false, .. } | Cmd::Work { .. } | Cmd::Clean
    );
    if client.is_cluster() && !cluster_ok {
        bail!(
            "on a redis+cluster:// URL comet-bench runs only `fill` (no --report), `work` and `clean`"
        );
    }
    let queues = Queues::new(client, &cli.prefix, settings).context("Failed to configure Redis")?;
    match cli.cmd {
        Cmd::Enqueue {
            mode,
            n,
            chunk,
            par,
        } => enqueue(&queues, mode, n, chunk, par).await,
        Cmd::Fill { n, pad, report } => {
            bulk_padded(&queues, n, 1000, pad).await?;
            let w = waiting(&queues).await?;
            if w != n {
                bail!("expected {n} waiting jobs, found {w}");
            }
            if report {
                let (bytes, keys) = prefix_memory(&queues).await?;
                out(json!({
                    "op": "fill", "n": n, "pad": pad, "redis_bytes": bytes, "redis_keys": keys,
                    "bytes_per_job": bytes as f64 / n.max(1) as f64,
                }));
            }
            Ok(())
        }
        Cmd::Work { n, concurrency } => work(&queues, n, concurrency).await,
        Cmd::LatWorker { n, concurrency } => lat_worker(&queues, n, concurrency).await,
        Cmd::LatProducer { rate, duration } => lat_producer(&queues, rate, duration).await,
        Cmd::Clean => {
            let deleted = queues.purge().await?;
            eprintln!("deleted {deleted} keys under {}:*", cli.prefix);
            Ok(())
        }
        Cmd::Http(_) | Cmd::Sse(_) | Cmd::Post(_) => unreachable!("answered above"),
    }
}
