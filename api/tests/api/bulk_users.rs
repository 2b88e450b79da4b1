//! Bulk actions on users: preview and confirmation, deactivation by filter with tokens revoked
//! (one `revoke_sessions` job per chunk), the last-admin guard over the whole set, role
//! changes with a result per user, soft delete, reactivation, permissions and tenancy.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use shared::testing::eventually;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, json_with_status, send};

async fn bulk(app: &TestApp, token: &str, body: &Value) -> Response {
    send(
        app.authed(Method::POST, "/api/v1/users/bulk", token)
            .json(body),
    )
    .await
}

/// Starts a bulk action (asserting 202) and waits for its end; returns it.
async fn run(app: &TestApp, token: &str, body: &Value) -> Value {
    let started = json_with_status(bulk(app, token, body).await, StatusCode::ACCEPTED).await;
    let id = started["data"]["bulkId"]
        .as_str()
        .expect("bulk id")
        .to_owned();
    eventually(Duration::from_secs(60), "the bulk action ends", || async {
        let resp = send(app.authed(Method::GET, &format!("/api/v1/users/bulk/{id}"), token)).await;
        let body = json_with_status(resp, StatusCode::OK).await;
        body["data"]["finishedAt"]
            .is_string()
            .then(|| body["data"].clone())
    })
    .await
}

/// `n` ACTIVE members made straight in the database, `prefix<i>@example.com`.
async fn members(app: &TestApp, project: Uuid, prefix: &str, n: i32) -> Vec<Uuid> {
    let member = app.role_id(project, "member").await;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (user_id, project_id, email, name, status, password_hash) \
         SELECT gen_random_uuid(), $1, $2 || i || '@example.com', 'M' || i, 'ACTIVE', 'x' \
         FROM generate_series(1, $3) i RETURNING user_id",
    )
    .bind(project)
    .bind(prefix)
    .bind(n)
    .fetch_all(&app.env.pool)
    .await
    .expect("members");
    sqlx::query("INSERT INTO user_roles (project_id, user_id, role_id) SELECT $1, u, $2 FROM unnest($3::uuid[]) u")
        .bind(project)
        .bind(member)
        .bind(&ids)
        .execute(&app.env.pool)
        .await
        .expect("roles");
    ids
}

async fn status_of(app: &TestApp, user: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM users WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.env.pool)
        .await
        .expect("status")
}

