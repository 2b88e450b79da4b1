//! Projects and API keys: platform operators manage projects; keys are shown once, stored as
//! hashes, rotated with a grace period and revoked at once on every API process; a suspended
//! or deleted project's credentials stop working everywhere; no tenant sees another.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::testing::eventually;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_error, json_with_status, operations, send, served_spec};

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

/// The audit entries of `project` with this action, oldest first.
async fn audited(app: &TestApp, project: Uuid, action: &str) -> Vec<(Option<Uuid>, Value)> {
    sqlx::query_as(
        "SELECT actor_id, metadata FROM audit_log WHERE project_id = $1 AND action = $2
         ORDER BY at, audit_id",
    )
    .bind(project)
    .bind(action)
    .fetch_all(&app.env.pool)
    .await
    .expect("audit entries")
}

// ---------------------------------------------------------------------------------------------
// Projects

#[tokio::test]
async fn creating_a_project_makes_its_default_roles_and_a_first_key_shown_once() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();

    let resp = app
        .create_project(
            &ops,
            &json!({"name": "Acme Corp.", "description": "alerts", "settings": {"eventsPerSecond": 50}}),
        )
        .await;

    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let body = json_with_status(resp, StatusCode::CREATED).await;
    let project = &body["data"]["project"];
    let id = id_of(project);
    assert_eq!(location, format!("/api/v1/projects/{id}"));
    assert_eq!(project["name"], "Acme Corp.");
    assert_eq!(project["slug"], "acme-corp", "made from the name");
    assert_eq!(project["description"], "alerts");
    assert_eq!(project["status"], "active");
    assert_eq!(project["settings"], json!({"eventsPerSecond": 50}));
    assert_eq!(project["deletedAt"], Value::Null);
    let key = body["data"]["apiKey"]["key"].as_str().expect("the key");
    let prefix = body["data"]["apiKey"]["prefix"].as_str().expect("a prefix");
    assert!(key.starts_with(&format!("ck_{prefix}_")), "{key}");
    assert_eq!(body["data"]["apiKey"]["name"], "default");

    // the default roles, with their permissions
    let project_id = Uuid::parse_str(&id).unwrap();
    let roles: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT r.name, array_agg(rp.permission ORDER BY rp.permission) FROM roles r
         JOIN role_permissions rp USING (role_id) WHERE r.project_id = $1 GROUP BY r.name
         ORDER BY r.name",
    )
    .bind(project_id)
    .fetch_all(&app.env.pool)
    .await
    .unwrap();
    let mut admin = shared::permissions::of_default_role("admin");
    admin.sort_unstable();
    let mut member = shared::permissions::of_default_role("member");
    member.sort_unstable();
    assert_eq!(
        roles,
        [
            (
                "admin".into(),
                admin.iter().map(|p| p.to_string()).collect()
            ),
            (
                "member".into(),
                member.iter().map(|p| p.to_string()).collect()
            ),
        ]
    );

    // the key works, is stored only as its SHA-256, and is never shown again
    let current = json_with_status(app.current_project_by_key(key).await, StatusCode::OK).await;
    assert_eq!(current["data"]["id"], id.as_str());
    let key_id = Uuid::parse_str(&id_of(&body["data"]["apiKey"])).unwrap();
    let row = app.key_row(key_id).await;
    assert_eq!(row.secret_hash, Sha256::digest(key.as_bytes()).to_vec());
    let secret = key.rsplit('_').next().unwrap();
    assert!(
        !row.text.contains(secret),
        "the secret is not stored: {}",
        row.text
    );
    let listed = json_with_status(app.list_api_keys(&ops, &id, "").await, StatusCode::OK).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["data"][0].get("key").is_none(), "{listed}");
    assert!(!listed.to_string().contains(secret));
    let one = json_with_status(
        app.get_api_key(&ops, &id, &key_id.to_string()).await,
        StatusCode::OK,
    )
    .await;
    assert!(!one.to_string().contains(secret), "{one}");

    // both in the new project's own audit log, with the operator's name
    let created = audited(&app, project_id, "project.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].0, None);
    assert_eq!(created[0].1["by"], "ops");
    assert_eq!(created[0].1["slug"], "acme-corp");
    let key_created = audited(&app, project_id, "api_key.created").await;
    assert_eq!(key_created[0].1["prefix"], prefix);
    assert!(!key_created[0].1.to_string().contains(secret));
}

