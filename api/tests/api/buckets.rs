//! Transfer buckets: CRUD, validation of exact amounts against the currency, permissions and
//! tenancy, concurrent movements, idempotency keys, the low-balance hysteresis through the real
//! event pipeline, and `bucket_monitor` catching stale state exactly once.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::jobs::{BucketMonitor, Job as _};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, json_with_status, rule_body};

fn usd(name: &str, balance: &str, threshold: &str) -> Value {
    json!({"name": name, "currency": "USD", "initialBalance": balance,
           "lowBalanceThreshold": threshold})
}

fn debit(amount: &str, key: &str) -> Value {
    json!({"type": "debit", "amount": amount, "idempotencyKey": key})
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.env.pool)
        .await
        .expect("a count")
}

async fn low_balance_events(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT payload FROM events WHERE type = 'bucket.low_balance' ORDER BY event_id",
    )
    .fetch_all(&app.env.pool)
    .await
    .expect("events")
}

#[tokio::test]
async fn buckets_are_created_read_listed_filtered_and_audited() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let ops = app
        .bucket(&token, &usd("  Ops float ", "1500.5", "100"))
        .await;
    assert_eq!(ops["name"], "Ops float", "trimmed");
    assert_eq!(ops["currency"], "USD");
    assert_eq!(ops["balance"], "1500.50", "at the currency's minor units");
    assert_eq!(ops["lowBalanceThreshold"], "100.00");
    assert_eq!(ops["rearmMargin"], "0.00");
    assert_eq!(ops["allowNegative"], false);
    assert_eq!(ops["alerting"], false);
    assert_eq!(ops["alertCount"], 0);
    let yen = app
        .bucket(
            &token,
            &json!({"name": "Tokyo", "currency": "JPY", "initialBalance": "5000",
                    "lowBalanceThreshold": "10000", "rearmMargin": "500"}),
        )
        .await;
    assert_eq!(yen["balance"], "5000");
    assert_eq!(yen["alerting"], true, "opened below its threshold");
    let dinar = app
        .bucket(
            &token,
            &json!({"name": "Kuwait", "currency": "KWD", "initialBalance": "1.5",
                    "lowBalanceThreshold": "0.125"}),
        )
        .await;
    assert_eq!(dinar["balance"], "1.500");
    assert_eq!(dinar["lowBalanceThreshold"], "0.125");

    let read = app.bucket_now(&token, &id_of(&ops)).await;
    assert_eq!(read, ops);
    let dup = app.create_bucket(&token, &usd("Ops float", "0", "0")).await;
    assert_error(dup, StatusCode::CONFLICT, "conflict").await;

    let names = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|b| b["name"].as_str().expect("a name").to_owned())
            .collect()
    };
    let list = |q: &'static str| {
        let app = &app;
        let token = token.clone();
        async move { json_with_status(app.list_buckets(&token, q).await, StatusCode::OK).await }
    };
    assert_eq!(names(&list("").await), ["Ops float", "Tokyo", "Kuwait"]);
    assert_eq!(names(&list("?currency=JPY").await), ["Tokyo"]);
    assert_eq!(
        names(&list("?currency=").await).len(),
        3,
        "empty: no filter"
    );
    assert_eq!(names(&list("?belowThreshold=true").await), ["Tokyo"]);
    assert_eq!(
        names(&list("?alerting=false").await),
        ["Ops float", "Kuwait"]
    );
    assert_eq!(names(&list("?search=KYO").await), ["Tokyo"]);
    assert_eq!(names(&list("?search=%25").await), Vec::<String>::new());
    let first = list("?limit=2").await;
    assert_eq!(names(&first), ["Ops float", "Tokyo"]);
    let cursor = first["meta"]["nextCursor"].as_str().expect("a cursor");
    let rest = json_with_status(
        app.list_buckets(&token, &format!("?limit=2&after={cursor}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(names(&rest), ["Kuwait"]);
    assert!(rest["meta"]["nextCursor"].is_null());
    let bad = app.list_buckets(&token, "?currency=XXX&after=nope").await;
    let err = assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> = err["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["currency", "after"]);

    let audited = scalar(
        &app,
        "SELECT count(*) FROM audit_log WHERE action = 'bucket.created'",
    )
    .await;
    assert_eq!(audited, 3);
}

#[tokio::test]
async fn bad_bodies_get_422_naming_every_invalid_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    for (body, fields) in [
        (json!({}), vec!["name", "currency", "lowBalanceThreshold"]),
        (
            json!({"name": "a\u{0}b", "currency": "XXX", "initialBalance": "1e3",
                   "lowBalanceThreshold": "-1", "rearmMargin": "1,5"}),
            vec![
                "name",
                "currency",
                "initialBalance",
                "lowBalanceThreshold",
                "rearmMargin",
            ],
        ),
        (
            json!({"name": "x", "currency": "USD", "initialBalance": "1.234",
                   "lowBalanceThreshold": "0.001"}),
            vec!["initialBalance", "lowBalanceThreshold"],
        ),
        (
            json!({"name": "x", "currency": "JPY", "initialBalance": "1.5",
                   "lowBalanceThreshold": "1"}),
            vec!["initialBalance"],
        ),
        (
            json!({"name": "x", "currency": "USD", "initialBalance": "-5",
                   "lowBalanceThreshold": "1"}),
            vec!["initialBalance"],
        ),
        (
            json!({"name": "x", "currency": "USD", "initialBalance": 10.5,
                   "lowBalanceThreshold": 1}),
            vec!["initialBalance", "lowBalanceThreshold"],
        ),
        (
            json!({"name": "   ", "currency": "usd", "lowBalanceThreshold": "1", "extra": 1}),
            vec!["extra", "name", "currency"],
        ),
    ] {
        let resp = app.create_bucket(&token, &body).await;
        let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let mut got: Vec<&str> = err["details"]
            .as_array()
            .expect("details")
            .iter()
            .map(|d| d["field"].as_str().expect("field"))
            .collect();
        got.dedup();
        let (mut got_sorted, mut want) = (got.clone(), fields.clone());
        got_sorted.sort_unstable();
        want.sort_unstable();
        assert_eq!(got_sorted, want, "{body}: {err}");
    }
    let err = assert_error(
        app.create_bucket(
            &token,
            &json!({"name": "x", "currency": "USD", "lowBalanceThreshold": "0.001"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        err["details"][0]["message"],
        "has 3 decimal places; USD allows at most 2"
    );
    // a negative opening balance is fine where negative balances are
    let overdraft = app
        .bucket(
            &token,
            &json!({"name": "overdraft", "currency": "USD", "initialBalance": "-5",
                    "lowBalanceThreshold": "0", "allowNegative": true}),
        )
        .await;
    assert_eq!(overdraft["balance"], "-5.00");
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM transfer_buckets").await,
        1
    );

    let id = id_of(&overdraft);
    for (body, fields) in [
        (json!({}), vec!["type", "amount", "idempotencyKey"]),
        (
            json!({"type": "refund", "amount": "0", "idempotencyKey": "",
                   "reference": "r\u{0}"}),
            vec!["type", "amount", "idempotencyKey", "reference"],
        ),
        (
            json!({"type": "debit", "amount": "-1", "idempotencyKey": "k"}),
            vec!["amount"],
        ),
        (
            json!({"type": "debit", "amount": "1.001", "idempotencyKey": "k"}),
            vec!["amount"],
        ),
        (
            json!({"type": "credit", "amount": "1000000000000000", "idempotencyKey": "k"}),
            vec!["amount"],
        ),
    ] {
        let resp = app.move_balance(&token, &id, &body).await;
        let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let mut got: Vec<&str> = err["details"]
            .as_array()
            .expect("details")
            .iter()
            .map(|d| d["field"].as_str().expect("field"))
            .collect();
        got.sort_unstable();
        let mut want = fields.clone();
        want.sort_unstable();
        assert_eq!(got, want, "{body}: {err}");
    }
    // the largest balance is bounded: a credit past 10^15 is refused on `amount`
    app.moved(&token, &id, "credit", "999999999999999").await;
    let err = assert_error(
        app.move_balance(
            &token,
            &id,
            &json!({"type": "credit", "amount": "10", "idempotencyKey": "big"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(err["details"][0]["field"], "amount");
    let threshold = app
        .set_threshold(
            &token,
            &id,
            &json!({"lowBalanceThreshold": "1.005", "rearmMargin": "x"}),
        )
        .await;
    let err = assert_error(
        threshold,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(err["details"][0]["field"], "rearmMargin");
    let threshold = app
        .set_threshold(
            &token,
            &id,
            &json!({"lowBalanceThreshold": "1.005", "rearmMargin": "0.001"}),
        )
        .await;
    let err = assert_error(
        threshold,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = err["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["lowBalanceThreshold", "rearmMargin"]);
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM bucket_transactions").await,
        1
    );
}

#[tokio::test]
async fn permissions_are_checked_and_another_projects_bucket_is_not_found() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token();
    let b = app.bucket(&admin, &usd("ops", "10", "1")).await;
    let id = id_of(&b);

    let reader = app.token(&["buckets:read"]);
    assert_eq!(app.bucket_now(&reader, &id).await["id"], b["id"]);
    for resp in [
        app.create_bucket(&reader, &usd("x", "1", "1")).await,
        app.move_balance(&reader, &id, &debit("1", "k")).await,
        app.set_threshold(&reader, &id, &json!({"lowBalanceThreshold": "1"}))
            .await,
    ] {
        assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let nobody = app.token(&["jobs:read"]);
    for resp in [
        app.list_buckets(&nobody, "").await,
        app.get_bucket(&nobody, &id).await,
        app.list_movements(&nobody, &id, "").await,
    ] {
        assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    }
    assert!(shared::permissions::of_default_role("member").contains(&"buckets:read"));
    assert!(!shared::permissions::of_default_role("member").contains(&"buckets:write"));
    assert!(shared::permissions::of_default_role("admin").contains(&"buckets:write"));

    let other = app.env.other_project("other").await;
    let theirs = app.admin_token_for(other);
    for resp in [
        app.get_bucket(&theirs, &id).await,
        app.list_movements(&theirs, &id, "").await,
        app.move_balance(&theirs, &id, &debit("1", "k")).await,
        app.set_threshold(&theirs, &id, &json!({"lowBalanceThreshold": "1"}))
            .await,
    ] {
        assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    }
    let listed = json_with_status(app.list_buckets(&theirs, "").await, StatusCode::OK).await;
    assert_eq!(listed["data"], json!([]));
    // their bucket of the same name is theirs
    app.bucket(&theirs, &usd("ops", "0", "0")).await;
    assert_eq!(app.bucket_now(&admin, &id).await["balance"], "10.00");
}

#[tokio::test]
async fn a_hundred_concurrent_debits_leave_the_exact_balance() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let id = id_of(&app.bucket(&token, &usd("float", "100.00", "0")).await);
    let tiny = id_of(&app.bucket(&token, &usd("tiny", "50", "0")).await);

    let debits = (0..100).map(|i| {
        let (app, token, id) = (&app, &token, &id);
        async move {
            app.move_balance(token, id, &debit("0.37", &format!("d-{i}")))
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(debits).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert_eq!(app.bucket_now(&token, &id).await["balance"], "63.00");

    // 100 debits of 1.00 from 50.00: exactly 50 go through, the rest are refused
    let debits = (0..100).map(|i| {
        let (app, token, tiny) = (&app, &token, &tiny);
        async move {
            app.move_balance(token, tiny, &debit("1", &format!("t-{i}")))
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(debits).await;
    let ok = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, refused), (50, 50), "{statuses:?}");
    assert_eq!(app.bucket_now(&token, &tiny).await["balance"], "0.00");
    let resp = app
        .move_balance(&token, &tiny, &debit("0.01", "last"))
        .await;
    let err = assert_error(resp, StatusCode::CONFLICT, "insufficient_funds").await;
    assert!(
        err["message"]
            .as_str()
            .expect("message")
            .contains("0.00 USD")
    );

    // every movement is recorded once, with the balance after it
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT balance_after::text FROM bucket_transactions t JOIN transfer_buckets b \
         USING (project_id, bucket_id) WHERE b.name = 'float' ORDER BY balance_after DESC",
    )
    .fetch_all(&app.env.pool)
    .await
    .expect("rows");
    assert_eq!(rows.len(), 100);
    let distinct: HashSet<_> = rows.iter().collect();
    assert_eq!(distinct.len(), 100, "each movement saw the one before it");
    let all = json_with_status(
        app.list_movements(&token, &id, "?limit=100&type=debit")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(100));
    assert_eq!(all["data"][99]["balanceAfter"], "63.00");
    assert_eq!(all["data"][0]["amount"], "0.37");
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_first_movement_and_a_different_body_is_a_409() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let id = id_of(&app.bucket(&token, &usd("float", "100", "0")).await);
    let body = json!({"type": "debit", "amount": "5", "reference": "inv-7",
                      "idempotencyKey": "pay-1"});

    let first = app.move_balance(&token, &id, &body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = json_with_status(first, StatusCode::CREATED).await["data"].clone();
    assert_eq!(first["balanceAfter"], "95.00");
    assert_eq!(first["reference"], "inv-7");

    // the same movement written differently ("5.00") is the same movement
    let mut same = body.clone();
    same["amount"] = json!("5.00");
    let again = app.move_balance(&token, &id, &same).await;
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again = json_with_status(again, StatusCode::CREATED).await["data"].clone();
    assert_eq!(again, first, "the original result");
    // ten at once with the same key: applied once
    let repeats = (0..10).map(|_| {
        let (app, token, id, body) = (&app, &token, &id, &body);
        async move { app.move_balance(token, id, body).await.status() }
    });
    let statuses = futures::future::join_all(repeats).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert_eq!(app.bucket_now(&token, &id).await["balance"], "95.00");

    for changed in [
        json!({"type": "debit", "amount": "6", "reference": "inv-7", "idempotencyKey": "pay-1"}),
        json!({"type": "credit", "amount": "5", "reference": "inv-7", "idempotencyKey": "pay-1"}),
        json!({"type": "debit", "amount": "5", "idempotencyKey": "pay-1"}),
    ] {
        let resp = app.move_balance(&token, &id, &changed).await;
        assert_error(resp, StatusCode::CONFLICT, "conflict").await;
    }
    assert_eq!(app.bucket_now(&token, &id).await["balance"], "95.00");
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM bucket_transactions").await,
        1
    );
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM audit_log WHERE action = 'bucket.debited'"
        )
        .await,
        1
    );
    // the key is per bucket: another bucket's movement may use it
    let other = id_of(&app.bucket(&token, &usd("other", "10", "0")).await);
    let theirs = app.move_balance(&token, &other, &body).await;
    json_with_status(theirs, StatusCode::CREATED).await;
}

#[tokio::test]
async fn a_bucket_that_crosses_hovers_and_recrosses_alerts_exactly_twice_through_the_pipeline() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let project = app.project_id();
    let admin_role = app.role_id(project, "admin").await.to_string();
    let ada = app.active_user(project, "ada@example.com", "admin").await;
    let mut rule = rule_body(
        "low balance",
        &["bucket.low_balance"],
        Some(r#"event.payload.currency == "USD""#),
        &[admin_role],
    );
    rule["title"] = json!("{{ event.payload.name }} is at {{ event.payload.balance }}");
    let rule_id = app.rule(&token, &rule).await;
    let b = app
        .bucket(
            &token,
            &json!({"name": "float", "currency": "USD", "initialBalance": "150",
                    "lowBalanceThreshold": "100", "rearmMargin": "10"}),
        )
        .await;
    let id = id_of(&b);

    let steps = [
        ("debit", "60", "90.00", true),       // crosses: alert 1
        ("credit", "15", "105.00", true),     // above the threshold, within the margin
        ("debit", "10", "95.00", true),       // below again, still alerting: nothing
        ("credit", "10", "105.00", true),     // hovering
        ("credit", "10.01", "115.01", false), // above threshold + margin: re-armed
        ("debit", "15.01", "100.00", false),  // at the threshold: not below
        ("debit", "0.01", "99.99", true),     // crosses again: alert 2
        ("debit", "50", "49.99", true),       // further down: nothing
    ];
    for (kind, amount, balance, alerting) in steps {
        let t = app.moved(&token, &id, kind, amount).await;
        assert_eq!(t["balanceAfter"], balance, "{kind} {amount}");
        let now = app.bucket_now(&token, &id).await;
        assert_eq!(now["alerting"], alerting, "{kind} {amount}: {now}");
    }
    assert_eq!(app.bucket_now(&token, &id).await["alertCount"], 2);
    let drained = app.run_pending_jobs().await;
    assert_eq!(drained.of_kind("process_event").len(), 2);

    let events = low_balance_events(&app).await;
    assert_eq!(
        events,
        [
            json!({"bucketId": id, "name": "float", "balance": "90.00",
                   "threshold": "100.00", "currency": "USD"}),
            json!({"bucketId": id, "name": "float", "balance": "99.99",
                   "threshold": "100.00", "currency": "USD"}),
        ]
    );
    let notes: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT n.title, r.user_id FROM notifications n \
         JOIN notification_recipients r USING (project_id, notification_id) \
         WHERE n.rule_id = $1 ORDER BY n.title",
    )
    .bind(Uuid::parse_str(&rule_id).expect("uuid"))
    .fetch_all(&app.env.pool)
    .await
    .expect("notifications");
    assert_eq!(
        notes,
        [
            ("float is at 90.00".to_owned(), ada),
            ("float is at 99.99".to_owned(), ada)
        ]
    );
    // a monitor run afterwards finds nothing to change
    BucketMonitor::platform()
        .enqueue_now(&app.env.queues, Default::default())
        .await
        .expect("enqueue");
    let drained = app.run_pending_jobs().await;
    let run = drained.of_kind("bucket_monitor");
    assert_eq!(run.len(), 1);
    assert_eq!(
        run[0].result.as_ref().map(|r| r["changed"].clone()),
        Some(json!(0))
    );
    assert_eq!(low_balance_events(&app).await.len(), 2);
}

#[tokio::test]
async fn a_threshold_change_applies_the_state_at_once_and_is_audited() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let id = id_of(&app.bucket(&token, &usd("float", "50", "10")).await);
    let raised = app
        .set_threshold(
            &token,
            &id,
            &json!({"lowBalanceThreshold": "60", "rearmMargin": "5"}),
        )
        .await;
    let b = json_with_status(raised, StatusCode::OK).await["data"].clone();
    assert_eq!(b["lowBalanceThreshold"], "60.00");
    assert_eq!(b["rearmMargin"], "5.00");
    assert_eq!(b["alerting"], true);
    assert!(b["alertingSince"].is_string());
    // lowered to just under the balance: within the margin, still alerting
    let b = json_with_status(
        app.set_threshold(&token, &id, &json!({"lowBalanceThreshold": "49"}))
            .await,
        StatusCode::OK,
    )
    .await["data"]
        .clone();
    assert_eq!(
        (b["alerting"].clone(), b["rearmMargin"].clone()),
        (json!(true), json!("5.00"))
    );
    let b = json_with_status(
        app.set_threshold(&token, &id, &json!({"lowBalanceThreshold": "40"}))
            .await,
        StatusCode::OK,
    )
    .await["data"]
        .clone();
    assert_eq!(b["alerting"], false, "re-armed");
    assert!(b["alertingSince"].is_null());
    app.run_pending_jobs().await;
    assert_eq!(low_balance_events(&app).await.len(), 1);
    let audited = scalar(
        &app,
        "SELECT count(*) FROM audit_log WHERE action = 'bucket.threshold_changed'",
    )
    .await;
    assert_eq!(audited, 3);
}

/// Makes buckets' state stale behind the API's back: B's threshold raised over its balance, C's
/// balance dropped under its threshold, D (alerting) credited far above it; A stays in order.
async fn stale_by_sql(app: &TestApp, token: &str) -> [String; 4] {
    let a = id_of(&app.bucket(token, &usd("a", "500", "10")).await);
    let b = id_of(&app.bucket(token, &usd("b", "50", "10")).await);
    let c = id_of(&app.bucket(token, &usd("c", "50", "10")).await);
    let d = id_of(&app.bucket(token, &usd("d", "5", "10")).await);
    for (sql, id) in [
        (
            "UPDATE transfer_buckets SET low_threshold = 100 WHERE bucket_id = $1",
            &b,
        ),
        (
            "UPDATE transfer_buckets SET balance = 9.99 WHERE bucket_id = $1",
            &c,
        ),
        (
            "UPDATE transfer_buckets SET balance = 1000 WHERE bucket_id = $1",
            &d,
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::parse_str(id).expect("uuid"))
            .execute(&app.env.pool)
            .await
            .expect("stale by SQL");
    }
    [a, b, c, d]
}

#[tokio::test]
async fn the_monitor_catches_sql_changes_exactly_once_even_run_twice_at_once() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let [a, b, c, d] = stale_by_sql(&app, &token).await;
    let a_before = app.bucket_now(&token, &a).await;
    assert_eq!(low_balance_events(&app).await.len(), 1, "d opened below");

    let ctx = app.job_context();
    let job = BucketMonitor::platform();
    let (one, two) = tokio::join!(
        comet_worker::jobs::bucket_monitor::sweep(&ctx, &job, None),
        comet_worker::jobs::bucket_monitor::sweep(&ctx, &job, None),
    );
    let (one, two) = (one.expect("sweep"), two.expect("sweep"));
    assert_eq!(one.changed + two.changed, 3, "{one:?} {two:?}");
    assert_eq!(one.alerted + two.alerted, 2);
    assert_eq!(one.rearmed + two.rearmed, 1);
    let again = comet_worker::jobs::bucket_monitor::sweep(&ctx, &job, None)
        .await
        .expect("sweep");
    assert_eq!(again.changed, 0);

    assert_eq!(app.bucket_now(&token, &b).await["alerting"], true);
    assert_eq!(app.bucket_now(&token, &c).await["alerting"], true);
    assert_eq!(app.bucket_now(&token, &d).await["alerting"], false);
    assert_eq!(
        app.bucket_now(&token, &a).await,
        a_before,
        "a bucket in order is not written"
    );
    let events = low_balance_events(&app).await;
    let mut swept: Vec<(&str, &str)> = events[1..]
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name"),
                e["balance"].as_str().expect("balance"),
            )
        })
        .collect();
    swept.sort_unstable();
    assert_eq!(swept, [("b", "50.00"), ("c", "9.99")]);

    // as a queued job, with its project scope: nothing left to do
    BucketMonitor {
        project_id: app.project_id(),
    }
    .enqueue_now(&app.env.queues, Default::default())
    .await
    .expect("enqueue");
    let drained = app.run_pending_jobs().await;
    assert_eq!(drained.of_kind("process_event").len(), 3);
    let run = drained.of_kind("bucket_monitor");
    assert_eq!(run.len(), 1);
    assert_eq!(
        run[0].result.as_ref().map(|r| r["changed"].clone()),
        Some(json!(0))
    );
    assert_eq!(low_balance_events(&app).await.len(), 3);
}

#[tokio::test]
async fn a_sweep_and_movements_at_once_raise_each_crossing_once() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    // twenty buckets made stale by SQL (below their threshold, not alerting) while debits hit
    // them through the API and two sweeps run
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(id_of(
            &app.bucket(&token, &usd(&format!("b{i}"), "100", "10"))
                .await,
        ));
    }
    sqlx::query("UPDATE transfer_buckets SET balance = 5")
        .execute(&app.env.pool)
        .await
        .expect("stale");
    let ctx = app.job_context();
    let job = BucketMonitor::platform();
    let debits = ids.iter().map(|id| {
        let (app, token) = (&app, &token);
        async move { app.moved(token, id, "debit", "1").await }
    });
    let (_, one, two) = tokio::join!(
        futures::future::join_all(debits),
        comet_worker::jobs::bucket_monitor::sweep(&ctx, &job, None),
        comet_worker::jobs::bucket_monitor::sweep(&ctx, &job, None),
    );
    one.expect("sweep");
    two.expect("sweep");
    let events = low_balance_events(&app).await;
    assert_eq!(events.len(), 20, "one crossing each, whoever saw it");
    let buckets: HashSet<&str> = events
        .iter()
        .map(|e| e["bucketId"].as_str().expect("id"))
        .collect();
    assert_eq!(buckets.len(), 20);
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM transfer_buckets WHERE alerting AND alert_seq = 1"
        )
        .await,
        20
    );
}
