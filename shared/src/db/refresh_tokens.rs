//! Refresh tokens: rotating, one use each, grouped in families (one per login). Only the
//! SHA-256 of a token is stored. Each row also records the access token issued beside it, so
//! revoking a family can revoke its access tokens (through the session store's markers).
//!
//! Why Postgres and not Redis: a refresh token lives for weeks, and a Redis without persistence
//! (as `./dev up` runs it) would log everyone out on restart and, worse, forget which tokens were
//! spent, so a stolen spent token could no longer be recognised as reused. In Postgres the
//! exchange is one row lock (`FOR UPDATE`), the reuse's revocation and its audit entry commit
//! together, and deactivation revokes a user's families in its own transaction. Refreshes are
//! rare (one per access-token lifetime per client), so the extra row writes are cheap.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A refresh token as the exchange reads it, with its family (locked `FOR UPDATE`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Presented {
    /// Its family.
    pub family_id: Uuid,
    /// The family's project.
    pub project_id: Uuid,
    /// The family's user.
    pub user_id: Uuid,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was exchanged (`Some`: this is a reuse).
    pub used_at: Option<DateTime<Utc>>,
    /// When the family was revoked.
    pub family_revoked_at: Option<DateTime<Utc>>,
}

/// An access token issued in a family (to revoke it with the family).
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct IssuedAccess {
    /// The token's `jti`.
    pub access_jti: Uuid,
    /// When it expires.
    pub access_expires_at: DateTime<Utc>,
}

/// A new refresh token's row.
#[derive(Debug, Clone, Copy)]
pub struct NewRefresh<'a> {
    /// SHA-256 of the token, hex.
    pub token_hash: &'a str,
    /// The access token issued beside it.
    pub access_jti: Uuid,
    /// Its expiry.
    pub access_expires_at: DateTime<Utc>,
    /// When the refresh token stops working.
    pub expires_at: DateTime<Utc>,
}

/// Starts a family (a login) with its first token; returns the family id.
pub async fn start_family(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    first: NewRefresh<'_>,
) -> Result<Uuid, sqlx::Error> {
    let family_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO refresh_families (family_id, project_id, user_id) VALUES ($1, $2, $3)",
    )
    .bind(family_id)
    .bind(project_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    insert(conn, family_id, first).await?;
    Ok(family_id)
}

/// Adds a token to a family (a rotation).
pub async fn insert(
    conn: &mut PgConnection,
    family_id: Uuid,
    token: NewRefresh<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"INSERT INTO refresh_tokens (token_hash, family_id, access_jti, access_expires_at, expires_at)
           VALUES ($1, $2, $3, $4, $5)"#,
    )
    .bind(token.token_hash)
    .bind(family_id)
    .bind(token.access_jti)
    .bind(token.access_expires_at)
    .bind(token.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The token with this hash and its family, both locked for the rest of the transaction (two
/// exchanges of one token serialise here: the second sees it used).
pub async fn lock_presented(
    conn: &mut PgConnection,
    token_hash: &str,
) -> Result<Option<Presented>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT t.family_id, f.project_id, f.user_id, t.expires_at, t.used_at,
                  f.revoked_at AS family_revoked_at
           FROM refresh_tokens t JOIN refresh_families f ON f.family_id = t.family_id
           WHERE t.token_hash = $1 FOR UPDATE OF t, f"#,
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}

/// Marks a token exchanged.
pub async fn mark_used(conn: &mut PgConnection, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes a family (if not yet) and returns the access tokens issued in it that have not
/// expired yet.
pub async fn revoke_family(
    conn: &mut PgConnection,
    family_id: Uuid,
    reason: &str,
) -> Result<Vec<IssuedAccess>, sqlx::Error> {
    sqlx::query(
        r#"UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2
           WHERE family_id = $1 AND revoked_at IS NULL"#,
    )
    .bind(family_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        r#"SELECT access_jti, access_expires_at FROM refresh_tokens
           WHERE family_id = $1 AND access_expires_at > now()"#,
    )
    .bind(family_id)
    .fetch_all(conn)
    .await
}

/// The family the access token `jti` was issued in, if any (a login's or a refresh's token).
pub async fn family_of_access(
    conn: &mut PgConnection,
    project_id: Uuid,
    jti: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        r#"SELECT t.family_id FROM refresh_tokens t JOIN refresh_families f ON f.family_id = t.family_id
           WHERE t.access_jti = $1 AND f.project_id = $2"#,
    )
    .bind(jti)
    .bind(project_id)
    .fetch_optional(conn)
    .await
}

/// Revokes every live family of a user, except `keep` (the caller's own, when a user changes
/// their password); returns how many were revoked.
pub async fn revoke_user_families(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let res = sqlx::query(
        r#"UPDATE refresh_families SET revoked_at = now(), revoked_reason = $4
           WHERE project_id = $1 AND user_id = $2 AND revoked_at IS NULL
             AND ($3::uuid IS NULL OR family_id <> $3)"#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(keep)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}
