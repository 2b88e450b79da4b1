//! Passwords: the one policy (every route that sets a password names the field it refuses),
//! changing one's own password (the other sessions end, the caller's goes on), and resetting a
//! forgotten one end to end over SMTP (the same answer for a known and an unknown email; the
//! emailed token works once; every session ends).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::testing::smtp::SmtpServer;

use crate::helpers::{PASSWORD, TestApp, assert_error, json_with_status};

const NEW_PASSWORD: &str = "a much better passphrase";

/// The `field`s of a 422's details.
fn fields(error: &Value) -> Vec<String> {
    error["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("field").to_owned())
        .collect()
}

/// The reset code in a reset email's text part.
fn reset_code(text: &str) -> String {
    let after = text
        .split_once("Your reset code:")
        .expect("the email carries a reset code")
        .1;
    after
        .split_whitespace()
        .next()
        .expect("a code after the label")
        .to_owned()
}

#[tokio::test]
async fn every_route_that_sets_a_password_refuses_a_weak_one_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("ada@example.com").await;

    // change-password: the new one, and the current one missing
    let error = assert_error(
        app.change_password(
            &token,
            &json!({"currentPassword": PASSWORD, "newPassword": "Password1234"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["newPassword"]);
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("commonly used"),
        "{error}"
    );
    let error = assert_error(
        app.change_password(&token, &json!({"newPassword": "short"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["currentPassword", "newPassword"]);
    let error = assert_error(
        app.change_password(
            &token,
            &json!({"currentPassword": PASSWORD, "newPassword": PASSWORD}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["newPassword"]);
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("differ")
    );

    // the reset confirmation and the invitation acceptance: `password`
    for resp in [
        app.confirm_reset("whatever-token", "qwertyuiop123").await,
        app.accept("whatever-token", "aaaaaaaaaaaaaaaa").await,
    ] {
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(fields(&error), ["password"], "{error}");
    }
    // nothing changed: the old password still works
    app.session_of("ada@example.com", PASSWORD).await;
}

#[tokio::test]
async fn changing_a_password_ends_every_other_session_and_keeps_the_callers() {
    let app = TestApp::spawn().await;
    let other_instance = app.second_instance().await;
    let (user, _) = app.admin("ada@example.com").await;
    let mine = app.session_of("ada@example.com", PASSWORD).await;
    let laptop = app.session_of("ada@example.com", PASSWORD).await;
    let access = mine["accessToken"].as_str().expect("token");

    let resp = app
        .change_password(
            access,
            &json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    // the caller's token and refresh token go on, on both instances
    for instance in [&app, &other_instance] {
        json_with_status(instance.me(access).await, StatusCode::OK).await;
        assert_error(
            instance
                .me(laptop["accessToken"].as_str().expect("token"))
                .await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    assert_error(
        app.refresh(laptop["refreshToken"].as_str().expect("refresh"))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    json_with_status(
        app.refresh(mine["refreshToken"].as_str().expect("refresh"))
            .await,
        StatusCode::OK,
    )
    .await;

    // the old password is gone, the new one works; audited
    assert_error(
        app.login(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    app.session_of("ada@example.com", NEW_PASSWORD).await;
    let audit = app
        .audit_logs(&app.admin_token(), "?action=password.changed")
        .await;
    let entries = audit["data"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit:#}");
    assert_eq!(entries[0]["actorId"], user.to_string());
}

#[tokio::test]
async fn a_wrong_current_password_or_a_token_without_a_user_is_refused() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("ada@example.com").await;
    let body = json!({"currentPassword": "not the password", "newPassword": NEW_PASSWORD});
    let error = assert_error(
        app.change_password(&token, &body).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("currentPassword")
    );
    // a service token (no user behind it), and no token
    assert_error(
        app.change_password(&app.admin_token(), &body).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let resp = app
        .request(reqwest::Method::POST, "/api/v1/auth/change-password")
        .json(&body)
        .send()
        .await
        .expect("the API answers");
    assert_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.session_of("ada@example.com", PASSWORD).await;
}

#[tokio::test]
async fn a_password_change_in_one_project_leaves_the_same_email_in_another_alone() {
    let app = TestApp::spawn().await;
    let other = app.env.other_project("Other").await;
    app.active_user(other, "ada@example.com", "admin").await;
    app.active_user(app.project_id(), "ada@example.com", "admin")
        .await;
    let mine =
        json!({"email": "ada@example.com", "password": PASSWORD, "projectId": app.project_id()});
    let login = json_with_status(app.login(&mine).await, StatusCode::OK).await;
    let token = login["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let resp = app
        .change_password(
            &token,
            &json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let in_other = json!({"email": "ada@example.com", "password": PASSWORD, "projectId": other});
    let body = json_with_status(app.login(&in_other).await, StatusCode::OK).await;
    assert_eq!(body["data"]["user"]["projectId"], other.to_string());
    assert_error(
        app.login(&mine).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn a_password_reset_works_end_to_end_over_smtp_once_and_ends_every_session() {
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let mut app = TestApp::spawn_with(|s| s.email.smtp_url = Some(smtp_url.clone().into())).await;
    app.start_worker().await;
    let (user, _) = app.admin("ada@example.com").await;
    let before = app.session_of("ada@example.com", PASSWORD).await;

    // a known and an unknown email are answered alike
    let known = app
        .password_reset(&json!({"email": " Ada@Example.com "}))
        .await;
    let unknown = app
        .password_reset(&json!({"email": "nobody@example.com"}))
        .await;
    let known = json_with_status(known, StatusCode::ACCEPTED).await;
    let unknown = json_with_status(unknown, StatusCode::ACCEPTED).await;
    assert_eq!(known, unknown);

    // one email, to the known address only
    let mail = smtp.wait_for(1, Duration::from_secs(30)).await[0].clone();
    assert_eq!(mail.to, ["ada@example.com"]);
    let parsed = mail.parse();
    assert_eq!(parsed.header("Subject"), Some("Reset your Comet password"));
    assert!(
        parsed
            .header("Message-ID")
            .is_some_and(|id| id.starts_with("<password-reset.")),
        "{:?}",
        parsed.header("Message-ID")
    );
    let code = reset_code(&parsed.text);
    assert!(
        parsed.html.contains(&code),
        "the HTML part has the same code"
    );
    let drained = app.drain_jobs().await;
    let outcomes: Vec<&str> = drained
        .of_kind("send_password_reset")
        .iter()
        .map(|j| {
            j.result.as_ref().expect("a result")["outcome"]
                .as_str()
                .expect("outcome")
        })
        .collect::<Vec<_>>();
    let mut sorted = outcomes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["noAccount", "sent"]);
    assert_eq!(
        smtp.messages().len(),
        1,
        "nothing sent for the unknown email"
    );

    // the code sets the password once
    let resp = app.confirm_reset(&code, NEW_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.confirm_reset(&code, "yet another passphrase").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    app.session_of("ada@example.com", NEW_PASSWORD).await;
    assert_error(
        app.login(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // every earlier session ended, refresh included
    assert_error(
        app.me(before["accessToken"].as_str().expect("token")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_error(
        app.refresh(before["refreshToken"].as_str().expect("refresh"))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    app.drain_jobs().await;
    let audit = app.audit_logs(&app.admin_token(), "?perPage=100").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["userId"] == user.to_string() || e["targetId"] == user.to_string())
        .filter_map(|e| e["action"].as_str())
        .collect();
    for expected in [
        "password_reset.requested",
        "password.reset",
        "sessions.revoked",
    ] {
        assert!(actions.contains(&expected), "{expected} not in {actions:?}");
    }
}

#[tokio::test]
async fn an_expired_reset_code_is_gone_and_a_reset_names_its_project() {
    let mut app = TestApp::spawn().await;
    let other = app.env.other_project("Other").await;
    app.active_user(app.project_id(), "ada@example.com", "admin")
        .await;
    app.active_user(other, "ada@example.com", "member").await;
    let resp = app
        .password_reset(&json!({"email": "ada@example.com", "projectId": other}))
        .await;
    json_with_status(resp, StatusCode::ACCEPTED).await;
    app.run_pending_jobs().await;
    let (reset_project, hash): (uuid::Uuid, String) =
        sqlx::query_as("SELECT project_id, token_hash FROM password_resets")
            .fetch_one(&app.env.pool)
            .await
            .expect("one reset");
    assert_eq!(reset_project, other, "the named project's account");

    // a code past its hour: 410 (the code is not stored; this one is planted by hash)
    let code = "planted-code-for-an-expired-reset-0000000";
    sqlx::query(
        "UPDATE password_resets SET token_hash = $1, expires_at = now() - interval '1 minute' WHERE token_hash = $2",
    )
    .bind(shared::secrets::token_hash(code))
    .bind(&hash)
    .execute(&app.env.pool)
    .await
    .expect("expire");
    assert_error(
        app.confirm_reset(code, NEW_PASSWORD).await,
        StatusCode::GONE,
        "gone",
    )
    .await;
    assert_error(
        app.confirm_reset("no-such-code", NEW_PASSWORD).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let error = assert_error(
        app.password_reset(&json!({"email": ""})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&error), ["email"]);
}

#[tokio::test]
async fn reset_requests_are_limited_per_email_for_a_known_and_an_unknown_one_alike() {
    let app = TestApp::spawn_with(|s| {
        s.auth.reset_per_email = shared::config::RateLimit::per_secs(2, 3600);
    })
    .await;
    app.active_user(app.project_id(), "ada@example.com", "admin")
        .await;
    for email in ["ada@example.com", "nobody@example.com"] {
        for _ in 0..2 {
            let resp = app.password_reset(&json!({"email": email})).await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
        }
        let resp = app.password_reset(&json!({"email": email})).await;
        assert!(resp.headers().contains_key("retry-after"));
        assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    }
}
