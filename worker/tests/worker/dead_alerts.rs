//! Dead jobs become `job.dead` events in their project's pipeline: one per (project, queue,
//! error fingerprint) and window, carrying the count, whatever the number of deaths; a death is
//! counted once even when the archiver copies its job again.

use std::time::Duration;

use serde_json::Value;
use shared::{
    jobs::{EnqueueOptions, Job, Ping},
    queue::{JobState, NewJob},
    testing::{TestEnv, eventually},
};
use uuid::Uuid;

use crate::helpers::{InProcessWorker, wait_finished};

fn ping(project: Uuid, tweak: impl FnOnce(&mut Ping)) -> NewJob {
    let mut p = Ping::new(project);
    tweak(&mut p);
    let mut job = p.to_new_job(EnqueueOptions::default()).expect("job");
    job.max_attempts = 1;
    job
}

/// The project's `job.dead` events: (payload, job id of its `process_event`).
async fn alerts(env: &TestEnv) -> Vec<(Value, Uuid)> {
    sqlx::query_as(
        "SELECT payload, job_id FROM events WHERE project_id = $1 AND type = 'job.dead'
         ORDER BY occurred_at",
    )
    .bind(env.project_id)
    .fetch_all(&env.pool)
    .await
    .expect("events")
}

#[tokio::test]
async fn a_burst_of_identical_failures_makes_one_job_dead_event_per_fingerprint_with_its_count() {
    let env = TestEnv::with(|s| s.queue.dead_alert_window = Duration::from_secs(2)).await;
    // seven die of one cause (the message is the same), three of another
    let mut jobs: Vec<NewJob> = (0..7)
        .map(|_| ping(env.project_id, |p| p.fail_permanently = true))
        .collect();
    jobs.extend((0..3).map(|_| ping(env.project_id, |p| p.fail_attempts = 5)));
    // a job that completes raises nothing
    jobs.push(ping(env.project_id, |_| {}));
    env.queues.push_many("ping", &jobs).await.expect("push");
    let worker = InProcessWorker::start(&env).await;
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let done = wait_finished(&env, &ids, Duration::from_secs(30)).await;
    assert_eq!(
        done.iter().filter(|j| j.state == JobState::Dead).count(),
        10
    );

    // every death is in some window's event (the burst may straddle a window's edge: then its
    // deaths are split between the two windows' events)
    let total = |a: &[(Value, Uuid)]| {
        a.iter()
            .map(|(p, _)| p["dead"].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    let raised = eventually(Duration::from_secs(30), "the windows raised", || async {
        let a = alerts(&env).await;
        (total(&a) >= 10).then_some(a)
    })
    .await;
    assert_eq!(total(&raised), 10, "{raised:?}");
    // and nothing more: wait past another window
    tokio::time::sleep(Duration::from_secs(8)).await;
    let raised_later = alerts(&env).await;
    assert_eq!(raised_later.len(), raised.len(), "nothing raised twice");
    // one event per (fingerprint, window); per fingerprint, the counts add up to its deaths
    let mut windows = std::collections::BTreeSet::new();
    let mut per_cause: std::collections::BTreeMap<String, (i64, String)> = Default::default();
    for (p, _) in &raised_later {
        let fingerprint = p["fingerprint"].as_str().expect("fingerprint").to_owned();
        assert!(
            windows.insert((fingerprint.clone(), p["windowStart"].to_string())),
            "two events for one window: {raised_later:?}"
        );
        let entry = per_cause.entry(fingerprint).or_default();
        entry.0 += p["dead"].as_i64().expect("dead");
        entry.1 = p["error"].as_str().expect("error").to_owned();
    }
    let mut counts: Vec<(i64, String)> = per_cause.into_values().collect();
    counts.sort();
    assert_eq!(counts.len(), 2, "two causes: {raised_later:?}");
    assert_eq!(counts[0].0, 3);
    assert!(counts[0].1.contains("asked to fail attempts"), "{counts:?}");
    assert_eq!(counts[1].0, 7);
    assert!(counts[1].1.contains("fail permanently"), "{counts:?}");
    assert!(
        raised_later.len() <= 4,
        "at most two windows per cause for one burst"
    );
    for (payload, job_id) in &raised_later {
        assert_eq!(payload["queue"], "ping");
        let first = payload["firstJobId"].as_str().expect("first job");
        assert!(ids.iter().any(|i| i.to_string() == first), "{payload}");
        assert!(
            payload["fingerprint"]
                .as_str()
                .is_some_and(|f| !f.is_empty())
        );
        // the event goes through the pipeline like any other: its process_event job runs
        let job = eventually(
            Duration::from_secs(30),
            "its process_event job ran",
            || async {
                let j = env.queues.job("process_event", *job_id).await.ok()??;
                (j.state == JobState::Completed).then_some(j)
            },
        )
        .await;
        assert_eq!(job.project_id, Some(env.project_id));
    }
    worker.stop().await;

    // the archiver copying a dead job again (a crash between its commit and its forget) does
    // not count it again; the same job dead again later (retried, died) does
    let dead = env
        .queues
        .job("ping", jobs[0].id)
        .await
        .expect("read")
        .expect("kept");
    let window = Duration::from_secs(2);
    for _ in 0..2 {
        shared::db::job_archive::write(&env.pool, &[&dead], &[], window, None)
            .await
            .expect("write");
    }
    let mut again = dead.clone();
    again.finished_at = dead.finished_at.map(|t| t + chrono::Duration::seconds(30));
    shared::db::job_archive::write(&env.pool, &[&again], &[], window, None)
        .await
        .expect("write");
    let open: Vec<i32> = sqlx::query_scalar(
        "SELECT dead FROM job_dead_alerts WHERE project_id = $1 AND event_id IS NULL",
    )
    .bind(env.project_id)
    .fetch_all(&env.pool)
    .await
    .expect("open windows");
    assert_eq!(open, [1], "counted once, for its second death");
}
