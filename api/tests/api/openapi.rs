//! The OpenAPI document and the served routes are the same set: a documented route that is not
//! served fails one test, a served route that is not documented (registered outside utoipa-axum's
//! `routes!`) fails another.

use std::path::{Path, PathBuf};

use reqwest::{StatusCode, header};

use crate::helpers::{TestApp, content_type, json_with_status, operations, send, served_spec};

/// Operations that are public on purpose (load balancers, Prometheus, API clients' tooling).
const PUBLIC: &[&str] = &[
    "/health",
    "/ready",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/auth/login",
    "/api/v1/invitations/accept",
];

/// Routes any valid token may call: they declare `bearer` with no scope.
const ANY_TOKEN: &[&str] = &[
    "/api/v1/auth/logout",
    "/api/v1/users/me",
    "/api/v1/projects/current",
];

#[tokio::test]
async fn the_openapi_document_is_json_of_version_3() {
    let app = TestApp::spawn().await;

    let resp = app.openapi().await;

    let content_type = content_type(&resp);
    let spec = json_with_status(resp, StatusCode::OK).await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let version = spec["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, got {version}");
    assert!(spec["info"]["title"].is_string());
    assert!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer",
        "the bearer scheme is declared: {:#}",
        spec["components"]["securitySchemes"]
    );
    assert!(!operations(&spec).is_empty());
    // the served document is the one the crate builds
    assert_eq!(
        spec,
        serde_json::to_value(comet_api::openapi()).expect("serialisable")
    );
}

#[tokio::test]
async fn every_documented_route_is_served_and_answers_a_documented_status() {
    let app = TestApp::spawn().await;
    let spec = served_spec(&app).await;
    let token = app.admin_token();

    for op in operations(&spec) {
        let resp = send(op.request(&app, Some(&token))).await;

        let status = resp.status();
        let body: serde_json::Value = if op.path == "/metrics" {
            serde_json::Value::Null
        } else {
            resp.json().await.unwrap_or_default()
        };
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{op} is documented but not served"
        );
        assert_ne!(
            body["error"]["code"], "route_not_found",
            "{op} is documented but not served"
        );
        assert!(
            op.responses.contains(&status.as_u16().to_string()),
            "{op} answered {status}, which it does not document ({:?}): {body}",
            op.responses
        );
    }
}

#[tokio::test]
async fn every_operation_but_the_public_ones_declares_a_bearer_permission() {
    let spec = serde_json::to_value(comet_api::openapi()).expect("serialisable");

    for op in operations(&spec) {
        if PUBLIC.contains(&op.path.as_str()) {
            assert!(op.bearer_scopes.is_none(), "{op} is public and says so");
            continue;
        }
        let scopes = op
            .bearer_scopes
            .as_ref()
            .unwrap_or_else(|| panic!("{op} declares no bearer security requirement"));
        if ANY_TOKEN.contains(&op.path.as_str()) {
            assert!(scopes.is_empty(), "{op} needs only a valid token");
            assert!(
                op.responses.iter().any(|r| r == "401"),
                "{op} documents its 401"
            );
            continue;
        }
        assert!(!scopes.is_empty(), "{op} names the permission it needs");
        for scope in scopes {
            assert!(
                comet_api::auth::ALL.contains(&scope.as_str()),
                "{op} needs {scope}, which is not a permission the API knows"
            );
        }
        for status in ["401", "403"] {
            assert!(
                op.responses.iter().any(|r| r == status),
                "{op} documents its {status}"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read api/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `line` calls one of axum's own routing methods, or builds a plain `axum::Router`,
/// which would serve routes that utoipa-axum never sees.
fn registers_undocumented_routes(line: &str) -> bool {
    const CALLS: &[&str] = &[".route(", ".route_service(", ".nest(", ".nest_service("];
    if CALLS.iter().any(|c| line.contains(c)) || line.contains("axum::routing") {
        return true;
    }
    // `Router::new(` not preceded by an identifier (so `OpenApiRouter::new(` is fine)
    line.match_indices("Router::new(").any(|(i, _)| {
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn the_scanner_spots_plain_axum_routes() {
    assert!(registers_undocumented_routes(r#"    .route("/x", get(x))"#));
    assert!(registers_undocumented_routes("let r = Router::new();"));
    assert!(registers_undocumented_routes("use axum::routing::get;"));
    assert!(registers_undocumented_routes(r#".nest("/v2", other)"#));
    assert!(!registers_undocumented_routes("OpenApiRouter::new()"));
    assert!(!registers_undocumented_routes(".routes(routes!(get_job))"));
    assert!(!registers_undocumented_routes(".fallback(handler)"));
}

#[test]
fn no_route_is_registered_outside_utoipa_axum() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("lib.rs")),
        "the scan found the crate's sources"
    );

    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if registers_undocumented_routes(line) {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }

    assert!(
        offenders.is_empty(),
        "routes registered outside utoipa-axum's `routes!` are missing from the OpenAPI \
         document:\n{}",
        offenders.join("\n")
    );
}

/// The operation's path with every parameter replaced by `value`.
fn with_params(path: &str, value: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                value
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_status_a_route_answers_is_documented() {
    let app = TestApp::spawn().await;
    let down = TestApp::spawn_with(|s| s.redis.url = "redis://127.0.0.1:1".into()).await;
    let spec = served_spec(&app).await;
    let token = app.admin_token();
    let mut undocumented = Vec::new();

    for op in operations(&spec) {
        let mut answers = Vec::new();
        let authed =
            |app: &TestApp, path: &str| app.request(op.method.clone(), path).bearer_auth(&token);
        if op.path.contains('{') {
            let path = with_params(&op.path, "not-a-uuid");
            let mut req = authed(&app, &path);
            if op.has_body {
                req = req.json(&serde_json::json!({}));
            }
            answers.push(("a malformed path parameter", send(req).await.status()));
        }
        if op.has_body {
            let path = &op.concrete_path;
            let no_type = authed(&app, path).body("{}");
            let malformed = authed(&app, path)
                .header(header::CONTENT_TYPE, "application/json")
                .body("{");
            let wrong_shape = authed(&app, path).json(&serde_json::json!({"noSuchField": 1}));
            answers.push(("a body without content type", send(no_type).await.status()));
            answers.push(("malformed JSON", send(malformed).await.status()));
            let oversized = authed(&app, path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(format!("{{\"k\": \"{}\"}}", "k".repeat(1024 * 1024 + 16)));
            answers.push(("JSON of the wrong shape", send(wrong_shape).await.status()));
            answers.push(("a body over 1 MiB", send(oversized).await.status()));
        }
        answers.push((
            "Redis down",
            send(op.request(&down, Some(&token))).await.status(),
        ));

        for (case, status) in answers {
            if !op.responses.contains(&status.as_u16().to_string()) {
                undocumented.push(format!(
                    "{op}: {case} → {status} (documented: {:?})",
                    op.responses
                ));
            }
        }
    }

    assert!(
        undocumented.is_empty(),
        "statuses the API answers but its OpenAPI document does not list:\n{}",
        undocumented.join("\n")
    );
}
