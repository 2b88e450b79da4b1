//! Authentication and permissions: a Bearer JWT becomes [`Authorized<P>`], which only extracts
//! when the token grants permission `P` and has not been revoked. A handler cannot forget its
//! permission check: it is the type of its first argument.
//!
//! Revocation: every request asks Redis (one round trip) whether the token's `jti` was revoked
//! or whether the user has a "tokens issued before T are revoked" marker. When Redis does not
//! answer, the check degrades as the spec asks: it logs, counts
//! `comet_session_check_degraded_total`, and lets the token through, except for tokens and
//! users this process itself revoked within the last token lifetime ([`RevocationCache`]).

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::FromRequestParts,
    http::{Method, request::Parts},
};
use shared::{auth::Claims, sessions::Verdict};
use uuid::Uuid;

use crate::{AppState, error::ApiError};

pub use shared::permissions::*;

/// Every permission the API checks (declared in [`shared::permissions`]).
pub const ALL: &[&str] = shared::permissions::NAMES;

/// Revocations this process made, remembered for one token lifetime: the fallback when Redis
/// cannot be asked.
#[derive(Debug, Default)]
pub struct RevocationCache {
    users: Mutex<HashMap<Uuid, (i64, Instant)>>,
    jtis: Mutex<HashMap<Uuid, Instant>>,
}

impl RevocationCache {
    /// Remembers that the user's tokens issued before `before_ms` are revoked.
    pub fn note_user(&self, user: Uuid, before_ms: i64, ttl: Duration) {
        let ttl = ttl.min(shared::sessions::MAX_REVOCATION);
        let mut users = self.users.lock().expect("revocations");
        let now = Instant::now();
        users.retain(|_, (_, until)| *until > now);
        let entry = users.entry(user).or_insert((before_ms, now + ttl));
        *entry = (entry.0.max(before_ms), now + ttl);
    }

    /// Remembers a revoked token until it expires.
    pub fn note_jti(&self, jti: Uuid, ttl: Duration) {
        let ttl = ttl.min(shared::sessions::MAX_REVOCATION);
        let mut jtis = self.jtis.lock().expect("revocations");
        let now = Instant::now();
        jtis.retain(|_, until| *until > now);
        jtis.insert(jti, now + ttl);
    }

    /// Whether this process knows the token to be revoked.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let now = Instant::now();
        if self
            .jtis
            .lock()
            .expect("revocations")
            .get(&claims.jti)
            .is_some_and(|u| *u > now)
        {
            return true;
        }
        let Ok(user) = Uuid::parse_str(&claims.sub) else {
            return false;
        };
        self.users
            .lock()
            .expect("revocations")
            .get(&user)
            .is_some_and(|(before, until)| *until > now && claims.iat_ms < *before)
    }
}

/// A caller with a valid, unrevoked token (any permissions).
#[derive(Debug)]
pub struct Authenticated {
    /// The token's claims.
    pub claims: Claims,
}

impl Authenticated {
    /// The user behind the token (`None` for minted service tokens).
    pub fn user_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.claims.sub).ok()
    }
}

/// The verified claims of a caller holding permission `P`.
#[derive(Debug)]
pub struct Authorized<P> {
    /// The token's claims (project, subject, permissions).
    pub claims: Claims,
    _p: PhantomData<P>,
}

impl<P> Authorized<P> {
    /// The user behind the token (`None` for minted service tokens).
    pub fn user_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.claims.sub).ok()
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header =
        parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "missing Authorization: Bearer token",
            ))?;
    header
        .to_str()
        .ok()
        // the scheme name is case-insensitive (RFC 9110 §11.1)
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized(
            "expected Authorization: Bearer <token>",
        ))
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Claims, ApiError> {
    let claims = shared::auth::verify(&state.settings.auth.jwt_secret, bearer(parts)?)
        .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
    match state.sessions.check(&claims).await {
        Ok(Verdict::Valid) => {}
        Ok(Verdict::Revoked) => return Err(ApiError::Unauthorized("token revoked")),
        Err(e) => {
            metrics::counter!("comet_session_check_degraded_total").increment(1);
            tracing::warn!(error = %e, "session check skipped: Redis unreachable (degraded mode)");
            if state.revocations.is_revoked(&claims) {
                return Err(ApiError::Unauthorized("token revoked"));
            }
        }
    }
    Ok(claims)
}

/// Records the user's activity without delaying the response: at most once per 5 minutes per
/// user across all API processes; errors are logged, never returned.
pub fn track_activity(state: &AppState, claims: &Claims) {
    let Ok(user) = Uuid::parse_str(&claims.sub) else {
        return;
    };
    let (sessions, pool, project) = (
        state.sessions.clone(),
        state.pool.clone(),
        claims.project_id,
    );
    tokio::spawn(async move {
        match sessions.activity_gate(user, Duration::from_secs(300)).await {
            Ok(true) => {
                if let Err(e) = shared::db::users::touch_last_seen(&pool, project, user).await {
                    tracing::warn!(error = %e, "could not record activity");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "activity gate unavailable"),
        }
    });
}

fn mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = authenticate(parts, state).await?;
        if mutating(&parts.method) {
            track_activity(state, &claims);
        }
        Ok(Self { claims })
    }
}

impl<P: Permission + Send + Sync> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = authenticate(parts, state).await?;
        if !claims.has(P::NAME) {
            return Err(ApiError::Forbidden(P::NAME));
        }
        if mutating(&parts.method) {
            track_activity(state, &claims);
        }
        Ok(Self {
            claims,
            _p: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_revokes_only_tokens_issued_before_the_marker() {
        let cache = RevocationCache::default();
        let user = Uuid::now_v7();
        let mut old = Claims::new(&user.to_string(), Uuid::now_v7(), vec![], 60);
        old.iat_ms = 1_000;
        let mut new = old.clone();
        new.iat_ms = 3_000;
        cache.note_user(user, 2_000, Duration::from_secs(60));
        assert!(cache.is_revoked(&old));
        assert!(!cache.is_revoked(&new));
        let other = Claims::new("cli", Uuid::now_v7(), vec![], 60);
        assert!(!cache.is_revoked(&other));
        cache.note_jti(other.jti, Duration::from_secs(60));
        assert!(cache.is_revoked(&other));
    }
}