#[tokio::test]
async fn a_large_deactivation_is_previewed_confirmed_and_revokes_tokens() {
    let mut app = TestApp::spawn().await;
    let (_, admin) = app.admin("owner@example.com").await;
    members(&app, app.project_id(), "m", 120).await;
    let logged_in = app
        .active_user(app.project_id(), "carol@example.com", "member")
        .await;
    let carol = app.token_of("carol@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;
    let body = json!({"action": "deactivate", "filter": {"role": member.to_string()}});

    let mut preview = body.clone();
    preview["dryRun"] = json!(true);
    let p = json_with_status(bulk(&app, &admin, &preview).await, StatusCode::OK).await;
    assert_eq!(p["data"]["matched"], 121);
    assert_eq!(p["data"]["confirmationRequired"], true);
    let token = p["data"]["confirmationToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        status_of(&app, logged_in).await,
        "ACTIVE",
        "a preview changes nothing"
    );

    // no token, a forged one, or one for other targets: refused
    assert_error(
        bulk(&app, &admin, &body).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let mut forged = body.clone();
    forged["confirmationToken"] = json!(format!(
        "{}.{}",
        chrono::Utc::now().timestamp() + 60,
        "0".repeat(64)
    ));
    assert_error(
        bulk(&app, &admin, &forged).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let mut other = json!({"action": "delete", "filter": {"role": member.to_string()}});
    other["confirmationToken"] = json!(token);
    assert_error(
        bulk(&app, &admin, &other).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    app.start_worker().await;
    let mut confirmed = body.clone();
    confirmed["confirmationToken"] = json!(token);
    let done = run(&app, &admin, &confirmed).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        (done["total"].as_i64(), done["succeeded"].as_i64()),
        (Some(121), Some(121)),
        "{done}"
    );
    assert_eq!(status_of(&app, logged_in).await, "DEACTIVATED");
    // carol's token stopped working
    let resp = app.me(&carol).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // one revoke_sessions job for the chunk, not one per user
    let revokes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE project_id = $1 AND action = 'users.bulk_deactivated'",
    )
    .bind(app.project_id())
    .fetch_one(&app.env.pool)
    .await
    .expect("audit");
    assert_eq!(revokes, 1, "one chunk, one audit entry");
    let queued = app
        .env
        .queues
        .counts("revoke_sessions")
        .await
        .expect("counts");
    let jobs = queued.waiting + queued.active + queued.completed + queued.retrying + queued.delayed;
    assert_eq!(jobs, 1, "{queued:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn the_last_admin_guard_holds_for_the_whole_set_and_the_caller_is_left_alone() {
    let mut app = TestApp::spawn().await;
    let (a, token) = app.admin("a@example.com").await;
    let b = app
        .active_user(app.project_id(), "b@example.com", "admin")
        .await;
    // every active admin in the set: refused before any work
    let resp = bulk(
        &app,
        &token,
        &json!({"action": "deactivate", "userIds": [a, b]}),
    )
    .await;
    let err = assert_error(resp, StatusCode::CONFLICT, "conflict").await;
    assert!(err.to_string().contains("active admin"), "{err}");
    let admin_role = app.role_id(app.project_id(), "admin").await;
    let resp = bulk(
        &app,
        &token,
        &json!({"action": "remove-role", "roleId": admin_role, "filter": {}}),
    )
    .await;
    assert_error(resp, StatusCode::CONFLICT, "conflict").await;

    let c = app
        .active_user(app.project_id(), "c@example.com", "admin")
        .await;
    app.start_worker().await;
    let done = run(
        &app,
        &token,
        &json!({"action": "deactivate", "userIds": [a, b]}),
    )
    .await;
    let results = done["results"].as_array().expect("results").clone();
    let of = |u: Uuid| {
        results
            .iter()
            .find(|r| r["userId"] == u.to_string())
            .cloned()
            .expect("a result")
    };
    assert_eq!(of(a)["outcome"], "skipped");
    assert!(
        of(a)["message"]
            .as_str()
            .unwrap_or_default()
            .contains("yourself")
    );
    assert_eq!(of(b)["outcome"], "done");
    assert_eq!(status_of(&app, a).await, "ACTIVE");
    assert_eq!(status_of(&app, c).await, "ACTIVE");
    app.cleanup().await;
}

#[tokio::test]
async fn roles_are_added_and_removed_with_a_result_per_user() {
    let mut app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    let users = members(&app, app.project_id(), "r", 3).await;
    let other = app.env.other_project("other").await;
    let foreign = members(&app, other, "f", 1).await;
    let admin_role = app.role_id(app.project_id(), "admin").await;
    app.start_worker().await;

    let ids = json!([users[0], users[1], foreign[0], Uuid::now_v7()]);
    let done = run(
        &app,
        &token,
        &json!({"action": "add-role", "roleId": admin_role, "userIds": ids}),
    )
    .await;
    assert_eq!(
        (done["succeeded"].as_i64(), done["failed"].as_i64()),
        (Some(2), Some(2)),
        "{done}"
    );
    let failed: Vec<&Value> = done["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["outcome"] == "failed")
        .collect();
    assert!(
        failed
            .iter()
            .all(|r| r["message"] == "no such user in this project"),
        "{failed:?}"
    );
    let foreign_roles: i64 =
        sqlx::query_scalar("SELECT count(*) FROM user_roles WHERE user_id = $1")
            .bind(foreign[0])
            .fetch_one(&app.env.pool)
            .await
            .expect("count");
    assert_eq!(foreign_roles, 1, "another project's user is untouched");

    // again: already held, skipped; then removed
    let done = run(
        &app,
        &token,
        &json!({"action": "add-role", "roleId": admin_role, "userIds": [users[0]]}),
    )
    .await;
    assert_eq!(done["skipped"], 1);
    let done = run(
        &app,
        &token,
        &json!({"action": "remove-role", "roleId": admin_role, "userIds": [users[0], users[2]]}),
    )
    .await;
    assert_eq!(
        (done["succeeded"].as_i64(), done["skipped"].as_i64()),
        (Some(1), Some(1)),
        "{done}"
    );
    // every result by cursor
    let id = done["id"].as_str().expect("id");
    let page = json_with_status(
        send(app.authed(
            Method::GET,
            &format!("/api/v1/users/bulk/{id}/results?limit=1"),
            &token,
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    let next = page["meta"]["nextCursor"].as_str().expect("a next page");
    let page = json_with_status(
        send(app.authed(
            Method::GET,
            &format!("/api/v1/users/bulk/{id}/results?limit=1&after={next}"),
            &token,
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["meta"]["nextCursor"], Value::Null);
    // another project cannot see it
    let outsider = app.admin_token_for(other);
    let resp = send(app.authed(Method::GET, &format!("/api/v1/users/bulk/{id}"), &outsider)).await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    app.cleanup().await;
}

#[tokio::test]
async fn deleted_users_leave_the_lists_and_reactivation_needs_a_password() {
    let mut app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    let users = members(&app, app.project_id(), "d", 2).await;
    sqlx::query("UPDATE users SET status = 'DEACTIVATED', password_hash = NULL WHERE user_id = $1")
        .bind(users[1])
        .execute(&app.env.pool)
        .await
        .expect("deactivate");
    app.start_worker().await;

    let done = run(
        &app,
        &token,
        &json!({"action": "reactivate", "filter": {"status": "DEACTIVATED"}}),
    )
    .await;
    assert_eq!(done["failed"], 1, "{done}");
    assert!(
        done["results"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no password")
    );

    let done = run(
        &app,
        &token,
        &json!({"action": "delete", "userIds": [users[0]]}),
    )
    .await;
    assert_eq!(done["succeeded"], 1, "{done}");
    let list = app.users(&token, "?search=d1%40").await;
    assert_eq!(list["data"], json!([]), "a deleted user is not listed");
    let resp = send(app.authed(
        Method::POST,
        &format!("/api/v1/users/{}/reactivate", users[0]),
        &token,
    ))
    .await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    // and is no target of later actions
    let p = json_with_status(
        bulk(
            &app,
            &token,
            &json!({"action": "reactivate", "userIds": [users[0]], "dryRun": true}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["data"]["matched"], 0);
    app.cleanup().await;
}

#[tokio::test]
async fn bad_requests_and_missing_permissions_are_refused() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    let reader = app.token(&["user:read"]);
    let resp = bulk(
        &app,
        &reader,
        &json!({"action": "deactivate", "userIds": [Uuid::now_v7()]}),
    )
    .await;
    let err = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(err.to_string().contains("user:deactivate"), "{err}");
    let resp = bulk(
        &app,
        &token,
        &json!({"action": "add-role", "userIds": [Uuid::now_v7()], "filter": {}}),
    )
    .await;
    let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let text = err.to_string();
    assert!(
        text.contains("roleId") && text.contains("userIds"),
        "{text}"
    );
    let resp = bulk(&app, &token, &json!({"action": "explode", "userIds": []})).await;
    assert!(resp.status().is_client_error());
    let resp = bulk(
        &app,
        &token,
        &json!({"action": "reactivate", "filter": {"status": "GONE"}}),
    )
    .await;
    let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(err.to_string().contains("filter.status"), "{err}");
    let resp = bulk(
        &app,
        &token,
        &json!({"action": "add-role", "roleId": Uuid::now_v7(), "userIds": [Uuid::now_v7()]}),
    )
    .await;
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    app.cleanup().await;
}
