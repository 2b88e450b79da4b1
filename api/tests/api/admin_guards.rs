//! The last-admin guard: no request leaves a project without an ACTIVE user holding the admin
//! role, on any path (role removed or replaced, the caller's own included; deactivation; the
//! admin role deleted or changed), and not by two requests racing each other either.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, json_with_status};

async fn assert_guarded(resp: reqwest::Response) {
    let error = assert_error(resp, StatusCode::CONFLICT, "conflict").await;
    let message = error["message"].as_str().expect("a message");
    assert!(
        message.contains("without an active admin"),
        "the message says why: {message}"
    );
}

/// ACTIVE holders of the demo project's admin role.
async fn active_admins(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM user_roles ur JOIN users u USING (project_id, user_id)
         JOIN roles r USING (project_id, role_id)
         WHERE ur.project_id = $1 AND r.name = 'admin' AND u.status = 'ACTIVE'",
    )
    .bind(app.project_id())
    .fetch_one(&app.env.pool)
    .await
    .expect("count admins")
}

#[tokio::test]
async fn the_last_admin_cannot_remove_or_replace_its_own_admin_role() {
    let app = TestApp::spawn().await;
    let (boss, token) = app.admin("boss@example.com").await;
    let admin = app.role_id(app.project_id(), "admin").await;
    let member = app.role_id(app.project_id(), "member").await;
    let me = boss.to_string();

    assert_guarded(app.remove_role(&token, &me, admin).await).await;
    assert_guarded(app.change_role(&token, &me, admin, member).await).await;

    // nothing changed and the token still works
    assert_eq!(active_admins(&app).await, 1);
    let me_now = json_with_status(app.me(&token).await, StatusCode::OK).await;
    assert_eq!(me_now["data"]["roles"][0]["name"], "admin");
    assert!(
        app.outbox()
            .await
            .iter()
            .all(|j| j.queue != "revoke_sessions")
    );
    assert!(app.audit_actions(boss).await.is_empty());
}

#[tokio::test]
async fn the_last_admin_cannot_be_deactivated_or_lose_the_role_through_another_caller() {
    let app = TestApp::spawn().await;
    let (boss, _) = app.admin("boss@example.com").await;
    let admin = app.role_id(app.project_id(), "admin").await;
    let member = app.role_id(app.project_id(), "member").await;
    // a service token with every user permission
    let service = app.admin_token();
    let b = boss.to_string();

    assert_guarded(app.deactivate(&service, &b).await).await;
    assert_guarded(app.remove_role(&service, &b, admin).await).await;
    assert_guarded(app.change_role(&service, &b, admin, member).await).await;

    assert_eq!(active_admins(&app).await, 1);
}

#[tokio::test]
async fn with_two_admins_one_may_go_and_then_the_other_is_the_last() {
    let app = TestApp::spawn().await;
    let (a, a_token) = app.admin("a@example.com").await;
    let (b, _) = app.admin("b@example.com").await;
    let admin = app.role_id(app.project_id(), "admin").await;

    let removed = app.remove_role(&a_token, &b.to_string(), admin).await;
    json_with_status(removed, StatusCode::OK).await;

    assert_guarded(app.remove_role(&a_token, &a.to_string(), admin).await).await;
    // b is an admin again, then a deactivates b: a is the last one, and cannot be deactivated
    json_with_status(
        app.add_role(&a_token, &b.to_string(), admin).await,
        StatusCode::OK,
    )
    .await;
    json_with_status(
        app.deactivate(&a_token, &b.to_string()).await,
        StatusCode::OK,
    )
    .await;
    assert_guarded(app.deactivate(&app.admin_token(), &a.to_string()).await).await;
    assert_eq!(active_admins(&app).await, 1);
}

