//! Roles and the permission catalogue: `/api/v1/roles…` and `/api/v1/permissions`, behind
//! `role:read` / `role:write`, scoped to the caller's project; a role's permission change
//! revokes its holders' tokens; the built-in admin role keeps what recovers a project.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::permissions::{ALL, of_default_role};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, json_with_status};

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v
}

fn fields(error: &Value) -> Vec<String> {
    error["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("a field").to_owned())
        .collect()
}

async fn role_named(app: &TestApp, token: &str, name: &str) -> Value {
    let body = json_with_status(app.get_roles(token).await, StatusCode::OK).await;
    body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("a role {name} in {body:#}"))
}

#[tokio::test]
async fn roles_are_listed_with_their_permissions_and_user_counts() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    app.active_user(app.project_id(), "m1@example.com", "member")
        .await;
    app.active_user(app.project_id(), "m2@example.com", "member")
        .await;

    let body = json_with_status(app.get_roles(&boss).await, StatusCode::OK).await;

    let names: Vec<&str> = body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["admin", "member"]);
    let admin = &body["data"][0];
    assert_eq!(admin["builtIn"], true);
    assert_eq!(admin["userCount"], 1);
    assert_eq!(
        admin["permissions"],
        json!(sorted(of_default_role("admin")))
    );
    let member = &body["data"][1];
    assert_eq!(member["builtIn"], false);
    assert_eq!(member["userCount"], 2);
    assert_eq!(
        member["permissions"],
        json!(sorted(of_default_role("member")))
    );
    // the admin role holds every project permission
    for p in ALL.iter().filter(|p| !p.platform_only) {
        assert!(
            admin["permissions"]
                .as_array()
                .expect("a list")
                .contains(&json!(p.name)),
            "admin lacks {}",
            p.name
        );
    }
    let one = json_with_status(
        app.get_role(&boss, member["id"].as_str().expect("id"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(&one["data"], member);
}

/// The holder counts are kept by triggers in per-transaction shards: concurrent invitations,
/// a removal and a deactivation leave them equal to a count of the holders.
#[tokio::test]
async fn kept_user_counts_match_the_holders_after_concurrent_invitations() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let invites = (0..20).map(|i| {
        let (app, boss) = (&app, &boss);
        async move { app.invite_member(boss, &format!("m{i}@example.com")).await }
    });
    let invited = futures::future::join_all(invites).await;
    assert_eq!(role_named(&app, &boss, "member").await["userCount"], 20);

    let gone = invited[0]["user"]["id"].as_str().expect("id").to_owned();
    sqlx::query("DELETE FROM users WHERE project_id = $1 AND user_id = $2")
        .bind(app.project_id())
        .bind(Uuid::parse_str(&gone).expect("uuid"))
        .execute(&app.env.pool)
        .await
        .expect("delete");
    assert_eq!(role_named(&app, &boss, "member").await["userCount"], 19);

    let drift: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT role_id, sum(users) AS n FROM role_user_counts GROUP BY role_id
         ) k FULL JOIN (
             SELECT role_id, count(*) AS n FROM user_roles GROUP BY role_id
         ) h USING (role_id)
         WHERE coalesce(k.n, 0) <> coalesce(h.n, 0)",
    )
    .fetch_one(&app.env.pool)
    .await
    .expect("compare");
    assert_eq!(drift, 0, "every role's kept count equals its holders");
}

#[tokio::test]
async fn the_permission_catalogue_lists_every_permission_with_its_description_and_scope() {
    let app = TestApp::spawn().await;

    let body = json_with_status(
        app.get_permissions(&app.token(&["role:read"])).await,
        StatusCode::OK,
    )
    .await;

    let listed = body["data"].as_array().expect("a list");
    assert_eq!(listed.len(), ALL.len());
    for (p, got) in ALL.iter().zip(listed) {
        assert_eq!(got["name"], p.name);
        assert_eq!(got["description"], p.description);
        let scope = if p.platform_only {
            "platform"
        } else {
            "project"
        };
        assert_eq!(got["scope"], scope, "{}", p.name);
    }
    let essential = |name: &str| {
        listed
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["adminEssential"].clone())
    };
    assert_eq!(essential("role:write"), Some(json!(true)));
    assert_eq!(essential("jobs:write"), Some(json!(false)));
    assert_eq!(essential("queues:read"), Some(json!(false)));
}

