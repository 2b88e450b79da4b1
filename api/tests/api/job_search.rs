//! `GET /api/v1/jobs` and `GET /api/v1/jobs/failures`: finished jobs copied to the Postgres
//! archive by the worker's archiver, searched by state, error text, id prefix, queue, project
//! and time, scoped to the caller's project; dead jobs grouped by error fingerprint; a completed
//! job dropped from Redis still answered from the archive.

use comet_worker::services::archiver::archive_once;
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, json_with_status};

/// Archives what the worker's own archiver has not copied yet (it runs while `drain_jobs`
/// runs a worker): passes until one finds nothing. Returns the totals of the passes made here.
async fn archive(app: &TestApp) -> comet_worker::services::archiver::Pass {
    let mut total = comet_worker::services::archiver::Pass::default();
    loop {
        let pass = archive_once(&app.env.pool, &app.env.queues, "ping")
            .await
            .expect("an archive pass");
        if pass == Default::default() {
            let backlog = app
                .env
                .queues
                .archive_backlog("ping")
                .await
                .expect("backlog");
            assert_eq!(backlog, 0, "every mark forgotten once copied");
            return total;
        }
        total.written += pass.written;
        total.reopened += pass.reopened;
        total.forgotten += pass.forgotten;
    }
}

async fn search(app: &TestApp, token: &str, query: &str) -> Value {
    let resp = app
        .authed(Method::GET, &format!("/api/v1/jobs{query}"), token)
        .send()
        .await
        .expect("the search answers");
    json_with_status(resp, StatusCode::OK).await
}

