//! Inputs that used to answer 5xx or leave a request half-done (the outside audit's findings):
//! each answers a clear status and does what it says.

use chrono::Utc;
use reqwest::{Method, StatusCode};
use shared::auth::Claims;

use crate::helpers::{TestApp, all_permissions, json_with_status};

#[tokio::test]
async fn an_empty_state_or_a_page_past_the_end_lists_no_jobs_instead_of_failing() {
    let app = TestApp::spawn().await;
    let token = app.platform_token_with(&["queues:read"]);
    for query in ["?state=dead", "?state=waiting&page=50"] {
        let body = json_with_status(
            app.get_queue_jobs(&token, "ping", query).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(body["data"], serde_json::json!([]), "{query}: {body}");
    }
}

#[tokio::test]
async fn logging_out_a_token_that_expires_in_the_far_future_revokes_it() {
    let app = TestApp::spawn().await;
    // a token minted with an absurd lifetime (`comet-api token --ttl`): 3 million millennia
    let mut claims = Claims::new(
        "ops-robot",
        app.project_id(),
        all_permissions().iter().map(|p| (*p).to_owned()).collect(),
        3600,
    );
    claims.exp = Utc::now().timestamp() + 100_000_000_000_000_000;
    let token = shared::auth::mint(&app.env.settings.auth.jwt_secret, &claims).expect("mint");
    assert_eq!(app.get_roles(&token).await.status(), StatusCode::OK);

    let out = app.logout(&token).await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);

    let after = app.get_roles(&token).await;
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "the token still works"
    );
}

/// This test process's resident memory, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        / 1024
}

#[tokio::test]
async fn two_hundred_concurrent_bogus_invitation_acceptances_cost_no_memory_and_a_real_one_succeeds()
 {
    // behind a trusted proxy, each request comes from its own forwarded client, so the per-IP
    // limit does not hide what the route itself costs
    let app = TestApp::spawn_with(|s| {
        s.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a CIDR")];
    })
    .await;
    let (_, admin) = app.admin("boss@example.com").await;
    let invited = app.invite_member(&admin, "new@example.com").await;
    let user = invited["user"]["id"].as_str().expect("user id").to_owned();
    let token = app.last_invitation_token(&user).await;

    let before = rss_mib();
    let requests = (0..200u32).map(|i| {
        app.request(Method::POST, "/api/v1/invitations/accept")
            .header(
                "x-forwarded-for",
                format!("10.9.{}.{}", i / 250, i % 250 + 1),
            )
            .json(&serde_json::json!({
                "token": format!("bogus-{i}-{}", "x".repeat(40)),
                "password": "a perfectly fine password",
            }))
            .send()
    });
    let answers = futures::future::join_all(requests).await;
    let grown = rss_mib().saturating_sub(before);
    for answer in answers {
        assert_eq!(answer.expect("an answer").status(), StatusCode::NOT_FOUND);
    }
    // each Argon2 hash takes 19 MiB: 200 of them at once took gigabytes before
    assert!(grown < 150, "the process grew by {grown} MiB");

    let started = std::time::Instant::now();
    let accepted = app.accept(&token, "a perfectly fine password").await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn invitation_acceptances_are_rate_limited_per_client_ip() {
    let app = TestApp::spawn_with(|s| {
        s.auth.accept_per_ip = shared::config::RateLimit::per_secs(3, 60);
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = app
            .accept(
                &format!("bogus-token-{i}-{}", "y".repeat(40)),
                "a perfectly fine password",
            )
            .await;
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn a_job_cannot_be_scheduled_past_the_horizon() {
    let app = TestApp::spawn_with(|s| {
        s.queue.max_delay = std::time::Duration::from_secs(86_400);
    })
    .await;
    let token = app.admin_token();
    let far = (Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let near = (Utc::now() + chrono::Duration::hours(2)).to_rfc3339();

    let refused = app.ping(&serde_json::json!({ "runAt": far }), &token).await;
    let body = json_with_status(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["error"]["details"][0]["field"], "runAt", "{body}");
    let accepted = app
        .ping(&serde_json::json!({ "runAt": near }), &token)
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    // years beyond 9999 are not RFC 3339 at all
    let absurd = app
        .ping(
            &serde_json::json!({ "runAt": "+262142-01-01T00:00:00Z" }),
            &token,
        )
        .await;
    assert_eq!(absurd.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_project_past_its_enqueue_rate_gets_429_and_others_do_not() {
    let app = TestApp::spawn_with(|s| {
        s.queue.enqueue_per_project = shared::config::RateLimit::per_secs(3, 60);
    })
    .await;
    let token = app.admin_token();
    for _ in 0..3 {
        let resp = app.ping(&serde_json::json!({}), &token).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let limited = app.ping(&serde_json::json!({}), &token).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));

    let other = app.env.other_project("other").await;
    let theirs = app
        .ping(&serde_json::json!({}), &app.admin_token_for(other))
        .await;
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_forged_cursor_with_a_time_postgres_cannot_hold_is_a_422() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    // year ~ -100,000: a valid chrono time, before the earliest Postgres can hold (4713 BC)
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}.{}",
        -3_200_000_000_000_000_000i64,
        uuid::Uuid::nil().simple()
    ));
    let resp = app.get_users(&token, &format!("?after={forged}")).await;
    let body = json_with_status(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["error"]["details"][0]["field"], "after", "{body}");
}
