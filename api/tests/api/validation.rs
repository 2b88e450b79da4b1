//! Validation at the edge: a refused request names every invalid field in
//! `details: [{field, message}]`, in words a client can act on (never serde's internals), and
//! bounds every input (lengths, ranges, NUL characters) with a 422 instead of a 500.

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, later_at_offset, send};

/// The `details` of a 422, as `(field, message)` pairs.
fn details(error: &Value) -> Vec<(String, String)> {
    error["details"]
        .as_array()
        .unwrap_or_else(|| panic!("details is an array: {error}"))
        .iter()
        .map(|d| {
            let text = |k: &str| {
                d[k].as_str()
                    .unwrap_or_else(|| panic!("{k}: {d}"))
                    .to_owned()
            };
            (text("field"), text("message"))
        })
        .collect()
}

fn fields(error: &Value) -> Vec<String> {
    details(error).into_iter().map(|(f, _)| f).collect()
}

/// No Rust type names, serde phrasing or parser internals in what the client reads.
fn assert_readable(error: &Value) {
    let text = error.to_string();
    for leak in [
        "expected struct",
        "PingRequest",
        "elements",
        "u64",
        "i16",
        "i64",
        "u32",
        "premature end of input",
        "invalid type",
    ] {
        assert!(!text.contains(leak), "{leak:?} leaks into {error}");
    }
}

#[tokio::test]
async fn a_body_with_three_invalid_fields_names_all_three() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    let resp = app
        .ping(
            &json!({"sleepMs": 60001, "priority": 5000, "idempotencyKey": ""}),
            &token,
        )
        .await;

    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        fields(&error),
        ["sleepMs", "priority", "idempotencyKey"],
        "{error}"
    );
    let message = error["message"].as_str().unwrap_or_default();
    for field in ["sleepMs", "priority", "idempotencyKey"] {
        assert!(
            message.contains(field),
            "the message names {field}: {message}"
        );
    }
}

#[tokio::test]
async fn fields_of_the_wrong_json_type_are_all_named_in_json_words() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    let resp = app
        .ping(
            &json!({"sleepMs": "soon", "priority": "high", "failPermanently": "yes", "colour": 1}),
            &token,
        )
        .await;

    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let found = details(&error);
    let message = |field: &str| {
        found
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{field} is named: {error}"))
    };
    assert_eq!(message("sleepMs"), "must be a whole number, not a string");
    assert_eq!(message("priority"), "must be a whole number, not a string");
    assert_eq!(
        message("failPermanently"),
        "must be a boolean, not a string"
    );
    assert!(
        message("colour").contains("sleepMs"),
        "the known fields are listed"
    );
    assert_eq!(found.len(), 4, "{error}");
    assert_readable(&error);
}

#[tokio::test]
async fn wrong_types_bad_values_and_missing_fields_are_named_in_one_answer() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;

    let resp = app
        .invite(
            &token,
            &json!({"email": 5, "name": "x".repeat(101), "roleIds": ["nope"]}),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let mut named = fields(&error);
    named.sort();
    assert_eq!(named, ["email", "name", "roleIds[0]"], "{error}");
    assert_readable(&error);

    let resp = app.login(&json!({})).await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        details(&error),
        [
            ("email".to_owned(), "is required".to_owned()),
            ("password".to_owned(), "is required".to_owned())
        ]
    );

    let resp = app
        .ping(
            &json!({"sleepMs": "soon", "priority": 5000}),
            &app.admin_token(),
        )
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["sleepMs", "priority"], "{error}");
}

#[tokio::test]
async fn a_body_that_is_not_an_object_gets_a_readable_message() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    for (body, kind) in [
        (json!([]), "an array"),
        (json!([1, 2, 3]), "an array"),
        (json!("ping"), "a string"),
        (json!(7), "a number"),
    ] {
        let resp = app.ping(&body, &token).await;

        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(
            details(&error),
            [(
                "body".to_owned(),
                format!("must be a JSON object, not {kind}")
            )],
            "{body}"
        );
        assert_readable(&error);
    }
}

