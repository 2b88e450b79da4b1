//! The API takes what its OpenAPI document allows and refuses what it forbids, at the places
//! where schemathesis (`.ci/schemathesis.sh`) found the two disagreeing: integers written with a
//! zero fraction, filters left empty or spelt another way, limits counted on the trimmed value
//! or in bytes where the document counts characters as sent; and the 500s it found (an event
//! payload with the largest numbers, a forged rule cursor).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, send};

/// The fields a 422 names.
fn fields(error: &Value) -> Vec<String> {
    error["details"]
        .as_array()
        .unwrap_or_else(|| panic!("details: {error}"))
        .iter()
        .map(|d| d["field"].as_str().expect("a field").to_owned())
        .collect()
}

async fn status_of(app: &TestApp, token: &str, path: &str) -> StatusCode {
    send(app.authed(Method::GET, path, token)).await.status()
}

#[tokio::test]
async fn a_number_without_a_fraction_is_an_integer_as_the_document_says() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    // JSON Schema counts 82.0 as an integer: the document's `integer` fields take it
    let resp = app
        .ping(
            &json!({"maxAttempts": 82.0, "sleepMs": 1e1, "priority": -5.0, "failAttempts": 0.0}),
            &token,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    let resp = app.ping(&json!({"maxAttempts": 2.5}), &token).await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["maxAttempts"]);
}

#[tokio::test]
async fn an_empty_filter_is_no_filter_and_any_other_value_is_read_exactly() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;

    // what a form sends for fields left blank
    for path in [
        "/api/v1/users?status=&role=&search=&after=",
        "/api/v1/users/export?status=&role=&search=",
        "/api/v1/audit-logs?action=&actor=&target=&from=&to=",
        "/api/v1/audit-logs/export?actor=&from=&to=",
        "/api/v1/users?status=active",
    ] {
        assert_eq!(
            status_of(&app, &token, path).await,
            StatusCode::OK,
            "{path}"
        );
    }

    let id = uuid::Uuid::now_v7();
    for (path, field) in [
        // blank is not empty, and the document lists no other spellings
        ("/api/v1/users?role=%20".to_owned(), "role"),
        (format!("/api/v1/users?role={}", id.simple()), "role"),
        (format!("/api/v1/users/export?role=%20{id}"), "role"),
        ("/api/v1/users?status=Active".to_owned(), "status"),
        ("/api/v1/users?status=%20ACTIVE".to_owned(), "status"),
        (format!("/api/v1/audit-logs?actor={}", id.braced()), "actor"),
        ("/api/v1/audit-logs?to=%20".to_owned(), "to"),
        // a date-time separates date and time with `T`
        (
            "/api/v1/audit-logs?from=2026-01-01%2010:00:00Z".to_owned(),
            "from",
        ),
    ] {
        let resp = send(app.authed(Method::GET, &path, &token)).await;
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&error), [field], "{path}");
    }
    let resp = app
        .ping(
            &json!({"runAt": "2026-01-01 10:00:00Z"}),
            &app.admin_token(),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["runAt"]);
}

