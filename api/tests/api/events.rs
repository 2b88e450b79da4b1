//! Events: ingestion with the outbox, idempotency, batches, validation, the project's rate,
//! reading back, and `process_event` turning events into notifications by the rules.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::RateLimit;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, error_fields, json_with_status, rule_body, send};

fn transfer(amount: i64) -> Value {
    json!({"type": "transfer.failed", "source": "bank",
           "payload": {"amount": amount, "currency": "EUR"}})
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.env.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn an_event_and_its_job_are_written_together_and_a_repeated_key_answers_the_first() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let mut body = transfer(1500);
    body["idempotencyKey"] = json!("tx-1");

    let resp = app.send_event(&token, &body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(resp.headers().contains_key("ratelimit-remaining"));
    let first = json_with_status(resp, StatusCode::ACCEPTED).await["data"].clone();
    assert_eq!(first["created"], true);
    let job = first["jobId"].as_str().unwrap();
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].id.to_string(), job);
    assert_eq!(outbox[0].queue, "process_event");
    assert_eq!(outbox[0].payload["eventId"], first["eventId"]);
    assert_eq!(outbox[0].payload["projectId"], app.project_id().to_string());

    let again = app.event(&token, &body).await;
    assert_eq!(again["created"], false);
    assert_eq!(again["eventId"], first["eventId"]);
    assert_eq!(again["jobId"], first["jobId"]);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 1);
    assert_eq!(app.outbox().await.len(), 1);

    // the same key in another project is another event
    let other = app.env.other_project("other").await;
    let theirs = app.event(&app.admin_token_for(other), &body).await;
    assert_eq!(theirs["created"], true);
    assert_ne!(theirs["eventId"], first["eventId"]);
}

/// Single events posted at the same moment are group-committed (one transaction for many
/// requests): each request still gets its own event and job, with its own request id, and a key
/// repeated inside one group answers the first event, as across groups.
#[tokio::test]
async fn concurrent_single_events_each_get_their_own_row_and_job_and_a_shared_key_one_event() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let posts = (0..40).map(|i| {
        let mut body = transfer(i);
        if i % 2 == 0 {
            body["idempotencyKey"] = json!("same-key");
        }
        let (app, token) = (&app, &token);
        async move {
            let resp = send(
                app.authed(reqwest::Method::POST, "/api/v1/events", token)
                    .header("x-request-id", format!("req-{i}"))
                    .json(&body),
            )
            .await;
            (
                i,
                json_with_status(resp, StatusCode::ACCEPTED).await["data"].clone(),
            )
        }
    });
    let answers = futures::future::join_all(posts).await;

    let keyed: Vec<&Value> = answers
        .iter()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(keyed.iter().filter(|a| a["created"] == true).count(), 1);
    assert!(keyed.iter().all(|a| a["eventId"] == keyed[0]["eventId"]));
    let unkeyed: std::collections::HashSet<&str> = answers
        .iter()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, a)| a["eventId"].as_str().expect("id"))
        .collect();
    assert_eq!(unkeyed.len(), 20);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 21);

    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 21, "one job per stored event");
    for (i, a) in answers.iter().filter(|(i, _)| i % 2 == 1) {
        let job = outbox
            .iter()
            .find(|j| j.id.to_string() == a["jobId"].as_str().expect("job id"))
            .expect("the answer's job is in the outbox");
        assert_eq!(job.payload["eventId"], a["eventId"]);
        assert_eq!(job.request_id.as_deref(), Some(format!("req-{i}").as_str()));
    }
}

