//! Notification delivery end to end: a rule's email channel over a real SMTP server on
//! loopback, users' channel preferences and quiet hours read at delivery time, permanent and
//! transient SMTP failures, the deliveries API, and alert suppression with several workers.

use std::time::Duration;

use chrono::{Timelike as _, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::{
    auth::Claims,
    queue::JobState,
    testing::{
        eventually,
        smtp::{Mode, SmtpServer},
    },
};
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_error, json_with_status, member_permissions, rule_body, send,
};

/// A token of `user` (as a login would give), with `permissions`.
fn user_token(app: &TestApp, user: Uuid, permissions: &[&str]) -> String {
    let claims = Claims::new(
        &user.to_string(),
        app.project_id(),
        permissions.iter().map(|p| (*p).to_owned()).collect(),
        600,
    );
    shared::auth::mint(&app.env.settings.auth.jwt_secret, &claims).expect("mint")
}

async fn app_with_smtp(server: &SmtpServer) -> TestApp {
    let url = server.url();
    TestApp::spawn_with(|s| s.email.smtp_url = Some(url.into())).await
}

/// An email rule on `alert.*` to the project's members.
async fn email_rule(app: &TestApp, token: &str, extra: Value) -> String {
    let member = app.role_id(app.project_id(), "member").await.to_string();
    let mut body = rule_body("email alerts", &["alert.*"], None, &[member]);
    body["channels"] = json!(["email"]);
    body["title"] = json!("Disk {{ event.payload.disk }} is full");
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    app.rule(token, &body).await
}

fn alert(disk: &str) -> Value {
    json!({ "type": "alert.disk", "source": "db-1", "payload": { "disk": disk } })
}

async fn notification_of(app: &TestApp, event_id: &str) -> Uuid {
    sqlx::query_scalar("SELECT notification_id FROM notifications WHERE event_id = $1")
        .bind(Uuid::parse_str(event_id).expect("as the test set it up"))
        .fetch_one(&app.env.pool)
        .await
        .expect("the event's notification")
}

async fn deliveries(app: &TestApp, token: &str, notification: Uuid) -> Vec<Value> {
    let resp = send(app.authed(
        Method::GET,
        &format!("/api/v1/notifications/{notification}/deliveries"),
        token,
    ))
    .await;
    let body = json_with_status(resp, StatusCode::OK).await;
    body["data"]
        .as_array()
        .expect("as the test set it up")
        .clone()
}

fn outcome_of(rows: &[Value], target: Uuid) -> Vec<String> {
    rows.iter()
        .filter(|r| r["targetId"] == target.to_string())
        .map(|r| {
            r["outcome"]
                .as_str()
                .expect("as the test set it up")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn an_email_rule_emails_each_active_recipient_once_with_a_message_id_fixed_per_recipient() {
    let server = SmtpServer::start().await;
    let mut app = app_with_smtp(&server).await;
    let token = app.admin_token();
    let project = app.project_id();
    let bob = app.active_user(project, "bob@example.com", "member").await;
    let cy = app.active_user(project, "cy@example.com", "member").await;
    email_rule(&app, &token, json!({})).await;

    let sent = app.event(&token, &alert("/var")).await;
    app.run_pending_jobs().await;

    let received = server.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 2);
    let notification = notification_of(&app, sent["eventId"].as_str().unwrap()).await;
    let mut to: Vec<String> = received.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["bob@example.com", "cy@example.com"]);
    for m in &received {
        let email = m.parse();
        assert_eq!(email.header("Subject"), Some("Disk /var is full"));
        let user = if m.to[0] == "bob@example.com" {
            bob
        } else {
            cy
        };
        assert_eq!(
            email.header("Message-ID"),
            Some(format!("<notification.{notification}.{user}@comet.local>").as_str())
        );
        assert!(
            email.text.contains("alert.disk from db-1"),
            "{}",
            email.text
        );
        assert!(
            email
                .text
                .contains(&format!("/notifications/{notification}")),
            "{}",
            email.text
        );
    }

    let rows = deliveries(&app, &token, notification).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["channel"], "email");
        assert_eq!(r["outcome"], "ok");
        assert_eq!(r["attempt"], 1);
        assert!(r["smtpReply"].as_str().unwrap().starts_with("250"), "{r}");
    }

    // the same job again (a duplicate, a retry after a crash): the targets are done, no email
    use shared::jobs::{Channel, DeliverNotification, Job as _};
    let again = DeliverNotification {
        project_id: project,
        notification_id: notification,
        channel: Channel::Email,
        user_id: None,
    };
    again
        .enqueue_now(&app.env.queues, Default::default())
        .await
        .unwrap();
    app.run_pending_jobs().await;
    assert_eq!(
        server.messages().len(),
        2,
        "a done target got a second email"
    );
}

