//! Crediting and debiting a bucket (atomic under the bucket's row lock, idempotent per key,
//! audited), and listing its movements.

use axum::{
    extract::State,
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use shared::{
    db::{self, audit::NewEntry, buckets::Applied},
    domain::{Currency, FieldErrors},
};
use utoipa::IntoParams;

use super::{
    body::{MovementRequest, Transaction},
    raise,
};
use crate::{
    AppState,
    auth::{Authorized, BucketsRead, BucketsWrite},
    envelope::{ApiJson, CursorList, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, PathId, ValidJson},
    filters, request_id,
};

/// The header that marks the answer of a repeated idempotency key.
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

fn created(t: Transaction, replayed: bool) -> Response {
    let mut resp = (StatusCode::CREATED, ApiJson(Data::new(t))).into_response();
    if replayed {
        resp.headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

/// Credits or debits a bucket. Applied atomically under the bucket's row lock: concurrent
/// movements are serialised, never lost, and each key is applied once. A repeated
/// `idempotencyKey` with the same type, amount and reference answers the first movement again
/// (`201`, header `Idempotent-Replayed: true`, nothing applied); with a different body it is a
/// `409`. A movement that takes the bucket below its threshold raises `bucket.low_balance` in
/// the same transaction (once per crossing). Audited (`bucket.credited`, `bucket.debited`).
///
/// Permission: `buckets:write`. Another project's bucket is not found. A debit that would take
/// the balance below zero is `409 insufficient_funds` unless the bucket allows a negative
/// balance; one that would take it to 10^15 or beyond is a `422` on `amount`.
#[utoipa::path(post, path = "/api/v1/transfer-buckets/{id}/transactions", tag = "transfer-buckets",
    params(("id" = Uuid, Path, description = "Bucket id")),
    request_body = MovementRequest,
    security(("bearer" = ["buckets:write"])),
    responses((status = 201, body = inline(Data<Transaction>),
                headers(("idempotent-replayed" = String,
                         description = "`true` when a repeated key answered the first movement"))),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope,
               description = "`insufficient_funds`, or the idempotency key was used for another movement"),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn move_balance(
    auth: Authorized<BucketsWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ValidJson(movement): ValidJson<MovementRequest>,
) -> Result<Response> {
    let project_id = auth.claims.project_id;
    let movement = db::buckets::Movement {
        actor_id: auth.user_id(),
        ..movement
    };
    let mut tx = s.pool.begin().await?;
    let locked = db::buckets::lock(&mut tx, project_id, id)
        .await?
        .ok_or(ApiError::NotFound("transfer bucket"))?;
    let currency = Currency::parse(&locked.currency)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
    let applied = db::buckets::apply(&mut tx, &locked, &movement).await?;
    // the scale is checked after a key's replay: the first movement's answer stands
    if !matches!(applied, Applied::Replayed(_) | Applied::KeyReused(_)) {
        movement
            .amount
            .fits(currency)
            .map_err(|e| ApiError::invalid("amount", e.message()))?;
    }
    let (transaction, bucket, crossing) = match applied {
        Applied::Done {
            transaction,
            bucket,
            crossing,
        } => (transaction, bucket, crossing),
        Applied::Replayed(t) => {
            tracing::info!(transaction_id = %t.transaction_id, "movement replayed by its key");
            return Ok(created(t.into(), true));
        }
        Applied::KeyReused(t) => {
            return Err(ApiError::Conflict(format!(
                "idempotencyKey was used for another movement of this bucket ({} {} {})",
                t.kind, t.amount, t.currency
            )));
        }
        Applied::Insufficient { balance } => {
            return Err(ApiError::InsufficientFunds(format!(
                "the debit exceeds the balance ({balance} {}) and the bucket does not allow a \
                 negative balance",
                locked.currency
            )));
        }
        Applied::OutOfRange => {
            return Err(ApiError::invalid(
                "amount",
                "would take the balance to 10^15 or beyond",
            ));
        }
    };
    let raised = raise(&mut tx, crossing, "movement").await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(
            project_id,
            match movement.kind {
                db::buckets::MovementKind::Credit => "bucket.credited",
                db::buckets::MovementKind::Debit => "bucket.debited",
            },
        )
        .actor(auth.user_id())
        .target("transfer_bucket", id)
        .metadata(serde_json::json!({
            "transactionId": transaction.transaction_id,
            "amount": transaction.amount,
            "currency": transaction.currency,
            "balanceAfter": transaction.balance_after,
            "reference": transaction.reference,
            "alerting": bucket.alerting,
        }))
        .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    if raised {
        s.outbox.wake();
    }
    metrics::counter!("comet_bucket_movements_total", "type" => movement.kind.as_str())
        .increment(1);
    tracing::info!(
        bucket_id = %id,
        transaction_id = %transaction.transaction_id,
        kind = movement.kind.as_str(),
        "bucket balance moved"
    );
    Ok(created(transaction.into(), false))
}

/// Filters and cursor of a bucket's movements.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct MovementParams {
    /// Only credits or only debits; empty is no filter.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = movement_type_filter)]
    pub kind: Option<String>,
    /// The previous page's `meta.nextCursor`; empty is no cursor.
    pub after: Option<String>,
    /// Movements per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

fn movement_type_filter() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    filters::one_of_or_empty(["credit", "debit"])
}

/// A bucket's movements, oldest first, by cursor.
///
/// Permission: `buckets:read`. Another project's bucket is not found. `after` must be a
/// `meta.nextCursor` of this list.
#[utoipa::path(get, path = "/api/v1/transfer-buckets/{id}/transactions", tag = "transfer-buckets",
    params(("id" = Uuid, Path, description = "Bucket id"), MovementParams),
    security(("bearer" = ["buckets:read"])),
    responses((status = 200, body = inline(CursorList<Transaction>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn list_movements(
    auth: Authorized<BucketsRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ApiQuery(params): ApiQuery<MovementParams>,
) -> Result<ApiJson<CursorList<Transaction>>> {
    let project_id = auth.claims.project_id;
    let mut errors = FieldErrors::new();
    let kind = match filters::given(params.kind.as_deref()) {
        None => None,
        Some("credit") => Some(db::buckets::MovementKind::Credit),
        Some("debit") => Some(db::buckets::MovementKind::Debit),
        Some(_) => {
            errors.add("type", "must be `credit`, `debit` or empty");
            None
        }
    };
    let page = crate::envelope::cursor_page(params.limit, params.after.as_deref());
    let (limit, after) = match page {
        Ok(p) if errors.is_empty() => p,
        Ok(_) => return Err(errors.into()),
        Err(more) => {
            errors.extend_new(more);
            return Err(errors.into());
        }
    };
    {
        let mut conn = s.pool.acquire().await?;
        db::buckets::find(&mut conn, project_id, id)
            .await?
            .ok_or(ApiError::NotFound("transfer bucket"))?;
    }
    let rows =
        db::buckets::list_transactions(&s.pool, project_id, id, kind, after, i64::from(limit) + 1)
            .await?;
    Ok(ApiJson(CursorList::new(
        rows.into_iter().map(Transaction::from).collect(),
        limit,
        |t: &Transaction| crate::envelope::created_cursor(t.created_at, t.id),
    )))
}
