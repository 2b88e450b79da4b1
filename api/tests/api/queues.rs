//! `GET /api/v1/queues` (counts per queue and state) and `GET /api/v1/queues/{queue}/jobs` (the
//! jobs of one queue in one state), behind `queues:read`; pausing and resuming a queue, behind
//! `queues:write`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::queue::JobState;

use crate::helpers::{TestApp, assert_error, json_with_status, later, time};

/// The `ping` entry of the queue list.
async fn ping_counts(app: &TestApp) -> Value {
    let body = json_with_status(
        app.queues(&app.platform_token_with(&["queues:read"])).await,
        StatusCode::OK,
    )
    .await;
    let queues = body["data"].as_array().expect("data is a list");
    queues
        .iter()
        .find(|q| q["queue"] == "ping")
        .cloned()
        .unwrap_or_else(|| panic!("the list has ping: {body:#}"))
}

#[tokio::test]
async fn listing_queues_needs_the_queues_read_permission() {
    let app = TestApp::spawn().await;

    let resp = app.queues(&app.token(&["jobs:read", "jobs:write"])).await;

    let error = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("queues:read")
    );
}

#[tokio::test]
async fn queue_counts_follow_jobs_as_they_are_enqueued_and_cancelled() {
    let app = TestApp::spawn().await;
    let empty = json!({
        "queue": "ping", "waiting": 0, "delayed": 0, "active": 0, "retrying": 0,
        "completed": 0, "dead": 0, "cancelled": 0, "paused": false, "partitions": 1,
        "completedTotal": 0, "deadTotal": 0, "latencySeconds": 0.0,
        "workers": {"processes": 0, "concurrency": 0, "inFlight": 0},
    });
    assert_eq!(ping_counts(&app).await, empty);

    let first = app.enqueue_ping(&json!({})).await;
    app.enqueue_ping(&json!({})).await;
    app.enqueue_ping(&json!({"runAt": later()})).await;

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let counts = ping_counts(&app).await;
    assert_eq!(
        (counts["waiting"].as_u64(), counts["delayed"].as_u64()),
        (Some(2), Some(1))
    );
    let latency = counts["latencySeconds"].as_f64().expect("a latency");
    assert!(
        (0.3..60.0).contains(&latency),
        "the oldest waiting job's age: {counts}"
    );

    let resp = app.cancel_job(&first, &app.admin_token()).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let counts = ping_counts(&app).await;
    assert_eq!(counts["waiting"], 1);
    assert_eq!(counts["cancelled"], 1);
    assert_eq!(counts["delayed"], 1);
}

#[tokio::test]
async fn queue_counts_show_completed_and_dead_jobs_once_a_worker_ran_them() {
    let mut app = TestApp::spawn().await;
    let ok = app.enqueue_ping(&json!({})).await;
    let bad = app.enqueue_ping(&json!({"failPermanently": true})).await;

    let drained = app.drain_jobs().await;
    assert_eq!(drained.job(&ok).state, JobState::Completed);
    assert_eq!(drained.job(&bad).state, JobState::Dead);

    let counts = ping_counts(&app).await;
    assert_eq!(counts["completed"], 1, "{counts}");
    assert_eq!(counts["dead"], 1, "{counts}");
    assert_eq!(counts["completedTotal"], 1, "{counts}");
    assert_eq!(counts["deadTotal"], 1, "{counts}");
    assert_eq!(counts["waiting"], 0, "{counts}");
    assert_eq!(counts["active"], 0, "{counts}");
}

#[tokio::test]
async fn every_known_queue_is_listed() {
    let app = TestApp::spawn().await;

    let body = json_with_status(
        app.queues(&app.platform_token_with(&["queues:read"])).await,
        StatusCode::OK,
    )
    .await;

    let listed: Vec<&str> = body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(listed, shared::jobs::QUEUES);
}

/// The ids of a page of `GET /api/v1/queues/{queue}/jobs`.
fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|j| j["id"].as_str().expect("an id"))
        .collect()
}

