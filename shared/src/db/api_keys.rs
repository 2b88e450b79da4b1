//! A project's API keys: the rows (name, visible prefix, SHA-256 of the key, the previous
//! secret's hash during a rotation's grace period, expiry, last use), and the look-up a
//! request with `X-API-Key` makes. The key format and hashing are [`crate::api_keys`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// How often a key's `last_used_at` is written at most.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// An API key as the API shows it (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// The key id.
    pub id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// Its name (unique in the project).
    pub name: String,
    /// Its visible prefix: a key reads `ck_<prefix>_<secret>`.
    pub prefix: String,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last used (written at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working (`null`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// When its secret was last rotated.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Until when the secret it had before its last rotation still works (`null`: it does
    /// not).
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// When the `sweep_api_keys` sweep disabled it, past its expiry (`null`: not disabled).
    pub disabled_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "api_key_id AS id, project_id, name, prefix, created_at, last_used_at, \
                       expires_at, rotated_at, previous_valid_until, disabled_at";

/// A key to store.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    /// Its id.
    pub id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// Its name.
    pub name: &'a str,
    /// Its prefix.
    pub prefix: &'a str,
    /// SHA-256 of the whole key.
    pub hash: &'a [u8],
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// The user who made it (`None`: a platform operator or a service token).
    pub created_by: Option<Uuid>,
}

/// Stores a key. The caller maps `api_keys_project_name_key` to a 409.
pub async fn create(conn: &mut PgConnection, k: &NewApiKey<'_>) -> Result<ApiKey, sqlx::Error> {
    let sql = format!(
        "INSERT INTO api_keys (api_key_id, project_id, name, prefix, secret_hash, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(k.id)
        .bind(k.project_id)
        .bind(k.name)
        .bind(k.prefix)
        .bind(k.hash)
        .bind(k.expires_at)
        .bind(k.created_by)
        .fetch_one(conn)
        .await
}

/// How many keys the project has.
pub async fn count(conn: &mut PgConnection, project_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE project_id = $1")
        .bind(project_id)
        .fetch_one(conn)
        .await
}

/// A page of the project's keys, newest first, and how many it has.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    offset: i64,
    limit: i64,
) -> Result<(Vec<ApiKey>, i64), sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM api_keys WHERE project_id = $1
         ORDER BY created_at DESC, api_key_id DESC OFFSET $2 LIMIT $3"
    );
    let page = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(offset)
        .bind(limit)
        .fetch_all(pool);
    let total = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE project_id = $1")
        .bind(project_id)
        .fetch_one(pool);
    tokio::try_join!(page, total)
}

