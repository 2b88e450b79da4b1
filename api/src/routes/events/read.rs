//! Reading events back: the project's list (filters, keyset cursor) and one event with the
//! rules it matched, the notifications it created and its job.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{self},
    domain::{FieldErrors, Invalid, parse_instant},
    queue::JobState,
    rules::EventType,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ingest::MAX_SOURCE;
use crate::{
    AppState,
    auth::{Caller, EventsRead},
    envelope::{ApiJson, CursorList, Data},
    error::{ApiError, AuthRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, PathId},
};

/// An event as read back.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Id (UUIDv7, time-ordered).
    pub id: Uuid,
    /// Type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Source.
    pub source: Option<String>,
    /// Payload.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When Comet received it.
    pub received_at: DateTime<Utc>,
    /// The sender's idempotency key.
    pub idempotency_key: Option<String>,
    /// When `process_event` finished with it (null until then).
    pub processed_at: Option<DateTime<Utc>>,
    /// The rules it matched.
    pub matched_rule_ids: Vec<Uuid>,
    /// Notifications it created.
    pub notification_count: i32,
    /// Their recipients.
    pub recipient_count: i32,
    /// Its `process_event` job.
    pub job_id: Uuid,
}

impl From<db::events::EventRow> for Event {
    fn from(r: db::events::EventRow) -> Self {
        Self {
            id: r.event_id,
            event_type: r.event_type,
            source: r.source,
            payload: r.payload,
            occurred_at: r.occurred_at,
            received_at: r.received_at,
            idempotency_key: r.idempotency_key,
            processed_at: r.processed_at,
            matched_rule_ids: r.matched_rule_ids,
            notification_count: r.notification_count,
            recipient_count: r.recipient_count,
            job_id: r.job_id,
        }
    }
}

/// Filters and cursor of the event list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Exact type.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<EventType>, inline)]
    pub event_type: Option<String>,
    /// Exact source (1 to 100 characters, no control characters).
    #[param(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub source: Option<String>,
    /// Received at or after (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Received before (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    /// Only processed (`true`) or only waiting (`false`) events.
    pub processed: Option<bool>,
    /// The previous page's `meta.nextCursor`.
    #[param(value_type = Option<Uuid>)]
    pub before: Option<String>,
    /// Events per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

struct EventQuery {
    filter: db::events::EventFilter,
    before: Option<Uuid>,
    limit: u32,
}

impl EventParams {
    fn parse(self) -> Result<EventQuery, FieldErrors> {
        let mut errors = FieldErrors::new();
        let event_type = errors.check(
            "type",
            self.event_type
                .as_deref()
                .map(|t| EventType::parse(t).map(|t| t.as_ref().to_owned()))
                .transpose(),
        );
        let source = errors.check(
            "source",
            self.source
                .map(|s| {
                    if s.is_empty()
                        || s.chars().count() > MAX_SOURCE
                        || s.chars().any(char::is_control)
                    {
                        Err(Invalid::new(format!(
                            "must be 1 to {MAX_SOURCE} printable characters"
                        )))
                    } else {
                        Ok(s)
                    }
                })
                .transpose(),
        );
        let from = errors.check("from", self.from.as_deref().map(parse_instant).transpose());
        let to = errors.check("to", self.to.as_deref().map(parse_instant).transpose());
        let before = errors.check(
            "before",
            self.before
                .as_deref()
                .map(|b| {
                    Uuid::parse_str(b).map_err(|_| {
                        Invalid::new("is not a cursor from this list (meta.nextCursor)")
                    })
                })
                .transpose(),
        );
        let limit = errors.check(
            "limit",
            shared::domain::within(self.limit.unwrap_or(50), 1..=100),
        );
        match (event_type, source, from, to, before, limit) {
            (Some(event_type), Some(source), Some(from), Some(to), Some(before), Some(limit))
                if errors.is_empty() =>
            {
                Ok(EventQuery {
                    filter: db::events::EventFilter {
                        event_type,
                        source,
                        from,
                        to,
                        processed: self.processed,
                    },
                    before,
                    limit,
                })
            }
            _ => Err(errors),
        }
    }
}

/// The project's events, newest first, filtered; page with `before` = the previous page's
/// `meta.nextCursor` (keyset: as fast deep in the list as at its start).
///
/// Permission: `events:read`, or an API key of the project (`X-API-Key`).
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(EventParams),
    security(("bearer" = ["events:read"]), ("apiKey" = [])),
    responses((status = 200, body = inline(CursorList<Event>)),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn list_events(
    caller: Caller<EventsRead>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<ApiJson<CursorList<Event>>> {
    let q = params.parse()?;
    let rows = db::events::list(
        &s.pool,
        caller.project_id,
        &q.filter,
        q.before,
        i64::from(q.limit) + 1,
    )
    .await?;
    Ok(ApiJson(CursorList::new(
        rows.into_iter().map(Event::from).collect(),
        q.limit,
        |e: &Event| e.id.to_string(),
    )))
}

/// A notification an event created.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventNotification {
    /// Id.
    pub id: Uuid,
    /// The rule that created it.
    pub rule_id: Uuid,
    /// Its title.
    pub title: String,
    /// How many users receive it.
    pub recipients: i64,
}

/// An event's processing job, as far as the event's reader needs it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventJob {
    /// Id (`GET /api/v1/jobs/{id}` has everything).
    pub id: Uuid,
    /// `pending`, `waiting`, `active`, `retrying`, `completed`, `dead`, … or `expired` once
    /// the queue no longer keeps it.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// The last attempt's error, if any.
    pub last_error: Option<String>,
}

/// An event with the notifications it created and its job.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// The notifications it created.
    pub notifications: Vec<EventNotification>,
    /// Its `process_event` job.
    pub job: EventJob,
}

/// One event: its payload, when it was processed, the rules it matched, the notifications it
/// created, and its job's state.
///
/// Permission: `events:read`, or an API key of the project (`X-API-Key`). Another project's event is not found.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "Event id")),
    security(("bearer" = ["events:read"]), ("apiKey" = [])),
    responses((status = 200, body = inline(Data<EventDetail>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_event(
    caller: Caller<EventsRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<EventDetail>>> {
    let project_id = caller.project_id;
    let row = db::events::find(&s.pool, project_id, id)
        .await?
        .ok_or(ApiError::NotFound("event"))?;
    let notifications = {
        let mut conn = s.pool.acquire().await?;
        db::notifications::of_event(&mut conn, project_id, id).await?
    };
    let job_id = row.job_id;
    let job = match s
        .queues
        .find_job(
            &[<shared::jobs::ProcessEvent as shared::jobs::Job>::QUEUE],
            job_id,
        )
        .await?
    {
        Some(j) if j.project_id == Some(project_id) => EventJob {
            id: job_id,
            state: j.state.as_str().to_owned(),
            attempts: j.attempts,
            last_error: j.last_error,
        },
        _ => match db::outbox::pending_job(&s.pool, Some(project_id), job_id).await? {
            Some(_) => EventJob {
                id: job_id,
                state: JobState::Pending.as_str().to_owned(),
                attempts: 0,
                last_error: None,
            },
            None => EventJob {
                id: job_id,
                state: "expired".to_owned(),
                attempts: 0,
                last_error: None,
            },
        },
    };
    Ok(ApiJson(Data::new(EventDetail {
        event: row.into(),
        notifications: notifications
            .into_iter()
            .map(|n| EventNotification {
                id: n.notification_id,
                rule_id: n.rule_id,
                title: n.title,
                recipients: n.recipients,
            })
            .collect(),
        job,
    })))
}
