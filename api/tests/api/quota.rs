//! The per-project quota of open jobs (`JOB_MAX_OPEN_PER_PROJECT`) and enqueue rate on every
//! route that enqueues, the revocations exempt from it, and the bounded views of who uses it
//! (`GET /api/v1/queues/projects`, the `comet_project_open_jobs` gauge).

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shared::{
    config::{RateLimit, Settings},
    jobs::{EnqueueOptions, Job as _, Ping},
    queue::NewJob,
};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, json_with_status, later};

/// The API with a quota of `n` open jobs per project.
async fn app_with_quota(n: u64) -> TestApp {
    TestApp::spawn_with(|s: &mut Settings| s.queue.max_open_per_project = n).await
}

/// Asserts a 429 `quota_exceeded` with `Retry-After` and a message naming the limit.
async fn assert_quota_exceeded(resp: Response, limit: u64) {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s > 0), "Retry-After seconds");
    let error = assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
    let message = error["message"].as_str().expect("a message");
    assert!(
        message.contains(&format!("quota of {limit} open jobs"))
            && message.contains("JOB_MAX_OPEN_PER_PROJECT"),
        "{message}"
    );
}

/// Pings `n` times for the token's project (jobs due in 30 days: they stay open), asserting
/// the 202s; returns the job ids.
async fn fill(app: &TestApp, token: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let resp = app.ping(&json!({ "runAt": later() }), token).await;
        let body = json_with_status(resp, StatusCode::ACCEPTED).await;
        ids.push(body["data"]["jobId"].as_str().expect("a job id").to_owned());
    }
    ids
}

#[tokio::test]
async fn a_ping_past_the_projects_open_jobs_quota_is_a_429_and_other_projects_are_not_held_back() {
    let app = app_with_quota(3).await;
    let token = app.admin_token();
    fill(&app, &token, 3).await;

    assert_quota_exceeded(app.ping(&json!({}), &token).await, 3).await;
    // a repeated idempotency key is refused too: the check comes before the queue is asked
    assert_quota_exceeded(
        app.ping(&json!({ "idempotencyKey": "k-1" }), &token).await,
        3,
    )
    .await;

    let other = app.env.other_project("other").await;
    let theirs = app.ping(&json!({}), &app.admin_token_for(other)).await;
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    let open = app
        .env
        .queues
        .open_jobs(shared::jobs::QUEUES, app.project_id())
        .await
        .expect("open jobs");
    assert_eq!(open, 3, "the refused pings left nothing behind");
}