/// Groups of events without idempotency keys are written by one statement (no explicit
/// transaction): every answer still names its own stored event and its own queued job, with the
/// event's fields, the project's rules version and the request's id; nothing is written twice.
#[tokio::test]
async fn concurrent_keyless_single_events_are_each_stored_with_their_job_in_one_statement() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let posts = (0..48).map(|i| {
        let (app, token) = (&app, &token);
        async move {
            let resp = send(
                app.authed(reqwest::Method::POST, "/api/v1/events", token)
                    .header("x-request-id", format!("keyless-{i}"))
                    .json(&transfer(i)),
            )
            .await;
            (
                i,
                json_with_status(resp, StatusCode::ACCEPTED).await["data"].clone(),
            )
        }
    });
    let answers = futures::future::join_all(posts).await;
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 48);
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 48, "one job per event");
    let version: i64 =
        sqlx::query_scalar("SELECT rules_version FROM projects WHERE project_id = $1")
            .bind(app.project_id())
            .fetch_one(&app.env.pool)
            .await
            .expect("rules version");
    for (i, a) in &answers {
        assert_eq!(a["created"], true);
        let event_id: Uuid = a["eventId"]
            .as_str()
            .expect("event id")
            .parse()
            .expect("uuid");
        let job_id: Uuid = a["jobId"].as_str().expect("job id").parse().expect("uuid");
        let (amount, stored_job, rules_version, project): (i64, Uuid, i64, Uuid) = sqlx::query_as(
            "SELECT (payload->>'amount')::bigint, job_id, rules_version, project_id \
             FROM events WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_one(&app.env.pool)
        .await
        .expect("the answer's event is stored");
        assert_eq!((amount, stored_job, rules_version), (*i, job_id, version));
        assert_eq!(project, app.project_id());
        let job = outbox
            .iter()
            .find(|j| j.id == job_id)
            .expect("the answer's job is in the outbox");
        assert_eq!(job.queue, "process_event");
        assert_eq!(job.payload["eventId"], a["eventId"]);
        assert_eq!(job.payload["projectId"], app.project_id().to_string());
        assert_eq!(
            job.request_id.as_deref(),
            Some(format!("keyless-{i}").as_str())
        );
    }
}

