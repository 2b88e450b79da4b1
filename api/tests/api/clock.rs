//! One clock for revocation: a token's issue time and the "tokens issued before T are revoked"
//! marker both come from Redis `TIME`, so API hosts whose clocks disagree still agree on which
//! tokens a role change revoked. Each API here is a real process with its wall clock shifted
//! by libfaketime.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ApiProcess, PASSWORD, TestApp};

/// Far more skew than NTP allows, well inside the tokens' lifetime.
const AHEAD: &str = "+90s";
const BEHIND: &str = "-90s";

async fn call(api: &ApiProcess, method: Method, path: &str, token: Option<&str>) -> StatusCode {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", api.address));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request").status()
}

async fn login(api: &ApiProcess, email: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", api.address))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    body["data"]["accessToken"]
        .as_str()
        .expect("a token")
        .to_owned()
}

async fn me(api: &ApiProcess, token: &str) -> StatusCode {
    call(api, Method::GET, "/api/v1/users/me", Some(token)).await
}

#[tokio::test]
async fn revocation_holds_between_api_processes_whose_clocks_disagree() {
    let app = TestApp::spawn().await;
    let user = app
        .active_user(app.project_id(), "skew@example.com", "member")
        .await;
    // another active admin, so that taking the role back passes the last-admin guard
    app.active_user(app.project_id(), "keeper@example.com", "admin")
        .await;
    let admin_role = app.role_id(app.project_id(), "admin").await;
    let admin = app.admin_token();
    let ahead = ApiProcess::spawn_with_clock(&app.env, AHEAD).await;
    let behind = ApiProcess::spawn_with_clock(&app.env, BEHIND).await;
    // A token issued by the host that is ahead, revoked by a role change on the host that is
    // behind: with each host's own clock the marker (T - 90 s) would fall before the token's
    // issue time (T + 90 s) and the revoked token would still pass.
    let issued_ahead = login(&ahead, "skew@example.com").await;
    assert_eq!(me(&behind, &issued_ahead).await, StatusCode::OK);
    let added = reqwest::Client::new()
        .post(format!("{}/api/v1/users/{user}/roles", behind.address))
        .bearer_auth(&admin)
        .json(&json!({"roleId": admin_role}))
        .send()
        .await
        .expect("add a role");
    assert_eq!(added.status(), StatusCode::OK);
    for api in [&ahead, &behind] {
        assert_eq!(me(api, &issued_ahead).await, StatusCode::UNAUTHORIZED);
    }

    // A revocation by the host that is ahead, then a fresh login on the host that is behind:
    // with each host's own clock the new token (T - 90 s) would look older than the marker
    // (T + 90 s) and the user could not work at all.
    let path = format!("/api/v1/users/{user}/roles/{admin_role}");
    let removed = call(&ahead, Method::DELETE, &path, Some(&admin)).await;
    assert_eq!(removed, StatusCode::OK);
    let fresh = login(&behind, "skew@example.com").await;
    for api in [&ahead, &behind] {
        assert_eq!(me(api, &fresh).await, StatusCode::OK);
    }
}
