//! The error half of the JSON envelope: `{"error": {"code", "message", "details"?, "requestId"}}`,
//! where `details`, for a `validation_failed`, is `[{"field", "message"}]` naming every invalid
//! field.
//!
//! Every failure a client can see is an [`ApiError`]; each variant's doc names its status.
//! [`ResultExt::on_constraint`] turns a constraint violation into the error it means.
//! Database and Redis failures become opaque 500s (or 503 when the dependency is unreachable)
//! and are logged once here, with the request id.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use shared::domain::{FieldError, FieldErrors};
use utoipa::{
    IntoResponses, ToSchema,
    openapi::{RefOr, Response as DocResponse, ResponseBuilder, content::ContentBuilder},
};

use crate::request_id;

/// Handlers' result type.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// What went wrong, as the client is told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad query string, bad path parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid access token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: the token lacks the permission the route needs.
    #[error("this action needs the `{0}` permission")]
    Forbidden(&'static str),
    /// 403: the caller may not do this, for a reason other than a missing permission.
    #[error("{0}")]
    Refused(&'static str),
    /// 403 `user_token_required`: the route acts on the caller's own user, and the token is
    /// not a user's (a minted service token, a platform operator's, an API key).
    #[error(
        "this route needs a user's token (from POST /api/v1/auth/login); this token belongs to \
         no user (a service or platform token)"
    )]
    UserTokenRequired,
    /// 403 `project_suspended`: the credential is good but its project is suspended.
    #[error(
        "this project is suspended; its tokens and API keys are refused until it is active again"
    )]
    ProjectSuspended,
    /// 401 `project_deleted`: the credential's project was deleted.
    #[error("this project was deleted; its tokens and API keys no longer work")]
    ProjectDeleted,
    /// 404: no such resource in the caller's project.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 404: no such route.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// 405: the route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// 409 `insufficient_funds`: a debit would take a bucket below zero, which it does not
    /// allow.
    #[error("{0}")]
    InsufficientFunds(String),
    /// 410: the resource existed but is no longer usable (an expired invitation).
    #[error("{0}")]
    Gone(&'static str),
    /// 413: the body is too large.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415: the body is not JSON.
    #[error("expected a JSON body with content-type application/json")]
    UnsupportedMediaType,
    /// 422: well-formed but invalid; `details` lists every field at fault.
    #[error("{0}")]
    Validation(FieldErrors),
    /// 429: rate limited; `Retry-After` says when to come back.
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 429: the project has as many open jobs as `JOB_MAX_OPEN_PER_PROJECT` allows; new jobs
    /// are refused until some finish (`Retry-After`).
    #[error(
        "the project has reached its quota of {limit} open jobs (JOB_MAX_OPEN_PER_PROJECT); \
         retry once some have finished"
    )]
    QuotaExceeded {
        /// The quota.
        limit: u64,
        /// Seconds before a retry is worth trying.
        retry_after: u64,
    },
    /// 503: a dependency (Postgres, Redis) is unreachable; retry later.
    #[error("{0} is unavailable; retry later")]
    Unavailable(&'static str),
    /// 503: this process is at a capacity bound it keeps on purpose (e.g. password hashing);
    /// `Retry-After` says when to come back.
    #[error("{what} is busy; retry in {retry_after} s")]
    Busy {
        /// What is at capacity.
        what: &'static str,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 500: a bug or an unexpected failure; details are logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The error envelope's body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `validation_failed`.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Every invalid field, for `validation_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
    /// The request's `x-request-id`.
    pub request_id: String,
}

/// `{"error": ErrorBody}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

impl ApiError {
    /// A 422 for one field.
    pub fn invalid(field: &str, problem: impl Into<String>) -> Self {
        ApiError::Validation(FieldErrors::one(field, problem))
    }

    /// A failure of the session store (Redis: sessions, revocations, rate limits): logged
    /// here, a 503 for the caller.
    pub fn session_store(e: redis::RedisError) -> Self {
        tracing::error!(error = %e, "session store (Redis) unreachable or failing");
        ApiError::Unavailable("the session store")
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) | ApiError::Refused(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::ProjectSuspended => (StatusCode::FORBIDDEN, "project_suspended"),
            ApiError::UserTokenRequired => (StatusCode::FORBIDDEN, "user_token_required"),
            ApiError::ProjectDeleted => (StatusCode::UNAUTHORIZED, "project_deleted"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::RouteNotFound(_) => (StatusCode::NOT_FOUND, "route_not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::InsufficientFunds(_) => (StatusCode::CONFLICT, "insufficient_funds"),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            ApiError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::error!(error = %e, "postgres unreachable");
                ApiError::Unavailable("the database")
            }
            e => ApiError::Internal(anyhow::Error::new(e).context("database query failed")),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(e: FieldErrors) -> Self {
        ApiError::Validation(e)
    }
}

impl From<shared::schedule::fire::FireError> for ApiError {
    fn from(e: shared::schedule::fire::FireError) -> Self {
        use shared::schedule::fire::FireError;
        match e {
            FireError::Database(e) => e.into(),
            FireError::Queue(e) => e.into(),
            FireError::Payload(e) => ApiError::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<shared::jobs::ActError> for ApiError {
    fn from(e: shared::jobs::ActError) -> Self {
        match e {
            shared::jobs::ActError::Queue(e) => e.into(),
            shared::jobs::ActError::Database(e) => e.into(),
        }
    }
}

impl From<shared::queue::QueueError> for ApiError {
    fn from(e: shared::queue::QueueError) -> Self {
        match e {
            shared::queue::QueueError::Redis(r) => {
                tracing::error!(error = %r, "redis unreachable or failing");
                ApiError::Unavailable("the job queue")
            }
            e @ shared::queue::QueueError::NotReplicated { .. } => {
                tracing::warn!(error = %e, "an enqueue was not replicated in time");
                ApiError::Unavailable("the job queue")
            }
            shared::queue::QueueError::TooDeep { max } => ApiError::invalid(
                "page",
                format!(
                    "a partitioned queue is listed over its first {max} jobs in a state \
                     (page × perPage); search the job archive or list one project's jobs"
                ),
            ),
            e => ApiError::Internal(anyhow::Error::new(e).context("job queue failed")),
        }
    }
}

impl From<shared::jobs::EnqueueError> for ApiError {
    fn from(e: shared::jobs::EnqueueError) -> Self {
        use shared::jobs::EnqueueError;
        match e {
            EnqueueError::Database(e) => e.into(),
            EnqueueError::Queue(e) => e.into(),
            e @ EnqueueError::Payload(_) => {
                ApiError::Internal(anyhow::Error::new(e).context("Failed to encode a job"))
            }
        }
    }
}

impl From<shared::inbox::InboxError> for ApiError {
    fn from(e: shared::inbox::InboxError) -> Self {
        use shared::inbox::InboxError;
        match e {
            InboxError::Database(e) => e.into(),
            InboxError::Redis(e) => ApiError::session_store(e),
            e @ InboxError::Encode(_) => {
                ApiError::Internal(anyhow::Error::new(e).context("Failed to push an inbox event"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let request_id = request_id::current();
        let (message, details) = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), %request_id, "request failed");
                (
                    "internal error; quote the request id when reporting it".to_owned(),
                    None,
                )
            }
            ApiError::Validation(errors) => (errors.to_string(), Some(errors.as_slice().to_vec())),
            other => (other.to_string(), None),
        };
        let body = ErrorEnvelope {
            error: ErrorBody {
                code,
                message,
                details,
                request_id,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after }
        | ApiError::QuotaExceeded { retry_after, .. }
        | ApiError::Busy { retry_after, .. } = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Maps database errors on the way out of a query.
pub trait ResultExt<T> {
    /// Turns the violation of constraint `name` into `err` (a 409 or 422), instead of
    /// checking beforehand and racing a concurrent write; other errors pass through.
    fn on_constraint(self, name: &str, err: impl FnOnce() -> ApiError) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, err: impl FnOnce() -> ApiError) -> Result<T> {
        self.map_err(|e| match &e {
            sqlx::Error::Database(db) if db.constraint() == Some(name) => err(),
            _ => ApiError::from(e),
        })
    }
}

/// The OpenAPI responses of refusals, each an [`ErrorEnvelope`] under its status.
fn refusals(statuses: &[(u16, &str)]) -> std::collections::BTreeMap<String, RefOr<DocResponse>> {
    statuses
        .iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name(
                    "ErrorEnvelope",
                )))
                .build();
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// For a route's OpenAPI `responses(..)`: the refusals of any route behind a token (401, 403)
/// and of a dependency down (503).
pub struct AuthRefusals;

impl IntoResponses for AuthRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<DocResponse>> {
        refusals(&[
            (
                401,
                "No valid access token (`project_deleted`: its project was deleted)",
            ),
            (
                403,
                "The token lacks the permission, or the caller may not do this \
                 (`project_suspended`: its project is suspended; `user_token_required`: the \
                 route needs a user's token)",
            ),
            (503, "Postgres or Redis is unreachable; retry later"),
        ])
    }
}

/// For a route's OpenAPI `responses(..)`: the refusals of a request with a JSON body (or path
/// ids): 400 malformed, 413 too large, 415 not JSON, 422 invalid fields (every one named).
pub struct BodyRefusals;

impl IntoResponses for BodyRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<DocResponse>> {
        refusals(&[
            (400, "Malformed JSON or path parameter"),
            (413, "The body is over 1 MiB"),
            (415, "The body is not JSON (content-type application/json)"),
            (422, "Invalid fields, each named in `details`"),
        ])
    }
}

/// For a route's OpenAPI `responses(..)`: the 429 of a route that enqueues a job
/// ([`crate::quota`]): past the project's enqueue rate (`rate_limited`) or at its quota of
/// open jobs (`quota_exceeded`), with `Retry-After`. A route with rate limits of its own
/// (invitations, events) is covered by the same entry.
pub struct EnqueueRefusals;

impl IntoResponses for EnqueueRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<DocResponse>> {
        let content = ContentBuilder::new()
            .schema(Some(utoipa::openapi::Ref::from_schema_name(
                "ErrorEnvelope",
            )))
            .build();
        let retry_after = utoipa::openapi::HeaderBuilder::new()
            .schema(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer),
            )
            .description(Some("Seconds to wait before retrying"))
            .build();
        let response = ResponseBuilder::new()
            .description(
                "Too many requests: past a per-project rate (`rate_limited`: \
                 RATE_LIMIT_ENQUEUE_PER_PROJECT, or the route's own) or at the project's quota \
                 of open jobs (`quota_exceeded`, JOB_MAX_OPEN_PER_PROJECT)",
            )
            .header("Retry-After", retry_after)
            .content("application/json", content)
            .build();
        std::collections::BTreeMap::from([("429".to_owned(), RefOr::T(response))])
    }
}
