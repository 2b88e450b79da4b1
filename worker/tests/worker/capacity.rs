//! What one worker process takes on: the queues it runs (`WORKER_QUEUES`), the jobs it runs at
//! once (`QUEUE_CONCURRENCY`) and the jobs it leases ahead of its free slots (the prefetch
//! window); and its HTTP surface (`/health`, `/ready`, `/metrics`).

use std::time::Duration;

use redis::AsyncCommands;
use shared::{
    jobs::{EnqueueOptions, Job, Ping, RevokeSessions},
    queue::{JobState, NewJob},
    testing::{TestEnv, eventually},
};
use uuid::Uuid;

use crate::helpers::{
    InProcessWorker, PrivateRedis, WorkerProcess, free_port, metrics, ping_job, registered, sample,
    wait_finished,
};

#[tokio::test]
async fn a_worker_runs_only_the_queues_named_in_worker_queues() {
    let env = TestEnv::with(|s| s.worker.queues = Some(vec!["ping".into()])).await;
    let revoke = RevokeSessions {
        project_id: env.project_id,
        user_id: Uuid::new_v4(),
        actor_id: None,
        reason: "test".into(),
        revoked_before_ms: 0,
        also: Vec::new(),
    };
    let other = revoke.to_new_job(EnqueueOptions::default()).unwrap();
    env.queues.push(&other).await.unwrap();
    let ping = ping_job(&env, |_| {});
    env.queues.push(&ping).await.unwrap();

    let worker = InProcessWorker::start(&env).await;
    wait_finished(&env, &[ping.id], Duration::from_secs(15)).await;
    // every backend of a process heartbeats on the same period: once the ping backend has
    // heartbeated twice, any other backend would have registered too
    let key = format!("{}:workers", env.queues.prefix());
    let last_heartbeat = || async {
        let names: Vec<(String, f64)> = env
            .queues
            .connection()
            .zrange_withscores(&key, 0, -1)
            .await
            .ok()?;
        names
            .into_iter()
            .find_map(|(name, at)| name.starts_with("ping@").then_some(at))
    };
    let first = eventually(Duration::from_secs(10), "ping registered", last_heartbeat).await;
    eventually(Duration::from_secs(10), "a second heartbeat", || async {
        (last_heartbeat().await? > first).then_some(())
    })
    .await;
    for queue in [RevokeSessions::QUEUE, "send_invitation"] {
        assert!(
            registered(&env.queues, queue).await.is_empty(),
            "{queue} runs"
        );
    }
    let j = env
        .queues
        .job(RevokeSessions::QUEUE, other.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Waiting, 0));
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_runs_at_most_its_concurrency_and_leases_at_most_concurrency_plus_prefetch() {
    const CONCURRENCY: usize = 3;
    let env = TestEnv::with(|s| {
        s.worker.concurrency.insert("ping".into(), CONCURRENCY);
        // the tests' 3 s lease can lapse on a starved machine (heartbeats late), and a lapsed
        // lease is rightly run again beside the late one: a count this test would misread
        s.queue.lease = Duration::from_secs(30);
    })
    .await;
    // long enough to report progress (a ping of 1 s or more reports every tenth)
    let jobs: Vec<NewJob> = (0..24)
        .map(|_| ping_job(&env, |p| p.sleep_ms = 1_000))
        .collect();
    env.queues.push_many("ping", &jobs).await.unwrap();
    let worker = InProcessWorker::start(&env).await;

    let window = CONCURRENCY + Ping::POLICY.prefetch;
    let (mut most_leased, mut most_running) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (active, _) = env
            .queues
            .list("ping", JobState::Active, 0, 100)
            .await
            .unwrap();
        // running: reported progress and not yet done (prefetched jobs have not started)
        let running = active
            .iter()
            .filter(|j| j.progress.as_ref().is_some_and(|p| p["done"] != 100))
            .count();
        // leased and not finished: prefetched (no progress yet) or running; a job that has just
        // finished (its last progress at 100) keeps its lease until the acker writes its
        // outcome, milliseconds later, while its slot already takes the next job
        let unfinished = active
            .iter()
            .filter(|j| j.progress.as_ref().is_none_or(|p| p["done"] != 100))
            .count();
        most_leased = most_leased.max(unfinished);
        most_running = most_running.max(running);
        assert!(
            unfinished <= window,
            "{unfinished} leased and unfinished, window {window}"
        );
        assert!(
            active.len() <= window + CONCURRENCY,
            "{} leased, window {window} and {CONCURRENCY} outcomes being written",
            active.len()
        );
        assert!(
            running <= CONCURRENCY,
            "{running} running, cap {CONCURRENCY}"
        );
        let c = env.queues.counts("ping").await.unwrap();
        if c.completed == 24 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not done: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        most_running, CONCURRENCY,
        "the cap is reached, not just respected"
    );
    assert_eq!(
        most_leased, window,
        "the window is filled while a backlog waits"
    );
    worker.stop().await;
}

async fn get(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let res = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = res.status().as_u16();
    Some((status, res.json().await.ok()?))
}

#[tokio::test]
async fn the_worker_serves_health_readiness_that_follows_redis_and_its_metrics() {
    let mut redis = PrivateRedis::reserve();
    redis.start().await;
    let url = redis.url();
    let env = TestEnv::with(|s| s.redis.url = url.clone().into()).await;
    let port = free_port();
    let _w = WorkerProcess::spawn(&env, &[("WORKER_PORT", &port.to_string())]);

    let health = eventually(Duration::from_secs(20), "/health answers", || {
        get(port, "/health")
    })
    .await;
    assert_eq!(health, (200, serde_json::json!({"data": {"status": "ok"}})));
    let ready = get(port, "/ready").await.unwrap();
    assert_eq!(
        ready,
        (
            200,
            serde_json::json!({"data": {"postgres": true, "redis": true}})
        )
    );

    let job = ping_job(&env, |_| {});
    env.queues.push(&job).await.unwrap();
    wait_finished(&env, &[job.id], Duration::from_secs(15)).await;
    let labels = [("queue", "ping"), ("outcome", "completed")];
    eventually(Duration::from_secs(10), "the job in /metrics", || async {
        let text = metrics(port).await?;
        (sample(&text, "comet_jobs_total", &labels)? == 1.0).then_some(())
    })
    .await;

    redis.stop();
    let down = eventually(
        Duration::from_secs(20),
        "/ready sees Redis gone",
        || async { get(port, "/ready").await.filter(|(s, _)| *s == 503) },
    )
    .await;
    assert_eq!(
        down.1,
        serde_json::json!({"data": {"postgres": true, "redis": false}})
    );
    assert_eq!(
        get(port, "/health").await.unwrap().0,
        200,
        "alive all the same"
    );
    redis.start().await;
}
