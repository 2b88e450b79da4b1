//! Job lifecycle webhooks: a project subscribes its endpoints to `job.completed` / `job.dead`
//! of its own jobs (per queue, or every queue); each finish is POSTed once to each subscribed
//! endpoint, signed like every Comet webhook, never to another project's endpoints, never to an
//! endpoint that did not subscribe to it, and the messages' own jobs never make messages.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::testing::eventually;

use crate::helpers::{
    Received, Receiver, TestApp, assert_error, endpoint_body, error_fields, json_with_status, send,
    verifies,
};

fn subscribing(url: &str, events: &[&str], queues: &[&str], notifications: bool) -> Value {
    let mut body = endpoint_body(url, &[]);
    body["jobEvents"] = json!(events);
    body["jobQueues"] = json!(queues);
    body["notifications"] = json!(notifications);
    body
}

fn at(received: &[Received], path: &str) -> Vec<Received> {
    received
        .iter()
        .filter(|r| r.path == path)
        .cloned()
        .collect()
}

fn body_of(r: &Received) -> Value {
    serde_json::from_slice(&r.body).expect("a JSON body")
}

/// The message about `job` among `got`.
fn about<'a>(got: &'a [Received], job: &str) -> &'a Received {
    got.iter()
        .find(|r| body_of(r)["data"]["job"]["jobId"] == job)
        .unwrap_or_else(|| panic!("no message about {job}"))
}

