//! The success half of the JSON envelope: `{"data": …}`, with `meta.pagination` for lists,
//! [`Accepted`], the `202` of work handed to a job, and [`Created`], the `201` of a new
//! resource.

use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use shared::domain::FieldErrors;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A JSON response body (the error half is [`crate::error::ApiError`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `202 Accepted`: the work runs in job `jobId`; `Location` and `statusUrl` say where to follow
/// it. `T` adds what the caller needs besides (flattened into `data`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted<T> {
    /// The job id.
    pub job_id: Uuid,
    /// `GET` this to follow the job.
    pub status_url: String,
    /// The rest of the answer.
    #[serde(flatten)]
    pub details: T,
}

impl<T> Accepted<T> {
    /// The answer for job `job_id`.
    pub fn job(job_id: Uuid, details: T) -> Self {
        Self {
            job_id,
            status_url: format!("/api/v1/jobs/{job_id}"),
            details,
        }
    }
}

impl<T: Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        (
            StatusCode::ACCEPTED,
            [(header::LOCATION, self.status_url.clone())],
            Json(Data::new(self)),
        )
            .into_response()
    }
}

/// `201 Created`: `{"data": T}` with the new resource's URL in `Location`.
#[derive(Debug)]
pub struct Created<T> {
    /// Where the new resource is.
    pub location: String,
    /// The answer's `data`.
    pub data: T,
}

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (
            StatusCode::CREATED,
            [(header::LOCATION, self.location)],
            Json(Data::new(self.data)),
        )
            .into_response()
    }
}

/// `{"data": T}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    /// The payload.
    pub data: T,
}

impl<T> Data<T> {
    /// Wraps a payload.
    pub fn new(data: T) -> Self {
        Self { data }
    }
}

/// Pagination of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// 1-based page number (absent for a page asked for with a cursor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Items per page.
    pub per_page: u32,
    /// Items in all pages.
    pub total: u64,
    /// Whether a next page exists.
    pub has_next: bool,
    /// Whether a previous page exists.
    pub has_prev: bool,
}

/// `meta` of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListMeta {
    /// Pagination.
    pub pagination: Pagination,
}

/// `{"data": [T], "meta": {"pagination": …}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    /// The page's items.
    pub data: Vec<T>,
    /// Pagination.
    pub meta: ListMeta,
}

/// `?page=&perPage=` (1-based; perPage 1..=100, default 20).
///
/// The bounds are in the OpenAPI document (`minimum`, `maximum`); [`PageParams::check`] holds
/// the API to them. The largest page is `u32::MAX` (past the end, it is empty).
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page number, from 1.
    #[serde(default = "one")]
    #[param(value_type = u64, minimum = 1, maximum = 4294967295u64, default = 1)]
    pub page: u32,
    /// Items per page, 1 to 100.
    #[serde(default = "twenty")]
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub per_page: u32,
}

/// Most items a page holds (`perPage`).
pub const MAX_PER_PAGE: u32 = 100;

fn one() -> u32 {
    1
}
fn twenty() -> u32 {
    20
}

impl PageParams {
    /// Validated page and size.
    pub fn check(self) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        if self.page == 0 {
            errors.add("page", "must be at least 1");
        }
        if !(1..=MAX_PER_PAGE).contains(&self.per_page) {
            errors.add("perPage", format!("must be between 1 and {MAX_PER_PAGE}"));
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    /// Rows to skip.
    pub fn offset(self) -> usize {
        (self.page as usize - 1) * self.per_page as usize
    }

    /// Wraps a page of items.
    pub fn list<T>(self, data: Vec<T>, total: u64) -> List<T> {
        let seen = self.offset() as u64 + data.len() as u64;
        List {
            data,
            meta: ListMeta {
                pagination: Pagination {
                    page: Some(self.page),
                    per_page: self.per_page,
                    total,
                    has_next: seen < total,
                    has_prev: self.page > 1,
                },
            },
        }
    }
}

/// `meta` of a list read by cursor.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CursorMeta {
    /// Pass this back (as the list's cursor parameter) for the next page; null on the last.
    pub next_cursor: Option<String>,
    /// Items per page.
    pub limit: u32,
}

/// `{"data": [T], "meta": {"nextCursor", "limit"}}`: a page of a list read by cursor (no
/// total: counting a large table on every page costs more than the page).
#[derive(Debug, Serialize, ToSchema)]
pub struct CursorList<T> {
    /// The page's items.
    pub data: Vec<T>,
    /// The cursor of the next page.
    pub meta: CursorMeta,
}

impl<T> CursorList<T> {
    /// A page from up to `limit + 1` rows: the extra row, if any, only says a next page
    /// exists, whose cursor is `cursor_of` the page's last item.
    pub fn new(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Self {
            data: rows,
            meta: CursorMeta { next_cursor, limit },
        }
    }
}

/// A position in a list ordered by `(created_at, id)`: the last row seen.
pub type CreatedAfter = (chrono::DateTime<chrono::Utc>, Uuid);

/// The cursor of a list ordered by `(created_at, id)`: `<micros>_<id>`.
pub fn created_cursor(at: chrono::DateTime<chrono::Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), id)
}

fn decode_created_cursor(c: &str) -> Option<CreatedAfter> {
    let (micros, id) = c.split_once('_')?;
    let at = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    // a forged cursor must not reach Postgres with a time it cannot hold (a 500)
    if !(1..=9999).contains(&chrono::Datelike::year(&at)) {
        return None;
    }
    Some((at, Uuid::parse_str(id).ok()?))
}

/// A page's `limit` (1 to 100, default 50) and `after` (a [`created_cursor`] from the list;
/// empty is none), every invalid one named.
pub fn cursor_page(
    limit: Option<u32>,
    after: Option<&str>,
) -> Result<(u32, Option<CreatedAfter>), FieldErrors> {
    let mut errors = FieldErrors::new();
    let limit = errors.check(
        "limit",
        shared::domain::within(limit.unwrap_or(50), 1..=100),
    );
    let after = match crate::filters::given(after) {
        None => None,
        Some(c) => {
            let decoded = decode_created_cursor(c);
            if decoded.is_none() {
                errors.add("after", "is not a cursor from this list (meta.nextCursor)");
            }
            decoded
        }
    };
    match limit {
        Some(limit) if errors.is_empty() => Ok((limit, after)),
        _ => Err(errors),
    }
}
