//! A rule's in-app channel is delivered by `process_event` itself, in the transaction that
//! stores the notification: the inbox, the feed, the unread count and the attempts, then the
//! live push; no `deliver_notification` job. A re-run stores and delivers nothing twice and has
//! the committed entries published again.

use std::time::Duration;

use futures::StreamExt as _;

use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::{
    db::deliveries::{self, NewAttempt, Outcome},
    jobs::{Channel, Job as _, ProcessEvent},
    queue::JobState,
    testing::eventually,
};
use uuid::Uuid;

use crate::helpers::{
    SseReader, TestApp, in_app_off, inbox_user, json_with_status, open_stream, rule_body, send,
};

/// The messages of a user's inbox channel, as every API process listens to them.
async fn inbox_channel(
    app: &TestApp,
    project_id: Uuid,
    user_id: Uuid,
) -> impl futures::Stream<Item = redis::Msg> + use<> {
    let channel = shared::inbox::channel(app.env.queues.prefix(), project_id, user_id);
    app.env
        .queues
        .client()
        .subscribe(&[shared::redis_client::Channel::Plain(channel)])
        .await
        .expect("subscribe")
}

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
    let mut messages = std::pin::pin!(inbox_channel(&app, p, alice).await);
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
                  (SELECT count(*) FROM notification_recipients WHERE project_id = $1)"#,
    )
    .bind(p)
    .fetch_one(&app.env.pool)
    .await
    .expect("counts");
    assert_eq!(
        counts,
        (1, 1, 2),
        "(notifications, feed entries, recipients)"
    );
    let attempts = shared::db::deliveries::attempts(&app.env.pool, p, notification, 100)
        .await
        .expect("attempts");
    let seen: Vec<_> = attempts
        .iter()
        .map(|a| (a.target_id, a.attempt, a.job_id, a.outcome.as_str()))
        .collect();
    let mut want = vec![(alice, 1, job_id, "ok"), (bob, 1, job_id, "skipped")];
    want.sort();
    assert_eq!(
        seen, want,
        "still the first run's attempts, one per recipient"
    );
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

/// A user given the rule's role between two runs of one event is a recipient the re-run adds:
/// delivered by the re-run, so their in-app attempt names the re-run's job (the others keep
/// the first run's), and the re-publishing job the re-run makes counts them done.
#[tokio::test]
async fn a_recipient_a_rerun_adds_has_its_attempt_under_the_rerun_and_is_delivered_once() {
    let mut app = TestApp::spawn().await;
    let p = app.project_id();
    let admin = app.admin_token();
    let (alice, _) = inbox_user(&app.env, p, "alice@example.com").await;
    let member = app.role_id(p, "member").await.to_string();
    app.rule(&admin, &rule_body("in-app", &["disk.*"], None, &[member]))
        .await;
    let sent = app
        .event(&admin, &json!({ "type": "disk.full", "payload": {} }))
        .await;
    let first = app.run_pending_jobs().await.jobs[0].id;
    let event_id = Uuid::parse_str(sent["eventId"].as_str().expect("an id")).expect("a uuid");
    let notification: Uuid = sqlx::query_scalar(
        "SELECT notification_id FROM notifications WHERE project_id = $1 AND event_id = $2",
    )
    .bind(p)
    .bind(event_id)
    .fetch_one(&app.env.pool)
    .await
    .expect("the notification");

    // Carol gets the role, then the event runs again (a duplicate job, a retry)
    let (carol, carol_token) = inbox_user(&app.env, p, "carol@example.com").await;
    let rerun = ProcessEvent {
        project_id: p,
        event_id,
    }
    .enqueue_now(&app.env.queues, Default::default())
    .await
    .expect("enqueue a re-run")
    .id;
    let again = app.run_pending_jobs().await;
    assert_eq!(
        again.of_kind("deliver_notification").len(),
        1,
        "the re-publishing job: {:?}",
        again.kinds()
    );
    assert!(again.jobs.iter().all(|j| j.state == JobState::Completed));

    let attempts = deliveries::attempts(&app.env.pool, p, notification, 100)
        .await
        .expect("attempts");
    let mut seen: Vec<_> = attempts
        .iter()
        .map(|a| (a.target_id, a.attempt, a.job_id, a.outcome.as_str()))
        .collect();
    seen.sort();
    let mut want = vec![(alice, 1, first, "ok"), (carol, 1, rerun, "ok")];
    want.sort();
    assert_eq!(
        seen, want,
        "one attempt each, under the run that delivered it"
    );
    let feed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inbox_feed WHERE project_id = $1 AND user_id = $2",
    )
    .bind(p)
    .bind(carol)
    .fetch_one(&app.env.pool)
    .await
    .expect("Carol's feed");
    assert_eq!(feed, 1, "delivered to Carol once");
    assert_eq!(app.unread(&carol_token).await, 1);
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

