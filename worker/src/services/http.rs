//! The worker's own HTTP surface: `/health` (alive), `/ready` (Postgres and Redis answer),
//! `/metrics` (Prometheus).

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use shared::queue::Queues;
use sqlx::PgPool;

use super::Stop;

#[derive(Clone)]
struct HttpState {
    pool: PgPool,
    queues: Queues,
}

/// The worker's router.
pub fn router(pool: PgPool, queues: Queues) -> Router {
    let metrics = shared::telemetry::metrics_handle();
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"data": {"status": "ok"}})) }),
        )
        .route("/ready", get(ready))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .with_state(HttpState { pool, queues })
}

async fn ready(State(s): State<HttpState>) -> impl IntoResponse {
    let pg = sqlx::query("SELECT 1").execute(&s.pool).await.is_ok();
    let redis = s.queues.ping().await.is_ok();
    let status = if pg && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({"data": {"postgres": pg, "redis": redis}});
    (status, axum::Json(body))
}

/// Serves until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: PgPool,
    queues: Queues,
    stop: Stop,
) -> anyhow::Result<()> {
    axum::serve(listener, router(pool, queues))
        .with_graceful_shutdown(stop.requested())
        .await
        .context("the worker's HTTP server failed")
}