#[tokio::test]
async fn project_management_needs_a_platform_token_whatever_a_project_token_lists() {
    let app = TestApp::spawn().await;
    let (_, other, _) = app.new_project("other").await;
    // every permission by name, and the wildcard: still a project token
    let project_tokens = [app.admin_token(), app.token(&["*"])];
    let body = json!({"name": "sneaky"});

    for token in &project_tokens {
        let create = app.create_project(token, &body).await;
        let error = assert_error(create, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("projects:manage")
        );
        for resp in [
            app.list_projects(token, "").await,
            app.get_project(token, &other.to_string()).await,
            app.update_project(token, &other.to_string(), &json!({"status": "suspended"}))
                .await,
            app.delete_project(token, &other.to_string()).await,
            app.project_stats(token, &other.to_string()).await,
        ] {
            assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        }
    }
    // a platform token without projects:manage is refused too
    let ops_reader = app.platform_token_with(&["queues:read"]);
    assert_error(
        app.list_projects(&ops_reader, "").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // a user's login never carries it
    let (_, admin) = app.admin("root@example.com").await;
    let me = json_with_status(app.me(&admin).await, StatusCode::OK).await;
    let perms = me["data"]["permissions"].as_array().unwrap();
    assert!(!perms.iter().any(|p| p == "projects:manage"), "{me}");
    assert_error(
        app.list_projects(&admin, "").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn no_role_can_be_given_a_platform_permission() {
    let app = TestApp::spawn().await;
    let pool = &app.env.pool;
    let admin_role = app.role_id(app.project_id(), "admin").await;

    let insert = sqlx::query(
        "INSERT INTO role_permissions (role_id, permission) VALUES ($1, 'projects:manage')",
    )
    .bind(admin_role)
    .execute(pool)
    .await;
    let update = sqlx::query(
        "UPDATE role_permissions SET permission = 'projects:manage'
         WHERE role_id = $1 AND permission = 'user:read'",
    )
    .bind(admin_role)
    .execute(pool)
    .await;

    for (what, res) in [("insert", insert), ("update", update)] {
        let err = res.expect_err(what);
        let db = err.as_database_error().expect("a database error");
        assert_eq!(
            db.constraint(),
            Some("role_permissions_project_only"),
            "{what}: {db}"
        );
    }
    let platform: Vec<String> =
        sqlx::query_scalar("SELECT name FROM permissions WHERE platform_only ORDER BY name")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        platform,
        [
            "projects:manage",
            "queues:write",
            "schedules:manage",
            "schedules:read"
        ]
    );
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM role_permissions WHERE permission = 'projects:manage'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(held, 0);
}

#[tokio::test]
async fn a_permission_that_becomes_platform_only_leaves_every_role_at_the_next_migration() {
    let app = TestApp::spawn().await;
    let pool = &app.env.pool;
    // as if projects:manage had been an ordinary permission that the admin role held
    sqlx::query("UPDATE permissions SET platform_only = false WHERE name = 'projects:manage'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO role_permissions (role_id, permission)
         SELECT role_id, 'projects:manage' FROM roles WHERE name = 'admin'",
    )
    .execute(pool)
    .await
    .unwrap();

    shared::db::migrate(pool).await.expect("migrate again");

    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM role_permissions WHERE permission = 'projects:manage'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(held, 0);
}

#[tokio::test]
async fn a_platform_permission_that_becomes_a_project_one_is_granted_to_its_default_roles_once() {
    let app = TestApp::spawn().await;
    let pool = &app.env.pool;
    // as a deployment from before queues:read was a project permission: platform only, held by
    // no role
    sqlx::query("DELETE FROM role_permissions WHERE permission = 'queues:read'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE permissions SET platform_only = true WHERE name = 'queues:read'")
        .execute(pool)
        .await
        .unwrap();
    let holders = || async {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT r.name FROM role_permissions rp JOIN roles r USING (role_id)
             WHERE rp.permission = 'queues:read' AND r.project_id = $1 ORDER BY r.name",
        )
        .bind(app.project_id())
        .fetch_all(pool)
        .await
        .unwrap();
        names
    };
    assert!(holders().await.is_empty());

    shared::db::migrate(pool).await.expect("migrate again");
    assert_eq!(holders().await, ["admin"], "the default role that names it");

    // once: an admin who takes it away keeps it away at the next migration
    sqlx::query("DELETE FROM role_permissions WHERE permission = 'queues:read'")
        .execute(pool)
        .await
        .unwrap();
    shared::db::migrate(pool).await.expect("migrate again");
    assert!(holders().await.is_empty());
}

#[tokio::test]
async fn bad_project_input_is_a_422_naming_every_field() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();

    let resp = app
        .create_project(
            &ops,
            &json!({
                "name": " ",
                "slug": "Not A Slug",
                "description": "x".repeat(501),
                "settings": {"eventsPerSecond": 0},
            }),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["name", "slug", "description", "settings.eventsPerSecond"]
    );

    // unknown settings keys and wrong types are named too; nothing is stored
    let resp = app
        .create_project(
            &ops,
            &json!({"settings": {"colour": "red"}, "status": "active"}),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"settings.colour"), "{error}");
    assert!(fields.contains(&"status"), "{error}");
    assert!(fields.contains(&"name"), "{error}");

    let (_, id, _) = app.new_project("fine").await;
    let resp = app
        .update_project(
            &ops,
            &id.to_string(),
            &json!({"status": "paused", "settings": {"eventsPerSecond": 100001}, "slug": "-x"}),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields.len(), 3, "{error}");
    for f in ["status", "settings.eventsPerSecond", "slug"] {
        assert!(fields.contains(&f), "{f}: {error}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&app.env.pool)
        .await
        .unwrap();
    assert_eq!(count, 2, "the demo project and `fine`");
}

#[tokio::test]
async fn names_and_slugs_are_unique_among_live_projects_only() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let (_, first, _) = app.new_project("Acme").await;

    let same_name = app
        .create_project(&ops, &json!({"name": "Acme", "slug": "acme-2"}))
        .await;
    let same_slug = app
        .create_project(&ops, &json!({"name": "Acme Two", "slug": "acme"}))
        .await;
    let (_, second, _) = app.new_project("Acme Two").await;
    let rename = app
        .update_project(&ops, &second.to_string(), &json!({"slug": "acme"}))
        .await;

    assert_error(same_name, StatusCode::CONFLICT, "conflict").await;
    assert_error(same_slug, StatusCode::CONFLICT, "conflict").await;
    assert_error(rename, StatusCode::CONFLICT, "conflict").await;

    // once deleted, its name and slug are free
    let deleted = app.delete_project(&ops, &first.to_string()).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = app.create_project(&ops, &json!({"name": "Acme"})).await;
    let body = json_with_status(again, StatusCode::CREATED).await;
    assert_eq!(body["data"]["project"]["slug"], "acme");
}

