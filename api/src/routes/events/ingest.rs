//! Event ingestion: one event, or a batch of up to 1000 in one transaction, each with its
//! `process_event` job in the outbox; the project's event rate and quota of open jobs.

use axum::{
    extract::State,
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::{
    config::{MAX_BATCH, RateLimit},
    db::{self, events::NewEvent},
    domain::{FieldError, FieldErrors, IdempotencyKey, Invalid, parse_instant, read_json_object},
    rules::EventType,
    sessions::Allowance,
};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Caller, EventsWrite},
    envelope::{Accepted, ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, EnqueueRefusals, Result},
    extract::{ValidJson, Validate},
    quota, request_id,
    routes::events::group_commit::{self, Ingest},
};

/// Largest `POST /api/v1/events/batch` body.
pub const BATCH_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Longest `source`.
pub(super) const MAX_SOURCE: usize = 100;
/// How far ahead of the server's clock `occurredAt` may be (senders' clocks drift).
const FUTURE_SLACK: chrono::Duration = chrono::Duration::hours(1);

/// An event as sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRequest {
    /// A dotted type, e.g. `transfer.failed` (letters, digits, `_`, `-`; at most 100).
    #[serde(rename = "type")]
    #[schema(required = true, nullable = false, value_type = EventType)]
    pub event_type: Option<String>,
    /// Any JSON object, at most `EVENT_MAX_PAYLOAD_BYTES` (64 KiB) as JSON; strings and keys
    /// without NUL (`\u0000`), which Postgres cannot store.
    #[schema(required = true, nullable = false, value_type = Object)]
    pub payload: Option<serde_json::Value>,
    /// Who sent it, e.g. `billing-service` (1 to 100 characters, no control characters).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub source: Option<String>,
    /// When it happened (RFC 3339; default: when received; at most an hour ahead).
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub occurred_at: Option<String>,
    /// The same key within the project answers the first event (`created: false`).
    #[schema(value_type = Option<IdempotencyKey>)]
    pub idempotency_key: Option<String>,
}

/// Whether a JSON value holds a NUL anywhere (Postgres `jsonb` cannot store `\u0000`).
fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

impl Validate for EventRequest {
    type Valid = NewEvent;

    fn validate(self) -> Result<NewEvent, FieldErrors> {
        let mut errors = FieldErrors::new();
        let event_type = errors.check(
            "type",
            shared::domain::required(self.event_type).and_then(|t| EventType::parse(&t)),
        );
        let payload = errors.check(
            "payload",
            shared::domain::required(self.payload).and_then(|p| {
                if !p.is_object() {
                    Err(Invalid::new("must be a JSON object"))
                } else if has_nul(&p) {
                    Err(Invalid::new("must not contain NUL characters (\\u0000)"))
                } else {
                    Ok(p)
                }
            }),
        );
        let source = errors.check(
            "source",
            self.source
                .map(|s| {
                    if s.is_empty() || s.chars().count() > MAX_SOURCE {
                        Err(Invalid::new(format!(
                            "must be 1 to {MAX_SOURCE} characters"
                        )))
                    } else if s.chars().any(char::is_control) {
                        Err(Invalid::new("must not contain control characters"))
                    } else {
                        Ok(s)
                    }
                })
                .transpose(),
        );
        let occurred_at = errors.check(
            "occurredAt",
            self.occurred_at
                .as_deref()
                .map(|t| {
                    parse_instant(t).and_then(|at| {
                        if at > Utc::now() + FUTURE_SLACK {
                            Err(Invalid::new("must not be more than an hour in the future"))
                        } else {
                            Ok(at)
                        }
                    })
                })
                .transpose(),
        );
        let idempotency_key = errors.check(
            "idempotencyKey",
            self.idempotency_key.map(IdempotencyKey::parse).transpose(),
        );
        match (event_type, payload, source, occurred_at, idempotency_key) {
            (Some(t), Some(payload), Some(source), Some(occurred_at), Some(key))
                if errors.is_empty() =>
            {
                Ok(NewEvent {
                    event_type: t.as_ref().to_owned(),
                    source,
                    payload,
                    occurred_at: occurred_at.unwrap_or_else(Utc::now),
                    idempotency_key: key.map(|k| k.as_ref().to_owned()),
                })
            }
            _ => Err(errors),
        }
    }
}

