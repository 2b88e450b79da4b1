//! The JSON envelope of errors, body rejections and request ids.

use reqwest::{Method, StatusCode, header};
use serde_json::json;

use crate::helpers::{TestApp, assert_error, request_id_of, send};

#[tokio::test]
async fn an_unknown_route_returns_404_route_not_found_in_the_envelope() {
    let app = TestApp::spawn().await;

    let resp = send(app.request(Method::GET, "/api/v1/nothing-here")).await;

    let error = assert_error(resp, StatusCode::NOT_FOUND, "route_not_found").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("GET /api/v1/nothing-here")),
        "the message names the route: {error}"
    );
}

#[tokio::test]
async fn a_known_route_with_the_wrong_method_returns_405_in_the_envelope() {
    let app = TestApp::spawn().await;

    let resp = send(app.request(Method::DELETE, "/health")).await;

    let allow = resp
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_error(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    // RFC 9110 §15.5.6: a 405 carries Allow with the methods the route serves
    let allow = allow.expect("a 405 carries an Allow header");
    assert!(allow.contains("GET"), "Allow lists GET: {allow}");
}

#[tokio::test]
async fn a_post_to_a_get_only_api_route_returns_405_not_404() {
    let app = TestApp::spawn().await;

    let resp = send(app.authed(Method::DELETE, "/api/v1/queues", &app.admin_token())).await;

    assert_error(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn malformed_json_returns_400_bad_request() {
    let app = TestApp::spawn().await;

    let resp = send(
        app.authed(Method::POST, "/api/v1/jobs/ping", &app.admin_token())
            .header(header::CONTENT_TYPE, "application/json")
            .body("{\"sleepMs\": 1,"),
    )
    .await;

    assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn json_of_the_wrong_shape_returns_422_validation_failed() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    for body in [
        json!({"sleepMs": "soon"}),
        json!({"priority": 40000}),
        json!({"failPermanently": "yes"}),
        json!([1, 2, 3]),
        json!("ping"),
    ] {
        let resp = app.ping(&body, &token).await;

        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            error["details"].is_array(),
            "{body}: the details say what is wrong: {error}"
        );
    }
}

#[tokio::test]
async fn an_unknown_field_returns_422_validation_failed_naming_it() {
    let app = TestApp::spawn().await;

    let resp = app
        .ping(&json!({"sleepMs": 1, "colour": "red"}), &app.admin_token())
        .await;

    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        error["details"].to_string().contains("colour"),
        "the details name the unknown field: {error}"
    );
}

#[tokio::test]
async fn a_body_without_a_json_content_type_returns_415() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    let missing = send(
        app.authed(Method::POST, "/api/v1/jobs/ping", &token)
            .body("{}"),
    )
    .await;
    let wrong = send(
        app.authed(Method::POST, "/api/v1/jobs/ping", &token)
            .header(header::CONTENT_TYPE, "text/plain")
            .body("{}"),
    )
    .await;

    assert_error(
        missing,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        wrong,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_one_mebibyte_returns_413() {
    let app = TestApp::spawn().await;
    // valid JSON, so only its size can be refused
    let body = format!(
        "{{\"idempotencyKey\": \"{}\"}}",
        "k".repeat(1024 * 1024 + 16)
    );

    let resp = send(
        app.authed(Method::POST, "/api/v1/jobs/ping", &app.admin_token())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body),
    )
    .await;

    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn every_error_carries_the_responses_request_id() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let reader = app.token(&["jobs:read"]);
    let ping = "/api/v1/jobs/ping";

    let cases = [
        (app.request(Method::GET, "/nope"), StatusCode::NOT_FOUND),
        (
            app.request(Method::PUT, "/ready"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            app.request(Method::GET, "/api/v1/queues"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            app.authed(Method::GET, "/api/v1/queues", &reader),
            StatusCode::FORBIDDEN,
        ),
        (
            app.authed(Method::GET, "/api/v1/jobs/x", &token),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.authed(
                Method::GET,
                &format!("/api/v1/jobs/{}", uuid::Uuid::new_v4()),
                &token,
            ),
            StatusCode::NOT_FOUND,
        ),
        (
            app.authed(Method::POST, ping, &token)
                .json(&json!({"priority": 5000})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            app.authed(Method::POST, ping, &token).body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];

    for (req, status) in cases {
        let resp = send(req).await;
        let id = request_id_of(&resp);
        assert_eq!(resp.status(), status);
        let body: serde_json::Value = resp.json().await.expect("a JSON error");
        assert_eq!(body["error"]["requestId"], id.as_str(), "{status}: {body}");
        assert!(!id.is_empty());
    }
}

#[tokio::test]
async fn a_sane_caller_request_id_is_echoed_in_the_header_and_the_error() {
    let app = TestApp::spawn().await;
    let mine = "client-42_retry.3:abc";

    let ok = send(
        app.request(Method::GET, "/health")
            .header("x-request-id", mine),
    )
    .await;
    let err = send(
        app.request(Method::GET, "/nope")
            .header("x-request-id", mine),
    )
    .await;

    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(request_id_of(&ok), mine);
    assert_eq!(request_id_of(&err), mine);
    let error = assert_error(err, StatusCode::NOT_FOUND, "route_not_found").await;
    assert_eq!(error["requestId"], mine);
}

#[tokio::test]
async fn an_insane_caller_request_id_is_replaced_by_a_fresh_uuid() {
    let app = TestApp::spawn().await;

    for insane in [
        "has spaces in it",
        "<script>alert(1)</script>",
        &"x".repeat(129),
    ] {
        let resp = send(
            app.request(Method::GET, "/nope")
                .header("x-request-id", insane),
        )
        .await;

        let id = request_id_of(&resp);
        assert_ne!(id, insane);
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "the replacement is a UUID: {id}"
        );
        let error = assert_error(resp, StatusCode::NOT_FOUND, "route_not_found").await;
        assert_eq!(error["requestId"], id.as_str());
    }
}

#[tokio::test]
async fn requests_without_an_id_get_distinct_ids() {
    let app = TestApp::spawn().await;

    let a = request_id_of(&app.health().await);
    let b = request_id_of(&app.health().await);

    assert_ne!(a, b);
    assert!(uuid::Uuid::parse_str(&a).is_ok(), "a UUID: {a}");
}

#[tokio::test]
async fn a_request_that_times_out_gets_503_in_the_envelope() {
    // a look-up that falls through to an unreachable Postgres waits for the pool's 5 s acquire
    // timeout, well past this 1 s request timeout
    let env = shared::testing::TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.database.url = "postgres://postgres@127.0.0.1:1/comet".into();
    settings.http.request_timeout = std::time::Duration::from_secs(1);
    let app = TestApp::serve(env, settings).await;

    let started = std::time::Instant::now();
    let resp = app
        .get_job(&crate::helpers::random_id(), &app.admin_token())
        .await;

    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(900),
        "premise: the look-up outlasts the request timeout (answered in {elapsed:?})"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(4),
        "the request timeout cut the request short (answered in {elapsed:?})"
    );
    assert_error(resp, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
}
