//! Storing, listing, reading, replacing and deleting rules: each change checks its target
//! roles, bumps the project's rules version and is audited with a diff.

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use shared::{
    db::{self, audit::NewEntry, rules::RuleRow},
    domain::FieldErrors,
};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, RuleRead, RuleWrite},
    envelope::{ApiJson, CursorList, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, PathId, ValidJson},
    request_id,
};

use super::body::{Rule, RuleRequest};

/// Refuses target roles that are not the project's (422 naming each).
async fn check_roles(conn: &mut sqlx::PgConnection, project_id: Uuid, ids: &[Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let found = db::roles::existing(conn, project_id, ids).await?;
    let mut errors = FieldErrors::new();
    for (i, id) in ids.iter().enumerate() {
        if !found.iter().any(|r| r.id == *id) {
            errors.add(
                format!("targetRoleIds[{i}]"),
                "is not a role of this project",
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.into())
    }
}

fn audit_view(r: &RuleRow) -> serde_json::Value {
    serde_json::to_value(Rule::from(r.clone())).unwrap_or_default()
}

/// The fields that differ, as `{field: {from, to}}`.
fn diff(before: &RuleRow, after: &RuleRow) -> serde_json::Value {
    let (b, a) = (audit_view(before), audit_view(after));
    let mut out = serde_json::Map::new();
    if let (Some(b), Some(a)) = (b.as_object(), a.as_object()) {
        for (k, v) in a {
            if ["updatedAt", "lastError", "lastErrorAt"].contains(&k.as_str()) {
                continue;
            }
            if b.get(k) != Some(v) {
                out.insert(k.clone(), serde_json::json!({ "from": b.get(k), "to": v }));
            }
        }
    }
    serde_json::Value::Object(out)
}

/// Creates a rule (compiled first: a condition or template that does not compile is a 422
/// naming the field, with the error's position).
///
/// Permission: `rule:write`.
#[utoipa::path(post, path = "/api/v1/rules", tag = "rules",
    request_body = RuleRequest,
    security(("bearer" = ["rule:write"])),
    responses((status = 201, body = inline(Data<Rule>)),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn create_rule(
    auth: Authorized<RuleWrite>,
    State(s): State<AppState>,
    ValidJson(rule): ValidJson<RuleRequest>,
) -> Result<(StatusCode, ApiJson<Data<Rule>>)> {
    let project_id = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    check_roles(&mut tx, project_id, &rule.fields.target_role_ids).await?;
    let row = db::rules::insert(&mut tx, project_id, auth.user_id(), &rule.fields).await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "rule.created")
            .actor(auth.user_id())
            .target("rule", row.rule_id)
            .metadata(serde_json::json!({ "rule": audit_view(&row) }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(rule_id = %row.rule_id, "rule created");
    Ok((StatusCode::CREATED, ApiJson(Data::new(row.into()))))
}

/// Filters and cursor of the rule list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RuleParams {
    /// Only active (`true`) or inactive (`false`) rules.
    pub active: Option<bool>,
    /// The previous page's `meta.nextCursor`; empty is no cursor.
    pub after: Option<String>,
    /// Rules per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

fn encode_cursor(r: &Rule) -> String {
    crate::envelope::created_cursor(r.created_at, r.id)
}

/// The project's rules, oldest first.
///
/// Permission: `rule:read`.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules",
    params(RuleParams),
    security(("bearer" = ["rule:read"])),
    responses((status = 200, body = inline(CursorList<Rule>)),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn list_rules(
    auth: Authorized<RuleRead>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<RuleParams>,
) -> Result<ApiJson<CursorList<Rule>>> {
    let (limit, after) = crate::envelope::cursor_page(params.limit, params.after.as_deref())?;
    let rows = db::rules::list(
        &s.pool,
        auth.claims.project_id,
        params.active,
        after,
        i64::from(limit) + 1,
    )
    .await?;
    Ok(ApiJson(CursorList::new(
        rows.into_iter().map(Rule::from).collect(),
        limit,
        encode_cursor,
    )))
}

/// One rule, with its last evaluation error.
///
/// Permission: `rule:read`. Another project's rule is not found.
#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = Uuid, Path, description = "Rule id")),
    security(("bearer" = ["rule:read"])),
    responses((status = 200, body = inline(Data<Rule>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_rule(
    auth: Authorized<RuleRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<Rule>>> {
    let mut conn = s.pool.acquire().await?;
    let row = db::rules::find(&mut conn, auth.claims.project_id, id)
        .await?
        .ok_or(ApiError::NotFound("rule"))?;
    Ok(ApiJson(Data::new(row.into())))
}

/// Replaces a rule (every field, as when creating it). Audited with the fields that changed.
///
/// Permission: `rule:write`. Another project's rule is not found.
#[utoipa::path(put, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = Uuid, Path, description = "Rule id")),
    request_body = RuleRequest,
    security(("bearer" = ["rule:write"])),
    responses((status = 200, body = inline(Data<Rule>)),
              (status = 404, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn update_rule(
    auth: Authorized<RuleWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ValidJson(rule): ValidJson<RuleRequest>,
) -> Result<ApiJson<Data<Rule>>> {
    let project_id = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let before = db::rules::lock(&mut tx, project_id, id)
        .await?
        .ok_or(ApiError::NotFound("rule"))?;
    check_roles(&mut tx, project_id, &rule.fields.target_role_ids).await?;
    let after = db::rules::update(&mut tx, project_id, id, &rule.fields)
        .await?
        .ok_or(ApiError::NotFound("rule"))?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "rule.updated")
            .actor(auth.user_id())
            .target("rule", id)
            .metadata(serde_json::json!({ "changes": diff(&before, &after) }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(rule_id = %id, "rule updated");
    Ok(ApiJson(Data::new(after.into())))
}

/// Deletes a rule (the notifications it created stay). Audited with the rule as it was.
///
/// Permission: `rule:write`. Another project's rule is not found.
#[utoipa::path(delete, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = Uuid, Path, description = "Rule id")),
    security(("bearer" = ["rule:write"])),
    responses((status = 204, description = "Deleted"),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn delete_rule(
    auth: Authorized<RuleWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode> {
    let project_id = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let row = db::rules::delete(&mut tx, project_id, id)
        .await?
        .ok_or(ApiError::NotFound("rule"))?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "rule.deleted")
            .actor(auth.user_id())
            .target("rule", id)
            .metadata(serde_json::json!({ "rule": audit_view(&row) }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(rule_id = %id, "rule deleted");
    Ok(StatusCode::NO_CONTENT)
}
