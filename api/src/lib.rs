//! Comet's HTTP API: thin axum handlers that check permissions, validate, write, and enqueue.
//! Slow or failure-prone work never runs in a request: the API answers `202` with a job id.
//!
//! # Layout
//! - [`routes`]: one module per feature, each with its `router()` (utoipa-axum, so every route
//!   is in the OpenAPI document by construction).
//! - [`auth`]: Bearer JWT → [`auth::Authorized<P>`], which extracts only with permission `P`;
//!   [`auth::ProjectScoped<P>`] for `/projects/{id}` routes; [`auth::Caller<P>`] for routes a
//!   token with `P` or a project's API key (`X-API-Key`) may call.
//! - [`error`], [`envelope`], [`extract`]: the JSON envelope for data and errors; request bodies
//!   validated before a handler runs (every invalid field named), UUID path ids.
//! - [`filters`]: optional query-string filters (empty is no filter), read exactly as the
//!   OpenAPI document describes them.
//! - Helpers routes share (a route module never imports from another): [`caller`] (who the
//!   caller is), [`admin_guard`] (no request leaves a project without an active admin), [`rate_limit`], [`quota`] (the per-project quota every enqueue passes),
//!   [`revocation`] (revoke a user's tokens at once), [`project_state`] (a project's
//!   suspension or deletion reaching every process), [`project_settings`] (projects' settings
//!   cached per process, dropped on every process when changed), [`passwords`] (Argon2 off the async
//!   threads), [`tokens`] (a user's access and refresh tokens), [`csv_export`].
//! - [`request_id`]: `x-request-id` on every response and log line, and on the jobs a request
//!   enqueues (`job.enqueue(&mut tx, request_id::enqueue_options())`, then after the commit
//!   `s.outbox.wake()`: the relays are woken by a Redis publish, not by the transaction).
//! - [`live`]: the inbox's live fan-out: one Redis pub/sub connection per process, to the
//!   process's open notification streams.
//! - [`client_ip`]: the client address behind `TRUSTED_PROXIES`, for per-IP limits and audits.
//! - [`ops`]: the ops console at `/ops` (HTML and embedded assets; its session cookie is
//!   accepted by [`auth`] only with its CSRF header).
//! - [`app`] builds the router from an [`AppState`]; `main.rs` only serves it.

pub mod admin_guard;
pub mod auth;
pub mod caller;
pub mod client_ip;
pub mod confirm;
pub mod csv_export;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod filters;
pub mod live;
pub mod ops;
pub mod passwords;
pub mod project_settings;
pub mod project_state;
pub mod quota;
pub mod rate_limit;
pub mod request_id;
pub mod revocation;
pub mod routes;
pub mod tokens;