#[tokio::test]
async fn preferences_turn_email_off_and_quiet_hours_defer_it_until_they_end() {
    let server = SmtpServer::start().await;
    let mut app = app_with_smtp(&server).await;
    let token = app.admin_token();
    let project = app.project_id();
    let off = app.active_user(project, "off@example.com", "member").await;
    let quiet = app
        .active_user(project, "quiet@example.com", "member")
        .await;
    let on = app.active_user(project, "on@example.com", "member").await;

    let put = |user: Uuid, body: Value| {
        let t = user_token(&app, user, &[]);
        let req = app
            .authed(Method::PUT, "/api/v1/users/me/notification-preferences", &t)
            .json(&body);
        async move { json_with_status(send(req).await, StatusCode::OK).await }
    };
    put(off, json!({ "inApp": true, "email": false })).await;
    // quiet hours around now, in UTC: from the last full hour to two hours later
    let hour = Utc::now().hour();
    let (start, end) = (
        format!("{hour:02}:00"),
        format!("{:02}:00", (hour + 2) % 24),
    );
    let saved = put(
        quiet,
        json!({ "inApp": true, "email": true,
                "quietHours": { "start": start, "end": end, "timeZone": "UTC" } }),
    )
    .await;
    assert_eq!(saved["data"]["quietHours"]["start"], start.as_str());

    email_rule(&app, &token, json!({})).await;
    // the deferred email waits, delayed, so the queues never drain: watch the attempts instead
    app.start_worker().await;
    let sent = app.event(&token, &alert("/home")).await;
    let notification = notification_eventually(&app, &sent).await;
    let rows = eventually(
        Duration::from_secs(20),
        "every recipient handled",
        || async {
            let rows = deliveries(&app, &token, notification).await;
            (rows.len() == 3).then_some(rows)
        },
    )
    .await;

    let received = server.messages();
    assert_eq!(
        received.len(),
        1,
        "only the user with email on and no quiet hours"
    );
    assert_eq!(received[0].to, ["on@example.com"]);
    assert_eq!(outcome_of(&rows, on), ["ok"]);
    assert_eq!(outcome_of(&rows, off), ["skipped"]);
    assert_eq!(outcome_of(&rows, quiet), ["deferred"]);

    // the deferred email waits in a job of its own, due when the quiet hours end
    let delayed = eventually(Duration::from_secs(10), "the deferred job", || async {
        let (page, _) = app
            .env
            .queues
            .list("deliver_notification", JobState::Delayed, 0, 10)
            .await
            .ok()?;
        (page.len() == 1).then(|| page[0].clone())
    })
    .await;
    let want = Utc::now()
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap()
        + chrono::Duration::hours(2);
    let due = delayed.run_at.expect("a due time");
    assert!(
        (due - want).num_seconds().abs() <= 3600,
        "due {due}, quiet hours end {want}"
    );
    assert!(
        due > Utc::now() + chrono::Duration::minutes(50),
        "due {due}"
    );
}

