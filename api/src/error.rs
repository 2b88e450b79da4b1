//! The error half of the JSON envelope: `{"error": {"code", "message", "details"?, "requestId"}}`.
//!
//! Every failure a client can see is an [`ApiError`]; each variant's doc names its status.
//! Database and Redis failures become opaque 500s (or 503 when the dependency is unreachable)
//! and are logged once here, with the request id.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

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
    /// 410: the resource existed but is no longer usable (an expired invitation).
    #[error("{0}")]
    Gone(&'static str),
    /// 413: the body is too large.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415: the body is not JSON.
    #[error("expected a JSON body with content-type application/json")]
    UnsupportedMediaType,
    /// 422: well-formed but invalid; `details` lists the fields at fault.
    #[error("{message}")]
    Validation {
        /// Summary.
        message: String,
        /// Per-field problems.
        details: serde_json::Value,
    },
    /// 429: rate limited; `Retry-After` says when to come back.
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 503: a dependency (Postgres, Redis) is unreachable; retry later.
    #[error("{0} is unavailable; retry later")]
    Unavailable(&'static str),
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
    /// Extra structured information (per-field validation problems).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
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
        let problem = problem.into();
        ApiError::Validation {
            message: format!("{field}: {problem}"),
            details: serde_json::json!({ "fields": { field: problem } }),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) | ApiError::Refused(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::RouteNotFound(_) => (StatusCode::NOT_FOUND, "route_not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
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

impl From<shared::queue::QueueError> for ApiError {
    fn from(e: shared::queue::QueueError) -> Self {
        match e {
            shared::queue::QueueError::Redis(r) => {
                tracing::error!(error = %r, "redis unreachable or failing");
                ApiError::Unavailable("the job queue")
            }
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
            ApiError::Validation { message, details } => (message.clone(), Some(details.clone())),
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
        if let ApiError::TooManyRequests { retry_after } = self {
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

/// `Json` whose rejections use the envelope: 400 for malformed JSON, 422 for JSON of the wrong
/// shape, 415 for a missing content type, 413 for an oversized body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::Validation {
                    message: "the JSON body does not match the expected shape".into(),
                    details: serde_json::json!({ "body": e.body_text() }),
                },
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge
                }
                other => ApiError::BadRequest(other.body_text()),
            }),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}