#[tokio::test]
async fn a_run_at_without_a_time_zone_says_rfc_3339_is_expected() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();

    for run_at in ["2999-01-01T10:00:00", "2999-01-01", "tomorrow"] {
        let resp = app.ping(&json!({"runAt": run_at}), &token).await;

        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let found = details(&error);
        assert_eq!(found.len(), 1, "{error}");
        assert_eq!(found[0].0, "runAt");
        assert!(
            found[0].1.contains("RFC 3339") && found[0].1.contains("time zone"),
            "{run_at}: {error}"
        );
        assert_readable(&error);
    }
    let resp = app.ping(&json!({"runAt": later_at_offset()}), &token).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "an offset is a zone");
}

#[tokio::test]
async fn an_invitation_with_several_bad_fields_names_each_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;

    let resp = app
        .invite(
            &token,
            &json!({"email": "not-an-email", "name": "x".repeat(101), "roleIds": []}),
        )
        .await;

    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["email", "name", "roleIds"], "{error}");
    assert!(app.outbox().await.is_empty());
}

#[tokio::test]
async fn nul_characters_are_refused_with_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;

    let invited = app
        .invite(
            &token,
            &json!({"email": "new@example.com", "name": "a\u{0}b", "roleIds": [member]}),
        )
        .await;
    let error = assert_error(
        invited,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["name"]);

    let logged_in = app
        .login(&json!({"email": "boss\u{0}@example.com", "password": "pass\u{0}word"}))
        .await;
    let error = assert_error(
        logged_in,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["email", "password"]);

    for (path, field) in [
        ("/api/v1/users?search=a%00b", "search"),
        ("/api/v1/users/export?search=%00", "search"),
        ("/api/v1/audit-logs?action=a%00b", "action"),
        ("/api/v1/audit-logs?target=%00", "target"),
    ] {
        let resp = send(app.authed(Method::GET, path, &token)).await;
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&error), [field], "{path}");
    }
}

#[tokio::test]
async fn over_long_strings_are_refused_with_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;
    let long = "x".repeat(201);

    for (path, field) in [
        (format!("/api/v1/users?search={long}"), "search"),
        (format!("/api/v1/audit-logs?action={long}"), "action"),
        (format!("/api/v1/audit-logs?target={long}"), "target"),
    ] {
        let resp = send(app.authed(Method::GET, &path, &token)).await;
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&error), [field], "{path}");
    }
    let resp = app
        .login(&json!({"email": format!("{}@example.com", "a".repeat(250)), "password": "p"}))
        .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["email"]);
}

#[tokio::test]
async fn query_parameters_of_several_groups_are_reported_together() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;

    let resp = send(app.authed(
        Method::GET,
        "/api/v1/users?page=0&perPage=500&status=SLEEPING&role=admins",
        &token,
    ))
    .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["page", "perPage", "status", "role"]);

    let resp = send(app.authed(
        Method::GET,
        "/api/v1/audit-logs?perPage=0&actor=nobody&from=yesterday&to=2026-01-01",
        &token,
    ))
    .await;
    let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(fields(&error), ["perPage", "actor", "from", "to"]);
}

#[tokio::test]
async fn path_ids_that_are_not_uuids_get_400_naming_each_parameter() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("boss@example.com").await;

    let resp = send(
        app.authed(Method::PATCH, "/api/v1/users/nope/roles/nada", &token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(r#"{"roleId": "00000000-0000-0000-0000-000000000000"}"#),
    )
    .await;

    let error = assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`id`") && message.contains("`roleId`"),
        "both parameters are named: {message}"
    );
    let resp = app.get_job("not-a-uuid", &app.admin_token()).await;
    let error = assert_error(resp, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`id`")
    );
}