#[tokio::test]
async fn subscribed_endpoints_hear_their_projects_jobs_complete_and_die_once_signed() {
    let receiver = Receiver::start().await;
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    // every job message of every queue, no notifications
    let all = app
        .endpoint(
            &token,
            &subscribing(
                &receiver.url("/ok"),
                &["job.completed", "job.dead"],
                &[],
                false,
            ),
        )
        .await;
    // deaths of ping jobs only
    let dead = app
        .endpoint(
            &token,
            &subscribing(&receiver.url("/status/200"), &["job.dead"], &["ping"], true),
        )
        .await;
    // another queue's jobs: hears nothing here
    app.endpoint(
        &token,
        &subscribing(
            &receiver.url("/status/201"),
            &["job.completed", "job.dead"],
            &["bulk_import"],
            true,
        ),
    )
    .await;
    // notifications only (the default): hears no job message
    app.endpoint(&token, &endpoint_body(&receiver.url("/status/204"), &[]))
        .await;
    // a receiver refusing for good: its message's job goes dead with a readable error
    app.endpoint(
        &token,
        &subscribing(
            &receiver.url("/status/410"),
            &["job.completed"],
            &["ping"],
            false,
        ),
    )
    .await;
    // another project subscribes to everything of its own
    let other = app.env.other_project("other").await;
    let other_token = app.admin_token_for(other);
    app.endpoint(
        &other_token,
        &subscribing(
            &receiver.url("/status/202"),
            &["job.completed", "job.dead"],
            &[],
            false,
        ),
    )
    .await;

    let ok = app.enqueue_ping(&json!({})).await;
    let failed = app.enqueue_ping(&json!({"failPermanently": true})).await;
    let theirs = app.enqueue_ping_as(&json!({}), &other_token).await;
    app.start_worker().await;

    eventually(Duration::from_secs(60), "the job messages", || async {
        let got = receiver.received();
        (at(&got, "/ok").len() >= 2
            && !at(&got, "/status/200").is_empty()
            && !at(&got, "/status/202").is_empty()
            && !at(&got, "/status/410").is_empty())
        .then_some(())
    })
    .await;
    // the refused message's job goes dead, saying why
    let refused: Value = eventually(
        Duration::from_secs(60),
        "the refused message dead",
        || async {
            let resp = send(app.authed(
                Method::GET,
                "/api/v1/jobs?queue=job_webhook&state=dead",
                &token,
            ))
            .await;
            let page = json_with_status(resp, StatusCode::OK).await;
            page["data"].as_array().and_then(|d| d.first().cloned())
        },
    )
    .await;
    assert!(
        refused["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 410")),
        "{refused:#}"
    );
    // the messages' own jobs finishing (completed, and that dead one) make no message: let a
    // few archive periods pass and count again
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = receiver.received();

    let heard_all = at(&got, "/ok");
    assert_eq!(heard_all.len(), 2, "one message per finish: {heard_all:#?}");
    let completed = about(&heard_all, &ok);
    let died = about(&heard_all, &failed);
    let secret = all["secret"].as_str().expect("the secret");
    for message in [completed, died] {
        assert!(
            verifies(secret, message),
            "signed with the endpoint's secret"
        );
    }
    let completed_body = body_of(completed);
    assert_eq!(
        completed_body["type"], "job.completed",
        "{completed_body:#}"
    );
    assert_eq!(
        completed_body["data"]["projectId"],
        app.project_id().to_string()
    );
    assert_eq!(completed_body["data"]["job"]["queue"], "ping");
    assert_eq!(completed_body["data"]["job"]["attempts"], 1);
    assert!(completed_body["data"]["job"]["error"].is_null());
    assert!(
        completed_body["data"]["job"]["result"].is_object(),
        "{completed_body:#}"
    );
    let died_body = body_of(died);
    assert_eq!(died_body["type"], "job.dead", "{died_body:#}");
    assert!(
        died_body["data"]["job"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("fail permanently")),
        "{died_body:#}"
    );
    assert_eq!(
        completed.header("webhook-id"),
        format!(
            "msg_{}_completed_{}",
            ok.replace('-', ""),
            crate::helpers::time(&completed_body["data"]["job"]["finishedAt"]).timestamp_millis()
        )
    );

    // the dead-only endpoint heard the death alone, with the same message id
    let heard_dead = at(&got, "/status/200");
    assert_eq!(heard_dead.len(), 1, "{heard_dead:#?}");
    assert_eq!(body_of(&heard_dead[0])["data"]["job"]["jobId"], failed);
    assert_eq!(
        heard_dead[0].header("webhook-id"),
        died.header("webhook-id")
    );
    assert!(verifies(dead["secret"].as_str().unwrap(), &heard_dead[0]));

    assert!(
        at(&got, "/status/201").is_empty(),
        "another queue's subscriber heard ping jobs"
    );
    assert!(
        at(&got, "/status/204").is_empty(),
        "an endpoint without jobEvents heard jobs"
    );
    // the other project's endpoint heard only its own job
    let heard_other = at(&got, "/status/202");
    assert_eq!(heard_other.len(), 1, "{heard_other:#?}");
    assert_eq!(body_of(&heard_other[0])["data"]["job"]["jobId"], theirs);
    assert_eq!(
        body_of(&heard_other[0])["data"]["projectId"],
        other.to_string()
    );
    // the refusing endpoint was tried once: a 410 is not retried
    assert_eq!(at(&got, "/status/410").len(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn job_subscriptions_are_validated_shown_and_changed_with_an_audit_entry() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let url = "http://127.0.0.1:9/hook";
    let err = assert_error(
        app.create_endpoint(
            &token,
            &subscribing(
                url,
                &["job.started", "job.dead"],
                &["ping", "job_webhook", "nope"],
                true,
            ),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields = error_fields(&err);
    // every invalid item named: an unknown type, the messages' own queue, an unknown queue
    assert_eq!(
        fields,
        ["jobEvents[0]", "jobQueues[1]", "jobQueues[2]"],
        "{err:#}"
    );

    let created = app
        .endpoint(
            &token,
            &subscribing(url, &["job.dead", "job.dead"], &["ping"], false),
        )
        .await;
    assert_eq!(created["jobEvents"], json!(["job.dead"]), "repeats dropped");
    assert_eq!(created["jobQueues"], json!(["ping"]));
    assert_eq!(created["notifications"], false);
    // an endpoint made without them subscribes to no job message and takes notifications
    let plain = app.endpoint(&token, &endpoint_body(url, &[])).await;
    assert_eq!(plain["jobEvents"], json!([]));
    assert_eq!(plain["notifications"], true);

    // job messages carry results and errors: following them needs jobs:read as well
    let hooks_only = app.token(&["webhooks:manage"]);
    let refused = assert_error(
        app.create_endpoint(&hooks_only, &subscribing(url, &["job.dead"], &[], true))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("jobs:read")),
        "{refused}"
    );
    app.endpoint(&hooks_only, &endpoint_body(url, &[])).await;

    let id = created["id"].as_str().unwrap();
    let resp = send(
        app.authed(
            Method::PUT,
            &format!("/api/v1/webhook-endpoints/{id}"),
            &token,
        )
        .json(&subscribing(url, &["job.completed"], &[], true)),
    )
    .await;
    let updated = json_with_status(resp, StatusCode::OK).await["data"].clone();
    assert_eq!(updated["jobEvents"], json!(["job.completed"]));
    assert_eq!(updated["jobQueues"], json!([]));
    let changes: Value = sqlx::query_scalar(
        "SELECT metadata->'changes' FROM audit_log WHERE action = 'webhook_endpoint.updated' \
         AND project_id = $1",
    )
    .bind(app.project_id())
    .fetch_one(&app.env.pool)
    .await
    .expect("the audit entry");
    assert_eq!(
        changes["jobEvents"],
        json!({"from": ["job.dead"], "to": ["job.completed"]})
    );
    assert_eq!(changes["notifications"], json!({"from": false, "to": true}));
    app.cleanup().await;
}

#[tokio::test]
async fn a_finish_archived_again_is_told_once_and_a_later_finish_again() {
    // no worker: the archive is written by hand, as the archiver would after a crash between
    // its commit and forgetting the batch, and the outbox is read where it lies
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    app.endpoint(
        &token,
        &subscribing(
            "http://127.0.0.1:9/hook",
            &["job.completed", "job.dead"],
            &[],
            false,
        ),
    )
    .await;
    let finished_at = chrono::Utc::now();
    let mut job = shared::queue::JobRecord {
        id: uuid::Uuid::now_v7(),
        kind: "ping".into(),
        queue: "ping".into(),
        state: shared::queue::JobState::Dead,
        attempts: 1,
        max_attempts: 1,
        priority: 0,
        run_at: None,
        errors: Vec::new(),
        last_error: Some("boom".into()),
        payload: Some(json!({})),
        progress: None,
        result: None,
        project_id: Some(app.project_id()),
        request_id: None,
        worker: None,
        created_at: Some(finished_at),
        started_at: Some(finished_at),
        finished_at: Some(finished_at),
    };
    let write = |job: shared::queue::JobRecord| {
        let pool = app.env.pool.clone();
        async move {
            shared::db::job_archive::write(&pool, &[&job], &[], Duration::from_secs(60), None)
                .await
                .expect("write")
        }
    };
    let messages = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT payload->>'event' FROM job_outbox WHERE queue = 'job_webhook' \
             AND project_id = $1 ORDER BY job_id",
        )
        .bind(app.project_id())
        .fetch_all(&app.env.pool)
        .await
        .expect("outbox")
    };
    assert_eq!(write(job.clone()).await.messages, 1);
    assert_eq!(
        write(job.clone()).await.messages,
        0,
        "the same finish again"
    );
    assert_eq!(messages().await, ["job.dead"]);
    // retried and completed later: a new finish, told
    job.state = shared::queue::JobState::Completed;
    job.last_error = None;
    job.attempts = 2;
    job.finished_at = Some(finished_at + chrono::Duration::seconds(5));
    assert_eq!(write(job.clone()).await.messages, 1);
    assert_eq!(messages().await, ["job.dead", "job.completed"]);
    app.cleanup().await;
}

