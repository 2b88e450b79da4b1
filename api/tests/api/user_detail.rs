//! One user (`GET`/`PUT /users/{id}`), the caller's own name (`PUT /users/me`), reactivation,
//! and creating an active user with a password (`POST /users`).

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, assert_error, json_with_status};

fn fields(error: &Value) -> Vec<String> {
    error["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("a field").to_owned())
        .collect()
}

#[tokio::test]
async fn a_users_detail_shows_roles_status_last_seen_and_its_invitation() {
    let app = TestApp::spawn().await;
    let (boss_id, boss) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&boss, "new@example.com").await;
    let invited_id = invited["user"]["id"].as_str().expect("id").to_owned();

    let body = json_with_status(app.get_user(&boss, &invited_id).await, StatusCode::OK).await;

    let data = &body["data"];
    assert_eq!(data["status"], "INVITED");
    assert_eq!(data["email"], "new@example.com");
    assert_eq!(data["roles"][0]["name"], "member");
    assert_eq!(data["invitation"]["id"], invited["invitation"]["id"]);
    assert_eq!(data["invitation"]["delivery"], "PENDING");
    assert_eq!(data["invitation"]["expired"], false);
    assert_eq!(
        data["invitation"]["expiresAt"],
        invited["invitation"]["expiresAt"]
    );
    assert!(data.get("lastSeenAt").is_some());

    let me = json_with_status(
        app.get_user(&boss, &boss_id.to_string()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["data"]["status"], "ACTIVE");
    assert_eq!(me["data"]["invitation"], Value::Null);
    assert_eq!(me["data"]["roles"][0]["name"], "admin");
}

#[tokio::test]
async fn each_user_route_refuses_a_token_without_its_permission() {
    let app = TestApp::spawn().await;
    let user = app
        .active_user(app.project_id(), "m@example.com", "member")
        .await
        .to_string();
    let none = app.token(&["jobs:read"]);
    let member = app.role_id(app.project_id(), "member").await;

    for (resp, needs) in [
        (app.get_user(&none, &user).await, "user:read"),
        (
            app.update_user(&none, &user, &json!({"name": "X"})).await,
            "user:update",
        ),
        (app.reactivate(&none, &user).await, "user:deactivate"),
        (
            app.create_user(
                &none,
                &json!({"email": "x@example.com", "password": PASSWORD, "roleIds": [member]}),
            )
            .await,
            "user:create",
        ),
    ] {
        let error = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(needs)),
            "{error}"
        );
    }
    assert_eq!(
        app.users(&app.token(&["user:read"]), "").await["data"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "nobody was created"
    );
}

#[tokio::test]
async fn another_projects_users_answer_404() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let other = app.env.other_project("other").await;
    let stranger = app
        .active_user(other, "stranger@example.com", "member")
        .await
        .to_string();

    for id in [stranger.clone(), Uuid::new_v4().to_string()] {
        assert_error(
            app.get_user(&token, &id).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let put = app.update_user(&token, &id, &json!({"name": "Mine"})).await;
        assert_error(put, StatusCode::NOT_FOUND, "not_found").await;
        let re = app.reactivate(&token, &id).await;
        assert_error(re, StatusCode::NOT_FOUND, "not_found").await;
    }
    let theirs = json_with_status(
        app.get_user(&app.admin_token_for(other), &stranger).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(theirs["data"]["name"], "Test user", "untouched");
}

#[tokio::test]
async fn a_users_name_changes_and_only_an_invited_users_email_does() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let active = app
        .active_user(app.project_id(), "a@example.com", "member")
        .await
        .to_string();
    let invited = app.invite_member(&boss, "typo@exmaple.com").await;
    let invited = invited["user"]["id"].as_str().expect("id").to_owned();

    let renamed = app
        .update_user(&boss, &active, &json!({"name": "  Ada  "}))
        .await;
    assert_eq!(
        json_with_status(renamed, StatusCode::OK).await["data"]["name"],
        "Ada"
    );
    let email_of_active = app
        .update_user(&boss, &active, &json!({"email": "other@example.com"}))
        .await;
    let error = assert_error(email_of_active, StatusCode::CONFLICT, "conflict").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("ACTIVE"))
    );
    let fixed = app
        .update_user(&boss, &invited, &json!({"email": "Typo@Example.com"}))
        .await;
    assert_eq!(
        json_with_status(fixed, StatusCode::OK).await["data"]["email"],
        "typo@example.com"
    );
    let taken = app
        .update_user(&boss, &invited, &json!({"email": "boss@example.com"}))
        .await;
    assert_error(taken, StatusCode::CONFLICT, "conflict").await;
    let bad = app
        .update_user(
            &boss,
            &invited,
            &json!({"name": " ", "email": "nope", "role": "x"}),
        )
        .await;
    let error = assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let mut got = fields(&error);
    got.sort();
    assert_eq!(got, ["email", "name", "role"]);
    assert_eq!(
        app.audit_actions(Uuid::parse_str(&active).expect("uuid"))
            .await,
        ["user.updated"]
    );
    let entry: Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_log WHERE action = 'user.updated' AND target_id = $1",
    )
    .bind(&invited)
    .fetch_one(&app.env.pool)
    .await
    .expect("the entry");
    assert_eq!(entry["changes"]["email"]["changed"], true);
    assert!(
        !entry.to_string().contains("example.com"),
        "no address in the audit: {entry}"
    );
}