fn check_size(s: &AppState, e: &NewEvent) -> Result<(), Invalid> {
    let max = s.settings.events.max_payload_bytes;
    let size = serde_json::to_vec(&e.payload).map_or(usize::MAX, |b| b.len());
    if size > max {
        return Err(Invalid::new(format!(
            "must be at most {max} bytes as JSON (EVENT_MAX_PAYLOAD_BYTES); this is {size}"
        )));
    }
    Ok(())
}

/// `RateLimit-*` headers (IETF draft "RateLimit header fields for HTTP").
fn rate_headers(a: &Allowance) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(a.limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(a.remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(a.reset_secs),
        ),
    ]
}

/// Takes `count` events from the project's rate (its `settings.eventsPerSecond`, else
/// `RATE_LIMIT_EVENTS_PER_PROJECT`); a refusal is the whole `429` response.
async fn take_rate(
    s: &AppState,
    project_id: Uuid,
    count: u64,
) -> std::result::Result<Allowance, Response> {
    let settings = crate::project_settings::get(s, project_id)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    // a project's own rate counts in a window of its own (its length differs from the default's)
    let (key, limit) = match settings.events_per_second {
        Some(eps) => (
            format!("{project_id}:1s"),
            RateLimit::per_secs(u64::from(eps), 1),
        ),
        None => (project_id.to_string(), s.settings.events.per_project),
    };
    let allowance = s
        .sessions
        .take("events", &key, &limit, count)
        .await
        .map_err(|e| ApiError::session_store(e).into_response())?;
    if allowance.allowed {
        return Ok(allowance);
    }
    tracing::info!(%project_id, count, "event rate limited");
    let mut resp = ApiError::TooManyRequests {
        retry_after: allowance.reset_secs,
    }
    .into_response();
    resp.headers_mut().extend(rate_headers(&allowance));
    Err(resp)
}

/// An accepted event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventAccepted {
    /// The event's id (the first event's, for a repeated idempotency key).
    pub event_id: Uuid,
    /// False when the idempotency key named an earlier event.
    pub created: bool,
}

/// Sends an event: stored with its `process_event` job in one transaction; `202` with the
/// event's and the job's ids.
///
/// Permission: `events:write`, or an API key of the project (`X-API-Key`). 429 with `Retry-After` past the project's event rate
/// (`rate_limited`; `RateLimit-*` headers on every answer) or when the project has
/// `JOB_MAX_OPEN_PER_PROJECT` open jobs (`quota_exceeded`).
#[utoipa::path(post, path = "/api/v1/events", tag = "events",
    request_body = EventRequest,
    security(("bearer" = ["events:write"]), ("apiKey" = [])),
    responses((status = 202, body = inline(Data<Accepted<EventAccepted>>),
               headers(("Location" = String, description = "The job's status URL"),
                       ("RateLimit-Remaining" = u64, description = "Events left in the window"))),
              EnqueueRefusals,
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn create_event(
    caller: Caller<EventsWrite>,
    State(s): State<AppState>,
    ValidJson(event): ValidJson<EventRequest>,
) -> Result<Response> {
    let project_id = caller.project_id;
    check_size(&s, &event).map_err(|e| ApiError::invalid("payload", e.message()))?;
    quota::check_open_jobs(&s, project_id, 1).await?;
    let allowance = match take_rate(&s, project_id, 1).await {
        Ok(a) => a,
        Err(refusal) => return Ok(refusal),
    };
    let a = s
        .ingest
        .write(Ingest::new(
            project_id,
            event,
            request_id::enqueue_options(),
        ))
        .await
        .map_err(group_commit::api_error)?;
    tracing::info!(event_id = %a.event_id, job_id = %a.job_id, created = a.created, "event accepted");
    let details = EventAccepted {
        event_id: a.event_id,
        created: a.created,
    };
    Ok((rate_headers(&allowance), Accepted::job(a.job_id, details)).into_response())
}

/// A batch of events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1000 events, each as for `POST /api/v1/events`.
    #[schema(required = true, value_type = Vec<EventRequest>, min_items = 1, max_items = 1000)]
    pub events: Option<Vec<serde_json::Value>>,
}

impl Validate for BatchRequest {
    type Valid = Vec<serde_json::Value>;

    fn validate(self) -> Result<Self::Valid, FieldErrors> {
        match self.events {
            None => Err(FieldErrors::one("events", "is required")),
            Some(e) if e.is_empty() || e.len() > MAX_BATCH => Err(FieldErrors::one(
                "events",
                format!("must hold 1 to {MAX_BATCH} events"),
            )),
            Some(e) => Ok(e),
        }
    }
}

