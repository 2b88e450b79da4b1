//! Authentication and permissions: a Bearer JWT becomes [`Authorized<P>`], which only extracts
//! when the token grants permission `P` and has not been revoked. A handler cannot forget its
//! permission check: it is the type of its first argument. Two more shapes of the same check:
//! [`ProjectScoped<P>`] for routes under `/projects/{id}` (`P` in that very project, or a
//! platform operator; another project's caller gets a 404, never a 403), and [`Caller<P>`] for
//! routes machines call too (a token with `P`, or an `X-API-Key` of the project).
//!
//! A token whose project is suspended is refused with 403 `project_suspended`, one whose
//! project was deleted with 401 `project_deleted`: the project's state is a Redis marker read
//! in the same round trip as the revocations (see `shared::sessions`), so no request reads
//! Postgres for it. An API key is looked up in Postgres on every request (one indexed read that
//! also brings its project's state): revoking a key is then immediate on every process, with no
//! cache to invalidate.
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
use shared::{auth::Claims, db::projects::Block, sessions::Verdict};
use uuid::Uuid;

use crate::{AppState, error::ApiError, extract::ApiPath};

pub use shared::permissions::*;

/// Every permission the API checks (declared in [`shared::permissions`]).
pub const ALL: &[&str] = shared::permissions::NAMES;

/// Revocations this process made, remembered for one token lifetime: the fallback when Redis
/// cannot be asked.
#[derive(Debug, Default)]
pub struct RevocationCache {
    users: Mutex<HashMap<Uuid, (i64, Instant)>>,
    jtis: Mutex<HashMap<Uuid, Instant>>,
    projects: Mutex<HashMap<Uuid, Block>>,
}

impl RevocationCache {
    /// Remembers that this process blocked the project (`Some`) or unblocked it (`None`).
    pub fn note_project(&self, project: Uuid, block: Option<Block>) {
        let mut projects = self.projects.lock().expect("revocations");
        match block {
            Some(b) => projects.insert(project, b),
            None => projects.remove(&project),
        };
    }

    /// How this process last blocked the project, if it did.
    pub fn project_block(&self, project: Uuid) -> Option<Block> {
        self.projects
            .lock()
            .expect("revocations")
            .get(&project)
            .copied()
    }

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

/// The refusal of a credential whose project is blocked.
pub fn blocked(block: Block) -> ApiError {
    match block {
        Block::Suspended => ApiError::ProjectSuspended,
        Block::Deleted => ApiError::ProjectDeleted,
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Claims, ApiError> {
    // the ops console's session cookie counts only without an Authorization header and with
    // its CSRF header (`crate::ops::session`); every other caller sends a Bearer token
    let claims = match crate::ops::session::from_cookie(parts, state)? {
        Some(claims) => claims,
        None => shared::auth::verify(&state.settings.auth.jwt_secret, bearer(parts)?)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?,
    };
    check_session(state, &claims).await?;
    Ok(claims)
}

/// The revocation and project-state check of verified claims (degraded when Redis fails, as the
/// module doc says).
pub(crate) async fn check_session(state: &AppState, claims: &Claims) -> Result<(), ApiError> {
    match state.sessions.check(claims).await {
        Ok(Verdict::Valid) => {}
        Ok(Verdict::Revoked) => return Err(ApiError::Unauthorized("token revoked")),
        Ok(Verdict::Blocked(block)) => return Err(blocked(block)),
        Err(e) => {
            metrics::counter!("comet_session_check_degraded_total").increment(1);
            tracing::warn!(error = %e, "session check skipped: Redis unreachable (degraded mode)");
            if state.revocations.is_revoked(claims) {
                return Err(ApiError::Unauthorized("token revoked"));
            }
            if let Some(block) = state.revocations.project_block(claims.project_id) {
                return Err(blocked(block));
            }
        }
    }
    Ok(())
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

/// The project `{id}` of a route's path, and a caller that may act on it: a platform operator
/// (`projects:manage`), or a token of that very project granting `P`.
///
/// A token without `P` gets 403 whatever the id; a token with `P` of another project gets 404,
/// whether or not that project exists: a tenant never learns another's ids. The handler still
/// checks that the project exists (a platform operator may name any id).
#[derive(Debug)]
pub struct ProjectScoped<P> {
    /// The project of the path.
    pub project_id: Uuid,
    /// The token's claims.
    pub claims: Claims,
    _p: PhantomData<P>,
}

impl<P> ProjectScoped<P> {
    /// The user behind the token (`None` for platform and service tokens).
    pub fn user_id(&self) -> Option<Uuid> {
        user_of(&self.claims)
    }
}

/// The user a token belongs to: its subject, unless it is a platform or service token.
pub fn user_of(claims: &Claims) -> Option<Uuid> {
    (!claims.platform)
        .then(|| Uuid::parse_str(&claims.sub).ok())
        .flatten()
}

impl<P: Permission + Send + Sync> FromRequestParts<AppState> for ProjectScoped<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = authenticate(parts, state).await?;
        let ApiPath(params) =
            ApiPath::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
        let raw = params
            .iter()
            .find(|(name, _)| name == "id")
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("ProjectScoped on a route without {{id}}"))
            })?;
        let project_id = Uuid::parse_str(raw).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid path parameter `id`: {raw:?} is not an id (UUID)"
            ))
        })?;
        let operator = claims.platform && claims.has(<ProjectsManage as Permission>::NAME);
        if !operator {
            // the permission first: its 403 is the same for every id, so it reveals nothing
            if !claims.has(P::NAME) {
                return Err(ApiError::Forbidden(P::NAME));
            }
            if claims.project_id != project_id {
                return Err(ApiError::NotFound("project"));
            }
        }
        if mutating(&parts.method) {
            track_activity(state, &claims);
        }
        Ok(Self {
            project_id,
            claims,
            _p: PhantomData,
        })
    }
}

