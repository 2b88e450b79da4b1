//! The open index's pages (`lua/open.lua`) against the real Redis: a project's job list stays
//! exact (every open job once, newest first, none of another project) while jobs open in and
//! out of order, complete, go dead, come back and are cancelled, across page boundaries and
//! splits, in pages or still in the sorted set of jobs not yet in pages; emptied pages go away;
//! maintenance moves that set into pages (and with it the index an earlier Comet left there).

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{
    ack::{Outcome, OutcomeKind},
    tests::{Fixture, ping_job},
    *,
};
use crate::queue::JobState;

/// The page size the scripts use (`PAGE_CAP` in `lua/open.lua`).
const PAGE_CAP: usize = 64;

fn job(project: Uuid, i: usize) -> crate::queue::NewJob {
    ping_job(project, serde_json::json!({ "i": i }))
}

/// `project`'s open jobs as the index lists them, newest first.
async fn listed(f: &Fixture, project: Uuid) -> Vec<Uuid> {
    f.queues
        .project_jobs("ping", project, None, 0, 100_000)
        .await
        .expect("project's jobs")
        .into_iter()
        .map(|j| j.id)
        .collect()
}

/// `project`'s open jobs as their records say, newest first by (creation ms, id bytes).
async fn expected(f: &Fixture, project: Uuid, ids: &[Uuid]) -> Vec<Uuid> {
    expected_in(f, project, ids, None).await
}

/// [`expected`] of the jobs in `state` only (if given).
async fn expected_in(
    f: &Fixture,
    project: Uuid,
    ids: &[Uuid],
    state: Option<JobState>,
) -> Vec<Uuid> {
    let mut open = Vec::new();
    for id in ids {
        let j = f.job(*id).await;
        let created = j.created_at.expect("created").timestamp_millis();
        if j.project_id == Some(project)
            && crate::queue::tenant::OPEN_STATES.contains(&j.state)
            && state.is_none_or(|s| s == j.state)
        {
            open.push((created, *id.as_bytes(), *id));
        }
    }
    open.sort_unstable_by_key(|o| std::cmp::Reverse((o.0, o.1)));
    open.into_iter().map(|(_, _, id)| id).collect()
}

/// The index's pages: name -> number of keys.
async fn pages(f: &Fixture) -> HashMap<Vec<u8>, usize> {
    let mut conn = f.queues.connection();
    let raw: HashMap<Vec<u8>, Vec<u8>> = conn
        .hgetall(format!("{}open_pages", f.shared.base))
        .await
        .expect("pages");
    let dir: Vec<Vec<u8>> = conn
        .zrange(format!("{}open_dir", f.shared.base), 0, -1)
        .await
        .expect("dir");
    let mut names: Vec<Vec<u8>> = raw.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names, dir,
        "every page is in the directory and nothing else"
    );
    for (name, keys) in &raw {
        assert_eq!(keys.len() % 22, 0);
        let keys: Vec<&[u8]> = keys.chunks(22).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "a page's keys ascend");
        assert!(keys[0] >= &name[16..], "no key below its page's bound");
    }
    raw.into_iter().map(|(k, v)| (k, v.len() / 22)).collect()
}

/// One maintenance pass over `ping`, as the backend's loop runs it; returns how many members of
/// the index's sorted set it moved into pages.
async fn maintain(f: &Fixture) -> i64 {
    // (a queue's first fetch sets its layout marker, without which maintenance waits)
    f.queues.migrate_legacy_jobs("ping").await.expect("layout");
    let mut conn = f.queues.connection();
    let out: Vec<i64> = redis::Script::new(&crate::queue::script_source_checked("maintain"))
        .key(crate::queue::queue_keys(&f.shared.base))
        .arg(1000)
        .arg(86_400_000u64)
        .arg(86_400_000u64)
        .arg(100_000)
        .arg(25)
        .arg(0)
        .arg(1000)
        .invoke_async(&mut conn)
        .await
        .expect("maintain");
    out[4]
}

/// Members of the index's sorted set (jobs not yet in pages).
async fn buffered(f: &Fixture) -> u64 {
    let mut conn = f.queues.connection();
    conn.zcard(format!("{}open_index", f.shared.base))
        .await
        .expect("zcard")
}

