//! The open jobs per project the queue scripts count (what the API's quota reads) stay equal to
//! the jobs really open, through every transition a worker, maintenance and the API make.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use chrono::Utc;
use redis::AsyncCommands;
use shared::{
    jobs::{EnqueueOptions, Job, Ping, QUEUES},
    queue::{JobState, NewJob},
    testing::{TestEnv, eventually},
};
use uuid::Uuid;

use crate::helpers::{InProcessWorker, assert_no_open_jobs, lease_by_hand, wait_finished};

/// A project's open jobs of one queue in one state, as read from the state sets and the job
/// hashes: (project, queue, state) → job ids.
type Open = BTreeMap<(Uuid, &'static str, &'static str), BTreeSet<Uuid>>;

/// The jobs really open: read from the state sets and the job hashes.
async fn really_open_jobs(env: &TestEnv) -> Open {
    let mut conn = env.queues.connection();
    let mut out = Open::new();
    for q in QUEUES {
        let base = env.queues.base(q);
        for (set, state) in [
            ("ready", JobState::Waiting),
            ("delayed", JobState::Delayed),
            ("active", JobState::Active),
            ("retry", JobState::Retrying),
        ] {
            let mut ids: Vec<String> = conn
                .zrange(format!("{base}{set}"), 0, -1)
                .await
                .expect("zrange");
            if state == JobState::Waiting {
                // priority 0 waits in a list of its own, of the ids' 16 bytes
                let listed: Vec<Vec<u8>> = conn
                    .lrange(format!("{base}wait"), 0, -1)
                    .await
                    .expect("lrange");
                ids.extend(
                    listed
                        .iter()
                        .map(|e| Uuid::from_slice(e).expect("a job id").to_string()),
                );
            }
            for id in ids {
                let raw: Option<Vec<u8>> =
                    conn.hget(format!("{base}jobs"), &id).await.expect("hget");
                let project = raw
                    .and_then(|r| shared::queue::decode_job_fields(&r).ok())
                    .and_then(|mut f| f.remove("project"));
                if let Some(p) = project.and_then(|p| Uuid::parse_str(&p).ok()) {
                    out.entry((p, *q, state.as_str()))
                        .or_default()
                        .insert(Uuid::parse_str(&id).expect("a job id"));
                }
            }
        }
    }
    out
}

/// The jobs of each project really open.
async fn really_open(env: &TestEnv) -> BTreeMap<Uuid, u64> {
    let mut out = BTreeMap::new();
    for ((p, _, _), ids) in really_open_jobs(env).await {
        *out.entry(p).or_default() += ids.len() as u64;
    }
    out
}

/// Asserts a project's own view of each queue (its counts per open state and its open jobs,
/// whole and per state) equals the jobs really open.
async fn assert_project_views(env: &TestEnv, when: &str, projects: &[Uuid]) {
    let real = really_open_jobs(env).await;
    for project in projects {
        for q in QUEUES {
            let counts = env
                .queues
                .project_counts(q, *project)
                .await
                .expect("counts");
            let mut every = BTreeSet::new();
            for state in shared::queue::OPEN_STATES {
                let mut want = real
                    .get(&(*project, *q, state.as_str()))
                    .cloned()
                    .unwrap_or_default();
                // a job whose hash cannot be read back (made corrupt here) is left out of a
                // list, as of the queue-wide one; it is still counted
                let counted_want = want.len() as u64;
                for id in want.clone() {
                    if env.queues.job(q, id).await.is_err() {
                        want.remove(&id);
                    }
                }
                let counted = match state {
                    JobState::Waiting => counts.waiting,
                    JobState::Delayed => counts.delayed,
                    JobState::Active => counts.active,
                    _ => counts.retrying,
                };
                assert_eq!(
                    counted, counted_want,
                    "{when}: {q} {state:?} count of {project}"
                );
                let listed: BTreeSet<Uuid> = env
                    .queues
                    .project_jobs(q, *project, Some(state), 0, 10_000)
                    .await
                    .expect("list")
                    .iter()
                    .map(|j| j.id)
                    .collect();
                assert_eq!(listed, want, "{when}: {q} {state:?} jobs of {project}");
                every.extend(want);
            }
            let listed = env
                .queues
                .project_jobs(q, *project, None, 0, 10_000)
                .await
                .expect("list");
            let ids: BTreeSet<Uuid> = listed.iter().map(|j| j.id).collect();
            assert_eq!(ids, every, "{when}: {q} open jobs of {project}");
            assert!(
                listed
                    .windows(2)
                    .all(|w| w[0].created_at >= w[1].created_at),
                "{when}: newest first"
            );
        }
    }
}