/// One of the project's keys.
pub async fn find(
    pool: &PgPool,
    project_id: Uuid,
    id: Uuid,
) -> Result<Option<ApiKey>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE project_id = $1 AND api_key_id = $2");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// One of the project's keys, locked until the transaction ends.
pub async fn lock(
    conn: &mut PgConnection,
    project_id: Uuid,
    id: Uuid,
) -> Result<Option<ApiKey>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM api_keys WHERE project_id = $1 AND api_key_id = $2 FOR UPDATE"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Gives a key a new secret (its hash `hash`). The old secret keeps working for `grace` (not
/// at all for zero); a secret older than that stops at once.
pub async fn rotate(
    conn: &mut PgConnection,
    project_id: Uuid,
    id: Uuid,
    hash: &[u8],
    grace: Duration,
) -> Result<Option<ApiKey>, sqlx::Error> {
    let sql = format!(
        "UPDATE api_keys SET
             previous_hash = CASE WHEN $4 > 0 THEN secret_hash END,
             previous_valid_until = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4) END,
             secret_hash = $3, rotated_at = now()
         WHERE project_id = $1 AND api_key_id = $2 RETURNING {COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .bind(hash)
        .bind(grace.as_secs_f64())
        .fetch_optional(conn)
        .await
}

/// Deletes a key: the next request with it, on any API process, is refused.
pub async fn revoke(
    conn: &mut PgConnection,
    project_id: Uuid,
    id: Uuid,
) -> Result<Option<ApiKey>, sqlx::Error> {
    let sql = format!(
        "DELETE FROM api_keys WHERE project_id = $1 AND api_key_id = $2 RETURNING {COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// What a request's key look-up finds: the key's hashes and whether it, and its project, may
/// be used now (all judged on Postgres's clock).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyLookup {
    /// The key id.
    pub id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// SHA-256 of the current key.
    pub secret_hash: Vec<u8>,
    /// SHA-256 of the key before the last rotation, while its grace period lasts.
    pub previous_hash: Option<Vec<u8>>,
    /// Whether it expired.
    pub expired: bool,
    /// Whether `last_used_at` is due to be written (unset, or older than
    /// [`LAST_USED_EVERY`]).
    pub touch_due: bool,
    /// The project's status (`active` or `suspended`).
    pub project_status: String,
    /// Whether the project was deleted.
    pub project_deleted: bool,
}

/// The key with this prefix, with its project's state (one indexed read).
pub async fn lookup(pool: &PgPool, prefix: &str) -> Result<Option<KeyLookup>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT k.api_key_id AS id, k.project_id, k.secret_hash,
               CASE WHEN k.previous_valid_until > now() THEN k.previous_hash END AS previous_hash,
               (coalesce(k.expires_at <= now(), false) OR k.disabled_at IS NOT NULL) AS expired,
               (k.last_used_at IS NULL OR k.last_used_at <= now() - make_interval(secs => $2))
                   AS touch_due,
               p.status AS project_status, p.deleted_at IS NOT NULL AS project_deleted
        FROM api_keys k JOIN projects p ON p.project_id = k.project_id
        WHERE k.prefix = $1
        "#,
    )
    .bind(prefix)
    .bind(LAST_USED_EVERY.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Records a use of the key, unless one was recorded less than [`LAST_USED_EVERY`] ago (so
/// processes racing to record the same minute write once); true if it wrote.
pub async fn touch(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        r#"
        UPDATE api_keys SET last_used_at = now()
        WHERE api_key_id = $1
          AND (last_used_at IS NULL OR last_used_at <= now() - make_interval(secs => $2))
        "#,
    )
    .bind(id)
    .bind(LAST_USED_EVERY.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Disables up to `batch` keys past their expiry (still refused at look-up by their expiry;
/// this records it) and audits each `api_key.disabled`, in one statement; returns how many.
pub async fn disable_expired(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        r#"
        WITH due AS (
            SELECT api_key_id FROM api_keys
            WHERE disabled_at IS NULL AND expires_at <= now()
            ORDER BY expires_at LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), disabled AS (
            UPDATE api_keys k SET disabled_at = now(), disabled_reason = 'expired',
                   previous_hash = NULL, previous_valid_until = NULL
            FROM due WHERE k.api_key_id = due.api_key_id
            RETURNING k.api_key_id, k.project_id, k.name, k.prefix, k.expires_at
        ), audited AS (
            INSERT INTO audit_log (audit_id, project_id, action, target_type, target_id, metadata)
            SELECT gen_random_uuid(), project_id, 'api_key.disabled', 'api_key', api_key_id::text,
                   jsonb_build_object('reason', 'expired', 'name', name, 'prefix', prefix,
                                      'expiresAt', expires_at)
            FROM disabled
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

/// Erases the previous secret of up to `batch` keys whose rotation grace period is over (it is
/// refused at look-up already; this drops its hash) and audits each
/// `api_key.rotation_grace_ended`, in one statement; returns how many.
pub async fn end_rotation_grace(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        r#"
        WITH due AS (
            SELECT api_key_id FROM api_keys
            WHERE previous_valid_until <= now()
            ORDER BY previous_valid_until LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), ended AS (
            UPDATE api_keys k SET previous_hash = NULL, previous_valid_until = NULL
            FROM due WHERE k.api_key_id = due.api_key_id
            RETURNING k.api_key_id, k.project_id, k.name, k.prefix, k.rotated_at
        ), audited AS (
            INSERT INTO audit_log (audit_id, project_id, action, target_type, target_id, metadata)
            SELECT gen_random_uuid(), project_id, 'api_key.rotation_grace_ended', 'api_key',
                   api_key_id::text,
                   jsonb_build_object('name', name, 'prefix', prefix, 'rotatedAt', rotated_at)
            FROM ended
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
