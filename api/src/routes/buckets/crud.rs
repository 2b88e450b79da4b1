//! Creating, listing and reading buckets, and setting their thresholds; creating and
//! threshold changes are audited and apply the low-balance transition at once.

use axum::extract::State;
use serde::Deserialize;
use shared::{
    db::{
        self,
        audit::NewEntry,
        buckets::{BucketFilter, NewBucket},
    },
    domain::{Currency, FieldErrors, SearchTerm},
};
use utoipa::IntoParams;

use super::{
    body::{Bucket, BucketRequest, NewThreshold, ThresholdRequest},
    raise,
};
use crate::{
    AppState,
    auth::{Authorized, BucketsRead, BucketsWrite},
    envelope::{ApiJson, Created, CursorList, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result, ResultExt},
    extract::{ApiQuery, PathId, ValidJson},
    filters, request_id,
};

fn audit_view(b: &Bucket) -> serde_json::Value {
    serde_json::to_value(b).unwrap_or_default()
}

/// Creates a bucket. One that opens below its threshold starts alerting, and its
/// `bucket.low_balance` event is raised in the same transaction. Audited (`bucket.created`).
///
/// Permission: `buckets:write`. A name the project already has is a `409`.
#[utoipa::path(post, path = "/api/v1/transfer-buckets", tag = "transfer-buckets",
    request_body = BucketRequest,
    security(("bearer" = ["buckets:write"])),
    responses((status = 201, body = inline(Data<Bucket>),
                headers(("location" = String, description = "The bucket's URL"))),
              (status = 409, body = ErrorEnvelope, description = "The project has a bucket of that name"),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn create_bucket(
    auth: Authorized<BucketsWrite>,
    State(s): State<AppState>,
    ValidJson(new): ValidJson<BucketRequest>,
) -> Result<Created<Bucket>> {
    let project_id = auth.claims.project_id;
    let new = NewBucket {
        created_by: auth.user_id(),
        ..new
    };
    let mut tx = s.pool.begin().await?;
    let (row, crossing) = db::buckets::insert(&mut tx, project_id, &new)
        .await
        .on_constraint("transfer_buckets_name", || {
            ApiError::Conflict("the project already has a bucket of that name".into())
        })?;
    let raised = raise(&mut tx, crossing, "create").await?;
    let bucket = Bucket::from(row);
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "bucket.created")
            .actor(auth.user_id())
            .target("transfer_bucket", bucket.id)
            .metadata(serde_json::json!({ "bucket": audit_view(&bucket) }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    if raised {
        s.outbox.wake();
    }
    tracing::info!(bucket_id = %bucket.id, "transfer bucket created");
    Ok(Created {
        location: format!("/api/v1/transfer-buckets/{}", bucket.id),
        data: bucket,
    })
}

/// Filters and cursor of the bucket list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct BucketParams {
    /// Only buckets of this currency; empty is no filter.
    #[param(schema_with = currency_filter)]
    pub currency: Option<String>,
    /// Only buckets whose balance is below (`true`) or not below (`false`) their threshold.
    pub below_threshold: Option<bool>,
    /// Only alerting (`true`) or armed (`false`) buckets.
    pub alerting: Option<bool>,
    /// A substring of the name (case-insensitive).
    #[param(value_type = Option<SearchTerm>, inline)]
    pub search: Option<String>,
    /// The previous page's `meta.nextCursor`; empty is no cursor.
    pub after: Option<String>,
    /// Buckets per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

fn currency_filter() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    filters::one_of_or_empty(Currency::codes())
}

impl BucketParams {
    fn filter(&self) -> Result<BucketFilter, FieldErrors> {
        let mut errors = FieldErrors::new();
        let currency = errors.check(
            "currency",
            filters::given(self.currency.as_deref())
                .map(Currency::parse)
                .transpose(),
        );
        let search = errors.check("search", SearchTerm::parse_optional(self.search.as_deref()));
        match (currency, search) {
            (Some(currency), Some(search)) if errors.is_empty() => Ok(BucketFilter {
                currency: currency.map(|c| c.code().to_owned()),
                below_threshold: self.below_threshold,
                alerting: self.alerting,
                search: search.map(SearchTerm::into_string),
            }),
            _ => Err(errors),
        }
    }
}

/// The project's buckets, oldest first, filtered, by cursor.
///
/// Permission: `buckets:read`. `after` must be a `meta.nextCursor` of this list.
#[utoipa::path(get, path = "/api/v1/transfer-buckets", tag = "transfer-buckets",
    params(BucketParams),
    security(("bearer" = ["buckets:read"])),
    responses((status = 200, body = inline(CursorList<Bucket>)),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn list_buckets(
    auth: Authorized<BucketsRead>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<BucketParams>,
) -> Result<ApiJson<CursorList<Bucket>>> {
    let page = crate::envelope::cursor_page(params.limit, params.after.as_deref());
    let (filter, (limit, after)) = FieldErrors::both(params.filter(), page)?;
    let rows = db::buckets::list(
        &s.pool,
        auth.claims.project_id,
        &filter,
        after,
        i64::from(limit) + 1,
    )
    .await?;
    Ok(ApiJson(CursorList::new(
        rows.into_iter().map(Bucket::from).collect(),
        limit,
        |b: &Bucket| crate::envelope::created_cursor(b.created_at, b.id),
    )))
}

/// One bucket, with its balance and low-balance state.
///
/// Permission: `buckets:read`. Another project's bucket is not found.
#[utoipa::path(get, path = "/api/v1/transfer-buckets/{id}", tag = "transfer-buckets",
    params(("id" = Uuid, Path, description = "Bucket id")),
    security(("bearer" = ["buckets:read"])),
    responses((status = 200, body = inline(Data<Bucket>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_bucket(
    auth: Authorized<BucketsRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<Bucket>>> {
    let mut conn = s.pool.acquire().await?;
    let row = db::buckets::find(&mut conn, auth.claims.project_id, id)
        .await?
        .ok_or(ApiError::NotFound("transfer bucket"))?;
    Ok(ApiJson(Data::new(row.into())))
}

/// Sets a bucket's low-balance threshold (and re-arm margin, if given; otherwise it is kept).
/// The state follows at once: a bucket the new threshold puts below it alerts now (its
/// `bucket.low_balance` event in the same transaction), one it puts above threshold + margin
/// is re-armed. Audited (`bucket.threshold_changed`, with the old and new values).
///
/// Permission: `buckets:write`. Another project's bucket is not found.
#[utoipa::path(put, path = "/api/v1/transfer-buckets/{id}/threshold", tag = "transfer-buckets",
    params(("id" = Uuid, Path, description = "Bucket id")),
    request_body = ThresholdRequest,
    security(("bearer" = ["buckets:write"])),
    responses((status = 200, body = inline(Data<Bucket>)),
              (status = 404, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn set_threshold(
    auth: Authorized<BucketsWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ValidJson(new): ValidJson<ThresholdRequest>,
) -> Result<ApiJson<Data<Bucket>>> {
    let project_id = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let before = db::buckets::lock(&mut tx, project_id, id)
        .await?
        .ok_or(ApiError::NotFound("transfer bucket"))?;
    let currency = Currency::parse(&before.currency)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
    new.check_scale(currency)?;
    let NewThreshold { threshold, margin } = new;
    let margin = match margin {
        Some(m) => m,
        None => shared::domain::Amount::parse(&before.rearm_margin, shared::domain::Sign::Any)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored margin: {e}")))?,
    };
    let (after, crossing) =
        db::buckets::set_threshold(&mut tx, &before, &threshold, &margin).await?;
    let raised = raise(&mut tx, crossing, "threshold").await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "bucket.threshold_changed")
            .actor(auth.user_id())
            .target("transfer_bucket", id)
            .metadata(serde_json::json!({
                "from": {"lowBalanceThreshold": before.low_threshold,
                         "rearmMargin": before.rearm_margin},
                "to": {"lowBalanceThreshold": after.low_threshold,
                       "rearmMargin": after.rearm_margin},
                "alerting": after.alerting,
            }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    if raised {
        s.outbox.wake();
    }
    tracing::info!(bucket_id = %id, alerting = after.alerting, "bucket threshold set");
    Ok(ApiJson(Data::new(after.into())))
}