#[tokio::test]
async fn a_user_changes_its_own_name_and_a_service_token_is_told_it_is_no_user() {
    let app = TestApp::spawn().await;
    app.active_user(app.project_id(), "m@example.com", "member")
        .await;
    let token = app.token_of("m@example.com").await;

    let resp = app.update_me(&token, &json!({"name": "Grace"})).await;

    let body = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(body["data"]["name"], "Grace");
    assert!(body["data"]["permissions"].is_array());
    let blank = app.update_me(&token, &json!({"name": ""})).await;
    let error = assert_error(blank, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["name"]);

    let service = app.admin_token();
    let platform = app.platform_token();
    for t in [&service, &platform] {
        assert_error(
            app.me(t).await,
            StatusCode::FORBIDDEN,
            "user_token_required",
        )
        .await;
        let put = app.update_me(t, &json!({"name": "Bot"})).await;
        let error = assert_error(put, StatusCode::FORBIDDEN, "user_token_required").await;
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| !m.contains("not found")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_deactivated_user_is_reactivated_and_its_old_tokens_stay_revoked() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "m@example.com", "member")
        .await;
    let old = app.token_of("m@example.com").await;
    let id = user.to_string();
    json_with_status(app.deactivate(&boss, &id).await, StatusCode::OK).await;

    let resp = app.reactivate(&boss, &id).await;

    let body = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(body["data"]["status"], "ACTIVE");
    assert_eq!(body["data"]["roles"][0]["name"], "member", "roles are kept");
    assert_error(app.me(&old).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let fresh = app.token_of("m@example.com").await;
    json_with_status(app.me(&fresh).await, StatusCode::OK).await;
    // again: nothing changes, nothing is audited
    json_with_status(app.reactivate(&boss, &id).await, StatusCode::OK).await;
    assert_eq!(
        app.audit_actions(user).await,
        ["user.deactivated", "user.reactivated"]
    );
    // an invited user is not reactivated; nor one deactivated before it had a password
    let invited = app.invite_member(&boss, "new@example.com").await;
    let invited = invited["user"]["id"].as_str().expect("id").to_owned();
    assert_error(
        app.reactivate(&boss, &invited).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    json_with_status(app.deactivate(&boss, &invited).await, StatusCode::OK).await;
    let error = assert_error(
        app.reactivate(&boss, &invited).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("password"))
    );
}

#[tokio::test]
async fn inviting_a_deactivated_users_email_points_at_reactivation() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "gone@example.com", "member")
        .await;
    json_with_status(
        app.deactivate(&boss, &user.to_string()).await,
        StatusCode::OK,
    )
    .await;
    let member = app.role_id(app.project_id(), "member").await;

    let resp = app
        .invite(
            &boss,
            &json!({"email": "gone@example.com", "roleIds": [member]}),
        )
        .await;

    let error = assert_error(resp, StatusCode::CONFLICT, "conflict").await;
    let message = error["message"].as_str().expect("a message");
    assert!(
        message.contains(&format!("/api/v1/users/{user}/reactivate")),
        "{message}"
    );
    let create = app
        .create_user(
            &boss,
            &json!({"email": "gone@example.com", "password": PASSWORD, "roleIds": [member]}),
        )
        .await;
    let error = assert_error(create, StatusCode::CONFLICT, "conflict").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("reactivate"))
    );
    assert!(
        app.outbox()
            .await
            .iter()
            .all(|j| j.queue != "send_invitation")
    );
}

#[tokio::test]
async fn an_active_user_is_created_with_a_password_and_logs_in_at_once() {
    let app = TestApp::spawn().await;
    let token = app.token(&["user:create"]);
    let member = app.role_id(app.project_id(), "member").await;

    let resp = app
        .create_user(
            &token,
            &json!({"email": "Direct@Example.com", "name": "Direct", "password": PASSWORD,
                    "roleIds": [member, member]}),
        )
        .await;

    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = json_with_status(resp, StatusCode::CREATED).await;
    let id = body["data"]["id"].as_str().expect("id");
    assert_eq!(location, Some(format!("/api/v1/users/{id}")));
    assert_eq!(body["data"]["status"], "ACTIVE");
    assert_eq!(body["data"]["email"], "direct@example.com");
    let logged_in = app.token_of("direct@example.com").await;
    let me = json_with_status(app.me(&logged_in).await, StatusCode::OK).await;
    assert_eq!(me["data"]["roles"][0]["name"], "member");
    assert_eq!(
        app.audit_actions(Uuid::parse_str(id).expect("uuid")).await,
        ["user.created"]
    );
    assert!(app.outbox().await.is_empty(), "no job: no email is sent");

    let bad = app
        .create_user(
            &token,
            &json!({"email": "nope", "password": "short", "roleIds": []}),
        )
        .await;
    let error = assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["email", "password", "roleIds"]);
    let unknown_role = app
        .create_user(
            &token,
            &json!({"email": "x@example.com", "password": PASSWORD, "roleIds": [Uuid::new_v4()]}),
        )
        .await;
    let error = assert_error(
        unknown_role,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["roleIds"]);
    let twice = app
        .create_user(
            &token,
            &json!({"email": "direct@example.com", "password": PASSWORD, "roleIds": [member]}),
        )
        .await;
    assert_error(twice, StatusCode::CONFLICT, "conflict").await;
    let users = app.users(&app.token(&["user:read"]), "").await;
    assert_eq!(users["data"].as_array().map(Vec::len), Some(1));
}
