//! Projects: the tenants. Every tenant table carries a `project_id`.
//!
//! A project is created with its default roles ([`create`]), changed ([`update`]), suspended
//! (status `suspended`) and soft-deleted ([`soft_delete`]: `deleted_at` is set, the row and
//! its data stay; its name and slug are free again). Every read here but [`blocked`] and
//! [`list`] with `deleted` sees live projects only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, types::Json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{ProjectSettings, ProjectStatus, Slug};

/// A project as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// The project id.
    pub id: Uuid,
    /// Its name (unique among live projects).
    pub name: String,
    /// Its short handle (unique among live projects).
    pub slug: String,
    /// What it is for.
    pub description: String,
    /// `active` or `suspended`.
    pub status: ProjectStatus,
    /// Its settings (known keys only).
    pub settings: ProjectSettings,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
    /// When it was deleted (`null` while it lives).
    pub deleted_at: Option<DateTime<Utc>>,
    /// The row's version, bumped by every change (orders the Redis project-state markers).
    #[serde(skip)]
    pub version: i64,
}

#[derive(sqlx::FromRow)]
struct ProjectRow {
    project_id: Uuid,
    name: String,
    slug: String,
    description: String,
    status: String,
    settings: Json<ProjectSettings>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    version: i64,
}

impl TryFrom<ProjectRow> for Project {
    type Error = sqlx::Error;

    fn try_from(r: ProjectRow) -> Result<Self, sqlx::Error> {
        Ok(Project {
            id: r.project_id,
            name: r.name,
            slug: r.slug,
            description: r.description,
            status: ProjectStatus::parse(&r.status).map_err(|e| sqlx::Error::Decode(e.into()))?,
            settings: r.settings.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
            version: r.version,
        })
    }
}

const COLUMNS: &str = "project_id, name, slug, description, status, settings, created_at, \
                       updated_at, deleted_at, version";

fn one(row: Option<ProjectRow>) -> Result<Option<Project>, sqlx::Error> {
    row.map(Project::try_from).transpose()
}

/// A project to create.
#[derive(Debug, Clone)]
pub struct NewProject<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its slug.
    pub slug: &'a str,
    /// Its description.
    pub description: &'a str,
    /// Its settings.
    pub settings: &'a ProjectSettings,
}

