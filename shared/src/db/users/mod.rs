//! Users of a project: invited, active or deactivated. The list, its filters, cursor, counts
//! and export stream are in [`list`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, types::Json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::roles::RoleRef;

/// A user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum UserStatus {
    /// Invited, has not accepted yet.
    Invited,
    /// Accepted; can log in.
    Active,
    /// Deactivated; sessions revoked, cannot log in.
    Deactivated,
}

impl UserStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "INVITED",
            UserStatus::Active => "ACTIVE",
            UserStatus::Deactivated => "DEACTIVATED",
        }
    }

    /// From the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        [
            UserStatus::Invited,
            UserStatus::Active,
            UserStatus::Deactivated,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The user id.
    pub id: Uuid,
    /// Email (lower case, unique in the project).
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Status.
    pub status: UserStatus,
    /// Roles held.
    pub roles: Vec<RoleRef>,
    /// Last authenticated change (updated at most every 5 minutes).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Created (invited) at.
    pub created_at: DateTime<Utc>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: Uuid,
    email: String,
    name: Option<String>,
    status: String,
    roles: Json<Vec<RoleRef>>,
    last_seen_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.user_id,
            email: r.email,
            name: r.name,
            status: UserStatus::parse(&r.status).unwrap_or(UserStatus::Deactivated),
            roles: r.roles.0,
            last_seen_at: r.last_seen_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A user's columns and roles, from rows of `users` named `u`.
macro_rules! user_columns {
    () => {
        r#"
    SELECT u.user_id, u.email, u.name, u.status, u.last_seen_at, u.created_at, u.updated_at,
           coalesce((SELECT json_agg(json_build_object('id', r.role_id, 'name', r.name) ORDER BY r.name)
                     FROM user_roles ur JOIN roles r ON r.role_id = ur.role_id
                     WHERE ur.project_id = u.project_id AND ur.user_id = u.user_id), '[]') AS roles
"#
    };
}

const SELECT_USER: &str = concat!(user_columns!(), " FROM users u");

mod list;
pub(crate) use list::like_pattern;
pub use list::*;

/// Creates an `INVITED` user; the caller maps `users_project_email_key` to a 409.
pub async fn create_invited(
    conn: &mut PgConnection,
    project_id: Uuid,
    email: &str,
    name: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO users (user_id, project_id, email, name, status) VALUES ($1, $2, $3, $4, 'INVITED') RETURNING user_id",
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(email)
    .bind(name)
    .fetch_one(conn)
    .await
}

/// Creates an `ACTIVE` user with a password (seeding the demo admin); returns its id, or the
/// existing user's id.
pub async fn ensure_active(
    conn: &mut PgConnection,
    project_id: Uuid,
    email: &str,
    name: &str,
    password_hash: &str,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        INSERT INTO users (user_id, project_id, email, name, status, password_hash)
        VALUES ($1, $2, $3, $4, 'ACTIVE', $5)
        ON CONFLICT (project_id, email) DO UPDATE
            SET status = 'ACTIVE', password_hash = EXCLUDED.password_hash
        RETURNING user_id
        "#,
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .fetch_one(conn)
    .await
}

/// One user of the project.
pub async fn find(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<User>, sqlx::Error> {
    let sql = format!("{SELECT_USER} WHERE u.project_id = $1 AND u.user_id = $2");
    let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(User::from))
}

/// What login needs to know about the users with an email, in every project.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginCandidate {
    /// The project.
    pub project_id: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// Its status.
    pub status: String,
    /// Its password hash (`None` until an invitation is accepted).
    pub password_hash: Option<String>,
}

/// The users with this email: in one project if given, else in every project (login only),
/// the most recently active first.
pub async fn login_candidates(
    pool: &PgPool,
    email: &str,
    project_id: Option<Uuid>,
) -> Result<Vec<LoginCandidate>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT project_id, user_id, status, password_hash FROM users
        WHERE email = $1 AND ($2::uuid IS NULL OR project_id = $2)
        ORDER BY last_seen_at DESC NULLS LAST, created_at LIMIT 10
        "#,
    )
    .bind(email)
    .bind(project_id)
    .fetch_all(pool)
    .await
}

/// Sets a user's status; returns the previous one (`None`: no such user in the project).
pub async fn set_status(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    status: UserStatus,
) -> Result<Option<UserStatus>, sqlx::Error> {
    let before: Option<String> = sqlx::query_scalar(
        r#"
        UPDATE users u SET status = $3 FROM (SELECT status FROM users
            WHERE project_id = $1 AND user_id = $2 FOR UPDATE) old
        WHERE u.project_id = $1 AND u.user_id = $2 RETURNING old.status
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(status.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(before.as_deref().and_then(UserStatus::parse))
}

/// The status of a user, locking its row for the rest of the transaction. A deleted user (bulk
/// `delete`) is none: no single-user write applies to it any more.
pub async fn lock_status(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<UserStatus>, sqlx::Error> {
    let s: Option<String> = sqlx::query_scalar(
        "SELECT status FROM users WHERE project_id = $1 AND user_id = $2 AND deleted_at IS NULL \
         FOR UPDATE",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(s.as_deref().and_then(UserStatus::parse))
}

/// The user with this email in the project and its status, locking its row for the rest of
/// the transaction (inviting an address again).
pub async fn lock_by_email(
    conn: &mut PgConnection,
    project_id: Uuid,
    email: &str,
) -> Result<Option<(Uuid, UserStatus)>, sqlx::Error> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, status FROM users WHERE project_id = $1 AND email = $2 FOR UPDATE",
    )
    .bind(project_id)
    .bind(email)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(id, s)| UserStatus::parse(&s).map(|s| (id, s))))
}

