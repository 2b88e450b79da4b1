//! Authentication and permissions: a Bearer JWT becomes [`Authorized<P>`], which only extracts
//! when the token grants permission `P`. A handler cannot forget its permission check: it is
//! the type of its first argument.

use std::marker::PhantomData;

use axum::{extract::FromRequestParts, http::request::Parts};
use shared::auth::Claims;

use crate::{AppState, error::ApiError};

/// A permission a route needs.
pub trait Permission {
    /// Its name as carried in tokens, e.g. `jobs:read`.
    const NAME: &'static str;
}

macro_rules! permissions {
    ($($ty:ident => $name:literal),* $(,)?) => {
        $(
            #[doc = concat!("The `", $name, "` permission.")]
            #[derive(Debug)]
            pub struct $ty;
            impl Permission for $ty {
                const NAME: &'static str = $name;
            }
        )*
        /// Every permission the API checks.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

permissions! {
    JobsRead => "jobs:read",
    JobsWrite => "jobs:write",
    QueuesRead => "queues:read",
}

/// The verified claims of a caller holding permission `P`.
#[derive(Debug)]
pub struct Authorized<P> {
    /// The token's claims (project, subject, permissions).
    pub claims: Claims,
    _p: PhantomData<P>,
}

impl<P: Permission + Send + Sync> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header =
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or(ApiError::Unauthorized(
                    "missing Authorization: Bearer token",
                ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(
                "expected Authorization: Bearer <token>",
            ))?;
        let claims = shared::auth::verify(&state.settings.jwt_secret, token)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
        if !claims.has(P::NAME) {
            return Err(ApiError::Forbidden(P::NAME));
        }
        Ok(Self {
            claims,
            _p: PhantomData,
        })
    }
}