async fn ack(
    f: &Fixture,
    leased: &HashMap<Uuid, u64>,
    ids: &[Uuid],
    kind: impl Fn() -> OutcomeKind,
) {
    let outcomes: Vec<Outcome> = ids
        .iter()
        .map(|id| Outcome {
            id: *id,
            token: leased[id],
            part: 0,
            project: None,
            kind: kind(),
        })
        .collect();
    let summary = f.shared.write_outcomes(&outcomes).await.expect("ack");
    assert_eq!(summary.applied, ids.len());
    f.shared.forget(&outcomes);
}

#[tokio::test]
async fn a_projects_job_list_stays_exact_across_pages_as_jobs_open_close_and_come_back() {
    let f = Fixture::new();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    // 700 of project a in batches whose ids are in reverse order (keys arriving out of order
    // within a millisecond: inserts and splits, not appends), then single pushes; 40 of b
    // interleaved
    let mut all = Vec::new();
    for round in 0..5 {
        let mut batch: Vec<_> = (0..130).map(|i| job(a, round * 130 + i)).collect();
        batch.reverse();
        batch.extend((0..8).map(|i| job(b, i)));
        f.queues.push_many("ping", &batch).await.expect("push");
        all.extend(batch.iter().map(|j| j.id));
    }
    for i in 0..50 {
        let j = job(a, 650 + i);
        f.queues.push(&j).await.expect("push one");
        all.push(j.id);
    }
    // the single pushes wait in the sorted set; the list merges it with the pages
    assert_eq!(buffered(&f).await, 50);
    assert_eq!(listed(&f, a).await, expected(&f, a, &all).await);
    assert_eq!(listed(&f, a).await.len(), 700);
    assert_eq!(listed(&f, b).await, expected(&f, b, &all).await);
    assert_eq!(maintain(&f).await, 50);
    assert_eq!(buffered(&f).await, 0);
    assert_eq!(listed(&f, a).await, expected(&f, a, &all).await);
    let p = pages(&f).await;
    assert_eq!(p.values().sum::<usize>(), 740);
    assert!(p.len() > 700 / (2 * PAGE_CAP), "{} pages", p.len());
    assert!(p.values().all(|n| *n <= 2 * PAGE_CAP), "{p:?}");
    // an offset page of the list is that slice of it
    let want = expected(&f, a, &all).await;
    let page: Vec<Uuid> = f
        .queues
        .project_jobs("ping", a, None, 300, 50)
        .await
        .expect("page")
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(page, want[300..350]);

    // 400 leased (oldest first: still open), of which some complete, some go dead, some retry;
    // 30 waiting ones cancelled
    let leased = f.lease(400).await;
    let mut ids: Vec<Uuid> = leased.keys().copied().collect();
    ids.sort();
    ack(&f, &leased, &ids[..150], || OutcomeKind::Ok(Ok("1".into()))).await;
    ack(&f, &leased, &ids[150..200], || {
        OutcomeKind::Dead("no".into())
    })
    .await;
    ack(&f, &leased, &ids[200..220], || OutcomeKind::Retry {
        delay: Duration::from_secs(60),
        error: "later".into(),
    })
    .await;
    let waiting: Vec<Uuid> = all
        .iter()
        .filter(|id| !leased.contains_key(id))
        .copied()
        .take(30)
        .collect();
    for id in &waiting {
        f.queues.cancel("ping", *id).await.expect("cancel");
    }
    assert_eq!(listed(&f, a).await, expected(&f, a, &all).await);
    assert_eq!(listed(&f, b).await, expected(&f, b, &all).await);
    for state in [JobState::Active, JobState::Retrying, JobState::Waiting] {
        let listed: Vec<Uuid> = f
            .queues
            .project_jobs("ping", a, Some(state), 0, 1000)
            .await
            .expect("in state")
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(
            listed,
            expected_in(&f, a, &all, Some(state)).await,
            "{state:?}"
        );
    }

    // the dead ones come back with their old creation time: back in their place, not first,
    // through the sorted set, then in pages
    for id in &ids[150..200] {
        assert!(f.queues.retry_dead("ping", *id).await.expect("retry"));
    }
    assert_eq!(buffered(&f).await, 50);
    assert_eq!(listed(&f, a).await, expected(&f, a, &all).await);
    // half of them close while still there
    for id in &ids[150..175] {
        f.queues.cancel("ping", *id).await.expect("cancel");
    }
    assert_eq!(buffered(&f).await, 25);
    assert_eq!(listed(&f, a).await, expected(&f, a, &all).await);
    maintain(&f).await;
    assert_eq!(buffered(&f).await, 0);
    assert_eq!(listed(&f, a).await, expected(&f, a, &all).await);
    pages(&f).await;

    // every job closed: no page is left
    ack(&f, &leased, &ids[220..], || OutcomeKind::Ok(Ok("1".into()))).await;
    loop {
        let leased = f.lease(200).await;
        if leased.is_empty() {
            break;
        }
        let ids: Vec<Uuid> = leased.keys().copied().collect();
        ack(&f, &leased, &ids, || OutcomeKind::Ok(Ok("1".into()))).await;
    }
    for project in [a, b] {
        for id in expected_in(&f, project, &all, Some(JobState::Retrying)).await {
            f.queues.cancel("ping", id).await.expect("cancel retrying");
        }
    }
    assert_eq!(listed(&f, a).await, Vec::<Uuid>::new());
    assert!(listed(&f, b).await.is_empty());
    assert!(pages(&f).await.is_empty());
    let mut conn = f.queues.connection();
    let left: u64 = conn
        .exists(&[
            format!("{}open_pages", f.shared.base),
            format!("{}open_dir", f.shared.base),
            format!("{}open_index", f.shared.base),
        ])
        .await
        .expect("exists");
    assert_eq!(left, 0);
}