/// The counts as the scripts keep them, summed over the queues; asserts no member is zero or
/// negative (a project without open jobs is removed).
async fn counted(env: &TestEnv) -> BTreeMap<Uuid, u64> {
    let mut conn = env.queues.connection();
    let mut out = BTreeMap::new();
    for q in QUEUES {
        let key = format!("{}open_by_project", env.queues.base(q));
        let members: Vec<(String, f64)> =
            conn.zrange_withscores(&key, 0, -1).await.expect("zrange");
        for (member, score) in members {
            assert!(score >= 1.0, "{key}: {member} holds {score}");
            *out.entry(Uuid::parse_str(&member).expect("a project id"))
                .or_default() += score as u64;
        }
    }
    out
}

/// Asserts the counts equal the open jobs, and that the API's read agrees; returns them.
async fn assert_exact(env: &TestEnv, when: &str) -> BTreeMap<Uuid, u64> {
    let (real, kept) = (really_open(env).await, counted(env).await);
    assert_eq!(kept, real, "{when}: counted vs really open");
    for (project, n) in &real {
        let read = env.queues.open_jobs(QUEUES, *project).await.expect("read");
        assert_eq!(read, *n, "{when}: open_jobs of {project}");
    }
    let projects: Vec<Uuid> = real.keys().copied().chain([env.project_id]).collect();
    assert_project_views(env, when, &projects).await;
    real
}

fn ping(project: Uuid, tweak: impl FnOnce(&mut Ping), opts: EnqueueOptions) -> NewJob {
    let mut p = Ping::new(project);
    tweak(&mut p);
    p.to_new_job(opts).expect("job")
}

