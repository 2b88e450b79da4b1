//! Jobs: enqueue a ping, follow it to its end, validation, idempotency, tenant isolation,
//! retries with backoff, retry and cancel.

use shared::jobs::Job as _;
use std::time::Duration;

use chrono::Utc;
use reqwest::{StatusCode, header};
use serde_json::json;
use shared::testing::eventually;

use crate::helpers::{
    TestApp, assert_error, json_with_status, later, random_id, request_id_of, time,
};

#[tokio::test]
async fn ping_returns_202_with_a_location_and_the_job_id() {
    let app = TestApp::spawn().await;

    let resp = app.ping(&json!({}), &app.admin_token()).await;

    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = json_with_status(resp, StatusCode::ACCEPTED).await;
    let id = body["data"]["jobId"].as_str().expect("data.jobId");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a UUID job id: {id}");
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/jobs/{id}").as_str())
    );
    assert_eq!(body["data"]["statusUrl"], format!("/api/v1/jobs/{id}"));
    assert_eq!(body["data"]["queue"], "ping");
    assert_eq!(body["data"]["created"], true);
    // with no worker running it waits, in the caller's project
    let job = app.job(id).await;
    assert_eq!(job["state"], "waiting");
    assert_eq!(job["kind"], "ping");
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["projectId"], app.project_id().to_string());
}

#[tokio::test]
async fn a_pinged_job_completes_on_its_first_attempt_carrying_the_request_id() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;

    let resp = app.ping(&json!({}), &app.admin_token()).await;
    let request_id = request_id_of(&resp);
    let body = json_with_status(resp, StatusCode::ACCEPTED).await;
    let id = body["data"]["jobId"].as_str().expect("data.jobId");

    let job = app.wait_for_state(id, "completed").await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["requestId"], request_id.as_str());
    assert_eq!(job["errors"], json!([]));
    assert_eq!(
        job["result"]["attempt"], 1,
        "the pong names the attempt: {job:#}"
    );
    assert!(job["finishedAt"].is_string(), "a finish time: {job:#}");
}

#[tokio::test]
async fn a_caller_supplied_request_id_follows_the_job() {
    let app = TestApp::spawn().await;

    let resp = crate::helpers::send(
        app.authed(
            reqwest::Method::POST,
            "/api/v1/jobs/ping",
            &app.admin_token(),
        )
        .header("x-request-id", "dashboard-req-7")
        .json(&json!({})),
    )
    .await;

    let body = json_with_status(resp, StatusCode::ACCEPTED).await;
    let job = app
        .job(body["data"]["jobId"].as_str().expect("jobId"))
        .await;
    assert_eq!(job["requestId"], "dashboard-req-7");
}

