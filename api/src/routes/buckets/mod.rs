//! Transfer buckets: a project's balances, one currency each, with a low-balance threshold.
//! Creating, listing and reading buckets and setting their thresholds ([`crud`]); crediting
//! and debiting them and listing their movements ([`movements`]); the bodies and views
//! ([`body`]).
//!
//! Amounts are exact decimals, JSON strings on the wire, checked against the currency's
//! minor units (`shared::domain::money`) and computed by Postgres `numeric`. A write that takes
//! a bucket below its threshold raises `bucket.low_balance` into the event pipeline in its own
//! transaction, once per crossing (`shared::db::buckets`, "the low-balance state"). Every write
//! is audited (`bucket.created`, `bucket.threshold_changed`, `bucket.credited`,
//! `bucket.debited`).

mod body;
mod crud;
mod movements;

use shared::db::{self, buckets::LowBalance};
use utoipa_axum::{router::OpenApiRouter, routes};

pub use body::{Bucket, BucketRequest, MovementRequest, ThresholdRequest, Transaction};

use crate::{AppState, error::Result, request_id};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(crud::create_bucket, crud::list_buckets))
        .routes(routes!(crud::get_bucket))
        .routes(routes!(crud::set_threshold))
        .routes(routes!(movements::move_balance, movements::list_movements))
}

/// Raises the crossing's `bucket.low_balance` event in the caller's transaction (the write
/// that caused it), if there is one.
async fn raise(
    conn: &mut sqlx::PgConnection,
    crossing: Option<LowBalance>,
    cause: &'static str,
) -> Result<bool> {
    let Some(crossing) = crossing else {
        return Ok(false);
    };
    db::buckets::emit(
        conn,
        std::slice::from_ref(&crossing),
        &request_id::enqueue_options(),
    )
    .await?;
    metrics::counter!("comet_bucket_low_balance_total", "cause" => cause).increment(1);
    tracing::info!(
        bucket_id = %crossing.bucket_id,
        crossing = crossing.seq,
        cause,
        "bucket went below its threshold: bucket.low_balance raised"
    );
    Ok(true)
}
