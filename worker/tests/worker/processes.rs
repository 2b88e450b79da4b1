//! Behaviour across real `comet-worker` processes: crashes, deploys, several workers, Redis
//! restarts, stalls.

use std::{collections::HashSet, time::Duration};

use shared::{
    jobs::QUEUES,
    queue::{JobState, NewJob},
    testing::{TestEnv, eventually},
};

use crate::helpers::{
    PrivateRedis, WorkerProcess, assert_no_open_jobs, free_port, metrics, ping_job, pongs,
    registered, sample, wait_finished,
};

fn ids(jobs: &[NewJob]) -> Vec<uuid::Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn jobs_held_by_a_worker_killed_with_sigkill_are_rerun_by_another_within_30_seconds() {
    let env = TestEnv::new().await;
    let jobs: Vec<NewJob> = (0..200)
        .map(|_| {
            ping_job(&env, |p| {
                p.sleep_ms = 5_000;
                p.record = true;
            })
        })
        .collect();
    env.queues.push_many("ping", &jobs).await.unwrap();
    let mut a = WorkerProcess::spawn(&env, &[("QUEUE_CONCURRENCY", "ping=200")]);
    // leased is not enough: every job must have started (a ping records itself first thing)
    eventually(
        Duration::from_secs(30),
        "worker A runs all 200 jobs",
        || async { (pongs(&env.queues).await.len() == 200).then_some(()) },
    )
    .await;

    let open = env.queues.open_jobs(QUEUES, env.project_id).await.unwrap();
    assert_eq!(open, 200, "every running job is open");
    a.signal("KILL");
    a.wait(Duration::from_secs(5)).await;
    let killed_at = tokio::time::Instant::now();
    let _b = WorkerProcess::spawn(&env, &[("QUEUE_CONCURRENCY", "ping=200")]);
    let done = wait_finished(&env, &ids(&jobs), Duration::from_secs(30)).await;
    assert!(killed_at.elapsed() <= Duration::from_secs(30));

    let runs = pongs(&env.queues).await;
    for job in &done {
        assert_eq!(job.state, JobState::Completed, "job {} lost", job.id);
        assert_eq!(job.attempts, 2, "the killed attempt counts");
        assert!(
            job.errors[0].error.contains("lease expired"),
            "{:?}",
            job.errors
        );
        assert_eq!(runs.get(&job.id.to_string()), Some(&2));
    }
    // the reaped attempts did not close the jobs; their completion did, once each
    assert_no_open_jobs(&env).await;
}

#[tokio::test]
async fn sigterm_lets_running_jobs_finish_and_hands_the_rest_back_without_losing_any() {
    let env = TestEnv::new().await;
    let jobs: Vec<NewJob> = (0..100)
        .map(|_| {
            ping_job(&env, |p| {
                p.sleep_ms = 1_500;
                p.record = true;
            })
        })
        .collect();
    env.queues.push_many("ping", &jobs).await.unwrap();
    let mut a = WorkerProcess::spawn(&env, &[("QUEUE_CONCURRENCY", "ping=20")]);
    eventually(Duration::from_secs(30), "worker A runs 20 jobs", || async {
        let c = env.queues.counts("ping").await.ok()?;
        (c.active >= 20).then_some(())
    })
    .await;

    a.signal("TERM");
    let status = a.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "graceful exit: {status:?}");
    let c = env.queues.counts("ping").await.unwrap();
    assert_eq!(c.active, 0, "nothing left leased by a stopped worker");
    assert!(c.completed >= 20, "in-flight jobs finished: {c:?}");
    assert_eq!(c.completed + c.waiting, 100, "{c:?}");
    let (waiting, _) = env
        .queues
        .list("ping", JobState::Waiting, 0, 100)
        .await
        .unwrap();
    assert!(
        waiting.iter().all(|j| j.attempts == 0),
        "unstarted jobs did not use an attempt"
    );

    let _b = WorkerProcess::spawn(&env, &[("QUEUE_CONCURRENCY", "ping=50")]);
    let done = wait_finished(&env, &ids(&jobs), Duration::from_secs(30)).await;
    let runs = pongs(&env.queues).await;
    for job in &done {
        assert_eq!((job.state, job.attempts), (JobState::Completed, 1));
        assert_eq!(
            runs.get(&job.id.to_string()),
            Some(&1),
            "ran exactly once across the deploy"
        );
    }
}

#[tokio::test]
async fn a_job_still_running_at_the_shutdown_timeout_is_released_to_run_again() {
    let env = TestEnv::new().await;
    let job = ping_job(&env, |p| {
        p.sleep_ms = 20_000;
        p.record = true;
    });
    env.queues.push(&job).await.unwrap();
    let mut a = WorkerProcess::spawn(&env, &[("SHUTDOWN_TIMEOUT_SECS", "1")]);
    eventually(Duration::from_secs(20), "job running", || async {
        let j = env.queues.job("ping", job.id).await.ok()??;
        (j.state == JobState::Active).then_some(())
    })
    .await;
    a.signal("TERM");
    a.wait(Duration::from_secs(15)).await;
    let j = env.queues.job("ping", job.id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts),
        (JobState::Waiting, 0),
        "released, attempt not used"
    );
}