#[tokio::test]
async fn invalid_ping_options_return_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    let cases = [
        (json!({"sleepMs": 60001}), "sleepMs"),
        (json!({"failAttempts": 101}), "failAttempts"),
        (json!({"priority": 1001}), "priority"),
        (json!({"priority": -1001}), "priority"),
        (json!({"maxAttempts": 0}), "maxAttempts"),
        (json!({"maxAttempts": 101}), "maxAttempts"),
        (json!({"idempotencyKey": ""}), "idempotencyKey"),
        (json!({"idempotencyKey": "k".repeat(201)}), "idempotencyKey"),
        (json!({"idempotencyKey": "line\nbreak"}), "idempotencyKey"),
    ];
    for (body, field) in cases {
        let resp = app.ping(&body, &token).await;

        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            error["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|e| e["field"] == field)),
            "{body}: details names {field}: {error}"
        );
    }
    // the bounds themselves are accepted
    for body in [
        json!({"sleepMs": 60000, "runAt": later()}),
        json!({"priority": 1000, "maxAttempts": 100, "failAttempts": 100}),
        json!({"priority": -1000, "maxAttempts": 1, "idempotencyKey": "k".repeat(200)}),
    ] {
        let resp = app.ping(&body, &token).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{body}");
    }
    // nothing invalid reached the queue
    let counts = app.env.queues.counts("ping").await.expect("counts");
    assert_eq!(counts.waiting + counts.delayed, 3);
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job_within_a_project_only() {
    let app = TestApp::spawn().await;
    let other = app.env.other_project("other").await;
    let body = json!({"idempotencyKey": "nightly-2024-01-01"});

    let first = json_with_status(
        app.ping(&body, &app.admin_token()).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let again = json_with_status(
        app.ping(&body, &app.admin_token()).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let theirs = json_with_status(
        app.ping(&body, &app.admin_token_for(other)).await,
        StatusCode::ACCEPTED,
    )
    .await;

    assert_eq!(first["data"]["created"], true);
    assert_eq!(again["data"]["created"], false);
    assert_eq!(again["data"]["jobId"], first["data"]["jobId"]);
    assert_eq!(theirs["data"]["created"], true);
    assert_ne!(theirs["data"]["jobId"], first["data"]["jobId"]);
    let counts = app.env.queues.counts("ping").await.expect("counts");
    assert_eq!(counts.waiting, 2, "one job per project");
}

#[tokio::test]
async fn get_job_returns_400_for_an_id_that_is_not_a_uuid() {
    let app = TestApp::spawn().await;

    let resp = app.get_job("not-a-uuid", &app.admin_token()).await;

    assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn retry_and_cancel_return_400_for_an_id_that_is_not_a_uuid() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    let retry = app.retry_job("42", &token).await;
    let cancel = app.cancel_job("42", &token).await;

    assert_error(retry, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_error(cancel, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn get_retry_and_cancel_return_404_for_an_unknown_id() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let id = random_id();

    let get = app.get_job(&id, &token).await;
    let retry = app.retry_job(&id, &token).await;
    let cancel = app.cancel_job(&id, &token).await;

    assert_error(get, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(retry, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(cancel, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn get_retry_and_cancel_return_404_for_a_job_of_another_project() {
    let app = TestApp::spawn().await;
    let other = app.env.other_project("other").await;
    let theirs = app.admin_token_for(other);
    let id = app.enqueue_ping(&json!({"runAt": later()})).await;

    let get = app.get_job(&id, &theirs).await;
    let retry = app.retry_job(&id, &theirs).await;
    let cancel = app.cancel_job(&id, &theirs).await;

    assert_error(get, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(retry, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(cancel, StatusCode::NOT_FOUND, "not_found").await;
    // and the other project's attempt changed nothing
    assert_eq!(app.job(&id).await["state"], "delayed");
}

#[tokio::test]
async fn retries_follow_the_backoff_and_end_dead_with_their_errors_visible() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;

    let id = app
        .enqueue_ping(&json!({"failAttempts": 3, "maxAttempts": 3}))
        .await;

    let job = app.wait_for_state(&id, "dead").await;
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["maxAttempts"], 3);
    let errors = job["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 3, "one error per attempt: {job:#}");
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], i + 1, "{job:#}");
        assert!(
            e["error"]
                .as_str()
                .is_some_and(|m| m.contains("ping asked to fail")),
            "the attempt's error: {e}"
        );
    }
    assert_eq!(job["lastError"], errors[2]["error"]);
    // ping's policy: the ceiling after attempt n is 500 ms · 2^(n-1), full jitter below it; the
    // gap between two failures is that delay plus promotion, fetch and the attempt itself. A
    // single draw may be near zero, so the lower bound (no retry before its drawn delay, and
    // delays spread over the whole range) is proven where the draws are visible:
    // worker/tests/worker/queue.rs, `a_failed_attempt_is_retried_after_its_drawn_backoff_and_not_
    // before`, and the backend's `backoff_is_spread_over_the_whole_range_from_zero_to_the_capped_
    // ceiling`. Here: the order, and the ceiling as an operator sees it.
    let slack = Duration::from_millis(1500);
    let base = Duration::from_millis(500);
    for n in 1..errors.len() {
        let (prev, next) = (time(&errors[n - 1]["at"]), time(&errors[n]["at"]));
        assert!(next > prev, "errors are in time order: {job:#}");
        let gap = (next - prev).to_std().expect("a positive gap");
        let ceiling = base * 2u32.pow(n as u32 - 1);
        assert!(
            gap <= ceiling + slack,
            "retry {n} came {gap:?} after the failure, beyond its {ceiling:?} backoff ceiling"
        );
    }
}

#[tokio::test]
async fn a_permanent_failure_goes_dead_after_one_attempt() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;

    let id = app
        .enqueue_ping(&json!({"failPermanently": true, "maxAttempts": 5}))
        .await;

    let job = app.wait_for_state(&id, "dead").await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["errors"].as_array().map(Vec::len), Some(1), "{job:#}");
    assert!(
        job["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("permanently")),
        "{job:#}"
    );
}

#[tokio::test]
async fn retrying_a_dead_job_runs_it_again_and_keeps_its_error_history() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let token = app.admin_token();
    // attempt 1 always fails, and numbering restarts after a retry: it dies again
    let id = app
        .enqueue_ping(&json!({"failAttempts": 1, "maxAttempts": 1}))
        .await;
    let dead = app.wait_for_state(&id, "dead").await;
    assert_eq!(dead["errors"].as_array().map(Vec::len), Some(1), "{dead:#}");

    let resp = app.retry_job(&id, &token).await;

    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = json_with_status(resp, StatusCode::ACCEPTED).await;
    assert_eq!(body["data"]["jobId"], id.as_str());
    assert_eq!(location, Some(format!("/api/v1/jobs/{id}")));
    let job = app
        .wait_for_job(&id, "the retried job to die a second time", |j| {
            j["state"] == "dead" && j["errors"].as_array().is_some_and(|e| e.len() == 2)
        })
        .await;
    assert_eq!(
        job["attempts"], 1,
        "attempts restart after a retry: {job:#}"
    );
    let errors = job["errors"].as_array().expect("errors");
    assert_eq!(errors[0]["attempt"], 1);
    assert_eq!(errors[1]["attempt"], 1);
    assert!(time(&errors[1]["at"]) > time(&errors[0]["at"]), "{job:#}");
}

#[tokio::test]
async fn retrying_a_permanently_failed_job_runs_it_once_more() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let token = app.admin_token();
    let id = app.enqueue_ping(&json!({"failPermanently": true})).await;
    app.wait_for_state(&id, "dead").await;
    // it fails permanently every time, so a retry proves it ran again by dying once more
    let resp = app.retry_job(&id, &token).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    let job = app
        .wait_for_job(&id, "a second permanent failure", |j| {
            j["state"] == "dead" && j["errors"].as_array().is_some_and(|e| e.len() == 2)
        })
        .await;

    assert_eq!(job["attempts"], 1);
}

#[tokio::test]
async fn retrying_a_job_that_is_not_dead_returns_409() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let waiting = app.enqueue_ping(&json!({})).await;

    let resp = app.retry_job(&waiting, &token).await;

    let error = assert_error(resp, StatusCode::CONFLICT, "conflict").await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("waiting"),
        "{error}"
    );

    app.start_worker().await;
    app.wait_for_state(&waiting, "completed").await;

    let resp = app.retry_job(&waiting, &token).await;

    let error = assert_error(resp, StatusCode::CONFLICT, "conflict").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("completed"),
        "{error}"
    );
    assert_eq!(
        app.job(&waiting).await["attempts"],
        1,
        "the completed job did not run again"
    );
}

#[tokio::test]
async fn cancelling_a_delayed_job_returns_200_cancelled_and_a_second_cancel_409() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let run_at = Utc::now() + chrono::Duration::hours(1);
    let id = app.enqueue_ping(&json!({"runAt": run_at})).await;
    assert_eq!(app.job(&id).await["state"], "delayed");

    let first = app.cancel_job(&id, &token).await;
    let second = app.cancel_job(&id, &token).await;

    let body = json_with_status(first, StatusCode::OK).await;
    assert_eq!(body["data"]["id"], id.as_str());
    assert_eq!(body["data"]["state"], "cancelled");
    assert!(body["data"]["finishedAt"].is_string(), "{body:#}");
    let error = assert_error(second, StatusCode::CONFLICT, "conflict").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled"),
        "{error}"
    );
    assert_eq!(app.job(&id).await["state"], "cancelled");
    let counts = app.env.queues.counts("ping").await.expect("counts");
    assert_eq!((counts.delayed, counts.cancelled), (0, 1));
}

