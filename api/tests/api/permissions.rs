//! Permissions are declared once (`shared::permissions`): the `permissions` table, the default
//! roles and the API follow that declaration.

use std::collections::BTreeMap;

use shared::permissions::{ALL, of_default_role};

use crate::helpers::TestApp;

async fn table(app: &TestApp) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>("SELECT name, description FROM permissions")
        .fetch_all(&app.env.pool)
        .await
        .expect("permissions")
        .into_iter()
        .collect()
}

async fn granted(app: &TestApp, role: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT rp.permission FROM role_permissions rp JOIN roles r USING (role_id)
         WHERE r.project_id = $1 AND r.name = $2 ORDER BY 1",
    )
    .bind(app.project_id())
    .bind(role)
    .fetch_all(&app.env.pool)
    .await
    .expect("grants")
}

fn sorted(names: Vec<&str>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().map(str::to_owned).collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_permissions_table_and_default_roles_match_the_declaration() {
    let app = TestApp::spawn().await;
    let expected: BTreeMap<String, String> = ALL
        .iter()
        .map(|p| (p.name.to_owned(), p.description.to_owned()))
        .collect();
    assert_eq!(table(&app).await, expected);
    for role in ["admin", "member"] {
        assert_eq!(
            granted(&app, role).await,
            sorted(of_default_role(role)),
            "{role}"
        );
    }
}

#[tokio::test]
async fn migrating_brings_the_table_back_in_line_with_the_code() {
    let app = TestApp::spawn().await;
    let pool = &app.env.pool;
    // a permission the code no longer has, granted to admin; one the code has, lost with its
    // grants; one whose description drifted
    sqlx::query("INSERT INTO permissions (name, description) VALUES ('gone:away', 'old')")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO role_permissions (role_id, permission)
         SELECT role_id, 'gone:away' FROM roles WHERE name = 'admin'",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM permissions WHERE name = 'jobs:read'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE permissions SET description = 'stale' WHERE name = 'user:read'")
        .execute(pool)
        .await
        .unwrap();

    shared::db::migrate(pool).await.expect("migrate again");

    let table = table(&app).await;
    assert!(
        !table.contains_key("gone:away"),
        "the stale permission is deleted"
    );
    assert_eq!(table["user:read"], "List, view and export users");
    assert_eq!(table.len(), ALL.len());
    // the re-added permission is granted to the default roles that name it, once
    assert_eq!(
        granted(&app, "admin").await,
        sorted(of_default_role("admin"))
    );
    assert_eq!(
        granted(&app, "member").await,
        sorted(of_default_role("member"))
    );
}

#[tokio::test]
async fn a_permission_removed_from_a_default_role_stays_removed_across_migrations() {
    let app = TestApp::spawn().await;
    sqlx::query(
        "DELETE FROM role_permissions WHERE permission = 'user:read'
         AND role_id IN (SELECT role_id FROM roles WHERE name = 'member')",
    )
    .execute(&app.env.pool)
    .await
    .unwrap();
    shared::db::migrate(&app.env.pool)
        .await
        .expect("migrate again");
    let mut without = of_default_role("member");
    without.retain(|p| *p != "user:read");
    assert_eq!(granted(&app, "member").await, sorted(without));
}
