//! Authentication (401 with `WWW-Authenticate: Bearer`) and permissions (403 naming the
//! permission), checked for every secured route of the OpenAPI document.

use reqwest::{Method, Response, StatusCode, header};
use serde_json::json;

use crate::helpers::{
    TestApp, all_permissions, assert_error, base64url, operations, send, served_spec,
};

/// Asserts a 401 envelope with the Bearer challenge.
async fn assert_unauthorized(resp: Response) {
    let challenge = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(challenge.as_deref(), Some("Bearer"), "WWW-Authenticate");
}

#[tokio::test]
async fn a_request_without_a_token_gets_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;

    let resp = send(app.request(Method::GET, "/api/v1/queues")).await;

    assert_unauthorized(resp).await;
}

#[tokio::test]
async fn a_malformed_authorization_header_gets_401() {
    let app = TestApp::spawn().await;
    let valid = app.admin_token();

    for value in [
        "".to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer    ".to_owned(),
        format!("Basic {valid}"),
        format!("Token {valid}"),
        valid.clone(),
        "Bearer not-a-jwt".to_owned(),
        "Bearer a.b.c".to_owned(),
        format!("Bearer {valid}x"),
    ] {
        let resp = send(
            app.request(Method::GET, "/api/v1/queues")
                .header(header::AUTHORIZATION, &value),
        )
        .await;

        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "header {value:?}");
        assert_unauthorized(resp).await;
    }
}

#[tokio::test]
async fn an_expired_token_gets_401() {
    let app = TestApp::spawn().await;
    // beyond the verifier's few seconds of leeway
    let expired = app.expired_token(120);

    let resp = app.queues(&expired).await;

    assert_unauthorized(resp).await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_gets_401() {
    let app = TestApp::spawn().await;

    let resp = app.queues(&app.foreign_token()).await;

    assert_unauthorized(resp).await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_gets_401() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({
        "sub": "attacker", "projectId": app.project_id(), "permissions": ["*"],
        "jti": uuid::Uuid::new_v4(), "iat": now, "exp": now + 600,
    });
    let payload = base64url(claims.to_string().as_bytes());

    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let resp = app.queues(&token).await;

        assert_unauthorized(resp).await;
    }
}

#[tokio::test]
async fn a_token_without_the_routes_permission_gets_403_naming_it() {
    let app = TestApp::spawn().await;
    let reader = app.token(&["jobs:read"]);

    let resp = app.queues(&reader).await;

    let error = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("queues:read")),
        "the message names the permission: {error}"
    );
}

