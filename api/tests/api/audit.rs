//! The audit log: what the user-management routes record, with request ids; filters,
//! pagination, CSV export, tenant isolation.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, assert_error, json_with_status, request_id_of};

fn actions(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["action"].as_str().expect("an action").to_owned())
        .collect()
}

#[tokio::test]
async fn the_audit_log_lists_what_happened_newest_first_with_request_ids() {
    let app = TestApp::spawn().await;
    let (boss_id, boss) = app.admin("boss@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;
    let invited = app
        .invite(
            &boss,
            &json!({"email": "new@example.com", "roleIds": [member]}),
        )
        .await;
    let invite_request = request_id_of(&invited);
    let invited = json_with_status(invited, StatusCode::ACCEPTED).await;
    let failed = app
        .login(&json!({"email": "boss@example.com", "password": "nope nope"}))
        .await;
    let failed_request = request_id_of(&failed);
    let leaver = app
        .active_user(app.project_id(), "leaver@example.com", "member")
        .await;
    let deactivated = app.deactivate(&boss, &leaver.to_string()).await;
    let deactivate_request = request_id_of(&deactivated);

    let body = app.audit_logs(&boss, "").await;

    assert_eq!(
        actions(&body),
        [
            "user.deactivated",
            "login.failed",
            "invitation.created",
            "login.succeeded"
        ]
    );
    let entries = body["data"].as_array().expect("entries");
    let deactivation = &entries[0];
    assert_eq!(deactivation["requestId"], deactivate_request.as_str());
    assert_eq!(deactivation["actorId"], boss_id.to_string());
    assert_eq!(deactivation["targetType"], "user");
    assert_eq!(deactivation["targetId"], leaver.to_string());
    assert_eq!(deactivation["metadata"]["previousStatus"], "ACTIVE");
    assert_eq!(entries[1]["requestId"], failed_request.as_str());
    assert_eq!(entries[1]["actorId"], Value::Null);
    assert_eq!(entries[1]["targetId"], boss_id.to_string());
    assert_eq!(entries[2]["requestId"], invite_request.as_str());
    assert_eq!(entries[2]["targetId"], invited["data"]["user"]["id"]);
    assert_eq!(
        entries[2]["metadata"]["invitationId"],
        invited["data"]["invitation"]["id"]
    );
    for e in entries {
        assert!(e["id"].is_string() && e["at"].is_string(), "{e}");
    }
    assert_eq!(body["meta"]["pagination"]["total"], 4);
}

#[tokio::test]
async fn the_audit_log_filters_by_action_actor_target_and_time() {
    let app = TestApp::spawn().await;
    let (boss_id, boss) = app.admin("boss@example.com").await;
    let one = app
        .active_user(app.project_id(), "one@example.com", "member")
        .await;
    let two = app
        .active_user(app.project_id(), "two@example.com", "member")
        .await;
    json_with_status(
        app.deactivate(&boss, &one.to_string()).await,
        StatusCode::OK,
    )
    .await;
    let between = chrono::Utc::now();
    json_with_status(
        app.deactivate(&boss, &two.to_string()).await,
        StatusCode::OK,
    )
    .await;

    let deactivations = app.audit_logs(&boss, "?action=user.deactivated").await;
    assert_eq!(deactivations["data"].as_array().map(Vec::len), Some(2));
    let by_boss = app.audit_logs(&boss, &format!("?actor={boss_id}")).await;
    assert_eq!(
        actions(&by_boss),
        ["user.deactivated", "user.deactivated", "login.succeeded"]
    );
    let about_one = app.audit_logs(&boss, &format!("?target={one}")).await;
    assert_eq!(actions(&about_one), ["user.deactivated"]);
    let since = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let later = app
        .audit_logs(
            &boss,
            &format!("?action=user.deactivated&from={}", urlencode(&since)),
        )
        .await;
    assert_eq!(later["data"][0]["targetId"], two.to_string());
    assert_eq!(later["data"].as_array().map(Vec::len), Some(1));
    let earlier = app
        .audit_logs(
            &boss,
            &format!("?action=user.deactivated&to={}", urlencode(&since)),
        )
        .await;
    assert_eq!(earlier["data"][0]["targetId"], one.to_string());
    assert_eq!(earlier["data"].as_array().map(Vec::len), Some(1));
    let page = app.audit_logs(&boss, "?perPage=1&page=2").await;
    assert_eq!(actions(&page), ["user.deactivated"]);
    assert_eq!(page["meta"]["pagination"]["total"], 3);
    assert_eq!(page["meta"]["pagination"]["hasNext"], true);

    for query in [
        "?from=yesterday",
        "?actor=boss",
        "?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
    ] {
        let resp = app.get_audit_logs(&boss, query).await;
        assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn the_audit_log_exports_as_csv_with_the_same_filters() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let leaver = app
        .active_user(app.project_id(), "leaver@example.com", "member")
        .await;
    json_with_status(
        app.deactivate(&boss, &leaver.to_string()).await,
        StatusCode::OK,
    )
    .await;

    let resp = app.export_audit_logs(&boss, "").await;

    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    assert!(
        resp.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("ascii")
            .starts_with("attachment")
    );
    let text = resp.text().await.expect("a body");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().expect("a header row").clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "id",
            "at",
            "action",
            "actorId",
            "targetType",
            "targetId",
            "requestId",
            "metadata"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a row")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(&rows[0][2], "user.deactivated");
    assert_eq!(&rows[0][5], leaver.to_string());
    let metadata: Value = serde_json::from_str(&rows[0][7]).expect("JSON metadata");
    assert_eq!(metadata["previousStatus"], "ACTIVE");
    assert_eq!(&rows[1][2], "login.succeeded");

    let filtered = app
        .export_audit_logs(&boss, "?action=login.succeeded")
        .await;
    let text = filtered.text().await.expect("a body");
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[tokio::test]
async fn the_audit_log_of_another_project_is_invisible() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let other = app.env.other_project("other").await;
    app.active_user(other, "stranger@example.com", "admin")
        .await;
    let stranger = app
        .login(&json!({"email": "stranger@example.com", "password": PASSWORD}))
        .await;
    let stranger = json_with_status(stranger, StatusCode::OK).await;
    let stranger_token = stranger["data"]["accessToken"].as_str().expect("token");

    let ours = app.audit_logs(&boss, "").await;
    let theirs = app.audit_logs(stranger_token, "").await;

    assert_eq!(actions(&ours), ["login.succeeded"]);
    assert_eq!(actions(&theirs), ["login.succeeded"]);
    assert_ne!(ours["data"][0]["id"], theirs["data"][0]["id"]);
    let export = app.export_audit_logs(&boss, "").await;
    assert_eq!(export.text().await.expect("a body").lines().count(), 2);
}
