//! The webhook channel of `deliver_notification`, end to end: a rule's notification POSTed,
//! signed, to the project's matching endpoints on a loopback receiver; a `410` sends the job
//! dead at once; a `503` with `Retry-After` is retried no sooner than it asked.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::{
    db::deliveries::{self, DeliveryKey},
    jobs::Channel,
    queue::JobState,
    testing::eventually,
};
use uuid::Uuid;

use crate::helpers::{
    Receiver, TestApp, endpoint_body, json_with_status, rule_body, send, verifies,
};

async fn webhook_rule(app: &TestApp, token: &str) {
    webhook_rule_in(app, token, app.project_id()).await;
}

async fn webhook_rule_in(app: &TestApp, token: &str, project: Uuid) {
    let member = app.role_id(project, "member").await.to_string();
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

/// The worker reads the notifications (and endpoints) of the deliveries starting together in
/// one statement: many deliveries of two projects at once, each message goes to its own
/// project's endpoint only, once, with its own notification.
#[tokio::test]
async fn deliveries_read_together_each_go_to_their_own_projects_endpoints_once() {
    const N: usize = 40;
    let receiver = Receiver::start().await;
    let mut app = TestApp::spawn().await;
    let (_, other, _) = app.new_project("Other tenant").await;
    let mut notifications = Vec::new();
    let mut keys = Vec::new();
    for (project, path) in [(app.project_id(), "/status/200"), (other, "/status/201")] {
        let token = app.admin_token_for(project);
        app.active_user(
            project,
            &format!("bob{path}@example.com").replace('/', ""),
            "member",
        )
        .await;
        app.endpoint(&token, &endpoint_body(&receiver.url(path), &["alert.*"]))
            .await;
        // selects no event of the test
        app.endpoint(
            &token,
            &endpoint_body(&receiver.url("/status/202"), &["billing.*"]),
        )
        .await;
        webhook_rule_in(&app, &token, project).await;
        let events: Vec<Value> = (0..N)
            .map(|i| json!({"type": "alert.disk", "payload": {"n": i}}))
            .collect();
        let resp = app.send_batch(&token, &events).await;
        json_with_status(resp, StatusCode::ACCEPTED).await;
        notifications.push((project, path));
    }
    // every delivery job waits in its queue, then one worker starts them together
    app.run_pending_jobs().await;

    let got = receiver.received();
    assert!(
        got.iter().all(|r| r.path != "/status/202"),
        "a filter that selects nothing got a message"
    );
    for (project, path) in notifications {
        let mut ids: Vec<String> = sqlx::query_scalar(
            "SELECT notification_id::text FROM notifications WHERE project_id = $1",
        )
        .bind(project)
        .fetch_all(&app.env.pool)
        .await
        .expect("the notifications");
        ids.sort();
        assert_eq!(ids.len(), N);
        let mut sent: Vec<String> = got
            .iter()
            .filter(|r| r.path == path)
            .map(|r| {
                let body: Value = serde_json::from_slice(&r.body).expect("JSON");
                assert_eq!(body["data"]["projectId"], project.to_string(), "{path}");
                let id = body["data"]["notificationId"]
                    .as_str()
                    .expect("an id")
                    .to_owned();
                let simple = Uuid::parse_str(&id).expect("a uuid").simple().to_string();
                assert_eq!(r.header("webhook-id"), format!("msg_{simple}"));
                id
            })
            .collect();
        sent.sort();
        assert_eq!(
            sent, ids,
            "{path}: each of the project's notifications once"
        );
        keys.extend(
            ids.iter()
                .map(|id| (project, Uuid::parse_str(id).expect("a uuid"))),
        );
    }

    // the batched read itself: one statement for every key, each answered with its own row
    // (and the endpoint it was delivered to as done); a notification asked for under the other
    // project's id, or one that does not exist, is not found
    let job = Uuid::now_v7();
    let mut asked: Vec<DeliveryKey> = keys
        .iter()
        .map(|(p, n)| (*p, *n, Channel::Webhook, job))
        .collect();
    let (mine, theirs) = (keys[0], keys[N]);
    asked.push((mine.0, theirs.1, Channel::Webhook, job));
    asked.push((mine.0, Uuid::now_v7(), Channel::Webhook, job));
    let mut conn = app.env.pool.acquire().await.expect("a connection");
    let found = deliveries::to_deliver_many(&mut conn, &asked)
        .await
        .expect("the read");
    assert_eq!(
        found.len(),
        2 * N,
        "only the existing notifications of their own project"
    );
    for (key, n) in &found {
        assert!(keys.contains(&(key.0, key.1)), "{key:?}");
        assert_eq!(n.event_type.as_deref(), Some("alert.disk"));
        assert_eq!(n.done.len(), 1, "the endpoint it went to is done");
    }
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

#[tokio::test]
async fn an_endpoint_failing_past_the_disable_period_is_disabled_and_its_managers_told_in_app() {
    let receiver = Receiver::start().await;
    let mut app = TestApp::spawn_with(|s| s.webhooks.disable_after = Duration::ZERO).await;
    let token = app.admin_token();
    let project = app.project_id();
    let ada = app.active_user(project, "ada@example.com", "admin").await;
    let bob = app.active_user(project, "bob@example.com", "member").await;
    let failing = app
        .endpoint(&token, &endpoint_body(&receiver.url("/status/500"), &[]))
        .await;
    webhook_rule(&app, &token).await;

    app.event(&token, &json!({"type": "alert.c", "payload": {}}))
        .await;
    app.start_worker().await;
    // the first failure already lasts the (zero) period: the endpoint is disabled
    let id = failing["id"].as_str().expect("an id");
    eventually(Duration::from_secs(20), "the endpoint disabled", || async {
        let resp = send(app.authed(
            Method::GET,
            &format!("/api/v1/webhook-endpoints/{id}"),
            &token,
        ))
        .await;
        let body: Value = resp.json().await.ok()?;
        (body["data"]["enabled"] == false).then_some(())
    })
    .await;
    // the notice reaches the admin's inbox through an in-app delivery job; not the member's
    let (notice, delivered): (Uuid, Option<chrono::DateTime<chrono::Utc>>) = eventually(
        Duration::from_secs(20),
        "the notice delivered in-app",
        || async {
            let row: Option<(Uuid, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
                "SELECT n.notification_id, r.delivered_at FROM notifications n \
                 JOIN notification_recipients r USING (project_id, notification_id) \
                 WHERE n.kind = 'system' AND r.user_id = $1",
            )
            .bind(ada)
            .fetch_optional(&app.env.pool)
            .await
            .ok()?;
            row.filter(|(_, at)| at.is_some())
        },
    )
    .await;
    assert!(delivered.is_some());
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notification_recipients WHERE notification_id = $1 AND user_id = $2",
    )
    .bind(notice)
    .bind(bob)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(others, 0, "only webhooks:manage holders are told");
    let audited = app
        .audit_logs(&token, "?action=webhook_endpoint.disabled")
        .await;
    assert_eq!(audited["data"].as_array().unwrap().len(), 1, "{audited}");
}
