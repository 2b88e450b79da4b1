//! A project's webhook endpoints (`/api/v1/webhook-endpoints`): where its notifications, and
//! the lifecycle messages of its jobs it subscribes to (`jobEvents`: `job.completed`,
//! `job.dead`), are POSTed, signed per Standard Webhooks 1.0. Create (the signing secret is shown once), list,
//! read, replace, delete; rotate the secret (the previous one keeps signing for a grace
//! period) and send a signed test message ([`secret_and_test`]).
//!
//! A URL is vetted when saved: `http`/`https`, no user info, at most 2048 characters, and a
//! host that is, or resolves only to, public addresses (the SSRF guard,
//! [`shared::webhooks::guard`]; `WEBHOOK_ALLOW_PRIVATE=true` lifts the address check); a
//! refusal is a `422` naming `url`. Every change is audited without the secret. Permission:
//! `webhooks:manage`; another project's endpoint is not found.

mod secret_and_test;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{
        self,
        audit::NewEntry,
        webhook_endpoints::{Endpoint, EndpointFields},
    },
    domain::{FieldErrors, Invalid, required},
    rules::{MAX_PATTERNS, TypePattern},
    webhooks::{SigningSecret, guard},
};
use utoipa::{
    IntoParams, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, WebhooksManage},
    envelope::{ApiJson, Created, CursorList, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, PathId, ValidJson, Validate},
    request_id,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(secret_and_test::rotate_secret))
        .routes(routes!(secret_and_test::test_endpoint))
}

/// Most endpoints one project may have.
pub const MAX_ENDPOINTS_PER_PROJECT: i64 = 20;
const MAX_DESCRIPTION: usize = 500;

/// An endpoint as written (create, and full replace).
///
/// What JSON Schema cannot say: the URL's host must be, or resolve only to, public addresses
/// (not loopback, private, link-local or otherwise reserved), and must resolve at all (a `422`
/// naming `url`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointRequest {
    /// `http` or `https` URL, at most 2048 characters, without user name or password, whose
    /// host is or resolves to public addresses.
    #[schema(required = true, nullable = false, schema_with = endpoint_url)]
    pub url: Option<String>,
    /// At most 500 characters, no NUL.
    #[schema(max_length = 500, pattern = "^[^\\u0000]*$")]
    pub description: Option<String>,
    /// Which events are delivered: 0 to 20 types, exact (`transfer.failed`) or a prefix
    /// (`transfer.*`; `*` for all); empty or absent: every event.
    #[schema(value_type = Option<Vec<TypePattern>>, max_items = 20)]
    pub event_types: Option<Vec<String>>,
    /// Whether deliveries are made (default true). Enabling an endpoint that was disabled
    /// clears its failing streak.
    pub enabled: Option<bool>,
    /// Whether the project's notifications go to it (default true; false: only the job
    /// messages of `jobEvents`).
    pub notifications: Option<bool>,
    /// The job lifecycle messages it takes for the project's own jobs: `job.completed`,
    /// `job.dead` (default none). Each finished job is POSTed, signed like every message,
    /// about a second after it finishes (when it is archived).
    #[schema(value_type = Option<Vec<shared::jobs::JobEvent>>, max_items = 2)]
    pub job_events: Option<Vec<String>>,
    /// Only jobs of these queues (default: every queue but `job_webhook`'s own).
    #[schema(value_type = Option<Vec<JobQueue>>, max_items = 32)]
    pub job_queues: Option<Vec<String>>,
}

/// The OpenAPI schema of a queue whose jobs an endpoint may follow: every queue but
/// `job_webhook`.
pub struct JobQueue;

impl utoipa::PartialSchema for JobQueue {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(followed_queues()))
            .into()
    }
}

impl ToSchema for JobQueue {}

/// The queues whose jobs' lifecycle an endpoint may take.
fn followed_queues() -> impl Iterator<Item = &'static str> {
    use shared::jobs::Job as _;
    shared::jobs::QUEUES
        .iter()
        .copied()
        .filter(|q| *q != shared::jobs::JobWebhook::QUEUE)
}