#[tokio::test]
async fn the_admin_role_itself_cannot_be_deleted_or_changed_into_a_lockout() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let admin = app.role_id(app.project_id(), "admin").await.to_string();
    let member = app.role_id(app.project_id(), "member").await.to_string();

    let delete = app.delete_role(&token, &admin, "").await;
    assert_error(delete, StatusCode::CONFLICT, "conflict").await;
    let reassigned = app
        .delete_role(&token, &admin, &format!("?reassignTo={member}"))
        .await;
    assert_error(reassigned, StatusCode::CONFLICT, "conflict").await;
    let emptied = app
        .update_role(&token, &admin, &json!({"permissions": []}))
        .await;
    assert_error(
        emptied,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    assert_eq!(active_admins(&app).await, 1);
    let roles = json_with_status(app.get_roles(&token).await, StatusCode::OK).await;
    assert_eq!(roles["data"][0]["name"], "admin");
}

#[tokio::test]
async fn a_project_without_an_active_admin_yet_is_not_blocked() {
    let app = TestApp::spawn().await;
    let service = app.admin_token();
    let project = app.project_id();
    let admin = app.role_id(project, "admin").await;
    // an invited admin and an active member: nobody is an active admin yet
    let invited = {
        let mut conn = app.env.pool.acquire().await.expect("acquire");
        let id = shared::db::users::create_invited(&mut conn, project, "inv@example.com", None)
            .await
            .expect("invite");
        assert!(
            shared::db::roles::assign(&mut conn, project, id, admin)
                .await
                .expect("assign")
        );
        id
    };
    let member = app.active_user(project, "m@example.com", "member").await;

    let removed = app.remove_role(&service, &invited.to_string(), admin).await;
    let deactivated = app.deactivate(&service, &member.to_string()).await;

    json_with_status(removed, StatusCode::OK).await;
    json_with_status(deactivated, StatusCode::OK).await;
    assert_eq!(active_admins(&app).await, 0);
}

/// One round of two admins acting on each other at the same moment: exactly one wins.
async fn race(app: &TestApp, round: usize, act: &str) -> [StatusCode; 2] {
    let admin = app.role_id(app.project_id(), "admin").await;
    let (a, _) = app.admin(&format!("a{round}@example.com")).await;
    let (b, _) = app.admin(&format!("b{round}@example.com")).await;
    // service tokens (never revoked): each request gets as far as its transaction, whichever
    // commits first
    let (a_token, b_token) = (app.admin_token(), app.admin_token());
    let go = |token: String, target: Uuid| async move {
        let resp = match act {
            "remove" => app.remove_role(&token, &target.to_string(), admin).await,
            _ => app.deactivate(&token, &target.to_string()).await,
        };
        resp.status()
    };
    let (first, second) = tokio::join!(go(a_token, b), go(b_token, a));
    [first, second]
}

#[tokio::test]
async fn two_admins_removing_each_other_at_once_cannot_both_succeed() {
    let app = TestApp::spawn().await;
    for round in 0..8 {
        // each round starts with exactly these two active admins
        sqlx::query(
            "UPDATE users SET status = 'DEACTIVATED' WHERE project_id = $1 AND status = 'ACTIVE'",
        )
        .bind(app.project_id())
        .execute(&app.env.pool)
        .await
        .expect("reset");
        let act = if round % 2 == 0 {
            "remove"
        } else {
            "deactivate"
        };

        let mut got = race(&app, round, act).await.to_vec();

        got.sort();
        assert_eq!(
            got,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round} ({act}): one wins, one is refused"
        );
        assert_eq!(active_admins(&app).await, 1, "round {round} ({act})");
    }
    let entries: Vec<Value> = sqlx::query_scalar(
        "SELECT metadata FROM audit_log WHERE project_id = $1 AND action IN ('role.removed', 'user.deactivated')",
    )
    .bind(app.project_id())
    .fetch_all(&app.env.pool)
    .await
    .expect("audit");
    assert_eq!(entries.len(), 8, "one change audited per round");
}
