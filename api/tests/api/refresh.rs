//! Refresh tokens: a login's refresh token rotates (each works once), a spent one presented
//! again revokes its whole family and the family's access tokens (audited as a possible theft),
//! and logout and deactivation end the family too.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, assert_error, json_with_status};

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {v:#}"))
}

#[tokio::test]
async fn a_refresh_token_rotates_and_the_new_pair_works() {
    let app = TestApp::spawn().await;
    let (user, _) = app.admin("ada@example.com").await;
    let login = app.session_of("ada@example.com", PASSWORD).await;
    assert_eq!(login["tokenType"], "Bearer");
    assert!(login["refreshExpiresAt"].is_string());
    let resp = app.refresh(field(&login, "refreshToken")).await;
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let next = json_with_status(resp, StatusCode::OK).await["data"].take();
    assert_ne!(next["refreshToken"], login["refreshToken"]);
    assert_ne!(next["accessToken"], login["accessToken"]);
    assert_eq!(next["user"]["id"], user.to_string());
    let me = json_with_status(app.me(field(&next, "accessToken")).await, StatusCode::OK).await;
    assert_eq!(me["data"]["id"], user.to_string());
    // and the next one rotates again; only hashes are stored
    let third = json_with_status(
        app.refresh(field(&next, "refreshToken")).await,
        StatusCode::OK,
    )
    .await["data"]
        .take();
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&app.env.pool)
        .await
        .expect("rows");
    // the three of this sign-in, and the one of `admin`'s own login
    assert_eq!(stored.len(), 4);
    for token in [&login, &next, &third] {
        let raw = field(token, "refreshToken");
        assert!(!stored.iter().any(|h| h == raw), "stored in the clear");
        assert!(stored.contains(&shared::secrets::token_hash(raw)));
    }
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_the_whole_family_and_is_audited() {
    let app = TestApp::spawn().await;
    let other_instance = app.second_instance().await;
    let (user, _) = app.admin("ada@example.com").await;
    let elsewhere = app.session_of("ada@example.com", PASSWORD).await;
    let login = app.session_of("ada@example.com", PASSWORD).await;
    let stolen = field(&login, "refreshToken").to_owned();
    let next = json_with_status(app.refresh(&stolen).await, StatusCode::OK).await["data"].take();

    // the spent token again
    let error = assert_error(
        other_instance.refresh(&stolen).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("already used")
    );
    // the family's newest refresh token and every access token of the family are dead, on
    // both instances
    assert_error(
        app.refresh(field(&next, "refreshToken")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    for instance in [&app, &other_instance] {
        for access in [field(&login, "accessToken"), field(&next, "accessToken")] {
            assert_error(
                instance.me(access).await,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            )
            .await;
        }
        // another sign-in of the same user is not the family's: it goes on
        json_with_status(
            instance.me(field(&elsewhere, "accessToken")).await,
            StatusCode::OK,
        )
        .await;
    }
    json_with_status(
        app.refresh(field(&elsewhere, "refreshToken")).await,
        StatusCode::OK,
    )
    .await;
    let audit = app
        .audit_logs(&app.admin_token(), "?action=refresh_token.reused")
        .await;
    let entries = audit["data"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit:#}");
    assert_eq!(entries[0]["targetId"], user.to_string());
    assert_eq!(entries[0]["metadata"]["possibleTheft"], true);
    assert_eq!(entries[0]["metadata"]["revokedAccessTokens"], 2);
}

#[tokio::test]
async fn logout_and_deactivation_end_the_refresh_family() {
    let app = TestApp::spawn().await;
    let (_, boss) = app.admin("boss@example.com").await;
    let user = app
        .active_user(app.project_id(), "ada@example.com", "member")
        .await;
    let first = app.session_of("ada@example.com", PASSWORD).await;
    let second = app.session_of("ada@example.com", PASSWORD).await;

    let resp = app.logout(field(&first, "accessToken")).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.refresh(field(&first, "refreshToken")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // the other sign-in is untouched by that logout, and ends with the deactivation
    let renewed = json_with_status(
        app.refresh(field(&second, "refreshToken")).await,
        StatusCode::OK,
    )
    .await["data"]
        .take();
    json_with_status(
        app.deactivate(&boss, &user.to_string()).await,
        StatusCode::OK,
    )
    .await;
    assert_error(
        app.refresh(field(&renewed, "refreshToken")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_families WHERE user_id = $1 AND revoked_at IS NOT NULL",
    )
    .bind(user)
    .fetch_one(&app.env.pool)
    .await
    .expect("count");
    assert_eq!(revoked, 2, "logout's and deactivation's");
}

#[tokio::test]
async fn a_refresh_names_a_missing_token_and_refuses_an_unknown_one() {
    let app = TestApp::spawn().await;
    for body in [
        json!({}),
        json!({"refreshToken": ""}),
        json!({"refreshToken": 5}),
    ] {
        let resp = app
            .request(reqwest::Method::POST, "/api/v1/auth/refresh")
            .json(&body)
            .send()
            .await
            .expect("the API answers");
        let error = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(error["details"][0]["field"], "refreshToken", "{body}");
    }
    assert_error(
        app.refresh("not-a-refresh-token").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // a token of another project's user works only for that user, in that project
    let other = app.env.other_project("Other").await;
    app.active_user(other, "ada@example.com", "admin").await;
    let login = json_with_status(
        app.login(&json!({"email": "ada@example.com", "password": PASSWORD, "projectId": other}))
            .await,
        StatusCode::OK,
    )
    .await["data"]
        .take();
    let next = json_with_status(
        app.refresh(field(&login, "refreshToken")).await,
        StatusCode::OK,
    )
    .await["data"]
        .take();
    assert_eq!(next["user"]["projectId"], other.to_string());
    let users = app.get_users(field(&next, "accessToken"), "").await;
    let body = json_with_status(users, StatusCode::OK).await;
    assert!(
        body["data"]
            .as_array()
            .expect("users")
            .iter()
            .all(|u| u["email"] == "ada@example.com"),
        "only the other project's users: {body:#}"
    );
}
