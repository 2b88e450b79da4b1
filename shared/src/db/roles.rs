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
/// permissions (and grants each to the default roles that name it, in every project, once;
/// likewise a platform permission that became a project one),
/// updates descriptions and platform flags, takes platform permissions away from every role,
/// and deletes permissions the code no longer has (with their grants).
pub async fn sync_permissions(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    use crate::permissions::ALL;
    let names: Vec<&str> = ALL.iter().map(|p| p.name).collect();
    let descriptions: Vec<&str> = ALL.iter().map(|p| p.description).collect();
    let platform: Vec<bool> = ALL.iter().map(|p| p.platform_only).collect();
    // platform permissions that become project ones are granted like new ones
    let was_platform: Vec<String> =
        sqlx::query_scalar("SELECT name FROM permissions WHERE platform_only")
            .fetch_all(&mut *conn)
            .await?;
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
    let opened = |p: &&crate::permissions::PermissionInfo| {
        inserted.contains(&p.name) || (!p.platform_only && was_platform.iter().any(|n| n == p.name))
    };
    for p in ALL.iter().filter(opened) {
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

/// The name of the built-in role that administers a project: it cannot be deleted or renamed,
/// always keeps [`is_admin_essential`] permissions, and the last ACTIVE user holding it cannot
/// lose it (the API's last-admin guard).
pub const ADMIN_ROLE: &str = "admin";

/// Whether the admin role must always hold `permission`: managing roles and users is how a
/// project gets every other permission back.
pub fn is_admin_essential(permission: &str) -> bool {
    permission.starts_with("role:") || permission.starts_with("user:")
}

/// A role as the roles API shows it: its permissions, how many users hold it, whether it is
/// built in.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RoleDetail {
    /// The role id.
    pub id: Uuid,
    /// Its name (unique in the project).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The permissions it grants, sorted.
    pub permissions: Vec<String>,
    /// Users holding it (any status).
    pub user_count: i64,
    /// The built-in `admin` role: cannot be deleted or renamed, and keeps `role:*` and
    /// `user:*`.
    pub built_in: bool,
    /// Created at.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last changed at.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A role's columns with its permissions and holder count, from `roles r` (the count is the
/// sum of the role's shards in `role_user_counts`, kept by triggers on `user_roles`).
const DETAIL: &str = r#"
    SELECT r.role_id AS id, r.name, r.description, r.created_at, r.updated_at,
           r.name = 'admin' AS built_in,
           coalesce((SELECT array_agg(rp.permission ORDER BY rp.permission)
                     FROM role_permissions rp WHERE rp.role_id = r.role_id), '{}') AS permissions,
           (SELECT coalesce(sum(c.users), 0)::int8 FROM role_user_counts c
            WHERE c.project_id = r.project_id AND c.role_id = r.role_id) AS user_count
    FROM roles r
"#;

/// Every role of a project, by name, with permissions and holder counts.
pub async fn list_detailed(
    pool: &PgPool,
    project_id: Uuid,
) -> Result<Vec<RoleDetail>, sqlx::Error> {
    let sql = format!("{DETAIL} WHERE r.project_id = $1 ORDER BY r.name");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .fetch_all(pool)
        .await
}

/// One role of the project, with permissions and holder count.
pub async fn find_detailed(
    conn: &mut PgConnection,
    project_id: Uuid,
    role_id: Uuid,
) -> Result<Option<RoleDetail>, sqlx::Error> {
    let sql = format!("{DETAIL} WHERE r.project_id = $1 AND r.role_id = $2");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(role_id)
        .fetch_optional(conn)
        .await
}

/// A role of the project, its row locked for the rest of the transaction: (name, permissions).
pub async fn lock(
    conn: &mut PgConnection,
    project_id: Uuid,
    role_id: Uuid,
) -> Result<Option<(String, Vec<String>)>, sqlx::Error> {
    let name: Option<String> = sqlx::query_scalar(
        "SELECT name FROM roles WHERE project_id = $1 AND role_id = $2 FOR NO KEY UPDATE",
    )
    .bind(project_id)
    .bind(role_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(name) = name else {
        return Ok(None);
    };
    let permissions = sqlx::query_scalar(
        "SELECT permission FROM role_permissions WHERE role_id = $1 ORDER BY permission",
    )
    .bind(role_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some((name, permissions)))
}

/// Creates a role with its permissions; the caller maps `roles_project_name_key` to a 409.
pub async fn create(
    conn: &mut PgConnection,
    project_id: Uuid,
    name: &str,
    description: &str,
    permissions: &[String],
) -> Result<Uuid, sqlx::Error> {
    let role_id: Uuid = sqlx::query_scalar(
        "INSERT INTO roles (role_id, project_id, name, description) VALUES ($1, $2, $3, $4) RETURNING role_id",
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(name)
    .bind(description)
    .fetch_one(&mut *conn)
    .await?;
    set_permissions(conn, role_id, permissions).await?;
    Ok(role_id)
}

/// Renames and re-describes a role (`None`: unchanged); the caller maps
/// `roles_project_name_key` to a 409.
pub async fn update(
    conn: &mut PgConnection,
    project_id: Uuid,
    role_id: Uuid,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        UPDATE roles SET name = coalesce($3, name), description = coalesce($4, description),
                         updated_at = now()
        WHERE project_id = $1 AND role_id = $2
        "#,
    )
    .bind(project_id)
    .bind(role_id)
    .bind(name)
    .bind(description)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces a role's permissions by `permissions`.
pub async fn set_permissions(
    conn: &mut PgConnection,
    role_id: Uuid,
    permissions: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM role_permissions WHERE role_id = $1 AND permission <> ALL($2)")
        .bind(role_id)
        .bind(permissions)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        r#"
        INSERT INTO role_permissions (role_id, permission)
        SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING
        "#,
    )
    .bind(role_id)
    .bind(permissions)
    .execute(conn)
    .await?;
    Ok(())
}

/// The users holding a role, with their status, locked (`FOR NO KEY UPDATE`) in id order.
pub async fn lock_holders(
    conn: &mut PgConnection,
    project_id: Uuid,
    role_id: Uuid,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT u.user_id, u.status FROM users u
        JOIN user_roles ur ON ur.project_id = u.project_id AND ur.user_id = u.user_id
        WHERE ur.project_id = $1 AND ur.role_id = $2
        ORDER BY u.user_id FOR NO KEY UPDATE OF u
        "#,
    )
    .bind(project_id)
    .bind(role_id)
    .fetch_all(conn)
    .await
}

/// Gives every holder of role `from` the role `to` (kept if held); returns how many gained it.
pub async fn reassign(
    conn: &mut PgConnection,
    project_id: Uuid,
    from: Uuid,
    to: Uuid,
) -> Result<u64, sqlx::Error> {
    let res = sqlx::query(
        r#"
        INSERT INTO user_roles (project_id, user_id, role_id)
        SELECT project_id, user_id, $3 FROM user_roles WHERE project_id = $1 AND role_id = $2
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(project_id)
    .bind(from)
    .bind(to)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// Deletes a role (its grants and assignments go with it); false if it is not in the project.
pub async fn delete(
    conn: &mut PgConnection,
    project_id: Uuid,
    role_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query("DELETE FROM roles WHERE project_id = $1 AND role_id = $2")
        .bind(project_id)
        .bind(role_id)
        .execute(conn)
        .await?;
    Ok(res.rows_affected() == 1)
}

/// Locks the project's admin role row (`FOR NO KEY UPDATE`: assignments, which only key-share
/// it, still go ahead) and returns its id: every change that could take the last admin away
/// takes this lock first, so two of them run one after the other and each counts the admins
/// the other left.
pub async fn lock_admin_role(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT role_id FROM roles WHERE project_id = $1 AND name = $2 FOR NO KEY UPDATE",
    )
    .bind(project_id)
    .bind(ADMIN_ROLE)
    .fetch_optional(conn)
    .await
}

/// ACTIVE users holding the role (as this transaction sees them).
pub async fn active_holders(
    conn: &mut PgConnection,
    project_id: Uuid,
    role_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        SELECT count(*) FROM user_roles ur
        JOIN users u ON u.project_id = ur.project_id AND u.user_id = ur.user_id
        WHERE ur.project_id = $1 AND ur.role_id = $2 AND u.status = 'ACTIVE'
        "#,
    )
    .bind(project_id)
    .bind(role_id)
    .fetch_one(conn)
    .await
}
