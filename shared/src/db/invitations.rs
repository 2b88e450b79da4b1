//! Invitations: one per invited user, identified by the SHA-256 of its token (the token itself
//! is never stored).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// An invitation row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invitation {
    /// Its id.
    pub invitation_id: Uuid,
    /// The project.
    pub project_id: Uuid,
    /// The invited user.
    pub user_id: Uuid,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Who invited (a user id).
    pub invited_by: Option<Uuid>,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// `PENDING`, `SENT` or `FAILED`.
    pub delivery: String,
    /// `PENDING`, or `EXPIRED` once the `expire_invitations` sweep found it past its expiry.
    pub status: String,
}

impl Invitation {
    /// Whether it no longer works: marked `EXPIRED`, or past its expiry and not swept yet.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.status == "EXPIRED" || self.expires_at <= now
    }
}

const COLUMNS: &str =
    "invitation_id, project_id, user_id, token_hash, invited_by, expires_at, delivery, status";

/// Creates the invitation of a user.
pub async fn create(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    token_hash: &str,
    invited_by: Option<Uuid>,
    expires_at: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        INSERT INTO user_invitations (invitation_id, project_id, user_id, token_hash, invited_by, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING invitation_id
        "#,
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(user_id)
    .bind(token_hash)
    .bind(invited_by)
    .bind(expires_at)
    .fetch_one(conn)
    .await
}

/// The invitation with this token hash, in any project (accepting knows only the token).
pub async fn by_token_hash(
    conn: &mut PgConnection,
    token_hash: &str,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM user_invitations WHERE token_hash = $1 FOR UPDATE");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(token_hash)
        .fetch_optional(conn)
        .await
}

/// The invitation with this token hash, without locking it: callers that also lock the user
/// lock the user first (the order every user-management write follows), then the invitation.
pub async fn find_by_token_hash(
    conn: &mut PgConnection,
    token_hash: &str,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM user_invitations WHERE token_hash = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(token_hash)
        .fetch_optional(conn)
        .await
}

/// One invitation of the project.
pub async fn get(
    pool: &PgPool,
    project_id: Uuid,
    invitation_id: Uuid,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM user_invitations WHERE project_id = $1 AND invitation_id = $2"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(invitation_id)
        .fetch_optional(pool)
        .await
}

/// The invitation of a user.
pub async fn of_user(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM user_invitations WHERE project_id = $1 AND user_id = $2 FOR UPDATE"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The invitation of a user, without locking it (to show it).
pub async fn state_of(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM user_invitations WHERE project_id = $1 AND user_id = $2");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// Replaces the token (the old one stops working); the expiry is kept. Returns the invitation.
pub async fn replace_token(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    token_hash: &str,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql = format!(
        r#"UPDATE user_invitations SET token_hash = $3, delivery = 'PENDING', delivery_error = NULL, sent_at = NULL
           WHERE project_id = $1 AND user_id = $2 RETURNING {COLUMNS}"#
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(user_id)
        .bind(token_hash)
        .fetch_optional(conn)
        .await
}

/// Deletes an invitation (accepted).
pub async fn delete(
    conn: &mut PgConnection,
    project_id: Uuid,
    invitation_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_invitations WHERE project_id = $1 AND invitation_id = $2")
        .bind(project_id)
        .bind(invitation_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the invitation of a user, if any (the user was deactivated before accepting).
pub async fn delete_of_user(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query("DELETE FROM user_invitations WHERE project_id = $1 AND user_id = $2")
        .bind(project_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(res.rows_affected() == 1)
}

/// Marks the email of an invitation (with this token) accepted by the mail server.
pub async fn mark_sent(
    conn: &mut PgConnection,
    project_id: Uuid,
    invitation_id: Uuid,
    token_hash: &str,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        r#"UPDATE user_invitations SET delivery = 'SENT', sent_at = now(), delivery_error = NULL
           WHERE project_id = $1 AND invitation_id = $2 AND token_hash = $3"#,
    )
    .bind(project_id)
    .bind(invitation_id)
    .bind(token_hash)
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Marks the email of an invitation (with this token, still `PENDING`) as given up on; false
/// when the invitation was resent, sent, accepted or already marked since.
pub async fn mark_failed(
    conn: &mut PgConnection,
    project_id: Uuid,
    invitation_id: Uuid,
    token_hash: &str,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        r#"UPDATE user_invitations SET delivery = 'FAILED', delivery_error = $4
           WHERE project_id = $1 AND invitation_id = $2 AND token_hash = $3 AND delivery = 'PENDING'"#,
    )
    .bind(project_id)
    .bind(invitation_id)
    .bind(token_hash)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Replaces a user's invitation by a new one (new id, token and expiry; the old token stops
/// working): inviting again an invitee whose invitation expired, or resending it. Returns the
/// new invitation's id.
pub async fn reissue(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    token_hash: &str,
    invited_by: Option<Uuid>,
    expires_at: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    delete_of_user(conn, project_id, user_id).await?;
    create(
        conn, project_id, user_id, token_hash, invited_by, expires_at,
    )
    .await
}

/// Marks up to `batch` pending invitations past their expiry `EXPIRED` and audits each
/// (`invitation.expired`, in its project), in one statement; returns how many it marked.
/// Invitations a request holds are skipped (`SKIP LOCKED`): the next run takes them.
pub async fn expire_due(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        r#"
        WITH due AS (
            SELECT invitation_id FROM user_invitations
            WHERE status = 'PENDING' AND expires_at <= now()
            ORDER BY expires_at LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), expired AS (
            UPDATE user_invitations i SET status = 'EXPIRED', expired_at = now()
            FROM due WHERE i.invitation_id = due.invitation_id
            RETURNING i.invitation_id, i.project_id, i.user_id, i.expires_at, i.invited_by
        ), audited AS (
            INSERT INTO audit_log (audit_id, project_id, action, target_type, target_id, metadata)
            SELECT gen_random_uuid(), project_id, 'invitation.expired', 'user', user_id::text,
                   jsonb_build_object('invitationId', invitation_id, 'expiresAt', expires_at,
                                      'invitedBy', invited_by)
            FROM expired
            RETURNING 1
        )
        SELECT count(*) FROM audited
        "#,
    )
    .bind(batch)
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}