/// A queue whose open index is still the sorted set of the layout before pages: maintenance
/// moves its open jobs into pages; a job closing before the move leaves the set at once.
#[tokio::test]
async fn the_open_index_of_one_sorted_set_moves_into_pages() {
    let f = Fixture::new();
    let project = Uuid::now_v7();
    let jobs: Vec<_> = (0..300).map(|i| job(project, i)).collect();
    f.queues.push_many("ping", &jobs).await.expect("push");
    // (the backend's first fetch runs the move: nothing to move yet)
    let leased = f.lease(2).await;
    assert!(leased.contains_key(&jobs[0].id) && leased.contains_key(&jobs[1].id));
    // turn the pages back into the sorted set of before (one member per job, its key behind
    // its project's 16 bytes)
    let mut conn = f.queues.connection();
    let base = &f.shared.base;
    let raw: HashMap<Vec<u8>, Vec<u8>> = conn
        .hgetall(format!("{base}open_pages"))
        .await
        .expect("pages");
    let mut members = Vec::new();
    for keys in raw.values() {
        for key in keys.chunks(22) {
            members.push((0, [project.as_bytes().as_slice(), key].concat()));
        }
    }
    assert_eq!(members.len(), 300);
    let _: () = redis::pipe()
        .del(&[format!("{base}open_pages"), format!("{base}open_dir")])
        .zadd_multiple(format!("{base}open_index"), &members)
        .query_async(&mut conn)
        .await
        .expect("old index written");
    // (read from the set alone now)
    assert_eq!(listed(&f, project).await.len(), 300);

    // two jobs close before the move: one cancelled, one completed
    f.queues.cancel("ping", jobs[2].id).await.expect("cancel");
    let done = jobs[0].id;
    ack(&f, &leased, &[done], || OutcomeKind::Ok(Ok("1".into()))).await;
    let in_set: u64 = conn
        .zcard(format!("{base}open_index"))
        .await
        .expect("zcard");
    assert_eq!(in_set, 298);

    assert_eq!(listed(&f, project).await.len(), 298);
    assert_eq!(maintain(&f).await, 298);
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let want = expected(&f, project, &ids).await;
    assert_eq!(want.len(), 298);
    assert_eq!(listed(&f, project).await, want);
    assert!(want.iter().all(|id| *id != done && *id != jobs[2].id));
    let in_set: u64 = conn
        .exists(format!("{base}open_index"))
        .await
        .expect("exists");
    assert_eq!(in_set, 0);
    assert_eq!(pages(&f).await.values().sum::<usize>(), 298);
    // a second pass finds nothing to move
    assert_eq!(maintain(&f).await, 0);
    // the job still leased closes from the pages
    ack(&f, &leased, &[jobs[1].id], || {
        OutcomeKind::Ok(Ok("1".into()))
    })
    .await;
    assert_eq!(pages(&f).await.values().sum::<usize>(), 297);
}
