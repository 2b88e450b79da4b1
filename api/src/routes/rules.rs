//! Alert rules: which events (types, a CEL condition) become notifications (title and body
//! templates), for whom (target roles), on which channels. Conditions and templates are
//! compiled when saved: what does not compile is a `422` naming the field, with the position.
//! Every change bumps the project's rules version (workers reload their cached rules) and is
//! audited with a diff. `POST /api/v1/rules/test` evaluates without storing anything.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{
        self,
        audit::NewEntry,
        rules::{RuleFields, RuleRow},
    },
    domain::{
        FieldErrors, Invalid, NO_NUL_NOT_BLANK_PATTERN, PRINTABLE_NOT_BLANK_PATTERN, parse_instant,
        required, within,
    },
    rules::{
        CHANNELS, Condition, EventInput, EventType, EventView, MAX_PATTERNS, MAX_TITLE, Templates,
        TypePattern,
    },
};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, RuleRead, RuleWrite},
    envelope::{ApiJson, CursorList, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, PathId, ValidJson, Validate},
    request_id,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_rule, list_rules))
        .routes(routes!(get_rule, update_rule, delete_rule))
        .routes(routes!(test_rule))
}

const MAX_NAME: usize = 100;
const MAX_DESCRIPTION: usize = 1000;
const MAX_TARGET_ROLES: usize = 50;
const MAX_SOUND: usize = 50;

/// Suppression: at most `maxFires` notifications per `windowSeconds` (applied by delivery).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suppression {
    /// 1 to 10000.
    #[schema(minimum = 1, maximum = 10000)]
    pub max_fires: u32,
    /// 1 to 604800 (a week).
    #[schema(minimum = 1, maximum = 604800)]
    pub window_seconds: u32,
}

/// A rule as written (create, and full replace).
///
/// What JSON Schema cannot say is in the descriptions: `condition` must compile as CEL, `title`
/// and `body` as templates, and `targetRoleIds` must be roles of the project (each a `422`
/// naming the field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleRequest {
    /// 1 to 100 characters as sent, no control characters, not blank (stored trimmed).
    #[schema(required = true, nullable = false, schema_with = rule_name)]
    pub name: Option<String>,
    /// At most 1000 characters, no NUL.
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    /// 1 to 20 types: exact (`transfer.failed`) or a prefix (`transfer.*`; `*` for all).
    #[schema(required = true, nullable = false, value_type = Vec<TypePattern>, min_items = 1, max_items = 20)]
    pub event_types: Option<Vec<String>>,
    /// CEL over `event` (`type`, `source`, `occurredAt`, `payload`), e.g.
    /// `event.payload.amount > 1000`, that compiles; absent: every event of the types matches.
    #[schema(min_length = 1, max_length = 2000)]
    pub condition: Option<String>,
    /// The notification's title: a template over `event` that compiles, e.g.
    /// `Transfer of {{ event.payload.amount }} failed`; not blank, at most 200 characters, no NUL.
    #[schema(required = true, nullable = false, schema_with = rule_title)]
    pub title: Option<String>,
    /// The notification's body: a template over `event` that compiles; at most 4000 characters,
    /// no NUL.
    #[schema(max_length = 4000, pattern = "^[^\\u0000]*$")]
    pub body: Option<String>,
    /// Roles of this project whose ACTIVE holders receive the notifications (0 to 50).
    #[schema(max_items = 50)]
    pub target_role_ids: Option<Vec<Uuid>>,
    /// 1 to 3 of `inApp`, `email`, `webhook` (a repeated one counts).
    #[schema(required = true, nullable = false, value_type = Vec<Channel>, min_items = 1, max_items = 3)]
    pub channels: Option<Vec<String>>,
    /// -1000 to 1000 (default 0); higher rules are evaluated first.
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// Default true.
    pub active: Option<bool>,
    /// A sound the dashboard plays (letters, digits, `_`, `-`; at most 50).
    #[schema(min_length = 1, max_length = 50, pattern = r"^[A-Za-z0-9_-]+$")]
    pub sound: Option<String>,
    /// At most this many notifications per window.
    pub suppression: Option<Suppression>,
}

/// The OpenAPI schema of a channel a rule notifies on: one of [`CHANNELS`].
pub struct Channel;

impl PartialSchema for Channel {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(CHANNELS.iter().copied()))
            .into()
    }
}

impl ToSchema for Channel {}