/// Creates a project with its default roles. The caller maps `projects_name_key` and
/// `projects_slug_key` to a 409.
pub async fn create(
    conn: &mut PgConnection,
    id: Uuid,
    p: &NewProject<'_>,
) -> Result<Project, sqlx::Error> {
    let sql = format!(
        "INSERT INTO projects (project_id, name, slug, description, settings)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    );
    let row: ProjectRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(p.name)
        .bind(p.slug)
        .bind(p.description)
        .bind(Json(p.settings))
        .fetch_one(&mut *conn)
        .await?;
    super::roles::ensure_defaults(conn, id).await?;
    row.try_into()
}

/// Creates a live project (with its default roles) if none has this name; returns its id. For
/// the demo project and tests; its slug comes from the name (`project` if the name gives none),
/// so a name whose slug a live project of another name holds is an error.
pub async fn ensure(conn: &mut PgConnection, name: &str) -> Result<Uuid, sqlx::Error> {
    let slug = Slug::from_name(name);
    let id: Uuid = sqlx::query_scalar(
        r#"
        WITH ins AS (
            INSERT INTO projects (project_id, name, slug) VALUES ($1, $2, $3)
            ON CONFLICT (name) WHERE deleted_at IS NULL DO NOTHING RETURNING project_id
        )
        SELECT project_id FROM ins
        UNION ALL SELECT project_id FROM projects WHERE name = $2 AND deleted_at IS NULL
        LIMIT 1
        "#,
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(slug.as_ref().map_or("project", AsRef::as_ref))
    .fetch_one(&mut *conn)
    .await?;
    super::roles::ensure_defaults(conn, id).await?;
    Ok(id)
}

/// A live project.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Project>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM projects WHERE project_id = $1 AND deleted_at IS NULL");
    one(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// A live project's settings (`None` if there is no such live project).
pub async fn settings_of(pool: &PgPool, id: Uuid) -> Result<Option<ProjectSettings>, sqlx::Error> {
    let row: Option<(Json<ProjectSettings>,)> = sqlx::query_as(
        "SELECT settings FROM projects WHERE project_id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(s,)| s.0))
}

/// A live project, locked until the transaction ends (changes to it and its keys wait).
///
/// `FOR NO KEY UPDATE`, not `FOR UPDATE`: two holders still wait for each other, but the
/// key-share locks every insert of a row that references the project takes (a user, an event,
/// a notification) do not hold it up; with `FOR UPDATE` a request creating a webhook endpoint
/// waited 30 s on the project's row and timed out while the worker imported users and
/// processed events for that project (schemathesis, 2026-12-06). An update that changes a key
/// column still takes the stronger lock itself.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Project>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM projects WHERE project_id = $1 AND deleted_at IS NULL \
         FOR NO KEY UPDATE"
    );
    one(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Filters of the project list.
#[derive(Debug, Clone, Default)]
pub struct ProjectFilter {
    /// Only this status.
    pub status: Option<ProjectStatus>,
    /// Substring of the name or slug (case-insensitive).
    pub search: Option<String>,
    /// Deleted projects instead of live ones.
    pub deleted: bool,
}

fn push_filter(qb: &mut QueryBuilder<Postgres>, f: &ProjectFilter) {
    qb.push(if f.deleted {
        " WHERE deleted_at IS NOT NULL"
    } else {
        " WHERE deleted_at IS NULL"
    });
    if let Some(status) = f.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(search) = &f.search {
        let escaped = search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        qb.push(" AND (name ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR slug ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
}

/// A page of projects, newest first, and how many match.
pub async fn list(
    pool: &PgPool,
    f: &ProjectFilter,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Project>, i64), sqlx::Error> {
    let mut page = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM projects"));
    push_filter(&mut page, f);
    page.push(" ORDER BY created_at DESC, project_id DESC OFFSET ")
        .push_bind(offset)
        .push(" LIMIT ")
        .push_bind(limit);
    let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM projects");
    push_filter(&mut count, f);
    let rows = async {
        let rows: Vec<ProjectRow> = page.build_query_as().fetch_all(pool).await?;
        rows.into_iter()
            .map(Project::try_from)
            .collect::<Result<Vec<_>, _>>()
    };
    let total = async { count.build_query_scalar::<i64>().fetch_one(pool).await };
    tokio::try_join!(rows, total)
}

/// Changes to a project; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct ProjectChanges<'a> {
    /// A new name.
    pub name: Option<&'a str>,
    /// A new slug.
    pub slug: Option<&'a str>,
    /// A new description.
    pub description: Option<&'a str>,
    /// A new status.
    pub status: Option<ProjectStatus>,
    /// New settings (replacing the old ones as a whole).
    pub settings: Option<&'a ProjectSettings>,
}

/// Changes a live project; `None` if there is none. The caller maps `projects_name_key` and
/// `projects_slug_key` to a 409.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    c: &ProjectChanges<'_>,
) -> Result<Option<Project>, sqlx::Error> {
    let sql = format!(
        "UPDATE projects SET name = coalesce($2, name), slug = coalesce($3, slug),
                description = coalesce($4, description), status = coalesce($5, status),
                settings = coalesce($6, settings), version = version + 1
         WHERE project_id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}"
    );
    one(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(c.name)
        .bind(c.slug)
        .bind(c.description)
        .bind(c.status.map(ProjectStatus::as_str))
        .bind(c.settings.map(Json))
        .fetch_optional(conn)
        .await?)
}

/// Soft-deletes a live project; `None` if there is none (or it was deleted already).
pub async fn soft_delete(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Project>, sqlx::Error> {
    let sql = format!(
        "UPDATE projects SET deleted_at = now(), version = version + 1
         WHERE project_id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}"
    );
    one(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Why a project's credentials are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Suspended (may become active again).
    Suspended,
    /// Deleted (for good).
    Deleted,
}

impl Block {
    /// As kept in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            Block::Suspended => "suspended",
            Block::Deleted => "deleted",
        }
    }

    /// From its Redis form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "suspended" => Some(Block::Suspended),
            "deleted" => Some(Block::Deleted),
            _ => None,
        }
    }

    /// The block of a project, if any.
    pub fn of(project: &Project) -> Option<Self> {
        if project.deleted_at.is_some() {
            Some(Block::Deleted)
        } else if project.status == ProjectStatus::Suspended {
            Some(Block::Suspended)
        } else {
            None
        }
    }
}

