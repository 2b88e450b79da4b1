//! `/health`, `/ready`, `/metrics`, and how the API answers while a dependency is down.

use reqwest::StatusCode;
use serde_json::json;
use shared::testing::TestEnv;

use crate::helpers::{TestApp, assert_error, content_type, json_with_status, random_id};

/// A Redis URL where nothing listens.
const DEAD_REDIS: &str = "redis://127.0.0.1:1";
/// A Postgres URL where nothing listens.
const DEAD_POSTGRES: &str = "postgres://postgres@127.0.0.1:1/comet";

/// The API over an environment whose Redis is unreachable.
async fn app_without_redis() -> TestApp {
    TestApp::spawn_with(|s| s.redis.url = DEAD_REDIS.into()).await
}

/// The API pointed at an unreachable Postgres (the environment keeps a real one for cleanup).
async fn app_without_postgres() -> TestApp {
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.database.url = DEAD_POSTGRES.into();
    TestApp::serve(env, settings).await
}

#[tokio::test]
async fn health_returns_200_ok() {
    let app = TestApp::spawn().await;

    let body = json_with_status(app.health().await, StatusCode::OK).await;

    assert_eq!(body, json!({"data": {"status": "ok"}}));
}

#[tokio::test]
async fn ready_returns_200_when_postgres_and_redis_answer() {
    let app = TestApp::spawn().await;

    let body = json_with_status(app.ready().await, StatusCode::OK).await;

    assert_eq!(body, json!({"data": {"postgres": true, "redis": true}}));
}

#[tokio::test]
async fn ready_returns_503_naming_redis_when_redis_is_unreachable() {
    let app = app_without_redis().await;

    let body = json_with_status(app.ready().await, StatusCode::SERVICE_UNAVAILABLE).await;

    assert_eq!(body, json!({"data": {"postgres": true, "redis": false}}));
}

#[tokio::test]
async fn ready_returns_503_naming_postgres_when_postgres_is_unreachable() {
    let app = app_without_postgres().await;

    let body = json_with_status(app.ready().await, StatusCode::SERVICE_UNAVAILABLE).await;

    assert_eq!(body, json!({"data": {"postgres": false, "redis": true}}));
}

#[tokio::test]
async fn job_and_queue_routes_return_503_never_500_while_redis_is_unreachable() {
    let app = app_without_redis().await;
    let token = app.admin_token();

    let ping = app.ping(&json!({}), &token).await;
    let get = app.get_job(&random_id(), &token).await;
    let retry = app.retry_job(&random_id(), &token).await;
    let cancel = app.cancel_job(&random_id(), &token).await;
    let queues = app.queues(&app.platform_token_with(&["queues:read"])).await;

    for resp in [ping, get, retry, cancel, queues] {
        let url = resp.url().path().to_owned();
        let error =
            assert_error(resp, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
        assert!(
            !error["message"]
                .as_str()
                .unwrap_or("")
                .contains("127.0.0.1"),
            "{url}: the message does not leak connection details: {error}"
        );
    }
}

#[tokio::test]
async fn looking_up_a_job_while_postgres_is_unreachable_returns_503() {
    let app = app_without_postgres().await;

    // not in Redis, so the look-up falls through to the Postgres outbox
    let resp = app.get_job(&random_id(), &app.admin_token()).await;

    assert_error(resp, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
}

#[tokio::test]
async fn health_stays_200_while_dependencies_are_down() {
    let app = app_without_redis().await;

    let resp = app.health().await;

    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_http_requests_in_the_prometheus_format() {
    let app = TestApp::spawn().await;
    assert_eq!(app.health().await.status(), StatusCode::OK);

    let resp = app.metrics().await;

    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = content_type(&resp);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.expect("a body");
    let health_line = text
        .lines()
        .find(|l| {
            l.starts_with("comet_http_requests_total{")
                && l.contains(r#"route="/health""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("a counter of GET /health 200:\n{text}"));
    let count: f64 = health_line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(count >= 1.0, "{health_line}");
    assert!(
        text.contains("comet_http_request_duration_seconds"),
        "{text}"
    );
}

#[tokio::test]
async fn unmatched_requests_are_counted_under_one_label_not_their_path() {
    let app = TestApp::spawn().await;
    let path = format!("/probe-{}", random_id());
    assert_eq!(
        crate::helpers::send(app.request(reqwest::Method::GET, &path))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let text = app.metrics().await.text().await.expect("a body");

    // a label per unknown path would let any client blow up the metric's cardinality
    assert!(!text.contains(&path), "the path is not a label:\n{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
}
