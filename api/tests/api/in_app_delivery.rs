//! A rule's in-app channel is delivered by `process_event` itself, in the transaction that
//! stores the notification: the inbox, the feed, the unread count and the attempt rows, then the
//! live push; no `deliver_notification` job. A re-run stores and delivers nothing twice and has
//! the committed entries published again.

use std::time::Duration;

use futures::StreamExt as _;

use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::{
    jobs::{Job as _, ProcessEvent},
    queue::JobState,
    testing::eventually,
};
use uuid::Uuid;

use crate::helpers::{
    SseReader, TestApp, in_app_off, inbox_user, json_with_status, open_stream, rule_body, send,
};

#[tokio::test]
async fn process_event_delivers_in_app_in_its_own_transaction_and_a_rerun_adds_nothing() {
    let mut app = TestApp::spawn().await;
    let p = app.project_id();
    let admin = app.admin_token();
    let (alice, alice_token) = inbox_user(&app.env, p, "alice@example.com").await;
    let (bob, bob_token) = inbox_user(&app.env, p, "bob@example.com").await;
    in_app_off(&app.env, p, bob).await;
    let member = app.role_id(p, "member").await.to_string();
    app.rule(&admin, &rule_body("in-app", &["disk.*"], None, &[member]))
        .await;
    let mut stream = SseReader::new(open_stream(&app.address, Some(&alice_token), "", None).await);

    let sent = app
        .event(
            &admin,
            &json!({ "type": "disk.full", "payload": { "amount": 7 } }),
        )
        .await;
    let drained = app.run_pending_jobs().await;
    assert_eq!(
        drained.kinds(),
        ["process_event"],
        "no delivery job for in-app"
    );
    let job_id = drained.jobs[0].id;
    let event_id = Uuid::parse_str(sent["eventId"].as_str().expect("an id")).expect("a uuid");

    let pushed = stream
        .next(Duration::from_secs(10))
        .await
        .expect("alice's stream gets the notification");
    assert_eq!(pushed.event, "notification");
    assert_eq!(pushed.id, Some(1));
    assert_eq!(pushed.data["eventId"], event_id.to_string());
    let notification = Uuid::parse_str(pushed.data["id"].as_str().expect("an id")).expect("uuid");
    assert_eq!(app.unread(&alice_token).await, 1);
    assert_eq!(app.unread(&bob_token).await, 0, "bob turned in-app off");

    // one attempt row per recipient, under the process_event job
    let resp = send(app.authed(
        Method::GET,
        &format!("/api/v1/notifications/{notification}/deliveries"),
        &admin,
    ))
    .await;
    let rows = json_with_status(resp, StatusCode::OK).await["data"].clone();
    let rows = rows.as_array().expect("a list");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (user, outcome) in [(alice, "ok"), (bob, "skipped")] {
        let row = rows
            .iter()
            .find(|r| r["targetId"] == user.to_string())
            .expect("a row per recipient");
        assert_eq!(row["channel"], "inApp");
        assert_eq!(row["outcome"], outcome, "{row}");
        assert_eq!(row["jobId"], job_id.to_string(), "{row}");
    }

    // a re-run (a duplicate job, a retry after a crash before the publish): listen on Alice's
    // channel, as every API process does
    let channel = shared::inbox::channel(app.env.queues.prefix(), p, alice);
    let messages = app
        .env
        .queues
        .client()
        .subscribe(&[shared::redis_client::Channel::Plain(channel)])
        .await
        .expect("subscribe");
    let mut messages = std::pin::pin!(messages);
    ProcessEvent {
        project_id: p,
        event_id,
    }
    .enqueue_now(&app.env.queues, Default::default())
    .await
    .expect("enqueue a re-run");
    let again = app.run_pending_jobs().await;
    let republish = again.of_kind("deliver_notification");
    assert_eq!(republish.len(), 1, "{:?}", again.kinds());
    assert_eq!(republish[0].state, JobState::Completed);
    let counts: (i64, i64, i64) = sqlx::query_as(
        r#"SELECT (SELECT count(*) FROM notifications WHERE project_id = $1),
                  (SELECT count(*) FROM inbox_feed WHERE project_id = $1),
                  (SELECT count(*) FROM delivery_attempts WHERE project_id = $1)"#,
    )
    .bind(p)
    .fetch_one(&app.env.pool)
    .await
    .expect("counts");
    assert_eq!(counts, (1, 1, 2), "(notifications, feed entries, attempts)");
    assert_eq!(app.unread(&alice_token).await, 1);
    // the committed entry was published again, once more as seq 1
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the entry is published again")
        .expect("a message");
    let payload: serde_json::Value =
        serde_json::from_str(&message.get_payload::<String>().expect("text")).expect("json");
    assert_eq!(payload["seq"], 1, "{payload}");
    assert_eq!(payload["data"]["id"], notification.to_string(), "{payload}");
    // the stream drops what it has (no second event)
    assert!(
        stream.next(Duration::from_millis(500)).await.is_none(),
        "a duplicate reached the stream"
    );
}