/// One event of a batch: accepted (ids) or refused (the reasons).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItem {
    /// Its index in `events`.
    pub index: usize,
    /// The event's id, if accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Its `process_event` job, if accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    /// False when its idempotency key named an earlier event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// Why it was refused (every invalid field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// What a batch did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    /// Events accepted (stored with their jobs; new or repeated keys).
    pub accepted: usize,
    /// Events refused.
    pub rejected: usize,
    /// One entry per event, in order.
    pub results: Vec<BatchItem>,
}

/// Sends up to 1000 events in one transaction (one outbox batch). Each event is validated on
/// its own: the valid ones are accepted even when others are refused, and each refused one is
/// reported by index with its reasons. `202` when at least one was accepted; `422` (with
/// every event's reasons) when none was.
///
/// Permission: `events:write`, or an API key of the project (`X-API-Key`). The body may be up to 8 MiB. The batch counts as many events
/// against the project's rate as it has valid ones, and is refused whole (429 `rate_limited`)
/// if they do not all fit; likewise (429 `quota_exceeded`) if their jobs do not all fit under
/// the project's `JOB_MAX_OPEN_PER_PROJECT` open jobs.
#[utoipa::path(post, path = "/api/v1/events/batch", tag = "events",
    request_body = BatchRequest,
    security(("bearer" = ["events:write"]), ("apiKey" = [])),
    responses((status = 202, body = inline(Data<BatchResult>),
               headers(("RateLimit-Remaining" = u64, description = "Events left in the window"))),
              EnqueueRefusals,
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn create_events_batch(
    caller: Caller<EventsWrite>,
    State(s): State<AppState>,
    ValidJson(raw): ValidJson<BatchRequest>,
) -> Result<Response> {
    let project_id = caller.project_id;
    let mut valid = Vec::with_capacity(raw.len());
    let mut results: Vec<BatchItem> = Vec::with_capacity(raw.len());
    for (index, value) in raw.into_iter().enumerate() {
        let (req, mut errors) = read_json_object::<EventRequest>(value);
        let event = req.and_then(|r| match r.validate() {
            Ok(e) => Some(e),
            Err(more) => {
                errors.extend_new(more);
                None
            }
        });
        let event = event.filter(|_| errors.is_empty()).and_then(|e| {
            check_size(&s, &e)
                .map_err(|m| errors.add("payload", m.message()))
                .ok()
                .map(|()| e)
        });
        match event {
            Some(e) => {
                valid.push((index, e));
                results.push(BatchItem {
                    index,
                    event_id: None,
                    job_id: None,
                    created: None,
                    errors: None,
                });
            }
            None => results.push(BatchItem {
                index,
                event_id: None,
                job_id: None,
                created: None,
                errors: Some(errors.into_vec()),
            }),
        }
    }
    if valid.is_empty() {
        let mut all = FieldErrors::new();
        for item in &results {
            for e in item.errors.iter().flatten() {
                all.add(format!("events[{}].{}", item.index, e.field), &e.message);
            }
        }
        return Err(all.into());
    }
    // a repeated idempotency key makes no job, but is counted here: the check errs on the
    // side of refusing
    quota::check_open_jobs(&s, project_id, valid.len() as u64).await?;
    let allowance = match take_rate(&s, project_id, valid.len() as u64).await {
        Ok(a) => a,
        Err(refusal) => return Ok(refusal),
    };
    let events: Vec<NewEvent> = valid.iter().map(|(_, e)| e.clone()).collect();
    let mut tx = s.pool.begin().await?;
    let accepted =
        db::events::accept(&mut tx, project_id, &events, &request_id::enqueue_options()).await?;
    tx.commit().await?;
    s.outbox.wake();
    for ((index, _), a) in valid.iter().zip(&accepted) {
        let item = &mut results[*index];
        item.event_id = Some(a.event_id);
        item.job_id = Some(a.job_id);
        item.created = Some(a.created);
    }
    let rejected = results.len() - accepted.len();
    tracing::info!(accepted = accepted.len(), rejected, "event batch accepted");
    let body = BatchResult {
        accepted: accepted.len(),
        rejected,
        results,
    };
    Ok((
        StatusCode::ACCEPTED,
        rate_headers(&allowance),
        ApiJson(Data::new(body)),
    )
        .into_response())
}