#[tokio::test]
async fn a_cancelled_job_never_runs() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let cancelled = app.enqueue_ping(&json!({})).await;
    let resp = app.cancel_job(&cancelled, &token).await;
    assert_eq!(resp.status(), StatusCode::OK);

    app.start_worker().await;
    // a later job completing shows the worker has been through the queue
    let later = app.enqueue_ping(&json!({})).await;
    app.wait_for_state(&later, "completed").await;

    let job = app.job(&cancelled).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["attempts"], 0);
}

#[tokio::test]
async fn cancelling_a_running_or_finished_job_returns_409() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let token = app.admin_token();
    let running = app.enqueue_ping(&json!({"sleepMs": 5000})).await;
    let done = app.enqueue_ping(&json!({})).await;
    app.wait_for_state(&running, "active").await;
    app.wait_for_state(&done, "completed").await;

    let running_resp = app.cancel_job(&running, &token).await;
    let done_resp = app.cancel_job(&done, &token).await;

    let error = assert_error(running_resp, StatusCode::CONFLICT, "conflict").await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("active"),
        "{error}"
    );
    assert_error(done_resp, StatusCode::CONFLICT, "conflict").await;
    // the running job goes on to complete
    let job = app.wait_for_state(&running, "completed").await;
    assert_eq!(job["attempts"], 1);
}

