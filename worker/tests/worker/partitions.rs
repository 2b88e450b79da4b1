//! A partitioned queue (`QUEUE_PARTITIONS`) run by real worker processes: every job runs once,
//! every partition is worked and archived, and the queue reads as one.

use std::time::Duration;

use redis::AsyncCommands;
use shared::{
    queue::{JobState, partition_name},
    testing::{TestEnv, eventually},
};

use crate::helpers::{WorkerProcess, assert_no_open_jobs, ping_job, pongs, wait_finished};

#[tokio::test]
async fn two_workers_run_every_job_of_a_partitioned_queue_once_and_archive_each_partition() {
    let env = TestEnv::with(|s| {
        s.queue.partitions.insert("ping".into(), 4);
    })
    .await;
    let mut jobs = Vec::new();
    for i in 0..2000 {
        let mut job = ping_job(&env, |p| p.record = true);
        if i % 5 == 0 {
            job.partition_key = Some(format!("customer-{}", i % 7));
        }
        jobs.push(job);
    }
    env.queues.push_many("ping", &jobs).await.expect("push");
    assert_eq!(
        env.queues.counts("ping").await.expect("counts").waiting,
        2000
    );
    // a pause holds every partition
    env.queues.set_paused("ping", true).await.expect("pause");
    let mut conn = env.queues.connection();
    for p in 0..4 {
        let key = format!("{}paused", env.queues.base(&partition_name("ping", p)));
        assert!(conn.exists::<_, bool>(&key).await.expect("exists"), "{key}");
    }
    env.queues.set_paused("ping", false).await.expect("resume");

    let partitions = [("QUEUE_PARTITIONS", "ping=4")];
    let _a = WorkerProcess::spawn(&env, &partitions);
    let _b = WorkerProcess::spawn(&env, &partitions);
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let done = wait_finished(&env, &ids, Duration::from_secs(120)).await;
    assert!(done.iter().all(|j| j.state == JobState::Completed));
    assert!(done.iter().all(|j| j.queue == "ping"));
    // each ran exactly once
    let runs = pongs(&env.queues).await;
    assert_eq!(runs.len(), 2000);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice");
    // every partition held and completed some
    for p in 0..4 {
        let stats = format!("{}stats", env.queues.base(&partition_name("ping", p)));
        let n: Option<u64> = conn.hget(&stats, "completed").await.expect("hget");
        assert!(n.unwrap_or(0) > 0, "partition {p} completed none");
    }
    let c = env.queues.counts("ping").await.expect("counts");
    assert_eq!((c.completed_total, c.waiting, c.active), (2000, 0, 0));
    // the archivers copy every partition, under the queue's name
    eventually(Duration::from_secs(60), "all 2000 archived", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM job_archive WHERE queue = 'ping'")
            .fetch_one(&env.pool)
            .await
            .ok()?;
        (n == 2000).then_some(())
    })
    .await;
    assert_eq!(
        env.queues.archive_backlog("ping").await.expect("backlog"),
        0
    );
    assert_no_open_jobs(&env).await;
    env.cleanup().await;
}