/// Validates a list of names (`field`), each one `known` accepts, without repeats.
fn names(
    errors: &mut FieldErrors,
    field: &str,
    given: Option<Vec<String>>,
    most: usize,
    known: impl Fn(&str) -> bool,
    what: &str,
) -> Vec<String> {
    let given = given.unwrap_or_default();
    if given.len() > most {
        errors.add(field, format!("must hold at most {most} items"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for (i, name) in given.into_iter().enumerate() {
        if !known(&name) {
            errors.add(format!("{field}[{i}]"), format!("must be {what}"));
        } else if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The OpenAPI schema of an endpoint URL.
fn endpoint_url() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "An `http` or `https` URL, 8 to 2048 characters, without user name or password; its \
             host must be, or resolve only to, public addresses (not loopback, private, \
             link-local or otherwise reserved) unless WEBHOOK_ALLOW_PRIVATE is set.",
        ))
        .min_length(Some(8))
        .max_length(Some(guard::MAX_URL))
        .pattern(Some(guard::URL_PATTERN))
        .into()
}

/// A valid [`EndpointRequest`] (the URL's addresses are vetted by the handler).
#[derive(Debug)]
pub struct ValidEndpoint {
    fields: EndpointFields,
}

impl Validate for EndpointRequest {
    type Valid = ValidEndpoint;

    fn validate(self) -> Result<ValidEndpoint, FieldErrors> {
        let mut errors = FieldErrors::new();
        let url = errors.check(
            "url",
            required(self.url).and_then(|u| guard::parse_url(&u).map(|_| u)),
        );
        let description = errors.check(
            "description",
            Some(self.description.unwrap_or_default())
                .filter(|d| d.chars().count() <= MAX_DESCRIPTION && !d.contains('\0'))
                .ok_or_else(|| {
                    Invalid::new(format!(
                        "must be at most {MAX_DESCRIPTION} characters, no NUL"
                    ))
                }),
        );
        let patterns = self.event_types.unwrap_or_default();
        if patterns.len() > MAX_PATTERNS {
            errors.add(
                "eventTypes",
                format!("must hold at most {MAX_PATTERNS} types"),
            );
        }
        let mut event_types = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            if let Some(p) = errors.check(&format!("eventTypes[{i}]"), TypePattern::parse(p)) {
                let p = p.to_string();
                if !event_types.contains(&p) {
                    event_types.push(p);
                }
            }
        }
        let job_events = names(
            &mut errors,
            "jobEvents",
            self.job_events,
            shared::jobs::JobEvent::ALL.len(),
            |e| shared::jobs::JobEvent::parse(e).is_some(),
            "job.completed or job.dead",
        );
        let job_queues = names(
            &mut errors,
            "jobQueues",
            self.job_queues,
            32,
            |q| followed_queues().any(|k| k == q),
            &format!(
                "a queue: one of {}",
                followed_queues().collect::<Vec<_>>().join(", ")
            ),
        );
        match (url, description) {
            (Some(url), Some(description)) if errors.is_empty() => Ok(ValidEndpoint {
                fields: EndpointFields {
                    url,
                    description,
                    event_types,
                    enabled: self.enabled.unwrap_or(true),
                    notifications: self.notifications.unwrap_or(true),
                    job_events,
                    job_queues,
                },
            }),
            _ => Err(errors),
        }
    }
}

/// A webhook endpoint (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    /// Id.
    pub id: Uuid,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Description.
    pub description: String,
    /// Type patterns; empty: every event.
    pub event_types: Vec<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Whether notifications go to it.
    pub notifications: bool,
    /// The job lifecycle messages it takes (`job.completed`, `job.dead`).
    #[schema(value_type = Vec<shared::jobs::JobEvent>)]
    pub job_events: Vec<String>,
    /// The queues whose jobs it follows; empty: every queue.
    pub job_queues: Vec<String>,
    /// Until when the previous secret also signs (after a rotation).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Start of the current run of failed deliveries (null: the last one succeeded).
    pub failing_since: Option<DateTime<Utc>>,
    /// Last delivered (to the second: a healthy endpoint's successes are recorded at most once
    /// a second).
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last failed.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// When it was disabled (by hand, or after failing for `WEBHOOK_DISABLE_AFTER_SECS`).
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Endpoint> for WebhookEndpoint {
    fn from(e: Endpoint) -> Self {
        let now = Utc::now();
        Self {
            id: e.endpoint_id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            notifications: e.notifications,
            job_events: e.job_events,
            job_queues: e.job_queues,
            previous_secret_expires_at: e.previous_secret_expires_at.filter(|at| *at > now),
            failing_since: e.failing_since,
            last_success_at: e.last_success_at,
            last_failure_at: e.last_failure_at,
            disabled_at: e.disabled_at,
            disabled_reason: e.disabled_reason,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint with its signing secret: the only answers that show it (create, rotate).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointWithSecret {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    /// The signing secret, `whsec_<base64>`: give it to the receiver's Standard Webhooks
    /// library. Shown once; Comet cannot show it again.
    pub secret: String,
}

/// Job messages carry the jobs' results and errors, which the jobs API shows only with
/// `jobs:read`: subscribing an endpoint to them needs it too (403 otherwise).
fn may_follow_jobs(claims: &shared::auth::Claims, f: &EndpointFields) -> Result<()> {
    if f.job_events.is_empty() || claims.has("jobs:read") {
        Ok(())
    } else {
        Err(ApiError::Forbidden("jobs:read"))
    }
}

/// Vets a URL's addresses (a 422 naming `url`).
async fn vet(s: &AppState, url: &str) -> Result<()> {
    let w = &s.settings.webhooks;
    guard::vet_url(
        url,
        w.allow_private,
        &guard::SystemLookup,
        w.connect_timeout,
    )
    .await
    .map(|_| ())
    .map_err(|e| ApiError::invalid("url", e.message()))
}

/// A new secret: (its text, to show once; its sealed form, to store).
fn new_secret(s: &AppState) -> (String, String) {
    SigningSecret::generate().text_and_sealed(&s.settings.auth.jwt_secret)
}

fn audit_view(e: &Endpoint) -> serde_json::Value {
    serde_json::json!({
        "url": e.url,
        "description": e.description,
        "eventTypes": e.event_types,
        "enabled": e.enabled,
        "notifications": e.notifications,
        "jobEvents": e.job_events,
        "jobQueues": e.job_queues,
    })
}

/// Creates an endpoint and its signing secret, shown in this answer only. Audited (without the
/// secret).
///
/// Permission: `webhooks:manage`, and `jobs:read` to subscribe it to job messages
/// (`jobEvents`), which carry the jobs' results and errors. 409 past 20 endpoints in the project.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints", tag = "webhooks",
    request_body = EndpointRequest,
    security(("bearer" = ["webhooks:manage"])),
    responses((status = 201, body = inline(Data<WebhookEndpointWithSecret>),
                headers(("location" = String, description = "The endpoint's URL"))),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
async fn create_endpoint(
    auth: Authorized<WebhooksManage>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<EndpointRequest>,
) -> Result<Created<WebhookEndpointWithSecret>> {
    let project_id = auth.claims.project_id;
    may_follow_jobs(&auth.claims, &req.fields)?;
    vet(&s, &req.fields.url).await?;
    let (secret, sealed) = new_secret(&s);
    let mut tx = s.pool.begin().await?;
    // the project's row orders concurrent creations, so the cap holds
    db::projects::lock(&mut tx, project_id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    if db::webhook_endpoints::count(&mut tx, project_id).await? >= MAX_ENDPOINTS_PER_PROJECT {
        return Err(ApiError::Conflict(format!(
            "the project has {MAX_ENDPOINTS_PER_PROJECT} webhook endpoints, the most it may have"
        )));
    }
    let row =
        db::webhook_endpoints::insert(&mut tx, project_id, auth.user_id(), &req.fields, &sealed)
            .await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "webhook_endpoint.created")
            .actor(auth.user_id())
            .target("webhook_endpoint", row.endpoint_id)
            .metadata(serde_json::json!({ "endpoint": audit_view(&row) }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %row.endpoint_id, "webhook endpoint created");
    Ok(Created {
        location: format!("/api/v1/webhook-endpoints/{}", row.endpoint_id),
        data: WebhookEndpointWithSecret {
            endpoint: row.into(),
            secret,
        },
    })
}

/// The cursor of the endpoint list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EndpointParams {
    /// The previous page's `meta.nextCursor`; empty is no cursor.
    pub after: Option<String>,
    /// Endpoints per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

fn encode_cursor(e: &WebhookEndpoint) -> String {
    crate::envelope::created_cursor(e.created_at, e.id)
}

/// The project's webhook endpoints, oldest first (never their secrets).
///
/// Permission: `webhooks:manage`.
#[utoipa::path(get, path = "/api/v1/webhook-endpoints", tag = "webhooks",
    params(EndpointParams),
    security(("bearer" = ["webhooks:manage"])),
    responses((status = 200, body = inline(CursorList<WebhookEndpoint>)),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
async fn list_endpoints(
    auth: Authorized<WebhooksManage>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<EndpointParams>,
) -> Result<ApiJson<CursorList<WebhookEndpoint>>> {
    let (limit, after) = crate::envelope::cursor_page(params.limit, params.after.as_deref())?;
    let rows =
        db::webhook_endpoints::list(&s.pool, auth.claims.project_id, after, i64::from(limit) + 1)
            .await?;
    Ok(ApiJson(CursorList::new(
        rows.into_iter().map(WebhookEndpoint::from).collect(),
        limit,
        encode_cursor,
    )))
}

/// One endpoint, with its delivery health (failing streak, last success and failure).
///
/// Permission: `webhooks:manage`. Another project's endpoint is not found.
#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = ["webhooks:manage"])),
    responses((status = 200, body = inline(Data<WebhookEndpoint>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
async fn get_endpoint(
    auth: Authorized<WebhooksManage>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<WebhookEndpoint>>> {
    let mut conn = s.pool.acquire().await?;
    let row = db::webhook_endpoints::find(&mut conn, auth.claims.project_id, id)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok(ApiJson(Data::new(row.into())))
}

/// Replaces an endpoint's URL, description, event types, job subscriptions and `enabled` (the
/// secret is changed by rotation only). Audited with the fields that changed.
///
/// Permission: `webhooks:manage`, and `jobs:read` when `jobEvents` is not empty. Another
/// project's endpoint is not found.
#[utoipa::path(put, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    request_body = EndpointRequest,
    security(("bearer" = ["webhooks:manage"])),
    responses((status = 200, body = inline(Data<WebhookEndpoint>)),
              (status = 404, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
async fn update_endpoint(
    auth: Authorized<WebhooksManage>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ValidJson(req): ValidJson<EndpointRequest>,
) -> Result<ApiJson<Data<WebhookEndpoint>>> {
    let project_id = auth.claims.project_id;
    may_follow_jobs(&auth.claims, &req.fields)?;
    vet(&s, &req.fields.url).await?;
    let mut tx = s.pool.begin().await?;
    let before = db::webhook_endpoints::lock(&mut tx, project_id, id)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    let after = db::webhook_endpoints::update(&mut tx, project_id, id, &req.fields)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    let (b, a) = (audit_view(&before), audit_view(&after));
    let changes: serde_json::Map<String, serde_json::Value> = [
        "url",
        "description",
        "eventTypes",
        "enabled",
        "notifications",
        "jobEvents",
        "jobQueues",
    ]
    .into_iter()
    .filter(|k| b[k] != a[k])
    .map(|k| {
        (
            k.to_owned(),
            serde_json::json!({ "from": b[k], "to": a[k] }),
        )
    })
    .collect();
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "webhook_endpoint.updated")
            .actor(auth.user_id())
            .target("webhook_endpoint", id)
            .metadata(serde_json::json!({ "changes": changes }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, "webhook endpoint updated");
    Ok(ApiJson(Data::new(after.into())))
}

/// Deletes an endpoint (deliveries already queued for it are skipped). Audited with the
/// endpoint as it was.
///
/// Permission: `webhooks:manage`. Another project's endpoint is not found.
#[utoipa::path(delete, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = ["webhooks:manage"])),
    responses((status = 204, description = "Deleted"),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
async fn delete_endpoint(
    auth: Authorized<WebhooksManage>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<axum::http::StatusCode> {
    let project_id = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let row = db::webhook_endpoints::delete(&mut tx, project_id, id)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "webhook_endpoint.deleted")
            .actor(auth.user_id())
            .target("webhook_endpoint", id)
            .metadata(serde_json::json!({ "endpoint": audit_view(&row) }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
    Ok(axum::http::StatusCode::NO_CONTENT)
}