#[tokio::test]
async fn a_job_with_a_future_run_at_stays_delayed_while_the_worker_runs_others() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let run_at = Utc::now() + chrono::Duration::hours(1);
    let delayed = app.enqueue_ping(&json!({"runAt": run_at})).await;

    // a job enqueued after it completing shows the worker has looked at the queue
    let now = app.enqueue_ping(&json!({})).await;
    app.wait_for_state(&now, "completed").await;

    let job = app.job(&delayed).await;
    assert_eq!(job["state"], "delayed");
    assert_eq!(job["attempts"], 0);
    assert_eq!(
        time(&job["runAt"]).timestamp_millis(),
        run_at.timestamp_millis()
    );
}

#[tokio::test]
async fn a_job_runs_no_earlier_than_its_run_at() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let run_at = Utc::now() + chrono::Duration::milliseconds(2000);

    let id = app.enqueue_ping(&json!({"runAt": run_at})).await;

    assert_eq!(app.job(&id).await["state"], "delayed");
    let job = app.wait_for_state(&id, "completed").await;
    let started = time(&job["startedAt"]);
    assert!(
        started.timestamp_millis() >= run_at.timestamp_millis(),
        "started at {started}, before its runAt {run_at}"
    );
}

#[tokio::test]
async fn concurrent_pings_with_one_idempotency_key_create_exactly_one_job() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let body = json!({"idempotencyKey": "burst"});

    let answers = futures::future::join_all((0..10).map(|_| app.ping(&body, &token))).await;

    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for resp in answers {
        let body = json_with_status(resp, StatusCode::ACCEPTED).await;
        ids.insert(body["data"]["jobId"].as_str().expect("jobId").to_owned());
        created += usize::from(body["data"]["created"] == true);
    }
    assert_eq!(ids.len(), 1, "one job id for every answer: {ids:?}");
    assert_eq!(created, 1, "exactly one answer says it created the job");
    let counts = app.env.queues.counts("ping").await.expect("counts");
    assert_eq!(counts.waiting, 1);
}

