//! A rule as written (validated, its condition and templates compiled) and as read back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::rules::{RuleFields, RuleRow},
    domain::{
        FieldErrors, Invalid, NO_NUL_NOT_BLANK_PATTERN, PRINTABLE_NOT_BLANK_PATTERN, required,
        within,
    },
    rules::{CHANNELS, Condition, MAX_PATTERNS, MAX_TITLE, Templates, TypePattern},
};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use uuid::Uuid;

use crate::{error::Result, extract::Validate};

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
    pub(super) fields: RuleFields,
}

pub(super) fn bounded(s: String, min: usize, max: usize) -> Result<String, Invalid> {
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