/// `process_event` publishes the entries of the notifications it creates rendered from what it
/// wrote, without reading them back: the message must be exactly what a read of the feed
/// renders (what a stream resuming by `Last-Event-ID` receives), field for field.
#[tokio::test]
async fn what_process_event_publishes_is_what_a_read_of_the_feed_renders() {
    let mut app = TestApp::spawn().await;
    let p = app.project_id();
    let admin = app.admin_token();
    let (alice, _) = inbox_user(&app.env, p, "alice@example.com").await;
    let member = app.role_id(p, "member").await.to_string();
    let mut body = rule_body("rendered", &["disk.*"], None, &[member]);
    body["sound"] = json!("chime");
    body["priority"] = json!(7);
    app.rule(&admin, &body).await;
    let mut messages = std::pin::pin!(inbox_channel(&app, p, alice).await);

    app.event(
        &admin,
        &json!({ "type": "disk.full", "source": "nas-3", "payload": { "amount": 42 } }),
    )
    .await;
    app.run_pending_jobs().await;
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the entry is published")
        .expect("a message");
    let live: shared::inbox::StreamEvent =
        serde_json::from_str(&message.get_payload::<String>().expect("text")).expect("json");
    assert_eq!(live.event, "notification");
    assert_eq!(live.data["title"], "disk.full: 42", "{live:?}");

    let entry = shared::db::inbox::FeedEntry {
        user_id: alice,
        seq: live.seq,
        kind: "notification".into(),
        notification_id: Uuid::parse_str(live.data["id"].as_str().expect("an id")).expect("uuid"),
    };
    let read = shared::db::inbox::render(&app.env.pool, p, &[entry])
        .await
        .expect("render");
    assert_eq!(read.len(), 1);
    assert_eq!(shared::inbox::StreamEvent::from_rendered(&read[0]), live);
}

