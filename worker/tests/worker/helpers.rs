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

/// A queue script as the queue loads it (with its helpers), in the form that fails on a key it
/// was not given, for tests that drive the scripts directly (with
/// `shared::queue::queue_keys`).
pub fn script(name: &str) -> redis::Script {
    redis::Script::new(&shared::queue::script_source_checked(name))
}

/// Asserts no job of any project is open any more: the open counts the scripts keep are
/// empty (a project is removed once its count reaches 0).
pub async fn assert_no_open_jobs(env: &TestEnv) {
    use redis::AsyncCommands;
    let mut conn = env.queues.connection();
    let parts = env
        .queues
        .expand(shared::jobs::QUEUES)
        .await
        .expect("partitions");
    for q in &parts {
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
        let indexed: u64 = conn
            .exists(&[
                format!("{base}open_index"),
                format!("{base}open_pages"),
                format!("{base}open_dir"),
            ])
            .await
            .expect("exists");
        assert_eq!(indexed, 0, "{base}: the open index still holds jobs");
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
    // (what a backend does before its first fetch: until then the script leases nothing)
    env.queues
        .migrate_legacy_jobs(queue)
        .await
        .expect("layout marked");
    let reply: Vec<redis::Value> = script("fetch")
        .key(shared::queue::queue_keys(&env.queues.base(queue)))
        .arg(worker)
        .arg(1)
        .arg(lease_ms)
        .arg(100)
        .invoke_async(&mut env.queues.connection())
        .await
        .expect("fetch script");
    // { next due, now, then per job: id, payload, attempts, max, token, … }
    redis::from_redis_value_ref(reply.get(6).expect("a job was leased")).expect("token")
}
