//! Rules: validation and compilation at save (with positions), CRUD with audit diffs, the test
//! endpoint, and tenancy.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, error_fields, json_with_status, rule_body};

#[tokio::test]
async fn conditions_and_templates_that_do_not_compile_are_422_with_the_reason_and_position() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let cases = [
        (Some("event.payload.amount >"), None, "condition", "line 1"),
        (
            Some("event.type == \"a\" &&\n  user.admin"),
            None,
            "condition",
            "unknown variable `user`",
        ),
        (
            Some("event.payload.items.all(x, event.payload.items.all(y, x == y))"),
            None,
            "condition",
            "must not nest",
        ),
        (None, Some("{{ event.type"), "title", ""),
        (None, Some("{% include \"x\" %}"), "title", "not allowed"),
    ];
    for (condition, title, field, needle) in cases {
        let mut body = rule_body("r", &["a.b"], condition, &[]);
        if let Some(t) = title {
            body["title"] = json!(t);
        }
        let err = assert_error(
            app.create_rule(&token, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let d = err["details"].as_array().unwrap();
        assert!(
            d.iter()
                .any(|e| e["field"] == field && e["message"].as_str().unwrap().contains(needle)),
            "{body}: {err}"
        );
    }
    // every invalid field at once
    let err = assert_error(
        app.create_rule(
            &token,
            &json!({"eventTypes": [], "channels": ["sms"], "priority": 5000,
                                        "targetRoleIds": [uuid::Uuid::new_v4()]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields = error_fields(&err);
    for f in ["name", "eventTypes", "title", "channels[0]", "priority"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    // a role of another project is refused by index
    let other = app.env.other_project("other").await;
    let foreign = app.role_id(other, "admin").await.to_string();
    let err = assert_error(
        app.create_rule(&token, &rule_body("r", &["a.b"], None, &[foreign]))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(err["details"][0]["field"], "targetRoleIds[0]");
}

#[tokio::test]
async fn rules_are_created_read_replaced_and_deleted_with_audited_diffs() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let role = app.role_id(app.project_id(), "member").await.to_string();
    let id = app
        .rule(
            &token,
            &rule_body(
                "big transfers",
                &["transfer.*"],
                Some("event.payload.amount > 1000"),
                std::slice::from_ref(&role),
            ),
        )
        .await;
    let got = json_with_status(app.get_rule(&token, &id).await, StatusCode::OK).await;
    assert_eq!(got["data"]["eventTypes"], json!(["transfer.*"]));
    assert_eq!(got["data"]["active"], true);

    let mut changed = rule_body(
        "big transfers",
        &["transfer.*"],
        Some("event.payload.amount > 5000"),
        &[role],
    );
    changed["active"] = json!(false);
    changed["suppression"] = json!({"maxFires": 3, "windowSeconds": 60});
    let updated =
        json_with_status(app.update_rule(&token, &id, &changed).await, StatusCode::OK).await;
    assert_eq!(updated["data"]["suppression"]["maxFires"], 3);
    let list = json_with_status(
        app.list_rules(&token, "?active=false").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let list = json_with_status(app.list_rules(&token, "?active=true").await, StatusCode::OK).await;
    assert!(list["data"].as_array().unwrap().is_empty());

    assert_eq!(
        app.delete_rule(&token, &id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        app.get_rule(&token, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.delete_rule(&token, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let audit: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT action, metadata FROM audit_log WHERE action LIKE 'rule.%' ORDER BY at, audit_id",
    )
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["rule.created", "rule.updated", "rule.deleted"]);
    let changes = &audit[1].1["changes"];
    assert_eq!(changes["condition"]["from"], "event.payload.amount > 1000");
    assert_eq!(changes["condition"]["to"], "event.payload.amount > 5000");
    assert_eq!(changes["active"]["to"], false);
    assert!(changes.get("name").is_none(), "{changes}");
}

#[tokio::test]
async fn the_test_endpoint_evaluates_without_storing_anything() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let event = json!({"type": "transfer.failed", "payload": {"amount": 1500}});
    let t = json_with_status(
        app.test_rule(
            &token,
            &json!({"condition": "event.payload.amount > 1000", "event": event}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(t["data"]["matched"], true);
    let t = json_with_status(
        app.test_rule(
            &token,
            &json!({"condition": "event.payload.nope > 1", "event": event}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(t["data"]["matched"], false);
    assert!(t["data"]["error"].as_str().unwrap().contains("nope"));
    assert_error(
        app.test_rule(
            &token,
            &json!({"condition": "event.payload.amount >", "event": event}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    // a stored rule: its types, condition and templates
    let id = app
        .rule(
            &token,
            &rule_body(
                "r",
                &["transfer.*"],
                Some("event.payload.amount > 1000"),
                &[],
            ),
        )
        .await;
    let t = json_with_status(
        app.test_rule(&token, &json!({"ruleId": id, "event": event}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(t["data"]["matched"], true);
    assert_eq!(t["data"]["title"], "transfer.failed: 1500");
    let other_type = json!({"type": "billing.paid", "payload": {"amount": 1500}});
    let t = json_with_status(
        app.test_rule(&token, &json!({"ruleId": id, "event": other_type}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(t["data"]["matched"], false);
    assert_eq!(t["data"]["typeSelected"], false);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.env.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn another_projects_rules_are_not_found_and_not_listed() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let id = app
        .rule(&token, &rule_body("mine", &["a.b"], None, &[]))
        .await;
    let other = app.env.other_project("other").await;
    let theirs = app.admin_token_for(other);
    assert_error(
        app.get_rule(&theirs, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.update_rule(&theirs, &id, &rule_body("x", &["a.b"], None, &[]))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.delete_rule(&theirs, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.test_rule(
            &theirs,
            &json!({"ruleId": id, "event": {"type": "a.b", "payload": {}}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let list = json_with_status(app.list_rules(&theirs, "").await, StatusCode::OK).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    // a member reads rules but cannot write them
    let reader = app.token(&["rule:read"]);
    assert_error(
        app.create_rule(&reader, &rule_body("x", &["a.b"], None, &[]))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}