#[tokio::test]
async fn a_project_at_its_open_jobs_quota_is_sent_no_job_messages_until_it_has_room() {
    use shared::jobs::{EnqueueOptions, Job as _, Ping};
    let receiver = Receiver::start().await;
    let mut app = TestApp::spawn_with(|s| s.queue.max_open_per_project = 3).await;
    let token = app.admin_token();
    app.endpoint(
        &token,
        &subscribing(&receiver.url("/ok"), &["job.completed"], &[], false),
    )
    .await;
    let project = app.project_id();
    let ping = |run_at| {
        let opts = EnqueueOptions {
            run_at,
            ..EnqueueOptions::default()
        };
        Ping::new(project).to_new_job(opts).expect("a job")
    };
    // three jobs wait for later: with the one that runs now the project is past its quota, and
    // once that one completes it is at it, with no room for a message
    let later_at = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    let waiting: Vec<_> = (0..3).map(|_| ping(later_at)).collect();
    app.env
        .queues
        .push_many("ping", &waiting)
        .await
        .expect("pushed");
    let first = ping(None);
    app.env.queues.push(&first).await.expect("pushed");
    app.start_worker().await;
    app.wait_for_state(&first.id.to_string(), "completed").await;
    // archived without a message
    shared::testing::eventually(Duration::from_secs(30), "the job archived", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM job_archive WHERE job_id = $1")
            .bind(first.id)
            .fetch_one(&app.env.pool)
            .await
            .expect("count");
        (n == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.received().is_empty(), "a message past the quota");

    // room again: the next completion is told
    for job in &waiting {
        let resp = app.cancel_job(&job.id.to_string(), &token).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let second = ping(None);
    app.env.queues.push(&second).await.expect("pushed");
    let got = shared::testing::eventually(Duration::from_secs(30), "the message", || async {
        let got = receiver.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        body_of(&got[0])["data"]["job"]["jobId"],
        second.id.to_string()
    );
    app.cleanup().await;
}
