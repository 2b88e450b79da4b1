//! Login limits that keep brute force out without handing strangers a lock-out: failures are
//! limited per (email, client) strictly and per email loosely, and a client that logged in as
//! the email before is not held back by other clients' failures.

use reqwest::{Method, Response, StatusCode};
use serde_json::json;
use shared::config::RateLimit;

use crate::helpers::{PASSWORD, TestApp, send};

/// An API believing `X-Forwarded-For` from loopback (each test client picks its address), with
/// the active user `ada@example.com`.
async fn app_with(per_email_ip: u64, per_email: u64) -> TestApp {
    let app = TestApp::spawn_with(|s| {
        s.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a CIDR")];
        s.auth.login_per_email_ip = RateLimit::per_secs(per_email_ip, 300);
        s.auth.login_per_email = RateLimit::per_secs(per_email, 3600);
    })
    .await;
    app.active_user(app.project_id(), "ada@example.com", "member")
        .await;
    app
}

async fn login_from(app: &TestApp, ip: &str, password: &str) -> Response {
    send(
        app.request(Method::POST, "/api/v1/auth/login")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": "ada@example.com", "password": password})),
    )
    .await
}

#[tokio::test]
async fn a_stranger_failing_from_one_address_cannot_stop_the_owner_logging_in_from_another() {
    let app = app_with(3, 100).await;
    for _ in 0..3 {
        let resp = login_from(&app, "203.0.113.66", "guess").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // the stranger's address is now refused for this email, even with the right password
    let stranger = login_from(&app, "203.0.113.66", PASSWORD).await;
    assert_eq!(stranger.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(stranger.headers().contains_key("retry-after"));

    // the owner, from an address never seen before, is not
    let owner = login_from(&app, "198.51.100.7", PASSWORD).await;
    assert_eq!(owner.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_guess_spread_over_many_addresses_is_bounded_per_email_but_the_owners_client_gets_in() {
    let app = app_with(10, 5).await;
    // the owner logged in from home before
    assert_eq!(
        login_from(&app, "198.51.100.7", PASSWORD).await.status(),
        StatusCode::OK
    );

    for i in 1..=5 {
        let resp = login_from(&app, &format!("203.0.113.{i}"), "guess").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    // the email's hourly failure budget is spent: a new address is refused, guess or not
    for password in ["guess", PASSWORD] {
        let resp = login_from(&app, "203.0.113.99", password).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // the owner's known address still gets in
    assert_eq!(
        login_from(&app, "198.51.100.7", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn successful_logins_do_not_count_against_the_failure_limits() {
    let app = app_with(2, 2).await;
    for _ in 0..5 {
        assert_eq!(
            login_from(&app, "198.51.100.7", PASSWORD).await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_login_answer_carrying_a_token_is_never_cached() {
    let app = app_with(10, 100).await;
    let resp = login_from(&app, "198.51.100.7", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
}

#[tokio::test]
async fn failed_logins_naming_no_user_of_a_project_fill_its_audit_log_with_one_entry_a_minute() {
    let app = app_with(100, 1000).await;
    let project = app.project_id();
    for i in 0..5 {
        let resp = send(
            app.request(Method::POST, "/api/v1/auth/login")
                .header("x-request-id", format!("attacker-chosen-{i}"))
                .json(&json!({
                    "email": format!("nobody{i}@example.com"),
                    "password": "guess",
                    "projectId": project,
                })),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let rows: Vec<(serde_json::Value, Option<String>)> = sqlx::query_as(
        "SELECT metadata, request_id FROM audit_log
         WHERE project_id = $1 AND action = 'login.failed'",
    )
    .bind(project)
    .fetch_all(&app.env.pool)
    .await
    .expect("audit rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0["reason"], "unknown_user");
    assert_eq!(rows[0].0["collapsedBefore"], 0);
    assert_eq!(rows[0].1, None, "no caller-chosen request id is stored");
}
