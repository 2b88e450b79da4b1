//! The backend's tests of the move from the earlier Redis layout (a hash per job, text
//! members in the open index, every waiting job in `ready`) to records (`queue::migrate`),
//! against the real Redis: a backend moves a queue before its first fetch, a paused queue of
//! many jobs keeps its order, and the archiver moves a queue itself before it reads a mark.

use redis::AsyncCommands;

use super::{tests::Fixture, *};
use crate::queue::{ArchivedJob, JobState};

#[tokio::test]
async fn jobs_of_the_per_job_hash_layout_are_moved_into_records_before_the_first_fetch() {
    let f = Fixture::new();
    let base = f.shared.base.clone();
    let (waiting, dead, project) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let created = chrono::Utc::now().timestamp_millis() - 60_000;
    // two jobs as the earlier Comet wrote them: a hash each, every value text, and a text
    // member in the open index for the open one
    let job = |id: Uuid, state: &str| {
        vec![
            ("id", id.to_string()),
            ("kind", "ping".into()),
            ("payload", "{\"n\":1}".into()),
            ("state", state.into()),
            ("att", "0".into()),
            ("max", "5".into()),
            ("pri", "0".into()),
            ("rs", "1099511627776001".into()),
            ("tok", "0".into()),
            ("created", created.to_string()),
            ("run_at", created.to_string()),
            ("project", project.to_string()),
            ("rid", "req-1".into()),
            ("idem", String::new()),
        ]
    };
    let mut dead_fields = job(dead, "dead");
    dead_fields.extend([
        ("att", "5".into()),
        ("finished", (created + 1000).to_string()),
        ("last_error", "boom".into()),
        (
            "errors",
            format!(r#"[{{"attempt":5,"error":"boom","at":{created},"worker":"w"}}]"#),
        ),
    ]);
    let mut conn = f.queues.connection();
    let _: () = redis::pipe()
        .hset_multiple(format!("{base}job:{waiting}"), &job(waiting, "waiting"))
        .hset_multiple(format!("{base}job:{dead}"), &dead_fields)
        .zadd(
            format!("{base}ready"),
            waiting.to_string(),
            1_099_511_627_776_001_i64,
        )
        .zadd(format!("{base}dead"), dead.to_string(), created + 1000)
        .zadd(
            format!("{base}open_index"),
            format!("{project}|{created:013}|{waiting}"),
            0,
        )
        .query_async(&mut conn)
        .await
        .expect("old layout written");

    // the backend moves them before it fetches: the waiting job is leased, as written
    assert_eq!(f.lease(5).await.keys().collect::<Vec<_>>(), [&waiting]);
    let leased = f.job(waiting).await;
    assert_eq!(
        (
            leased.state,
            leased.attempts,
            leased.project_id,
            leased.request_id.as_deref()
        ),
        (JobState::Active, 1, Some(project), Some("req-1"))
    );
    assert_eq!(leased.payload, Some(serde_json::json!({"n": 1})));
    assert_eq!(
        leased.created_at.map(|t| t.timestamp_millis()),
        Some(created)
    );
    let gone = f.job(dead).await;
    assert_eq!((gone.state, gone.attempts), (JobState::Dead, 5));
    assert_eq!(gone.errors.len(), 1);
    assert_eq!(gone.last_error.as_deref(), Some("boom"));
    // the old hashes are gone, and the job is indexed: as one job, in the sorted set of jobs
    // not yet in pages (`lua/open.lua`), as `<project><created><id>`
    let old: u64 = conn
        .exists(&[format!("{base}job:{waiting}"), format!("{base}job:{dead}")])
        .await
        .expect("exists");
    assert_eq!(old, 0);
    let members: Vec<Vec<u8>> = conn
        .zrange(format!("{base}open_index"), 0, -1)
        .await
        .expect("index");
    assert_eq!(members.len(), 1);
    assert_eq!(&members[0][..16], project.as_bytes());
    let listed = f
        .queues
        .project_jobs("ping", project, None, 0, 10)
        .await
        .expect("project's jobs");
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [waiting]);
    // a second pass (another backend starting) finds nothing to move
    assert_eq!(
        f.queues.migrate_legacy_jobs("ping").await.expect("again"),
        0
    );
}