#[tokio::test]
async fn projects_are_listed_newest_first_by_page_with_filters() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let (_, alpha, _) = app.new_project("Alpha").await;
    let (_, beta, _) = app.new_project("Beta").await;
    let (_, gamma, _) = app.new_project("Gamma").await;
    let (_, delta, _) = app.new_project("Delta").await;
    app.set_project_status(beta, "suspended").await;
    assert_eq!(
        app.delete_project(&ops, &delta.to_string()).await.status(),
        StatusCode::NO_CONTENT
    );
    let ids = |body: &Value| -> Vec<String> {
        body["data"].as_array().unwrap().iter().map(id_of).collect()
    };

    let first = json_with_status(app.list_projects(&ops, "?perPage=2").await, StatusCode::OK).await;
    let second = json_with_status(
        app.list_projects(&ops, "?perPage=2&page=2").await,
        StatusCode::OK,
    )
    .await;
    let suspended = json_with_status(
        app.list_projects(&ops, "?status=suspended").await,
        StatusCode::OK,
    )
    .await;
    let searched =
        json_with_status(app.list_projects(&ops, "?search=AMM").await, StatusCode::OK).await;
    let deleted = json_with_status(
        app.list_projects(&ops, "?deleted=true").await,
        StatusCode::OK,
    )
    .await;
    let bad = app
        .list_projects(
            &ops,
            &format!("?status=gone&perPage=0&search={}", "s".repeat(201)),
        )
        .await;

    assert_eq!(ids(&first), [gamma.to_string(), beta.to_string()]);
    assert_eq!(
        first["meta"]["pagination"]["total"], 4,
        "the demo project too"
    );
    assert_eq!(first["meta"]["pagination"]["hasNext"], true);
    assert_eq!(
        ids(&second),
        [alpha.to_string(), app.project_id().to_string()]
    );
    assert_eq!(second["meta"]["pagination"]["hasNext"], false);
    assert_eq!(ids(&suspended), [beta.to_string()]);
    assert_eq!(ids(&searched), [gamma.to_string()]);
    assert_eq!(ids(&deleted), [delta.to_string()]);
    assert!(deleted["data"][0]["deletedAt"].is_string());
    let error = assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(error["details"].as_array().unwrap().len(), 3, "{error}");
}

#[tokio::test]
async fn an_update_changes_only_the_given_fields_and_is_audited() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let (created, id, _) = app.new_project("Before").await;

    let resp = app
        .update_project(
            &ops,
            &id.to_string(),
            &json!({"name": "After", "settings": {"eventsPerSecond": 20}}),
        )
        .await;
    let body = json_with_status(resp, StatusCode::OK).await;
    let read = json_with_status(app.get_project(&ops, &id.to_string()).await, StatusCode::OK).await;

    assert_eq!(body["data"], read["data"]);
    assert_eq!(read["data"]["name"], "After");
    assert_eq!(read["data"]["slug"], created["project"]["slug"], "kept");
    assert_eq!(read["data"]["status"], "active");
    assert_eq!(read["data"]["settings"], json!({"eventsPerSecond": 20}));
    let entries = audited(&app, id, "project.updated").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].1["changes"],
        json!({
            "name": {"from": "Before", "to": "After"},
            "settings": {"from": {}, "to": {"eventsPerSecond": 20}},
        })
    );
    // `{}` clears the settings; an unknown project is a 404
    let cleared = app
        .update_project(&ops, &id.to_string(), &json!({"settings": {}}))
        .await;
    assert_eq!(
        json_with_status(cleared, StatusCode::OK).await["data"]["settings"],
        json!({})
    );
    let missing = app
        .update_project(&ops, &Uuid::new_v4().to_string(), &json!({"name": "x"}))
        .await;
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn stats_count_the_projects_users_keys_rules_and_last_days_events() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let (_, id, _) = app.new_project("Counted").await;
    app.active_user(id, "a@example.com", "admin").await;
    let seen = app.active_user(id, "b@example.com", "member").await;
    sqlx::query("UPDATE users SET last_seen_at = now() WHERE user_id = $1")
        .bind(seen)
        .execute(&app.env.pool)
        .await
        .unwrap();
    app.new_api_key(id, "second").await;
    // rules, events and notifications, straight in the database: two rules (one inactive), an
    // event and its notification now, and an older event and notification that are not counted
    let rule = Uuid::now_v7();
    for (rule_id, active) in [(rule, true), (Uuid::now_v7(), false)] {
        sqlx::query(
            "INSERT INTO rules (project_id, rule_id, name, event_types, title_template,
                                target_role_ids, channels, active)
             VALUES ($1, $2, $3, '{order.*}', 't', '{}', '{inApp}', $4)",
        )
        .bind(id)
        .bind(rule_id)
        .bind(format!("rule {rule_id}"))
        .bind(active)
        .execute(&app.env.pool)
        .await
        .unwrap();
    }
    let two_days_ago = chrono::Utc::now() - chrono::Duration::hours(48);
    let old_id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        two_days_ago.timestamp() as u64,
        0,
    ));
    for (event_id, at, project) in [
        (Uuid::now_v7(), chrono::Utc::now(), id),
        (old_id, two_days_ago, id),
        (Uuid::now_v7(), chrono::Utc::now(), app.project_id()),
    ] {
        sqlx::query(
            "INSERT INTO events (project_id, event_id, type, payload, occurred_at, received_at,
                                 job_id, rules_version)
             VALUES ($1, $2, 'order.created', '{}', $3, $3, $4, 0)",
        )
        .bind(project)
        .bind(event_id)
        .bind(at)
        .bind(Uuid::now_v7())
        .execute(&app.env.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO notifications (project_id, notification_id, event_id, rule_id, title,
                                        body, priority, channels, created_at)
             VALUES ($1, $2, $3, $4, 't', '', 0, '{inApp}', $5)",
        )
        .bind(project)
        .bind(Uuid::now_v7())
        .bind(event_id)
        .bind(rule)
        .bind(at)
        .execute(&app.env.pool)
        .await
        .unwrap();
    }

    let body = json_with_status(
        app.project_stats(&ops, &id.to_string()).await,
        StatusCode::OK,
    )
    .await;
    let missing = app.project_stats(&ops, &Uuid::new_v4().to_string()).await;

    assert_eq!(
        body["data"],
        json!({
            "projectId": id,
            "users": {"total": 2, "invited": 0, "active": 2, "deactivated": 0, "seenLast24h": 1},
            "apiKeys": 2,
            "rules": {"total": 2, "active": 1},
            "eventsLast24h": 1,
            "notificationsLast24h": 1,
        })
    );
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn suspending_a_project_refuses_its_tokens_and_keys_with_403_on_every_instance() {
    let app = TestApp::spawn().await;
    let other = app.second_instance().await;
    let (_, id, key) = app.new_project("Suspendable").await;
    app.active_user(id, "u@example.com", "admin").await;
    let token = app.env.token(id, &["user:read"]);
    let login = app.token_of("u@example.com").await;
    for instance in [&app, &other] {
        assert_eq!(instance.key_status(&key).await, StatusCode::OK);
        assert_eq!(instance.me(&login).await.status(), StatusCode::OK);
    }

    app.set_project_status(id, "suspended").await;

    for instance in [&app, &other] {
        assert_error(
            instance.current_project_by_key(&key).await,
            StatusCode::FORBIDDEN,
            "project_suspended",
        )
        .await;
        assert_error(
            instance.get_users(&token, "").await,
            StatusCode::FORBIDDEN,
            "project_suspended",
        )
        .await;
        assert_error(
            instance.me(&login).await,
            StatusCode::FORBIDDEN,
            "project_suspended",
        )
        .await;
    }
    // another project is not affected; the operator still manages the suspended one
    assert_eq!(
        other.get_users(&app.admin_token(), "").await.status(),
        StatusCode::OK,
        "the demo project works"
    );
    let listed = app
        .list_api_keys(&app.platform_token(), &id.to_string(), "")
        .await;
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(audited(&app, id, "project.suspended").await.len(), 1);

    app.set_project_status(id, "active").await;

    for instance in [&app, &other] {
        assert_eq!(instance.key_status(&key).await, StatusCode::OK);
        assert_eq!(instance.me(&login).await.status(), StatusCode::OK);
    }
    assert_eq!(audited(&app, id, "project.reactivated").await.len(), 1);
}

