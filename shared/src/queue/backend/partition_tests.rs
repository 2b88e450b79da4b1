//! The backend's tests of partitioned queues (`queue::partitions`) against the real Redis:
//! placement, fetching in turn, outcomes per partition, merged pages, and processes configured
//! with different counts.

use redis::AsyncCommands;

use super::{
    ack::{AckMsg, Outcome, OutcomeKind},
    tests::{Fixture, POLICY},
    *,
};
use crate::queue::JobState;

/// Jobs of a partitioned queue, pushed with the enqueue script: `n` of them, none keyed.
fn ping_jobs(n: usize, key: impl Fn(usize) -> Option<String>) -> Vec<crate::queue::NewJob> {
    (0..n)
        .map(|i| crate::queue::NewJob {
            id: Uuid::now_v7(),
            queue: "ping".into(),
            payload: serde_json::json!({ "i": i }),
            run_at: None,
            priority: 0,
            max_attempts: 3,
            idempotency_key: None,
            partition_key: key(i),
            project_id: Uuid::from_u128(7),
            request_id: None,
        })
        .collect()
}

#[tokio::test]
async fn a_partitioned_queue_is_fetched_from_its_partitions_in_turn_and_acked_in_each() {
    let f = Fixture::partitioned(3);
    // twelve jobs per partition, placed by hand-picked partition keys
    let keys: Vec<String> = (0..3)
        .map(|p| {
            (0..)
                .map(|i| format!("key-{i}"))
                .find(|k| crate::queue::partition_index(k.as_bytes(), 3) == p)
                .expect("a key for each partition")
        })
        .collect();
    let jobs = ping_jobs(36, |i| Some(keys[i % 3].clone()));
    f.queues.push_many("ping", &jobs).await.expect("push");
    let mut conn = f.queues.connection();
    for p in 0..3 {
        let part = f.queues.base(&crate::queue::partition_name("ping", p));
        let n: u64 = conn.hlen(format!("{part}jobs")).await.expect("hlen");
        assert_eq!(n, 12, "partition {p}");
    }
    assert_eq!(f.queues.counts("ping").await.expect("counts").waiting, 36);

    // each fetch starts at the next partition: three fetches of 4 take 4 from each
    let mut from = Vec::new();
    let mut fetched = Vec::new();
    for _ in 0..3 {
        let (_, _, jobs) = f.shared.clone().fetch(4).await.expect("fetch");
        assert_eq!(jobs.len(), 4);
        assert!(jobs.iter().all(|j| j.part.index == jobs[0].part.index));
        from.push(jobs[0].part.index);
        fetched.extend(jobs);
    }
    from.sort_unstable();
    assert_eq!(from, [0, 1, 2]);
    // jobs of one key keep their order within their partition
    for (p, key) in keys.iter().enumerate() {
        let ids: Vec<Uuid> = fetched
            .iter()
            .filter(|j| j.part.index == p)
            .map(|j| j.id)
            .collect();
        let sent: Vec<Uuid> = jobs
            .iter()
            .filter(|j| j.partition_key.as_deref() == Some(key.as_str()))
            .map(|j| j.id)
            .take(4)
            .collect();
        assert_eq!(ids, sent, "partition {p}");
    }
    // the outcomes go to each job's own partition: heartbeats find every lease, acks apply
    assert_eq!(
        f.shared.heartbeat(&f.shared.held_copy()).await.expect("hb"),
        0
    );
    let outcomes: Vec<Outcome> = fetched
        .iter()
        .map(|j| Outcome {
            id: j.id,
            token: j.token,
            part: j.part.index,
            project: Some(Uuid::from_u128(7)),
            kind: OutcomeKind::Ok(Ok("null".into())),
        })
        .collect();
    let rx = f.shared.acks_rx.lock().expect("rx").take().expect("rx");
    tokio::spawn(f.shared.clone().acker(rx));
    for o in outcomes {
        let _ = f.shared.acks.send(AckMsg::Outcome(o));
    }
    let (tx, done) = tokio::sync::oneshot::channel();
    let _ = f.shared.acks.send(AckMsg::Flush(tx));
    done.await.expect("flushed");
    let c = f.queues.counts("ping").await.expect("counts");
    assert_eq!((c.waiting, c.active, c.completed), (24, 0, 12));
    for j in &fetched {
        assert_eq!(f.job(j.id).await.state, JobState::Completed);
    }
    // one queue to its readers: a waiting page spans the partitions, one of each in turn
    let (page, total) = f
        .queues
        .list("ping", JobState::Waiting, 0, 6)
        .await
        .expect("list");
    assert_eq!(total, 24);
    let parts: Vec<usize> = page
        .iter()
        .map(|j| jobs.iter().position(|s| s.id == j.id).expect("ours") % 3)
        .collect();
    assert_eq!(parts, [0, 1, 2, 0, 1, 2]);
    // and every page of the completed ones, newest first, holds each job once
    let (done_page, total) = f
        .queues
        .list("ping", JobState::Completed, 0, 100)
        .await
        .expect("list");
    assert_eq!((done_page.len(), total), (12, 12));
    assert!(
        done_page
            .windows(2)
            .all(|w| w[0].finished_at >= w[1].finished_at)
    );
    assert!(done_page.iter().all(|j| j.queue == "ping"));
}

