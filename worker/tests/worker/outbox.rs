//! The transactional outbox: a job exists if and only if its transaction commits, relays
//! share a backlog without waiting on each other, and they are woken after a commit by a Redis
//! publish (no `NOTIFY`), with their poll as the fallback.

use std::time::Duration;

use comet_worker::services::relay::relay_once;
use shared::{
    db::outbox,
    queue::{JobState, OutboxWaker, Queues},
    testing::{TestEnv, eventually, outbox_relay_subscribed},
};

use crate::helpers::{InProcessWorker, PrivateRedis, ping_job};

#[tokio::test]
async fn a_job_enqueued_in_a_rolled_back_transaction_never_runs() {
    let env = TestEnv::new().await;
    let worker = InProcessWorker::start(&env).await;
    let job = ping_job(&env, |p| p.record = true);

    let mut tx = env.pool.begin().await.unwrap();
    outbox::insert(&mut tx, &job).await.unwrap();
    tx.rollback().await.unwrap();

    // A job committed afterwards does run: once it has, the relay has had its chance.
    let later = ping_job(&env, |_| {});
    let mut tx = env.pool.begin().await.unwrap();
    outbox::insert(&mut tx, &later).await.unwrap();
    tx.commit().await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the committed job completes",
        || async {
            let j = env.queues.job("ping", later.id).await.ok()??;
            (j.state == JobState::Completed).then_some(())
        },
    )
    .await;

    assert!(env.queues.job("ping", job.id).await.unwrap().is_none());
    // the job can complete before the relay's transaction that deletes its row commits
    eventually(Duration::from_secs(5), "the outbox is empty", || async {
        (outbox::backlog(&env.pool).await.ok()? == 0).then_some(())
    })
    .await;
    assert!(crate::helpers::pongs(&env.queues).await.is_empty());
    worker.stop().await;
}

