//! Issuing a user's tokens (a login, a refresh): the access JWT with its session record, and
//! the rotating refresh token beside it (only its SHA-256 stored, in the login's family; see
//! `shared::db::refresh_tokens` for why in Postgres). And revoking the access tokens of a
//! refresh family (a reuse, a logout).

use chrono::{DateTime, Utc};
use shared::{
    auth::Claims,
    db::refresh_tokens::{self, IssuedAccess, NewRefresh},
    secrets,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    AppState,
    error::{ApiError, Result},
};

/// What a login or a refresh hands out.
#[derive(Debug)]
pub struct Issued {
    /// The signed access token.
    pub access_token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The refresh token (shown once: only its hash is stored).
    pub refresh_token: String,
    /// When the refresh token expires.
    pub refresh_expires_at: DateTime<Utc>,
    /// The refresh family (one per login).
    pub family_id: Uuid,
}

/// Signs `claims`, records the session, and stores a new refresh token: in `family` (a
/// rotation), or in a new family (a login). Runs in the caller's transaction.
pub async fn issue(
    s: &AppState,
    tx: &mut PgConnection,
    claims: &Claims,
    user_id: Uuid,
    family: Option<Uuid>,
    user_agent: &str,
    ip: &str,
) -> Result<Issued> {
    let access_token = shared::auth::mint(&s.settings.auth.jwt_secret, claims)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("Failed to sign a token")))?;
    let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or_default();
    let refresh_token = secrets::new_token();
    let refresh_expires_at = Utc::now()
        + chrono::Duration::from_std(s.settings.auth.refresh_ttl)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    let hash = secrets::token_hash(&refresh_token);
    let row = NewRefresh {
        token_hash: &hash,
        access_jti: claims.jti,
        access_expires_at: expires_at,
        expires_at: refresh_expires_at,
    };
    let family_id = match family {
        Some(f) => {
            refresh_tokens::insert(tx, f, row).await?;
            f
        }
        None => refresh_tokens::start_family(tx, claims.project_id, user_id, row).await?,
    };
    s.sessions
        .create(claims, user_id, user_agent, ip)
        .await
        .map_err(ApiError::session_store)?;
    Ok(Issued {
        access_token,
        expires_at,
        refresh_token,
        refresh_expires_at,
        family_id,
    })
}

/// Revokes access tokens of a refresh family at once, on every API process (and in this
/// process's fallback cache).
pub async fn revoke_accesses(s: &AppState, user_id: Uuid, accesses: &[IssuedAccess]) -> Result<()> {
    for a in accesses {
        let exp = a.access_expires_at.timestamp();
        s.revocations
            .note_jti(a.access_jti, shared::sessions::revocation_ttl(exp));
        s.sessions
            .revoke_jti(Some(user_id), a.access_jti, exp)
            .await
            .map_err(ApiError::session_store)?;
    }
    Ok(())
}
