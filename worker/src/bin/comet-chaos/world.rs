//! The run's world: free ports, the private Redis (restarted on its AOF), the Comet processes
//! started from the binaries' directory with the run's environment, and the API's health.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A port no one listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// The private Redis: same port and directory across restarts, so it replays its AOF.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    pub appendfsync: String,
    pub child: Option<Child>,
}

impl Redis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", &self.appendfsync])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("Failed to start redis-server (is it installed?)")?;
        self.child = Some(child);
        let client = redis::Client::open(self.url())?;
        let started = Instant::now();
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("redis-server did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// Where the run's Redis is: one private server on its AOF, or a private Redis Cluster.
pub enum Store {
    /// One server, restarted on its AOF after the crash.
    Single(Redis),
    /// 3 masters and 3 replicas; the crash is the `ping` queue's master.
    Cluster(shared::testing::cluster::PrivateCluster),
}

impl Store {
    pub fn url(&self) -> String {
        match self {
            Self::Single(r) => r.url(),
            Self::Cluster(c) => c.url(),
        }
    }

    /// What the crash is, for the report.
    pub fn crash_name(&self) -> &'static str {
        match self {
            Self::Single(_) => "Redis SIGKILLed and restarted on its AOF",
            Self::Cluster(_) => "the ping queue's master SIGKILLed, its replica promoted",
        }
    }

    /// SIGKILLs Redis (one server: the server, restarted on its AOF a second later; a cluster:
    /// the master of the `ping` queue's slot, restarted to rejoin as a replica once another
    /// node serves the slot). Returns how long the queue had no master.
    pub async fn crash(&mut self) -> anyhow::Result<Duration> {
        let down = Instant::now();
        match self {
            Self::Single(redis) => {
                redis.kill().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                redis.start().await?;
            }
            Self::Cluster(cluster) => {
                let master = cluster
                    .master_of("{ping}")
                    .context("no master serves the ping queue")?;
                cluster.kill(master);
                while cluster.master_of("{ping}").is_none_or(|p| p == master) {
                    if down.elapsed() > Duration::from_secs(60) {
                        bail!("no replica took over in 60 s:\n{}", cluster.describe());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                cluster.restart(master);
            }
        }
        Ok(down.elapsed())
    }

    pub async fn stop(&mut self) {
        match self {
            Self::Single(redis) => redis.kill().await,
            Self::Cluster(_) => {} // stopped when dropped
        }
    }
}

/// What every Comet process of the run gets.
pub struct World {
    pub bin_dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl World {
    pub fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(bin));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    pub async fn run(&self, bin: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .with_context(|| format!("Failed to run {bin} {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "{bin} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn spawn(&self, bin: &str, extra: &[(&str, String)]) -> anyhow::Result<Child> {
        let mut cmd = self.command(bin);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("Failed to start {bin}"))
    }
}

/// Waits until the API answers `/health`.
pub async fn healthy(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while http
        .get(format!("{base}/health"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the API did not answer /health within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
