//! Events: ingestion (one, or a batch of up to 1000 in one transaction) and reading them back
//! with what they matched.
//!
//! An event and its `process_event` job are written in one transaction (the outbox); the answer
//! is `202` with `{eventId, jobId}`. Ingestion counts against the project's event rate (every
//! answer carries the `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers;
//! past it, `429` with `Retry-After`), which stands in for the enqueue rate, and passes the
//! project's quota of open jobs first (`quota::check_open_jobs`). Every query filters by the
//! caller's project.
//!
//! [`ingest`] takes events in (one, or a batch; single events of concurrent requests share a
//! transaction, [`group_commit`]); [`read`] lists them and reads one back.

pub mod group_commit;
mod ingest;
mod read;

use axum::extract::DefaultBodyLimit;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use ingest::BATCH_MAX_BYTES;

use crate::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    let batch = OpenApiRouter::new()
        .routes(routes!(ingest::create_events_batch))
        .layer(DefaultBodyLimit::max(BATCH_MAX_BYTES));
    OpenApiRouter::new()
        .routes(routes!(ingest::create_event, read::list_events))
        .routes(routes!(read::get_event))
        .merge(batch)
}