#[tokio::test]
async fn the_open_count_of_each_project_equals_its_open_jobs_through_every_transition() {
    let env = TestEnv::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let plain = EnqueueOptions::default;
    let later = || EnqueueOptions {
        run_at: Some(Utc::now() + chrono::Duration::hours(1)),
        ..Default::default()
    };
    let keyed = || EnqueueOptions {
        idempotency_key: Some(format!("{a}:order-1")),
        partition_key: None,
        ..Default::default()
    };
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(ping(a, |_| {}, plain()));
    }
    for _ in 0..3 {
        jobs.push(ping(a, |_| {}, later()));
    }
    let dies = ping(a, |p| p.fail_permanently = true, plain());
    jobs.push(dies.clone());
    jobs.push(ping(a, |p| p.fail_attempts = 1, plain()));
    let mut out_of_attempts = ping(a, |p| p.fail_attempts = 9, plain());
    out_of_attempts.max_attempts = 2;
    jobs.push(out_of_attempts);
    jobs.push(ping(b, |_| {}, plain()));
    jobs.push(ping(b, |_| {}, later()));
    env.queues.push_many("ping", &jobs).await.expect("push");
    // duplicates are not counted: the same idempotency key thrice, and a relay pushing the
    // same job id again
    for _ in 0..3 {
        env.queues
            .push(&ping(a, |_| {}, keyed()))
            .await
            .expect("push");
    }
    let again = env.queues.push(&jobs[0]).await.expect("push");
    assert!(!again.created);
    // jobs of other kinds count in their own queue, for the same project
    let mut other_kind = ping(b, |_| {}, plain());
    other_kind.queue = "revoke_sessions".into();
    env.queues.push(&other_kind).await.expect("push");

    let open = assert_exact(&env, "after the pushes").await;
    assert_eq!((open[&a], open[&b]), (12, 3));

    // a job whose worker died on its last attempt is reaped dead by maintenance
    let mut reaped = ping(a, |_| {}, plain());
    reaped.max_attempts = 1;
    env.queues.push(&reaped).await.expect("push");
    let mut conn = env.queues.connection();
    let base = env.queues.base("ping");
    let _: () = redis::pipe()
        .lrem(format!("{base}wait"), 1, reaped.id.as_bytes())
        .lpush(format!("{base}wait"), reaped.id.as_bytes())
        .query_async(&mut conn)
        .await
        .expect("first in line");
    lease_by_hand(&env, "ping", "worker-that-dies", 100).await;
    // a job whose attempt counter is corrupt goes dead at fetch; one whose error history is
    // corrupt goes dead at its failed attempt's ack
    let corrupt_counter = ping(a, |_| {}, plain());
    let corrupt_history = ping(a, |p| p.fail_attempts = 1, plain());
    env.queues
        .push_many("ping", &[corrupt_counter.clone(), corrupt_history.clone()])
        .await
        .expect("push");
    corrupt_field(&mut conn, &base, corrupt_counter.id, "att", "x").await;
    corrupt_field(&mut conn, &base, corrupt_history.id, "errors", "{").await;
    // a cancelled job is no longer open
    let cancelled = jobs[5].id;
    assert_eq!(
        env.queues.cancel("ping", cancelled).await.expect("cancel"),
        Some(JobState::Delayed)
    );
    assert_exact(&env, "after a cancel and the corruptions").await;

    let worker = InProcessWorker::start(&env).await;
    let due: Vec<Uuid> = jobs
        .iter()
        .filter(|j| j.run_at.is_none())
        .map(|j| j.id)
        .chain([reaped.id, corrupt_history.id])
        .collect();
    let done = wait_finished(&env, &due, Duration::from_secs(30)).await;
    let dead = done.iter().filter(|j| j.state == JobState::Dead).count();
    assert_eq!(
        dead, 4,
        "permanent, out of attempts, reaped, corrupt history"
    );
    // a job with a corrupt counter cannot be read back as a record: its state is asked for
    let raw: Vec<u8> = conn
        .hget(format!("{base}jobs"), corrupt_counter.id.to_string())
        .await
        .expect("hget");
    let fields = shared::queue::decode_job_fields(&raw).expect("a record");
    assert_eq!(fields.get("state").map(String::as_str), Some("dead"));
    // the keyed job and the other kind's job finish too
    eventually(
        Duration::from_secs(30),
        "every due job finished",
        || async {
            let c = env.queues.counts("ping").await.ok()?;
            let r = env.queues.counts("revoke_sessions").await.ok()?;
            (c.waiting + c.active + c.retrying + r.waiting + r.active + r.retrying == 0)
                .then_some(())
        },
    )
    .await;
    let open = assert_exact(&env, "once the due jobs finished").await;
    assert_eq!(
        open,
        BTreeMap::from([(a, 2), (b, 1)]),
        "only the delayed jobs are left open"
    );

    // a retried dead job is open again (no worker runs meanwhile), until it dies again
    worker.stop().await;
    assert!(env.queues.retry_dead("ping", dies.id).await.expect("retry"));
    assert_eq!(assert_exact(&env, "after a retry").await[&a], 3);
    let worker = InProcessWorker::start(&env).await;
    wait_finished(&env, &[dies.id], Duration::from_secs(30)).await;
    assert_eq!(
        assert_exact(&env, "after the retried job died").await[&a],
        2
    );

    worker.stop().await;
    // a delayed job run now moves from delayed to waiting in its project's counts
    let delayed_b = jobs
        .iter()
        .find(|j| j.project_id == b && j.run_at.is_some())
        .expect("b's delayed job");
    assert_eq!(
        env.queues
            .run_now("ping", delayed_b.id)
            .await
            .expect("run now"),
        Some(JobState::Delayed)
    );
    assert_exact(&env, "after a run-now").await;
    env.queues
        .cancel("ping", delayed_b.id)
        .await
        .expect("cancel");
    for job in jobs
        .iter()
        .filter(|j| j.run_at.is_some() && j.id != cancelled && j.id != delayed_b.id)
    {
        env.queues.cancel("ping", job.id).await.expect("cancel");
    }
    assert_exact(&env, "after cancelling the rest").await;
    assert_no_open_jobs(&env).await;
}

/// Sets one field of a job's record to `value`, as a hand edit or a bug would.
async fn corrupt_field(
    conn: &mut shared::redis_client::RedisConn,
    base: &str,
    id: Uuid,
    field: &str,
    value: &str,
) {
    let raw: Vec<u8> = conn
        .hget(format!("{base}jobs"), id.to_string())
        .await
        .expect("record");
    let mut fields = shared::queue::decode_job_fields(&raw).expect("a record");
    fields.insert(field.to_owned(), value.to_owned());
    let _: () = conn
        .hset(
            format!("{base}jobs"),
            id.to_string(),
            shared::queue::encode_job_fields(&fields),
        )
        .await
        .expect("corrupt");
}