#[tokio::test]
async fn finished_and_cancelled_jobs_free_the_quota() {
    let mut app = app_with_quota(2).await;
    let token = app.admin_token();
    let delayed = fill(&app, &token, 1).await;
    let due = app.enqueue_ping(&json!({})).await;
    assert_quota_exceeded(app.ping(&json!({}), &token).await, 2).await;

    // the due ping completes (the worker stops again, so the next pings stay open)
    app.start_worker().await;
    app.wait_for_state(&due, "completed").await;
    app.stop_worker().await;
    let again = app.ping(&json!({}), &token).await;
    assert_eq!(
        again.status(),
        StatusCode::ACCEPTED,
        "a completed job frees a place"
    );
    assert_quota_exceeded(app.ping(&json!({}), &token).await, 2).await;

    // cancelling the delayed one frees another
    let cancelled = app.cancel_job(&delayed[0], &token).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let after_cancel = app.ping(&json!({}), &token).await;
    assert_eq!(after_cancel.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn retrying_a_dead_job_passes_the_quota_like_a_new_job() {
    let mut app = app_with_quota(2).await;
    let token = app.admin_token();
    let dead = app.enqueue_ping(&json!({ "failPermanently": true })).await;
    app.drain_jobs().await;
    assert_eq!(app.job(&dead).await["state"], "dead");
    let waiting = fill(&app, &token, 2).await;

    assert_quota_exceeded(app.retry_job(&dead, &token).await, 2).await;
    assert_eq!(
        app.job(&dead).await["state"],
        "dead",
        "the refused retry changed nothing"
    );

    let cancelled = app.cancel_job(&waiting[0], &token).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let retried = app.retry_job(&dead, &token).await;
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    assert_eq!(app.job(&dead).await["state"], "waiting");
}

#[tokio::test]
async fn an_invitation_past_the_quota_is_a_429_that_writes_nothing_and_outbox_jobs_count() {
    let app = app_with_quota(2).await;
    let (_, admin) = app.admin("boss@example.com").await;
    // no worker: the invitation's job stays in the outbox, and counts there
    let first = app.invite_member(&admin, "first@example.com").await;
    assert_eq!(app.outbox().await.len(), 1);
    fill(&app, &admin, 1).await;

    let member = app.role_id(app.project_id(), "member").await;
    let refused = app
        .invite(
            &admin,
            &json!({"email": "second@example.com", "roleIds": [member]}),
        )
        .await;
    assert_quota_exceeded(refused, 2).await;
    let users = app.users(&admin, "?status=INVITED").await;
    assert_eq!(users["data"].as_array().map(Vec::len), Some(1), "{users}");
    assert_eq!(app.outbox().await.len(), 1, "no job was written");

    let user = first["user"]["id"].as_str().expect("user id");
    assert_quota_exceeded(app.resend_invitation(&admin, user).await, 2).await;
    assert_quota_exceeded(app.ping(&json!({}), &admin).await, 2).await;
}

#[tokio::test]
async fn invitations_count_against_the_projects_enqueue_rate() {
    let app = TestApp::spawn_with(|s| {
        s.queue.enqueue_per_project = RateLimit::per_secs(2, 60);
    })
    .await;
    let (_, admin) = app.admin("boss@example.com").await;
    app.invite_member(&admin, "one@example.com").await;
    fill(&app, &admin, 1).await;

    let member = app.role_id(app.project_id(), "member").await;
    let limited = app
        .invite(
            &admin,
            &json!({"email": "two@example.com", "roleIds": [member]}),
        )
        .await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn deactivating_a_user_and_changing_roles_still_work_and_revoke_at_the_quota() {
    let app = app_with_quota(1).await;
    let (_, admin) = app.admin("boss@example.com").await;
    let member = app
        .active_user(app.project_id(), "member@example.com", "member")
        .await;
    let other = app
        .active_user(app.project_id(), "other@example.com", "member")
        .await;
    fill(&app, &admin, 1).await;
    assert_quota_exceeded(app.ping(&json!({}), &admin).await, 1).await;

    let admin_role = app.role_id(app.project_id(), "admin").await;
    let changed = app.add_role(&admin, &other.to_string(), admin_role).await;
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "a role change is not held back"
    );
    let deactivated = app.deactivate(&admin, &member.to_string()).await;
    let body = json_with_status(deactivated, StatusCode::OK).await;
    assert_eq!(body["data"]["status"], "DEACTIVATED");
    assert!(app.has_revocation_marker(member).await);

    let revocations: Vec<_> = app
        .outbox()
        .await
        .into_iter()
        .filter(|j| j.queue == "revoke_sessions")
        .collect();
    assert_eq!(revocations.len(), 2, "both revocations were enqueued");
}

#[tokio::test]
async fn the_busiest_projects_are_listed_most_first_for_operators_only() {
    let app = app_with_quota(50).await;
    let projects: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for (i, p) in projects.iter().enumerate() {
        push_open(&app, *p, i + 1).await;
    }
    let ops = app.platform_token_with(&["queues:read"]);

    let body = json_with_status(app.busiest_projects(&ops, "?limit=2").await, StatusCode::OK).await;
    let data = &body["data"];
    assert_eq!(data["totalOpenJobs"], 10);
    assert_eq!(data["maxOpenPerProject"], 50);
    assert_eq!(data["othersAtMost"], Value::Null, "the list is exact");
    let listed: Vec<(String, u64)> = data["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .map(|p| {
            (
                p["projectId"].as_str().expect("id").to_owned(),
                p["openJobs"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(projects[3].to_string(), 4), (projects[2].to_string(), 3)]
    );
    assert_eq!(data["projects"][0]["byQueue"], json!({ "ping": 4 }));

    let everyone = json_with_status(app.busiest_projects(&ops, "").await, StatusCode::OK).await;
    assert_eq!(
        everyone["data"]["projects"].as_array().map(Vec::len),
        Some(4)
    );
    for bad in ["?limit=0", "?limit=101"] {
        let resp = app.busiest_projects(&ops, bad).await;
        assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    let tenant = app.token(&["jobs:read", "jobs:write"]);
    let refused = app.busiest_projects(&tenant, "").await;
    assert_error(refused, StatusCode::FORBIDDEN, "forbidden").await;
}

/// Pushes `n` waiting pings of `project` straight into the queue (any number of projects,
/// without making each in the database).
async fn push_open(app: &TestApp, project: Uuid, n: usize) -> Vec<NewJob> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| {
            Ping::new(project)
                .to_new_job(EnqueueOptions::default())
                .expect("job")
        })
        .collect();
    app.env.queues.push_many("ping", &jobs).await.expect("push");
    jobs
}

/// The `comet_project_open_jobs` samples of a scrape: project → value.
fn project_gauges(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("comet_project_open_jobs{project=\""))
        .map(|rest| {
            let (project, value) = rest.split_once("\"} ").expect("a sample");
            (project.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_per_project_gauge_names_only_the_ten_busiest_projects_however_many_there_are() {
    let app = app_with_quota(1000).await;
    let mut pushed: Vec<(Uuid, Vec<NewJob>)> = Vec::new();
    for i in 0..40 {
        let project = Uuid::new_v4();
        pushed.push((project, push_open(&app, project, i + 1).await));
    }
    let text = app.metrics().await.text().await.expect("a body");
    let samples = project_gauges(&text);
    assert_eq!(samples.len(), 10, "{samples:?}");
    let want: Vec<(String, f64)> = pushed
        .iter()
        .rev()
        .take(10)
        .map(|(p, jobs)| (p.to_string(), jobs.len() as f64))
        .collect();
    assert_eq!(samples, want);
    assert_eq!(gauge(&text, "comet_open_jobs"), Some(820.0));
    assert_eq!(gauge(&text, "comet_project_open_jobs_quota"), Some(1000.0));
    assert!(
        text.contains("# TYPE comet_project_open_jobs gauge"),
        "{text}"
    );

    // the busiest project's jobs are cancelled: it leaves the gauge, the 11th enters it
    let (busiest, jobs) = pushed.last().expect("a project");
    for job in jobs {
        app.env.queues.cancel("ping", job.id).await.expect("cancel");
    }
    let text = app.metrics().await.text().await.expect("a body");
    let samples = project_gauges(&text);
    assert_eq!(samples.len(), 10);
    assert!(!samples.iter().any(|(p, _)| *p == busiest.to_string()));
    assert_eq!(samples[9], (pushed[29].0.to_string(), 30.0));
}

#[tokio::test]
async fn metrics_are_served_without_the_per_project_gauges_while_redis_is_down() {
    let app = TestApp::spawn_with(|s| s.redis.url = "redis://127.0.0.1:1".into()).await;
    let started = std::time::Instant::now();
    let resp = app.metrics().await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("a body");
    assert!(!text.contains("comet_project_open_jobs"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test]
async fn every_route_that_enqueues_documents_its_429_with_retry_after() {
    let app = TestApp::spawn().await;
    let spec = crate::helpers::served_spec(&app).await;
    for (path, method) in [
        ("/api/v1/events", "post"),
        ("/api/v1/events/batch", "post"),
        ("/api/v1/jobs/ping", "post"),
        ("/api/v1/jobs/{id}/retry", "post"),
        ("/api/v1/users/invite", "post"),
        ("/api/v1/users/{id}/resend-invitation", "post"),
    ] {
        let refusal = &spec["paths"][path][method]["responses"]["429"];
        assert!(
            refusal["headers"]["Retry-After"].is_object(),
            "{method} {path}: {refusal}"
        );
        let text = refusal["description"].as_str().unwrap_or_default();
        assert!(text.contains("quota_exceeded"), "{method} {path}: {text}");
    }
}

#[tokio::test]
async fn a_batch_is_admitted_only_if_all_its_jobs_fit_under_the_quota_and_the_rate() {
    use comet_api::{error::ApiError, quota::admit_jobs};
    let app = TestApp::spawn_with(|s| {
        s.queue.max_open_per_project = 5;
        s.queue.enqueue_per_project = RateLimit::per_secs(7, 60);
    })
    .await;
    let state = comet_api::state(app.env.settings.clone()).expect("state");
    let project = app.project_id();
    // 3 open jobs, 3 enqueues counted in the window
    fill(&app, &app.admin_token(), 3).await;

    let too_many = admit_jobs(&state, project, 3).await;
    assert!(
        matches!(too_many, Err(ApiError::QuotaExceeded { limit: 5, .. })),
        "3 + 3 > 5: {too_many:?}"
    );
    admit_jobs(&state, project, 2)
        .await
        .expect("3 + 2 fit, 5 of 7 enqueues");
    let other = app.env.other_project("other").await;
    admit_jobs(&state, other, 4)
        .await
        .expect("another project's own rate");
    admit_jobs(&state, project, 2)
        .await
        .expect("7 of 7 enqueues");
    let over_rate = admit_jobs(&state, project, 1).await;
    assert!(
        matches!(over_rate, Err(ApiError::TooManyRequests { .. })),
        "a batch counts each of its jobs: 8 of 7 {over_rate:?}"
    );
}

#[tokio::test]
async fn events_pass_the_quota_whole_batches_included_and_nothing_is_stored_when_refused() {
    let app = app_with_quota(4).await;
    let token = app.admin_token();
    let event = |n: i64| json!({"type": "transfer.failed", "payload": {"amount": n}});
    fill(&app, &token, 1).await;
    // 1 open ping + 3 events in the outbox = 4
    let batch = app.send_batch(&token, &[event(1), event(2)]).await;
    assert_eq!(batch.status(), StatusCode::ACCEPTED);
    let single = app.send_event(&token, &event(3)).await;
    assert_eq!(single.status(), StatusCode::ACCEPTED);

    assert_quota_exceeded(app.send_event(&token, &event(4)).await, 4).await;
    assert_quota_exceeded(app.send_batch(&token, &[event(5)]).await, 4).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.env.pool)
        .await
        .expect("count");
    assert_eq!(stored, 3, "refused events are not stored");

    // a batch that would not fit whole is refused whole, in a project with room for one
    let roomy = app.env.other_project("roomy").await;
    let theirs = app.admin_token_for(roomy);
    fill(&app, &theirs, 3).await;
    let too_big = app.send_batch(&theirs, &[event(6), event(7)]).await;
    assert_quota_exceeded(too_big, 4).await;
    assert_eq!(
        app.send_event(&theirs, &event(8)).await.status(),
        StatusCode::ACCEPTED
    );
}
