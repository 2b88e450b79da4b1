//! An endpoint whose deliveries keep failing for `WEBHOOK_DISABLE_AFTER_SECS` is disabled, with
//! an audit entry and a `system` notification to the project's ACTIVE webhook managers, in one
//! transaction; a success ends the streak.

use std::time::Duration;

use chrono::Utc;
use shared::db::webhook_endpoints::{self, DISABLED_ACTION};
use uuid::Uuid;

use crate::helpers::{TestApp, endpoint_body};

const PERIOD: Duration = Duration::from_secs(60);

async fn record(
    app: &TestApp,
    id: Uuid,
    success: bool,
    at_secs: i64,
    base: chrono::DateTime<Utc>,
) -> webhook_endpoints::Recorded {
    webhook_endpoints::record_result(
        &app.env.pool,
        app.project_id(),
        id,
        success,
        base + chrono::Duration::seconds(at_secs),
        PERIOD,
    )
    .await
    .expect("record")
}

#[tokio::test]
async fn a_failing_streak_longer_than_the_period_disables_audits_and_notifies_the_managers() {
    let app = TestApp::spawn().await;
    let project = app.project_id();
    let admin = app.active_user(project, "admin@x.test", "admin").await;
    let member = app.active_user(project, "member@x.test", "member").await;
    let gone = app.active_user(project, "gone@x.test", "admin").await;
    sqlx::query("UPDATE users SET status = 'DEACTIVATED' WHERE user_id = $1")
        .bind(gone)
        .execute(&app.env.pool)
        .await
        .unwrap();
    let other = app.env.other_project("other").await;
    let _their_admin = app.active_user(other, "admin@other.test", "admin").await;

    let token = app.admin_token();
    let ep = app
        .endpoint(&token, &endpoint_body("https://hooks.example.com/", &[]))
        .await;
    let id: Uuid = ep["id"].as_str().unwrap().parse().unwrap();
    let t0 = Utc::now();

    // a failure, then a success: the streak ends
    assert!(!record(&app, id, false, 0, t0).await.disabled);
    assert!(!record(&app, id, true, 10, t0).await.disabled);
    assert!(
        !record(&app, id, false, 80, t0).await.disabled,
        "a new streak starts at 80 s"
    );
    let mut conn = app.env.pool.acquire().await.unwrap();
    let row = webhook_endpoints::find(&mut conn, project, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.failing_since.map(|t| t.timestamp()),
        Some((t0 + chrono::Duration::seconds(80)).timestamp())
    );
    assert!(row.last_success_at.is_some() && row.enabled);

    // still failing 59 s into the streak: kept; at 60 s: disabled
    assert!(!record(&app, id, false, 139, t0).await.disabled);
    let r = record(&app, id, false, 140, t0).await;
    assert!(r.disabled);
    let notification = r.notification_id.expect("a notification");
    // a later failure (another worker's, say) does not disable or notify twice
    let again = record(&app, id, false, 141, t0).await;
    assert_eq!(again, webhook_endpoints::Recorded::default());

    let row = webhook_endpoints::find(&mut conn, project, id)
        .await
        .unwrap()
        .unwrap();
    assert!(!row.enabled);
    assert!(
        row.disabled_reason.as_deref().unwrap().contains("60 s"),
        "{row:?}"
    );
    assert!(
        webhook_endpoints::matching(&app.env.pool, project, "a.b")
            .await
            .unwrap()
            .is_empty()
    );

    let (kind, dedupe, data, channels): (String, String, serde_json::Value, Vec<String>) =
        sqlx::query_as(
            "SELECT kind, dedupe_key, data, channels FROM notifications
             WHERE project_id = $1 AND notification_id = $2",
        )
        .bind(project)
        .bind(notification)
        .fetch_one(&app.env.pool)
        .await
        .unwrap();
    assert_eq!(kind, "system");
    let since = (t0 + chrono::Duration::seconds(80)).timestamp();
    assert_eq!(dedupe, format!("webhook-disabled:{id}:{since}"));
    assert_eq!(data["endpointId"], id.to_string());
    assert_eq!(data["host"], "hooks.example.com");
    assert_eq!(channels, ["inApp"]);
    let recipients: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM notification_recipients WHERE project_id = $1 AND notification_id = $2",
    )
    .bind(project)
    .bind(notification)
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(
        recipients,
        [admin],
        "only ACTIVE holders of webhooks:manage (not {member}, {gone})"
    );

    let audit = app
        .audit_logs(&token, &format!("?action={DISABLED_ACTION}"))
        .await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["data"][0]["targetId"], id.to_string());

    // enabling it again clears the disabling and the streak
    let path = format!("/api/v1/webhook-endpoints/{id}");
    let put = crate::helpers::json_with_status(
        crate::helpers::send(
            app.authed(reqwest::Method::PUT, &path, &token)
                .json(&endpoint_body("https://hooks.example.com/", &[])),
        )
        .await,
        reqwest::StatusCode::OK,
    )
    .await;
    assert_eq!(put["data"]["enabled"], true);
    assert!(put["data"]["failingSince"].is_null() && put["data"]["disabledAt"].is_null());
}

#[tokio::test]
async fn matching_selects_enabled_endpoints_whose_filter_selects_the_type() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let all = app
        .endpoint(&token, &endpoint_body("https://a.example.com/", &[]))
        .await;
    let billing = app
        .endpoint(
            &token,
            &endpoint_body("https://b.example.com/", &["billing.*"]),
        )
        .await;
    let exact = app
        .endpoint(
            &token,
            &endpoint_body("https://c.example.com/", &["transfer.failed"]),
        )
        .await;
    let mut off = endpoint_body("https://d.example.com/", &[]);
    off["enabled"] = serde_json::json!(false);
    app.endpoint(&token, &off).await;
    let ids = |v: Vec<webhook_endpoints::Endpoint>| -> Vec<String> {
        v.into_iter().map(|e| e.endpoint_id.to_string()).collect()
    };
    let pool = &app.env.pool;
    let p = app.project_id();
    assert_eq!(
        ids(webhook_endpoints::matching(pool, p, "billing.paid")
            .await
            .unwrap()),
        [all["id"].as_str().unwrap(), billing["id"].as_str().unwrap()]
    );
    assert_eq!(
        ids(webhook_endpoints::matching(pool, p, "transfer.failed")
            .await
            .unwrap()),
        [all["id"].as_str().unwrap(), exact["id"].as_str().unwrap()]
    );
    let other = app.env.other_project("other").await;
    assert!(
        webhook_endpoints::matching(pool, other, "billing.paid")
            .await
            .unwrap()
            .is_empty()
    );
}