#[tokio::test]
async fn a_deleted_project_is_gone_and_its_tokens_and_keys_get_401_on_every_instance() {
    let app = TestApp::spawn().await;
    let other = app.second_instance().await;
    let ops = app.platform_token();
    let (_, id, key) = app.new_project("Doomed").await;
    let token = app.env.token(id, &["user:read"]);
    assert_eq!(other.key_status(&key).await, StatusCode::OK);

    let deleted = app.delete_project(&ops, &id.to_string()).await;

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    for instance in [&app, &other] {
        assert_error(
            instance.current_project_by_key(&key).await,
            StatusCode::UNAUTHORIZED,
            "project_deleted",
        )
        .await;
        assert_error(
            instance.get_users(&token, "").await,
            StatusCode::UNAUTHORIZED,
            "project_deleted",
        )
        .await;
    }
    for resp in [
        app.get_project(&ops, &id.to_string()).await,
        app.delete_project(&ops, &id.to_string()).await,
        app.update_project(&ops, &id.to_string(), &json!({"status": "active"}))
            .await,
        app.project_stats(&ops, &id.to_string()).await,
        app.list_api_keys(&ops, &id.to_string(), "").await,
        app.create_api_key(&ops, &id.to_string(), &json!({"name": "late"}))
            .await,
    ] {
        assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    }
    // the row stays, marked
    let deleted_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT deleted_at FROM projects WHERE project_id = $1")
            .bind(id)
            .fetch_one(&app.env.pool)
            .await
            .unwrap();
    assert!(deleted_at.is_some());
    assert_eq!(audited(&app, id, "project.deleted").await.len(), 1);
}

