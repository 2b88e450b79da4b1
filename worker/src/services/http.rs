//! The worker's own HTTP surface: `/health` (alive), `/ready` (Postgres and Redis answer),
//! `/metrics` (Prometheus: this process's recorder, then the fleet-wide gauges of [`fleet`]).

mod fleet;

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use shared::queue::Queues;
use sqlx::PgPool;

use super::Stop;

#[derive(Clone)]
struct HttpState {
    pool: PgPool,
    queues: Queues,
    metrics: PrometheusHandle,
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
        .route("/metrics", get(render_metrics))
        .with_state(HttpState {
            pool,
            queues,
            metrics,
        })
}

async fn render_metrics(State(s): State<HttpState>) -> String {
    let mut text = s.metrics.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&fleet::render(&s.pool, &s.queues).await);
    text
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
