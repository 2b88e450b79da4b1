//! `GET /api/v1/queues`: counts per queue and state, behind `queues:read`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_with_status};

/// The `ping` entry of the queue list.
async fn ping_counts(app: &TestApp) -> Value {
    let body = json_with_status(
        app.queues(&app.token(&["queues:read"])).await,
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
    app.cleanup().await;
}

#[tokio::test]
async fn queue_counts_follow_jobs_as_they_are_enqueued_and_cancelled() {
    let app = TestApp::spawn().await;
    let empty = json!({
        "queue": "ping", "waiting": 0, "delayed": 0, "active": 0, "retrying": 0,
        "completed": 0, "dead": 0, "cancelled": 0,
    });
    assert_eq!(ping_counts(&app).await, empty);

    let first = app.enqueue_ping(&json!({})).await;
    app.enqueue_ping(&json!({})).await;
    app.enqueue_ping(&json!({"runAt": "2999-01-01T00:00:00Z"}))
        .await;

    let counts = ping_counts(&app).await;
    assert_eq!(
        (counts["waiting"].as_u64(), counts["delayed"].as_u64()),
        (Some(2), Some(1))
    );

    let resp = app.cancel_job(&first, &app.admin_token()).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let counts = ping_counts(&app).await;
    assert_eq!(counts["waiting"], 1);
    assert_eq!(counts["cancelled"], 1);
    assert_eq!(counts["delayed"], 1);
    app.cleanup().await;
}

#[tokio::test]
async fn queue_counts_show_completed_and_dead_jobs_once_a_worker_ran_them() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let ok = app.enqueue_ping(&json!({})).await;
    let bad = app.enqueue_ping(&json!({"failPermanently": true})).await;

    app.wait_for_state(&ok, "completed").await;
    app.wait_for_state(&bad, "dead").await;

    let counts = ping_counts(&app).await;
    assert_eq!(counts["completed"], 1, "{counts}");
    assert_eq!(counts["dead"], 1, "{counts}");
    assert_eq!(counts["waiting"], 0, "{counts}");
    assert_eq!(counts["active"], 0, "{counts}");
    app.cleanup().await;
}

#[tokio::test]
async fn every_known_queue_is_listed() {
    let app = TestApp::spawn().await;

    let body = json_with_status(app.queues(&app.admin_token()).await, StatusCode::OK).await;

    let listed: Vec<&str> = body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(listed, shared::jobs::QUEUES);
    app.cleanup().await;
}