#[tokio::test]
async fn a_paused_queue_of_many_old_layout_jobs_moves_them_all_in_order_and_archives_only_after() {
    let f = Fixture::new();
    let base = f.shared.base.clone();
    let mut conn = f.queues.connection();
    let created = chrono::Utc::now().timestamp_millis() - 60_000;
    // 1,200 waiting jobs of priority 0 (more than a page of the walk), 3 of priority 5 and 2 of
    // priority -1, as the earlier layout kept them: all in `ready`, by score
    let mut jobs: Vec<(Uuid, i64, i64)> = Vec::new();
    for seq in 1..=1205_i64 {
        let pri = match seq {
            1..=3 => 5,
            4..=5 => -1,
            _ => 0,
        };
        jobs.push((Uuid::now_v7(), pri, (1000 - pri) * (1_i64 << 40) + seq));
    }
    let mut pipe = redis::pipe();
    for (id, pri, rs) in &jobs {
        pipe.hset_multiple(
            format!("{base}job:{id}"),
            &[
                ("id", id.to_string()),
                ("kind", "ping".into()),
                ("payload", "{}".into()),
                ("state", "waiting".into()),
                ("att", "0".into()),
                ("max", "5".into()),
                ("pri", pri.to_string()),
                ("rs", rs.to_string()),
                ("tok", "0".into()),
                ("created", created.to_string()),
                ("run_at", created.to_string()),
                ("project", String::new()),
            ],
        )
        .zadd(format!("{base}ready"), id.to_string(), *rs)
        .ignore();
    }
    // a finished job's archive mark, and the queue paused for the upgrade
    let done = Uuid::now_v7();
    pipe.hset_multiple(
        format!("{base}job:{done}"),
        &[
            ("id", done.to_string()),
            ("kind", "ping".into()),
            ("payload", "{}".into()),
            ("state", "completed".into()),
            ("att", "1".into()),
            ("max", "5".into()),
            ("pri", "0".into()),
            ("rs", "1".into()),
            ("tok", "1".into()),
            ("created", created.to_string()),
            ("finished", (created + 5).to_string()),
        ],
    )
    .zadd(format!("{base}completed"), done.to_string(), created + 5)
    .zadd(format!("{base}archive"), done.to_string(), created + 5)
    .set(format!("{base}paused"), 1)
    .ignore();
    let _: () = pipe.query_async(&mut conn).await.expect("old layout");

    // a fetch on the paused queue moves the jobs, and leases none
    assert!(f.lease(10).await.is_empty());
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{base}job:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(left.is_empty(), "old hashes left: {}", left.len());
    let batch = f.queues.archive_batch("ping", 100).await.expect("batch");
    assert!(matches!(&batch.jobs[..], [ArchivedJob::Job(j)] if j.id == done));
    // the whole line, in the order the old layout ran it
    let line: Vec<Uuid> = jobs.iter().map(|(id, ..)| *id).collect();
    let line: Vec<Uuid> = line[..3]
        .iter()
        .chain(&line[5..])
        .chain(&line[3..5])
        .copied()
        .collect();
    let (waiting, total) = f
        .queues
        .list("ping", JobState::Waiting, 0, 2000)
        .await
        .expect("list");
    assert_eq!(total, 1205);
    assert_eq!(waiting.iter().map(|j| j.id).collect::<Vec<_>>(), line);

    // unpaused, a fetch takes the head of the line; released, the jobs go back to its front in
    // their order
    let _: () = conn.del(format!("{base}paused")).await.expect("resume");
    let (_, _, fetched) = f.shared.clone().fetch(6).await.expect("fetch");
    assert_eq!(fetched.iter().map(|j| j.id).collect::<Vec<_>>(), line[..6]);
    let held: Vec<(Uuid, Lease)> = fetched.iter().map(|j| (j.id, j.lease())).collect();
    assert_eq!(f.shared.release(&held).await, 6);
    let (again, _) = f
        .queues
        .list("ping", JobState::Waiting, 0, 8)
        .await
        .expect("list");
    assert_eq!(again.iter().map(|j| j.id).collect::<Vec<_>>(), line[..8]);
}

#[tokio::test]
async fn the_archiver_moves_a_queue_of_the_old_layout_itself_before_it_reads_a_mark() {
    let f = Fixture::new();
    let base = f.shared.base.clone();
    let mut conn = f.queues.connection();
    let (done, at) = (Uuid::now_v7(), chrono::Utc::now().timestamp_millis());
    let _: () = redis::pipe()
        .hset_multiple(
            format!("{base}job:{done}"),
            &[
                ("id", done.to_string()),
                ("kind", "ping".into()),
                ("payload", "{}".into()),
                ("state", "cancelled".into()),
                ("att", "0".into()),
                ("max", "5".into()),
                ("pri", "0".into()),
                ("tok", "1".into()),
                ("created", (at - 10).to_string()),
                ("finished", at.to_string()),
            ],
        )
        .zadd(format!("{base}cancelled"), done.to_string(), at)
        .zadd(format!("{base}archive"), done.to_string(), at)
        .query_async(&mut conn)
        .await
        .expect("old layout");
    // no backend has fetched: the mark's job is read as it was, not dropped as gone
    let batch = f.queues.archive_batch("ping", 100).await.expect("batch");
    assert!(
        matches!(&batch.jobs[..], [ArchivedJob::Job(j)] if j.id == done && j.state == JobState::Cancelled),
        "{:?}",
        batch.jobs
    );
}