#[tokio::test]
async fn a_partitioned_queue_keeps_one_job_per_idempotency_key_and_controls_find_jobs() {
    let f = Fixture::partitioned(4);
    let mut jobs = ping_jobs(40, |_| None);
    for (i, j) in jobs.iter_mut().enumerate() {
        j.idempotency_key = Some(format!("k{}", i % 20));
    }
    let out = f.queues.push_many("ping", &jobs).await.expect("push");
    // the second job of each key answers the first's id
    for i in 20..40 {
        assert!(!out[i].created);
        assert_eq!(out[i].id, out[i - 20].id);
    }
    assert_eq!(f.queues.counts("ping").await.expect("counts").waiting, 20);
    // the 20 jobs are spread: more than one partition holds some
    let mut conn = f.queues.connection();
    let mut used = 0;
    for p in 0..4 {
        let part = f.queues.base(&crate::queue::partition_name("ping", p));
        let n: u64 = conn.hlen(format!("{part}jobs")).await.expect("hlen");
        used += usize::from(n > 0);
    }
    assert!(used > 1, "all 20 jobs in one partition");
    // a job of any partition is found, cancelled, deleted by id
    for e in &out[..20] {
        assert_eq!(f.job(e.id).await.state, JobState::Waiting);
    }
    let id = out[7].id;
    assert_eq!(
        f.queues.cancel("ping", id).await.expect("cancel"),
        Some(JobState::Waiting)
    );
    assert_eq!(
        f.queues.delete_finished("ping", id).await.expect("delete"),
        Some(JobState::Cancelled)
    );
    assert_eq!(f.queues.cancel("ping", id).await.expect("cancel"), None);
    assert!(f.queues.job("ping", id).await.expect("job").is_none());
    assert_eq!(f.queues.counts("ping").await.expect("counts").waiting, 19);
    // and the project's quota counts them all
    let open = f
        .queues
        .open_jobs(&["ping"], Uuid::from_u128(7))
        .await
        .expect("open");
    assert_eq!(open, 19);
    let mine = f
        .queues
        .project_jobs("ping", Uuid::from_u128(7), None, 0, 100)
        .await
        .expect("project jobs");
    assert_eq!(mine.len(), 19);
    assert!(mine.windows(2).all(|w| w[0].created_at >= w[1].created_at));
}

#[tokio::test]
async fn a_process_configured_with_fewer_partitions_still_drains_them_all() {
    let wide = Fixture::partitioned(4);
    let jobs = ping_jobs(40, |_| None);
    wide.queues.push_many("ping", &jobs).await.expect("push");
    // a process configured with one partition, on the same prefix
    let narrow = Queues::new(
        crate::redis_client::RedisClient::open(
            &std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        )
        .expect("url"),
        wide.queues.prefix(),
        crate::config::QueueSettings {
            check_script_keys: true,
            ..Default::default()
        },
    )
    .expect("queues");
    assert_eq!(narrow.partitions("ping"), 1);
    assert_eq!(narrow.partition_count("ping").await.expect("count"), 4);
    assert_eq!(narrow.counts("ping").await.expect("counts").waiting, 40);
    let backend = QueueBackend::<serde_json::Value>::new(
        narrow.clone(),
        "ping",
        "worker-b",
        BackendOptions {
            concurrency: 4,
            policy: POLICY,
            dead_hook: false,
        },
    );
    let mut leased = 0;
    for _ in 0..8 {
        let (_, _, got) = backend.shared.clone().fetch(10).await.expect("fetch");
        leased += got.len();
    }
    assert_eq!(leased, 40);
    assert_eq!(narrow.counts("ping").await.expect("counts").active, 40);
}

/// Queues on `prefix` configured with `partitions` partitions of `ping` (another process).
fn queues_with(prefix: &str, partitions: usize) -> Queues {
    Queues::new(
        crate::redis_client::RedisClient::open(
            &std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        )
        .expect("url"),
        prefix,
        crate::config::QueueSettings {
            check_script_keys: true,
            partitions: [("ping".to_owned(), partitions)].into(),
            ..Default::default()
        },
    )
    .expect("queues")
}

// The next three were found by a review, each reproduced before the fix: two processes
// configured with different counts (a rolling change) must still place a job and its
// idempotency key alike, and a pause must hold the partitions a raise adds.