/// The recipients, the delivery log and the feed have no per-row foreign key (a check per row
/// cost a fifth of Postgres's time at 1,000 events/s): deleting their parents still takes them
/// along, and the unread counters follow the recipients' rows.
#[tokio::test]
async fn deleting_a_notification_or_a_user_takes_its_attempts_and_feed_along() {
    let mut app = TestApp::spawn().await;
    let p = app.project_id();
    let admin = app.admin_token();
    let (alice, alice_token) = inbox_user(&app.env, p, "alice@example.com").await;
    let (bob, _) = inbox_user(&app.env, p, "bob@example.com").await;
    let member = app.role_id(p, "member").await.to_string();
    app.rule(&admin, &rule_body("two", &["disk.*"], None, &[member]))
        .await;
    for n in 0..2 {
        app.event(
            &admin,
            &json!({ "type": "disk.full", "payload": { "amount": n } }),
        )
        .await;
    }
    app.run_pending_jobs().await;
    assert_eq!(app.unread(&alice_token).await, 2);
    let count = |sql: &'static str| {
        let pool = app.env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(p)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    // an email attempt per notification and recipient beside the in-app delivery (recorded
    // on the notification and read from the recipients' rows)
    let notes: Vec<Uuid> = sqlx::query_scalar(
        "SELECT notification_id FROM notifications WHERE project_id = $1 ORDER BY notification_id",
    )
    .bind(p)
    .fetch_all(&app.env.pool)
    .await
    .expect("notifications");
    assert_eq!(notes.len(), 2);
    for n in &notes {
        let rows: Vec<_> = [alice, bob]
            .into_iter()
            .map(|target_id| NewAttempt {
                target_id,
                started_at: chrono::Utc::now(),
                outcome: Outcome::Ok,
                http_status: None,
                smtp_reply: Some("250 ok".into()),
                error: None,
            })
            .collect();
        let mut conn = app.env.pool.acquire().await.expect("a connection");
        deliveries::record(&mut conn, p, *n, Channel::Email, Uuid::now_v7(), 1, &rows)
            .await
            .expect("record the email attempts");
    }
    let attempts_of = |n: Uuid| {
        let pool = app.env.pool.clone();
        async move {
            let all = deliveries::attempts(&pool, p, n, 100)
                .await
                .expect("attempts");
            let mut by_channel = std::collections::BTreeMap::<String, usize>::new();
            for a in all {
                *by_channel.entry(a.channel).or_default() += 1;
            }
            by_channel.into_iter().collect::<Vec<_>>()
        }
    };
    for n in &notes {
        assert_eq!(
            attempts_of(*n).await,
            [("email".to_owned(), 2), ("inApp".to_owned(), 2)]
        );
    }
    assert_eq!(
        count("SELECT count(*) FROM notification_recipients WHERE project_id = $1").await,
        4
    );
    assert_eq!(
        count("SELECT count(*) FROM inbox_feed WHERE project_id = $1").await,
        4
    );

    // one notification deleted (as retention's last step does): its recipients and its
    // attempts go by the trigger (the counters go down with the recipients); the other stays
    // whole
    let gone: Uuid = sqlx::query_scalar(
        "DELETE FROM notifications WHERE notification_id = $2 AND project_id = $1 \
         RETURNING notification_id",
    )
    .bind(p)
    .bind(notes[0])
    .fetch_one(&app.env.pool)
    .await
    .expect("delete one notification");
    assert_eq!(
        count("SELECT count(*) FROM delivery_attempts WHERE project_id = $1").await,
        2
    );
    assert_eq!(
        count("SELECT count(*) FROM notification_recipients WHERE project_id = $1").await,
        2
    );
    assert_eq!(attempts_of(gone).await, []);
    assert_eq!(
        attempts_of(notes[1]).await,
        [("email".to_owned(), 2), ("inApp".to_owned(), 2)]
    );
    assert_eq!(app.unread(&alice_token).await, 1);

    // a user deleted: their inbox row cascades, their feed goes by the trigger
    sqlx::query("DELETE FROM users WHERE project_id = $1 AND user_id = $2")
        .bind(p)
        .bind(bob)
        .execute(&app.env.pool)
        .await
        .expect("delete bob");
    let feeds: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, count(*) FROM inbox_feed WHERE project_id = $1 GROUP BY user_id",
    )
    .bind(p)
    .fetch_all(&app.env.pool)
    .await
    .expect("feeds");
    assert_eq!(feeds, vec![(alice, 2)]);
}

