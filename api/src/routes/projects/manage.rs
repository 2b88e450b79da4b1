//! Platform operators' project management: create (with its default roles and its first API
//! key, shown once), list (paginated, filtered), read, update (name, slug, description,
//! status, settings), soft-delete, and counts. Every route needs `projects:manage`, which only
//! platform tokens grant.

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use shared::{
    api_keys,
    db::{
        self,
        api_keys::{ApiKey, NewApiKey},
        audit::NewEntry,
        projects::{NewProject, Project, ProjectChanges, ProjectFilter},
    },
    domain::{
        Description, DisplayName, FieldErrors, NonBlankName, ProjectSettings, ProjectStatus,
        SearchTerm, Slug, required,
    },
};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{RefOr, schema::Schema},
};
use uuid::Uuid;

use super::{audit_actor, with_by};
use crate::{
    AppState,
    auth::{Authorized, ProjectScoped, ProjectsManage},
    envelope::{ApiJson, Created, Data, List, PageParams},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, ValidJson, Validate},
    filters, project_state, request_id,
};

/// The name of the API key a new project starts with.
const FIRST_KEY_NAME: &str = "default";

/// A 409 for a name or slug another live project holds; other errors pass through.
fn taken(e: sqlx::Error) -> ApiError {
    let constraint = match &e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    };
    match constraint {
        Some("projects_name_key") => {
            ApiError::Conflict("a project with this name already exists".into())
        }
        Some("projects_slug_key") => {
            ApiError::Conflict("a project with this slug already exists".into())
        }
        _ => e.into(),
    }
}

/// Checks `settings` into `errors` (each bad key named `settings.<key>`).
fn check_settings(
    errors: &mut FieldErrors,
    settings: Option<ProjectSettings>,
) -> Option<ProjectSettings> {
    match settings.map(ProjectSettings::check).transpose() {
        Ok(s) => s,
        Err(bad) => {
            for (field, e) in bad {
                errors.add(field, e.message());
            }
            None
        }
    }
}

/// A project to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProjectRequest {
    /// Its name, unique among live projects.
    #[schema(required = true, nullable = false, value_type = NonBlankName)]
    pub name: Option<String>,
    /// Its short handle, unique among live projects: 1 to 63 characters of a-z, 0-9 and `-`,
    /// starting and ending with a letter or digit. Default: made from the name.
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub slug: Option<String>,
    /// What it is for.
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
    /// Its settings (known keys only).
    pub settings: Option<ProjectSettings>,
}

/// A valid [`CreateProjectRequest`].
#[derive(Debug)]
pub struct CreateProject {
    name: DisplayName,
    slug: Option<Slug>,
    description: Description,
    settings: ProjectSettings,
}

impl Validate for CreateProjectRequest {
    type Valid = CreateProject;

    fn validate(self) -> Result<CreateProject, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            required(self.name).and_then(|n| DisplayName::parse(&n)),
        );
        let slug = errors.check("slug", self.slug.as_deref().map(Slug::parse).transpose());
        let description = errors.check(
            "description",
            Description::parse(self.description.as_deref().unwrap_or_default()),
        );
        let settings = check_settings(&mut errors, self.settings);
        match (name, slug, description) {
            (Some(name), Some(slug), Some(description)) if errors.is_empty() => Ok(CreateProject {
                name,
                slug,
                description,
                settings: settings.unwrap_or_default(),
            }),
            _ => Err(errors),
        }
    }
}

/// An API key with its secret: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyWithSecret {
    /// The key.
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The whole key, `ck_<prefix>_<secret>`, to send as `X-API-Key`. Shown this once: only
    /// its SHA-256 is stored.
    #[schema(min_length = 68, max_length = 68)]
    pub key: String,
}

/// A new project and its first API key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectCreated {
    /// The project.
    pub project: Project,
    /// Its first API key (named `default`), with its secret, shown this once.
    pub api_key: ApiKeyWithSecret,
}