#[tokio::test]
async fn an_idempotency_key_holds_across_processes_with_different_partition_counts() {
    let wide = Fixture::partitioned(4);
    let narrow = queues_with(wide.queues.prefix(), 2);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            crate::queue::partition_index(k.as_bytes(), 2)
                != crate::queue::partition_index(k.as_bytes(), 4)
        })
        .expect("a key placed apart");
    let [mut a, mut b] = [
        ping_jobs(1, |_| None).remove(0),
        ping_jobs(1, |_| None).remove(0),
    ];
    a.idempotency_key = Some(key.clone());
    b.idempotency_key = Some(key.clone());
    let first = narrow.push(&a).await.expect("push a");
    let second = wide.queues.push(&b).await.expect("push b");
    assert!(first.created);
    assert_eq!((second.created, second.id), (false, first.id));
    assert_eq!(wide.queues.counts("ping").await.expect("counts").waiting, 1);
    // and a retry of it with another partition key meets it too
    let mut c = ping_jobs(1, |_| Some("other-key".into())).remove(0);
    c.idempotency_key = Some(key);
    let third = wide.queues.push(&c).await.expect("push c");
    assert_eq!((third.created, third.id), (false, first.id));
}

#[tokio::test]
async fn a_job_pushed_again_after_the_count_was_raised_is_not_stored_twice() {
    let wide = Fixture::partitioned(4);
    let narrow = queues_with(wide.queues.prefix(), 1);
    let job = std::iter::repeat_with(|| ping_jobs(1, |_| None).remove(0))
        .find(|j| crate::queue::partition_index(j.id.as_bytes(), 4) != 0)
        .expect("a job placed elsewhere by four");
    assert!(narrow.push(&job).await.expect("push").created);
    // the outbox relay pushing the same row again, now with four partitions
    assert!(!wide.queues.push(&job).await.expect("push again").created);
    assert_eq!(wide.queues.counts("ping").await.expect("counts").waiting, 1);
    let mut leased = 0;
    for _ in 0..4 {
        let (_, _, got) = wide.shared.clone().fetch(10).await.expect("fetch");
        leased += got.iter().filter(|j| j.id == job.id).count();
    }
    assert_eq!(leased, 1);
}

#[tokio::test]
async fn a_pause_holds_the_partitions_a_raise_adds() {
    let wide = Fixture::partitioned(4);
    let narrow = queues_with(wide.queues.prefix(), 1);
    narrow.set_paused("ping", true).await.expect("pause");
    wide.queues
        .push_many("ping", &ping_jobs(20, |_| None))
        .await
        .expect("push");
    let mut leased = 0;
    for _ in 0..4 {
        let (_, _, got) = wide.shared.clone().fetch(10).await.expect("fetch");
        leased += got.len();
    }
    assert_eq!(leased, 0, "a paused queue leased jobs");
    narrow.set_paused("ping", false).await.expect("resume");
    let (_, _, got) = wide.shared.clone().fetch(10).await.expect("fetch");
    assert!(!got.is_empty());
}

#[tokio::test]
async fn every_page_of_a_partitioned_queue_holds_each_job_once() {
    let f = Fixture::partitioned(4);
    let at = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut jobs = ping_jobs(50, |_| None);
    for j in jobs.iter_mut().take(30) {
        j.run_at = Some(at);
    }
    f.queues.push_many("ping", &jobs).await.expect("push");
    for (state, want) in [(JobState::Delayed, 30), (JobState::Waiting, 20)] {
        let mut seen = std::collections::HashSet::new();
        for page in 0..10 {
            let (jobs, total) = f
                .queues
                .list("ping", state, page * 7, 7)
                .await
                .expect("list");
            assert_eq!(total, want as u64);
            assert!(jobs.iter().all(|j| seen.insert(j.id)), "{state:?} twice");
        }
        assert_eq!(seen.len(), want, "{state:?}");
    }
    for (state, per_page, want) in [(None, 7, 50), (Some(JobState::Delayed), 4, 30)] {
        let mut seen = std::collections::HashSet::new();
        for page in 0..15 {
            let jobs = f
                .queues
                .project_jobs("ping", Uuid::from_u128(7), state, page * per_page, per_page)
                .await
                .expect("project jobs");
            assert!(jobs.iter().all(|j| seen.insert(j.id)), "{state:?} twice");
        }
        assert_eq!(seen.len(), want, "{state:?}");
    }
}

#[tokio::test]
async fn a_page_past_the_merged_depth_of_a_partitioned_queue_is_refused() {
    let f = Fixture::partitioned(2);
    f.queues
        .push_many("ping", &ping_jobs(3, |_| None))
        .await
        .expect("push");
    let max = crate::queue::MAX_MERGED;
    assert!(
        f.queues
            .list("ping", JobState::Waiting, max - 10, 10)
            .await
            .is_ok()
    );
    for (offset, limit) in [(max - 10, 11), (max, 1)] {
        let err = f
            .queues
            .list("ping", JobState::Waiting, offset, limit)
            .await
            .expect_err("too deep");
        assert!(matches!(err, QueueError::TooDeep { .. }), "{err}");
        let err = f
            .queues
            .project_jobs("ping", Uuid::from_u128(7), None, offset, limit)
            .await
            .expect_err("too deep");
        assert!(matches!(err, QueueError::TooDeep { .. }), "{err}");
    }
}
