//! Queue semantics with an in-process worker: backlogs, delays, priorities, idempotency, bad
//! payloads, retries (backoff, timeouts, panics), retention, and the fencing of stale attempts.

use std::time::Duration;

use apalis::prelude::WorkerBuilderExt;
use apalis_core::{error::BoxDynError, worker::builder::WorkerBuilder};
use chrono::Utc;
use shared::{
    jobs::{EnqueueOptions, Job, Ping},
    queue::{
        JobState, NewJob,
        backend::{BackendOptions, JobHandle, QueueBackend},
    },
    testing::{TestEnv, eventually},
};

use crate::helpers::{InProcessWorker, lease_by_hand, ping_job, script};

#[tokio::test]
async fn a_backlog_of_100k_jobs_queued_with_no_worker_drains_without_error() {
    let env = TestEnv::new().await;
    let jobs: Vec<NewJob> = (0..100_000).map(|_| ping_job(&env, |_| {})).collect();
    let out = env.queues.push_many("ping", &jobs).await.unwrap();
    assert!(out.iter().all(|e| e.created));
    assert_eq!(env.queues.counts("ping").await.unwrap().waiting, 100_000);

    let worker = InProcessWorker::start(&env).await;
    // counted by the lifetime counter: Redis keeps only the newest completed jobs once archived
    let counts = eventually(Duration::from_secs(300), "100k jobs completed", || async {
        let c = env.queues.counts("ping").await.ok()?;
        (c.completed_total == 100_000).then_some(c)
    })
    .await;
    assert_eq!(
        (counts.waiting, counts.active, counts.retrying, counts.dead),
        (0, 0, 0, 0)
    );
    worker.stop().await;
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
            (c.completed_total == 10_000).then_some(c)
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
    let done = crate::helpers::wait_finished(&env, &ids, Duration::from_secs(30)).await;
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
}

/// Drives the Lua scripts directly: an attempt whose lease expired and whose job was fetched
/// again cannot write its outcome.
#[tokio::test]
async fn an_outcome_from_a_stale_attempt_changes_nothing() {
    let env = TestEnv::new().await;
    let job = ping_job(&env, |_| {});
    env.queues.push(&job).await.unwrap();
    let base = env.queues.base("ping");
    let (ack, maintain) = (script("ack"), script("maintain"));
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
        .key(shared::queue::queue_keys(&base))
        .arg(100)
        .arg(86_400_000u64)
        .arg(86_400_000u64)
        .arg(100_000)
        .arg(25)
        .arg(0)
        .arg(1000)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    let fresh_token = lease_by_hand(&env, "ping", "worker-b", 60_000).await;
    assert_ne!(stale_token, fresh_token);

    let ack_one = |token: String, outcome: &'static str| {
        let mut inv = ack.key(shared::queue::queue_keys(&base));
        inv.arg(25)
            .arg(1)
            .arg(0)
            .arg(job.id.to_string())
            .arg(token)
            .arg(outcome)
            .arg(0)
            .arg("boom")
            .arg("\"a\"")
            // the project's and the job's bytes: unknown (the script reads them from the job)
            .arg("")
            .arg("");
        inv
    };
    // one letter per outcome: `s` stale
    let codes: Vec<String> = ack_one(stale_token, "dead")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(codes, ["s"]);
    let j = env.queues.job("ping", job.id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.worker.as_deref()),
        (JobState::Active, 2, Some("worker-b"))
    );

    let codes: Vec<String> = ack_one(fresh_token, "ok")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(codes, ["a"], "applied");
    let j = env.queues.job("ping", job.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(
        j.errors.len(),
        1,
        "the expired lease is recorded as attempt 1's error"
    );
    assert!(j.errors[0].error.contains("lease expired"));
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
    let done = crate::helpers::wait_finished(&env, &[job.id], Duration::from_secs(15)).await;
    assert_eq!(done[0].progress.as_ref().unwrap()["done"], 100);
    worker.stop().await;
}

/// Acks one attempt of `id` as failed through the ack script, retry due at once.
async fn fail_by_hand(env: &TestEnv, id: uuid::Uuid, token: String, error: &str) {
    let codes: Vec<String> = script("ack")
        .key(shared::queue::queue_keys(&env.queues.base("ping")))
        .arg(25)
        .arg(1)
        .arg(0)
        .arg(id.to_string())
        .arg(token)
        .arg("retry")
        .arg(0)
        .arg(error)
        .arg("")
        .arg("")
        .arg("")
        .invoke_async(&mut env.queues.connection())
        .await
        .expect("ack script");
    assert_eq!(codes, ["a"]);
}