/// Sets an invited user's display name when a new invitation names one.
pub async fn rename_invited(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    name: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET name = coalesce($3, name)
         WHERE project_id = $1 AND user_id = $2 AND status = 'INVITED'",
    )
    .bind(project_id)
    .bind(user_id)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// The status of a user, share-locked for the rest of the transaction: login reads it (and the
/// permissions) under this lock, so it waits for a deactivation or role change in flight.
pub async fn share_lock_status(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<UserStatus>, sqlx::Error> {
    let s: Option<String> = sqlx::query_scalar(
        "SELECT status FROM users WHERE project_id = $1 AND user_id = $2 FOR SHARE",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(s.as_deref().and_then(UserStatus::parse))
}

/// Activates an invited user with its password (and name, if given).
pub async fn activate(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    password_hash: &str,
    name: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        r#"
        UPDATE users SET status = 'ACTIVE', password_hash = $3, name = coalesce($4, name)
        WHERE project_id = $1 AND user_id = $2 AND status = 'INVITED'
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(password_hash)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// A user's name, email and status before a profile change.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProfileBefore {
    /// The name before.
    pub name: Option<String>,
    /// The email before.
    pub email: String,
    /// The status (unchanged).
    pub status: String,
}

/// Sets a user's name and/or email (`None`: unchanged); returns what they were (`None`: no such
/// user in the project). The caller maps `users_project_email_key` to a 409.
pub async fn set_profile(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    name: Option<&str>,
    email: Option<&str>,
) -> Result<Option<ProfileBefore>, sqlx::Error> {
    sqlx::query_as(
        r#"
        UPDATE users u SET name = coalesce($3, u.name), email = coalesce($4, u.email)
        FROM (SELECT name, email, status FROM users
              WHERE project_id = $1 AND user_id = $2 FOR UPDATE) old
        WHERE u.project_id = $1 AND u.user_id = $2
        RETURNING old.name, old.email, old.status
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(name)
    .bind(email)
    .fetch_optional(conn)
    .await
}

/// The user of the project with this (lower-case) email: its id and status.
pub async fn by_email(
    conn: &mut PgConnection,
    project_id: Uuid,
    email: &str,
) -> Result<Option<(Uuid, UserStatus)>, sqlx::Error> {
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT user_id, status FROM users WHERE project_id = $1 AND email = $2")
            .bind(project_id)
            .bind(email)
            .fetch_optional(conn)
            .await?;
    Ok(row.and_then(|(id, s)| Some((id, UserStatus::parse(&s)?))))
}

/// Creates an `ACTIVE` user with its password hash; the caller maps `users_project_email_key`
/// to a 409.
pub async fn create_active(
    conn: &mut PgConnection,
    project_id: Uuid,
    email: &str,
    name: Option<&str>,
    password_hash: &str,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        INSERT INTO users (user_id, project_id, email, name, status, password_hash)
        VALUES ($1, $2, $3, $4, 'ACTIVE', $5) RETURNING user_id
        "#,
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .fetch_one(conn)
    .await
}

/// Whether a user has a password (it accepted its invitation, or was created with one).
pub async fn has_password(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT password_hash IS NOT NULL FROM users WHERE project_id = $1 AND user_id = $2",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
    .map(|b| b.unwrap_or(false))
}

/// A user's password hash (`None`: no such user, or no password yet).
pub async fn password_hash(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let hash: Option<Option<String>> = sqlx::query_scalar(
        "SELECT password_hash FROM users WHERE project_id = $1 AND user_id = $2",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(hash.flatten())
}

/// Sets an ACTIVE user's password hash; with `expected`, only while the stored hash is still
/// that one (a concurrent change or reset wins, and this returns false).
pub async fn set_password(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    password_hash: &str,
    expected: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        r#"
        UPDATE users SET password_hash = $3
        WHERE project_id = $1 AND user_id = $2 AND status = 'ACTIVE'
          AND ($4::text IS NULL OR password_hash = $4)
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(password_hash)
    .bind(expected)
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Records activity.
pub async fn touch_last_seen(
    pool: &PgPool,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET last_seen_at = now() WHERE project_id = $1 AND user_id = $2")
        .bind(project_id)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_the_round_trip_and_garbage_is_not_a_cursor() {
        let c = UserCursor {
            created_at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            user_id: Uuid::now_v7(),
        };
        let s = c.encode();
        assert!(
            s.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        );
        assert_eq!(UserCursor::decode(&s), Some(c));
        for bad in ["", "x", "bm90LWEtY3Vyc29y", "MTIzLm5vdC1hLXV1aWQ", "!!"] {
            assert_eq!(UserCursor::decode(bad), None, "{bad}");
        }
    }
}