/// Every suspended or deleted project with its row version (what the API's Redis
/// project-state markers must hold).
pub async fn blocked(pool: &PgPool) -> Result<Vec<(Uuid, Block, i64)>, sqlx::Error> {
    let rows: Vec<(Uuid, bool, i64)> = sqlx::query_as(
        "SELECT project_id, deleted_at IS NOT NULL, version FROM projects
         WHERE deleted_at IS NOT NULL OR status = 'suspended'",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, deleted, version)| {
            let block = if deleted {
                Block::Deleted
            } else {
                Block::Suspended
            };
            (id, block, version)
        })
        .collect())
}

/// What `GET /projects/{id}/stats` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ProjectCounts {
    /// `INVITED` users.
    pub users_invited: i64,
    /// `ACTIVE` users.
    pub users_active: i64,
    /// `DEACTIVATED` users.
    pub users_deactivated: i64,
    /// Users whose activity was recorded in the last 24 hours.
    pub users_seen_last_24h: i64,
    /// API keys.
    pub api_keys: i64,
    /// Rules.
    pub rules: i64,
    /// Active rules.
    pub rules_active: i64,
    /// Events received in the last 24 hours.
    pub events_last_24h: i64,
    /// Notifications created in the last 24 hours.
    pub notifications_last_24h: i64,
}

/// A project's counts (the users by status from the trigger-kept `user_counts`; the events of
/// the last 24 hours as a range of their time-ordered ids).
pub async fn counts(pool: &PgPool, id: Uuid) -> Result<ProjectCounts, sqlx::Error> {
    let day_ago = Utc::now() - chrono::Duration::hours(24);
    sqlx::query_as(
        r#"
        SELECT coalesce((SELECT sum(invited) FROM user_counts WHERE project_id = $1), 0)::int8
                   AS users_invited,
               coalesce((SELECT sum(active) FROM user_counts WHERE project_id = $1), 0)::int8
                   AS users_active,
               coalesce((SELECT sum(deactivated) FROM user_counts WHERE project_id = $1), 0)::int8
                   AS users_deactivated,
               (SELECT count(*) FROM users
                WHERE project_id = $1 AND last_seen_at > $2) AS users_seen_last_24h,
               (SELECT count(*) FROM api_keys WHERE project_id = $1) AS api_keys,
               (SELECT count(*) FROM rules WHERE project_id = $1) AS rules,
               (SELECT count(*) FROM rules WHERE project_id = $1 AND active) AS rules_active,
               (SELECT count(*) FROM events
                WHERE project_id = $1 AND event_id >= $3 AND received_at > $2)
                   AS events_last_24h,
               (SELECT count(*) FROM notifications
                WHERE project_id = $1 AND created_at > $2) AS notifications_last_24h
        "#,
    )
    .bind(id)
    .bind(day_ago)
    .bind(super::events::id_bound(day_ago, false))
    .fetch_one(pool)
    .await
}