#[tokio::test]
async fn a_job_keeps_the_errors_of_its_last_25_attempts() {
    let env = TestEnv::new().await;
    let mut job = ping_job(&env, |_| {});
    job.max_attempts = 40;
    env.queues.push(&job).await.unwrap();
    for attempt in 1..=30 {
        let token = lease_by_hand(&env, "ping", "worker-a", 60_000).await;
        fail_by_hand(&env, job.id, token, &format!("attempt {attempt} failed")).await;
    }
    let j = env.queues.job("ping", job.id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Retrying, 30));
    let kept: Vec<u32> = j.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(
        kept,
        (6..=30).collect::<Vec<u32>>(),
        "the oldest dropped first"
    );
    assert_eq!(j.errors[24].error, "attempt 30 failed");
    assert_eq!(j.last_error.as_deref(), Some("attempt 30 failed"));
}

#[tokio::test]
async fn finished_jobs_stay_visible_for_their_retention_and_are_trimmed_after_it() {
    let env = TestEnv::with(|s| {
        s.queue.completed_retention = Duration::from_secs(2);
        s.queue.dead_retention = Duration::from_secs(4);
    })
    .await;
    let ok = ping_job(&env, |_| {});
    let dead = ping_job(&env, |p| p.fail_permanently = true);
    for j in [&ok, &dead] {
        env.queues.push(j).await.unwrap();
    }
    let worker = InProcessWorker::start(&env).await;
    let done =
        crate::helpers::wait_finished(&env, &[ok.id, dead.id], Duration::from_secs(15)).await;
    assert_eq!(
        (done[0].state, done[1].state),
        (JobState::Completed, JobState::Dead)
    );

    // watch both at once: each must vanish, and not before its own retention has passed
    let retention = [Duration::from_secs(2), Duration::from_secs(4)];
    let mut gone_at = [None, None];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while gone_at.iter().any(Option::is_none) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not trimmed: {gone_at:?}"
        );
        for (i, job) in done.iter().enumerate() {
            if gone_at[i].is_none() && env.queues.job("ping", job.id).await.unwrap().is_none() {
                gone_at[i] = Some(Utc::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, job) in done.iter().enumerate() {
        let kept = gone_at[i].unwrap() - job.finished_at.unwrap();
        assert!(
            kept.to_std().unwrap() >= retention[i],
            "{:?} job trimmed {kept} after it finished, before its {:?} retention",
            job.state,
            retention[i]
        );
    }
    let c = env.queues.counts("ping").await.unwrap();
    assert_eq!(
        (c.completed, c.dead),
        (0, 0),
        "index entries trimmed with the jobs"
    );
    worker.stop().await;
}

#[tokio::test]
async fn beyond_the_completed_cap_the_oldest_completed_jobs_are_trimmed() {
    let env = TestEnv::with(|s| {
        s.queue.max_completed = 5;
        s.worker.concurrency.insert("ping".into(), 1);
    })
    .await;
    let jobs: Vec<NewJob> = (0..12).map(|_| ping_job(&env, |_| {})).collect();
    env.queues.push_many("ping", &jobs).await.unwrap();
    let worker = InProcessWorker::start(&env).await;
    eventually(Duration::from_secs(30), "12 run, 5 kept", || async {
        let c = env.queues.counts("ping").await.ok()?;
        (c.waiting + c.active == 0 && c.completed == 5).then_some(())
    })
    .await;
    // one at a time, in FIFO order: the last five enqueued finished last and are the ones kept
    let (kept, total) = env
        .queues
        .list("ping", JobState::Completed, 0, 10)
        .await
        .unwrap();
    assert_eq!(total, 5);
    let mut kept: Vec<_> = kept.iter().map(|j| j.id).collect();
    kept.reverse();
    assert_eq!(kept, jobs[7..].iter().map(|j| j.id).collect::<Vec<_>>());
    for j in &jobs[..7] {
        assert!(env.queues.job("ping", j.id).await.unwrap().is_none());
    }
    worker.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_job_until_it_expires_and_then_makes_a_new_one() {
    let env = TestEnv::with(|s| s.queue.idempotency_ttl = Duration::from_secs(1)).await;
    let opts = || EnqueueOptions {
        idempotency_key: Some("order-7".into()),
        ..Default::default()
    };
    let mk = || Ping::new(env.project_id).to_new_job(opts()).unwrap();
    let (first, second, third) = (mk(), mk(), mk());
    let enqueued_at = tokio::time::Instant::now();
    assert!(env.queues.push(&first).await.unwrap().created);
    let dup = env.queues.push(&second).await.unwrap();
    assert_eq!((dup.id, dup.created), (first.id, false));

    let fresh = eventually(Duration::from_secs(10), "the key expires", || async {
        let e = env.queues.push(&third).await.ok()?;
        e.created.then_some(e)
    })
    .await;
    assert!(
        enqueued_at.elapsed() >= Duration::from_millis(900),
        "expired after {:?}, before its 1 s TTL",
        enqueued_at.elapsed()
    );
    assert_eq!(fresh.id, third.id);
    assert_eq!(env.queues.counts("ping").await.unwrap().waiting, 2);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_its_drawn_backoff_and_not_before() {
    let env = TestEnv::new().await;
    let jobs: Vec<NewJob> = (0..40)
        .map(|_| {
            let mut j = ping_job(&env, |p| p.fail_attempts = 1);
            j.max_attempts = 2;
            j
        })
        .collect();
    env.queues.push_many("ping", &jobs).await.unwrap();
    let worker = InProcessWorker::start(&env).await;
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let done = crate::helpers::wait_finished(&env, &ids, Duration::from_secs(30)).await;

    // ping's policy: the first retry's delay is uniform in [0, 500 ms]; it is recorded as the
    // retry's due time (`runAt`) against the failure's time
    let ceiling = chrono::Duration::milliseconds(500);
    let mut delays = Vec::new();
    for job in &done {
        assert_eq!(
            (job.state, job.attempts, job.errors.len()),
            (JobState::Completed, 2, 1)
        );
        let (failed, due) = (job.errors[0].at, job.run_at.unwrap());
        let delay = due - failed;
        assert!(
            delay >= chrono::Duration::zero() && delay <= ceiling,
            "delay {delay} outside [0, {ceiling}]"
        );
        assert!(
            job.started_at.unwrap() >= due,
            "attempt 2 started before its backoff ended"
        );
        delays.push(delay.num_milliseconds());
    }
    let mean = delays.iter().sum::<i64>() as f64 / delays.len() as f64;
    // 40 draws of U[0, 500]: mean 250, standard error ~23 ms
    assert!(
        (150.0..=350.0).contains(&mean),
        "mean backoff {mean} ms: {delays:?}"
    );
    worker.stop().await;
}

/// Panics (`failAttempts`) or sleeps past its timeout (`sleepMs`) on the attempts it is told
/// to, else succeeds: with the worker's layers (timeout, catch-panic) around the backend.
async fn misbehave(job: Ping, handle: JobHandle) -> Result<(), BoxDynError> {
    if handle.attempt <= job.fail_attempts {
        panic!("ping panicked on attempt {}", handle.attempt);
    }
    if handle.attempt == 1 {
        tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    }
    Ok(())
}

#[tokio::test]
async fn an_attempt_that_times_out_or_panics_is_an_ordinary_failed_attempt() {
    let env = TestEnv::new().await;
    let mk = |tweak: fn(&mut Ping), max_attempts| {
        let mut j = ping_job(&env, tweak);
        j.max_attempts = max_attempts;
        j
    };
    let panics_once = mk(|p| p.fail_attempts = 1, 3);
    let times_out_once = mk(|p| p.sleep_ms = 10_000, 3);
    let always_panics = mk(|p| p.fail_attempts = 9, 2);
    let jobs = [&panics_once, &times_out_once, &always_panics];
    for j in jobs {
        env.queues.push(j).await.unwrap();
    }
    // the layers `registry::monitor` puts around every kind, in its order
    let options = BackendOptions {
        concurrency: 4,
        policy: Ping::POLICY,
        dead_hook: false,
    };
    let backend = QueueBackend::<Ping>::new(env.queues.clone(), "ping", "misbehaving", options);
    let worker = WorkerBuilder::new("misbehaving")
        .backend(backend)
        .concurrency(4)
        .timeout(Duration::from_millis(500))
        .layer(comet_worker::registry::catch_panics())
        .build(misbehave);
    let running = tokio::spawn(worker.run());

    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let done = crate::helpers::wait_finished(&env, &ids, Duration::from_secs(30)).await;
    running.abort();
    let errors =
        |i: usize| -> Vec<String> { done[i].errors.iter().map(|e| e.error.clone()).collect() };
    assert_eq!((done[0].state, done[0].attempts), (JobState::Completed, 2));
    assert!(
        errors(0)[0].contains("ping panicked on attempt 1"),
        "{:?}",
        errors(0)
    );
    assert_eq!((done[1].state, done[1].attempts), (JobState::Completed, 2));
    assert!(errors(1)[0].contains("timed out"), "{:?}", errors(1));
    assert_eq!((done[2].state, done[2].attempts), (JobState::Dead, 2));
    assert_eq!(errors(2).len(), 2, "{:?}", errors(2));
    assert!(
        errors(2)[1].contains("ping panicked on attempt 2"),
        "{:?}",
        errors(2)
    );
}
