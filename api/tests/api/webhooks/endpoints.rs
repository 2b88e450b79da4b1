//! The endpoint routes: create (secret shown once), validation and the SSRF guard at save,
//! test messages that verify, rotation with its grace period, audit without secrets, tenancy
//! on every route.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Receiver, TestApp, assert_error, endpoint_body, error_fields, json_with_status, operations,
    send, served_spec, verifies,
};

#[tokio::test]
async fn an_endpoint_is_created_with_its_secret_shown_once_and_audited_without_it() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let created = app
        .endpoint(
            &token,
            &endpoint_body("https://hooks.example.com/in", &["billing.*"]),
        )
        .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["eventTypes"], json!(["billing.*"]));
    assert_eq!(created["enabled"], true);

    let got = json_with_status(
        send(app.authed(
            Method::GET,
            &format!("/api/v1/webhook-endpoints/{id}"),
            &token,
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(got["data"].get("secret").is_none(), "{got}");
    let list = json_with_status(
        send(app.authed(Method::GET, "/api/v1/webhook-endpoints", &token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&secret));

    // the stored secret is sealed, not the text
    let stored: String = sqlx::query_scalar(
        "SELECT secret_sealed FROM webhook_endpoints WHERE endpoint_id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.env.pool)
    .await
    .unwrap();
    assert!(!stored.contains(secret.trim_start_matches("whsec_")));

    let audit = app
        .audit_logs(&token, "?action=webhook_endpoint.created")
        .await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1, "{audit}");
    assert!(!audit.to_string().contains(&secret));
    assert_eq!(audit["data"][0]["targetId"], id);
}

#[tokio::test]
async fn invalid_fields_are_all_named() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let err = assert_error(
        app.create_endpoint(
            &token,
            &json!({"url": "ftp://x.example/", "eventTypes": ["a..b", "ok.*"],
                    "description": "x".repeat(501)}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields = error_fields(&err);
    assert_eq!(fields, ["url", "description", "eventTypes[0]"], "{err}");
    for url in ["https://user:pw@x.example/", "not a url"] {
        let err = assert_error(
            app.create_endpoint(&token, &endpoint_body(url, &[])).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(err["details"][0]["field"], "url", "{url}: {err}");
    }
}

#[tokio::test]
async fn without_the_flag_a_loopback_url_is_refused_at_save_naming_url() {
    let app = TestApp::spawn_with(|s| s.webhooks.allow_private = false).await;
    let token = app.admin_token();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
    ] {
        let err = assert_error(
            app.create_endpoint(&token, &endpoint_body(url, &[])).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(err["details"][0]["field"], "url", "{url}: {err}");
        assert!(
            err["details"][0]["message"]
                .as_str()
                .unwrap()
                .contains("public address"),
            "{url}: {err}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&app.env.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_test_message_is_signed_so_the_receiver_verifies_it_and_its_answer_is_reported() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let rx = Receiver::start().await;
    let ep = app
        .endpoint(&token, &endpoint_body(&rx.url("/ok"), &[]))
        .await;
    let secret = ep["secret"].as_str().unwrap();
    let id = ep["id"].as_str().unwrap();
    let res = json_with_status(app.test_endpoint(&token, id).await, StatusCode::OK).await;
    assert_eq!(res["data"]["delivered"], true, "{res}");
    assert_eq!(res["data"]["status"], 200);
    assert_eq!(res["data"]["responseBody"], "thanks");
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert!(verifies(secret, &got[0]));
    assert_eq!(
        got[0].header("webhook-id"),
        res["data"]["messageId"].as_str().unwrap()
    );
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "webhook.test");

    // a failing receiver's answer is reported, not an API error
    let put = json_with_status(
        send(
            app.authed(
                Method::PUT,
                &format!("/api/v1/webhook-endpoints/{id}"),
                &token,
            )
            .json(&endpoint_body(&rx.url("/status/410"), &[])),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(put["data"]["url"], rx.url("/status/410"));
    let res = json_with_status(app.test_endpoint(&token, id).await, StatusCode::OK).await;
    assert_eq!(res["data"]["delivered"], false, "{res}");
    assert_eq!(res["data"]["outcome"], "permanent");
    assert_eq!(res["data"]["status"], 410);
}

#[tokio::test]
async fn test_messages_are_rate_limited_per_project() {
    let app = TestApp::spawn_with(|s| {
        s.webhooks.test_rate = shared::config::RateLimit::per_secs(2, 60);
    })
    .await;
    let token = app.admin_token();
    let rx = Receiver::start().await;
    let ep = app
        .endpoint(&token, &endpoint_body(&rx.url("/ok"), &[]))
        .await;
    let id = ep["id"].as_str().unwrap();
    for _ in 0..2 {
        assert_eq!(app.test_endpoint(&token, id).await.status(), StatusCode::OK);
    }
    let resp = app.test_endpoint(&token, id).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(rx.received().len(), 2);
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_until_the_grace_period_ends() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let rx = Receiver::start().await;
    let ep = app
        .endpoint(&token, &endpoint_body(&rx.url("/ok"), &[]))
        .await;
    let (id, old) = (ep["id"].as_str().unwrap(), ep["secret"].as_str().unwrap());
    let rotated = json_with_status(
        app.rotate_endpoint_secret(&token, id, &json!({"graceSeconds": 2}))
            .await,
        StatusCode::OK,
    )
    .await;
    let new = rotated["data"]["secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(
        rotated["data"]["previousSecretExpiresAt"].is_string(),
        "{rotated}"
    );

    app.test_endpoint(&token, id).await;
    let first = rx.received().pop().unwrap();
    assert_eq!(first.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(new, &first) && verifies(old, &first));

    tokio::time::sleep(Duration::from_millis(2200)).await;
    app.test_endpoint(&token, id).await;
    let after = rx.received().pop().unwrap();
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert!(verifies(new, &after));
    assert!(!verifies(old, &after), "the old secret stopped signing");

    let audit = app
        .audit_logs(&token, "?action=webhook_endpoint.secret_rotated")
        .await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);
    assert!(!audit.to_string().contains(new) && !audit.to_string().contains(old));

    // a grace period past seven days is refused, naming the field
    let err = assert_error(
        app.rotate_endpoint_secret(&token, id, &json!({"graceSeconds": 604_801}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(err["details"][0]["field"], "graceSeconds");
}

#[tokio::test]
async fn updates_and_deletes_are_audited_with_what_changed() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let ep = app
        .endpoint(&token, &endpoint_body("https://a.example.com/", &[]))
        .await;
    let id = ep["id"].as_str().unwrap();
    let path = format!("/api/v1/webhook-endpoints/{id}");
    let mut body = endpoint_body("https://a.example.com/", &["x.*"]);
    body["enabled"] = json!(false);
    let put = json_with_status(
        send(app.authed(Method::PUT, &path, &token).json(&body)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(put["data"]["enabled"], false);
    assert!(put["data"]["disabledAt"].is_string());
    let audit = app
        .audit_logs(&token, "?action=webhook_endpoint.updated")
        .await;
    let changes = &audit["data"][0]["metadata"]["changes"];
    assert_eq!(changes["eventTypes"]["to"], json!(["x.*"]), "{audit}");
    assert_eq!(changes["enabled"]["from"], true);
    assert!(changes.get("url").is_none());
    assert_eq!(
        send(app.authed(Method::DELETE, &path, &token))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(app.authed(Method::GET, &path, &token)).await.status(),
        StatusCode::NOT_FOUND
    );
    let audit = app
        .audit_logs(&token, "?action=webhook_endpoint.deleted")
        .await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_routes_need_webhooks_manage() {
    let app = TestApp::spawn().await;
    let without = app.token(&["rule:read", "rule:write"]);
    assert_error(
        send(app.authed(Method::GET, "/api/v1/webhook-endpoints", &without)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let with = app.token(&["webhooks:manage"]);
    assert_eq!(
        send(app.authed(Method::GET, "/api/v1/webhook-endpoints", &with))
            .await
            .status(),
        StatusCode::OK
    );
    assert!(shared::permissions::of_default_role("admin").contains(&"webhooks:manage"));
    assert!(!shared::permissions::of_default_role("member").contains(&"webhooks:manage"));
}

#[tokio::test]
async fn another_projects_token_finds_none_of_this_projects_endpoints_on_any_route() {
    let app = TestApp::spawn().await;
    let mine = app.admin_token();
    let rx = Receiver::start().await;
    let ep = app
        .endpoint(&mine, &endpoint_body(&rx.url("/ok"), &[]))
        .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let other = app.env.other_project("other").await;
    let theirs = app.admin_token_for(other);

    let spec = served_spec(&app).await;
    let mut walked = Vec::new();
    for op in operations(&spec) {
        if !op.path.starts_with("/api/v1/webhook-endpoints") {
            continue;
        }
        let path = op.path.replace("{id}", &id);
        let mut req = app.authed(op.method.clone(), &path, &theirs);
        req = match (op.method.clone(), op.path.ends_with("{id}")) {
            (Method::PUT, _) => req.json(&endpoint_body(&rx.url("/status/500"), &[])),
            (Method::POST, _) if op.path.ends_with("rotate-secret") => req.json(&json!({})),
            (Method::POST, false) if !op.path.ends_with("/test") => {
                req.json(&endpoint_body(&rx.url("/status/500"), &[]))
            }
            _ => req,
        };
        let resp = send(req).await;
        if op.path.contains("{id}") {
            assert_eq!(
                resp.status(),
                StatusCode::NOT_FOUND,
                "{} {}",
                op.method,
                op.path
            );
        } else if op.method == Method::GET {
            let list = json_with_status(resp, StatusCode::OK).await;
            assert_eq!(list["data"], json!([]), "{}", op.path);
        } else {
            // POST creates in the caller's own project
            assert_eq!(resp.status(), StatusCode::CREATED, "{}", op.path);
        }
        walked.push(format!("{} {}", op.method, op.path));
    }
    walked.sort();
    assert_eq!(
        walked,
        [
            "DELETE /api/v1/webhook-endpoints/{id}",
            "GET /api/v1/webhook-endpoints",
            "GET /api/v1/webhook-endpoints/{id}",
            "POST /api/v1/webhook-endpoints",
            "POST /api/v1/webhook-endpoints/{id}/rotate-secret",
            "POST /api/v1/webhook-endpoints/{id}/test",
            "PUT /api/v1/webhook-endpoints/{id}",
        ],
        "every route is in the OpenAPI document"
    );
    // nothing of ours changed, and no test message went out
    assert!(rx.received().is_empty());
    let mut conn = app.env.pool.acquire().await.unwrap();
    let row = shared::db::webhook_endpoints::find(&mut conn, app.project_id(), id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.url, rx.url("/ok"));
    assert!(row.previous_secret_sealed.is_none());
    let ours = shared::db::webhook_endpoints::list(&app.env.pool, app.project_id(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        ours.len(),
        1,
        "the other project's creation landed in its own project"
    );
}