/// The batch statement of `process_event` numbers each user's new feed entries after what the
/// feed held and keeps the unread counter itself, in the same update as the feed's sequence
/// (its transaction turns the insert trigger's count off): many events and rules in one
/// statement, a user whose feed holds entries already, one whose in-app channel is off, and a
/// second batch going on from the first.
#[tokio::test]
async fn a_batch_numbers_each_users_feed_after_its_earlier_entries_and_counts_unread_once() {
    use shared::db::{
        inbox::{self, FeedEntry},
        notifications::{self, BEGIN_BATCH, EventMatches, NewNotification},
    };
    let app = TestApp::spawn().await;
    let p = app.project_id();
    let admin = app.admin_token();
    let (alice, alice_token) = inbox_user(&app.env, p, "alice@example.com").await;
    let (bob, bob_token) = inbox_user(&app.env, p, "bob@example.com").await;
    let (carol, carol_token) = inbox_user(&app.env, p, "carol@example.com").await;
    in_app_off(&app.env, p, carol).await;
    let member = app.role_id(p, "member").await;
    let rules: Vec<Uuid> = {
        let mut rules = Vec::new();
        for name in ["first", "second"] {
            let body = rule_body(name, &["disk.*"], None, &[member.to_string()]);
            rules.push(Uuid::parse_str(&app.rule(&admin, &body).await).expect("uuid"));
        }
        rules
    };
    // Alice's feed holds two entries already
    let mut tx = app.env.pool.begin().await.expect("begin");
    inbox::lock_users(&mut tx, p, &[alice]).await.expect("lock");
    let earlier = [
        (alice, inbox::ACKNOWLEDGED, Uuid::now_v7()),
        (alice, inbox::DELETED, Uuid::now_v7()),
    ];
    inbox::append(&mut tx, p, &earlier).await.expect("append");
    tx.commit().await.expect("commit");

    let mut returned: Vec<FeedEntry> = Vec::new();
    for batch in [3, 2] {
        let mut matches = Vec::new();
        for _ in 0..batch {
            let sent = app
                .event(&admin, &json!({ "type": "disk.full", "payload": {} }))
                .await;
            let event_id = Uuid::parse_str(sent["eventId"].as_str().expect("id")).expect("uuid");
            let new = rules
                .iter()
                .map(|&rule_id| NewNotification {
                    rule_id,
                    title: "t".into(),
                    body: "b".into(),
                    priority: 0,
                    sound: None,
                    channels: vec!["inApp".into()],
                    target_role_ids: vec![member],
                    suppressed_in: None,
                })
                .collect();
            matches.push(EventMatches {
                event_id,
                new,
                matched: rules.clone(),
                job: (Uuid::now_v7(), 1),
            });
        }
        let mut tx = app.env.pool.begin_with(BEGIN_BATCH).await.expect("begin");
        let created = notifications::create_for_events(&mut tx, p, &matches)
            .await
            .expect("the batch statement");
        tx.commit().await.expect("commit");
        assert_eq!(created.len(), batch);
        for (_, c) in created {
            assert_eq!(c.notifications, 2);
            assert_eq!(c.in_app_skipped, 2, "Carol's two, in-app off");
            returned.extend(c.in_app);
        }
    }

    // what the statements returned is what the feed holds, and each user's seqs run 1, 2, …
    // with no gap or repeat, the new entries in notification order within a batch
    let feed: Vec<FeedEntry> = sqlx::query_as(
        "SELECT user_id, seq, kind, notification_id FROM inbox_feed WHERE project_id = $1 \
         ORDER BY user_id, seq",
    )
    .bind(p)
    .fetch_all(&app.env.pool)
    .await
    .expect("feed");
    let mut users: Vec<Uuid> = feed.iter().map(|e| e.user_id).collect();
    users.dedup();
    for user in users {
        let seqs: Vec<i64> = feed
            .iter()
            .filter(|e| e.user_id == user)
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{user}");
    }
    let mut written: Vec<FeedEntry> = feed
        .iter()
        .filter(|e| e.kind == inbox::NOTIFICATION)
        .cloned()
        .collect();
    returned.sort_by_key(|e| (e.user_id, e.seq));
    written.sort_by_key(|e| (e.user_id, e.seq));
    assert_eq!(returned, written);
    let alice_feed: Vec<&FeedEntry> = feed.iter().filter(|e| e.user_id == alice).collect();
    assert_eq!(
        alice_feed.len(),
        2 + 10,
        "two earlier entries, then 5 events × 2 rules"
    );
    assert_eq!(alice_feed[1].kind, inbox::DELETED);
    for batch in [&alice_feed[2..8], &alice_feed[8..]] {
        assert!(batch.is_sorted_by_key(|e| e.notification_id), "{batch:?}");
    }
    assert!(
        feed.iter().all(|e| e.user_id != carol),
        "Carol's in-app is off"
    );

    // the counters: one per delivered, unread notification; the sequence at the last entry
    assert_eq!(app.unread(&alice_token).await, 10);
    assert_eq!(app.unread(&bob_token).await, 10);
    assert_eq!(app.unread(&carol_token).await, 0);
    let counters: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT user_id, last_seq, unread FROM inbox_users WHERE project_id = $1 \
         AND user_id = ANY($2) ORDER BY user_id",
    )
    .bind(p)
    .bind([alice, bob])
    .fetch_all(&app.env.pool)
    .await
    .expect("counters");
    let mut expected = vec![(alice, 12, 10), (bob, 10, 10)];
    expected.sort();
    assert_eq!(counters, expected);
}
