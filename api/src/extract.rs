//! Extractors whose rejections use the JSON envelope: the request body ([`ValidJson`], read
//! and validated before the handler runs), UUID path parameters ([`PathId`]), and any other
//! path or query ([`ApiPath`], [`ApiQuery`]).

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Path, Query, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use shared::domain::{FieldErrors, read_json_object};
use uuid::Uuid;

use crate::error::ApiError;

/// A request body as sent (raw strings, numbers, options: required fields too, so that a
/// missing one is reported with the others), and how it becomes the values the handler works
/// with: every field is checked, and all refusals are reported together.
pub trait Validate: DeserializeOwned {
    /// The validated request.
    type Valid;

    /// Checks every field; on failure, names each invalid one.
    fn validate(self) -> Result<Self::Valid, FieldErrors>;
}

/// A JSON body read as `T` and validated into `T::Valid`.
///
/// 415 without a JSON content type, 413 past the body limit, 400 for malformed JSON, and 422
/// (`details: [{field, message}]`) naming every field of the wrong type, unknown, missing, or
/// refused by [`Validate::validate`].
#[derive(Debug)]
pub struct ValidJson<T: Validate>(pub T::Valid);

impl<T: Validate, S: Send + Sync> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge
                }
                other => ApiError::BadRequest(other.body_text()),
            })?;
        // fields of the wrong type and fields with bad values, in one answer
        let (raw, mut errors) = read_json_object::<T>(value);
        if let Some(raw) = raw {
            match raw.validate() {
                Ok(valid) if errors.is_empty() => return Ok(ValidJson(valid)),
                Ok(_) => {}
                Err(more) => errors.extend_new(more),
            }
        }
        Err(errors.into())
    }
}

/// A route's UUID path parameters: `PathId(id): PathId` for `/users/{id}`,
/// `PathId((user, role)): PathId<(Uuid, Uuid)>` for `/users/{id}/roles/{roleId}`.
///
/// 400 naming every parameter that is not a UUID.
#[derive(Debug)]
pub struct PathId<T = Uuid>(pub T);

/// The shapes [`PathId`] extracts: one id, or two in path order.
pub trait PathIds: Sized {
    /// Builds the value from the path's ids, in order (`None` if their count does not fit).
    fn from_ids(ids: &[Uuid]) -> Option<Self>;
}

impl PathIds for Uuid {
    fn from_ids(ids: &[Uuid]) -> Option<Self> {
        match ids {
            [id] => Some(*id),
            _ => None,
        }
    }
}

impl PathIds for (Uuid, Uuid) {
    fn from_ids(ids: &[Uuid]) -> Option<Self> {
        match ids {
            [a, b] => Some((*a, *b)),
            _ => None,
        }
    }
}

impl<T: PathIds + Send, S: Send + Sync> FromRequestParts<S> for PathId<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath(params) =
            ApiPath::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
        let mut ids = Vec::with_capacity(params.len());
        let mut bad = Vec::new();
        for (name, value) in &params {
            match Uuid::parse_str(value) {
                Ok(id) => ids.push(id),
                Err(_) => bad.push(format!("`{name}`: {value:?} is not an id (UUID)")),
            }
        }
        if !bad.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "invalid path parameter {}",
                bad.join("; ")
            )));
        }
        T::from_ids(&ids).map(PathId).ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "the route has {} path parameters; its handler expects another number",
                ids.len()
            ))
        })
    }
}

/// `Path<T>` with envelope rejections.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::BadRequest(format!("invalid path parameter: {}", e.body_text())))
    }
}

/// `Query<T>` with envelope rejections.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
    }
}