fn rule_name() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "1 to {MAX_NAME} characters as sent, no control characters, not blank (stored \
             trimmed)."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME))
        .pattern(Some(PRINTABLE_NOT_BLANK_PATTERN))
        .into()
}

fn rule_title() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "The notification's title: a template over `event` that compiles, e.g. \
             `Transfer of {{{{ event.payload.amount }}}} failed`; not blank, at most {MAX_TITLE} \
             characters, no NUL."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_TITLE))
        .pattern(Some(NO_NUL_NOT_BLANK_PATTERN))
        .into()
}

/// A valid [`RuleRequest`], compiled.
#[derive(Debug)]
pub struct ValidRule {
    fields: RuleFields,
}

fn bounded(s: String, min: usize, max: usize) -> Result<String, Invalid> {
    let n = s.chars().count();
    if n < min || n > max {
        Err(Invalid::new(format!("must be {min} to {max} characters")))
    } else if s.contains('\0') {
        Err(Invalid::new("must not contain NUL characters"))
    } else {
        Ok(s)
    }
}

impl Validate for RuleRequest {
    type Valid = ValidRule;

    fn validate(self) -> Result<ValidRule, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            required(self.name).and_then(|n| {
                // bounded as sent, as the document says; stored trimmed
                if n.chars().any(char::is_control) {
                    return Err(Invalid::new("must not contain control characters"));
                }
                let n = bounded(n, 1, MAX_NAME)?;
                match n.trim() {
                    "" => Err(Invalid::new("must not be blank")),
                    t => Ok(t.to_owned()),
                }
            }),
        );
        let description = errors.check(
            "description",
            bounded(self.description.unwrap_or_default(), 0, MAX_DESCRIPTION),
        );
        let event_types = match self.event_types {
            None => {
                errors.add("eventTypes", "is required");
                None
            }
            Some(t) if t.is_empty() || t.len() > MAX_PATTERNS => {
                errors.add("eventTypes", format!("must hold 1 to {MAX_PATTERNS} types"));
                None
            }
            Some(t) => {
                let mut ok = Vec::new();
                for (i, p) in t.iter().enumerate() {
                    if let Some(p) =
                        errors.check(&format!("eventTypes[{i}]"), TypePattern::parse(p))
                    {
                        ok.push(p.to_string());
                    }
                }
                ok.dedup();
                Some(ok)
            }
        };
        let condition = match self.condition {
            None => Some(None),
            Some(c) => match Condition::compile(&c) {
                Ok(_) => Some(Some(c)),
                Err(e) => {
                    errors.add("condition", e.to_string());
                    None
                }
            },
        };
        let title = required(self.title)
            .map_err(|e| errors.add("title", e.message()))
            .ok();
        let body = self.body.unwrap_or_default();
        if let Some(t) = &title
            && let Err(e) = Templates::compile(t, &body)
        {
            errors.add(e.field, e.message);
        }
        let target_role_ids = self.target_role_ids.unwrap_or_default();
        if target_role_ids.len() > MAX_TARGET_ROLES {
            errors.add(
                "targetRoleIds",
                format!("must hold at most {MAX_TARGET_ROLES} roles"),
            );
        }
        let channels = match self.channels {
            None => {
                errors.add("channels", "is required");
                None
            }
            Some(c) => {
                let mut ok: Vec<String> = Vec::new();
                for (i, ch) in c.iter().enumerate() {
                    if !CHANNELS.contains(&ch.as_str()) {
                        errors.add(
                            format!("channels[{i}]"),
                            format!("must be one of {}", CHANNELS.join(", ")),
                        );
                    } else if !ok.contains(ch) {
                        ok.push(ch.clone());
                    }
                }
                if c.is_empty() || c.len() > CHANNELS.len() {
                    errors.add(
                        "channels",
                        format!("must hold 1 to {} channels", CHANNELS.len()),
                    );
                }
                Some(ok)
            }
        };
        let priority = errors.check("priority", within(self.priority.unwrap_or(0), -1000..=1000));
        let sound = errors.check(
            "sound",
            self.sound
                .map(|s| {
                    if s.is_empty()
                        || s.len() > MAX_SOUND
                        || !s
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        Err(Invalid::new(format!(
                            "must be 1 to {MAX_SOUND} letters, digits, `_` or `-`"
                        )))
                    } else {
                        Ok(s)
                    }
                })
                .transpose(),
        );
        let suppression = match self.suppression {
            None => Some(None),
            Some(sup) => {
                let fires = errors.check("suppression.maxFires", within(sup.max_fires, 1..=10_000));
                let window = errors.check(
                    "suppression.windowSeconds",
                    within(sup.window_seconds, 1..=604_800),
                );
                fires.zip(window).map(|(f, w)| Some((f as i32, w as i32)))
            }
        };
        match (
            name,
            description,
            event_types,
            condition,
            title,
            channels,
            priority,
            sound,
            suppression,
        ) {
            (
                Some(name),
                Some(description),
                Some(event_types),
                Some(condition),
                Some(title),
                Some(channels),
                Some(priority),
                Some(sound),
                Some(suppression),
            ) if errors.is_empty() => Ok(ValidRule {
                fields: RuleFields {
                    name,
                    description,
                    event_types,
                    condition,
                    title_template: title,
                    body_template: body,
                    target_role_ids,
                    channels,
                    priority,
                    active: self.active.unwrap_or(true),
                    sound,
                    suppression,
                },
            }),
            _ => Err(errors),
        }
    }
}