#[tokio::test]
async fn a_read_only_token_cannot_enqueue_but_can_read() {
    let app = TestApp::spawn().await;
    let reader = app.token(&["jobs:read"]);
    let id = app.enqueue_ping(&json!({})).await;

    let ping = app.ping(&json!({}), &reader).await;
    let get = app.get_job(&id, &reader).await;

    let error = assert_error(ping, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("jobs:write")
    );
    assert_eq!(get.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_wildcard_token_grants_every_project_permission_but_no_platform_one() {
    let app = TestApp::spawn().await;
    let star = app.token(&["*"]);

    let roles = app.get_roles(&star).await;
    let ping = app.ping(&json!({}), &star).await;
    let queues = app.queues(&star).await;
    let pause = send(app.authed(Method::POST, "/api/v1/queues/ping/pause", &star)).await;

    assert_eq!(roles.status(), StatusCode::OK);
    assert_eq!(ping.status(), StatusCode::ACCEPTED);
    // queues:read is a project permission (the project's part of each queue) ...
    assert_eq!(queues.status(), StatusCode::OK);
    // ... pausing a queue stops every project's jobs: a platform token's, never a project's
    let error = assert_error(pause, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(error.to_string().contains("queues:write"), "{error}");
}

#[tokio::test]
async fn every_secured_route_refuses_a_token_lacking_its_scope_with_403() {
    let app = TestApp::spawn().await;
    let spec = served_spec(&app).await;
    let secured: Vec<_> = operations(&spec)
        .into_iter()
        .filter(|op| op.bearer_scopes.is_some())
        .collect();
    assert!(!secured.is_empty(), "the document has secured routes");

    for op in &secured {
        for scope in op.bearer_scopes.as_deref().unwrap_or_default() {
            // every other permission, so only this scope is missing
            let others: Vec<&str> = all_permissions()
                .into_iter()
                .filter(|p| p != scope)
                .collect();
            let token = app.token(&others);

            let resp = send(op.request(&app, Some(&token))).await;

            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{op} without {scope}");
            let error = assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
            assert!(
                error["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(scope.as_str())),
                "{op}: the 403 names {scope}: {error}"
            );
        }
    }
}

#[tokio::test]
async fn every_secured_route_refuses_a_request_without_a_token_with_401() {
    let app = TestApp::spawn().await;
    let spec = served_spec(&app).await;
    let secured: Vec<_> = operations(&spec)
        .into_iter()
        .filter(|op| op.bearer_scopes.is_some())
        .collect();
    assert!(!secured.is_empty(), "the document has secured routes");

    for op in &secured {
        let resp = send(op.request(&app, None)).await;

        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{op} without a token"
        );
        assert_unauthorized(resp).await;
        // and an expired token is no better than none
        let resp = send(op.request(&app, Some(&app.expired_token(120)))).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{op} with an expired token"
        );
    }
}

#[tokio::test]
async fn every_secured_route_lets_a_token_with_its_scopes_through_auth() {
    let app = TestApp::spawn().await;
    let spec = served_spec(&app).await;
    app.active_user(app.project_id(), "self@example.com", "member")
        .await;
    let user = app.token_of("self@example.com").await;

    for op in operations(&spec) {
        let Some(scopes) = &op.bearer_scopes else {
            continue;
        };
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        // a platform permission comes only with a platform token, and a view that spans every
        // project says it needs one
        let token = if op.platform_token
            || scopes
                .iter()
                .any(|s| shared::permissions::is_platform_only(s))
        {
            app.platform_token_with(&scopes)
        } else {
            app.token(&scopes)
        };

        // routes about the caller's own user (no scope) need a user's token
        let token = if scopes.is_empty() && op.to_string().contains("/users/me") {
            user.clone()
        } else {
            token
        };

        let resp = send(op.request(&app, Some(&token))).await;

        // the documented scopes are enough: whatever the answer, it is not an auth failure
        assert!(
            ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&resp.status()),
            "{op} with exactly {scopes:?} got {}",
            resp.status()
        );
    }
}

#[tokio::test]
async fn a_route_documented_as_needing_a_platform_token_refuses_a_projects_token_with_its_scopes() {
    let app = TestApp::spawn().await;
    let spec = served_spec(&app).await;
    let mut seen = 0;
    for op in operations(&spec).into_iter().filter(|op| op.platform_token) {
        let scopes: Vec<&str> = op
            .bearer_scopes
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let resp = send(op.request(&app, Some(&app.token(&scopes)))).await;
        assert_eq!(
            resp.status(),
            StatusCode::FORBIDDEN,
            "{op} with a project's {scopes:?}"
        );
        seen += 1;
    }
    assert_eq!(seen, 4, "workers, outbox, series, busiest projects");
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_case_insensitively() {
    let app = TestApp::spawn().await;
    let token = app.platform_token_with(&["queues:read"]);

    // RFC 9110 §11.1: the authentication scheme is a case-insensitive token
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        let resp = send(
            app.request(Method::GET, "/api/v1/queues")
                .header(header::AUTHORIZATION, format!("{scheme} {token}")),
        )
        .await;

        assert_eq!(resp.status(), StatusCode::OK, "scheme {scheme:?}");
    }
}