#[tokio::test]
async fn a_job_committed_while_redis_is_down_runs_once_redis_is_back() {
    let mut redis = PrivateRedis::reserve();
    let url = redis.url();
    let env = TestEnv::with(|s| s.redis.url = url.clone().into()).await;
    let worker = InProcessWorker::start(&env).await;

    let job = ping_job(&env, |p| p.record = true);
    let mut tx = env.pool.begin().await.unwrap();
    outbox::insert(&mut tx, &job).await.unwrap();
    tx.commit().await.unwrap();

    // Redis is down: the job waits in Postgres and shows as pending.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(outbox::backlog(&env.pool).await.unwrap(), 1);
    let pending = outbox::pending_job(&env.pool, Some(env.project_id), job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.state, JobState::Pending);

    redis.start().await;
    let queues: &Queues = &env.queues;
    eventually(
        Duration::from_secs(30),
        "the job completes after Redis comes up",
        || async {
            let j = queues.job("ping", job.id).await.ok()??;
            (j.state == JobState::Completed).then_some(())
        },
    )
    .await;
    // the relay deletes the row after the push is acknowledged: the job can finish first
    eventually(
        Duration::from_secs(10),
        "the outbox row is gone",
        || async { (outbox::backlog(&env.pool).await.ok()? == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        crate::helpers::pongs(queues).await.get(&job.id.to_string()),
        Some(&1)
    );
    worker.stop().await;
    redis.stop();
}

#[tokio::test]
async fn a_relay_that_pushes_the_same_row_twice_creates_one_job() {
    let env = TestEnv::new().await;
    let job = ping_job(&env, |_| {});
    let mut tx = env.pool.begin().await.unwrap();
    outbox::insert(&mut tx, &job).await.unwrap();
    tx.commit().await.unwrap();
    // The relay crashed after pushing but before deleting: the row is pushed again.
    let first = env.queues.push(&job).await.unwrap();
    assert!(first.created);
    assert_eq!(relay_once(&env.pool, &env.queues).await.unwrap(), 1);
    assert_eq!(env.queues.counts("ping").await.unwrap().waiting, 1);
    assert_eq!(outbox::backlog(&env.pool).await.unwrap(), 0);
}

#[tokio::test]
async fn relays_share_a_backlog_without_waiting_on_rows_another_relay_holds() {
    let env = TestEnv::new().await;
    let jobs: Vec<_> = (0..2500).map(|_| ping_job(&env, |_| {})).collect();
    let mut tx = env.pool.begin().await.unwrap();
    for job in &jobs {
        outbox::insert(&mut tx, job).await.unwrap();
    }
    tx.commit().await.unwrap();

    // another relay is in the middle of the oldest 1000 rows (its transaction is open)
    let mut holder = env.pool.begin().await.unwrap();
    let held: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT job_id FROM job_outbox ORDER BY created_at, job_id LIMIT 1000 FOR UPDATE",
    )
    .fetch_all(&mut *holder)
    .await
    .unwrap();
    assert_eq!(held.len(), 1000);
    let relayed = tokio::time::timeout(Duration::from_secs(10), relay_once(&env.pool, &env.queues))
        .await
        .expect("a relay does not wait for rows another relay holds")
        .unwrap();
    assert_eq!(relayed, 1000, "it takes the next 1000 rows");
    for id in &held {
        assert!(
            env.queues.job("ping", *id).await.unwrap().is_none(),
            "a held row was relayed"
        );
    }
    holder.rollback().await.unwrap();

    // two relays at once split the rest between them, each row pushed once
    let (a, b) = tokio::join!(
        relay_once(&env.pool, &env.queues),
        relay_once(&env.pool, &env.queues)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a + b + relayed, 2500, "{a} + {b} + {relayed}");
    assert_eq!(outbox::backlog(&env.pool).await.unwrap(), 0);
    assert_eq!(env.queues.counts("ping").await.unwrap().waiting, 2500);
}

async fn commit_one(env: &TestEnv) -> uuid::Uuid {
    let job = ping_job(env, |_| {});
    let mut tx = env.pool.begin().await.expect("begin");
    outbox::insert(&mut tx, &job).await.expect("outbox insert");
    tx.commit().await.expect("commit");
    job.id
}

#[tokio::test]
async fn a_committed_job_is_relayed_promptly_by_a_wake_after_the_commit_not_by_notify() {
    // the poll would take a minute: only the wake can relay within the test's time
    let env = TestEnv::with(|s| s.worker.outbox_poll = Duration::from_secs(60)).await;
    let worker = InProcessWorker::start(&env).await;
    outbox_relay_subscribed(&env).await;

    // committed, no wake: nothing (no NOTIFY) moves it
    let id = commit_one(&env).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(outbox::backlog(&env.pool).await.unwrap(), 1);
    assert!(env.queues.job("ping", id).await.unwrap().is_none());

    // the wake after the commit relays it at once (and the one before it, too)
    let later = commit_one(&env).await;
    let started = std::time::Instant::now();
    OutboxWaker::spawn(env.queues.clone()).wake();
    for id in [id, later] {
        eventually(Duration::from_secs(5), "the job is relayed", || async {
            env.queues.job("ping", id).await.ok()?.map(|_| ())
        })
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    worker.stop().await;
}

#[tokio::test]
async fn the_poll_relays_a_row_whose_wake_was_never_sent() {
    let env = TestEnv::with(|s| s.worker.outbox_poll = Duration::from_millis(300)).await;
    let worker = InProcessWorker::start(&env).await;
    outbox_relay_subscribed(&env).await;
    // as if the process died between its commit and its wake
    let id = commit_one(&env).await;
    eventually(
        Duration::from_secs(5),
        "the poll relays the job",
        || async { env.queues.job("ping", id).await.ok()?.map(|_| ()) },
    )
    .await;
    eventually(Duration::from_secs(5), "the outbox is empty", || async {
        (outbox::backlog(&env.pool).await.ok()? == 0).then_some(())
    })
    .await;
    worker.stop().await;
}
