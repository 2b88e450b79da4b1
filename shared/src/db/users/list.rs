//! The project's user list: its filters, keyset cursor and counts by status, a page of it,
//! and the whole of it streamed for the CSV export. Deleted users (a bulk `delete`) are never
//! listed.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{SELECT_USER, User, UserRow, UserStatus};

/// Filters of the user list.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Only this status.
    pub status: Option<UserStatus>,
    /// Only holders of this role.
    pub role_id: Option<Uuid>,
    /// Substring of email or name (case-insensitive).
    pub search: Option<String>,
}

/// `%term%` for `ILIKE`, with the term's own `\`, `%` and `_` escaped.
pub(crate) fn like_pattern(search: &Option<String>) -> Option<String> {
    search.as_ref().map(|s| {
        let escaped = s
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    })
}

const FILTER: &str = r#"
    WHERE u.project_id = $1 AND u.deleted_at IS NULL
      AND ($2::text IS NULL OR u.status = $2)
      AND ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM user_roles f
                                       WHERE f.project_id = u.project_id AND f.user_id = u.user_id AND f.role_id = $3))
      AND ($4::text IS NULL OR u.email ILIKE $4 OR u.name ILIKE $4)
"#;

/// The project's users by status, from the trigger-maintained `user_counts` (at most 16 rows,
/// whatever the number of users).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct UserCounts {
    /// `INVITED` users.
    pub invited: i64,
    /// `ACTIVE` users.
    pub active: i64,
    /// `DEACTIVATED` users.
    pub deactivated: i64,
}

impl UserCounts {
    /// Users with this status, or all of them.
    pub fn of(&self, status: Option<UserStatus>) -> i64 {
        match status {
            None => self.invited + self.active + self.deactivated,
            Some(UserStatus::Invited) => self.invited,
            Some(UserStatus::Active) => self.active,
            Some(UserStatus::Deactivated) => self.deactivated,
        }
    }
}

/// The project's user counts by status.
pub async fn counts(pool: &PgPool, project_id: Uuid) -> Result<UserCounts, sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(sum(invited), 0)::int8 AS invited, coalesce(sum(active), 0)::int8 AS active,
                coalesce(sum(deactivated), 0)::int8 AS deactivated
         FROM user_counts WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await
}

/// A position in the user list's order (`created_at`, then id): a page can start right after
/// it. Opaque to clients: base64url of `<created_at µs>.<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCursor {
    /// The last seen user's creation time.
    pub created_at: DateTime<Utc>,
    /// The last seen user's id.
    pub user_id: Uuid,
}

impl UserCursor {
    /// The cursor after `user`.
    pub fn after(user: &User) -> Self {
        Self {
            created_at: user.created_at,
            user_id: user.id,
        }
    }

    /// As handed to clients.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let raw = format!(
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.user_id.simple()
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// A cursor a client handed back; `None` if it is not one.
    pub fn decode(s: &str) -> Option<Self> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim())
            .ok()?;
        let (micros, id) = std::str::from_utf8(&raw).ok()?.split_once('.')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        // a forged cursor must not reach Postgres with a time it cannot represent
        if !(1..=9999).contains(&chrono::Datelike::year(&created_at)) {
            return None;
        }
        Some(Self {
            created_at,
            user_id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// Where a page of the user list starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    /// After skipping this many matching users (page numbers). Costs a walk over the skipped
    /// rows' index entries: about 1 ms per 10k.
    Offset(i64),
    /// Right after this position (keyset): as cheap deep in the list as at its start.
    After(UserCursor),
}

/// A page of the user list.
#[derive(Debug)]
pub struct UserPage {
    /// The users, oldest first.
    pub users: Vec<User>,
    /// Whether more match after them.
    pub has_more: bool,
    /// Users matching the filters (wherever the page starts).
    pub total: i64,
    /// The project's users by status (whatever the filters).
    pub counts: UserCounts,
}

/// A page of the project's users (oldest first), the total matching, and the project's
/// counts by status.
///
/// The page and the counts are read concurrently. Without a role or search filter the total
/// comes from the counts (constant time); with one it is a `COUNT` of the matching rows.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    filter: &UserFilter,
    start: PageStart,
    limit: i64,
) -> Result<UserPage, sqlx::Error> {
    let pattern = like_pattern(&filter.search);
    // Only the filters in use go into the SQL: the catch-all `($2 IS NULL OR …)` form makes
    // Postgres's generic plan scan every row of the table.
    // The page's rows are picked first and only they get their roles: the roles sub-select in
    // the outer query would otherwise run for every row OFFSET skips (the last page of 10k
    // users took 230 ms instead of 3).
    let mut page =
        QueryBuilder::<Postgres>::new(concat!(user_columns!(), " FROM (SELECT * FROM users u"));
    push_filter(&mut page, project_id, filter, &pattern);
    let offset = match start {
        PageStart::Offset(n) => n,
        PageStart::After(c) => {
            page.push(" AND (u.created_at, u.user_id) > (")
                .push_bind(c.created_at)
                .push(", ")
                .push_bind(c.user_id)
                .push(")");
            0
        }
    };
    // one row more than asked: whether a next page exists
    page.push(" ORDER BY u.created_at, u.user_id OFFSET ")
        .push_bind(offset)
        .push(" LIMIT ")
        .push_bind(limit + 1)
        .push(") u ORDER BY u.created_at, u.user_id");
    let page = async {
        let rows: Vec<UserRow> = page.build_query_as().fetch_all(pool).await?;
        Ok::<_, sqlx::Error>(rows.into_iter().map(User::from).collect::<Vec<_>>())
    };
    let counted = filter.role_id.is_some() || pattern.is_some();
    let total = async {
        if !counted {
            return Ok(None);
        }
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM users u");
        push_filter(&mut count, project_id, filter, &pattern);
        count.build_query_scalar().fetch_one(pool).await.map(Some)
    };
    let (mut users, total, counts) = tokio::try_join!(page, total, counts(pool, project_id))?;
    let has_more = users.len() as i64 > limit;
    users.truncate(limit.max(0) as usize);
    Ok(UserPage {
        users,
        has_more,
        total: total.unwrap_or_else(|| counts.of(filter.status)),
        counts,
    })
}

