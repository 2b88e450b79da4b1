//! Roles and their permissions, per project. Every project starts with the default roles of
//! [`crate::permissions::DEFAULT_ROLES`], each holding the permissions that name it.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// A role as shown with a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// The role id.
    #[serde(alias = "role_id")]
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

/// A role with its permissions.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// The role id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The permissions it grants.
    pub permissions: Vec<String>,
}

/// Creates the default roles of a project if missing.
pub async fn ensure_defaults(conn: &mut PgConnection, project_id: Uuid) -> Result<(), sqlx::Error> {
    for (name, description) in crate::permissions::DEFAULT_ROLES {
        let perms = crate::permissions::of_default_role(name);
        let role_id: Uuid = sqlx::query_scalar(
            r#"
            INSERT INTO roles (role_id, project_id, name, description) VALUES ($1, $2, $3, $4)
            ON CONFLICT (project_id, name) DO UPDATE SET name = EXCLUDED.name
            RETURNING role_id
            "#,
        )
        .bind(Uuid::now_v7())
        .bind(project_id)
        .bind(name)
        .bind(description)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
            r#"
            INSERT INTO role_permissions (role_id, permission)
            SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING
            "#,
        )
        .bind(role_id)
        .bind(perms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Brings the `permissions` table in line with [`crate::permissions::ALL`]: adds new
/// permissions (and grants each to the default roles that name it, in every project, once),
/// updates descriptions and platform flags, takes platform permissions away from every role,
/// and deletes permissions the code no longer has (with their grants).
pub async fn sync_permissions(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    use crate::permissions::ALL;
    let names: Vec<&str> = ALL.iter().map(|p| p.name).collect();
    let descriptions: Vec<&str> = ALL.iter().map(|p| p.description).collect();
    let platform: Vec<bool> = ALL.iter().map(|p| p.platform_only).collect();
    // `xmax = 0` tells a row this statement inserted from one it updated
    let changed: Vec<(String, bool)> = sqlx::query_as(
        r#"
        INSERT INTO permissions (name, description, platform_only)
        SELECT * FROM unnest($1::text[], $2::text[], $3::bool[])
        ON CONFLICT (name) DO UPDATE
            SET description = EXCLUDED.description, platform_only = EXCLUDED.platform_only
            WHERE (permissions.description, permissions.platform_only)
                IS DISTINCT FROM (EXCLUDED.description, EXCLUDED.platform_only)
        RETURNING name, xmax = 0
        "#,
    )
    .bind(&names)
    .bind(&descriptions)
    .bind(&platform)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: Vec<&str> = changed
        .iter()
        .filter(|(_, inserted)| *inserted)
        .map(|(n, _)| n.as_str())
        .collect();
    for p in ALL.iter().filter(|p| inserted.contains(&p.name)) {
        sqlx::query(
            r#"
            INSERT INTO role_permissions (role_id, permission)
            SELECT role_id, $1 FROM roles WHERE name = ANY($2)
            ON CONFLICT DO NOTHING
            "#,
        )
        .bind(p.name)
        .bind(p.default_roles)
        .execute(&mut *conn)
        .await?;
    }
    // a permission that became platform-only leaves every role that held it
    sqlx::query(
        "DELETE FROM role_permissions WHERE permission IN (SELECT name FROM permissions WHERE platform_only)",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM permissions WHERE name <> ALL($1)")
        .bind(&names)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every role of a project with its permissions.
pub async fn list(pool: &PgPool, project_id: Uuid) -> Result<Vec<Role>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT r.role_id AS id, r.name, r.description,
               coalesce(array_agg(rp.permission ORDER BY rp.permission)
                        FILTER (WHERE rp.permission IS NOT NULL), '{}') AS permissions
        FROM roles r LEFT JOIN role_permissions rp ON rp.role_id = r.role_id
        WHERE r.project_id = $1
        GROUP BY r.role_id ORDER BY r.name
        "#,
    )
    .bind(project_id)
    .fetch_all(pool)
    .await
}

/// The roles among `ids` that exist in the project.
pub async fn existing(
    conn: &mut PgConnection,
    project_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<RoleRef>, sqlx::Error> {
    sqlx::query_as(
        "SELECT role_id AS id, name FROM roles WHERE project_id = $1 AND role_id = ANY($2) ORDER BY name",
    )
    .bind(project_id)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// A project's role by name.
pub async fn by_name(
    conn: &mut PgConnection,
    project_id: Uuid,
    name: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT role_id FROM roles WHERE project_id = $1 AND name = $2")
        .bind(project_id)
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// Gives a user a role (no-op if held); false if the user or role is not in the project.
pub async fn assign(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    role_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        r#"
        INSERT INTO user_roles (project_id, user_id, role_id)
        SELECT $1, u.user_id, r.role_id FROM users u, roles r
        WHERE u.project_id = $1 AND u.user_id = $2 AND r.project_id = $1 AND r.role_id = $3
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(role_id)
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Takes every role from a user (an invitee invited again gets the new invitation's roles).
pub async fn clear(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_roles WHERE project_id = $1 AND user_id = $2")
        .bind(project_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes a role from a user; false if the user did not hold it.
pub async fn unassign(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    role_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "DELETE FROM user_roles WHERE project_id = $1 AND user_id = $2 AND role_id = $3",
    )
    .bind(project_id)
    .bind(user_id)
    .bind(role_id)
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// The permissions a user holds through its roles.
pub async fn permissions_of(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        SELECT DISTINCT rp.permission FROM user_roles ur
        JOIN role_permissions rp ON rp.role_id = ur.role_id
        WHERE ur.project_id = $1 AND ur.user_id = $2 ORDER BY 1
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_all(conn)
    .await
}
