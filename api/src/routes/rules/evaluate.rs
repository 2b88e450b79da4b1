//! `POST /api/v1/rules/test`: a condition (or a stored rule) tried on an event; nothing stored.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{self},
    domain::{FieldErrors, Invalid, parse_instant, required},
    rules::{Condition, EventInput, EventType, EventView, Templates, TypePattern},
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::bounded;
use crate::{
    AppState,
    auth::{Authorized, RuleRead},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ValidJson, Validate},
};

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
pub(super) async fn test_rule(
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