#[tokio::test]
async fn each_role_route_refuses_a_token_without_its_permission() {
    let app = TestApp::spawn().await;
    let member = app.role_id(app.project_id(), "member").await.to_string();
    let nothing = app.token(&["user:read", "user:update"]);
    let reader = app.token(&["role:read"]);
    let body = json!({"name": "x", "permissions": []});

    for (resp, needs) in [
        (app.get_roles(&nothing).await, "role:read"),
        (app.get_role(&nothing, &member).await, "role:read"),
        (app.get_permissions(&nothing).await, "role:read"),
        (app.create_role(&reader, &body).await, "role:write"),
        (app.update_role(&reader, &member, &body).await, "role:write"),
        (app.delete_role(&reader, &member, "").await, "role:write"),
    ] {
        let error = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(needs)),
            "{error}"
        );
    }
    // nothing changed
    let still = json_with_status(app.get_role(&reader, &member).await, StatusCode::OK).await;
    assert_eq!(still["data"]["name"], "member");
}

#[tokio::test]
async fn a_role_is_created_changed_and_deleted_and_each_step_is_audited() {
    let app = TestApp::spawn().await;
    let (boss_id, boss) = app.admin("boss@example.com").await;

    let resp = app
        .create_role(
            &boss,
            &json!({"name": " Support ", "description": "Helps users",
                    "permissions": ["jobs:read", "user:read", "jobs:read"]}),
        )
        .await;
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    let created = json_with_status(resp, StatusCode::CREATED).await["data"].take();
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/roles/{id}").as_str())
    );
    assert_eq!(created["name"], "Support");
    assert_eq!(created["permissions"], json!(["jobs:read", "user:read"]));
    assert_eq!(created["userCount"], 0);
    assert_eq!(created["builtIn"], false);

    let changed = json_with_status(
        app.update_role(
            &boss,
            &id,
            &json!({"name": "Helpdesk", "permissions": ["events:read"]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["data"]["name"], "Helpdesk");
    assert_eq!(changed["data"]["description"], "Helps users", "kept");
    assert_eq!(changed["data"]["permissions"], json!(["events:read"]));

    let taken = app
        .create_role(&boss, &json!({"name": "Helpdesk", "permissions": []}))
        .await;
    assert_error(taken, StatusCode::CONFLICT, "conflict").await;
    let renamed_onto_member = app
        .update_role(&boss, &id, &json!({"name": "member"}))
        .await;
    assert_error(renamed_onto_member, StatusCode::CONFLICT, "conflict").await;

    let deleted = app.delete_role(&boss, &id, "").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.get_role(&boss, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let role = Uuid::parse_str(&id).expect("uuid");
    assert_eq!(
        app.audit_actions(role).await,
        ["role.created", "role.updated", "role.deleted"]
    );
    let actor: Option<Uuid> = sqlx::query_scalar(
        "SELECT actor_id FROM audit_log WHERE target_id = $1 AND action = 'role.updated'",
    )
    .bind(&id)
    .fetch_one(&app.env.pool)
    .await
    .expect("the entry");
    assert_eq!(actor, Some(boss_id));
}

#[tokio::test]
async fn invalid_role_bodies_are_refused_naming_every_invalid_field() {
    let app = TestApp::spawn().await;
    let token = app.token(&["role:read", "role:write"]);
    let member = app.role_id(app.project_id(), "member").await.to_string();

    let resp = app
        .create_role(
            &token,
            &json!({"name": "  ", "description": "x".repeat(501),
                    "permissions": ["jobs:read", "nope:never", "projects:manage"]}),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["name", "description", "permissions"]);
    let message = error["details"][2]["message"].as_str().expect("a message");
    assert!(
        message.contains("nope:never") && message.contains("projects:manage"),
        "{message}"
    );
    assert!(!message.contains("\"jobs:read\""), "{message}");

    let missing = app.create_role(&token, &json!({})).await;
    let error = assert_error(
        missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["name", "permissions"]);

    let resp = app
        .update_role(
            &token,
            &member,
            &json!({"name": "a\u{0}b", "permissions": ["queues:write"], "extra": 1}),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let mut got = fields(&error);
    got.sort();
    assert_eq!(got, ["extra", "name", "permissions"]);
    let too_many: Vec<String> = (0..101).map(|_| "jobs:read".to_owned()).collect();
    let resp = app
        .update_role(&token, &member, &json!({"permissions": too_many}))
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["permissions"]);
    // nothing changed
    let still = json_with_status(app.get_role(&token, &member).await, StatusCode::OK).await;
    assert_eq!(
        still["data"]["permissions"],
        json!(sorted(of_default_role("member")))
    );
}

#[tokio::test]
async fn another_projects_roles_answer_404_everywhere() {
    let app = TestApp::spawn().await;
    let token = app.token(&["role:read", "role:write"]);
    let other = app.env.other_project("other").await;
    let theirs = app.role_id(other, "member").await.to_string();
    let ours = app.role_id(app.project_id(), "member").await.to_string();
    let unknown = Uuid::new_v4().to_string();

    for id in [&theirs, &unknown] {
        assert_error(
            app.get_role(&token, id).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let put = app.update_role(&token, id, &json!({"name": "mine"})).await;
        assert_error(put, StatusCode::NOT_FOUND, "not_found").await;
        assert_error(
            app.delete_role(&token, id, "").await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    // nor may another project's role receive our role's holders
    app.active_user(app.project_id(), "m@example.com", "member")
        .await;
    let custom = json_with_status(
        app.create_role(&token, &json!({"name": "temp", "permissions": []}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let custom = custom["data"]["id"].as_str().expect("id").to_owned();
    let user = app
        .active_user(app.project_id(), "c@example.com", "member")
        .await;
    app.add_role(
        &app.admin_token(),
        &user.to_string(),
        Uuid::parse_str(&custom).expect("uuid"),
    )
    .await;
    let resp = app
        .delete_role(&token, &custom, &format!("?reassignTo={theirs}"))
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    // the other project's role list is untouched
    let their_roles = json_with_status(
        app.get_roles(&app.env.token(other, &["role:read"])).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(their_roles["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(their_roles["data"][1]["userCount"], 0);
    json_with_status(app.get_role(&token, &ours).await, StatusCode::OK).await;
}

#[tokio::test]
async fn changing_a_roles_permissions_revokes_its_active_holders_tokens() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let holder = app
        .active_user(app.project_id(), "holder@example.com", "member")
        .await;
    let old = app.token_of("holder@example.com").await;
    let invited = app.invite_member(&boss, "new@example.com").await;
    let invited = Uuid::parse_str(invited["user"]["id"].as_str().expect("id")).expect("uuid");
    let member = app.role_id(app.project_id(), "member").await.to_string();

    // a description alone changes no permission: nobody is revoked
    json_with_status(
        app.update_role(&boss, &member, &json!({"description": "Readers"}))
            .await,
        StatusCode::OK,
    )
    .await;
    json_with_status(app.me(&old).await, StatusCode::OK).await;

    let mut permissions = of_default_role("member");
    permissions.push("jobs:write");
    let resp = app
        .update_role(&boss, &member, &json!({"permissions": permissions}))
        .await;

    json_with_status(resp, StatusCode::OK).await;
    assert_error(app.me(&old).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let fresh = app.token_of("holder@example.com").await;
    let me = json_with_status(app.me(&fresh).await, StatusCode::OK).await;
    assert!(
        me["data"]["permissions"]
            .as_array()
            .expect("a list")
            .contains(&json!("jobs:write"))
    );
    let revokes: Vec<_> = app
        .outbox()
        .await
        .into_iter()
        .filter(|j| j.queue == "revoke_sessions")
        .collect();
    assert_eq!(revokes.len(), 1, "the active holder only: {revokes:?}");
    assert_eq!(revokes[0].payload["userId"], holder.to_string());
    assert_eq!(revokes[0].payload["reason"], "role_permissions_changed");
    assert!(!app.has_revocation_marker(invited).await);
    let audited: Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_log WHERE action = 'role.updated' AND metadata->'changes' ? 'permissions'",
    )
    .fetch_one(&app.env.pool)
    .await
    .expect("the entry");
    assert_eq!(
        audited["changes"]["permissions"]["added"],
        json!(["jobs:write"])
    );
    assert_eq!(audited["sessionsRevoked"], 1);
}

#[tokio::test]
async fn the_admin_role_cannot_be_deleted_renamed_or_lose_role_and_user_permissions() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let admin = app.role_id(app.project_id(), "admin").await.to_string();
    let mut without_role_write = of_default_role("admin");
    without_role_write.retain(|p| *p != "role:write" && *p != "user:create");

    let deleted = app.delete_role(&boss, &admin, "").await;
    let error = assert_error(deleted, StatusCode::CONFLICT, "conflict").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("admin"))
    );
    let renamed = app
        .update_role(&boss, &admin, &json!({"name": "owners"}))
        .await;
    let error = assert_error(
        renamed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["name"]);
    let stripped = app
        .update_role(&boss, &admin, &json!({"permissions": without_role_write}))
        .await;
    let error = assert_error(
        stripped,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let message = error["details"][0]["message"].as_str().expect("a message");
    assert!(
        message.contains("role:write") && message.contains("user:create"),
        "{message}"
    );
    // the boss's token still works: nothing changed
    let role = role_named(&app, &boss, "admin").await;
    assert_eq!(role["permissions"], json!(sorted(of_default_role("admin"))));

    // other permissions may go (and come back)
    let mut fewer = of_default_role("admin");
    fewer.retain(|p| *p != "jobs:write");
    let resp = app
        .update_role(&boss, &admin, &json!({"permissions": fewer}))
        .await;
    let body = json_with_status(resp, StatusCode::OK).await;
    assert!(
        !body["data"]["permissions"]
            .as_array()
            .expect("a list")
            .contains(&json!("jobs:write"))
    );
}

#[tokio::test]
async fn a_held_role_is_deleted_only_when_its_holders_are_reassigned() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;
    let user = app
        .active_user(app.project_id(), "m@example.com", "member")
        .await;
    let old = app.token_of("m@example.com").await;
    let support = json_with_status(
        app.create_role(
            &boss,
            &json!({"name": "support", "permissions": ["jobs:read"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let support = support["data"]["id"].as_str().expect("id").to_owned();
    let m = member.to_string();

    let refused = app.delete_role(&boss, &m, "").await;
    let error = assert_error(refused, StatusCode::CONFLICT, "conflict").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("reassignTo")),
        "{error}"
    );
    let to_itself = app
        .delete_role(&boss, &m, &format!("?reassignTo={m}"))
        .await;
    let error = assert_error(
        to_itself,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["reassignTo"]);
    let not_a_uuid = app.delete_role(&boss, &m, "?reassignTo=support").await;
    assert_error(
        not_a_uuid,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    json_with_status(app.me(&old).await, StatusCode::OK).await;

    let resp = app
        .delete_role(&boss, &m, &format!("?reassignTo={support}"))
        .await;

    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let detail =
        json_with_status(app.get_user(&boss, &user.to_string()).await, StatusCode::OK).await;
    assert_eq!(
        detail["data"]["roles"],
        json!([{"id": support, "name": "support"}])
    );
    assert_error(app.me(&old).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let entry: Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_log WHERE action = 'role.deleted' AND target_id = $1",
    )
    .bind(&m)
    .fetch_one(&app.env.pool)
    .await
    .expect("the entry");
    assert_eq!(entry["holders"], 1);
    assert_eq!(entry["reassignedTo"]["name"], "support");
    // the kept count follows the holders that moved, and the deleted role's count is gone
    assert_eq!(role_named(&app, &boss, "support").await["userCount"], 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM role_user_counts WHERE role_id = $1")
        .bind(Uuid::parse_str(&m).expect("uuid"))
        .fetch_one(&app.env.pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
}