/// What a route taking [`Caller<P>`] requires of a token: a permission, or none
/// ([`AnyPermission`]).
pub trait CallerPermission {
    /// The permission a token needs (`None`: any valid token of the project).
    const REQUIRED: Option<&'static str>;
}

impl<P: Permission> CallerPermission for P {
    const REQUIRED: Option<&'static str> = Some(P::NAME);
}

/// For [`Caller<AnyPermission>`]: any valid token of the project, or an API key.
#[derive(Debug)]
pub struct AnyPermission;

impl CallerPermission for AnyPermission {
    const REQUIRED: Option<&'static str> = None;
}

/// Who is calling a route machines may call too.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A token (a user's, or a minted service token) granting the route's permission.
    Token(Claims),
    /// One of the project's API keys (`X-API-Key`).
    ApiKey {
        /// The key id.
        key_id: Uuid,
    },
}

/// The caller of a route that accepts a token granting `P` **or** an API key of the project
/// (`X-API-Key: ck_<prefix>_<secret>`), and its project. Sending both is refused (401).
///
/// A key is looked up by its prefix in Postgres and its SHA-256 compared in constant time with
/// the stored hash (or, during a rotation's grace period, the previous one). Refused with 401
/// when unknown, wrong or expired, 401 `project_deleted` or 403 `project_suspended` for its
/// project's state. A key's `last_used_at` is written at most once a minute, off the request
/// path, only when the read showed it due (so most requests write nothing).
#[derive(Debug)]
pub struct Caller<P> {
    /// The project every read and write of the request is scoped to.
    pub project_id: Uuid,
    /// The token or the key.
    pub actor: Actor,
    _p: PhantomData<P>,
}

impl<P> Caller<P> {
    /// The user behind the request (`None` for API keys, platform and service tokens).
    pub fn user_id(&self) -> Option<Uuid> {
        match &self.actor {
            Actor::Token(claims) => user_of(claims),
            Actor::ApiKey { .. } => None,
        }
    }
}

/// The header machine callers send their key in.
pub const API_KEY_HEADER: &str = "x-api-key";

const BAD_KEY: &str = "invalid API key";

/// Checks an `X-API-Key`: (project, key id).
async fn api_key(
    value: &axum::http::HeaderValue,
    state: &AppState,
) -> Result<(Uuid, Uuid), ApiError> {
    use shared::api_keys;
    let presented = value
        .to_str()
        .map(str::trim)
        .map_err(|_| ApiError::Unauthorized(BAD_KEY))?;
    let prefix = api_keys::prefix_of(presented).ok_or(ApiError::Unauthorized(BAD_KEY))?;
    let found = shared::db::api_keys::lookup(&state.pool, prefix)
        .await?
        .ok_or(ApiError::Unauthorized(BAD_KEY))?;
    let hash = api_keys::hash(presented);
    // both compared, in constant time each: which secret matched is not timed either
    let current = api_keys::matches(&hash, &found.secret_hash);
    let previous = found
        .previous_hash
        .as_deref()
        .is_some_and(|p| api_keys::matches(&hash, p));
    if !(current | previous) {
        return Err(ApiError::Unauthorized(BAD_KEY));
    }
    if found.project_deleted {
        return Err(ApiError::ProjectDeleted);
    }
    if found.expired {
        return Err(ApiError::Unauthorized("API key expired"));
    }
    if found.project_status != shared::domain::ProjectStatus::Active.as_str() {
        return Err(ApiError::ProjectSuspended);
    }
    if found.touch_due {
        let (pool, id) = (state.pool.clone(), found.id);
        tokio::spawn(async move {
            if let Err(e) = shared::db::api_keys::touch(&pool, id).await {
                tracing::warn!(error = %e, key_id = %id, "could not record an API key's use");
            }
        });
    }
    Ok((found.project_id, found.id))
}

impl<P: CallerPermission + Send + Sync> FromRequestParts<AppState> for Caller<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(key) = parts.headers.get(API_KEY_HEADER) {
            if parts
                .headers
                .contains_key(axum::http::header::AUTHORIZATION)
            {
                return Err(ApiError::Unauthorized(
                    "send either Authorization or X-API-Key, not both",
                ));
            }
            let (project_id, key_id) = api_key(key, state).await?;
            return Ok(Self {
                project_id,
                actor: Actor::ApiKey { key_id },
                _p: PhantomData,
            });
        }
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Err(ApiError::Unauthorized(
                "missing credentials: send Authorization: Bearer <token> or X-API-Key: <key>",
            ));
        }
        let claims = authenticate(parts, state).await?;
        if let Some(p) = P::REQUIRED
            && !claims.has(p)
        {
            return Err(ApiError::Forbidden(p));
        }
        if mutating(&parts.method) {
            track_activity(state, &claims);
        }
        Ok(Self {
            project_id: claims.project_id,
            actor: Actor::Token(claims),
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

    #[test]
    fn the_cache_remembers_the_projects_this_process_blocked_until_it_unblocks_them() {
        let cache = RevocationCache::default();
        let project = Uuid::now_v7();
        assert_eq!(cache.project_block(project), None);
        cache.note_project(project, Some(Block::Suspended));
        assert_eq!(cache.project_block(project), Some(Block::Suspended));
        assert_eq!(cache.project_block(Uuid::now_v7()), None);
        cache.note_project(project, None);
        assert_eq!(cache.project_block(project), None);
    }
}
