//! `queues:read` held by a project's admin: the queue views show that project's part of each
//! queue (its counts per state, its open jobs) and never another project's; the views that span
//! every project (throughput, workers, outbox, busiest projects) and pausing stay with platform
//! operators.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_with_status, later, send};

/// A queue's entry in `GET /api/v1/queues` as `token` sees it.
async fn counts(app: &TestApp, token: &str, queue: &str) -> Value {
    let body = json_with_status(app.queues(token).await, StatusCode::OK).await;
    body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|q| q["queue"] == queue)
        .cloned()
        .unwrap_or_else(|| panic!("{queue} listed: {body:#}"))
}

/// The ids of a `GET /api/v1/queues/ping/jobs?state=` page, and its total.
async fn listed(app: &TestApp, token: &str, query: &str) -> (BTreeSet<String>, u64) {
    let resp = app.get_queue_jobs(token, "ping", query).await;
    let body = json_with_status(resp, StatusCode::OK).await;
    let ids = body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|j| j["id"].as_str().expect("an id").to_owned())
        .collect();
    let total = body["meta"]["pagination"]["total"]
        .as_u64()
        .expect("a total");
    (ids, total)
}

#[tokio::test]
async fn a_project_admin_sees_its_own_part_of_each_queue_and_never_another_projects() {
    let app = TestApp::spawn().await;
    let (_, other, _) = app.new_project("Other tenant").await;
    let mine = app.token(&["queues:read", "jobs:write", "jobs:read"]);
    let theirs = app.admin_token_for(other);
    // the default admin role holds queues:read
    let roles = json_with_status(
        send(app.authed(Method::GET, "/api/v1/roles", &app.admin_token())).await,
        StatusCode::OK,
    )
    .await;
    let admin = roles["data"]
        .as_array()
        .expect("roles")
        .iter()
        .find(|r| r["name"] == "admin")
        .expect("an admin role")
        .clone();
    assert!(
        admin["permissions"]
            .as_array()
            .expect("permissions")
            .contains(&json!("queues:read")),
        "{admin:#}"
    );

    let my_now: Vec<String> = [
        app.enqueue_ping_as(&json!({}), &mine).await,
        app.enqueue_ping_as(&json!({}), &mine).await,
    ]
    .into();
    let my_later = app.enqueue_ping_as(&json!({"runAt": later()}), &mine).await;
    let their_now = [
        app.enqueue_ping_as(&json!({}), &theirs).await,
        app.enqueue_ping_as(&json!({}), &theirs).await,
        app.enqueue_ping_as(&json!({}), &theirs).await,
    ];
    let their_later = app
        .enqueue_ping_as(&json!({"runAt": later()}), &theirs)
        .await;
    // relayed from the outbox into Redis
    shared::testing::eventually(
        std::time::Duration::from_secs(10),
        "the jobs are in Redis",
        || async {
            let c = counts(&app, &app.platform_token_with(&["queues:read"]), "ping").await;
            (c["waiting"] == 5 && c["delayed"] == 2).then_some(())
        },
    )
    .await;

    // each project counts its own jobs only; the platform sees them all
    let c = counts(&app, &mine, "ping").await;
    assert_eq!(
        (c["waiting"].as_u64(), c["delayed"].as_u64()),
        (Some(2), Some(1)),
        "{c:#}"
    );
    let c = counts(&app, &theirs, "ping").await;
    assert_eq!(
        (c["waiting"].as_u64(), c["delayed"].as_u64()),
        (Some(3), Some(1)),
        "{c:#}"
    );

    // its open jobs, per state, with their total; nothing of the other project's
    let (ids, total) = listed(&app, &mine, "?state=waiting&perPage=100").await;
    assert_eq!(ids, my_now.iter().cloned().collect());
    assert_eq!(total, 2);
    let (ids, total) = listed(&app, &mine, "?state=delayed").await;
    assert_eq!(ids, BTreeSet::from([my_later.clone()]));
    assert_eq!(total, 1);
    let (ids, _) = listed(&app, &theirs, "?state=waiting&perPage=100").await;
    assert_eq!(ids, their_now.iter().cloned().collect());
    // pages: one job each, newest first, none twice
    let (first, _) = listed(&app, &mine, "?state=waiting&perPage=1&page=1").await;
    let (second, _) = listed(&app, &mine, "?state=waiting&perPage=1&page=2").await;
    let (third, _) = listed(&app, &mine, "?state=waiting&perPage=1&page=3").await;
    assert_eq!(first, BTreeSet::from([my_now[1].clone()]), "newest first");
    assert_eq!(second, BTreeSet::from([my_now[0].clone()]));
    assert!(third.is_empty());

    // once they ran (the delayed ones cancelled), the project's finished counts follow; the
    // other's are its own
    for (job, token) in [(&my_later, &mine), (&their_later, &theirs)] {
        let path = format!("/api/v1/jobs/{job}/cancel");
        let resp = send(app.authed(Method::POST, &path, token)).await;
        assert_eq!(resp.status(), StatusCode::OK, "cancel {job}");
    }
    let mut app = app;
    // a worker that keeps running after the drain: its archiver copies the finished jobs
    // (every `JOB_ARCHIVE_MS`) for the views below
    app.start_worker().await;
    app.drain_jobs().await;
    let c = counts(&app, &mine, "ping").await;
    assert_eq!(
        (
            c["waiting"].as_u64(),
            c["delayed"].as_u64(),
            c["completed"].as_u64(),
            c["cancelled"].as_u64()
        ),
        (Some(0), Some(0), Some(2), Some(1)),
        "{c:#}"
    );
    let c = counts(&app, &theirs, "ping").await;
    assert_eq!(
        (c["completed"].as_u64(), c["cancelled"].as_u64()),
        (Some(3), Some(1)),
        "{c:#}"
    );
    let (ids, total) = listed(&app, &mine, "?state=waiting").await;
    assert!(ids.is_empty() && total == 0, "nothing open: {ids:?}");
    // its finished jobs come from the archive (within about a second of finishing)
    let done = shared::testing::eventually(
        std::time::Duration::from_secs(10),
        "the archive holds them",
        || async {
            let (ids, total) = listed(&app, &mine, "?state=completed&perPage=100").await;
            (total == 2).then_some(ids)
        },
    )
    .await;
    assert_eq!(done, my_now.iter().cloned().collect());
    let (ids, total) = listed(&app, &mine, "?state=cancelled").await;
    assert_eq!((ids, total), (BTreeSet::from([my_later.clone()]), 1));
    let (ids, _) = listed(&app, &theirs, "?state=completed&perPage=100").await;
    assert_eq!(ids, their_now.iter().cloned().collect());

    // the fleet-wide views and pausing are a platform operator's
    for path in [
        "/api/v1/workers",
        "/api/v1/outbox",
        "/api/v1/queues/projects",
        "/api/v1/queues/ping/series",
    ] {
        let resp = send(app.authed(Method::GET, path, &mine)).await;
        let error = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            error.to_string().contains("platform operators"),
            "{path}: {error:#}"
        );
        let resp = send(app.authed(
            Method::GET,
            path,
            &app.platform_token_with(&["queues:read"]),
        ))
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "{path} for the platform");
    }
    let resp = send(app.authed(
        Method::POST,
        "/api/v1/queues/ping/pause",
        &app.admin_token(),
    ))
    .await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    app.cleanup().await;
}