#[tokio::test]
async fn two_concurrent_retries_of_a_dead_job_requeue_it_once() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let token = app.admin_token();
    let id = app.enqueue_ping(&json!({"failPermanently": true})).await;
    app.wait_for_state(&id, "dead").await;
    // with the worker gone the retried job stays waiting, so both retries see the same state
    app.stop_worker().await;

    let (a, b) = tokio::join!(app.retry_job(&id, &token), app.retry_job(&id, &token));

    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::CONFLICT]);
    let job = app.job(&id).await;
    assert_eq!(job["state"], "waiting");
    assert_eq!(job["attempts"], 0);
    let counts = app.env.queues.counts("ping").await.expect("counts");
    assert_eq!((counts.waiting, counts.dead), (1, 0));
}

#[tokio::test]
async fn a_job_still_in_the_outbox_shows_as_pending_to_its_project_only() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let other = app.env.other_project("other").await;
    let mut conn = app.env.pool.acquire().await.expect("a connection");
    let id = shared::jobs::Ping::new(app.project_id())
        .enqueue(&mut conn, Default::default())
        .await
        .expect("written to the outbox");
    drop(conn);
    let id = id.to_string();

    let job = app.job(&id).await;
    let theirs = app.get_job(&id, &app.admin_token_for(other)).await;
    let cancel = app.cancel_job(&id, &token).await;
    let retry = app.retry_job(&id, &token).await;

    assert_eq!(job["state"], "pending");
    assert_eq!(job["attempts"], 0);
    assert_error(theirs, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(cancel, StatusCode::CONFLICT, "conflict").await;
    assert_error(retry, StatusCode::CONFLICT, "conflict").await;
    // the worker's relay hands it to the queue, where it runs
    let drained = app.run_pending_jobs().await;
    assert_eq!(drained.job(&id).kind, "ping");
    let job = app.job(&id).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["attempts"], 1);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_new_job_once_its_ttl_has_passed() {
    let ttl = Duration::from_secs(3);
    let app = TestApp::spawn_with(|s| s.queue.idempotency_ttl = ttl).await;
    let token = app.admin_token();
    let body = json!({"idempotencyKey": "hourly-report"});
    let sent = std::time::Instant::now();
    let first = json_with_status(app.ping(&body, &token).await, StatusCode::ACCEPTED).await;
    let again = json_with_status(app.ping(&body, &token).await, StatusCode::ACCEPTED).await;
    assert_eq!(again["data"]["created"], false, "within the TTL: {again:#}");
    assert_eq!(again["data"]["jobId"], first["data"]["jobId"]);

    let later = eventually(ttl * 5, "the key to expire", || async {
        let resp = app.ping(&body, &token).await;
        let body = json_with_status(resp, StatusCode::ACCEPTED).await;
        (body["data"]["created"] == true).then_some(body)
    })
    .await;

    assert!(
        sent.elapsed() >= ttl,
        "a new job only after the TTL ({:?} after the first)",
        sent.elapsed()
    );
    assert_ne!(later["data"]["jobId"], first["data"]["jobId"]);
    // the first job is untouched; the key now names the new one
    let first_id = first["data"]["jobId"].as_str().expect("a job id");
    assert_eq!(app.job(first_id).await["state"], "waiting");
    let repeat = json_with_status(app.ping(&body, &token).await, StatusCode::ACCEPTED).await;
    assert_eq!(repeat["data"]["created"], false);
    assert_eq!(repeat["data"]["jobId"], later["data"]["jobId"]);
    let counts = app.env.queues.counts("ping").await.expect("counts");
    assert_eq!(counts.waiting, 2, "two jobs: before and after the expiry");
}
