//! `comet-chaos`: runs Comet under failure and counts what it lost (`./dev chaos`; a shortened
//! run is a step of `./dev test`).
//!
//! It starts its own world: a private `redis-server` with AOF (`appendfsync always` by default,
//! the setting under which an acknowledged write survives a Redis crash), its own Postgres
//! database (created on `--database-url`'s server and dropped after), one `comet-api` and
//! `--workers` `comet-worker` processes from `--bin-dir` (release builds for `./dev chaos`). It
//! enqueues `--jobs` pings that take `--sleep-ms` through the API (each 2xx is an acknowledged
//! job) while it kills a worker with SIGKILL every `--kill-every-ms` (round robin) and starts a
//! new one in its place, and kills Redis with SIGKILL once (`--redis-restart-after-ms`) and
//! restarts it on its AOF. Then it waits for every acknowledged job to finish and reads each
//! one back (Redis, or the Postgres job archive), and prints:
//!
//! - enqueued (2xx), succeeded, dead, **lost** (acknowledged and never finished, or gone);
//! - re-run: attempts beyond a job's first (every lease counts one, so a killed worker's
//!   jobs, running or fetched, count), the price of at-least-once;
//! - for each kill, the time until every job the killed worker held was running again under
//!   another worker (or finished): bounded by the lease (`--lease-secs`) plus a maintenance pass.
//!
//! Then, with `--invitations` (1,000 by default), a second phase: the demo admin invites that
//! many addresses through the API (a loopback SMTP server receives the emails) while the API
//! is SIGKILLed and restarted a third of the way and a worker two thirds of the way; a request
//! that failed is sent again. It prints the acknowledged invitations, those made but
//! unanswered (the API died after committing), the emails received, **the acknowledged ones
//! without an email** (a loss) and the duplicate emails (a worker killed between the SMTP
//! server's acceptance and the record of it sends again: at-least-once).
//!
//! With `--cluster` the world's Redis is a private Redis Cluster of 3 masters and 3 replicas,
//! and the crash is the `ping` queue's master, SIGKILLed: its replica takes over, the node is
//! started again and rejoins as a replica; the processes get `REDIS_WAIT_REPLICAS=1` unless
//! `--wait-replicas` says otherwise (without it, enqueues acknowledged in the last moment
//! before the kill can be lost with it: Redis replicates asynchronously).
//!
//! It exits non-zero on any loss.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use shared::{
    config::QueueSettings,
    queue::{JobState, Queues},
    testing::smtp::SmtpServer,
};
use sqlx::{Connection as _, Executor as _, PgConnection};
use tokio::process::Child;
use uuid::Uuid;

mod invitations;
mod world;

use invitations::Phase;
use world::{Redis, Store, World, free_port, healthy, with_database};

#[derive(Debug, Parser)]
#[command(
    name = "comet-chaos",
    about = "Comet under SIGKILLed workers and a Redis crash"
)]
struct Args {
    /// Jobs to enqueue through the API.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// How long each job takes.
    #[arg(long, default_value_t = 150)]
    sleep_ms: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// A worker is killed (SIGKILL) and replaced this often.
    #[arg(long, default_value_t = 2_000)]
    kill_every_ms: u64,
    /// Redis is killed (SIGKILL) and restarted on its AOF this long after the first enqueue;
    /// 0: never.
    #[arg(long, default_value_t = 10_000)]
    redis_restart_after_ms: u64,
    /// Redis's `appendfsync` (`always`: no acknowledged write lost; `everysec`: up to a second
    /// of writes may be).
    #[arg(long, default_value = "always")]
    appendfsync: String,
    /// The workers' job lease (`JOB_LEASE_SECS`): how long a killed worker's jobs wait.
    #[arg(long, default_value_t = 10)]
    lease_secs: u64,
    /// Where `comet-api` and `comet-worker` are (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// A Postgres URL whose server gets a database of the run's own (its database only names
    /// where to connect to create it).
    #[arg(
        long,
        env = "CHAOS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Give up waiting for the jobs after this long.
    #[arg(long, default_value_t = 900)]
    deadline_secs: u64,
    /// Enqueue requests in flight at once.
    #[arg(long, default_value_t = 16)]
    enqueue_par: usize,
    /// Run on a private Redis Cluster of 3 masters and 3 replicas instead of one Redis: the
    /// crash (`--redis-restart-after-ms`) is then the master of the `ping` queue's slot,
    /// SIGKILLed; its replica takes over and the node is started again to rejoin as a replica.
    #[arg(long)]
    cluster: bool,
    /// Partitions of the `ping` queue (`QUEUE_PARTITIONS`, 1 to 64): with `--cluster`, the
    /// master killed holds partition 0 while the others go on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    partitions: u16,
    /// Replicas every enqueue and outcome waits for (`REDIS_WAIT_REPLICAS`); default 1 with
    /// `--cluster` (without it, enqueues acknowledged just before the kill can be lost), else 0.
    #[arg(long)]
    wait_replicas: Option<u32>,
    /// Invitations sent through the API in the second phase, while the API is SIGKILLed
    /// (and restarted) once and a worker once; 0: no second phase.
    #[arg(long, default_value_t = 1_000)]
    invitations: usize,
}

