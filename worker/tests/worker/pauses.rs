//! A paused queue (`queue_pauses` and its Redis flag) is honoured by every worker process: they
//! lease nothing from it, and run its jobs as soon as it is resumed.

use std::time::Duration;

use shared::{queue::JobState, testing::TestEnv};

use crate::helpers::{WorkerProcess, ping_job, wait_finished};

#[tokio::test]
async fn a_pause_is_honoured_by_every_worker_and_a_resume_wakes_them() {
    let env = TestEnv::new().await;
    // paused as the route pauses it: the lasting row, then the flag
    let mut conn = env.pool.acquire().await.expect("acquire");
    shared::db::queue_pauses::pause(&mut conn, "ping", "test")
        .await
        .expect("pause");
    env.queues.set_paused("ping", true).await.expect("flag");
    let _a = WorkerProcess::spawn(&env, &[]);
    let _b = WorkerProcess::spawn(&env, &[]);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let job = ping_job(&env, |_| {});
        env.queues.push(&job).await.expect("push");
        ids.push(job.id);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let job = env
            .queues
            .job("ping", *id)
            .await
            .expect("redis")
            .expect("the job");
        assert_eq!(
            job.state,
            JobState::Waiting,
            "two workers, a paused queue: nothing leased"
        );
    }

    shared::db::queue_pauses::resume(&mut conn, "ping")
        .await
        .expect("resume");
    env.queues.set_paused("ping", false).await.expect("flag");
    let done = wait_finished(&env, &ids, Duration::from_secs(20)).await;
    assert!(
        done.iter().all(|j| j.state == JobState::Completed),
        "{done:?}"
    );
    drop(conn);
    env.cleanup().await;
}