#[tokio::test]
async fn an_api_process_starting_restores_the_blocked_projects_markers_redis_lost() {
    let app = TestApp::spawn().await;
    let (_, id, _) = app.new_project("Suspended").await;
    let token = app.env.token(id, &["user:read"]);
    app.set_project_status(id, "suspended").await;
    assert_eq!(
        app.get_users(&token, "").await.status(),
        StatusCode::FORBIDDEN
    );

    // Redis loses the markers (flushed, replaced): tokens are checked against Redis only
    let mut redis = app.env.queues.connection();
    let _: () = redis::cmd("DEL")
        .arg(format!(
            "{}:auth:project-states",
            app.env.settings.redis.prefix
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(app.get_users(&token, "").await.status(), StatusCode::OK);

    let restarted = app.second_instance().await;

    eventually(
        Duration::from_secs(10),
        "the marker is written again",
        || {
            let (restarted, token) = (&restarted, &token);
            async move {
                (restarted.get_users(token, "").await.status() == StatusCode::FORBIDDEN)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        app.get_users(&token, "").await.status(),
        StatusCode::FORBIDDEN,
        "on every process"
    );
}

#[tokio::test]
async fn a_late_refill_never_undoes_a_newer_change() {
    let app = TestApp::spawn().await;
    let (_, id, _) = app.new_project("Flapping").await;
    let token = app.env.token(id, &["user:read"]);
    app.set_project_status(id, "suspended").await;
    // what a refill read before the project was reactivated
    let stale = shared::db::projects::blocked(&app.env.pool).await.unwrap();
    app.set_project_status(id, "active").await;

    let sessions = shared::sessions::Sessions::new(&app.env.queues);
    let states: Vec<_> = stale.iter().map(|(p, b, v)| (*p, Some(*b), *v)).collect();
    sessions.set_project_states(&states).await.unwrap();

    assert_eq!(app.get_users(&token, "").await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// API keys

#[tokio::test]
async fn a_projects_admin_manages_its_own_keys_and_a_member_cannot() {
    let app = TestApp::spawn().await;
    let project = app.project_id();
    let pid = project.to_string();
    let (admin_id, admin) = app.admin("admin@example.com").await;
    app.active_user(project, "member@example.com", "member")
        .await;
    let member = app.token_of("member@example.com").await;

    let created = app
        .create_api_key(&admin, &pid, &json!({"name": "billing"}))
        .await;
    let body = json_with_status(created, StatusCode::CREATED).await;
    let key_id = id_of(&body["data"]);
    let key = body["data"]["key"].as_str().unwrap().to_owned();
    assert_eq!(app.key_status(&key).await, StatusCode::OK);
    let duplicate = app
        .create_api_key(&admin, &pid, &json!({"name": "billing"}))
        .await;
    assert_error(duplicate, StatusCode::CONFLICT, "conflict").await;

    for resp in [
        app.list_api_keys(&member, &pid, "").await,
        app.create_api_key(&member, &pid, &json!({"name": "x"}))
            .await,
        app.get_api_key(&member, &pid, &key_id).await,
        app.rotate_api_key(&member, &pid, &key_id, &json!({})).await,
        app.revoke_api_key(&member, &pid, &key_id).await,
    ] {
        let error = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("api-keys:manage")
        );
    }

    let revoked = app.revoke_api_key(&admin, &pid, &key_id).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.key_status(&key).await, StatusCode::UNAUTHORIZED);
    let again = app.revoke_api_key(&admin, &pid, &key_id).await;
    assert_error(again, StatusCode::NOT_FOUND, "not_found").await;
    for action in ["api_key.created", "api_key.revoked"] {
        let entries = audited(&app, project, action).await;
        assert_eq!(entries.len(), 1, "{action}");
        assert_eq!(entries[0].0, Some(admin_id), "{action}: the admin acted");
    }
}

#[tokio::test]
async fn bad_key_input_is_a_422_naming_every_field() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let pid = app.project_id().to_string();
    let (key_id, _) = app.new_api_key(app.project_id(), "k").await;

    let past = app
        .create_api_key(
            &ops,
            &pid,
            &json!({"name": "", "expiresAt": "2000-01-01T00:00:00Z"}),
        )
        .await;
    let far = app
        .create_api_key(
            &ops,
            &pid,
            &json!({"name": "x".repeat(101), "expiresAt": "2999-01-01T00:00:00Z"}),
        )
        .await;
    let grace = app
        .rotate_api_key(
            &ops,
            &pid,
            &key_id.to_string(),
            &json!({"graceSeconds": 604_801}),
        )
        .await;
    let negative = app
        .rotate_api_key(
            &ops,
            &pid,
            &key_id.to_string(),
            &json!({"graceSeconds": -1}),
        )
        .await;

    for resp in [past, far] {
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["name", "expiresAt"], "{error}");
    }
    for resp in [grace, negative] {
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(error["details"][0]["field"], "graceSeconds", "{error}");
    }
}

#[tokio::test]
async fn a_project_has_at_most_fifty_keys() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let pid = app.project_id().to_string();
    // 49 straight in the database (the project starts with none), the 50th through the API
    for n in 0..49 {
        let key = shared::api_keys::generate();
        let mut conn = app.env.pool.acquire().await.unwrap();
        shared::db::api_keys::create(
            &mut conn,
            &shared::db::api_keys::NewApiKey {
                id: Uuid::now_v7(),
                project_id: app.project_id(),
                name: &format!("k{n}"),
                prefix: &key.prefix,
                hash: &key.hash,
                expires_at: None,
                created_by: None,
            },
        )
        .await
        .unwrap();
    }
    app.new_api_key(app.project_id(), "fiftieth").await;

    let over = app
        .create_api_key(&ops, &pid, &json!({"name": "one more"}))
        .await;

    let error = assert_error(over, StatusCode::CONFLICT, "conflict").await;
    assert!(error["message"].as_str().unwrap().contains("50"));
    let page = json_with_status(
        app.list_api_keys(&ops, &pid, "?perPage=20&page=3").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 10);
    assert_eq!(page["meta"]["pagination"]["total"], 50);
    assert_eq!(page["data"][9]["name"], "k0", "newest first");
}

#[tokio::test]
async fn malformed_unknown_and_wrong_keys_are_refused_alike_with_401() {
    let app = TestApp::spawn().await;
    let (_, key) = app.new_api_key(app.project_id(), "real").await;
    let prefix = key.split('_').nth(1).unwrap();
    let wrong_secret = format!("ck_{prefix}_{}", "a".repeat(52));
    let unknown_prefix = format!("ck_{}_{}", "b".repeat(12), &key[16..]);

    for bad in [
        "",
        "nonsense",
        &key[..key.len() - 1],
        &format!("{key}x"),
        &wrong_secret,
        &unknown_prefix,
        &key.to_uppercase(),
    ] {
        let resp = app.current_project_by_key(bad).await;
        let error = assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_eq!(error["message"], "invalid API key", "{bad:?}");
    }
    // a key and a token together are refused; neither at all names both
    let both = send(
        app.keyed(Method::GET, "/api/v1/projects/current", &key)
            .bearer_auth(app.admin_token()),
    )
    .await;
    assert_error(both, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let none = send(app.request(Method::GET, "/api/v1/projects/current")).await;
    let error = assert_error(none, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(error["message"].as_str().unwrap().contains("X-API-Key"));
    // a key is not a bearer token, and opens only the routes that accept keys
    let as_bearer = app.current_project(&key).await;
    assert_error(as_bearer, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let users = send(app.keyed(Method::GET, "/api/v1/users", &key)).await;
    assert_error(users, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn an_expired_key_is_refused_and_cannot_be_rotated() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let (key_id, key) = app.new_api_key(app.project_id(), "short-lived").await;
    assert_eq!(app.key_status(&key).await, StatusCode::OK);

    sqlx::query(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE api_key_id = $1",
    )
    .bind(key_id)
    .execute(&app.env.pool)
    .await
    .unwrap();

    let error = assert_error(
        app.current_project_by_key(&key).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("expired"));
    let rotate = app
        .rotate_api_key(
            &ops,
            &app.project_id().to_string(),
            &key_id.to_string(),
            &json!({}),
        )
        .await;
    assert_error(rotate, StatusCode::CONFLICT, "conflict").await;
    // a future expiry is shown and kept
    let resp = app
        .create_api_key(
            &ops,
            &app.project_id().to_string(),
            &json!({"name": "dated", "expiresAt": "2030-01-01T00:00:00+02:00"}),
        )
        .await;
    let body = json_with_status(resp, StatusCode::CREATED).await;
    assert_eq!(body["data"]["expiresAt"], "2029-12-31T22:00:00Z");
    let dated = body["data"]["key"].as_str().unwrap();
    assert_eq!(app.key_status(dated).await, StatusCode::OK);
}

#[tokio::test]
async fn a_rotated_keys_old_secret_works_until_its_grace_period_ends() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let pid = app.project_id().to_string();
    let (key_id, old) = app.new_api_key(app.project_id(), "rotating").await;

    let started = std::time::Instant::now();
    let resp = app
        .rotate_api_key(&ops, &pid, &key_id.to_string(), &json!({"graceSeconds": 5}))
        .await;
    let body = json_with_status(resp, StatusCode::OK).await;
    let new = body["data"]["key"].as_str().unwrap().to_owned();

    assert_ne!(new, old);
    assert_eq!(
        new.split('_').nth(1),
        old.split('_').nth(1),
        "the prefix stays"
    );
    assert!(body["data"]["previousValidUntil"].is_string());
    assert!(body["data"]["rotatedAt"].is_string());
    let row = app.key_row(key_id).await;
    assert_eq!(row.secret_hash, Sha256::digest(new.as_bytes()).to_vec());
    assert_eq!(
        row.previous_hash,
        Some(Sha256::digest(old.as_bytes()).to_vec())
    );
    // within the grace period both work
    assert_eq!(app.key_status(&new).await, StatusCode::OK);
    assert_eq!(app.key_status(&old).await, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "checked within the grace period"
    );
    // after it, only the new one
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(started.elapsed())).await;
    eventually(Duration::from_secs(5), "the old secret stops", || {
        let (app, old) = (&app, &old);
        async move { (app.key_status(old).await == StatusCode::UNAUTHORIZED).then_some(()) }
    })
    .await;
    assert_eq!(app.key_status(&new).await, StatusCode::OK);
    let rotated = audited(&app, app.project_id(), "api_key.rotated").await;
    assert_eq!(rotated[0].1["graceSeconds"], 5);
    assert!(
        !rotated[0]
            .1
            .to_string()
            .contains(new.rsplit('_').next().unwrap())
    );
}

#[tokio::test]
async fn rotating_without_grace_stops_the_old_secret_at_once_and_the_default_grace_is_a_day() {
    let app = TestApp::spawn().await;
    let ops = app.platform_token();
    let pid = app.project_id().to_string();
    let (key_id, first) = app.new_api_key(app.project_id(), "rotating").await;

    let resp = app
        .rotate_api_key(&ops, &pid, &key_id.to_string(), &json!({"graceSeconds": 0}))
        .await;
    let second = json_with_status(resp, StatusCode::OK).await["data"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.key_status(&first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.key_status(&second).await, StatusCode::OK);

    let resp = app
        .rotate_api_key(&ops, &pid, &key_id.to_string(), &json!({}))
        .await;
    let body = json_with_status(resp, StatusCode::OK).await;
    let third = body["data"]["key"].as_str().unwrap().to_owned();
    let until = crate::helpers::time(&body["data"]["previousValidUntil"]);
    let day = chrono::Utc::now() + chrono::Duration::hours(24);
    assert!((until - day).num_seconds().abs() < 60, "{until} vs {day}");
    assert_eq!(app.key_status(&second).await, StatusCode::OK, "in grace");
    assert_eq!(app.key_status(&third).await, StatusCode::OK);

    // a second rotation ends the first one's grace: only the last two secrets work
    let resp = app
        .rotate_api_key(&ops, &pid, &key_id.to_string(), &json!({}))
        .await;
    let fourth = json_with_status(resp, StatusCode::OK).await["data"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.key_status(&second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.key_status(&third).await, StatusCode::OK);
    assert_eq!(app.key_status(&fourth).await, StatusCode::OK);
}

#[tokio::test]
async fn revoking_a_key_refuses_it_at_once_on_every_api_instance() {
    let app = TestApp::spawn().await;
    let other = app.second_instance().await;
    let ops = app.platform_token();
    let (key_id, key) = app.new_api_key(app.project_id(), "doomed").await;
    let (_, kept) = app.new_api_key(app.project_id(), "kept").await;
    for instance in [&app, &other] {
        assert_eq!(instance.key_status(&key).await, StatusCode::OK);
    }

    let revoked = app
        .revoke_api_key(&ops, &app.project_id().to_string(), &key_id.to_string())
        .await;

    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    // the very next request, on the instance that did not revoke it
    assert_eq!(other.key_status(&key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.key_status(&key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(other.key_status(&kept).await, StatusCode::OK);
    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE api_key_id = $1")
        .bind(key_id)
        .fetch_one(&app.env.pool)
        .await
        .unwrap();
    assert_eq!(gone, 0);
}

#[tokio::test]
async fn a_keys_last_use_is_written_at_most_once_a_minute() {
    let app = TestApp::spawn().await;
    let other = app.second_instance().await;
    let (key_id, key) = app.new_api_key(app.project_id(), "busy").await;
    assert_eq!(app.key_row(key_id).await.last_used_at, None);

    assert_eq!(app.key_status(&key).await, StatusCode::OK);
    let first = eventually(Duration::from_secs(5), "the first use is recorded", || {
        let app = &app;
        async move {
            let row = app.key_row(key_id).await;
            row.last_used_at.map(|_| row)
        }
    })
    .await;

    // many uses on two processes within the minute: not one write of the row
    let uses = (0..20).map(|i| {
        let instance = if i % 2 == 0 { &app } else { &other };
        instance.key_status(&key)
    });
    for status in futures::future::join_all(uses).await {
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.key_row(key_id).await, first, "the row was not written");

    // a minute later (the recorded use moved back), the next use is recorded once more
    sqlx::query(
        "UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds'
         WHERE api_key_id = $1",
    )
    .bind(key_id)
    .execute(&app.env.pool)
    .await
    .unwrap();
    let backdated = app.key_row(key_id).await.last_used_at.unwrap();
    assert_eq!(other.key_status(&key).await, StatusCode::OK);
    let recorded = eventually(Duration::from_secs(5), "the use is recorded again", || {
        let app = &app;
        async move {
            app.key_row(key_id)
                .await
                .last_used_at
                .filter(|t| *t > backdated)
        }
    })
    .await;
    assert!(recorded >= first.last_used_at.unwrap());
    let listed = json_with_status(
        app.get_api_key(
            &app.platform_token(),
            &app.project_id().to_string(),
            &key_id.to_string(),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        crate::helpers::time(&listed["data"]["lastUsedAt"]),
        recorded
    );
}

// ---------------------------------------------------------------------------------------------
// Tenancy

#[tokio::test]
async fn every_project_route_hides_another_projects_rows_from_its_tokens_and_keys() {
    let app = TestApp::spawn().await;
    let spec = served_spec(&app).await;
    // project A (the victim) with a key; project B (the caller) with an admin token and a key
    let (_, a, a_key) = app.new_project("Victim").await;
    let a_key_id = json_with_status(
        app.list_api_keys(&app.platform_token(), &a.to_string(), "")
            .await,
        StatusCode::OK,
    )
    .await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, b, b_key) = app.new_project("Caller").await;
    let b_token = app.admin_token_for(b);
    let b_user_token = {
        app.active_user(b, "b-admin@example.com", "admin").await;
        app.token_of("b-admin@example.com").await
    };

    let project_ops: Vec<_> = operations(&spec)
        .into_iter()
        .filter(|op| op.path.starts_with("/api/v1/projects"))
        .collect();
    assert_eq!(
        project_ops.len(),
        12,
        "the routes this walk covers: {project_ops:?}"
    );

    for op in &project_ops {
        let concrete =
            |project: &str, key: &str| op.path.replace("{id}", project).replace("{keyId}", key);
        let victim = concrete(&a.to_string(), &a_key_id);
        let nowhere = concrete(&Uuid::new_v4().to_string(), &Uuid::new_v4().to_string());
        let scopes = op.bearer_scopes.clone().unwrap_or_default();
        let platform_only = scopes.iter().any(|s| s == "projects:manage");

        for token in [&b_token, &b_user_token] {
            let send_to = |path: &str| {
                let mut req = app.authed(op.method.clone(), path, token);
                if op.has_body {
                    req = req.json(&json!({"name": "intruder"}));
                }
                send(req)
            };
            let at_victim = send_to(&victim).await;
            let status = at_victim.status();
            let body: Value = at_victim.json().await.unwrap_or_default();
            if op.path == "/api/v1/projects/current" {
                // its own project, never another
                assert_eq!(status, StatusCode::OK, "{op}");
                assert_eq!(body["data"]["id"], b.to_string(), "{op}");
            } else if platform_only {
                // refused whatever the id: the same answer for a project that does not exist
                let at_nowhere = send_to(&nowhere).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{op}: {body}");
                assert_eq!(at_nowhere.status(), StatusCode::FORBIDDEN, "{op}");
            } else {
                assert_eq!(status, StatusCode::NOT_FOUND, "{op}: {body}");
                assert_eq!(body["error"]["code"], "not_found", "{op}");
                let at_nowhere = send_to(&nowhere).await;
                assert_eq!(at_nowhere.status(), StatusCode::NOT_FOUND, "{op}");
            }
        }

        // B's API key opens no route of A either
        let mut req = app.keyed(op.method.clone(), &victim, &b_key);
        if op.has_body {
            req = req.json(&json!({"name": "intruder"}));
        }
        let resp = send(req).await;
        if op.path == "/api/v1/projects/current" {
            let body = json_with_status(resp, StatusCode::OK).await;
            assert_eq!(body["data"]["id"], b.to_string());
        } else {
            assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    }

    // A is untouched: its key works, nothing was added, rotated or revoked
    assert_eq!(app.key_status(&a_key).await, StatusCode::OK);
    let keys = json_with_status(
        app.list_api_keys(&app.platform_token(), &a.to_string(), "")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    assert!(keys["data"][0]["rotatedAt"].is_null());
    let project = json_with_status(
        app.get_project(&app.platform_token(), &a.to_string()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(project["data"]["name"], "Victim");
    assert_eq!(project["data"]["status"], "active");
    let writes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE project_id = $1
         AND action NOT IN ('project.created', 'api_key.created')",
    )
    .bind(a)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert_eq!(writes, 0);
    // and B's own list shows B's keys only
    let own = json_with_status(
        app.list_api_keys(&b_token, &b.to_string(), "").await,
        StatusCode::OK,
    )
    .await;
    assert!(
        own["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["projectId"] == b.to_string()),
        "{own}"
    );
}

// ---------------------------------------------------------------------------------------------
// The migration, the CLI and the extractor for machine routes

/// The slugs the migration gives projects that existed before it: (name, slug) by name.
async fn slugs_after_migrating(names: &[&str]) -> Result<Vec<(String, String)>, sqlx::Error> {
    use sqlx::Connection as _;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the migrations")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    let ours = "20261202100000_projects_api_keys.sql";
    let server = shared::testing::server_url();
    let db = format!(
        "comet_test_mig_{}",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    let mut admin = sqlx::PgConnection::connect(&server).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await?;
    let result = async {
        let mut conn = sqlx::PgConnection::connect(&format!("{base}/{db}")).await?;
        for file in files.iter().filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().as_ref() < ours)
        }) {
            let sql = std::fs::read_to_string(file).expect("a migration");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
        }
        for name in names {
            sqlx::query("INSERT INTO projects (project_id, name) VALUES ($1, $2)")
                .bind(Uuid::now_v7())
                .bind(name)
                .execute(&mut conn)
                .await?;
        }
        let sql = std::fs::read_to_string(dir.join(ours)).expect("the migration");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        let slugs = sqlx::query_as("SELECT name, slug FROM projects ORDER BY name")
            .fetch_all(&mut conn)
            .await;
        conn.close().await?;
        slugs
    }
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {db} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    result
}

#[tokio::test]
async fn the_migration_gives_existing_projects_valid_unique_slugs() {
    let long = "Long ".repeat(20);
    let names = [
        "Acme Corp",
        "acme corp!",
        "日本",
        "--",
        long.as_str(),
        "demo",
    ];

    let slugs = slugs_after_migrating(&names).await.expect("migrated");

    let slug_of = |name: &str| {
        slugs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("{name} has a slug: {slugs:?}"))
    };
    let mut all: Vec<&str> = slugs.iter().map(|(_, s)| s.as_str()).collect();
    for slug in &all {
        assert!(shared::domain::Slug::parse(slug).is_ok(), "{slug:?}");
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), names.len(), "unique: {slugs:?}");
    assert_eq!(slug_of("demo"), "demo");
    assert_eq!(
        slug_of("Acme Corp"),
        "acme-corp",
        "the first keeps the plain slug"
    );
    assert!(slug_of("acme corp!").starts_with("acme-corp-"), "{slugs:?}");
    assert_eq!(slug_of("日本"), "project");
    assert!(slug_of("--").starts_with("project-"), "{slugs:?}");
    assert!(slug_of(&long).len() <= 63);
}

#[tokio::test]
async fn comet_api_token_platform_mints_a_platform_operators_token() {
    let app = TestApp::spawn().await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_comet-api"))
            .args(args)
            .env_clear()
            .envs(app.env.process_env())
            .output()
            .expect("run comet-api")
    };

    let out = run(&["token", "--platform"]);
    let refused = run(&[
        "token",
        "--platform",
        "--project",
        &app.project_id().to_string(),
    ]);
    let needs_permissions = run(&["token"]);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = shared::auth::verify(&app.env.settings.auth.jwt_secret, &token).unwrap();
    assert!(claims.platform);
    assert_eq!(claims.project_id, Uuid::nil());
    assert_eq!(
        claims.permissions,
        [
            "projects:manage",
            "queues:read",
            "queues:write",
            "schedules:read",
            "schedules:manage",
            "jobs:read",
            "jobs:write"
        ]
    );
    assert_eq!(app.list_projects(&token, "").await.status(), StatusCode::OK);
    assert!(!refused.status.success(), "a platform token has no project");
    assert!(
        !needs_permissions.status.success(),
        "--permission or --platform"
    );
}

/// A handler taking `Caller<EventsWrite>`, as the events routes will: the caller's project and
/// who it is.
async fn events_probe(
    caller: comet_api::auth::Caller<shared::permissions::EventsWrite>,
) -> axum::Json<Value> {
    let actor = match &caller.actor {
        comet_api::auth::Actor::Token(claims) => json!({"token": claims.sub}),
        comet_api::auth::Actor::ApiKey { key_id } => json!({"key": key_id}),
    };
    axum::Json(json!({"project": caller.project_id, "actor": actor, "user": caller.user_id()}))
}

#[tokio::test]
async fn a_machine_route_takes_a_token_with_its_permission_or_a_key_of_the_project() {
    use tower::ServiceExt as _;
    let app = TestApp::spawn().await;
    let state = comet_api::state(app.env.settings.clone()).expect("state");
    let probe = axum::Router::new()
        .route("/probe", axum::routing::get(events_probe))
        .with_state(state);
    let call = |header: (&'static str, String)| {
        let probe = probe.clone();
        async move {
            let req = axum::http::Request::get("/probe")
                .header(header.0, header.1)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = probe.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (_, id, key) = app.new_project("Sender").await;
    let key_id = app.key_row_id(&key).await;
    let writer = app.env.token(id, &["events:write"]);
    let reader = app.env.token(id, &["events:read"]);

    let (by_key, key_body) = call(("x-api-key", key.clone())).await;
    let (by_token, token_body) = call(("authorization", format!("Bearer {writer}"))).await;
    let (without, without_body) = call(("authorization", format!("Bearer {reader}"))).await;
    app.set_project_status(id, "suspended").await;
    let (suspended, suspended_body) = call(("x-api-key", key.clone())).await;

    assert_eq!(by_key.as_u16(), 200, "{key_body}");
    assert_eq!(
        key_body,
        json!({"project": id, "actor": {"key": key_id}, "user": null})
    );
    assert_eq!(by_token.as_u16(), 200, "{token_body}");
    assert_eq!(
        token_body,
        json!({"project": id, "actor": {"token": "test"}, "user": null})
    );
    assert_eq!(without.as_u16(), 403);
    assert!(
        without_body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events:write")
    );
    assert_eq!(suspended.as_u16(), 403);
    assert_eq!(suspended_body["error"]["code"], "project_suspended");
}