/// One kill: when, whose jobs, and how long until they all ran again.
#[derive(Debug, Clone)]
struct Kill {
    held: usize,
    recovered_after: Option<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .to_path_buf(),
    };
    for bin in ["comet-api", "comet-worker"] {
        if !bin_dir.join(bin).exists() {
            bail!("{} is missing: build it first", bin_dir.join(bin).display());
        }
    }
    let dir = tempfile::tempdir().context("Failed to make a temporary directory")?;
    let mut redis = if args.cluster {
        Store::Cluster(shared::testing::cluster::PrivateCluster::start().await)
    } else {
        let mut redis = Redis {
            port: free_port()?,
            dir: dir.path().to_path_buf(),
            appendfsync: args.appendfsync.clone(),
            child: None,
        };
        redis.start().await?;
        Store::Single(redis)
    };

    let db_name = format!("comet_chaos_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&args.database_url)
        .await
        .context("Failed to connect to Postgres (--database-url)")?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .await?;
    let result = run(
        &args,
        &bin_dir,
        &mut redis,
        &with_database(&args.database_url, &db_name),
    )
    .await;
    redis.stop().await;
    let _ = admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
        )))
        .await;
    let lost = result?;
    if lost > 0 {
        eprintln!("comet-chaos: {lost} acknowledged job(s) lost");
        std::process::exit(1);
    }
    Ok(())
}

