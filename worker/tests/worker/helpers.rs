//! Test helpers: in-process workers, worker processes (the real binary), private Redis servers.

use std::{
    collections::HashSet,
    net::TcpListener as StdListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use shared::{
    jobs::{EnqueueOptions, Ping},
    queue::{JobRecord, JobState, NewJob, Queues},
    testing::{TestEnv, eventually},
};
use tokio::sync::oneshot;
use uuid::Uuid;

/// A worker running inside the test process.
pub struct InProcessWorker {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessWorker {
    /// Starts a full worker (monitor, relay, HTTP) on the environment's settings.
    pub async fn start(env: &TestEnv) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (tx, rx) = oneshot::channel::<()>();
        let settings = env.settings.clone();
        let task = tokio::spawn(comet_worker::run(settings, listener, async move {
            let _ = rx.await;
        }));
        Self {
            stop: Some(tx),
            task,
        }
    }

    /// Stops it gracefully and waits for it to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task")
            .expect("worker run");
    }
}

/// A `comet-worker` process.
pub struct WorkerProcess {
    /// The child.
    pub child: Child,
}

impl WorkerProcess {
    /// Spawns the real binary on the environment (extra variables override).
    pub fn spawn(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_comet-worker"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WORKER_PORT", "0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in env.process_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("spawn comet-worker"),
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (`kill -<sig>`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Waits for the process to exit (panics after `timeout`); returns its exit status.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private `redis-server` on a free port (for tests that stop or restart Redis).
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// A free port with no server on it yet.
    pub fn reserve() -> Self {
        Self {
            port: free_port(),
            child: None,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the server and waits until it answers.
    pub async fn start(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("url");
        eventually(Duration::from_secs(10), "private redis answers", || {
            let client = client.clone();
            async move {
                let mut c = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut c).await.ok()
            }
        })
        .await;
    }

    /// Kills the server (all data is lost: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A ping job record with options.
pub fn ping_job(env: &TestEnv, tweak: impl FnOnce(&mut Ping)) -> NewJob {
    let mut ping = Ping::new(env.project_id);
    tweak(&mut ping);
    shared::jobs::Job::to_new_job(&ping, EnqueueOptions::default()).expect("job")
}

/// Waits until every id is in a finished state; returns the records (from Redis, or from the
/// job archive for a completed job already dropped from Redis).
pub async fn wait_finished(env: &TestEnv, ids: &[Uuid], timeout: Duration) -> Vec<JobRecord> {
    eventually(timeout, "all jobs finished", || async {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            for id in chunk {
                let job = match env.queues.job("ping", *id).await.ok()? {
                    Some(job) => job,
                    None => shared::db::job_archive::get(&env.pool, None, *id)
                        .await
                        .ok()??,
                };
                if !matches!(
                    job.state,
                    JobState::Completed | JobState::Dead | JobState::Cancelled
                ) {
                    return None;
                }
                out.push(job);
            }
        }
        Some(out)
    })
    .await
}

/// How many times each job ran (jobs enqueued with `record: true`).
pub async fn pongs(queues: &Queues) -> std::collections::HashMap<String, i64> {
    use redis::AsyncCommands;
    let mut conn = queues.connection();
    conn.hgetall(format!("{}pongs", queues.base("ping")))
        .await
        .expect("pongs")
}

/// A queue script as the queue loads it (with its helpers), for tests that drive the scripts
/// directly.
pub fn script(name: &str) -> redis::Script {
    redis::Script::new(&shared::queue::script_source(name))
}

/// Asserts no job of any project is open any more: the open counts the scripts keep are
/// empty (a project is removed once its count reaches 0).
pub async fn assert_no_open_jobs(env: &TestEnv) {
    use redis::AsyncCommands;
    let mut conn = env.queues.connection();
    for q in shared::jobs::QUEUES {
        let key = format!("{}open_by_project", env.queues.base(q));
        let left: Vec<(String, f64)> = conn.zrange_withscores(&key, 0, -1).await.expect("zrange");
        assert!(left.is_empty(), "{key} still counts {left:?}");
        // and each project's own view: no open state counted, nothing in the open index
        let base = env.queues.base(q);
        let states: std::collections::HashMap<String, i64> = conn
            .hgetall(format!("{base}project_states"))
            .await
            .expect("hgetall");
        let open: Vec<_> = states
            .iter()
            .filter(|(f, _)| {
                !f.ends_with("|completed") && !f.ends_with("|dead") && !f.ends_with("|cancelled")
            })
            .collect();
        assert!(
            open.is_empty(),
            "{base}project_states still counts {open:?}"
        );
        let indexed: Vec<String> = conn
            .zrange(format!("{base}open_index"), 0, -1)
            .await
            .expect("zrange");
        assert!(
            indexed.is_empty(),
            "{base}open_index still holds {indexed:?}"
        );
    }
    let open = env
        .queues
        .open_jobs(shared::jobs::QUEUES, env.project_id)
        .await
        .expect("open jobs");
    assert_eq!(open, 0);
}

/// A free TCP port (for a worker process's `WORKER_PORT`).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The value of the Prometheus sample `name` whose labels include `labels`, if it is rendered.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.strip_prefix(name)?.rsplit_once(' ')?;
        let ours = series.is_empty() || series.starts_with('{');
        let matches = labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
        (ours && matches).then(|| value.parse().ok()).flatten()
    })
}