/// Creates a project with its default roles (`admin`, `member`) and its first API key, whose
/// secret this answer shows once.
///
/// Permission: `projects:manage` (platform tokens only). 409 if a live project has the name or
/// the slug; 422 names every invalid field (unknown settings keys included).
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects",
    request_body = CreateProjectRequest,
    security(("bearer" = ["projects:manage"])),
    responses((status = 201, body = inline(Data<ProjectCreated>),
               headers(("Location" = String, description = "The project's URL"))),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn create_project(
    auth: Authorized<ProjectsManage>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<CreateProjectRequest>,
) -> Result<Created<ProjectCreated>> {
    let id = Uuid::now_v7();
    let slug = req
        .slug
        .or_else(|| Slug::from_name(req.name.as_ref()))
        .map_or_else(
            || format!("project-{}", &id.simple().to_string()[24..]),
            |s| s.as_ref().to_owned(),
        );
    let (actor, by) = audit_actor(&auth.claims);
    let mut tx = s.pool.begin().await?;
    let project = db::projects::create(
        &mut tx,
        id,
        &NewProject {
            name: req.name.as_ref(),
            slug: &slug,
            description: req.description.as_ref(),
            settings: &req.settings,
        },
    )
    .await
    .map_err(taken)?;
    let key = api_keys::generate();
    let api_key = db::api_keys::create(
        &mut tx,
        &NewApiKey {
            id: Uuid::now_v7(),
            project_id: id,
            name: FIRST_KEY_NAME,
            prefix: &key.prefix,
            hash: &key.hash,
            expires_at: None,
            created_by: actor,
        },
    )
    .await?;
    let rid = Some(request_id::current());
    db::audit::record(
        &mut tx,
        NewEntry::new(id, "project.created")
            .actor(actor)
            .target("project", id)
            .metadata(with_by(
                serde_json::json!({ "name": project.name, "slug": project.slug }),
                &by,
            ))
            .request(rid.clone()),
    )
    .await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(id, "api_key.created")
            .actor(actor)
            .target("api_key", api_key.id)
            .metadata(with_by(
                serde_json::json!({ "name": api_key.name, "prefix": api_key.prefix }),
                &by,
            ))
            .request(rid),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(project_id = %id, key_id = %api_key.id, "project created");
    Ok(Created {
        location: format!("/api/v1/projects/{id}"),
        data: ProjectCreated {
            project,
            api_key: ApiKeyWithSecret {
                api_key,
                key: key.key,
            },
        },
    })
}

/// Filters of the project list (empty is no filter, see [`crate::filters`]).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ProjectFilterParams {
    /// Only projects with this status: `active` or `suspended` (or in upper case).
    #[param(value_type = Option<StatusFilter>, inline)]
    pub status: Option<String>,
    /// Substring of the name or slug (case-insensitive).
    #[param(value_type = Option<SearchTerm>, inline)]
    pub search: Option<String>,
    /// `true`: the deleted projects instead of the live ones.
    pub deleted: Option<bool>,
}

const STATUSES: [ProjectStatus; 2] = [ProjectStatus::Active, ProjectStatus::Suspended];

/// The OpenAPI schema of the `status` filter: each status in lower or upper case, or empty.
pub struct StatusFilter;

impl PartialSchema for StatusFilter {
    fn schema() -> RefOr<Schema> {
        let words: Vec<String> = STATUSES
            .iter()
            .flat_map(|s| [s.as_str().to_owned(), s.as_str().to_ascii_uppercase()])
            .collect();
        filters::one_of_or_empty(words.iter().map(String::as_str))
    }
}

impl ToSchema for StatusFilter {}

impl ProjectFilterParams {
    fn parse(self) -> Result<ProjectFilter, FieldErrors> {
        let mut errors = FieldErrors::new();
        let status = errors.check(
            "status",
            filters::given(self.status.as_deref())
                .map(|s| {
                    // exactly as the document lists them: lower or upper case
                    if s == s.to_ascii_uppercase() {
                        ProjectStatus::parse(&s.to_ascii_lowercase())
                    } else {
                        ProjectStatus::parse(s)
                    }
                })
                .transpose(),
        );
        let search = errors.check("search", SearchTerm::parse_optional(self.search.as_deref()));
        match (status, search) {
            (Some(status), Some(search)) => Ok(ProjectFilter {
                status,
                search: search.map(SearchTerm::into_string),
                deleted: self.deleted.unwrap_or(false),
            }),
            _ => Err(errors),
        }
    }
}