/// The run; returns how many acknowledged jobs were lost.
async fn run(
    args: &Args,
    bin_dir: &Path,
    redis: &mut Store,
    database_url: &str,
) -> anyhow::Result<usize> {
    let wait_replicas = args.wait_replicas.unwrap_or(u32::from(args.cluster));
    // the SMTP server binds first: a port picked free before it could be handed to it
    let smtp = SmtpServer::start().await;
    let api_port = free_port()?;
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let world = World {
        bin_dir: bin_dir.to_path_buf(),
        env: [
            ("APP_ENV", "development".to_owned()),
            ("DATABASE_URL", database_url.to_owned()),
            ("DATABASE_MAX_CONNECTIONS", "10".to_owned()),
            ("REDIS_URL", redis.url()),
            ("REDIS_WAIT_REPLICAS", wait_replicas.to_string()),
            ("REDIS_PREFIX", "chaos".to_owned()),
            ("JWT_SECRET", secret),
            ("PORT", api_port.to_string()),
            ("WORKER_PORT", "0".to_owned()),
            ("WORKER_QUEUES", "ping,send_invitation".to_owned()),
            ("SMTP_URL", smtp.url()),
            ("RATE_LIMIT_INVITE_PER_USER", "1000000/1".to_owned()),
            ("RATE_LIMIT_INVITE_PER_PROJECT", "1000000/1".to_owned()),
            ("QUEUE_CONCURRENCY", format!("ping={}", args.concurrency)),
            ("QUEUE_PARTITIONS", format!("ping={}", args.partitions)),
            ("JOB_LEASE_SECS", args.lease_secs.to_string()),
            ("RATE_LIMIT_ENQUEUE_PER_PROJECT", "1000000/1".to_owned()),
            (
                "JOB_MAX_OPEN_PER_PROJECT",
                (args.jobs * 2).max(1000).to_string(),
            ),
            ("SCHEDULER_ENABLED", "false".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    };
    world.run("comet-api", &["migrate"]).await?;
    let seeded = world.run("comet-api", &["seed"]).await?;
    // the line after "demo admin token (…):" is the token of the demo admin user
    let admin_token = seeded
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("demo admin token"))
        .nth(1)
        .map(|l| l.trim().to_owned())
        .context("comet-api seed printed no demo admin token")?;
    let token = world
        .run(
            "comet-api",
            &[
                "token",
                "--permission",
                "jobs:write",
                "--permission",
                "jobs:read",
            ],
        )
        .await?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .context("comet-api token printed nothing")?
        .to_owned();
    let mut api = world.spawn("comet-api", &[("RUST_LOG", "error".into())])?;
    let base = format!("http://127.0.0.1:{api_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    if let Err(e) = healthy(&http, &base).await {
        // say why: an API that exited (its port taken since it was picked?) or one that hangs
        match api.try_wait() {
            Ok(Some(status)) => {
                bail!("comet-api exited at start-up ({status}) on port {api_port}: {e}")
            }
            _ => return Err(e),
        }
    }
    let mut workers: Vec<Child> = (0..args.workers)
        .map(|_| world.spawn("comet-worker", &[]))
        .collect::<anyhow::Result<_>>()?;

    let queues = Queues::new(
        shared::redis_client::RedisClient::open(&redis.url())?,
        "chaos",
        QueueSettings {
            partitions: [("ping".to_owned(), usize::from(args.partitions))].into(),
            ..QueueSettings::default()
        },
    )?;
    let store = if args.cluster {
        format!(
            "a Redis Cluster (3 masters, 3 replicas; REDIS_WAIT_REPLICAS={wait_replicas}): the ping queue's master"
        )
    } else {
        format!("Redis (AOF, appendfsync {})", args.appendfsync)
    };
    println!(
        "comet chaos: {} pings of {} ms through the API ({} partition(s)); {} workers x {}; a worker SIGKILLed every {} ms; \
         {store} SIGKILLed {}; lease {} s",
        args.jobs,
        args.sleep_ms,
        args.partitions,
        args.workers,
        args.concurrency,
        args.kill_every_ms,
        if args.redis_restart_after_ms == 0 {
            "never".to_owned()
        } else {
            format!("once, {} ms in", args.redis_restart_after_ms)
        },
        args.lease_secs
    );

    // enqueue, concurrently with the chaos below
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let refused: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut enqueuers = Vec::new();
    for _ in 0..args.enqueue_par {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        let (acked, refused, next) = (acked.clone(), refused.clone(), next.clone());
        let (n, sleep_ms) = (args.jobs, args.sleep_ms);
        enqueuers.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                // a refused or failed request is tried again: only a 2xx acknowledges a job
                for attempt in 0.. {
                    let sent = http
                        .post(format!("{base}/api/v1/jobs/ping"))
                        .bearer_auth(&token)
                        .json(&json!({"sleepMs": sleep_ms}))
                        .send()
                        .await;
                    let why = match sent {
                        Ok(r) if r.status().is_success() => {
                            let body: Value = r.json().await.unwrap_or_default();
                            if let Some(id) =
                                body["data"]["jobId"].as_str().and_then(|s| s.parse().ok())
                            {
                                acked.lock().expect("lock").push(id);
                                break;
                            }
                            "2xx without a job id".to_owned()
                        }
                        // refused for good: no retry will change it
                        Ok(r)
                            if r.status().is_client_error()
                                && !matches!(r.status().as_u16(), 408 | 429) =>
                        {
                            let status = r.status().as_u16();
                            let body = r.text().await.unwrap_or_default();
                            *refused
                                .lock()
                                .expect("lock")
                                .entry(format!("HTTP {status}: {body}"))
                                .or_default() += 1;
                            return;
                        }
                        Ok(r) => format!("HTTP {}", r.status().as_u16()),
                        Err(e) if e.is_timeout() => "timeout".to_owned(),
                        Err(_) => "connection".to_owned(),
                    };
                    *refused.lock().expect("lock").entry(why).or_default() += 1;
                    if attempt > 200 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    let t0 = Instant::now();
    let kills: Arc<Mutex<Vec<Kill>>> = Arc::default();
    let mut trackers = Vec::new();
    let mut redis_restart: Option<(Duration, Duration)> = None;
    let deadline = t0 + Duration::from_secs(args.deadline_secs);
    let mut next_kill = t0 + Duration::from_millis(args.kill_every_ms);
    let mut victim = 0;
    let mut finished_at = None;
    let mut next_report = t0;
    loop {
        let now = Instant::now();
        if now >= next_report {
            next_report += Duration::from_secs(5);
            let c = queues.counts("ping").await.ok();
            eprintln!(
                "{:>5.1} s: {} acknowledged, refused {:?}; queue: {}",
                t0.elapsed().as_secs_f64(),
                acked.lock().expect("lock").len(),
                refused.lock().expect("lock"),
                c.map_or("unreachable".to_owned(), |c| format!(
                    "{} waiting, {} active, {} retrying, {} completed, {} dead",
                    c.waiting, c.active, c.retrying, c.completed_total, c.dead_total
                ))
            );
        }
        let enqueued = enqueuers.iter().all(|e| e.is_finished());
        let acknowledged = acked.lock().expect("lock").len();
        if enqueued && all_finished(&queues, acknowledged).await {
            finished_at = Some(t0.elapsed());
            break;
        }
        if now > deadline {
            println!(
                "deadline of {} s reached with jobs unfinished",
                args.deadline_secs
            );
            break;
        }
        if args.redis_restart_after_ms > 0
            && redis_restart.is_none()
            && now >= t0 + Duration::from_millis(args.redis_restart_after_ms)
        {
            let at = t0.elapsed();
            let down = redis.crash().await?;
            redis_restart = Some((at, down));
        }
        if now >= next_kill {
            next_kill += Duration::from_millis(args.kill_every_ms);
            let child = &mut workers[victim];
            let pid = child.id().unwrap_or_default();
            let held = held_by(&queues, pid).await.unwrap_or_default();
            let _ = child.kill().await;
            let killed_at = Instant::now();
            workers[victim] = world.spawn("comet-worker", &[])?;
            victim = (victim + 1) % workers.len();
            let (queues, kills) = (queues.clone(), kills.clone());
            let index = {
                let mut k = kills.lock().expect("lock");
                k.push(Kill {
                    held: held.len(),
                    recovered_after: None,
                });
                k.len() - 1
            };
            trackers.push(tokio::spawn(async move {
                let marker = format!("-{pid}-");
                let mut left = held;
                while !left.is_empty() && killed_at.elapsed() < Duration::from_secs(300) {
                    let mut still = Vec::new();
                    for id in left {
                        match queues.job("ping", id).await {
                            // running again elsewhere, or finished
                            Ok(Some(j))
                                if j.state == JobState::Active
                                    && !j.worker.as_deref().unwrap_or("").contains(&marker) => {}
                            Ok(Some(j))
                                if matches!(
                                    j.state,
                                    JobState::Completed | JobState::Dead | JobState::Cancelled
                                ) => {}
                            // gone from Redis: completed and archived
                            Ok(None) => {}
                            _ => still.push(id),
                        }
                    }
                    left = still;
                    if !left.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                if left.is_empty() {
                    kills.lock().expect("lock")[index].recovered_after = Some(killed_at.elapsed());
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in trackers {
        let _ = t.await;
    }
    for e in &enqueuers {
        e.abort();
    }

    // every acknowledged job, read back
    let database = sqlx::PgPool::connect(database_url).await?;
    let acked = acked.lock().expect("lock").clone();
    let (mut succeeded, mut dead, mut rerun, mut lost) = (0usize, 0usize, 0u64, Vec::new());
    for id in &acked {
        let job = match queues.job("ping", *id).await? {
            Some(j) => Some(j),
            None => shared::db::job_archive::get(&database, None, *id).await?,
        };
        match &job {
            Some(j) if j.state == JobState::Completed => succeeded += 1,
            Some(j) if j.state == JobState::Dead => dead += 1,
            _ => lost.push(*id),
        }
        rerun += job.map_or(0, |j| u64::from(j.attempts.saturating_sub(1)));
    }
    for w in &mut workers {
        let _ = w.kill().await;
    }

    let kills = kills.lock().expect("lock").clone();
    let mut recoveries: Vec<f64> = kills
        .iter()
        .filter(|k| k.held > 0)
        .filter_map(|k| k.recovered_after.map(|d| d.as_secs_f64()))
        .collect();
    recoveries.sort_by(f64::total_cmp);
    let unrecovered = kills
        .iter()
        .filter(|k| k.held > 0 && k.recovered_after.is_none())
        .count();
    let pct = |p: f64| {
        recoveries
            .get(((recoveries.len() as f64 - 1.0) * p).round() as usize)
            .map_or("-".to_owned(), |s| format!("{s:.1} s"))
    };
    let refused = refused.lock().expect("lock").clone();
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| enqueued (2xx) | {} of {} |", acked.len(), args.jobs);
    println!(
        "| enqueue requests refused or failed (retried) | {} {:?} |",
        refused.values().sum::<usize>(),
        refused
    );
    println!("| succeeded | {succeeded} |");
    println!("| dead | {dead} |");
    println!(
        "| **lost** (acknowledged, never finished) | **{}** |",
        lost.len()
    );
    println!(
        "| re-run (attempts beyond a job's first: a killed worker's leases count) | {rerun} |"
    );
    println!(
        "| workers killed (SIGKILL) | {} ({} holding jobs) |",
        kills.len(),
        kills.iter().filter(|k| k.held > 0).count()
    );
    println!(
        "| kill to its jobs running again | p50 {}, p95 {}, max {} ({} kills not recovered) |",
        pct(0.5),
        pct(0.95),
        pct(1.0),
        unrecovered
    );
    let crash_name = redis.crash_name();
    match redis_restart {
        Some((at, down)) => println!(
            "| {} | at {:.1} s, down {:.1} s |",
            crash_name,
            at.as_secs_f64(),
            down.as_secs_f64()
        ),
        None => println!("| {crash_name} | no |"),
    }
    println!(
        "| all acknowledged jobs finished after | {} |",
        finished_at.map_or("not within the deadline".to_owned(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        ))
    );
    if !lost.is_empty() {
        println!("lost, first ten: {:?}", &lost[..lost.len().min(10)]);
    }
    let mut missing = 0;
    if args.invitations > 0 {
        let mut workers: Vec<Child> = (0..args.workers)
            .map(|_| world.spawn("comet-worker", &[]))
            .collect::<anyhow::Result<_>>()?;
        let phase = Phase {
            world: &world,
            http: &http,
            base: &base,
            token: &admin_token,
            queues: &queues,
            smtp: &smtp,
        };
        missing = phase.invitations(args, &mut api, &mut workers).await?;
        for w in &mut workers {
            let _ = w.kill().await;
        }
    }
    let _ = api.kill().await;
    Ok(lost.len() + missing)
}

/// Whether the queue has finished as many jobs as were acknowledged (the stats Redis keeps
/// with each outcome, in the AOF), and holds none open.
async fn all_finished(queues: &Queues, acked: usize) -> bool {
    match queues.counts("ping").await {
        Ok(c) => {
            c.completed_total + c.dead_total >= acked as u64
                && c.waiting + c.delayed + c.active + c.retrying == 0
        }
        Err(_) => false,
    }
}

/// The ids of the jobs the worker process `pid` holds (active, leased by it).
async fn held_by(queues: &Queues, pid: u32) -> anyhow::Result<Vec<Uuid>> {
    let marker = format!("-{pid}-");
    let (active, _) = queues.list("ping", JobState::Active, 0, 10_000).await?;
    Ok(active
        .into_iter()
        .filter(|j| j.worker.as_deref().is_some_and(|w| w.contains(&marker)))
        .map(|j| j.id)
        .collect())
}