/// `WHERE` with the project and only the filters that are set.
fn push_filter(
    qb: &mut QueryBuilder<Postgres>,
    project_id: Uuid,
    filter: &UserFilter,
    pattern: &Option<String>,
) {
    // deleted users (a bulk `delete`) are hidden from lists
    qb.push(" WHERE u.deleted_at IS NULL AND u.project_id = ")
        .push_bind(project_id);
    if let Some(status) = filter.status {
        qb.push(" AND u.status = ").push_bind(status.as_str());
    }
    if let Some(role) = filter.role_id {
        qb.push(
            " AND EXISTS (SELECT 1 FROM user_roles f WHERE f.project_id = u.project_id \
             AND f.user_id = u.user_id AND f.role_id = ",
        )
        .push_bind(role)
        .push(")");
    }
    if let Some(p) = pattern {
        qb.push(" AND (u.email ILIKE ")
            .push_bind(p.clone())
            .push(" OR u.name ILIKE ")
            .push_bind(p.clone())
            .push(")");
    }
}

/// Rows an export reads per query.
const EXPORT_BATCH: i64 = 500;

/// Every matching user (oldest first), streamed for CSV export.
///
/// Reads in keyset-paginated batches, so a slow download never holds a pooled connection, and
/// owns its pool handle (a cheap clone) so the stream can outlive the handler that starts it.
pub fn stream(
    pool: PgPool,
    project_id: Uuid,
    filter: &UserFilter,
) -> futures::stream::BoxStream<'static, Result<User, sqlx::Error>> {
    use futures::StreamExt;
    let pattern = like_pattern(&filter.search);
    let status = filter.status.map(UserStatus::as_str);
    let role = filter.role_id;
    let sql = format!(
        "{SELECT_USER} {FILTER}
           AND ($5::timestamptz IS NULL OR (u.created_at, u.user_id) > ($5::timestamptz, $6::uuid))
         ORDER BY u.created_at, u.user_id LIMIT $7"
    );
    // the state is the last row seen (`Some(None)`: start; `None`: done)
    futures::stream::unfold(Some(None::<(DateTime<Utc>, Uuid)>), move |state| {
        let (pool, sql, pattern) = (pool.clone(), sql.clone(), pattern.clone());
        async move {
            let after = state?;
            let rows: Result<Vec<UserRow>, _> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(project_id)
                .bind(status)
                .bind(role)
                .bind(pattern)
                .bind(after.map(|a| a.0))
                .bind(after.map(|a| a.1))
                .bind(EXPORT_BATCH)
                .fetch_all(&pool)
                .await;
            Some(match rows {
                Err(e) => (vec![Err(e)], None),
                Ok(rows) => {
                    let next = (rows.len() as i64 == EXPORT_BATCH)
                        .then(|| rows.last().map(|r| (r.created_at, r.user_id)));
                    (rows.into_iter().map(|r| Ok(User::from(r))).collect(), next)
                }
            })
        }
    })
    .flat_map(futures::stream::iter)
    .boxed()
}