/// The projects, newest first, filtered and paginated.
///
/// Permission: `projects:manage` (platform tokens only).
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    params(PageParams, ProjectFilterParams),
    security(("bearer" = ["projects:manage"])),
    responses((status = 200, body = inline(List<Project>)),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn list_projects(
    _auth: Authorized<ProjectsManage>,
    State(s): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(params): ApiQuery<ProjectFilterParams>,
) -> Result<ApiJson<List<Project>>> {
    let (page, filter) = FieldErrors::both(page.check(), params.parse())?;
    let (projects, total) = db::projects::list(
        &s.pool,
        &filter,
        page.offset() as i64,
        i64::from(page.per_page),
    )
    .await?;
    Ok(ApiJson(page.list(projects, total.max(0) as u64)))
}

/// A live project.
///
/// Permission: `projects:manage` (platform tokens only). 404 for a deleted or unknown project,
/// and for any project id to a token of another project.
#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id")),
    security(("bearer" = ["projects:manage"])),
    responses((status = 200, body = inline(Data<Project>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_project(
    auth: ProjectScoped<ProjectsManage>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Project>>> {
    let mut conn = s.pool.acquire().await?;
    let project = db::projects::find(&mut conn, auth.project_id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    Ok(ApiJson(Data::new(project)))
}

/// Changes to a project: the fields given change, the others stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProjectRequest {
    /// A new name, unique among live projects.
    #[schema(value_type = Option<NonBlankName>)]
    pub name: Option<String>,
    /// A new slug, unique among live projects (see `CreateProjectRequest.slug`).
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub slug: Option<String>,
    /// A new description (`""` clears it).
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
    /// `suspended` refuses the project's tokens and API keys (403 `project_suspended`) on every
    /// API process before this answers; `active` lets them work again.
    pub status: Option<ProjectStatus>,
    /// New settings, replacing the old ones as a whole (`{}` clears them).
    pub settings: Option<ProjectSettings>,
}

/// A valid [`UpdateProjectRequest`].
#[derive(Debug)]
pub struct UpdateProject {
    name: Option<DisplayName>,
    slug: Option<Slug>,
    description: Option<Description>,
    status: Option<ProjectStatus>,
    settings: Option<ProjectSettings>,
}

impl Validate for UpdateProjectRequest {
    type Valid = UpdateProject;

    fn validate(self) -> Result<UpdateProject, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            self.name.as_deref().map(DisplayName::parse).transpose(),
        );
        let slug = errors.check("slug", self.slug.as_deref().map(Slug::parse).transpose());
        let description = errors.check(
            "description",
            self.description
                .as_deref()
                .map(Description::parse)
                .transpose(),
        );
        let settings = check_settings(&mut errors, self.settings);
        match (name, slug, description) {
            (Some(name), Some(slug), Some(description)) if errors.is_empty() => Ok(UpdateProject {
                name,
                slug,
                description,
                status: self.status,
                settings,
            }),
            _ => Err(errors),
        }
    }
}

/// Changes a project's name, slug, description, status or settings (the fields given).
///
/// Permission: `projects:manage` (platform tokens only). Suspending refuses the project's
/// tokens and API keys on every API process before this answers (and before the change
/// commits: a 503 when Redis cannot take it changes nothing). 404 for a deleted or unknown
/// project; 409 if another live project has the name or slug.
#[utoipa::path(put, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id")),
    request_body = UpdateProjectRequest,
    security(("bearer" = ["projects:manage"])),
    responses((status = 200, body = inline(Data<Project>)),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn update_project(
    auth: ProjectScoped<ProjectsManage>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<UpdateProjectRequest>,
) -> Result<ApiJson<Data<Project>>> {
    let (actor, by) = audit_actor(&auth.claims);
    let mut tx = s.pool.begin().await?;
    let before = db::projects::lock(&mut tx, auth.project_id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    let changes = ProjectChanges {
        name: req.name.as_ref().map(AsRef::as_ref),
        slug: req.slug.as_ref().map(AsRef::as_ref),
        description: req.description.as_ref().map(AsRef::as_ref),
        status: req.status,
        settings: req.settings.as_ref(),
    };
    let after = db::projects::update(&mut tx, auth.project_id, &changes)
        .await
        .map_err(taken)?
        .ok_or(ApiError::NotFound("project"))?;
    let mut changed = serde_json::Map::new();
    let mut note = |field: &str, from: serde_json::Value, to: serde_json::Value| {
        if from != to {
            changed.insert(field.into(), serde_json::json!({ "from": from, "to": to }));
        }
    };
    note(
        "name",
        before.name.clone().into(),
        after.name.clone().into(),
    );
    note(
        "slug",
        before.slug.clone().into(),
        after.slug.clone().into(),
    );
    note(
        "description",
        before.description.clone().into(),
        after.description.clone().into(),
    );
    note(
        "status",
        before.status.as_str().into(),
        after.status.as_str().into(),
    );
    note(
        "settings",
        serde_json::to_value(&before.settings).unwrap_or_default(),
        serde_json::to_value(&after.settings).unwrap_or_default(),
    );
    let action = match (before.status, after.status) {
        (ProjectStatus::Active, ProjectStatus::Suspended) => "project.suspended",
        (ProjectStatus::Suspended, ProjectStatus::Active) => "project.reactivated",
        _ => "project.updated",
    };
    db::audit::record(
        &mut tx,
        NewEntry::new(auth.project_id, action)
            .actor(actor)
            .target("project", auth.project_id)
            .metadata(with_by(serde_json::json!({ "changes": changed }), &by))
            .request(Some(request_id::current())),
    )
    .await?;
    if req.status.is_some() {
        project_state::publish(&s, &after).await?;
    }
    tx.commit().await?;
    crate::project_settings::changed(&s, after.id).await;
    tracing::info!(project_id = %after.id, action, "project updated");
    Ok(ApiJson(Data::new(after)))
}

/// Soft-deletes a project: its row and data stay, its name and slug are free again, and its
/// tokens (401 `project_deleted`) and API keys stop working on every API process before this
/// answers (`204`).
///
/// Permission: `projects:manage` (platform tokens only). 404 for an unknown or already deleted
/// project; 503 (nothing deleted) when Redis cannot take the refusal.
#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id")),
    security(("bearer" = ["projects:manage"])),
    responses((status = 204, description = "Deleted"),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn delete_project(
    auth: ProjectScoped<ProjectsManage>,
    State(s): State<AppState>,
) -> Result<StatusCode> {
    let (actor, by) = audit_actor(&auth.claims);
    let mut tx = s.pool.begin().await?;
    let project = db::projects::soft_delete(&mut tx, auth.project_id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project.id, "project.deleted")
            .actor(actor)
            .target("project", project.id)
            .metadata(with_by(
                serde_json::json!({ "name": project.name, "slug": project.slug }),
                &by,
            ))
            .request(Some(request_id::current())),
    )
    .await?;
    project_state::publish(&s, &project).await?;
    tx.commit().await?;
    tracing::info!(project_id = %project.id, "project deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A project's users by status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStats {
    /// All users.
    pub total: i64,
    /// `INVITED` users.
    pub invited: i64,
    /// `ACTIVE` users.
    pub active: i64,
    /// `DEACTIVATED` users.
    pub deactivated: i64,
    /// Users whose activity was recorded in the last 24 hours (activity is recorded at most
    /// every 5 minutes, on changes they make).
    pub seen_last_24h: i64,
}

/// A project's rules.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleStats {
    /// All rules.
    pub total: i64,
    /// Active rules (the ones events are matched against).
    pub active: i64,
}

/// A project's counts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStats {
    /// The project.
    pub project_id: Uuid,
    /// Its users.
    pub users: UserStats,
    /// Its API keys.
    pub api_keys: i64,
    /// Its rules.
    pub rules: RuleStats,
    /// Events it received in the last 24 hours.
    pub events_last_24h: i64,
    /// Notifications its rules created in the last 24 hours.
    pub notifications_last_24h: i64,
}

/// A project's counts: users by status and seen in the last 24 hours, API keys, rules, and the
/// events received and notifications created in the last 24 hours.
///
/// Permission: `projects:manage` (platform tokens only). 404 for a deleted or unknown project.
#[utoipa::path(get, path = "/api/v1/projects/{id}/stats", tag = "projects",
    params(("id" = Uuid, Path, description = "Project id")),
    security(("bearer" = ["projects:manage"])),
    responses((status = 200, body = inline(Data<ProjectStats>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn project_stats(
    auth: ProjectScoped<ProjectsManage>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<ProjectStats>>> {
    {
        let mut conn = s.pool.acquire().await?;
        db::projects::find(&mut conn, auth.project_id)
            .await?
            .ok_or(ApiError::NotFound("project"))?;
    }
    let c = db::projects::counts(&s.pool, auth.project_id).await?;
    Ok(ApiJson(Data::new(ProjectStats {
        project_id: auth.project_id,
        users: UserStats {
            total: c.users_invited + c.users_active + c.users_deactivated,
            invited: c.users_invited,
            active: c.users_active,
            deactivated: c.users_deactivated,
            seen_last_24h: c.users_seen_last_24h,
        },
        api_keys: c.api_keys,
        rules: RuleStats {
            total: c.rules,
            active: c.rules_active,
        },
        events_last_24h: c.events_last_24h,
        notifications_last_24h: c.notifications_last_24h,
    })))
}
