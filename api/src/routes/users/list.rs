//! The project's users: a filtered list (by page number or by cursor) and its CSV export.

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{
        self,
        users::{PageStart, User, UserCursor, UserFilter, UserStatus},
    },
    domain::{FieldErrors, Invalid, SearchTerm},
};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{RefOr, schema::Schema},
};

use crate::{
    AppState,
    auth::{self, Authorized, UserRead},
    envelope::{ApiJson, PageParams, Pagination},
    error::{AuthRefusals, ErrorEnvelope, Result},
    extract::ApiQuery,
    filters,
};

/// Filters of the user list and export (empty is no filter, see [`crate::filters`]).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UserFilterParams {
    /// Only users with this status: `INVITED`, `ACTIVE` or `DEACTIVATED` (or in lower case).
    #[param(value_type = Option<StatusFilter>, inline)]
    pub status: Option<String>,
    /// Only holders of this role (a role id).
    #[param(value_type = Option<filters::UuidOrEmpty>, inline)]
    pub role: Option<String>,
    /// Substring of the email or name (case-insensitive).
    #[param(value_type = Option<SearchTerm>, inline)]
    pub search: Option<String>,
}

const STATUSES: [UserStatus; 3] = [
    UserStatus::Invited,
    UserStatus::Active,
    UserStatus::Deactivated,
];

/// The OpenAPI schema of the `status` filter: each status in upper or lower case, or empty.
pub struct StatusFilter;

impl PartialSchema for StatusFilter {
    fn schema() -> RefOr<Schema> {
        let words: Vec<String> = STATUSES
            .iter()
            .flat_map(|s| [s.as_str().to_owned(), s.as_str().to_ascii_lowercase()])
            .collect();
        filters::one_of_or_empty(words.iter().map(String::as_str))
    }
}

impl ToSchema for StatusFilter {}

impl UserFilterParams {
    pub(super) fn parse(self) -> Result<UserFilter, FieldErrors> {
        let mut errors = FieldErrors::new();
        let status = errors.check(
            "status",
            filters::given(self.status.as_deref())
                .map(|s| {
                    STATUSES
                        .into_iter()
                        .find(|st| s == st.as_str() || s == st.as_str().to_ascii_lowercase())
                        .ok_or_else(|| {
                            Invalid::new(
                                "must be INVITED, ACTIVE or DEACTIVATED (or in lower case)",
                            )
                        })
                })
                .transpose(),
        );
        let role_id = errors.check("role", filters::uuid(self.role.as_deref(), "a role id"));
        let search = errors.check("search", SearchTerm::parse_optional(self.search.as_deref()));
        match (status, role_id, search) {
            (Some(status), Some(role_id), Some(search)) => Ok(UserFilter {
                status,
                role_id,
                search: search.map(SearchTerm::into_string),
            }),
            _ => Err(errors),
        }
    }
}

/// `meta` of the user list: pagination, the cursor of the next page, and the project's
/// ACTIVE user count.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserListMeta {
    /// Pagination of the filtered list.
    pub pagination: Pagination,
    /// Pass as `after` for the next page (keyset: as fast deep in the list as at its start);
    /// `null` on the last page.
    pub next_cursor: Option<String>,
    /// ACTIVE users in the project (whatever the filters).
    pub total_active: u64,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// The page's users.
    pub data: Vec<User>,
    /// Pagination and counts.
    pub meta: UserListMeta,
}

/// `?after=`: start right after a position instead of at a page number.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CursorParams {
    /// The `meta.nextCursor` of the previous page (then `page` must be left out); empty is no
    /// cursor.
    pub after: Option<String>,
}

impl CursorParams {
    /// Where the page starts: at `page`'s offset, or right after the cursor.
    fn start(self, page: PageParams) -> Result<PageStart, FieldErrors> {
        match filters::given(self.after.as_deref()) {
            None => Ok(PageStart::Offset(page.offset() as i64)),
            Some(_) if page.page != 1 => Err(FieldErrors::one(
                "after",
                "use either page or after, not both",
            )),
            Some(c) => UserCursor::decode(c).map(PageStart::After).ok_or_else(|| {
                FieldErrors::one("after", "is not a cursor from this list (meta.nextCursor)")
            }),
        }
    }
}

/// The project's users, oldest first, filtered, by page number (`page`) or by cursor
/// (`after`, from the previous page's `meta.nextCursor`); `meta.totalActive` counts the
/// project's ACTIVE users.
///
/// Permission: `user:read`.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    params(PageParams, CursorParams, UserFilterParams),
    security(("bearer" = ["user:read"])),
    responses((status = 200, body = UserList),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn list_users(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(cursor): ApiQuery<CursorParams>,
    ApiQuery(filter): ApiQuery<UserFilterParams>,
) -> Result<ApiJson<UserList>> {
    let page = page.check().and_then(|p| Ok((p, cursor.start(p)?)));
    let ((page, start), filter) = FieldErrors::both(page, filter.parse())?;
    let found = db::users::list(
        &s.pool,
        auth.claims.project_id,
        &filter,
        start,
        i64::from(page.per_page),
    )
    .await?;
    let next_cursor = found
        .has_more
        .then(|| found.users.last().map(|u| UserCursor::after(u).encode()))
        .flatten();
    let pagination = Pagination {
        page: matches!(start, PageStart::Offset(_)).then_some(page.page),
        per_page: page.per_page,
        total: found.total.max(0) as u64,
        has_next: found.has_more,
        has_prev: page.page > 1 || matches!(start, PageStart::After(_)),
    };
    Ok(ApiJson(UserList {
        data: found.users,
        meta: UserListMeta {
            pagination,
            next_cursor,
            total_active: found.counts.active.max(0) as u64,
        },
    }))
}

fn user_cells(u: User) -> Vec<String> {
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    vec![
        u.id.to_string(),
        u.email,
        u.name.unwrap_or_default(),
        u.status.as_str().to_owned(),
        u.roles
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(";"),
        time(u.last_seen_at),
        time(Some(u.created_at)),
    ]
}

/// Every user matching the filters, as a CSV download (header row, then one row per user;
/// roles are `;`-separated names). Counts as activity.
///
/// Permission: `user:read`.
#[utoipa::path(get, path = "/api/v1/users/export", tag = "users",
    params(UserFilterParams),
    security(("bearer" = ["user:read"])),
    responses((status = 200, content_type = "text/csv", body = String,
               description = "id,email,name,status,roles,lastSeenAt,createdAt"),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn export_users(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    ApiQuery(filter): ApiQuery<UserFilterParams>,
) -> Result<Response> {
    let filter = filter.parse()?;
    auth::track_activity(&s, &auth.claims);
    let rows = db::users::stream(s.pool.clone(), auth.claims.project_id, &filter);
    crate::csv_export::response(
        "users.csv",
        &[
            "id",
            "email",
            "name",
            "status",
            "roles",
            "lastSeenAt",
            "createdAt",
        ],
        rows,
        user_cells,
    )
    .await
}