use std::{sync::Arc, sync::OnceLock, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::PrometheusHandle;
use shared::{config::Settings, queue::Queues};
use sqlx::PgPool;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::ApiError;

/// Everything a handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Postgres.
    pub pool: PgPool,
    /// The Redis queues.
    pub queues: Queues,
    /// The settings.
    pub settings: Arc<Settings>,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
    /// Sessions, revocation markers and rate limits (Redis).
    pub sessions: shared::sessions::Sessions,
    /// Revocations this process made (fallback when Redis is unreachable).
    pub revocations: Arc<auth::RevocationCache>,
    /// The open notification streams of this process and their pub/sub fan-out.
    pub live: Arc<live::Hub>,
    /// Stream tickets and the per-user count of open streams (Redis).
    pub streams: shared::inbox::streams::StreamStore,
    /// The webhook delivery client (test messages), behind the SSRF guard.
    pub webhooks: shared::webhooks::WebhookClient,
    /// Wakes the outbox relays: call `wake()` after committing a transaction that enqueued.
    pub outbox: shared::queue::OutboxWaker,
    /// Projects' settings, cached ([`project_settings`]).
    pub project_settings: Arc<project_settings::SettingsCache>,
    /// Projects' outbox counts for the quota, memoised ([`quota::OutboxCounts`]).
    pub outbox_counts: Arc<quota::OutboxCounts>,
    /// Single ingested events, group-committed ([`routes::events::group_commit`]).
    pub ingest: routes::events::group_commit::IngestWriter,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Comet API", description = "Comet's admin and alerting API. Every response uses \
the JSON envelope: `{\"data\": …}` or `{\"error\": {\"code\", \"message\", \"details\"?, \"requestId\"}}`. \
Each operation's `bearer` security scopes name the permission it needs; operations that list \
`apiKey` also accept a project's API key in `X-API-Key`."),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorEnvelope, error::ErrorBody)),
    tags(
        (name = "auth", description = "Login and logout"),
        (name = "users", description = "Users, invitations, roles, deactivation"),
        (name = "roles", description = "Roles and the permissions they grant"),
        (name = "invitations", description = "Accepting an invitation"),
        (name = "audit", description = "The audit log"),
        (name = "events", description = "Sending events and reading them back"),
        (name = "rules", description = "Alert rules: which events become notifications, for whom"),
        (name = "inbox", description = "The user's own notifications and their live stream"),
        (name = "notifications", description = "Notifications' delivery attempts (project admins)"),
        (name = "jobs", description = "Job status and control"),
        (name = "projects", description = "Projects (platform operators) and their API keys"),
        (name = "webhooks", description = "Webhook endpoints: signed deliveries of notifications"),
        (name = "schedules", description = "Schedules and their sweeps (platform operators)"),
        (name = "transfer-buckets", description = "Transfer buckets: exact balances, credits and debits, low-balance alerts"),
        (name = "ops", description = "Health and metrics"),
        (name = "ops-console", description = "The ops console's pages (HTML, at /ops): sign-in, the console, sign-out")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A project's API key, `ck_<prefix>_<secret>`",
            ))),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .merge(routes::health::router())
        .merge(routes::jobs::router())
        .merge(routes::queues::router())
        .merge(routes::auth::router())
        .merge(routes::passwords::router())
        .merge(routes::users::router())
        .merge(routes::roles::router())
        .merge(routes::invitations::router())
        .merge(routes::audit::router())
        .merge(routes::events::router())
        .merge(routes::rules::router())
        .merge(routes::notifications::router())
        .merge(routes::deliveries::router())
        .merge(routes::projects::router())
        .merge(routes::webhook_endpoints::router())
        .merge(routes::schedules::router())
        .merge(routes::buckets::router())
        .merge(ops::router())
}

/// The OpenAPI document of every route (built once).
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static SPEC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| api_router().split_for_parts().1)
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops",
    responses((status = 200, content_type = "application/json", body = Object)))]
async fn openapi_json() -> axum::Json<&'static utoipa::openapi::OpenApi> {
    axum::Json(openapi())
}

/// A method as a metrics label: the standard methods by name, anything else `other` (labels come
/// from closed sets only: a caller must not be able to create series).
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

