//! A project's API keys: list, create (the key shown once), read, rotate (the old secret keeps
//! working for a grace period) and revoke (at once, on every API process: every request looks
//! its key up in Postgres). The project's admins (`api-keys:manage`) manage their own
//! project's keys; platform operators (`projects:manage`) any project's.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Duration as Days, Utc};
use serde::Deserialize;
use shared::{
    api_keys,
    db::{
        self,
        api_keys::{ApiKey, NewApiKey},
        audit::NewEntry,
    },
    domain::{DisplayName, FieldErrors, Invalid, NonBlankName, parse_instant, required, within},
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{audit_actor, manage::ApiKeyWithSecret, with_by};
use crate::{
    AppState,
    auth::{ApiKeysManage, ProjectScoped},
    envelope::{ApiJson, Created, Data, List, PageParams},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result, ResultExt},
    extract::{ApiQuery, PathId, ValidJson, Validate},
    request_id,
};

/// Most keys one project may have.
pub const MAX_KEYS_PER_PROJECT: i64 = 50;
/// Longest grace period of a rotation (7 days).
pub const MAX_GRACE_SECS: u64 = 7 * 86_400;
/// The grace period of a rotation that names none (24 hours).
pub const DEFAULT_GRACE_SECS: u64 = 86_400;
/// Furthest expiry a key may be given (about 10 years).
const MAX_EXPIRY_DAYS: i64 = 3653;

/// The live project of the path, locked for the transaction (key writes of one project queue
/// up, so the key count holds); 404 if there is none.
async fn lock_project(tx: &mut sqlx::PgConnection, project: Uuid) -> Result<()> {
    db::projects::lock(tx, project)
        .await?
        .map(|_| ())
        .ok_or(ApiError::NotFound("project"))
}

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// Its name, unique in the project, e.g. `billing-service`.
    #[schema(required = true, nullable = false, value_type = NonBlankName)]
    pub name: Option<String>,
    /// When it stops working (RFC 3339, in the future, at most 10 years ahead); absent: never.
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<String>,
}

/// A valid [`CreateApiKeyRequest`].
#[derive(Debug)]
pub struct CreateApiKey {
    name: DisplayName,
    expires_at: Option<DateTime<Utc>>,
}

impl Validate for CreateApiKeyRequest {
    type Valid = CreateApiKey;

    fn validate(self) -> Result<CreateApiKey, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            required(self.name).and_then(|n| DisplayName::parse(&n)),
        );
        let expires_at = errors.check(
            "expiresAt",
            self.expires_at
                .as_deref()
                .map(|t| {
                    let at = parse_instant(t)?;
                    let now = Utc::now();
                    if at <= now {
                        Err(Invalid::new("must be in the future"))
                    } else if at > now + Days::days(MAX_EXPIRY_DAYS) {
                        Err(Invalid::new("must be at most 10 years ahead"))
                    } else {
                        Ok(at)
                    }
                })
                .transpose(),
        );
        match (name, expires_at) {
            (Some(name), Some(expires_at)) => Ok(CreateApiKey { name, expires_at }),
            _ => Err(errors),
        }
    }
}

