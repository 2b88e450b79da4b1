//! The webhook channel of `deliver_notification`, end to end: a rule's notification POSTed,
//! signed, to the project's matching endpoints on a loopback receiver; a `410` sends the job
//! dead at once; a `503` with `Retry-After` is retried no sooner than it asked.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::{queue::JobState, testing::eventually};
use uuid::Uuid;

use crate::helpers::{
    Receiver, TestApp, endpoint_body, json_with_status, rule_body, send, verifies,
};

async fn webhook_rule(app: &TestApp, token: &str) {
    let member = app.role_id(app.project_id(), "member").await.to_string();
    let mut body = rule_body("hooks", &["alert.*"], None, &[member]);
    body["channels"] = json!(["webhook"]);
    app.rule(token, &body).await;
}

async fn attempts_of(app: &TestApp, token: &str, event: &Value) -> (Uuid, Vec<Value>) {
    let event = Uuid::parse_str(event["eventId"].as_str().expect("as the test set it up"))
        .expect("as the test set it up");
    let notification: Uuid = eventually(Duration::from_secs(20), "the notification", || async {
        sqlx::query_scalar("SELECT notification_id FROM notifications WHERE event_id = $1")
            .bind(event)
            .fetch_optional(&app.env.pool)
            .await
            .ok()?
    })
    .await;
    let path = format!("/api/v1/notifications/{notification}/deliveries");
    let rows = json_with_status(
        send(app.authed(Method::GET, &path, token)).await,
        StatusCode::OK,
    )
    .await["data"]
        .as_array()
        .expect("a list")
        .clone();
    (notification, rows)
}

#[tokio::test]
async fn a_webhook_rule_posts_one_signed_message_to_each_matching_endpoint() {
    let receiver = Receiver::start().await;
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    app.active_user(app.project_id(), "bob@example.com", "member")
        .await;
    let alerts = app
        .endpoint(&token, &endpoint_body(&receiver.url("/ok"), &["alert.*"]))
        .await;
    // another type: not sent
    app.endpoint(&token, &endpoint_body(&receiver.url("/ok"), &["billing.*"]))
        .await;
    webhook_rule(&app, &token).await;

    let sent = app
        .event(
            &token,
            &json!({"type": "alert.disk", "source": "db-1", "payload": {"disk": "/var"}}),
        )
        .await;
    app.run_pending_jobs().await;

    let got = receiver.received();
    assert_eq!(
        got.len(),
        1,
        "one message, to the endpoint whose filter selects the type"
    );
    let secret = alerts["secret"].as_str().unwrap();
    assert!(verifies(secret, &got[0]), "the signature verifies");
    let (notification, rows) = attempts_of(&app, &token, &sent).await;
    assert_eq!(
        got[0].header("webhook-id"),
        format!("msg_{}", notification.simple())
    );
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "notification.rule");
    assert_eq!(body["data"]["notificationId"], notification.to_string());
    assert_eq!(body["data"]["event"]["type"], "alert.disk");
    assert_eq!(body["data"]["event"]["payload"]["disk"], "/var");
    assert_eq!(body["data"]["ruleName"], "hooks");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["targetId"], alerts["id"]);
    assert_eq!(rows[0]["outcome"], "ok");
    assert_eq!(rows[0]["httpStatus"], 200);
}

#[tokio::test]
async fn a_410_goes_dead_at_once_and_retry_after_is_waited_for() {
    let receiver = Receiver::start().await;
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    app.active_user(app.project_id(), "bob@example.com", "member")
        .await;
    let gone = app
        .endpoint(&token, &endpoint_body(&receiver.url("/status/410"), &[]))
        .await;
    webhook_rule(&app, &token).await;

    let sent = app
        .event(&token, &json!({"type": "alert.a", "payload": {}}))
        .await;
    let drained = app.drain_jobs().await;
    let job = drained
        .jobs
        .iter()
        .find(|j| j.queue == "deliver_notification")
        .expect("the delivery job");
    assert_eq!((job.state, job.attempts), (JobState::Dead, 1));
    let (_, rows) = attempts_of(&app, &token, &sent).await;
    assert_eq!(rows[0]["targetId"], gone["id"]);
    assert_eq!(rows[0]["outcome"], "permanent");
    assert_eq!(rows[0]["httpStatus"], 410);

    // the next endpoint asks for 5 s; the channel's first backoff is at most 2 s
    let id = gone["id"].as_str().unwrap();
    let put = send(
        app.authed(
            Method::PUT,
            &format!("/api/v1/webhook-endpoints/{id}"),
            &token,
        )
        .json(&json!({
            "url": receiver.url("/retry-after/503/5"),
            "description": "busy", "eventTypes": [], "enabled": true
        })),
    )
    .await;
    assert_eq!(put.status(), StatusCode::OK, "{:?}", put.text().await);
    app.start_worker().await;
    let sent = app
        .event(&token, &json!({"type": "alert.b", "payload": {}}))
        .await;
    let rows = eventually(Duration::from_secs(20), "a first attempt", || async {
        let (_, rows) = attempts_of(&app, &token, &sent).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["outcome"], "retry");
    assert_eq!(rows[0]["httpStatus"], 503);
    let job_id = Uuid::parse_str(rows[0]["jobId"].as_str().unwrap()).unwrap();
    let job = app
        .env
        .queues
        .job("deliver_notification", job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Retrying);
    let wait = job.run_at.unwrap() - job.finished_at.or(job.started_at).unwrap();
    assert!(
        wait >= chrono::Duration::milliseconds(4500),
        "retried after {wait}, Retry-After asked 5 s"
    );
}