/// The worker processes (their names) whose backend of `queue` has heartbeated at least once
/// (the `workers` registry holds `<queue>@<process>#<run>`).
pub async fn registered(queues: &Queues, queue: &str) -> HashSet<String> {
    use redis::AsyncCommands;
    let names: Vec<String> = queues
        .connection()
        .zrange(format!("{}:workers", queues.prefix()), 0, -1)
        .await
        .expect("workers");
    names
        .iter()
        .filter_map(|n| n.strip_prefix(queue)?.strip_prefix('@')?.split('#').next())
        .map(str::to_owned)
        .collect()
}

/// A worker's `/metrics` text, once its HTTP server answers.
pub async fn metrics(port: u16) -> Option<String> {
    let res = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    res.text().await.ok()
}

/// Leases the next job of `queue` to `worker` by running the fetch script directly, as a worker
/// that then stalls or dies would (nobody heartbeats it); returns the job's fencing token.
pub async fn lease_by_hand(env: &TestEnv, queue: &str, worker: &str, lease_ms: u64) -> String {
    let reply: Vec<redis::Value> = script("fetch")
        .key(env.queues.base(queue))
        .arg(worker)
        .arg(1)
        .arg(lease_ms)
        .arg(100)
        .invoke_async(&mut env.queues.connection())
        .await
        .expect("fetch script");
    // { next due, now, then per job: id, kind, payload, attempts, max, token, … }
    redis::from_redis_value_ref(reply.get(7).expect("a job was leased")).expect("token")
}

/// A private Redis Cluster of 3 masters and 3 replicas (`redis-server --cluster-enabled yes`
/// on free ports, `redis-cli --cluster create`), for tests that kill a master. No persistence;
/// `cluster-node-timeout` 1 s, so a dead master's replica takes over in a few seconds.
pub struct PrivateCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<(u16, Option<Child>)>,
}

impl PrivateCluster {
    /// Starts the six nodes, creates the cluster and waits until every node says it is ok.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            nodes.push((port, Some(spawn_node(dir.path(), port))));
        }
        for (port, _) in &nodes {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            eventually(Duration::from_secs(10), "a cluster node answers", || {
                let client = client.clone();
                async move {
                    let mut c = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING").query_async::<String>(&mut c).await.ok()
                }
            })
            .await;
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self { _dir: dir, nodes };
        for (port, _) in &cluster.nodes {
            let port = *port;
            eventually(
                Duration::from_secs(30),
                "the cluster is ok",
                || async move {
                    let info: String = cluster_cmd(port, redis::cmd("CLUSTER").arg("INFO"))?;
                    info.contains("cluster_state:ok").then_some(())
                },
            )
            .await;
            // a replica that has not finished its first sync cannot take over: wait for it
            eventually(
                Duration::from_secs(30),
                "the replicas are in sync",
                || async move {
                    let info: String = cluster_cmd(port, redis::cmd("INFO").arg("replication"))?;
                    (info.contains("role:master") || info.contains("master_link_status:up"))
                        .then_some(())
                },
            )
            .await;
        }
        cluster
    }

    /// Its `REDIS_URL`, through the three first nodes.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The port of the master serving `key`'s slot now (asked of a live node); none while
    /// the slot's master is failing and no replica has taken over yet.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let live = self
            .nodes
            .iter()
            .find(|(_, c)| c.is_some())
            .expect("a live node")
            .0;
        let slot: u16 = cluster_cmd(live, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .expect("CLUSTER KEYSLOT");
        let nodes: String =
            cluster_cmd(live, redis::cmd("CLUSTER").arg("NODES")).expect("CLUSTER NODES");
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            if serves {
                let port = fields[1]
                    .split(['@', ','])
                    .next()
                    .and_then(|a| a.rsplit_once(':'));
                return port.and_then(|(_, p)| p.parse().ok());
            }
        }
        None
    }

    /// Starts the node on `port` again (after [`Self::kill`]): empty, it rejoins as a replica
    /// of whichever node took its slots over and syncs from it.
    pub fn restart(&mut self, port: u16) {
        let child = spawn_node(self._dir.path(), port);
        let node = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("a node");
        node.1 = Some(child);
    }

    /// `CLUSTER NODES` as each live node sees it (for a failure's message).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (port, child) in &self.nodes {
            if child.is_some() {
                let view: Option<String> = cluster_cmd(*port, redis::cmd("CLUSTER").arg("NODES"));
                let log =
                    std::fs::read_to_string(self._dir.path().join(format!("node-{port}.log")))
                        .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                out.push_str(&format!(
                    "node {port}:\n{}\nlog:\n{}\n",
                    view.unwrap_or_default(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        out
    }

    /// SIGKILLs the node on `port` (its data is gone: nothing is on disk).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("a node");
        if let Some(mut c) = node.1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A cluster node on `port` (its cluster state in `dir/nodes-<port>.conf`, its log beside it).
fn spawn_node(dir: &std::path::Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--logfile", &format!("node-{port}.log")])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

/// One command to one cluster node (no redirections followed).
fn cluster_cmd<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    cmd.query(&mut conn).ok()
}