#[tokio::test]
async fn bad_events_get_422_naming_every_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    for (body, fields) in [
        (json!({}), vec!["type", "payload"]),
        (
            json!({"type": "a..b", "payload": []}),
            vec!["type", "payload"],
        ),
        (
            json!({"type": "x", "payload": {"k": "nul\u{0}"}}),
            vec!["payload"],
        ),
        (
            json!({"type": "x", "payload": {}, "source": ""}),
            vec!["source"],
        ),
        (
            json!({"type": "x", "payload": {}, "occurredAt": "9999-01-01T00:00:00Z"}),
            vec!["occurredAt"],
        ),
        (
            json!({"type": "x", "payload": {}, "idempotencyKey": ""}),
            vec!["idempotencyKey"],
        ),
        (
            json!({"type": "x", "payload": {}, "extra": 1}),
            vec!["extra"],
        ),
    ] {
        let err = assert_error(
            app.send_event(&token, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        for f in fields {
            assert!(
                err["details"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["field"] == f),
                "{body} should name {f}: {err}"
            );
        }
    }
    // a payload past EVENT_MAX_PAYLOAD_BYTES
    let big = json!({"type": "x", "payload": {"blob": "x".repeat(70_000)}});
    let err = assert_error(
        app.send_event(&token, &big).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(err["details"][0]["field"], "payload", "{err}");
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 0);
    assert!(app.outbox().await.is_empty());
}

#[tokio::test]
async fn a_batch_accepts_its_valid_events_and_reports_the_others_by_index() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let mut keyed = transfer(1);
    keyed["idempotencyKey"] = json!("same");
    let events = vec![
        transfer(10),
        json!({"type": "bad type", "payload": {}}),
        keyed.clone(),
        keyed,
        json!({"payload": "not an object"}),
    ];
    let body = json_with_status(app.send_batch(&token, &events).await, StatusCode::ACCEPTED).await;
    let data = &body["data"];
    assert_eq!(data["accepted"], 3, "{body}");
    assert_eq!(data["rejected"], 2, "{body}");
    let r = data["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert!(r[0]["eventId"].is_string() && r[0]["created"] == true);
    assert_eq!(r[1]["errors"][0]["field"], "type");
    assert!(
        r[4]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "payload")
    );
    assert!(
        r[4]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "type")
    );
    // the key repeated within the batch: one event, both answers name it
    assert_eq!(r[2]["created"], true);
    assert_eq!(r[3]["created"], false);
    assert_eq!(r[3]["eventId"], r[2]["eventId"]);
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 2);
    assert_eq!(app.outbox().await.len(), 2);

    // nothing valid: 422 naming each event's fields
    let err = assert_error(
        app.send_batch(&token, &[json!({"type": "x"}), json!({"payload": {}})])
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields = error_fields(&err);
    assert_eq!(fields, ["events[0].payload", "events[1].type"]);
    // too many, or none
    let many = vec![transfer(1); 1001];
    assert_error(
        app.send_batch(&token, &many).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_error(
        app.send_batch(&token, &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn past_the_projects_event_rate_ingestion_gets_429_with_rate_limit_headers() {
    let app = TestApp::spawn_with(|s| s.events.per_project = RateLimit::per_secs(5, 60)).await;
    let token = app.admin_token();
    let resp = app.send_batch(&token, &vec![transfer(1); 4]).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["ratelimit-limit"], "5");
    assert_eq!(resp.headers()["ratelimit-remaining"], "1");
    // a batch that does not fit is refused whole
    let resp = app.send_batch(&token, &vec![transfer(1); 2]).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["ratelimit-remaining"], "1");
    app.event(&token, &transfer(1)).await;
    let resp = app.send_event(&token, &transfer(1)).await;
    assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, 5);
    // another project has its own rate
    let other = app.env.other_project("other").await;
    app.event(&app.admin_token_for(other), &transfer(1)).await;
}

#[tokio::test]
async fn events_are_listed_newest_first_with_filters_and_a_cursor() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut e = transfer(i);
        if i % 2 == 0 {
            e["type"] = json!("bucket.low");
            e["source"] = json!("monitor");
        }
        ids.push(
            app.event(&token, &e).await["eventId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let page = json_with_status(app.list_events(&token, "?limit=2").await, StatusCode::OK).await;
    let got: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    let cursor = page["meta"]["nextCursor"].as_str().unwrap().to_owned();
    let next = json_with_status(
        app.list_events(&token, &format!("?limit=2&before={cursor}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(next["data"][0]["id"], ids[2]);

    let low = json_with_status(
        app.list_events(&token, "?type=bucket.low").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(low["data"].as_array().unwrap().len(), 3);
    assert!(low["meta"]["nextCursor"].is_null());
    let bank = json_with_status(
        app.list_events(&token, "?source=bank&processed=false")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(bank["data"].as_array().unwrap().len(), 2);
    let future = json_with_status(
        app.list_events(&token, "?from=2999-01-01T00:00:00Z").await,
        StatusCode::OK,
    )
    .await;
    assert!(future["data"].as_array().unwrap().is_empty());
    let past = json_with_status(
        app.list_events(&token, "?to=2000-01-01T00:00:00Z").await,
        StatusCode::OK,
    )
    .await;
    assert!(past["data"].as_array().unwrap().is_empty());
    for bad in [
        "?limit=0",
        "?limit=101",
        "?before=nope",
        "?type=a..b",
        "?from=yesterday",
    ] {
        assert_error(
            app.list_events(&token, bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }

    // another project sees none of them
    let other = app.env.other_project("other").await;
    let theirs = app.admin_token_for(other);
    let list = json_with_status(app.list_events(&theirs, "").await, StatusCode::OK).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    assert_error(
        app.get_event(&theirs, &ids[0]).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // a reader without events:read is refused
    let no = app.token(&["jobs:read"]);
    assert_error(
        app.list_events(&no, "").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        app.send_event(&no, &transfer(1)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn process_event_notifies_the_active_holders_of_the_matching_rules_roles_once() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let project = app.project_id();
    let admin_role = app.role_id(project, "admin").await.to_string();
    let member_role = app.role_id(project, "member").await.to_string();
    let ada = app.active_user(project, "ada@example.com", "admin").await;
    let bob = app.active_user(project, "bob@example.com", "member").await;
    let eve = app.active_user(project, "eve@example.com", "member").await;
    sqlx::query("UPDATE users SET status = 'DEACTIVATED' WHERE user_id = $1")
        .bind(eve)
        .execute(&app.env.pool)
        .await
        .unwrap();

    let big = app
        .rule(
            &token,
            &rule_body(
                "big",
                &["transfer.*"],
                Some("event.payload.amount > 1000"),
                &[admin_role.clone(), member_role.clone()],
            ),
        )
        .await;
    let eur = app
        .rule(
            &token,
            &rule_body(
                "eur",
                &["transfer.failed"],
                Some(r#"event.payload.currency == "EUR""#),
                std::slice::from_ref(&admin_role),
            ),
        )
        .await;
    // selects the type, never matches
    app.rule(
        &token,
        &rule_body(
            "usd",
            &["transfer.failed"],
            Some(r#"event.payload.currency == "USD""#),
            std::slice::from_ref(&admin_role),
        ),
    )
    .await;
    // another type entirely
    app.rule(
        &token,
        &rule_body(
            "other",
            &["billing.*"],
            None,
            std::slice::from_ref(&admin_role),
        ),
    )
    .await;

    let sent = app.event(&token, &transfer(1500)).await;
    let event_id = sent["eventId"].as_str().unwrap().to_owned();
    app.run_pending_jobs().await;

    let detail = json_with_status(app.get_event(&token, &event_id).await, StatusCode::OK).await;
    let e = &detail["data"];
    assert!(e["processedAt"].is_string(), "{e}");
    let mut matched: Vec<&str> = e["matchedRuleIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    matched.sort_unstable();
    let mut want = vec![big.as_str(), eur.as_str()];
    want.sort_unstable();
    assert_eq!(matched, want);
    assert_eq!(e["notificationCount"], 2);
    // big: ada and bob (eve is deactivated); eur: ada
    assert_eq!(e["recipientCount"], 3);
    assert_eq!(e["job"]["state"], "completed");
    let titles: Vec<&str> = e["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["transfer.failed: 1500", "transfer.failed: 1500"]);
    let recipients: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT n.rule_id, r.user_id FROM notification_recipients r \
         JOIN notifications n USING (project_id, notification_id) ORDER BY 1, 2",
    )
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    assert!(recipients.contains(&(Uuid::parse_str(&big).unwrap(), ada)));
    assert!(recipients.contains(&(Uuid::parse_str(&big).unwrap(), bob)));
    assert!(!recipients.iter().any(|(_, u)| *u == eve));

    // a re-run (a retry after a crash) creates nothing twice
    let mut conn = app.env.pool.acquire().await.unwrap();
    sqlx::query("UPDATE events SET processed_at = NULL")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let job = shared::jobs::ProcessEvent {
        project_id: project,
        event_id: Uuid::parse_str(&event_id).unwrap(),
    };
    use shared::jobs::Job as _;
    job.enqueue_now(&app.env.queues, Default::default())
        .await
        .unwrap();
    app.run_pending_jobs().await;
    assert_eq!(count(&app, "SELECT count(*) FROM notifications").await, 2);
    assert_eq!(
        count(&app, "SELECT count(*) FROM notification_recipients").await,
        3
    );
}

#[tokio::test]
async fn a_rule_created_after_the_cache_was_filled_still_sees_the_next_event() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let token = app.admin_token();
    let admin_role = app.role_id(app.project_id(), "admin").await.to_string();
    app.active_user(app.project_id(), "ada@example.com", "admin")
        .await;
    app.rule(
        &token,
        &rule_body(
            "first",
            &["transfer.failed"],
            None,
            std::slice::from_ref(&admin_role),
        ),
    )
    .await;
    // the worker caches the project's rules while processing this event
    let one = app.event(&token, &transfer(1)).await;
    app.run_pending_jobs().await;
    let second = app
        .rule(
            &token,
            &rule_body(
                "second",
                &["transfer.failed"],
                None,
                std::slice::from_ref(&admin_role),
            ),
        )
        .await;
    let two = app.event(&token, &transfer(2)).await;
    app.run_pending_jobs().await;

    let first_detail = json_with_status(
        app.get_event(&token, one["eventId"].as_str().unwrap())
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first_detail["data"]["notificationCount"], 1);
    let detail = json_with_status(
        app.get_event(&token, two["eventId"].as_str().unwrap())
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(detail["data"]["notificationCount"], 2, "{detail}");
    assert!(
        detail["data"]["matchedRuleIds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &json!(second))
    );
}

#[tokio::test]
async fn an_evaluation_error_is_no_match_and_is_recorded_on_the_rule() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let admin_role = app.role_id(app.project_id(), "admin").await.to_string();
    let rule = app
        .rule(
            &token,
            &rule_body(
                "needs a field",
                &["transfer.failed"],
                Some("event.payload.missing > 1"),
                &[admin_role],
            ),
        )
        .await;
    let sent = app.event(&token, &transfer(5)).await;
    app.run_pending_jobs().await;
    let e = json_with_status(
        app.get_event(&token, sent["eventId"].as_str().unwrap())
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(e["data"]["notificationCount"], 0);
    assert!(e["data"]["processedAt"].is_string());
    let r = json_with_status(app.get_rule(&token, &rule).await, StatusCode::OK).await;
    let last = r["data"]["lastError"]
        .as_str()
        .expect("the rule records its error");
    assert!(last.contains("missing"), "{last}");
    assert!(r["data"]["lastErrorAt"].is_string());
}

#[tokio::test]
async fn a_projects_api_key_sends_and_reads_its_events_and_no_other_projects() {
    let app = TestApp::spawn().await;
    let (_, key) = app.new_api_key(app.project_id(), "sender").await;
    let resp = send(
        app.keyed(reqwest::Method::POST, "/api/v1/events", &key)
            .json(&transfer(7)),
    )
    .await;
    let sent = json_with_status(resp, StatusCode::ACCEPTED).await;
    let id = sent["data"]["eventId"].as_str().unwrap().to_owned();
    let resp = send(app.keyed(reqwest::Method::GET, &format!("/api/v1/events/{id}"), &key)).await;
    let got = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(got["data"]["payload"]["amount"], 7);
    // another project's key finds nothing
    let other = app.env.other_project("other").await;
    let (_, theirs) = app.new_api_key(other, "theirs").await;
    let resp = send(app.keyed(
        reqwest::Method::GET,
        &format!("/api/v1/events/{id}"),
        &theirs,
    ))
    .await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    // a wrong key is a 401
    let resp = send(
        app.keyed(reqwest::Method::POST, "/api/v1/events", "ck_nope_nope")
            .json(&transfer(7)),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn accepted_events_are_relayed_at_once_by_the_wake_after_the_commit_not_the_poll() {
    // the relay's poll would take a minute: only the API's wake after its commit moves the jobs
    let mut app = TestApp::spawn_with(|s| {
        s.worker.outbox_poll = std::time::Duration::from_secs(60);
    })
    .await;
    app.start_worker().await;
    shared::testing::outbox_relay_subscribed(&app.env).await;
    let token = app.admin_token();
    let started = std::time::Instant::now();
    let one = app.event(&token, &transfer(1)).await;
    let resp = app.send_batch(&token, &vec![transfer(2); 3]).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Uuid = one["jobId"].as_str().unwrap().parse().unwrap();
    shared::testing::eventually(
        std::time::Duration::from_secs(5),
        "every job leaves the outbox",
        || async {
            let left = shared::db::outbox::backlog(&app.env.pool).await.ok()?;
            (left == 0).then_some(())
        },
    )
    .await;
    assert!(
        app.env
            .queues
            .job("process_event", job)
            .await
            .unwrap()
            .is_some()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
