//! Queue semantics with an in-process worker: backlogs, delays, priorities, idempotency, bad
//! payloads, and the fencing of stale attempts.

use std::time::Duration;

use chrono::Utc;
use shared::{
    jobs::{EnqueueOptions, Ping},
    queue::{JobState, NewJob},
    testing::{TestEnv, eventually},
};

use crate::helpers::{InProcessWorker, lease_by_hand, ping_job};

#[tokio::test]
async fn a_backlog_of_100k_jobs_queued_with_no_worker_drains_without_error() {
    let env = TestEnv::new().await;
    let jobs: Vec<NewJob> = (0..100_000).map(|_| ping_job(&env, |_| {})).collect();
    let out = env.queues.push_many("ping", &jobs).await.unwrap();
    assert!(out.iter().all(|e| e.created));
    assert_eq!(env.queues.counts("ping").await.unwrap().waiting, 100_000);

    let worker = InProcessWorker::start(&env).await;
    let counts = eventually(Duration::from_secs(300), "100k jobs completed", || async {
        let c = env.queues.counts("ping").await.ok()?;
        (c.completed == 100_000).then_some(c)
    })
    .await;
    assert_eq!(
        (counts.waiting, counts.active, counts.retrying, counts.dead),
        (0, 0, 0, 0)
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn ten_thousand_delayed_jobs_due_at_the_same_second_all_run() {
    let env = TestEnv::new().await;
    let due = Utc::now() + chrono::Duration::seconds(2);
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|_| {
            shared::jobs::Job::to_new_job(
                &Ping::new(env.project_id),
                EnqueueOptions {
                    run_at: Some(due),
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    env.queues.push_many("ping", &jobs).await.unwrap();
    let c = env.queues.counts("ping").await.unwrap();
    assert_eq!((c.delayed, c.waiting), (10_000, 0));

    let worker = InProcessWorker::start(&env).await;
    let c = eventually(
        Duration::from_secs(120),
        "10k delayed jobs completed",
        || async {
            let c = env.queues.counts("ping").await.ok()?;
            (c.completed == 10_000).then_some(c)
        },
    )
    .await;
    assert_eq!((c.delayed, c.dead), (0, 0));
    let (sample, _) = env
        .queues
        .list("ping", JobState::Completed, 0, 50)
        .await
        .unwrap();
    for job in sample {
        assert!(
            job.started_at.unwrap() >= due - chrono::Duration::milliseconds(5),
            "ran before it was due"
        );
    }
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn higher_priority_jobs_wait_ahead_and_equal_priorities_keep_their_order() {
    let env = TestEnv::new().await;
    let mk = |priority| {
        shared::jobs::Job::to_new_job(
            &Ping::new(env.project_id),
            EnqueueOptions {
                priority,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (low1, high, low2, urgent) = (mk(0), mk(10), mk(0), mk(1000));
    for j in [&low1, &high, &low2, &urgent] {
        env.queues.push(j).await.unwrap();
    }
    let (waiting, total) = env
        .queues
        .list("ping", JobState::Waiting, 0, 10)
        .await
        .unwrap();
    assert_eq!(total, 4);
    let order: Vec<_> = waiting.iter().map(|j| j.id).collect();
    assert_eq!(order, vec![urgent.id, high.id, low1.id, low2.id]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_second_enqueue_with_the_same_idempotency_key_returns_the_first_job() {
    let env = TestEnv::new().await;
    let opts = || EnqueueOptions {
        idempotency_key: Some("order-42".into()),
        ..Default::default()
    };
    let first = shared::jobs::Job::to_new_job(&Ping::new(env.project_id), opts()).unwrap();
    let second = shared::jobs::Job::to_new_job(&Ping::new(env.project_id), opts()).unwrap();
    assert_ne!(first.id, second.id);
    let a = env.queues.push(&first).await.unwrap();
    let b = env.queues.push(&second).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(b.id, first.id);
    assert!(env.queues.job("ping", second.id).await.unwrap().is_none());
    assert_eq!(env.queues.counts("ping").await.unwrap().waiting, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_with_an_unreadable_payload_goes_dead_at_once_with_a_readable_error() {
    let env = TestEnv::new().await;
    let mut job = ping_job(&env, |_| {});
    job.payload = serde_json::json!({ "projectId": env.project_id, "sleepMs": "soon" });
    env.queues.push(&job).await.unwrap();
    let worker = InProcessWorker::start(&env).await;
    let dead = eventually(Duration::from_secs(15), "bad job dead", || async {
        let j = env.queues.job("ping", job.id).await.ok()??;
        (j.state == JobState::Dead).then_some(j)
    })
    .await;
    assert_eq!(dead.attempts, 1);
    let err = dead.last_error.unwrap();
    assert!(err.starts_with("invalid payload at `sleepMs`:"), "{err}");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_permanent_failure_goes_dead_at_once_and_a_transient_one_retries_until_its_attempts_run_out()
 {
    let env = TestEnv::new().await;
    let permanent = ping_job(&env, |p| p.fail_permanently = true);
    let mut transient = ping_job(&env, |p| p.fail_attempts = 10);
    transient.max_attempts = 3;
    let mut recovers = ping_job(&env, |p| p.fail_attempts = 2);
    recovers.max_attempts = 3;
    for j in [&permanent, &transient, &recovers] {
        env.queues.push(j).await.unwrap();
    }
    let worker = InProcessWorker::start(&env).await;
    let ids = [permanent.id, transient.id, recovers.id];
    let done = crate::helpers::wait_finished(&env.queues, &ids, Duration::from_secs(30)).await;
    assert_eq!(
        (done[0].state, done[0].attempts, done[0].errors.len()),
        (JobState::Dead, 1, 1)
    );
    assert!(done[0].errors[0].error.contains("fail permanently"));
    assert_eq!(
        (done[1].state, done[1].attempts, done[1].errors.len()),
        (JobState::Dead, 3, 3)
    );
    let attempts: Vec<u32> = done[1].errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert_eq!(
        (done[2].state, done[2].attempts, done[2].errors.len()),
        (JobState::Completed, 3, 2)
    );
    worker.stop().await;
    env.cleanup().await;
}

/// Drives the Lua scripts directly: an attempt whose lease expired and whose job was fetched
/// again cannot write its outcome.
#[tokio::test]
async fn an_outcome_from_a_stale_attempt_changes_nothing() {
    let env = TestEnv::new().await;
    let job = ping_job(&env, |_| {});
    env.queues.push(&job).await.unwrap();
    let base = env.queues.base("ping");
    let ack = redis::Script::new(include_str!("../../../shared/src/queue/lua/ack.lua"));
    let maintain = redis::Script::new(include_str!("../../../shared/src/queue/lua/maintain.lua"));
    let mut conn = env.queues.connection();

    let stale_token = lease_by_hand(&env, "ping", "worker-a", 60_000).await;
    // Worker A stalls: its lease runs out and maintenance takes the job back.
    let _: () = redis::cmd("ZADD")
        .arg(format!("{base}active"))
        .arg(0)
        .arg(job.id.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: Vec<i64> = maintain
        .key(&base)
        .arg(100)
        .arg(86_400_000u64)
        .arg(86_400_000u64)
        .arg(100_000)
        .arg(25)
        .arg(0)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    let fresh_token = lease_by_hand(&env, "ping", "worker-b", 60_000).await;
    assert_ne!(stale_token, fresh_token);

    let ack_one = |token: String, outcome: &'static str| {
        let mut inv = ack.key(&base);
        inv.arg(25)
            .arg(1)
            .arg(0)
            .arg(job.id.to_string())
            .arg(token)
            .arg(outcome)
            .arg(0)
            .arg("boom")
            .arg("\"a\"");
        inv
    };
    let (applied, stale): (u64, u64) = ack_one(stale_token, "dead")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((applied, stale), (0, 1));
    let j = env.queues.job("ping", job.id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.worker.as_deref()),
        (JobState::Active, 2, Some("worker-b"))
    );

    let (applied, stale): (u64, u64) = ack_one(fresh_token, "ok")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((applied, stale), (1, 0));
    let j = env.queues.job("ping", job.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(
        j.errors.len(),
        1,
        "the expired lease is recorded as attempt 1's error"
    );
    assert!(j.errors[0].error.contains("lease expired"));
    env.cleanup().await;
}

#[tokio::test]
async fn a_long_job_reports_progress_while_it_runs() {
    let env = TestEnv::new().await;
    let job = ping_job(&env, |p| p.sleep_ms = 3_000);
    env.queues.push(&job).await.unwrap();
    let worker = InProcessWorker::start(&env).await;
    let midway = eventually(Duration::from_secs(15), "progress while active", || async {
        let j = env.queues.job("ping", job.id).await.ok()??;
        (j.state == JobState::Active && j.progress.is_some()).then_some(j)
    })
    .await;
    let done_midway = midway.progress.unwrap()["done"].as_u64().unwrap();
    assert!((10..100).contains(&done_midway), "{done_midway}");
    let done = crate::helpers::wait_finished(&env.queues, &[job.id], Duration::from_secs(15)).await;
    assert_eq!(done[0].progress.as_ref().unwrap()["done"], 100);
    worker.stop().await;
    env.cleanup().await;
}
