//! Password-reset tokens: one-time, short-lived, only their SHA-256 stored. A new reset
//! replaces the user's earlier unused ones; using one spends every token of the user.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A reset token's row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reset {
    /// Its id.
    pub reset_id: Uuid,
    /// The project.
    pub project_id: Uuid,
    /// The user whose password it resets.
    pub user_id: Uuid,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was used.
    pub used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "reset_id, project_id, user_id, expires_at, used_at";

/// Creates a reset token for a user, spending the user's earlier unused ones; returns its id.
pub async fn create(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    token_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query(
        "UPDATE password_resets SET used_at = now() WHERE project_id = $1 AND user_id = $2 AND used_at IS NULL",
    )
    .bind(project_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        r#"INSERT INTO password_resets (reset_id, project_id, user_id, token_hash, expires_at)
           VALUES ($1, $2, $3, $4, $5) RETURNING reset_id"#,
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(user_id)
    .bind(token_hash)
    .bind(expires_at)
    .fetch_one(conn)
    .await
}

/// The reset with this token hash, in any project (the token is all the caller has); with
/// `lock`, locked for the rest of the transaction.
pub async fn by_token_hash(
    conn: &mut PgConnection,
    token_hash: &str,
    lock: bool,
) -> Result<Option<Reset>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM password_resets WHERE token_hash = $1{lock}");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(token_hash)
        .fetch_optional(conn)
        .await
}

/// Records that the reset's email was accepted by the mail server.
pub async fn mark_sent(
    conn: &mut PgConnection,
    project_id: Uuid,
    reset_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE password_resets SET sent_at = now() WHERE project_id = $1 AND reset_id = $2",
    )
    .bind(project_id)
    .bind(reset_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Spends every unused reset token of the user (one was used, or the password changed).
pub async fn spend_all(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE password_resets SET used_at = now() WHERE project_id = $1 AND user_id = $2 AND used_at IS NULL",
    )
    .bind(project_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}