#[tokio::test]
async fn an_smtp_5xx_goes_dead_at_once_and_a_4xx_is_retried_each_recorded() {
    let server = SmtpServer::start().await;
    let mut app = app_with_smtp(&server).await;
    let token = app.admin_token();
    let project = app.project_id();
    let bob = app.active_user(project, "bob@example.com", "member").await;
    email_rule(&app, &token, json!({})).await;

    server.set_mode(Mode::RejectPermanent);
    let sent = app.event(&token, &alert("/a")).await;
    let drained = app.drain_jobs().await;
    let notification = notification_of(&app, sent["eventId"].as_str().unwrap()).await;
    let dead: Vec<_> = drained
        .jobs
        .iter()
        .filter(|j| j.queue == "deliver_notification")
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].state, JobState::Dead);
    assert_eq!(dead[0].attempts, 1, "a permanent failure is not retried");
    let rows = deliveries(&app, &token, notification).await;
    assert_eq!(outcome_of(&rows, bob), ["permanent"]);
    assert!(
        rows[0]["error"].as_str().unwrap().contains("554"),
        "{rows:?}"
    );
    assert!(
        !rows[0]["error"]
            .as_str()
            .unwrap()
            .contains("bob@example.com"),
        "addresses are redacted"
    );

    server.set_mode(Mode::RejectTransient);
    app.start_worker().await;
    let sent = app.event(&token, &alert("/b")).await;
    let notification = notification_eventually(&app, &sent).await;
    let rows = eventually(Duration::from_secs(20), "a failed attempt", || async {
        let rows = deliveries(&app, &token, notification).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(outcome_of(&rows, bob)[0], "retry");
    // the server comes back: a retry delivers
    server.set_mode(Mode::Accept);
    eventually(Duration::from_secs(30), "the retry delivered", || async {
        let rows = deliveries(&app, &token, notification).await;
        outcome_of(&rows, bob)
            .contains(&"ok".to_owned())
            .then_some(())
    })
    .await;
    assert_eq!(server.messages().len(), 1);
}

async fn notification_eventually(app: &TestApp, sent: &Value) -> Uuid {
    let event = Uuid::parse_str(sent["eventId"].as_str().expect("as the test set it up"))
        .expect("as the test set it up");
    eventually(Duration::from_secs(20), "the notification", || async {
        sqlx::query_scalar("SELECT notification_id FROM notifications WHERE event_id = $1")
            .bind(event)
            .fetch_optional(&app.env.pool)
            .await
            .ok()?
    })
    .await
}

#[tokio::test]
async fn preferences_default_to_every_channel_and_bad_values_are_named() {
    let app = TestApp::spawn().await;
    let user = app
        .active_user(app.project_id(), "pat@example.com", "member")
        .await;
    let token = user_token(&app, user, &[]);
    let path = "/api/v1/users/me/notification-preferences";

    let got = json_with_status(
        send(app.authed(Method::GET, path, &token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        got["data"],
        json!({ "inApp": true, "email": true, "quietHours": null })
    );

    let bad = send(app.authed(Method::PUT, path, &token).json(&json!({
        "inApp": "yes", "email": true,
        "quietHours": { "start": "25:00", "end": "07:00", "timeZone": "Mars/Olympus" }
    })))
    .await;
    let body = assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"inApp"), "{body}");
    let bad = send(app.authed(Method::PUT, path, &token).json(&json!({
        "inApp": true, "email": true,
        "quietHours": { "start": "25:00", "end": "25:00", "timeZone": "Mars/Olympus" }
    })))
    .await;
    let body = assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["quietHours.start", "quietHours.end", "quietHours.timeZone"],
        "{body}"
    );
    let same = send(app.authed(Method::PUT, path, &token).json(&json!({
        "inApp": true, "email": true,
        "quietHours": { "start": "22:00", "end": "22:00", "timeZone": "UTC" }
    })))
    .await;
    assert_error(same, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let body = json!({ "inApp": false, "email": true,
        "quietHours": { "start": "22:00", "end": "07:00", "timeZone": "Europe/Paris" } });
    let put = json_with_status(
        send(app.authed(Method::PUT, path, &token).json(&body)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(put["data"], body);
    let got = json_with_status(
        send(app.authed(Method::GET, path, &token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["data"], body);

    // a service token is no user
    let service = app.admin_token();
    assert_error(
        send(app.authed(Method::GET, path, &service)).await,
        StatusCode::FORBIDDEN,
        "user_token_required",
    )
    .await;
}

#[tokio::test]
async fn deliveries_are_for_admins_of_the_notifications_project_only() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let project = app.project_id();
    app.active_user(project, "bob@example.com", "member").await;
    let member = app.role_id(project, "member").await.to_string();
    app.rule(&token, &rule_body("all", &["alert.*"], None, &[member]))
        .await;
    let sent = app.event(&token, &alert("/x")).await;
    app.drain_jobs().await;
    let notification = notification_of(&app, sent["eventId"].as_str().unwrap()).await;
    let path = format!("/api/v1/notifications/{notification}/deliveries");

    let members = app.token(&member_permissions());
    assert_error(
        send(app.authed(Method::GET, &path, &members)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let other = app.env.other_project("other").await;
    let foreign = app.admin_token_for(other);
    assert_error(
        send(app.authed(Method::GET, &path, &foreign)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let missing = format!("/api/v1/notifications/{}/deliveries", Uuid::now_v7());
    assert_error(
        send(app.authed(Method::GET, &missing, &token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

/// Three workers process a burst of matches of a suppressed rule at once: exactly `maxFires`
/// notifications are delivered one by one, the rest are stored as suppressed, and one digest
/// folds them when the period closes.
#[tokio::test]
async fn suppression_across_three_workers_delivers_max_fires_singles_and_one_digest() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let project = app.project_id();
    app.active_user(project, "bob@example.com", "member").await;
    let member = app.role_id(project, "member").await.to_string();
    let mut body = rule_body("noisy", &["alert.*"], None, &[member]);
    body["suppression"] = json!({ "maxFires": 3, "windowSeconds": 2 });
    let rule = app.rule(&token, &body).await;

    let mut workers = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(comet_worker::run(
            app.env.settings.clone(),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        workers.push((stop, task));
    }
    app.start_worker().await;
    let events: Vec<Value> = (0..40).map(|i| alert(&format!("/d{i}"))).collect();
    let resp = app.send_batch(&token, &events).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    let count = |sql: &'static str| {
        let pool = app.env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    eventually(Duration::from_secs(30), "every event processed", || async {
        (count("SELECT count(*) FROM events WHERE processed_at IS NOT NULL").await == 40)
            .then_some(())
    })
    .await;
    assert_eq!(
        count("SELECT count(*) FROM notifications WHERE kind = 'rule' AND NOT suppressed").await,
        3,
        "maxFires singles"
    );
    assert_eq!(
        count("SELECT count(*) FROM notifications WHERE suppressed").await,
        37
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM notification_recipients r JOIN notifications n \
             USING (project_id, notification_id) WHERE n.suppressed"
        )
        .await,
        0,
        "a suppressed match has no recipients"
    );
    // the digest, once the 2 s period and its grace have passed
    let digest: (String, Value) = eventually(Duration::from_secs(20), "the digest", || async {
        sqlx::query_as("SELECT title, data FROM notifications WHERE kind = 'digest'")
            .fetch_optional(&app.env.pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(digest.0, "noisy fired 37 more times");
    assert_eq!(digest.1["count"], 37);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count("SELECT count(*) FROM notifications WHERE kind = 'digest'").await,
        1
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM notification_recipients r JOIN notifications n \
             USING (project_id, notification_id) WHERE n.kind = 'digest'"
        )
        .await,
        1,
        "the digest goes to the rule's roles"
    );
    let _ = rule;
    for (stop, task) in workers {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
}

#[tokio::test]
async fn a_recipient_deactivated_before_delivery_is_skipped_not_emailed() {
    let server = SmtpServer::start().await;
    let mut app = app_with_smtp(&server).await;
    let token = app.admin_token();
    let project = app.project_id();
    let bob = app.active_user(project, "bob@example.com", "member").await;
    email_rule(&app, &token, json!({})).await;
    // no worker runs yet: the event waits in the outbox
    let sent = app.event(&token, &alert("/z")).await;
    sqlx::query("UPDATE users SET status = 'DEACTIVATED' WHERE user_id = $1")
        .bind(bob)
        .execute(&app.env.pool)
        .await
        .expect("deactivate");
    // bob was deactivated before the event was processed: no recipient at all
    app.run_pending_jobs().await;
    let notification = notification_of(&app, sent["eventId"].as_str().expect("an id")).await;
    let recipients: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notification_recipients WHERE notification_id = $1",
    )
    .bind(notification)
    .fetch_one(&app.env.pool)
    .await
    .expect("count");
    assert_eq!(recipients, 0);

    // a recipient deactivated after processing, before delivery: skipped, with the reason
    sqlx::query(
        "INSERT INTO notification_recipients (project_id, notification_id, user_id) \
         VALUES ($1, $2, $3)",
    )
    .bind(project)
    .bind(notification)
    .bind(bob)
    .execute(&app.env.pool)
    .await
    .expect("recipient");
    let deliver = shared::jobs::DeliverNotification {
        project_id: project,
        notification_id: notification,
        channel: shared::jobs::Channel::Email,
        user_id: None,
    };
    use shared::jobs::Job as _;
    deliver
        .enqueue_now(&app.env.queues, Default::default())
        .await
        .expect("enqueue");
    app.run_pending_jobs().await;
    assert!(
        server.messages().is_empty(),
        "no email to a deactivated user"
    );
    let rows = deliveries(&app, &token, notification).await;
    assert_eq!(outcome_of(&rows, bob), ["skipped"]);
    assert_eq!(rows[0]["error"], "the user is no longer active");
}