#[tokio::test]
async fn three_worker_processes_on_one_queue_run_every_job_exactly_once() {
    let env = TestEnv::new().await;
    let jobs: Vec<NewJob> = (0..3000)
        .map(|_| {
            ping_job(&env, |p| {
                p.sleep_ms = 2;
                p.record = true;
            })
        })
        .collect();
    // the test environment's lease is 3 s (JOB_LEASE_SECS=3): the chaos run's setting
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let workers: Vec<WorkerProcess> = ports
        .iter()
        .map(|port| {
            let port = port.to_string();
            WorkerProcess::spawn(
                &env,
                &[("QUEUE_CONCURRENCY", "ping=16"), ("WORKER_PORT", &port)],
            )
        })
        .collect();
    eventually(
        Duration::from_secs(30),
        "three processes run the ping queue",
        || async { (registered(&env.queues, "ping").await.len() == 3).then_some(()) },
    )
    .await;
    for chunk in jobs.chunks(100) {
        env.queues.push_many("ping", chunk).await.unwrap();
    }
    let done = wait_finished(&env, &ids(&jobs), Duration::from_secs(120)).await;
    let runs = pongs(&env.queues).await;
    assert_eq!(runs.len(), 3000);
    let mut pids = HashSet::new();
    for job in &done {
        assert_eq!((job.state, job.attempts), (JobState::Completed, 1));
        assert_eq!(
            runs.get(&job.id.to_string()),
            Some(&1),
            "job {} ran more than once",
            job.id
        );
        pids.insert(job.worker.clone().unwrap());
    }
    assert!(pids.len() >= 2, "the work was shared: {pids:?}");
    assert_no_open_jobs(&env).await;
    // no process was stalled or killed: no lease may be reported lost (a guard only: the race
    // between a heartbeat and the acker is forced in shared's queue::backend unit tests)
    for port in ports {
        let text = metrics(port).await.expect("metrics");
        // exported at zero from start-up: absent or 0
        assert_eq!(
            sample(&text, "comet_leases_lost_total", &[("queue", "ping")]).unwrap_or(0.0),
            0.0
        );
    }
    drop(workers);
}

#[tokio::test]
async fn workers_recover_by_themselves_when_redis_restarts_under_load() {
    let mut redis = PrivateRedis::reserve();
    redis.start().await;
    let url = redis.url();
    let env = TestEnv::with(|s| s.redis.url = url.clone().into()).await;
    let mut w = WorkerProcess::spawn(&env, &[("QUEUE_CONCURRENCY", "ping=16")]);
    let before: Vec<NewJob> = (0..2000)
        .map(|_| ping_job(&env, |p| p.sleep_ms = 5))
        .collect();
    env.queues.push_many("ping", &before).await.unwrap();
    eventually(Duration::from_secs(30), "work under way", || async {
        let c = env.queues.counts("ping").await.ok()?;
        (c.completed >= 100).then_some(())
    })
    .await;

    redis.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker survives Redis going away"
    );
    redis.start().await;

    // Redis kept nothing; new work must flow through the same, still running, process.
    let after: Vec<NewJob> = (0..300)
        .map(|_| ping_job(&env, |p| p.record = true))
        .collect();
    let enqueued = eventually(
        Duration::from_secs(20),
        "enqueue accepted again",
        || async { env.queues.push_many("ping", &after).await.ok() },
    )
    .await;
    assert_eq!(enqueued.len(), 300);
    let done = wait_finished(&env, &ids(&after), Duration::from_secs(30)).await;
    assert!(done.iter().all(|j| j.state == JobState::Completed));
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "still the same process"
    );
    drop(w);
    redis.stop();
}

#[tokio::test]
async fn a_stalled_worker_loses_its_job_and_its_late_outcome_is_ignored() {
    let env = TestEnv::new().await;
    let job = ping_job(&env, |p| {
        p.sleep_ms = 4_000;
        p.record = true;
    });
    env.queues.push(&job).await.unwrap();
    let a_port = free_port().to_string();
    let a = WorkerProcess::spawn(&env, &[("WORKER_PORT", &a_port)]);
    let a_pid = a.pid().to_string();
    eventually(Duration::from_secs(20), "A runs the job", || async {
        let j = env.queues.job("ping", job.id).await.ok()??;
        (j.state == JobState::Active).then_some(())
    })
    .await;
    a.signal("STOP");
    let b = WorkerProcess::spawn(&env, &[]);
    let b_pid = b.pid().to_string();
    let done = eventually(Duration::from_secs(30), "B completes the job", || async {
        let j = env.queues.job("ping", job.id).await.ok()??;
        (j.state == JobState::Completed).then_some(j)
    })
    .await;
    assert!(
        done.worker
            .as_deref()
            .unwrap()
            .contains(&format!("-{b_pid}-")),
        "{:?}",
        done.worker
    );

    a.signal("CONT");
    // A's attempt wakes up, finishes its sleep and reports: the report must change nothing.
    let a_metrics = eventually(
        Duration::from_secs(30),
        "A sends its late outcome and the script finds it stale",
        || async {
            let text = metrics(a_port.parse().unwrap()).await?;
            let stale = sample(&text, "comet_stale_acks_total", &[("queue", "ping")])?;
            (stale == 1.0).then_some(text)
        },
    )
    .await;
    assert_eq!(
        // exported at zero from start-up: absent or 0
        sample(&a_metrics, "comet_jobs_total", &[("queue", "ping")]).unwrap_or(0.0),
        0.0,
        "a stale outcome is not counted as a job outcome"
    );
    let after = env.queues.job("ping", job.id).await.unwrap().unwrap();
    assert_eq!(after.state, JobState::Completed);
    assert_eq!(after.finished_at, done.finished_at);
    assert_eq!(after.result, done.result);
    assert_eq!(after.attempts, 2);
    assert!(
        !after
            .worker
            .as_deref()
            .unwrap()
            .contains(&format!("-{a_pid}-"))
    );
    assert_eq!(pongs(&env.queues).await.get(&job.id.to_string()), Some(&2));
    drop((a, b));
}