#[tokio::test]
async fn a_queues_jobs_are_listed_by_state_with_their_records_across_projects() {
    let mut app = TestApp::spawn().await;
    let other = app.env.other_project("other").await;
    let ok = app.enqueue_ping(&json!({})).await;
    let bad = app.enqueue_ping(&json!({"failPermanently": true})).await;
    let theirs = app.ping(&json!({}), &app.admin_token_for(other)).await;
    let theirs = json_with_status(theirs, StatusCode::ACCEPTED).await["data"]["jobId"]
        .as_str()
        .expect("a job id")
        .to_owned();
    let drained = app.drain_jobs().await;
    assert_eq!(drained.kinds(), ["ping", "ping", "ping"]);
    // with no worker running any more, these stay where they are
    let waiting = app.enqueue_ping(&json!({})).await;
    let delayed = app.enqueue_ping(&json!({"runAt": later()})).await;

    let completed = app.queue_jobs("ping", "?state=completed").await;
    let dead = app.queue_jobs("ping", "?state=dead").await;

    // an operator's view spans projects; finished jobs come newest first
    let mut listed = ids(&completed);
    listed.sort_unstable();
    let mut expected = [ok.as_str(), theirs.as_str()];
    expected.sort_unstable();
    assert_eq!(listed, expected, "{completed:#}");
    assert_eq!(completed["meta"]["pagination"]["total"], 2);
    let finished: Vec<_> = completed["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|j| time(&j["finishedAt"]))
        .collect();
    assert!(finished[0] >= finished[1], "newest first: {completed:#}");
    let projects: Vec<&Value> = completed["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|j| &j["projectId"])
        .collect();
    assert!(projects.contains(&&json!(other)), "{completed:#}");
    for job in completed["data"].as_array().expect("a list") {
        assert_eq!(job["kind"], "ping");
        assert_eq!(job["queue"], "ping");
        assert_eq!(job["state"], "completed");
        assert_eq!(job["attempts"], 1);
        assert_eq!(job["result"]["attempt"], 1, "{job:#}");
    }
    assert_eq!(ids(&dead), [bad.as_str()]);
    assert_eq!(dead["data"][0]["state"], "dead");
    assert!(
        dead["data"][0]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("permanently")),
        "{dead:#}"
    );
    assert_eq!(
        ids(&app.queue_jobs("ping", "?state=waiting").await),
        [waiting.as_str()]
    );
    let delayed_page = app.queue_jobs("ping", "?state=delayed").await;
    assert_eq!(ids(&delayed_page), [delayed.as_str()]);
    assert_eq!(
        time(&delayed_page["data"][0]["runAt"]),
        time(&serde_json::Value::String(later()))
    );
}

#[tokio::test]
async fn a_queues_jobs_are_paginated() {
    let app = TestApp::spawn().await;
    let mut enqueued = Vec::new();
    for _ in 0..3 {
        enqueued.push(app.enqueue_ping(&json!({})).await);
    }

    let first = app.queue_jobs("ping", "?state=waiting&perPage=2").await;
    let second = app
        .queue_jobs("ping", "?state=waiting&perPage=2&page=2")
        .await;

    // waiting jobs come in run order: first in, first listed
    assert_eq!(ids(&first), [enqueued[0].as_str(), enqueued[1].as_str()]);
    assert_eq!(ids(&second), [enqueued[2].as_str()]);
    let (a, b) = (&first["meta"]["pagination"], &second["meta"]["pagination"]);
    assert_eq!(
        (a["total"].as_u64(), b["total"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        (&a["hasNext"], &a["hasPrev"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(
        (&b["hasNext"], &b["hasPrev"]),
        (&json!(false), &json!(true))
    );
}

#[tokio::test]
async fn listing_a_queues_jobs_refuses_unknown_queues_states_and_pages() {
    let app = TestApp::spawn().await;
    let operator = app.platform_token_with(&["queues:read"]);

    let unknown_queue = app
        .get_queue_jobs(&operator, "no_such_queue", "?state=waiting")
        .await;
    assert_error(unknown_queue, StatusCode::NOT_FOUND, "not_found").await;
    for (query, status, code) in [
        (
            "?state=pending",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        ("?state=sleeping", StatusCode::BAD_REQUEST, "bad_request"),
        ("", StatusCode::BAD_REQUEST, "bad_request"),
        (
            "?state=waiting&perPage=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "?state=waiting&perPage=101",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "?state=waiting&page=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ] {
        let resp = app.get_queue_jobs(&operator, "ping", query).await;

        assert_eq!(resp.status(), status, "{query}");
        assert_error(resp, status, code).await;
    }
    // a tenant's job permissions do not open the operators' view
    let tenant = app.token(&["jobs:read", "jobs:write"]);
    let resp = app.get_queue_jobs(&tenant, "ping", "?state=waiting").await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
}

async fn pause(app: &TestApp, token: &str, queue: &str, verb: &str) -> reqwest::Response {
    crate::helpers::send(app.authed(
        reqwest::Method::POST,
        &format!("/api/v1/queues/{queue}/{verb}"),
        token,
    ))
    .await
}

#[tokio::test]
async fn a_paused_queue_runs_nothing_until_resumed_even_after_redis_lost_the_flag() {
    let mut app = TestApp::spawn().await;
    let ops = app.platform_token_with(&["queues:read", "queues:write"]);
    let body = json_with_status(pause(&app, &ops, "ping", "pause").await, StatusCode::OK).await;
    assert_eq!(body["data"]["paused"], true);
    assert!(body["data"]["pausedAt"].is_string(), "{body}");
    assert_eq!(ping_counts(&app).await["paused"], true);

    app.start_worker().await;
    let id = app.enqueue_ping(&json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        app.job(&id).await["state"],
        "waiting",
        "a paused queue leases nothing"
    );

    // Redis loses the flag (it keeps nothing on disk): the workers copy it back from Postgres
    // within their period (2 s; a job may run in that gap, as one would after a Redis restart)
    let key = format!("{}paused", app.env.queues.base("ping"));
    let mut redis = app.env.queues.connection();
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("del");
    shared::testing::eventually(
        std::time::Duration::from_secs(10),
        "the flag is back",
        || async {
            app.env
                .queues
                .is_paused("ping")
                .await
                .expect("redis")
                .then_some(())
        },
    )
    .await;
    let later = app.enqueue_ping(&json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.job(&later).await["state"], "waiting", "paused again");

    let body = json_with_status(pause(&app, &ops, "ping", "resume").await, StatusCode::OK).await;
    assert_eq!(body["data"]["paused"], false);
    app.wait_for_state(&id, "completed").await;
    app.wait_for_state(&later, "completed").await;
    assert_eq!(ping_counts(&app).await["paused"], false);
    app.cleanup().await;
}

#[tokio::test]
async fn pausing_needs_queues_write_and_a_known_queue() {
    let app = TestApp::spawn().await;
    let reader = app.platform_token_with(&["queues:read"]);
    let err = assert_error(
        pause(&app, &reader, "ping", "pause").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("queues:write"),
        "{err}"
    );
    // a project's token never holds it, even with every permission
    assert_error(
        pause(&app, &app.token(&["*"]), "ping", "pause").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let ops = app.platform_token_with(&["queues:write"]);
    assert_error(
        pause(&app, &ops, "nope", "pause").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        pause(&app, &ops, "nope", "resume").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // resuming a queue that is not paused changes nothing
    let body = json_with_status(pause(&app, &ops, "ping", "resume").await, StatusCode::OK).await;
    assert_eq!(body["data"]["paused"], false);
}

async fn ops_get(app: &TestApp, path: &str) -> Value {
    let ops = app.platform_token_with(&["queues:read"]);
    json_with_status(
        crate::helpers::send(app.authed(reqwest::Method::GET, path, &ops)).await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn the_workers_view_shows_each_process_its_queues_and_the_jobs_it_holds() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let id = app.enqueue_ping(&json!({"sleepMs": 4000})).await;
    app.wait_for_state(&id, "active").await;
    // the job shows as held after the worker's next heartbeat (a third of the 3 s lease)
    let me = shared::testing::eventually(
        std::time::Duration::from_secs(10),
        "the worker holds the job",
        || async {
            let body = ops_get(&app, "/api/v1/workers").await;
            let me = body["data"].as_array()?.first()?.clone();
            let ping = me["queues"]
                .as_array()?
                .iter()
                .find(|q| q["queue"] == "ping")?
                .clone();
            (ping["inFlight"] == 1).then_some(me)
        },
    )
    .await;
    assert_eq!(me["pid"], std::process::id(), "the in-process worker: {me}");
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(me["lost"], false);
    assert!(
        me["startedAt"].is_string() && me["lastHeartbeat"].is_string(),
        "{me}"
    );
    let ping = me["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue"] == "ping")
        .cloned()
        .expect("ping");
    assert_eq!(
        ping["concurrency"],
        shared::jobs::Kind::named("ping")
            .expect("ping")
            .policy
            .concurrency
    );
    // the queue view sums the fleet per queue: this one process, its concurrency, the job
    let queues = ops_get(&app, "/api/v1/queues").await;
    let row = |name: &str| {
        queues["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|q| q["queue"] == name)
            .cloned()
            .expect("listed")
    };
    assert_eq!(
        row("ping")["workers"],
        json!({"processes": 1, "concurrency": ping["concurrency"], "inFlight": 1}),
    );
    assert_eq!(row("bulk_import")["workers"]["inFlight"], 0);
    // a project's token never sees the fleet, nor its share per queue
    let resp = crate::helpers::send(app.authed(
        reqwest::Method::GET,
        "/api/v1/workers",
        &app.token(&["*"]),
    ))
    .await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    let own = json_with_status(
        crate::helpers::send(app.authed(
            reqwest::Method::GET,
            "/api/v1/queues",
            &app.admin_token(),
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(
        own["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|q| q.get("workers").is_none()),
        "{own}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_workers_view_shows_a_silent_process_as_lost() {
    let app = TestApp::spawn().await;
    // a process last heard from a minute ago (the lease is 3 s in tests)
    let mut redis = app.env.queues.connection();
    let key = format!("{}:workers", app.env.queues.prefix());
    let at = chrono::Utc::now().timestamp_millis() - 60_000;
    let _: i64 = redis::cmd("ZADD")
        .arg(&key)
        .arg(at)
        .arg("ping@gone-1-0000#0")
        .query_async(&mut redis)
        .await
        .expect("zadd");
    let body = ops_get(&app, "/api/v1/workers").await;
    let gone = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|w| w["name"] == "gone-1-0000")
        .cloned()
        .expect("listed");
    assert_eq!(gone["lost"], true, "{gone}");
    // a lost process counts for no queue
    let queues = ops_get(&app, "/api/v1/queues").await;
    let ping = queues["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|q| q["queue"] == "ping")
        .cloned()
        .expect("ping");
    assert_eq!(ping["workers"]["processes"], 0, "{ping}");
}

#[tokio::test]
async fn the_outbox_view_counts_the_rows_waiting_and_their_age() {
    let app = TestApp::spawn().await;
    let empty = ops_get(&app, "/api/v1/outbox").await;
    assert_eq!(empty["data"]["waiting"], 0);
    assert_eq!(empty["data"]["lagSeconds"], 0.0);
    // no worker relays them: two invitations' jobs wait in the outbox
    let (_, token) = app.admin("owner@example.com").await;
    app.invite_member(&token, "a@example.com").await;
    app.invite_member(&token, "b@example.com").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let body = ops_get(&app, "/api/v1/outbox").await;
    assert_eq!(body["data"]["waiting"], 2, "{body}");
    assert_eq!(
        body["data"]["byQueue"],
        json!([{"queue": "send_invitation", "waiting": 2}])
    );
    assert!(
        body["data"]["lagSeconds"].as_f64().unwrap_or(0.0) >= 1.0,
        "{body}"
    );
    assert!(body["data"]["oldestAt"].is_string());
}

#[tokio::test]
async fn a_queues_series_counts_jobs_enqueued_completed_retried_and_dead_per_minute() {
    let mut app = TestApp::spawn().await;
    app.enqueue_ping(&json!({})).await;
    app.enqueue_ping(&json!({"failAttempts": 1})).await;
    app.enqueue_ping(&json!({"failPermanently": true})).await;
    app.drain_jobs().await;

    let token = app.platform_token_with(&["queues:read"]);
    let series = json_with_status(
        app.authed(Method::GET, "/api/v1/queues/ping/series?minutes=5", &token)
            .send()
            .await
            .expect("answers"),
        StatusCode::OK,
    )
    .await;
    let minutes = series["data"].as_array().expect("a list");
    assert_eq!(minutes.len(), 5, "{series:#}");
    let sum = |field: &str| {
        minutes
            .iter()
            .map(|m| m[field].as_u64().expect("a count"))
            .sum::<u64>()
    };
    assert_eq!(
        (
            sum("enqueued"),
            sum("completed"),
            sum("retried"),
            sum("dead")
        ),
        (3, 2, 1, 1),
        "{series:#}"
    );
    let starts: Vec<&str> = minutes
        .iter()
        .map(|m| m["minute"].as_str().expect("a time"))
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {starts:?}"
    );
    assert!(
        starts.iter().all(|s| s.ends_with(":00Z")),
        "whole minutes: {starts:?}"
    );

    for (query, status) in [
        ("ping/series?minutes=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("ping/series?minutes=121", StatusCode::UNPROCESSABLE_ENTITY),
        ("nope/series", StatusCode::NOT_FOUND),
    ] {
        let resp = app
            .authed(Method::GET, &format!("/api/v1/queues/{query}"), &token)
            .send()
            .await
            .expect("answers");
        assert_eq!(resp.status(), status, "{query}");
    }
    let resp = app
        .authed(
            Method::GET,
            "/api/v1/queues/ping/series",
            &app.admin_token(),
        )
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "a project's token");
}