async fn http_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("comet_http_requests_total", "route" => route.clone(), "method" => method,
        "status" => status)
    .increment(1);
    metrics::histogram!("comet_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// The whole application, ready to serve or to drive in tests.
pub fn app(state: AppState) -> Router {
    let timeout = state.settings.http.request_timeout;
    let upload_timeout = timeout.max(routes::users::imports::upload::UPLOAD_TIMEOUT);
    let (router, _) = api_router().split_for_parts();
    router
        .fallback(|req: Request| async move {
            ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                // inside the request-id middleware, so the envelope carries the request id;
                // an import's upload streams up to IMPORT_MAX_BYTES and gets longer
                let limit = if req.method() == axum::http::Method::POST
                    && req.uri().path() == routes::users::imports::upload::PATH
                {
                    upload_timeout
                } else {
                    timeout
                };
                match tokio::time::timeout(limit, next.run(req)).await {
                    Ok(resp) => resp,
                    Err(_) => {
                        ApiError::Unavailable("the service (request timed out)").into_response()
                    }
                }
            },
        ))
        .layer(middleware::from_fn(http_metrics))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Builds the state from settings (lazy pools: the API starts while a dependency is down).
pub fn state(settings: Settings) -> anyhow::Result<AppState> {
    use anyhow::Context as _;
    let pool = shared::db::pool(&settings).context("Failed to configure the Postgres pool")?;
    let queues = Queues::from_settings(&settings).context("Failed to configure the Redis queue")?;
    let webhooks = shared::webhooks::WebhookClient::new(&settings.webhooks)
        .context("Failed to build the webhook HTTP client")?;
    let outbox = shared::queue::OutboxWaker::spawn(queues.clone());
    Ok(AppState {
        webhooks,
        pool: pool.clone(),
        sessions: shared::sessions::Sessions::new(&queues),
        revocations: Arc::default(),
        live: Arc::default(),
        streams: shared::inbox::streams::StreamStore::new(&queues),
        ingest: routes::events::group_commit::spawn(pool, outbox.clone()),
        outbox,
        project_settings: Arc::default(),
        outbox_counts: Arc::default(),
        queues,
        settings: Arc::new(settings),
        metrics: {
            let handle = shared::telemetry::metrics_handle();
            metrics_at_zero();
            handle
        },
    })
}

/// Registers every counter and histogram the README documents for the API, so a fresh
/// `/metrics` shows them at zero: the HTTP metrics for every documented route (status `200`),
/// and the label-less and per-queue counters.
fn metrics_at_zero() {
    use shared::telemetry::{MetricKind::*, export_at_zero, per_queue, unlabelled};
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let spec = serde_json::to_value(openapi()).unwrap_or_default();
        let mut routes = Vec::new();
        if let Some(paths) = spec["paths"].as_object() {
            for (path, item) in paths {
                for method in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    let method = method.to_ascii_uppercase();
                    if let Ok(m) = axum::http::Method::from_bytes(method.as_bytes()) {
                        routes.push((path.clone(), method_label(&m)));
                    }
                }
            }
        }
        export_at_zero(
            Counter,
            "comet_http_requests_total",
            "Requests served, by route, method and status",
            routes.iter().map(|(route, method)| {
                vec![
                    ("route", route.clone()),
                    ("method", (*method).to_owned()),
                    ("status", "200".to_owned()),
                ]
            }),
        );
        let mut paths: Vec<&String> = routes.iter().map(|(r, _)| r).collect();
        paths.dedup();
        export_at_zero(
            Histogram,
            "comet_http_request_duration_seconds",
            "Request latency, by route",
            paths.into_iter().map(|r| vec![("route", r.clone())]),
        );
        shared::group_commit::metrics_at_zero(&["ingest"]);
        export_at_zero(
            Counter,
            "comet_session_check_degraded_total",
            "Requests whose token-revocation check was skipped because Redis did not answer",
            unlabelled(),
        );
        export_at_zero(
            Counter,
            "comet_redis_wait_short_total",
            "Writes fewer Redis replicas than REDIS_WAIT_REPLICAS acknowledged in time",
            unlabelled(),
        );
        export_at_zero(
            Counter,
            "comet_argon2_refused_total",
            "Requests refused with 503 busy: no password-hashing slot freed in time",
            unlabelled(),
        );
        export_at_zero(
            Counter,
            "comet_corrupt_jobs_total",
            "Job hashes that could not be read back",
            per_queue(shared::jobs::QUEUES),
        );
        export_at_zero(
            Counter,
            "comet_bucket_movements_total",
            "Transfer-bucket movements applied, by type",
            ["credit", "debit"]
                .into_iter()
                .map(|t| vec![("type", t.to_owned())]),
        );
        export_at_zero(
            Counter,
            "comet_bucket_low_balance_total",
            "Low-balance crossings of transfer buckets (events emitted), by cause",
            ["movement", "threshold", "create"]
                .into_iter()
                .map(|c| vec![("cause", c.to_owned())]),
        );
        metrics::gauge!("comet_argon2_in_flight").increment(0.0);
    });
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // a Redis that lost the blocked projects' markers gets them back
    tokio::spawn(project_state::refill(state.clone()));
    // the inbox's one pub/sub connection of this process
    match state.settings.redis_client() {
        Ok(client) => {
            let prefix = state.settings.redis.prefix.clone();
            tokio::spawn(Arc::clone(&state.live).run(client, prefix));
        }
        Err(e) => tracing::error!(error = %e, "inbox pub/sub not started: bad REDIS_URL"),
    }
    let live = Arc::clone(&state.live);
    // projects changed on other processes leave this one's settings cache
    tokio::spawn(project_settings::listen(state.clone()));
    // connect info: the client address for per-IP login rate limits
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // open streams never finish by themselves: end them, or the drain waits forever
            live.close();
        })
        .await
}

/// How long the API waits for Postgres at start-up before giving up on migrations.
pub const MIGRATE_WAIT: Duration = Duration::from_secs(30);