/// A rule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Type patterns.
    pub event_types: Vec<String>,
    /// CEL condition (null: every event of the types).
    pub condition: Option<String>,
    /// Title template.
    pub title: String,
    /// Body template.
    pub body: String,
    /// Target roles.
    pub target_role_ids: Vec<Uuid>,
    /// Channels.
    pub channels: Vec<String>,
    /// Priority.
    pub priority: i32,
    /// Whether it is evaluated.
    pub active: bool,
    /// Sound.
    pub sound: Option<String>,
    /// Suppression.
    pub suppression: Option<Suppression>,
    /// The last evaluation error (a missing field, a wrong type): such an event did not match.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<RuleRow> for Rule {
    fn from(r: RuleRow) -> Self {
        Self {
            id: r.rule_id,
            name: r.name,
            description: r.description,
            event_types: r.event_types,
            condition: r.condition,
            title: r.title_template,
            body: r.body_template,
            target_role_ids: r.target_role_ids,
            channels: r.channels,
            priority: r.priority,
            active: r.active,
            sound: r.sound,
            suppression: r
                .suppression_max_fires
                .zip(r.suppression_window_secs)
                .map(|(f, w)| Suppression {
                    max_fires: f.max(0) as u32,
                    window_seconds: w.max(0) as u32,
                }),
            last_error: r.last_error,
            last_error_at: r.last_error_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

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
async fn create_rule(
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
async fn list_rules(
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
async fn get_rule(
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
async fn update_rule(
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
async fn delete_rule(
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

/// The event a rule test evaluates.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestEvent {
    /// Its type.
    #[serde(rename = "type")]
    #[schema(required = true, nullable = false, value_type = EventType)]
    pub event_type: Option<String>,
    /// Its source: 1 to 100 characters, no NUL.
    #[schema(min_length = 1, max_length = 100, pattern = "^[^\\u0000]*$")]
    pub source: Option<String>,
    /// When it happened (RFC 3339; default now).
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub occurred_at: Option<String>,
    /// Its payload (a JSON object).
    #[schema(required = true, nullable = false, value_type = Object)]
    pub payload: Option<serde_json::Value>,
}

/// A rule test: a condition (or a stored rule) and an event. Exactly one of `condition` and
/// `ruleId` is given (a `422` otherwise), and the condition must compile as CEL.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestRequest {
    /// A condition to try (give this or `ruleId`).
    #[schema(min_length = 1, max_length = 2000)]
    pub condition: Option<String>,
    /// A stored rule to try: its types, condition and templates.
    pub rule_id: Option<Uuid>,
    /// The event.
    #[schema(required = true, nullable = false)]
    pub event: Option<TestEvent>,
}

/// A valid [`TestRequest`].
#[derive(Debug)]
pub struct ValidTest {
    condition: Option<String>,
    rule_id: Option<Uuid>,
    event_type: String,
    source: Option<String>,
    occurred_at: DateTime<Utc>,
    payload: serde_json::Value,
}

impl Validate for TestRequest {
    type Valid = ValidTest;

    fn validate(self) -> Result<ValidTest, FieldErrors> {
        let mut errors = FieldErrors::new();
        if self.condition.is_some() == self.rule_id.is_some() {
            errors.add("condition", "give either `condition` or `ruleId`");
        }
        let Some(event) = self.event else {
            errors.add("event", "is required");
            return Err(errors);
        };
        let event_type = errors.check(
            "event.type",
            required(event.event_type).and_then(|t| EventType::parse(&t)),
        );
        let payload = errors.check(
            "event.payload",
            required(event.payload).and_then(|p| {
                if p.is_object() {
                    Ok(p)
                } else {
                    Err(Invalid::new("must be a JSON object"))
                }
            }),
        );
        let occurred_at = errors.check(
            "event.occurredAt",
            event.occurred_at.as_deref().map(parse_instant).transpose(),
        );
        let source = errors.check(
            "event.source",
            event.source.map(|s| bounded(s, 1, 100)).transpose(),
        );
        match (event_type, payload, occurred_at, source) {
            (Some(t), Some(payload), Some(occurred_at), Some(source)) if errors.is_empty() => {
                Ok(ValidTest {
                    condition: self.condition,
                    rule_id: self.rule_id,
                    event_type: t.as_ref().to_owned(),
                    source,
                    occurred_at: occurred_at.unwrap_or_else(Utc::now),
                    payload,
                })
            }
            _ => Err(errors),
        }
    }
}

/// What a rule test found.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// Whether the event would match (false when the evaluation failed).
    pub matched: bool,
    /// For a stored rule: whether its `eventTypes` select the event's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_selected: Option<bool>,
    /// The evaluation error (a missing field, a wrong type), if any: such an event does not
    /// match.
    pub error: Option<String>,
    /// For a stored rule that matched: the notification's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// For a stored rule that matched: the notification's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Tries a condition, or a stored rule, on an event: whether it matches, and the evaluation
/// error if any. Nothing is stored. A condition that does not compile is a 422 naming
/// `condition`, with the position.
///
/// Permission: `rule:read`.
#[utoipa::path(post, path = "/api/v1/rules/test", tag = "rules",
    request_body = TestRequest,
    security(("bearer" = ["rule:read"])),
    responses((status = 200, body = inline(Data<TestResult>)),
              (status = 404, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
async fn test_rule(
    auth: Authorized<RuleRead>,
    State(s): State<AppState>,
    ValidJson(t): ValidJson<TestRequest>,
) -> Result<ApiJson<Data<TestResult>>> {
    let input = EventInput::new(
        &t.event_type,
        t.source.as_deref(),
        t.occurred_at,
        &t.payload,
    );
    let (condition, templates, type_selected) = match (t.condition, t.rule_id) {
        (Some(c), _) => (
            Some(
                Condition::compile(&c)
                    .map_err(|e| ApiError::invalid("condition", e.to_string()))?,
            ),
            None,
            None,
        ),
        (None, Some(id)) => {
            let mut conn = s.pool.acquire().await?;
            let rule = db::rules::find(&mut conn, auth.claims.project_id, id)
                .await?
                .ok_or(ApiError::NotFound("rule"))?;
            let compiled = |what: &str, e: String| {
                ApiError::Internal(anyhow::anyhow!(
                    "stored rule {id}: {what} no longer compiles: {e}"
                ))
            };
            let condition = rule
                .condition
                .as_deref()
                .map(Condition::compile)
                .transpose()
                .map_err(|e| compiled("condition", e.to_string()))?;
            let templates = Templates::compile(&rule.title_template, &rule.body_template)
                .map_err(|e| compiled("templates", e.message))?;
            let selected = rule
                .event_types
                .iter()
                .filter_map(|p| TypePattern::parse(p).ok())
                .any(|p| p.matches(&t.event_type));
            (condition, Some(templates), Some(selected))
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "condition",
                "give either `condition` or `ruleId`",
            ));
        }
    };
    let verdict = condition.as_ref().map_or(Ok(true), |c| c.evaluate(&input));
    let (matched, error) = match verdict {
        Ok(m) => (m && type_selected.unwrap_or(true), None),
        Err(e) => (false, Some(e)),
    };
    let (mut title, mut body) = (None, None);
    if matched && let Some(templates) = templates {
        let view = EventView::new(
            &t.event_type,
            t.source.as_deref(),
            t.occurred_at,
            &t.payload,
        );
        match templates.render(&view) {
            Ok((t, b)) => {
                title = Some(t);
                body = Some(b);
            }
            Err(e) => {
                return Ok(ApiJson(Data::new(TestResult {
                    matched: false,
                    type_selected,
                    error: Some(e),
                    title: None,
                    body: None,
                })));
            }
        }
    }
    Ok(ApiJson(Data::new(TestResult {
        matched,
        type_selected,
        error,
        title,
        body,
    })))
}