#[tokio::test]
async fn a_suppressed_match_gets_no_recipient_even_when_a_rerun_would_deliver_it() {
    let mut app = TestApp::spawn().await;
    let p = app.project_id();
    let admin = app.admin_token();
    let (alice, alice_token) = inbox_user(&app.env, p, "alice@example.com").await;
    let member = app.role_id(p, "member").await.to_string();
    let mut body = rule_body("noisy", &["disk.*"], None, &[member]);
    body["suppression"] = json!({ "maxFires": 1, "windowSeconds": 600 });
    let rule = app.rule(&admin, &body).await;

    // the suppression period's digest waits for its end: the test waits for the runs instead
    app.start_worker().await;
    let first = app
        .event(&admin, &json!({ "type": "disk.full", "payload": {} }))
        .await;
    completed_runs(&app, 1).await;
    let second = app
        .event(&admin, &json!({ "type": "disk.full", "payload": {} }))
        .await;
    completed_runs(&app, 2).await;
    let second_id = Uuid::parse_str(second["eventId"].as_str().expect("id")).expect("uuid");
    assert_ne!(first["eventId"], second["eventId"]);
    assert_eq!(
        app.unread(&alice_token).await,
        1,
        "the second match is suppressed"
    );

    // Redis forgets the rule's suppression state (a flush, a failover, a memo expired): a
    // re-run of the suppressed event now decides to deliver, but its match is stored
    // suppressed and stays so
    let mut conn = app.env.queues.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:suppress:*{rule}*", app.env.queues.prefix()))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(!keys.is_empty(), "the rule's suppression keys");
    let _: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    ProcessEvent {
        project_id: p,
        event_id: second_id,
    }
    .enqueue_now(&app.env.queues, Default::default())
    .await
    .expect("enqueue a re-run");
    completed_runs(&app, 3).await;

    let (recipients, feed): (i64, i64) = sqlx::query_as(
        r#"SELECT (SELECT count(*) FROM notification_recipients r
                   JOIN notifications n USING (project_id, notification_id)
                   WHERE n.project_id = $1 AND n.event_id = $2),
                  (SELECT count(*) FROM inbox_feed WHERE project_id = $1 AND user_id = $3)"#,
    )
    .bind(p)
    .bind(second_id)
    .bind(alice)
    .fetch_one(&app.env.pool)
    .await
    .expect("counts");
    assert_eq!(
        (recipients, feed),
        (0, 1),
        "(the suppressed match's recipients, Alice's feed)"
    );
    assert_eq!(app.unread(&alice_token).await, 1);
}

/// Waits until `n` `process_event` jobs have completed.
async fn completed_runs(app: &TestApp, n: usize) {
    eventually(Duration::from_secs(20), "process_event runs", || async {
        let (page, _) = app
            .env
            .queues
            .list("process_event", JobState::Completed, 0, 10)
            .await
            .ok()?;
        (page.len() >= n).then_some(())
    })
    .await;
}