#[tokio::test]
async fn limits_hold_for_values_as_sent_counted_in_characters() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;

    // at most 100 characters as sent, even if trimming would leave 100
    let padded = format!(" {}", "x".repeat(100));
    let resp = app
        .invite(
            &token,
            &json!({"email": "padded@example.com", "name": padded, "roleIds": [member]}),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["name"]);
    let path = format!("/api/v1/users?search={}%20", "x".repeat(200));
    let resp = send(app.authed(Method::GET, &path, &token)).await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["search"]);

    // 51 role ids are more than the document's 50, repeats included
    let resp = app
        .invite(
            &token,
            &json!({"email": "many@example.com", "roleIds": vec![member; 51]}),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["roleIds"]);
    let resp = app
        .invite(
            &token,
            &json!({"email": "fifty@example.com", "roleIds": vec![member; 50]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // characters, not bytes: 200 two-byte characters are a valid key
    let resp = app
        .ping(
            &json!({"idempotencyKey": "é".repeat(200)}),
            &app.admin_token(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // a login the document allows is a credential to check, not a 422
    for body in [
        json!({"email": "boss@example.com", "password": "é".repeat(1000)}),
        json!({"email": "   ", "password": "whatever"}),
    ] {
        let resp = app.login(&body).await;
        assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    // an invitation token of 1 to 512 characters is looked up (a blank one is found nowhere)
    let resp = app
        .accept_invitation(&json!({"token": "   ", "password": "a long enough password"}))
        .await;
    assert_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    let resp = app
        .accept_invitation(&json!({"token": "t".repeat(513), "password": "a long enough password"}))
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["token"]);
}

#[tokio::test]
async fn an_event_payload_holding_the_largest_numbers_reads_back_as_sent() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    // Postgres prints such a number back as 309 digits; it must parse to the same f64
    let payload = json!({"max": f64::MAX, "min": f64::MIN, "tiny": 5e-324});
    let sent = app
        .event(&token, &json!({"type": "big.numbers", "payload": payload}))
        .await;

    let resp = app.list_events(&token, "").await;
    let list = crate::helpers::json_with_status(resp, StatusCode::OK).await;
    assert_eq!(list["data"][0]["payload"], payload, "{list}");
    let id = sent["eventId"].as_str().expect("an event id");
    let one = app.get_event(&token, id).await;
    let one = crate::helpers::json_with_status(one, StatusCode::OK).await;
    assert_eq!(one["data"]["payload"], payload);
}

#[tokio::test]
async fn the_rule_list_takes_an_empty_cursor_and_refuses_a_forged_one_with_422() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    assert_eq!(
        status_of(&app, &token, "/api/v1/rules?after=").await,
        StatusCode::OK
    );
    // a time chrono holds and Postgres does not (before 4713 BC), and one past both
    let id = uuid::Uuid::now_v7();
    for micros in ["-3000000000000000000", "9000000000000000000"] {
        let path = format!("/api/v1/rules?after={micros}_{id}");
        let resp = send(app.authed(Method::GET, &path, &token)).await;
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&error), ["after"], "{path}");
    }
}

#[tokio::test]
async fn a_rule_is_held_to_its_document_as_sent() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let rule = |name: String, channels: Value| json!({"name": name, "eventTypes": ["a.*"], "title": "A", "channels": channels});

    // 101 characters as sent are more than the document's 100, trimmed or not
    let resp = app
        .create_rule(
            &token,
            &rule(format!("{} ", "n".repeat(100)), json!(["inApp"])),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["name"]);
    // 4 channels are more than the document's 3, repeats included
    let resp = app
        .create_rule(&token, &rule("n".into(), json!(vec!["inApp"; 4])))
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["channels"]);

    let resp = app
        .create_rule(
            &token,
            &rule(format!(" {} ", "n".repeat(98)), json!(["inApp", "inApp"])),
        )
        .await;
    let created = crate::helpers::json_with_status(resp, StatusCode::CREATED).await;
    assert_eq!(created["data"]["name"], "n".repeat(98), "stored trimmed");
    assert_eq!(created["data"]["channels"], json!(["inApp"]));
}

#[tokio::test]
async fn a_project_is_held_to_its_document_as_sent() {
    let app = TestApp::spawn().await;
    let platform = app.platform_token();

    // at most 500 characters as sent, and no carriage return, even where trimming removes it
    for description in [format!("{} ", "d".repeat(500)), "about\r".to_owned()] {
        let resp = app
            .create_project(
                &platform,
                &json!({"name": "Acme", "description": description}),
            )
            .await;
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&error), ["description"]);
    }

    // the status filter: empty, or a status in lower or upper case, nothing else
    for query in ["?status=", "?status=active", "?status=SUSPENDED"] {
        let resp = app.list_projects(&platform, query).await;
        assert_eq!(resp.status(), StatusCode::OK, "{query}");
    }
    for query in ["?status=Active", "?status=%20active"] {
        let resp = app.list_projects(&platform, query).await;
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&error), ["status"], "{query}");
    }
}