fn ids(page: &Value) -> Vec<String> {
    let mut ids: Vec<String> = page["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|j| j["id"].as_str().expect("an id").to_owned())
        .collect();
    ids.sort_unstable();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn finished_jobs_are_archived_and_found_by_state_error_text_and_id_prefix() {
    let mut app = TestApp::spawn().await;
    let ok = app.enqueue_ping(&json!({})).await;
    let bad = app.enqueue_ping(&json!({"failPermanently": true})).await;
    let cancelled = app
        .enqueue_ping(&json!({"runAt": crate::helpers::later()}))
        .await;
    let resp = app.cancel_job(&cancelled, &app.admin_token()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    app.drain_jobs().await;

    archive(&app).await;
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM job_archive")
        .fetch_one(&app.env.pool)
        .await
        .expect("count");
    assert_eq!(archived, 3);

    let token = app.admin_token();
    assert_eq!(
        ids(&search(&app, &token, "").await),
        sorted(vec![ok.clone(), bad.clone(), cancelled.clone()])
    );
    assert_eq!(
        ids(&search(&app, &token, "?state=completed").await),
        [ok.as_str()]
    );
    assert_eq!(
        ids(&search(&app, &token, "?state=cancelled").await),
        [cancelled.as_str()]
    );
    let dead = search(&app, &token, "?state=dead&queue=ping&kind=ping").await;
    assert_eq!(ids(&dead), [bad.as_str()]);
    let job = &dead["data"][0];
    assert_eq!(job["attempts"], 1, "{job:#}");
    assert!(
        job["errors"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{job:#}"
    );
    assert!(
        job.get("payload").is_none(),
        "lists leave payloads out: {job:#}"
    );

    // the error text, case-insensitively; a word it does not hold finds nothing
    let word = job["lastError"]
        .as_str()
        .expect("an error")
        .split_whitespace()
        .last()
        .expect("a word");
    let found = search(&app, &token, &format!("?error={}", word.to_uppercase())).await;
    assert_eq!(ids(&found), [bad.as_str()]);
    assert!(ids(&search(&app, &token, "?error=no%20such%20failure").await).is_empty());
    // `%` and `_` are text, not wildcards
    assert!(ids(&search(&app, &token, "?error=%25").await).is_empty());

    // an id prefix, with or without dashes
    let prefix = &ok[..13];
    assert_eq!(
        ids(&search(&app, &token, &format!("?idPrefix={prefix}")).await),
        [ok.as_str()]
    );
    let hex: String = ok.chars().filter(|c| *c != '-').take(20).collect();
    assert_eq!(
        ids(&search(&app, &token, &format!("?idPrefix={hex}")).await),
        [ok.as_str()]
    );

    // a time window on the finish time
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let q = |k: &str, t: &str| format!("?{k}={}", urlencoding(t));
    assert!(ids(&search(&app, &token, &q("from", &future)).await).is_empty());
    assert_eq!(
        search(&app, &token, &q("from", &past)).await["data"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert!(ids(&search(&app, &token, &q("to", &past)).await).is_empty());
}

fn urlencoding(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_completed_job_dropped_from_redis_is_still_answered_from_the_archive_with_its_payload() {
    let mut app = TestApp::spawn().await;
    let ok = app.enqueue_ping(&json!({"sleepMs": 1})).await;
    app.drain_jobs().await;
    archive(&app).await;
    // what maintenance does past JOB_REDIS_COMPLETED once a job is archived
    let base = app.env.queues.base("ping");
    let mut conn = app.env.queues.connection();
    let _: () = conn.hdel(format!("{base}jobs"), &ok).await.expect("hdel");
    let _: () = conn
        .zrem(format!("{base}completed"), &ok)
        .await
        .expect("zrem");

    let resp = app.get_job(&ok, &app.admin_token()).await;
    let job = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(job["data"]["state"], "completed", "{job:#}");
    assert_eq!(job["data"]["payload"]["sleepMs"], 1, "{job:#}");
    assert_eq!(job["data"]["result"]["attempt"], 1, "{job:#}");
    // another project's caller still gets a 404
    let other = app.env.other_project("other").await;
    let resp = app.get_job(&ok, &app.admin_token_for(other)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_dead_job_retried_leaves_the_archive_until_it_finishes_again() {
    let mut app = TestApp::spawn().await;
    let bad = app.enqueue_ping(&json!({"failPermanently": true})).await;
    app.drain_jobs().await;
    archive(&app).await;
    let token = app.admin_token();
    assert_eq!(
        ids(&search(&app, &token, "?state=dead").await),
        [bad.as_str()]
    );

    let resp = app.retry_job(&bad, &token).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let pass = archive(&app).await;
    assert_eq!(pass.reopened, 1, "{pass:?}");
    assert!(
        ids(&search(&app, &token, "").await).is_empty(),
        "an open job is not in the archive"
    );

    app.drain_jobs().await;
    archive(&app).await;
    let dead = search(&app, &token, "?state=dead").await;
    assert_eq!(ids(&dead), [bad.as_str()]);
    assert_eq!(
        dead["data"][0]["errors"].as_array().map(Vec::len),
        Some(2),
        "{dead:#}"
    );
}

#[tokio::test]
async fn a_project_sees_only_its_own_jobs_and_platform_operators_see_every_project() {
    let mut app = TestApp::spawn().await;
    let other = app.env.other_project("other").await;
    let mine = app.enqueue_ping(&json!({"failPermanently": true})).await;
    let theirs = app
        .enqueue_ping_as(
            &json!({"failPermanently": true}),
            &app.admin_token_for(other),
        )
        .await;
    app.drain_jobs().await;
    archive(&app).await;

    let token = app.admin_token();
    assert_eq!(ids(&search(&app, &token, "").await), [mine.as_str()]);
    // the same error text, the other project's job never shows
    assert_eq!(
        ids(&search(&app, &token, "?state=dead&error=permanent").await),
        [mine.as_str()]
    );
    let by_prefix = search(&app, &token, &format!("?idPrefix={}", &theirs[..8])).await;
    assert!(!ids(&by_prefix).contains(&theirs), "{by_prefix:#}");
    let resp = app
        .authed(
            Method::GET,
            &format!("/api/v1/jobs?projectId={other}"),
            &token,
        )
        .send()
        .await
        .expect("answers");
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "another project is not found"
    );
    let groups = failures(&app, &token, "").await;
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!(groups[0]["count"], 1);
    assert_eq!(groups[0]["sampleJobId"], json!(mine));

    let operator = app.platform_token_with(&["jobs:read", "queues:read"]);
    assert_eq!(
        ids(&search(&app, &operator, "").await),
        sorted(vec![mine.clone(), theirs.clone()])
    );
    assert_eq!(
        ids(&search(&app, &operator, &format!("?projectId={other}")).await),
        [theirs.as_str()]
    );
    let groups = failures(&app, &operator, "").await;
    assert_eq!(
        groups[0]["count"], 2,
        "one cause, two projects: {groups:#?}"
    );

    // without jobs:read, nothing
    let resp = app
        .authed(Method::GET, "/api/v1/jobs", &app.token(&["user:read"]))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

async fn failures(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let resp = app
        .authed(Method::GET, &format!("/api/v1/jobs/failures{query}"), token)
        .send()
        .await
        .expect("answers");
    json_with_status(resp, StatusCode::OK).await["data"]
        .as_array()
        .expect("a list")
        .clone()
}

#[tokio::test]
async fn dead_jobs_group_by_fingerprint_with_counts_and_first_and_last_seen() {
    let app = TestApp::spawn().await;
    // dead jobs as the archiver writes them: two causes, one with varying ids and numbers
    let project = app.project_id();
    let mut jobs = Vec::new();
    for (i, error) in [
        "webhook 0b1c2d3e-aaaa-4bbb-8ccc-dddddddddddd answered 503 after 1200ms",
        "webhook 7f0c2a1e-1b2c-4d5e-8f90-123456789abc answered 502 after 80ms",
        "webhook 11111111-2222-4333-8444-555555555555 answered 500 after 3ms",
        "SMTP 550 for 'bob@example.com': mailbox unknown",
    ]
    .into_iter()
    .enumerate()
    {
        let at = chrono::Utc::now() - chrono::Duration::minutes(10 - i as i64);
        jobs.push(shared::queue::JobRecord {
            id: uuid::Uuid::now_v7(),
            kind: "ping".into(),
            queue: "ping".into(),
            state: shared::queue::JobState::Dead,
            attempts: 1,
            max_attempts: 1,
            priority: 0,
            run_at: None,
            errors: Vec::new(),
            last_error: Some(error.into()),
            payload: Some(json!({})),
            progress: None,
            result: None,
            project_id: Some(project),
            request_id: None,
            worker: None,
            created_at: Some(at),
            started_at: Some(at),
            finished_at: Some(at),
        });
    }
    let refs: Vec<&shared::queue::JobRecord> = jobs.iter().collect();
    shared::db::job_archive::write(
        &app.env.pool,
        &refs,
        &[],
        std::time::Duration::from_secs(60),
        None,
    )
    .await
    .expect("write");

    let groups = failures(&app, &app.admin_token(), "").await;
    assert_eq!(groups.len(), 2, "{groups:#?}");
    assert_eq!(groups[0]["count"], 3);
    assert_eq!(groups[0]["queue"], "ping");
    assert_eq!(
        groups[0]["fingerprint"],
        "webhook <id> answered <n> after <n>ms"
    );
    assert_eq!(
        groups[0]["sampleJobId"],
        json!(jobs[2].id),
        "the latest is the sample"
    );
    assert!(
        groups[0]["firstSeen"].as_str() < groups[0]["lastSeen"].as_str(),
        "{groups:#?}"
    );
    assert_eq!(groups[1]["count"], 1);
    assert_eq!(
        groups[1]["fingerprint"],
        "SMTP <n> for '?': mailbox unknown"
    );
    assert!(
        failures(&app, &app.admin_token(), "?queue=send_invitation")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn search_filters_are_validated_and_every_invalid_one_is_named() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let long = "x".repeat(301);
    let resp = app
        .authed(
            Method::GET,
            &format!("/api/v1/jobs?state=waiting&queue=nope&idPrefix=xyz&from=yesterday&error={long}&limit=0&after=bogus"),
            &token,
        )
        .send()
        .await
        .expect("answers");
    let body = json_with_status(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    let text = body.to_string();
    for field in [
        "state", "queue", "idPrefix", "from", "error", "limit", "after",
    ] {
        assert!(
            text.contains(&format!("\"{field}\"")),
            "{field} not named: {body:#}"
        );
    }
    let resp = app
        .authed(Method::GET, "/api/v1/jobs?error=a%00b", &token)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_search_pages_newest_first_by_cursor_without_gaps_or_repeats() {
    let mut app = TestApp::spawn().await;
    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(app.enqueue_ping(&json!({})).await);
    }
    app.drain_jobs().await;
    archive(&app).await;
    let token = app.admin_token();
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut last_finished: Option<String> = None;
    loop {
        let page = search(&app, &token, &query).await;
        for job in page["data"].as_array().expect("a list") {
            let finished = job["finishedAt"].as_str().expect("finished").to_owned();
            if let Some(prev) = &last_finished {
                assert!(&finished <= prev, "newest first");
            }
            last_finished = Some(finished);
            seen.push(job["id"].as_str().expect("id").to_owned());
        }
        match page["meta"]["nextCursor"].as_str() {
            Some(c) => query = format!("?limit=2&after={c}"),
            None => break,
        }
    }
    assert_eq!(sorted(seen), sorted(all));
}

/// Runs the maintenance script once over `ping` with `keep_hot` completed jobs kept once
/// archived and `max_done` kept in any case.
async fn maintain(app: &TestApp, keep_hot: u64, max_done: u64) {
    let script = redis::Script::new(&shared::queue::script_source_checked("maintain"));
    let mut conn = app.env.queues.connection();
    let _: Vec<i64> = script
        .key(shared::queue::queue_keys(&app.env.queues.base("ping")))
        .arg(1000)
        .arg(86_400_000u64)
        .arg(86_400_000u64)
        .arg(max_done)
        .arg(25)
        .arg(0)
        .arg(keep_hot)
        .invoke_async(&mut conn)
        .await
        .expect("maintain");
}

async fn completed_in_redis(app: &TestApp) -> u64 {
    let mut conn = app.env.queues.connection();
    conn.zcard(format!("{}completed", app.env.queues.base("ping")))
        .await
        .expect("zcard")
}

#[tokio::test]
async fn redis_keeps_only_the_newest_completed_jobs_once_archived_and_never_drops_one_not_yet_archived()
 {
    let mut app = TestApp::spawn().await;
    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(app.enqueue_ping(&json!({})).await);
    }
    app.start_worker().await;
    app.drain_jobs().await;
    app.stop_worker().await;
    // marks not yet copied: past the hot cap, nothing leaves Redis
    let base = app.env.queues.base("ping");
    let mut conn = app.env.queues.connection();
    for id in &all {
        let _: () = conn
            .zadd(format!("{base}archive"), id, 1)
            .await
            .expect("mark");
    }
    maintain(&app, 2, 100_000).await;
    assert_eq!(completed_in_redis(&app).await, 5, "unarchived jobs stay");

    archive(&app).await;
    maintain(&app, 2, 100_000).await;
    assert_eq!(
        completed_in_redis(&app).await,
        2,
        "archived jobs past the hot cap leave Redis"
    );
    // every one of them is still found, from Redis or from the archive
    for id in &all {
        let resp = app.get_job(id, &app.admin_token()).await;
        let job = json_with_status(resp, StatusCode::OK).await;
        assert_eq!(job["data"]["state"], "completed", "{job:#}");
    }
    assert_eq!(
        ids(&search(&app, &app.admin_token(), "?state=completed").await),
        sorted(all)
    );

    // past JOB_MAX_COMPLETED, Redis sheds even unarchived jobs (an archiver that is down must
    // not let Redis grow)
    let more = app.enqueue_ping(&json!({})).await;
    app.drain_jobs().await;
    let _: () = conn
        .zadd(format!("{base}archive"), &more, 1)
        .await
        .expect("mark");
    maintain(&app, 0, 0).await;
    assert_eq!(completed_in_redis(&app).await, 0);
}