/// The project's API keys (never their secrets), newest first.
///
/// Permission: `api-keys:manage` in the project, or `projects:manage` (platform). 404 for a
/// deleted or unknown project, and for any project id to a token of another project.
#[utoipa::path(get, path = "/api/v1/projects/{id}/api-keys", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id"), PageParams),
    security(("bearer" = ["api-keys:manage"]), ("bearer" = ["projects:manage"])),
    responses((status = 200, body = inline(List<ApiKey>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn list_api_keys(
    auth: ProjectScoped<ApiKeysManage>,
    State(s): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<List<ApiKey>>> {
    let page = page.check()?;
    {
        let mut conn = s.pool.acquire().await?;
        db::projects::find(&mut conn, auth.project_id)
            .await?
            .ok_or(ApiError::NotFound("project"))?;
    }
    let (keys, total) = db::api_keys::list(
        &s.pool,
        auth.project_id,
        page.offset() as i64,
        i64::from(page.per_page),
    )
    .await?;
    Ok(ApiJson(page.list(keys, total.max(0) as u64)))
}

/// Creates an API key; this answer shows its secret, once (only its SHA-256 is stored).
///
/// Permission: `api-keys:manage` in the project, or `projects:manage` (platform). 404 for a
/// deleted or unknown project; 409 if the project has a key of this name, or already has 50.
#[utoipa::path(post, path = "/api/v1/projects/{id}/api-keys", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = CreateApiKeyRequest,
    security(("bearer" = ["api-keys:manage"]), ("bearer" = ["projects:manage"])),
    responses((status = 201, body = inline(Data<ApiKeyWithSecret>),
               headers(("Location" = String, description = "The key's URL"))),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn create_api_key(
    auth: ProjectScoped<ApiKeysManage>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<CreateApiKeyRequest>,
) -> Result<Created<ApiKeyWithSecret>> {
    let project = auth.project_id;
    let (actor, by) = audit_actor(&auth.claims);
    let mut tx = s.pool.begin().await?;
    lock_project(&mut tx, project).await?;
    if db::api_keys::count(&mut tx, project).await? >= MAX_KEYS_PER_PROJECT {
        return Err(ApiError::Conflict(format!(
            "a project has at most {MAX_KEYS_PER_PROJECT} API keys; revoke one first"
        )));
    }
    let key = api_keys::generate();
    let api_key = db::api_keys::create(
        &mut tx,
        &NewApiKey {
            id: Uuid::now_v7(),
            project_id: project,
            name: req.name.as_ref(),
            prefix: &key.prefix,
            hash: &key.hash,
            expires_at: req.expires_at,
            created_by: actor,
        },
    )
    .await
    .on_constraint("api_keys_project_name_key", || {
        ApiError::Conflict("the project has an API key of this name".into())
    })?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "api_key.created")
            .actor(actor)
            .target("api_key", api_key.id)
            .metadata(with_by(
                serde_json::json!({
                    "name": api_key.name,
                    "prefix": api_key.prefix,
                    "expiresAt": api_key.expires_at,
                }),
                &by,
            ))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(project_id = %project, key_id = %api_key.id, "API key created");
    Ok(Created {
        location: format!("/api/v1/projects/{project}/api-keys/{}", api_key.id),
        data: ApiKeyWithSecret {
            api_key,
            key: key.key,
        },
    })
}

/// One of the project's API keys (never its secret).
///
/// Permission: `api-keys:manage` in the project, or `projects:manage` (platform). 404 for an
/// unknown key, and for any project id to a token of another project.
#[utoipa::path(get, path = "/api/v1/projects/{id}/api-keys/{keyId}", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id"),
           ("keyId" = Uuid, Path, description = "API key id")),
    security(("bearer" = ["api-keys:manage"]), ("bearer" = ["projects:manage"])),
    responses((status = 200, body = inline(Data<ApiKey>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_api_key(
    auth: ProjectScoped<ApiKeysManage>,
    State(s): State<AppState>,
    PathId((_project, key_id)): PathId<(Uuid, Uuid)>,
) -> Result<ApiJson<Data<ApiKey>>> {
    let key = db::api_keys::find(&s.pool, auth.project_id, key_id)
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
    Ok(ApiJson(Data::new(key)))
}

/// How to rotate a key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateApiKeyRequest {
    /// How long the old secret keeps working, in seconds (0 to 604800, i.e. 7 days; default
    /// 86400, i.e. 24 hours), so senders can switch without downtime. 0 stops it at once.
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_seconds: Option<u64>,
}

/// A valid [`RotateApiKeyRequest`].
#[derive(Debug)]
pub struct RotateApiKey {
    grace: std::time::Duration,
}

impl Validate for RotateApiKeyRequest {
    type Valid = RotateApiKey;

    fn validate(self) -> Result<RotateApiKey, FieldErrors> {
        let mut errors = FieldErrors::new();
        let grace = errors.check(
            "graceSeconds",
            within(
                self.grace_seconds.unwrap_or(DEFAULT_GRACE_SECS),
                0..=MAX_GRACE_SECS,
            ),
        );
        match grace {
            Some(g) => Ok(RotateApiKey {
                grace: std::time::Duration::from_secs(g),
            }),
            None => Err(errors),
        }
    }
}

/// Gives a key a new secret, shown in this answer once; the prefix stays. The old secret keeps
/// working until `previousValidUntil` (`graceSeconds`, default 24 hours), so senders can
/// switch without downtime; a secret from before an earlier rotation stops at once. Send `{}`
/// for the default grace.
///
/// Permission: `api-keys:manage` in the project, or `projects:manage` (platform). 404 for an
/// unknown key; 409 for an expired one (create a new key instead).
#[utoipa::path(post, path = "/api/v1/projects/{id}/api-keys/{keyId}/rotate", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id"),
           ("keyId" = Uuid, Path, description = "API key id")),
    request_body = RotateApiKeyRequest,
    security(("bearer" = ["api-keys:manage"]), ("bearer" = ["projects:manage"])),
    responses((status = 200, body = inline(Data<ApiKeyWithSecret>)),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn rotate_api_key(
    auth: ProjectScoped<ApiKeysManage>,
    State(s): State<AppState>,
    PathId((_project, key_id)): PathId<(Uuid, Uuid)>,
    ValidJson(req): ValidJson<RotateApiKeyRequest>,
) -> Result<ApiJson<Data<ApiKeyWithSecret>>> {
    let project = auth.project_id;
    let (actor, by) = audit_actor(&auth.claims);
    let mut tx = s.pool.begin().await?;
    lock_project(&mut tx, project).await?;
    let current = db::api_keys::lock(&mut tx, project, key_id)
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
    if current.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::Conflict(
            "the key has expired; create a new key instead".into(),
        ));
    }
    let key = api_keys::with_prefix(&current.prefix);
    let api_key = db::api_keys::rotate(&mut tx, project, key_id, &key.hash, req.grace)
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "api_key.rotated")
            .actor(actor)
            .target("api_key", key_id)
            .metadata(with_by(
                serde_json::json!({
                    "name": api_key.name,
                    "prefix": api_key.prefix,
                    "graceSeconds": req.grace.as_secs(),
                    "previousValidUntil": api_key.previous_valid_until,
                }),
                &by,
            ))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(project_id = %project, %key_id, grace_secs = req.grace.as_secs(),
        "API key rotated");
    Ok(ApiJson(Data::new(ApiKeyWithSecret {
        api_key,
        key: key.key,
    })))
}

/// Revokes a key: from this answer on (`204`), every API process refuses it.
///
/// Permission: `api-keys:manage` in the project, or `projects:manage` (platform). 404 for an
/// unknown key.
#[utoipa::path(delete, path = "/api/v1/projects/{id}/api-keys/{keyId}", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id"),
           ("keyId" = Uuid, Path, description = "API key id")),
    security(("bearer" = ["api-keys:manage"]), ("bearer" = ["projects:manage"])),
    responses((status = 204, description = "Revoked"),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn revoke_api_key(
    auth: ProjectScoped<ApiKeysManage>,
    State(s): State<AppState>,
    PathId((_project, key_id)): PathId<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let project = auth.project_id;
    let (actor, by) = audit_actor(&auth.claims);
    let mut tx = s.pool.begin().await?;
    let api_key = db::api_keys::revoke(&mut tx, project, key_id)
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "api_key.revoked")
            .actor(actor)
            .target("api_key", key_id)
            .metadata(with_by(
                serde_json::json!({ "name": api_key.name, "prefix": api_key.prefix }),
                &by,
            ))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(project_id = %project, %key_id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
