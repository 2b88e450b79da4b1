//! `/health`, `/ready` and `/metrics` (unauthenticated: for load balancers and Prometheus).

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{AppState, envelope::Data, quota};

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves.
    pub status: &'static str,
}

/// Readiness of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Postgres answers.
    pub postgres: bool,
    /// Redis answers.
    pub redis: bool,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// The process is alive.
#[utoipa::path(get, path = "/health", tag = "ops",
    responses((status = 200, body = inline(Data<Health>))))]
async fn health() -> axum::Json<Data<Health>> {
    axum::Json(Data::new(Health { status: "ok" }))
}

/// Postgres and Redis answer (503 otherwise).
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses((status = 200, body = inline(Data<Readiness>)),
              (status = 503, body = inline(Data<Readiness>))))]
async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let limit = std::time::Duration::from_secs(2);
    let (pg, redis) = tokio::join!(
        tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&s.pool)),
        tokio::time::timeout(limit, s.queues.ping())
    );
    let r = Readiness {
        postgres: matches!(pg, Ok(Ok(_))),
        redis: matches!(redis, Ok(Ok(_))),
    };
    let status = if r.postgres && r.redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(Data::new(r)))
}

/// Prometheus metrics (text exposition format). The per-project gauges
/// (`comet_project_open_jobs` of the most loaded projects, `comet_open_jobs`) are read from
/// Redis at each scrape; while Redis does not answer they are left out and the rest is served.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(s): State<AppState>) -> String {
    let mut text = s.metrics.render();
    match tokio::time::timeout(std::time::Duration::from_secs(1), quota::render_gauges(&s)).await {
        Ok(Ok(gauges)) => {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&gauges);
        }
        Ok(Err(_)) => {}
        Err(_) => tracing::warn!("metrics: the per-project gauges timed out; left out"),
    }
    text
}
