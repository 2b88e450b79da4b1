//! Rotating an endpoint's signing secret (the previous one keeps signing, as a second
//! signature, for a grace period) and sending it a signed test message.

use axum::extract::State;
use chrono::{Duration as Span, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{self, audit::NewEntry},
    domain::{FieldErrors, within},
    webhooks::{self, SendOutcome},
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{WebhookEndpointWithSecret, new_secret};
use crate::{
    AppState,
    auth::{Authorized, WebhooksManage},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{PathId, ValidJson, Validate},
    rate_limit, request_id,
};

/// Longest grace period of a rotation (7 days).
pub const MAX_GRACE_SECS: u32 = 7 * 86_400;

/// A rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the previous secret keeps signing too, 0 to 604800 seconds (default
    /// `WEBHOOK_ROTATION_GRACE_SECS`, 86400); 0 stops it at once.
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_seconds: Option<u32>,
}

/// A valid [`RotateRequest`].
#[derive(Debug)]
pub struct ValidRotate {
    grace_seconds: Option<u32>,
}

impl Validate for RotateRequest {
    type Valid = ValidRotate;

    fn validate(self) -> Result<ValidRotate, FieldErrors> {
        let mut errors = FieldErrors::new();
        let grace_seconds = match self.grace_seconds {
            None => Some(None),
            Some(g) => errors
                .check("graceSeconds", within(g, 0..=MAX_GRACE_SECS))
                .map(Some),
        };
        match grace_seconds {
            Some(grace_seconds) => Ok(ValidRotate { grace_seconds }),
            None => Err(errors),
        }
    }
}

/// Gives an endpoint a new signing secret, shown in this answer only. For the grace period the
/// previous secret signs too (`webhook-signature` holds both signatures), so the receiver can
/// switch without losing a delivery. Audited (without either secret).
///
/// Permission: `webhooks:manage`. Another project's endpoint is not found.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    request_body = RotateRequest,
    security(("bearer" = ["webhooks:manage"])),
    responses((status = 200, body = inline(Data<WebhookEndpointWithSecret>)),
              (status = 404, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn rotate_secret(
    auth: Authorized<WebhooksManage>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ValidJson(req): ValidJson<RotateRequest>,
) -> Result<ApiJson<Data<WebhookEndpointWithSecret>>> {
    let project_id = auth.claims.project_id;
    let default_grace = s.settings.webhooks.rotation_grace.as_secs();
    let grace = req
        .grace_seconds
        .map_or(default_grace, u64::from)
        .min(u64::from(MAX_GRACE_SECS));
    let until = (grace > 0).then(|| Utc::now() + Span::seconds(grace as i64));
    let (secret, sealed) = new_secret(&s);
    let mut tx = s.pool.begin().await?;
    let row = db::webhook_endpoints::rotate(&mut tx, project_id, id, &sealed, until)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "webhook_endpoint.secret_rotated")
            .actor(auth.user_id())
            .target("webhook_endpoint", id)
            .metadata(
                serde_json::json!({ "graceSeconds": grace, "previousSecretExpiresAt": until }),
            )
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, grace_secs = grace, "webhook secret rotated");
    Ok(ApiJson(Data::new(WebhookEndpointWithSecret {
        endpoint: row.into(),
        secret,
    })))
}

/// What a test message came to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// Whether the endpoint answered 2xx.
    pub delivered: bool,
    /// `ok`, `retry` (a real delivery would be retried: 5xx, 408, 429, timeout, connection
    /// failure) or `permanent` (other 4xx, a redirect, an address the SSRF guard refuses).
    pub outcome: String,
    /// The endpoint's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Milliseconds the attempt took.
    pub ms: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The start of the response body (at most `WEBHOOK_RESPONSE_BODY_CAP` bytes).
    pub response_body: String,
    /// The message's `webhook-id`.
    pub message_id: String,
}

/// Sends the endpoint a signed test message now (also when it is disabled), exactly as a
/// delivery is sent, and reports the answer. The body is
/// `{"type": "webhook.test", "timestamp", "data": {"endpointId", "projectId"}}`. Nothing is
/// recorded: a test does not end or extend the endpoint's failing streak.
///
/// Permission: `webhooks:manage`. Another project's endpoint is not found. 429 with
/// `Retry-After` past `RATE_LIMIT_WEBHOOK_TESTS` per project (default 30 a minute).
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = ["webhooks:manage"])),
    responses((status = 200, body = inline(Data<TestResult>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 429, body = ErrorEnvelope,
                headers(("retry-after" = u64, description = "Seconds to wait"))),
              AuthRefusals))]
pub(super) async fn test_endpoint(
    auth: Authorized<WebhooksManage>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<TestResult>>> {
    let project_id = auth.claims.project_id;
    let endpoint = {
        let mut conn = s.pool.acquire().await?;
        db::webhook_endpoints::find(&mut conn, project_id, id)
            .await?
            .ok_or(ApiError::NotFound("webhook endpoint"))?
    };
    rate_limit::check(
        &s,
        "webhook-test",
        &project_id.to_string(),
        &s.settings.webhooks.test_rate,
    )
    .await?;
    let now = Utc::now();
    let message_id = format!("msg_test_{}", Uuid::now_v7().simple());
    let body = serde_json::to_vec(&serde_json::json!({
        "type": "webhook.test",
        "timestamp": now,
        "data": { "endpointId": id, "projectId": project_id },
    }))
    .map_err(|e| ApiError::Internal(e.into()))?;
    let d = webhooks::deliver(
        &s.webhooks,
        &endpoint,
        &s.settings.auth.jwt_secret,
        &message_id,
        &body,
        now,
    )
    .await;
    tracing::info!(endpoint_id = %id, outcome = d.outcome.as_outcome(), "webhook test sent");
    Ok(ApiJson(Data::new(TestResult {
        delivered: matches!(d.outcome, SendOutcome::Delivered { .. }),
        outcome: d.outcome.as_outcome().to_owned(),
        status: d.outcome.status(),
        ms: d.ms,
        error: d.outcome.error().map(str::to_owned),
        response_body: d.response_body,
        message_id,
    })))
}
