//! Job controls by id: delete a finished job, run a delayed or retrying job now, and platform
//! operators acting on any project's job (`queues:read` to see it, `queues:write` to act).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, json_with_status, later};

async fn call(app: &TestApp, method: Method, path: &str, token: &str) -> reqwest::Response {
    app.authed(method, path, token)
        .send()
        .await
        .expect("the API answers")
}

async fn state_of(app: &TestApp, id: &str, token: &str) -> Value {
    json_with_status(app.get_job(id, token).await, StatusCode::OK).await["data"]["state"].clone()
}

#[tokio::test]
async fn a_finished_job_is_deleted_from_redis_and_the_archive_an_open_one_is_refused() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let done = app.enqueue_ping(&json!({})).await;
    let dead = app.enqueue_ping(&json!({"failPermanently": true})).await;
    app.drain_jobs().await;
    comet_worker::services::archiver::archive_once(&app.env.pool, &app.env.queues, "ping")
        .await
        .expect("archive");
    let open = app.enqueue_ping(&json!({"runAt": later()})).await;

    for id in [&done, &dead] {
        let resp = call(&app, Method::DELETE, &format!("/api/v1/jobs/{id}"), &token).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{id}");
        assert_eq!(
            app.get_job(id, &token).await.status(),
            StatusCode::NOT_FOUND
        );
        let resp = call(&app, Method::DELETE, &format!("/api/v1/jobs/{id}"), &token).await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "a second delete finds nothing"
        );
    }
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM job_archive")
        .fetch_one(&app.env.pool)
        .await
        .expect("count");
    assert_eq!(archived, 0);
    let resp = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/jobs/{open}"),
        &token,
    )
    .await;
    let body = json_with_status(resp, StatusCode::CONFLICT).await;
    assert!(body.to_string().contains("delayed"), "{body}");
    assert_eq!(state_of(&app, &open, &token).await, "delayed");

    // another project's job is not found; a token without jobs:write is refused
    let other = app.env.other_project("other").await;
    let resp = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/jobs/{open}"),
        &app.admin_token_for(other),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/jobs/{open}"),
        &app.token(&["jobs:read"]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_delayed_or_retrying_job_runs_now_and_other_states_are_refused() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let delayed = app.enqueue_ping(&json!({"runAt": later()})).await;
    let waiting = app.enqueue_ping(&json!({})).await;

    let resp = call(
        &app,
        Method::POST,
        &format!("/api/v1/jobs/{delayed}/run-now"),
        &token,
    )
    .await;
    let job = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(job["data"]["state"], "waiting", "{job:#}");
    let resp = call(
        &app,
        Method::POST,
        &format!("/api/v1/jobs/{waiting}/run-now"),
        &token,
    )
    .await;
    let body = json_with_status(resp, StatusCode::CONFLICT).await;
    assert!(body.to_string().contains("waiting"), "{body}");

    let drained = app.drain_jobs().await;
    assert_eq!(
        drained.job(&delayed).state,
        shared::queue::JobState::Completed,
        "it ran at once, not in an hour"
    );

    // a job waiting out its backoff runs at once too (made `retrying` as a failed attempt's ack
    // leaves it, with an hour to wait: the real backoff is jittered down to milliseconds)
    let retrying = app.enqueue_ping(&json!({})).await;
    {
        use redis::AsyncCommands as _;
        let base = app.env.queues.base("ping");
        let mut conn = app.env.queues.connection();
        let due = chrono::Utc::now().timestamp_millis() + 3_600_000;
        let _: () = conn
            .lrem(format!("{base}wait"), 1, &retrying)
            .await
            .expect("lrem");
        let _: () = conn
            .zadd(format!("{base}retry"), &retrying, due)
            .await
            .expect("zadd");
        let raw: Vec<u8> = conn
            .hget(format!("{base}jobs"), &retrying)
            .await
            .expect("record");
        let mut fields = shared::queue::decode_job_fields(&raw).expect("decodes");
        fields.insert("state".into(), "retrying".into());
        fields.insert("run_at".into(), due.to_string());
        let _: () = conn
            .hset(
                format!("{base}jobs"),
                &retrying,
                shared::queue::encode_job_fields(&fields),
            )
            .await
            .expect("hset");
    }
    assert_eq!(state_of(&app, &retrying, &token).await, "retrying");
    let resp = call(
        &app,
        Method::POST,
        &format!("/api/v1/jobs/{retrying}/run-now"),
        &token,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(state_of(&app, &retrying, &token).await, "waiting");

    let other = app.env.other_project("other").await;
    let resp = call(
        &app,
        Method::POST,
        &format!("/api/v1/jobs/{retrying}/run-now"),
        &app.admin_token_for(other),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn platform_operators_see_and_act_on_any_projects_jobs_with_the_queue_permissions() {
    let mut app = TestApp::spawn().await;
    let dead = app.enqueue_ping(&json!({"failPermanently": true})).await;
    app.drain_jobs().await;
    let delayed = app.enqueue_ping(&json!({"runAt": later()})).await;

    // a platform token without the queue permissions stays in its own (empty) project
    let plain = app.platform_token_with(&["jobs:read", "jobs:write"]);
    assert_eq!(
        app.get_job(&dead, &plain).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.retry_job(&dead, &plain).await.status(),
        StatusCode::NOT_FOUND
    );

    // queues:read shows any project's job; acting needs queues:write
    let reader = app.platform_token_with(&["jobs:read", "jobs:write", "queues:read"]);
    assert_eq!(state_of(&app, &dead, &reader).await, "dead");
    assert_eq!(
        app.retry_job(&dead, &reader).await.status(),
        StatusCode::NOT_FOUND
    );

    let operator =
        app.platform_token_with(&["jobs:read", "jobs:write", "queues:read", "queues:write"]);
    assert_eq!(
        app.retry_job(&dead, &operator).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(state_of(&app, &dead, &app.admin_token()).await, "waiting");
    let resp = call(
        &app,
        Method::POST,
        &format!("/api/v1/jobs/{delayed}/run-now"),
        &operator,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app.cancel_job(&dead, &operator).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/jobs/{dead}"),
        &operator,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_job(&dead, &app.admin_token()).await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn bulk(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.authed(Method::POST, "/api/v1/jobs/bulk", token)
        .json(body)
        .send()
        .await
        .expect("the API answers")
}

#[tokio::test]
async fn dead_jobs_matching_a_filter_are_retried_in_bulk_within_the_callers_scope() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let mine: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(app.enqueue_ping(&json!({"failPermanently": true})).await);
        }
        ids
    };
    let other = app.env.other_project("other").await;
    let theirs = app
        .enqueue_ping_as(
            &json!({"failPermanently": true}),
            &app.admin_token_for(other),
        )
        .await;
    app.drain_jobs().await;
    comet_worker::services::archiver::archive_once(&app.env.pool, &app.env.queues, "ping")
        .await
        .expect("archive");

    let filter = json!({"queue": "ping", "error": "permanent"});
    let preview = bulk(
        &app,
        &token,
        &json!({"action": "retry", "filter": filter, "dryRun": true}),
    )
    .await;
    let preview = json_with_status(preview, StatusCode::OK).await;
    assert_eq!(
        preview["data"]["matched"], 3,
        "only the caller's project: {preview:#}"
    );
    assert_eq!(preview["data"]["done"], 0);
    assert_eq!(preview["data"]["confirmationRequired"], false);
    for id in &mine {
        assert_eq!(
            state_of(&app, id, &token).await,
            "dead",
            "a dry run changes nothing"
        );
    }

    let done = bulk(&app, &token, &json!({"action": "retry", "filter": filter})).await;
    let done = json_with_status(done, StatusCode::OK).await;
    assert_eq!(
        (
            done["data"]["done"].clone(),
            done["data"]["skipped"].clone()
        ),
        (json!(3), json!(0)),
        "{done:#}"
    );
    for id in &mine {
        assert_eq!(state_of(&app, id, &token).await, "waiting");
    }
    assert_eq!(
        state_of(&app, &theirs, &app.admin_token_for(other)).await,
        "dead"
    );

    // a platform operator reaches the other project's, narrowed by projectId
    let operator =
        app.platform_token_with(&["jobs:read", "jobs:write", "queues:read", "queues:write"]);
    let body = json!({"action": "retry", "filter": {"projectId": other}});
    let done = json_with_status(bulk(&app, &operator, &body).await, StatusCode::OK).await;
    assert_eq!(done["data"]["done"], 1, "{done:#}");
    assert_eq!(
        state_of(&app, &theirs, &app.admin_token_for(other)).await,
        "waiting"
    );

    // a project's caller does not find another project; invalid filters are named; a retry
    // takes dead jobs only
    let body = json!({"action": "retry", "filter": {"projectId": other}});
    assert_eq!(
        bulk(&app, &token, &body).await.status(),
        StatusCode::NOT_FOUND
    );
    let body = json!({"action": "retry", "filter": {"queue": "nope", "idPrefix": "xyz"}});
    let refused = json_with_status(
        bulk(&app, &token, &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    for field in ["filter.queue", "filter.idPrefix"] {
        assert!(refused.to_string().contains(field), "{field}: {refused:#}");
    }
    let body = json!({"action": "retry", "filter": {"state": "completed"}});
    let none = json_with_status(bulk(&app, &token, &body).await, StatusCode::OK).await;
    assert_eq!(
        none["data"]["matched"], 0,
        "a retry takes dead jobs only: {none:#}"
    );
    let resp = bulk(
        &app,
        &app.token(&["jobs:read"]),
        &json!({"action": "retry"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// `n` completed jobs of `project` written straight into the archive.
async fn archived_completed(app: &TestApp, project: uuid::Uuid, n: i64, error: &str) {
    sqlx::query(
        "INSERT INTO job_archive (job_id, queue, kind, project_id, state, attempts, max_attempts,
                                  last_error, finished_at)
         SELECT gen_random_uuid(), 'ping', 'ping', $1, 'completed', 1, 1, $3,
                now() - make_interval(secs => g)
         FROM generate_series(1, $2) g",
    )
    .bind(project)
    .bind(n)
    .bind(error)
    .execute(&app.env.pool)
    .await
    .expect("archived jobs");
}

#[tokio::test]
async fn a_large_bulk_delete_needs_the_dry_runs_token_and_too_large_a_set_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    archived_completed(&app, app.project_id(), 101, "flaky").await;
    let body = json!({"action": "delete", "filter": {"state": "completed", "error": "flaky"}});

    let refused = json_with_status(bulk(&app, &token, &body).await, StatusCode::CONFLICT).await;
    assert!(
        refused.to_string().contains("confirmationToken"),
        "{refused:#}"
    );
    let mut dry = body.clone();
    dry["dryRun"] = json!(true);
    let preview = json_with_status(bulk(&app, &token, &dry).await, StatusCode::OK).await;
    assert_eq!(preview["data"]["matched"], 101);
    assert_eq!(preview["data"]["confirmationRequired"], true);
    let confirmation = preview["data"]["confirmationToken"]
        .as_str()
        .expect("a token")
        .to_owned();

    // the token is bound to the action and the filter
    let mut other_filter = body.clone();
    other_filter["filter"]["error"] = json!("flak");
    other_filter["confirmationToken"] = json!(confirmation);
    let resp = bulk(&app, &token, &other_filter).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let mut forged = body.clone();
    forged["confirmationToken"] = json!(format!("{}0", confirmation));
    assert_eq!(
        bulk(&app, &token, &forged).await.status(),
        StatusCode::CONFLICT
    );

    let mut confirmed = body.clone();
    confirmed["confirmationToken"] = json!(confirmation);
    let done = json_with_status(bulk(&app, &token, &confirmed).await, StatusCode::OK).await;
    assert_eq!(done["data"]["done"], 101, "{done:#}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_archive")
        .fetch_one(&app.env.pool)
        .await
        .expect("count");
    assert_eq!(left, 0);

    archived_completed(&app, app.project_id(), 100_001, "noisy").await;
    let body = json!({"action": "delete", "filter": {"error": "noisy"}, "dryRun": true});
    let refused = json_with_status(
        bulk(&app, &token, &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        refused.to_string().contains("more than 100000"),
        "{refused:#}"
    );
}

#[tokio::test]
async fn a_bulk_action_over_a_thousand_jobs_is_a_job_with_progress_confined_to_the_project() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let (_, other, _) = app.new_project("Other tenant").await;
    archived_completed(&app, app.project_id(), 1_500, "batch").await;
    archived_completed(&app, other, 20, "batch").await;
    let body = json!({"action": "delete", "filter": {"state": "completed", "error": "batch"}});
    let mut dry = body.clone();
    dry["dryRun"] = json!(true);
    let preview = json_with_status(bulk(&app, &token, &dry).await, StatusCode::OK).await;
    assert_eq!(
        preview["data"]["matched"], 1_500,
        "the caller's project only"
    );
    let mut confirmed = body.clone();
    confirmed["confirmationToken"] = preview["data"]["confirmationToken"].clone();

    let queued = json_with_status(bulk(&app, &token, &confirmed).await, StatusCode::ACCEPTED).await;
    assert_eq!(queued["data"]["matched"], 1_500);
    assert_eq!(queued["data"]["done"], 0, "not in the request");
    let job_id = queued["data"]["jobId"]
        .as_str()
        .expect("a job id")
        .to_owned();
    let job = json_with_status(app.get_job(&job_id, &token).await, StatusCode::OK).await;
    assert_eq!(job["data"]["queue"], "bulk_jobs", "{job:#}");

    app.run_pending_jobs().await;
    let job = json_with_status(app.get_job(&job_id, &token).await, StatusCode::OK).await;
    assert_eq!(job["data"]["state"], "completed", "{job:#}");
    let summary = json!({"total": 1_500, "done": 1_500, "skipped": 0, "overQuota": 0});
    assert_eq!(job["data"]["result"], summary, "{job:#}");
    assert_eq!(
        job["data"]["progress"], summary,
        "the last progress is the whole"
    );
    let left: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT project_id, count(*) FROM job_archive WHERE queue = 'ping' GROUP BY project_id",
    )
    .fetch_all(&app.env.pool)
    .await
    .expect("count");
    assert_eq!(
        left,
        [(other, 20)],
        "the other project's jobs are untouched"
    );
}

#[tokio::test]
async fn jobs_not_started_are_cancelled_in_bulk_within_the_callers_project() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let (_, other, _) = app.new_project("Other tenant").await;
    let theirs = app.admin_token_for(other);
    let later = json!({"runAt": later()});
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(app.enqueue_ping(&later).await);
    }
    let mut their_jobs = Vec::new();
    for _ in 0..2 {
        their_jobs.push(app.enqueue_ping_as(&later, &theirs).await);
    }
    // relayed into Redis
    shared::testing::eventually(Duration::from_secs(10), "the jobs in Redis", || async {
        let c = app.env.queues.counts("ping").await.ok()?;
        (c.delayed == 5).then_some(())
    })
    .await;

    // a state or a finish time a cancel does not take matches nothing
    for filter in [
        json!({"state": "dead"}),
        json!({"from": "2020-01-01T00:00:00Z"}),
    ] {
        let body = json!({"action": "cancel", "filter": filter, "dryRun": true});
        let r = json_with_status(bulk(&app, &token, &body).await, StatusCode::OK).await;
        assert_eq!(r["data"]["matched"], 0, "{filter}: {r:#}");
    }
    let body = json!({"action": "cancel", "filter": {"queue": "ping", "state": "delayed"}});
    let done = json_with_status(bulk(&app, &token, &body).await, StatusCode::OK).await;
    assert_eq!(
        (&done["data"]["matched"], &done["data"]["done"]),
        (&json!(3), &json!(3)),
        "{done:#}"
    );
    for id in &mine {
        assert_eq!(state_of(&app, id, &token).await, "cancelled");
    }
    for id in &their_jobs {
        assert_eq!(
            state_of(&app, id, &theirs).await,
            "delayed",
            "another project's job"
        );
    }
    // a platform operator narrows to a project
    let operator =
        app.platform_token_with(&["jobs:read", "jobs:write", "queues:read", "queues:write"]);
    let body = json!({"action": "cancel", "filter": {"projectId": other.to_string()}});
    let done = json_with_status(bulk(&app, &operator, &body).await, StatusCode::OK).await;
    assert_eq!(done["data"]["done"], 2, "{done:#}");
    for id in &their_jobs {
        assert_eq!(state_of(&app, id, &theirs).await, "cancelled");
    }
}

#[tokio::test]
async fn a_bulk_retry_job_stops_at_the_projects_quota_and_counts_the_rest_over_quota() {
    use shared::jobs::{EnqueueOptions, Job as _, Ping};
    const QUOTA: u64 = 1_050;
    const DEAD: u64 = 1_001; // over the 1,000 done in the request: a bulk_jobs job
    let mut app = TestApp::spawn_with(|s| s.queue.max_open_per_project = QUOTA).await;
    let token = app.admin_token();
    let project = app.project_id();
    let dying: Vec<_> = (0..DEAD)
        .map(|_| {
            let ping = Ping {
                fail_permanently: true,
                ..Ping::new(project)
            };
            ping.to_new_job(EnqueueOptions::default()).expect("a job")
        })
        .collect();
    // a worker of this test's own runs them and archives them, then stops
    app.start_worker().await;
    app.env
        .queues
        .push_many("ping", &dying)
        .await
        .expect("pushed");
    app.drain_jobs().await;
    shared::testing::eventually(Duration::from_secs(60), "the deaths archived", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_archive WHERE project_id = $1 AND state = 'dead'",
        )
        .bind(project)
        .fetch_one(&app.env.pool)
        .await
        .expect("count");
        (n as u64 == DEAD).then_some(())
    })
    .await;
    app.stop_worker().await;

    let body = json!({"action": "retry", "filter": {"queue": "ping", "state": "dead"}});
    let mut dry = body.clone();
    dry["dryRun"] = json!(true);
    let preview = json_with_status(bulk(&app, &token, &dry).await, StatusCode::OK).await;
    assert_eq!(preview["data"]["matched"], DEAD);
    let mut confirmed = body.clone();
    confirmed["confirmationToken"] = preview["data"]["confirmationToken"].clone();
    // accepted: the project's 0 open jobs and the 1,001 fit under its quota
    let queued = json_with_status(bulk(&app, &token, &confirmed).await, StatusCode::ACCEPTED).await;
    let job_id = queued["data"]["jobId"]
        .as_str()
        .expect("a job id")
        .to_owned();

    // the project fills up before the job runs: 60 delayed pings
    let later_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let filler: Vec<_> = (0..60)
        .map(|_| {
            let opts = EnqueueOptions {
                run_at: Some(later_at),
                ..EnqueueOptions::default()
            };
            Ping::new(project).to_new_job(opts).expect("a job")
        })
        .collect();
    app.env
        .queues
        .push_many("ping", &filler)
        .await
        .expect("pushed");
    app.start_worker().await;
    let job = shared::testing::eventually(Duration::from_secs(120), "the bulk job", || async {
        let job = json_with_status(app.get_job(&job_id, &token).await, StatusCode::OK).await;
        (job["data"]["state"] == "completed").then_some(job)
    })
    .await;
    // open when it began: the 60 delayed and the bulk job itself; it retries until the
    // project holds its quota, and counts every job it left dead
    let done = QUOTA - 61;
    assert_eq!(
        job["data"]["result"],
        json!({"total": DEAD, "done": done, "skipped": 0, "overQuota": DEAD - done}),
        "{job:#}"
    );
    app.cleanup().await;
}
